{{/*
The chart's name: app.kubernetes.io/name, as deploy/ labels every object.
*/}}
{{- define "bucket-broker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: the release name, with the chart's name appended unless the release name
already contains it, so that the release "bucket-broker" names its objects as deploy/ does.
*/}}
{{- define "bucket-broker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Labels of every object: deploy/'s app.kubernetes.io/name, and Helm's bookkeeping.
*/}}
{{- define "bucket-broker.labels" -}}
app.kubernetes.io/name: {{ include "bucket-broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
What selects the controller's pods (Deployment, Service, PodDisruptionBudget, ServiceMonitor, spread).
*/}}
{{- define "bucket-broker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bucket-broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
Labels of the controller's objects: every object's, and its component.
*/}}
{{- define "bucket-broker.controllerLabels" -}}
{{ include "bucket-broker.labels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
The controller's ServiceAccount.
*/}}
{{- define "bucket-broker.serviceAccountName" -}}
{{- default (include "bucket-broker.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/*
The controller's user name, as admission policies see its requests.
*/}}
{{- define "bucket-broker.controllerUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "bucket-broker.serviceAccountName" .) }}
{{- end }}

{{/*
Refuses settings that would install a controller that is unsafe or cannot start, with a message that says
what to set.
*/}}
{{- define "bucket-broker.validate" -}}
{{- $network := .Values.platformNetwork }}
{{- if not (or $network.cidrs $network.vpcEndpoints $network.vpcs $network.allowKeysFromAnywhere) }}
{{- fail "platformNetwork is required: set platformNetwork.cidrs, platformNetwork.vpcEndpoints or platformNetwork.vpcs to the network your pods reach S3 from, so that the access keys this controller issues work only from there. Without any of them the keys would work from anywhere on the internet; if that is what you want, say so with platformNetwork.allowKeysFromAnywhere=true." }}
{{- end }}
{{- if not .Values.aws.permissionsBoundaryArn }}
{{- fail "aws.permissionsBoundaryArn is required: the ARN of deploy/aws/boundary-policy.json as created in your account (the most any key this controller issues may do), or `none` to run without a boundary, knowingly." }}
{{- end }}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection) }}
{{- fail "leaderElection must stay true with more than one replica: otherwise every replica reconciles the same objects at once." }}
{{- end }}
{{- end }}
