//! What a cluster admin applies, checked without a cluster or an AWS account: `deploy/` (the kustomize
//! install of the controller and its admission policy), its optional components (ServiceMonitor,
//! namespace-scoped), `crds/kustomization.yaml` (installed apart, so that uninstalling the controller never
//! deletes a CRD) and `deploy/aws/controller-policy.json`.
//!
//! The manifests are parsed into their k8s-openapi types (a wrong apiVersion or kind fails), the
//! Deployment must run the real command line with the hardening the namespace's Pod Security level asks
//! for, RBAC must be exactly what the controller uses, and the IAM policy must grant exactly the actions
//! behind the operations the AWS layer calls (found by reading `src/aws/*.rs`), so a new AWS call fails
//! here until the policy grants it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bucket_broker::api::{BucketBinding, BucketServiceKey};
use bucket_broker::cli::{Cli, Command};
use bucket_broker::controller::credentials::CredentialKind;
use clap::{CommandFactory, Parser};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::TypeMeta;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The controller's namespace, where `deploy/kustomization.yaml` puts every namespaced object.
const NAMESPACE: &str = "bucket-broker";
/// The port name the probes, the container and the Service agree on.
const PORT_NAME: &str = "http";
/// The leader-election Lease (`src/leader.rs`).
const LEASE_NAME: &str = "bucket-broker";
/// Where the IAM policy confines the controller: the default bucket prefix and IAM path.
const BUCKET_RESOURCE: &str = "arn:aws:s3:::bucket-broker-*";
const USER_RESOURCE: &str = "arn:aws:iam::*:user/bucket-broker/*";
const ROLE_RESOURCE: &str = "arn:aws:iam::*:role/bucket-broker/*";
/// The EKS clusters whose ServiceAccounts get Pod Identity associations (list and create are on the cluster).
const EKS_CLUSTER_RESOURCE: &str = "arn:aws:eks:*:*:cluster/*";
/// Their associations (read, repoint, tag and delete one).
const EKS_ASSOCIATION_RESOURCE: &str = "arn:aws:eks:*:*:podidentityassociation/*";

pub(crate) fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

pub(crate) fn parse<T: DeserializeOwned>(path: &str) -> T {
    serde_saphyr::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{path} does not parse as {}: {e}", std::any::type_name::<T>()))
}

/// The YAML files directly in `dir`, except its kustomization.
fn yaml_files(dir: &str) -> BTreeSet<String> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let entries = std::fs::read_dir(&full).unwrap_or_else(|e| panic!("cannot list {}: {e}", full.display()));
    entries
        .map(|entry| entry.expect("directory entry"))
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| (name.ends_with(".yaml") || name.ends_with(".yml")) && name != "kustomization.yaml")
        .collect()
}

#[derive(Deserialize)]
struct Kustomization {
    kind: String,
    namespace: Option<String>,
    resources: Vec<String>,
}

/// Every object of `deploy/`, typed.
struct Install {
    namespace: Namespace,
    service_account: ServiceAccount,
    cluster_role: ClusterRole,
    cluster_role_binding: ClusterRoleBinding,
    role: Role,
    role_binding: RoleBinding,
    deployment: Deployment,
    service: Service,
    disruption_budget: PodDisruptionBudget,
    admission_policy: ValidatingAdmissionPolicy,
    admission_binding: ValidatingAdmissionPolicyBinding,
    deletion_protection: ValidatingAdmissionPolicy,
    deletion_protection_binding: ValidatingAdmissionPolicyBinding,
}

fn install() -> Install {
    Install {
        namespace: parse("deploy/namespace.yaml"),
        service_account: parse("deploy/serviceaccount.yaml"),
        cluster_role: parse("deploy/clusterrole.yaml"),
        cluster_role_binding: parse("deploy/clusterrolebinding.yaml"),
        role: parse("deploy/role.yaml"),
        role_binding: parse("deploy/rolebinding.yaml"),
        deployment: parse("deploy/deployment.yaml"),
        service: parse("deploy/service.yaml"),
        disruption_budget: parse("deploy/poddisruptionbudget.yaml"),
        admission_policy: parse("deploy/validatingadmissionpolicy.yaml"),
        admission_binding: parse("deploy/validatingadmissionpolicybinding.yaml"),
        deletion_protection: parse("deploy/validatingadmissionpolicy-deletion-protection.yaml"),
        deletion_protection_binding: parse(
            "deploy/validatingadmissionpolicybinding-deletion-protection.yaml",
        ),
    }
}

fn name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().expect("every object has a name")
}

fn the_container(deployment: &Deployment) -> &Container {
    let pod = deployment.spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.containers.len(), 1, "one container: the controller");
    &pod.containers[0]
}

#[test]
fn every_deploy_manifest_parses_into_its_kubernetes_type() {
    let mut kinds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in yaml_files("deploy") {
        let path = format!("deploy/{file}");
        let head: TypeMeta = parse(&path);
        let namespace = match head.kind.as_str() {
            "Namespace" => parse::<Namespace>(&path).metadata.namespace,
            "ServiceAccount" => parse::<ServiceAccount>(&path).metadata.namespace,
            "ClusterRole" => parse::<ClusterRole>(&path).metadata.namespace,
            "ClusterRoleBinding" => parse::<ClusterRoleBinding>(&path).metadata.namespace,
            "Role" => parse::<Role>(&path).metadata.namespace,
            "RoleBinding" => parse::<RoleBinding>(&path).metadata.namespace,
            "Deployment" => parse::<Deployment>(&path).metadata.namespace,
            "Service" => parse::<Service>(&path).metadata.namespace,
            "PodDisruptionBudget" => parse::<PodDisruptionBudget>(&path).metadata.namespace,
            "ValidatingAdmissionPolicy" => parse::<ValidatingAdmissionPolicy>(&path).metadata.namespace,
            "ValidatingAdmissionPolicyBinding" => {
                parse::<ValidatingAdmissionPolicyBinding>(&path).metadata.namespace
            }
            other => panic!("{path}: kind {other} is not checked by this test; add it"),
        };
        assert!(
            namespace.is_none() || namespace.as_deref() == Some(NAMESPACE),
            "{path}: namespace {namespace:?}; leave it to the kustomization"
        );
        kinds.entry(head.kind.clone()).or_default().push(file.clone());
    }
    for (kind, files) in &kinds {
        // Two admission policies, each with its binding: finalizers, and deletion protection.
        let expected = if kind.starts_with("ValidatingAdmissionPolicy") { 2 } else { 1 };
        assert_eq!(files.len(), expected, "files of kind {kind}: {files:?}");
    }
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    assert_eq!(kinds.keys().map(String::as_str).collect::<Vec<_>>(), expected);
    assert_eq!(name(&install().namespace.metadata), NAMESPACE);
}

#[test]
fn the_kustomizations_list_exactly_the_files_present() {
    let deploy: Kustomization = parse("deploy/kustomization.yaml");
    assert_eq!(deploy.kind, "Kustomization");
    assert_eq!(deploy.namespace.as_deref(), Some(NAMESPACE));
    let listed: BTreeSet<String> = deploy.resources.iter().cloned().collect();
    assert_eq!(listed.len(), deploy.resources.len(), "deploy/kustomization.yaml lists a file twice");
    let mut present = yaml_files("deploy");
    present.insert("tenant-roles".to_owned());
    assert_eq!(
        listed, present,
        "deploy/kustomization.yaml must list every manifest in deploy/ and tenant-roles"
    );
    assert!(
        !deploy.resources.iter().any(|r| r.contains("crds")),
        "the CRDs are installed apart: deleting deploy/ must never delete a CRD, and with it every Bucket"
    );
    let tenant: Kustomization = parse("deploy/tenant-roles/kustomization.yaml");
    let listed: BTreeSet<String> = tenant.resources.iter().cloned().collect();
    assert_eq!(listed, yaml_files("deploy/tenant-roles"));
    let monitor: Kustomization = parse("deploy/components/servicemonitor/kustomization.yaml");
    assert_eq!(monitor.kind, "Component", "optional: included only by an overlay that asks for it");
    let listed: BTreeSet<String> = monitor.resources.iter().cloned().collect();
    assert_eq!(listed, yaml_files("deploy/components/servicemonitor"));
    let scoped: Kustomization = parse("deploy/components/namespace-scoped/kustomization.yaml");
    assert_eq!(scoped.kind, "Component", "optional: included only by an overlay that asks for it");
    let listed: BTreeSet<String> = scoped.resources.iter().cloned().collect();
    assert_eq!(listed, yaml_files("deploy/components/namespace-scoped"));

    let crds: Kustomization = parse("crds/kustomization.yaml");
    assert_eq!(crds.kind, "Kustomization");
    let listed: BTreeSet<String> = crds.resources.iter().cloned().collect();
    assert_eq!(listed.len(), crds.resources.len(), "crds/kustomization.yaml lists a file twice");
    let present = yaml_files("crds");
    assert_eq!(present.len(), 4, "one CRD per kind: {present:?}");
    assert_eq!(listed, present, "crds/kustomization.yaml must list exactly the CRD files");
}

#[test]
fn the_deployment_runs_the_controller_hardened_and_probed() {
    let Install { deployment, .. } = install();
    let spec = &deployment.spec;
    assert_eq!(spec.replicas, Some(2));
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    let pod_labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    assert!(!selector.is_empty(), "the Deployment selects its pods by label");
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "the selector matches the pods");

    let container = the_container(&deployment);
    let args = container.args.clone().unwrap_or_default();
    assert_eq!(args, ["run", "--leader-election=true"]);
    assert!(container.command.is_none(), "the image's entrypoint is the binary");
    let image = container.image.as_deref().unwrap_or_default();
    assert!(image.starts_with("ghcr.io/bucket-broker/bucket-broker:"), "image {image}");

    let security = container.security_context.as_ref().expect("container securityContext");
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.run_as_user, Some(65532), "distroless nonroot uid");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.privileged, None);
    let dropped = security.capabilities.as_ref().and_then(|c| c.drop.clone()).unwrap_or_default();
    assert_eq!(dropped, ["ALL"]);
    assert!(security.capabilities.as_ref().and_then(|c| c.add.as_ref()).is_none(), "no capability added");
    let seccomp = security.seccomp_profile.as_ref().map(|p| p.type_.as_str());
    assert_eq!(seccomp, Some("RuntimeDefault"));

    let port = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(PORT_NAME))
        .expect("a container port named http");
    assert_eq!(port.container_port, 8080, "the default --metrics-addr port");
    for (probe, path) in [(&container.liveness_probe, "/healthz"), (&container.readiness_probe, "/readyz")] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).unwrap_or_else(|| panic!("{path} probe"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, IntOrString::String(PORT_NAME.to_owned()), "{path} probe port");
    }

    let resources = container.resources.as_ref().expect("resources");
    let quantity = |map: &Option<BTreeMap<String, Quantity>>, key: &str| {
        map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone())
    };
    assert_eq!(quantity(&resources.requests, "cpu").as_deref(), Some("50m"));
    assert_eq!(quantity(&resources.requests, "memory").as_deref(), Some("64Mi"));
    assert_eq!(quantity(&resources.limits, "memory").as_deref(), Some("256Mi"));

    let env = |name: &str| container.env.iter().flatten().find(|e| e.name == name);
    let region = env("BUCKET_BROKER_REGION").and_then(|e| e.value.as_deref());
    assert!(region.is_some_and(|r| !r.is_empty()), "BUCKET_BROKER_REGION is set: {region:?}");
    assert!(env("BUCKET_BROKER_DEPLOY_ENV").is_some(), "BUCKET_BROKER_DEPLOY_ENV is there to fill in");
    for (var, field) in [("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")] {
        let from = env(var).and_then(|e| e.value_from.as_ref()).and_then(|f| f.field_ref.as_ref());
        assert_eq!(from.map(|f| f.field_path.as_str()), Some(field), "{var} from the downward API");
    }

    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_ne!(pod.automount_service_account_token, Some(false), "the controller needs its token");
    assert_ne!(pod.host_network, Some(true));
}

/// The Deployment's arguments and `BUCKET_BROKER_*` variables are accepted by the real command line, so a
/// renamed flag or a bad value breaks this test rather than the rollout.
#[test]
fn the_deployment_command_line_parses() {
    let Install { deployment, .. } = install();
    let container = the_container(&deployment);
    let cli = Cli::command();
    let run = cli.find_subcommand("run").expect("the run subcommand");
    let flags: BTreeMap<String, String> = run
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_owned();
            Some((env, arg.get_long()?.to_owned()))
        })
        .collect();

    let mut argv = vec!["bucket-broker".to_owned()];
    argv.extend(container.args.iter().flatten().cloned());
    for var in container.env.iter().flatten().filter(|e| e.name.starts_with("BUCKET_BROKER_")) {
        let flag = flags.get(&var.name).unwrap_or_else(|| panic!("{} is not a flag's variable", var.name));
        argv.push(format!("--{flag}={}", var.value.as_deref().unwrap_or_default()));
    }
    let parsed = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?} does not parse: {e}"));
    let Command::Run(args) = parsed.command else { panic!("{argv:?} is not `run`") };
    assert!(args.leader_election, "two replicas need leader election");
    assert_eq!(args.metrics_addr.port(), 8080, "the probes and the Service use port 8080");
}

#[test]
fn the_service_and_bindings_point_at_objects_that_exist() {
    let install = install();
    let service_account = name(&install.service_account.metadata);
    let namespace = name(&install.namespace.metadata);

    let pod = &install.deployment.spec.template;
    let pod_spec = pod.spec.as_ref().expect("pod spec");
    assert_eq!(pod_spec.service_account_name.as_deref(), Some(service_account));

    let service = install.service.spec.as_ref().expect("service spec");
    assert_eq!(service.type_.as_deref(), Some("ClusterIP"));
    let pod_labels = pod.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    let selector = service.selector.clone().unwrap_or_default();
    assert!(!selector.is_empty(), "the Service selects pods");
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "the Service selects the controller");
    let ports = service.ports.as_deref().unwrap_or_default();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some(PORT_NAME));
    assert_eq!(ports[0].port, 8080);
    assert_eq!(ports[0].target_port, Some(IntOrString::String(PORT_NAME.to_owned())));
    let container_port = the_container(&install.deployment)
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(PORT_NAME))
        .map(|p| p.container_port);
    assert!(container_port.is_some(), "the Service's target port is a port of the container");
    let annotations = install.service.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get("prometheus.io/scrape").map(String::as_str), Some("true"));
    assert_eq!(annotations.get("prometheus.io/port"), container_port.map(|p| p.to_string()).as_ref());

    let the_service_account = Subject {
        kind: "ServiceAccount".to_owned(),
        name: service_account.to_owned(),
        namespace: Some(namespace.to_owned()),
        api_group: None,
    };
    let is_the_service_account = |subjects: &Option<Vec<Subject>>| {
        subjects.as_deref() == Some(std::slice::from_ref(&the_service_account))
    };
    let binding = &install.cluster_role_binding;
    assert_eq!(binding.role_ref.api_group.as_deref(), Some("rbac.authorization.k8s.io"));
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, name(&install.cluster_role.metadata));
    assert!(is_the_service_account(&binding.subjects), "{:?}", binding.subjects);

    let binding = &install.role_binding;
    assert_eq!(binding.role_ref.api_group.as_deref(), Some("rbac.authorization.k8s.io"));
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.name, name(&install.role.metadata));
    assert!(is_the_service_account(&binding.subjects), "{:?}", binding.subjects);
}

#[test]
fn the_disruption_budget_keeps_one_of_the_two_replicas() {
    let install = install();
    let spec = install.disruption_budget.spec.as_ref().expect("PDB spec");
    assert_eq!(spec.min_available, Some(IntOrString::Int(1)));
    assert_eq!(spec.max_unavailable, None);
    assert_eq!(install.deployment.spec.replicas, Some(2), "one can be evicted");
    let selected = spec.selector.as_ref().and_then(|s| s.match_labels.clone()).unwrap_or_default();
    let deployment_selector = install.deployment.spec.selector.clone();
    assert_eq!(Some(selected), deployment_selector.match_labels, "the PDB covers the controller's pods");
}

#[test]
fn the_optional_service_monitor_scrapes_the_service() {
    // A CRD type of the Prometheus Operator: read as plain YAML.
    let monitor: Value = parse("deploy/components/servicemonitor/servicemonitor.yaml");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["kind"], "ServiceMonitor");
    assert_eq!(monitor["metadata"]["namespace"], NAMESPACE, "next to the Service");
    let service = install().service;
    let labels = service.metadata.labels.clone().unwrap_or_default();
    let selector = monitor["spec"]["selector"]["matchLabels"].as_object().expect("matchLabels");
    assert!(!selector.is_empty());
    for (key, value) in selector {
        assert_eq!(labels.get(key).map(String::as_str), value.as_str(), "selects the Service by {key}");
    }
    let endpoints = monitor["spec"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"], PORT_NAME, "the Service's port name");
    assert_eq!(endpoints[0]["path"], "/metrics");
}

/// `kubectl kustomize` of a directory, as `kubectl apply -k` renders it.
pub(crate) fn kustomize(dir: &Path) -> Vec<Value> {
    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl runs (scripts/test installs it when it is missing)");
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split("\n---\n").map(|doc| serde_saphyr::from_str(doc).expect("rendered YAML")).collect()
}

/// `kubectl kustomize` of an overlay in a directory of its own, whose kustomization is `body` (given the
/// repository's path, relative to the overlay) after the apiVersion and kind.
pub(crate) fn kustomize_overlay(body: impl Fn(&str) -> String) -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let overlay = std::env::temp_dir().join(crate::harness::unique_name("bb-overlay"));
    std::fs::create_dir_all(&overlay).expect("overlay dir");
    // kustomize takes only relative paths: up from the overlay to `/`, then down to the repository.
    let up = "../".repeat(overlay.components().count() - 1);
    let repo = format!("{up}{}", root.display().to_string().trim_start_matches('/'));
    let text = format!("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n{}", body(&repo));
    std::fs::write(overlay.join("kustomization.yaml"), text).expect("overlay written");
    let rendered = kustomize(&overlay);
    let _ = std::fs::remove_dir_all(&overlay);
    rendered
}

/// The placeholder namespace of the overlay that `deploy/components/namespace-scoped` documents.
const DOCUMENTED_NAMESPACE: &str = "team-a";

/// `deploy/` with the component `deploy/components/namespace-scoped`, watching `namespace`: the overlay its
/// kustomization.yaml shows in a comment (so that what users copy is what is tested), rendered by
/// `kubectl kustomize`.
pub(crate) fn namespace_scoped_install(namespace: &str) -> Vec<Value> {
    let path = "deploy/components/namespace-scoped/kustomization.yaml";
    let text = read(path);
    let overlay: Vec<&str> = text
        .lines()
        .skip_while(|line| *line != "#   resources:")
        .take_while(|line| *line != "#")
        .map(|line| {
            line.strip_prefix("#   ").unwrap_or_else(|| panic!("{path}: the overlay's line {line:?}"))
        })
        .collect();
    assert!(overlay.len() > 5, "{path} shows the overlay in a comment, from `#   resources:` to a `#` line");
    let overlay = overlay.join("\n");
    assert!(
        overlay.contains(DOCUMENTED_NAMESPACE),
        "{path}: the overlay sets the namespace {DOCUMENTED_NAMESPACE}"
    );
    kustomize_overlay(|repo| {
        format!("{overlay}\n")
            .replace("<path to this repository>", repo)
            .replace(DOCUMENTED_NAMESPACE, namespace)
    })
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects.iter().filter_map(|o| o["kind"].as_str().map(str::to_owned)).collect()
}

#[test]
fn kustomize_renders_the_crds_and_the_controller_apart_and_the_monitor_on_request() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crds = kustomize(&root.join("crds"));
    assert_eq!(kinds(&crds), BTreeSet::from(["CustomResourceDefinition".to_owned()]));
    assert_eq!(crds.len(), 4);

    let controller = kustomize(&root.join("deploy"));
    let rendered = kinds(&controller);
    assert!(!rendered.contains("CustomResourceDefinition"), "{rendered:?}");
    assert!(!rendered.contains("ServiceMonitor"), "optional, not by default: {rendered:?}");
    assert!(rendered.contains("PodDisruptionBudget") && rendered.contains("Deployment"), "{rendered:?}");

    // The overlay the component's kustomization.yaml shows.
    let with_monitor = kustomize_overlay(|repo| {
        format!("resources:\n  - {repo}/deploy\ncomponents:\n  - {repo}/deploy/components/servicemonitor\n")
    });
    let monitor = with_monitor.iter().find(|o| o["kind"] == "ServiceMonitor").expect("a ServiceMonitor");
    assert_eq!(monitor["metadata"]["namespace"], NAMESPACE, "next to the Service it selects");
    assert_eq!(with_monitor.len(), controller.len() + 1);

    // The README's EKS overlay: image, settings and IRSA role set, nothing else added or lost.
    let eks = kustomize(&root.join("examples/install-eks"));
    assert_eq!(eks.len(), controller.len());
    assert_eks_overlay(&eks, &controller);
}

/// The settings `examples/install-eks` gives, by variable name.
pub(crate) const EKS_SETTINGS: &[(&str, &str)] = &[
    ("BUCKET_BROKER_REGION", "eu-west-2"),
    ("BUCKET_BROKER_DEPLOY_ENV", "prod"),
    ("BUCKET_BROKER_CLUSTER_NAME", "eks-prod-eu-west-2"),
    (
        "BUCKET_BROKER_PERMISSIONS_BOUNDARY_ARN",
        "arn:aws:iam::123456789012:policy/bucket-broker-user-boundary",
    ),
    ("BUCKET_BROKER_PLATFORM_CIDRS", "203.0.113.10/32,203.0.113.11/32"),
];

/// The container's environment, by name, failing on a name given twice.
fn env_by_name(deployment: &Value) -> BTreeMap<String, Value> {
    let containers = deployment["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container: the controller");
    let mut env = BTreeMap::new();
    for var in containers[0]["env"].as_array().expect("env") {
        let name = var["name"].as_str().expect("a named variable").to_owned();
        assert!(env.insert(name.clone(), var.clone()).is_none(), "{name} is set twice");
    }
    env
}

/// `examples/install-eks` rendered over `base` (deploy/ as rendered): the image, each setting of
/// [`EKS_SETTINGS`] under its own name, every other variable of the base kept, and the IRSA role.
fn assert_eks_overlay(eks: &[Value], base: &[Value]) {
    let deployment = eks.iter().find(|o| o["kind"] == "Deployment").expect("the Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "123456789012.dkr.ecr.eu-west-2.amazonaws.com/bucket-broker:0.1.0");
    let env = env_by_name(deployment);
    for (name, value) in EKS_SETTINGS {
        assert_eq!(env.get(*name), Some(&serde_json::json!({"name": name, "value": value})), "{name}");
    }
    let base_env = env_by_name(base.iter().find(|o| o["kind"] == "Deployment").expect("the base Deployment"));
    for (name, var) in &base_env {
        if !EKS_SETTINGS.iter().any(|(set, _)| set == name) {
            assert_eq!(env.get(name), Some(var), "{name} is kept as deploy/ has it");
        }
    }
    let added: Vec<&String> = env.keys().filter(|name| !base_env.contains_key(*name)).collect();
    assert_eq!(added, ["BUCKET_BROKER_PLATFORM_CIDRS"], "the overlay adds the platform network");
    let account = eks.iter().find(|o| o["kind"] == "ServiceAccount").expect("the ServiceAccount");
    assert_eq!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/bucket-broker"
    );
}

/// The EKS overlay patches variables by name, not by position: over a copy of `deploy/` whose variables come
/// in the reverse order, it sets the same values under the same names. (A JSON patch of `/env/0` would
/// overwrite another variable here.)
#[test]
fn the_eks_overlay_sets_variables_by_name_whatever_their_order() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let overlay_text = read("examples/install-eks/kustomization.yaml");
    assert!(!overlay_text.contains("/env/"), "no JSON patch path into the env list");

    let work = std::env::temp_dir().join(crate::harness::unique_name("bb-eks-order"));
    copy_dir(&root.join("deploy"), &work.join("deploy"));
    let path = work.join("deploy/deployment.yaml");
    let mut deployment: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).expect("deployment"))
        .expect("deploy/deployment.yaml");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut().expect("env");
    env.reverse();
    // JSON is YAML.
    std::fs::write(&path, deployment.to_string()).expect("reordered deployment written");
    let overlay = work.join("examples/install-eks");
    std::fs::create_dir_all(&overlay).expect("overlay dir");
    std::fs::write(overlay.join("kustomization.yaml"), &overlay_text).expect("overlay written");

    let base = kustomize(&work.join("deploy"));
    let eks = kustomize(&overlay);
    let _ = std::fs::remove_dir_all(&work);
    let rendered = base.iter().find(|o| o["kind"] == "Deployment").expect("the Deployment");
    let first = &rendered["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"];
    assert_eq!(first, "POD_NAMESPACE", "the copy's variables are reversed");
    assert_eks_overlay(&eks, &base);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("directory created");
    for entry in std::fs::read_dir(from).expect("directory listed") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("file copied");
        }
    }
}

/// What RBAC grants: (apiGroup, resource, verb, resourceName or any).
type Grant = (String, String, String, Option<String>);

/// Every combination the rules grant.
fn grants(rules: &[PolicyRule]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in rules {
        assert!(rule.non_resource_urls.is_none(), "no non-resource URLs: {rule:?}");
        let names: Vec<Option<String>> = match &rule.resource_names {
            Some(names) => names.iter().cloned().map(Some).collect(),
            None => vec![None],
        };
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    for name in &names {
                        for value in [group, resource, verb] {
                            assert!(!value.contains('*'), "wildcard in {rule:?}");
                        }
                        out.insert((group.clone(), resource.clone(), verb.clone(), name.clone()));
                    }
                }
            }
        }
    }
    out
}

/// A rule as the test expects it.
fn rule(group: &str, resources: &[&str], verbs: &[&str], names: &[&str]) -> PolicyRule {
    let strings = |values: &[&str]| values.iter().map(|v| v.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(&[group])),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        resource_names: (!names.is_empty()).then(|| strings(names)),
        non_resource_urls: None,
    }
}

#[test]
fn rbac_grants_exactly_what_the_controller_uses() {
    let install = install();
    let granted = grants(install.cluster_role.rules.as_deref().unwrap_or_default());
    let kinds = ["buckets", "bucketbindings", "bucketservicekeys"];
    let statuses = ["buckets/status", "bucketbindings/status", "bucketservicekeys/status"];
    let owners = ["bucketbindings/finalizers", "bucketservicekeys/finalizers"];
    let wanted = grants(&[
        rule("bucketbroker.io", &kinds, &["get", "list", "watch", "patch"], &[]),
        rule("bucketbroker.io", &statuses, &["patch"], &[]),
        rule("bucketbroker.io", &owners, &["update"], &[]),
        rule("", &["secrets"], &["get", "list", "watch", "create", "update", "delete"], &[]),
        rule("events.k8s.io", &["events"], &["create", "patch"], &[]),
        rule("", &["namespaces"], &["get"], &[]),
        rule("bucketbroker.io", &["bucketclasses"], &["get", "list", "watch"], &[]),
        rule("", &["serviceaccounts"], &["get", "list", "watch", "patch"], &[]),
    ]);
    let missing: Vec<_> = wanted.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&wanted).collect();
    assert!(missing.is_empty() && extra.is_empty(), "ClusterRole: missing {missing:?}, extra {extra:?}");
    assert!(install.cluster_role.aggregation_rule.is_none(), "no aggregation: the rules are all there is");

    let granted = grants(install.role.rules.as_deref().unwrap_or_default());
    let wanted = grants(&[
        rule("coordination.k8s.io", &["leases"], &["create"], &[]),
        rule("coordination.k8s.io", &["leases"], &["get", "update"], &[LEASE_NAME]),
    ]);
    assert_eq!(granted, wanted, "the leader-election Role");
}

/// AWS operations the code may call, with the IAM actions each needs. A call missing from this table fails
/// the policy test: decide what it needs, add it here and to `deploy/aws/controller-policy.json`.
const OPERATIONS: &[(&str, &str, &[&str])] = &[
    ("s3", "HeadBucket", &["s3:ListBucket"]),
    ("s3", "CreateBucket", &["s3:CreateBucket"]),
    ("s3", "DeleteBucket", &["s3:DeleteBucket"]),
    ("s3", "ListObjectsV2", &["s3:ListBucket"]),
    ("s3", "GetBucketTagging", &["s3:GetBucketTagging"]),
    ("s3", "PutBucketTagging", &["s3:PutBucketTagging"]),
    ("s3", "GetBucketEncryption", &["s3:GetEncryptionConfiguration"]),
    ("s3", "PutBucketEncryption", &["s3:PutEncryptionConfiguration"]),
    ("s3", "GetPublicAccessBlock", &["s3:GetBucketPublicAccessBlock"]),
    ("s3", "PutPublicAccessBlock", &["s3:PutBucketPublicAccessBlock"]),
    ("s3", "GetBucketOwnershipControls", &["s3:GetBucketOwnershipControls"]),
    ("s3", "PutBucketOwnershipControls", &["s3:PutBucketOwnershipControls"]),
    ("s3", "GetBucketPolicy", &["s3:GetBucketPolicy"]),
    ("s3", "PutBucketPolicy", &["s3:PutBucketPolicy"]),
    ("s3", "DeleteBucketPolicy", &["s3:DeleteBucketPolicy"]),
    // The BucketClass settings: versioning, lifecycle rules, CORS. IAM has no action of its own for the two
    // deletes: each is authorized by the Put of its configuration.
    ("s3", "GetBucketVersioning", &["s3:GetBucketVersioning"]),
    ("s3", "PutBucketVersioning", &["s3:PutBucketVersioning"]),
    ("s3", "GetBucketLifecycleConfiguration", &["s3:GetLifecycleConfiguration"]),
    ("s3", "PutBucketLifecycleConfiguration", &["s3:PutLifecycleConfiguration"]),
    ("s3", "DeleteBucketLifecycle", &["s3:PutLifecycleConfiguration"]),
    ("s3", "GetBucketCors", &["s3:GetBucketCORS"]),
    ("s3", "PutBucketCors", &["s3:PutBucketCORS"]),
    ("s3", "DeleteBucketCors", &["s3:PutBucketCORS"]),
    // The orphan sweeper: buckets listed by prefix, users by IAM path.
    ("s3", "ListBuckets", &["s3:ListAllMyBuckets"]),
    ("iam", "ListUsers", &["iam:ListUsers"]),
    ("iam", "ListRoles", &["iam:ListRoles"]),
    // Users are created with their tags in the same request, which IAM also authorizes as TagUser.
    ("iam", "CreateUser", &["iam:CreateUser", "iam:TagUser"]),
    ("iam", "GetUser", &["iam:GetUser"]),
    ("iam", "TagUser", &["iam:TagUser"]),
    ("iam", "UntagUser", &["iam:UntagUser"]),
    ("iam", "DeleteUser", &["iam:DeleteUser"]),
    ("iam", "PutUserPermissionsBoundary", &["iam:PutUserPermissionsBoundary"]),
    ("iam", "DeleteUserPermissionsBoundary", &["iam:DeleteUserPermissionsBoundary"]),
    ("iam", "GetUserPolicy", &["iam:GetUserPolicy"]),
    ("iam", "PutUserPolicy", &["iam:PutUserPolicy"]),
    ("iam", "DeleteUserPolicy", &["iam:DeleteUserPolicy"]),
    ("iam", "ListAttachedUserPolicies", &["iam:ListAttachedUserPolicies"]),
    ("iam", "ListUserPolicies", &["iam:ListUserPolicies"]),
    ("iam", "AttachUserPolicy", &["iam:AttachUserPolicy"]),
    ("iam", "DetachUserPolicy", &["iam:DetachUserPolicy"]),
    ("iam", "ListAccessKeys", &["iam:ListAccessKeys"]),
    ("iam", "CreateAccessKey", &["iam:CreateAccessKey"]),
    ("iam", "DeleteAccessKey", &["iam:DeleteAccessKey"]),
    // Keyless bindings: the role of a ServiceAccount, created with its tags (authorized as TagRole too).
    ("iam", "CreateRole", &["iam:CreateRole", "iam:TagRole"]),
    ("iam", "GetRole", &["iam:GetRole"]),
    ("iam", "TagRole", &["iam:TagRole"]),
    ("iam", "DeleteRole", &["iam:DeleteRole"]),
    ("iam", "UpdateAssumeRolePolicy", &["iam:UpdateAssumeRolePolicy"]),
    ("iam", "PutRolePermissionsBoundary", &["iam:PutRolePermissionsBoundary"]),
    ("iam", "GetRolePolicy", &["iam:GetRolePolicy"]),
    ("iam", "PutRolePolicy", &["iam:PutRolePolicy"]),
    ("iam", "DeleteRolePolicy", &["iam:DeleteRolePolicy"]),
    ("iam", "ListRolePolicies", &["iam:ListRolePolicies"]),
    // Keyless bindings through EKS Pod Identity: the ServiceAccount's association with its role. Creating or
    // repointing one passes the role to EKS; creating it with tags is also authorized as TagResource.
    ("eks", "ListPodIdentityAssociations", &["eks:ListPodIdentityAssociations"]),
    ("eks", "DescribePodIdentityAssociation", &["eks:DescribePodIdentityAssociation"]),
    (
        "eks",
        "CreatePodIdentityAssociation",
        &["eks:CreatePodIdentityAssociation", "eks:TagResource", "iam:PassRole"],
    ),
    ("eks", "UpdatePodIdentityAssociation", &["eks:UpdatePodIdentityAssociation", "iam:PassRole"]),
    ("eks", "DeletePodIdentityAssociation", &["eks:DeletePodIdentityAssociation"]),
    // Signed with the new user's key to check it works, and never deniable: nothing for the controller.
    ("sts", "GetCallerIdentity", &[]),
];

/// Actions AWS defines no resource for, so a policy can only grant them on `*`. ListBuckets is sent with
/// the bucket prefix, and only the prefix's buckets are read further.
const UNSCOPABLE: &[&str] = &["s3:ListAllMyBuckets", "iam:ListUsers", "iam:ListRoles"];

/// The permissions boundary every user must have, as the shipped policies name it.
const BOUNDARY_ARN: &str = "arn:aws:iam::*:policy/bucket-broker-user-boundary";
/// The one managed policy the controller may attach (`--common-user-policy-arn`).
const COMMON_POLICY_ARN: &str = "arn:aws:iam::*:policy/bucket-broker-common-user-policy";
/// IAM actions that could give a user more than the boundary allows, if they were granted without it.
const NEED_THE_BOUNDARY: &[&str] = &[
    "iam:CreateUser",
    "iam:PutUserPermissionsBoundary",
    "iam:DeleteUserPermissionsBoundary",
    "iam:PutUserPolicy",
    "iam:AttachUserPolicy",
    "iam:CreateRole",
    "iam:PutRolePermissionsBoundary",
    "iam:PutRolePolicy",
];

/// One `call(stats, service, operation, future)` in the AWS layer.
#[derive(Debug)]
struct CallSite {
    at: String,
    service: String,
    operation: String,
}

/// Every use of `call(` in `source` (not its definition, not in a comment), with its service (a constant
/// such as `S3`, or a literal) and its operation, which must be a string literal.
fn call_sites(file: &str, source: &str) -> Vec<CallSite> {
    let mut sites = Vec::new();
    for (start, _) in source.match_indices("call(") {
        let before = &source[..start];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let is_part_of_a_name = before.chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
        if is_part_of_a_name || before.ends_with("fn ") || before[line_start..].contains("//") {
            continue;
        }
        let at = format!("{file}:{}", before.matches('\n').count() + 1);
        let args = leading_arguments(&source[start + "call(".len()..], 3);
        assert_eq!(args.len(), 3, "{at}: cannot read the arguments of call(");
        let service = args[1].trim_matches('"').to_lowercase();
        let operation = args[2]
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{at}: the operation {:?} is not a string literal", args[2]));
        sites.push(CallSite { at, service, operation: operation.to_owned() });
    }
    sites
}

/// The first `n` top-level arguments of a call whose opening parenthesis has just been read, trimmed.
fn leading_arguments(rest: &str, n: usize) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut depth = 0u32;
    let mut in_string = false;
    let mut escaped = false;
    for c in rest.chars() {
        if in_string {
            current.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => break,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                args.push(current.trim().to_owned());
                current.clear();
                if args.len() == n {
                    return args;
                }
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        args.push(current.trim().to_owned());
    }
    args.truncate(n);
    args
}

#[test]
fn the_call_scanner_reads_operations_and_skips_the_definition() {
    let source = r#"
        async fn call(stats: &CallStats, service: &'static str, operation: &'static str) {}
        // call(self.stats, S3, "InAComment", x)
        let a = optional(call(self.stats, S3, "HeadBucket", head).await)?;
        let b = call(stats, "sts", "GetCallerIdentity", probe.get_caller_identity().send()).await;
        let c = call(
            self.stats,
            IAM,
            "CreateUser",
            create,
        );
        let d = recall(x, "NotACall");
    "#;
    let found: Vec<(String, String)> =
        call_sites("sample.rs", source).into_iter().map(|s| (s.service, s.operation)).collect();
    let expected = [("s3", "HeadBucket"), ("sts", "GetCallerIdentity"), ("iam", "CreateUser")]
        .map(|(s, o)| (s.to_owned(), o.to_owned()));
    assert_eq!(found, expected);
    let result = std::panic::catch_unwind(|| call_sites("bad.rs", "call(stats, S3, OPERATION, f)"));
    assert!(result.is_err(), "an operation that is not a literal cannot be checked, so it fails");
}

#[test]
fn the_aws_policy_grants_exactly_the_actions_the_code_calls() {
    let mut sites = Vec::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/aws");
    for entry in std::fs::read_dir(&dir).expect("src/aws") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let source = std::fs::read_to_string(&path).expect("source");
            let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            sites.extend(call_sites(&file, &source));
        }
    }
    let operations: BTreeSet<(&str, &str)> =
        sites.iter().map(|s| (s.service.as_str(), s.operation.as_str())).collect();
    assert!(
        operations.len() >= 20,
        "only {} AWS operations found in src/aws: {operations:?}",
        operations.len()
    );

    let table: BTreeMap<(&str, &str), &[&str]> = OPERATIONS.iter().map(|(s, o, a)| ((*s, *o), *a)).collect();
    let unmapped: Vec<String> = sites
        .iter()
        .filter(|s| !table.contains_key(&(&s.service, &s.operation)))
        .map(|s| format!("{}: {} {}", s.at, s.service, s.operation))
        .collect();
    assert!(unmapped.is_empty(), "AWS calls without IAM actions in OPERATIONS: {unmapped:?}");
    let uncalled: Vec<_> = table.keys().filter(|k| !operations.contains(k)).collect();
    assert!(uncalled.is_empty(), "OPERATIONS lists operations the code no longer calls: {uncalled:?}");
    let needed: BTreeSet<&str> = operations.iter().flat_map(|op| table[op].iter().copied()).collect();

    let policy: Value =
        serde_json::from_str(&read("deploy/aws/controller-policy.json")).expect("policy JSON");
    assert_eq!(policy["Version"], "2012-10-17");
    let statements = policy["Statement"].as_array().expect("a list of statements");
    let strings = |value: &Value| -> Vec<String> {
        match value {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items.iter().map(|i| i.as_str().expect("a string").to_owned()).collect(),
            other => panic!("expected a string or a list of strings, found {other}"),
        }
    };
    let mut granted = BTreeSet::new();
    let mut sids = BTreeSet::new();
    for statement in statements {
        let sid = statement["Sid"].as_str().filter(|s| !s.is_empty()).expect("every statement has a Sid");
        assert!(sids.insert(sid.to_owned()), "Sid {sid} twice");
        assert_eq!(statement["Effect"], "Allow", "{sid}");
        for key in ["NotAction", "NotResource", "Principal", "NotPrincipal"] {
            assert!(statement.get(key).is_none(), "{sid}: {key} widens or misplaces the grant");
        }
        let actions = strings(&statement["Action"]);
        let condition = &statement["Condition"];
        if actions.iter().any(|a| NEED_THE_BOUNDARY.contains(&a.as_str())) {
            assert!(
                actions.iter().all(|a| NEED_THE_BOUNDARY.contains(&a.as_str())),
                "{sid}: mixes actions that need the boundary condition with others"
            );
            assert_eq!(condition["ArnLike"]["iam:PermissionsBoundary"], BOUNDARY_ARN, "{sid}");
        } else if actions.iter().any(|a| a == "iam:PassRole") {
            // A role of ours may be handed to EKS Pod Identity, and to no other service.
            assert_eq!(actions, ["iam:PassRole"], "{sid}: passing roles has a statement of its own");
            assert_eq!(
                condition,
                &serde_json::json!({"StringEquals": {"iam:PassedToService": "pods.eks.amazonaws.com"}}),
                "{sid}"
            );
        } else {
            assert!(condition.is_null(), "{sid}: a condition where none is checked: {condition}");
        }
        if actions.iter().any(|a| a == "iam:AttachUserPolicy") {
            assert_eq!(actions, ["iam:AttachUserPolicy"], "{sid}: attaching has a statement of its own");
            assert_eq!(condition["ArnLike"]["iam:PolicyARN"], COMMON_POLICY_ARN, "{sid}");
        }
        let resources = strings(&statement["Resource"]);
        for action in strings(&statement["Action"]) {
            assert!(!action.contains('*') && !action.contains('?'), "{sid}: wildcard action {action}");
            let confined_to = match action.split_once(':').map(|(service, _)| service) {
                _ if UNSCOPABLE.contains(&action.as_str()) => "*",
                Some("s3") => BUCKET_RESOURCE,
                Some("iam") if action.contains("Role") => ROLE_RESOURCE,
                Some("iam") => USER_RESOURCE,
                Some("eks")
                    if action.ends_with("PodIdentityAssociations") || action.starts_with("eks:Create") =>
                {
                    EKS_CLUSTER_RESOURCE
                }
                Some("eks") => EKS_ASSOCIATION_RESOURCE,
                _ => panic!("{sid}: {action} is not an S3, IAM or EKS action"),
            };
            assert!(resources.iter().all(|r| r == confined_to), "{sid}: {action} on {resources:?}");
            granted.insert(action);
        }
    }
    let granted: BTreeSet<&str> = granted.iter().map(String::as_str).collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(missing.is_empty(), "the policy does not grant {missing:?}, which the code needs");
    assert!(extra.is_empty(), "the policy grants {extra:?}, which the code never uses");
}

/// The boundary is the most a broker-made user may ever do: the credential policies' S3 actions on the
/// prefix's buckets of the same account, the two KMS actions S3 needs for a bucket encrypted with a KMS key
/// (only when S3 makes the request), nothing else; and the deployment names it.
#[test]
fn the_boundary_allows_exactly_what_credentials_are_given_and_denies_identity_changes() {
    use bucket_broker::desired::policy::{READ_ONLY_ACTIONS, READ_WRITE_EXTRA_ACTIONS, kms_statement};
    let boundary: Value = serde_json::from_str(&read("deploy/aws/boundary-policy.json")).expect("JSON");
    let statements = boundary["Statement"].as_array().expect("statements");
    let strings = |value: &Value| -> Vec<String> {
        match value {
            Value::Null => Vec::new(),
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items.iter().map(|i| i.as_str().expect("a string").to_owned()).collect(),
            other => panic!("expected a string or a list of strings, found {other}"),
        }
    };
    let allows: Vec<&Value> = statements.iter().filter(|s| s["Effect"] == "Allow").collect();
    assert_eq!(allows.len(), 2, "two Allows: the buckets, and their KMS keys through S3");
    for allow in &allows {
        for key in ["NotAction", "NotResource", "Principal", "NotPrincipal"] {
            assert!(allow.get(key).is_none(), "{}: {key} widens the Allow", allow["Sid"]);
        }
    }
    let (s3, kms): (Vec<&Value>, Vec<&Value>) =
        allows.iter().partition(|a| strings(&a["Action"]).iter().all(|action| action.starts_with("s3:")));
    assert_eq!((s3.len(), kms.len()), (1, 1), "one Allow of S3 actions, one of KMS actions: {allows:?}");
    let allowed: BTreeSet<String> = strings(&s3[0]["Action"]).into_iter().collect();
    let given: BTreeSet<String> =
        READ_ONLY_ACTIONS.iter().chain(READ_WRITE_EXTRA_ACTIONS).map(|a| a.to_string()).collect();
    assert_eq!(allowed, given, "the boundary and the credential policies list the same actions");
    assert_eq!(
        s3[0]["Resource"],
        serde_json::json!([BUCKET_RESOURCE, format!("{BUCKET_RESOURCE}/*")]),
        "the prefix's buckets and their objects only"
    );
    assert_eq!(
        s3[0]["Condition"]["StringEquals"]["s3:ResourceAccount"], "${aws:PrincipalAccount}",
        "buckets of the user's own account only"
    );

    // KMS: what a user of an SSE-KMS bucket is given, on keys only, and only when S3 asks for it.
    let key = "arn:aws:kms:eu-west-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let statement = kms_statement(key);
    let kms_allowed: BTreeSet<String> = strings(&kms[0]["Action"]).into_iter().collect();
    let kms_given: BTreeSet<String> = strings(&statement["Action"]).into_iter().collect();
    assert_eq!(kms_allowed, kms_given, "the boundary allows exactly the KMS actions a credential is given");
    assert_eq!(kms_allowed, BTreeSet::from(["kms:Decrypt".to_owned(), "kms:GenerateDataKey".to_owned()]));
    assert_eq!(kms[0]["Resource"], "arn:aws:kms:*:*:key/*", "keys only, not aliases or custom key stores");
    assert!(iam_matches("arn:aws:kms:*:*:key/*", key));
    assert_eq!(
        kms[0]["Condition"],
        serde_json::json!({"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}}),
        "only through S3, and nothing else in the condition"
    );
    let via = statement["Condition"]["StringEquals"]["kms:ViaService"].as_str().expect("kms:ViaService");
    assert!(iam_matches("s3.*.amazonaws.com", via), "the credential's {via} is within the boundary");
    assert!(!iam_matches("s3.*.amazonaws.com", "ec2.eu-west-2.amazonaws.com"));

    // The Denies, evaluated as IAM does: an action is denied when a Deny on every resource names it in
    // `Action`, or leaves it out of `NotAction`.
    let denies: Vec<&Value> =
        statements.iter().filter(|s| s["Effect"] == "Deny" && s["Resource"] == "*").collect();
    assert!(denies.iter().all(|d| d["Condition"].is_null()), "the Denies hold unconditionally");
    let denied = |action: &str| {
        denies.iter().any(|d| {
            let listed = |key: &str| strings(&d[key]).iter().any(|p| iam_matches(p, action));
            if d.get("NotAction").is_some() { !listed("NotAction") } else { listed("Action") }
        })
    };
    let explicitly: BTreeSet<String> = denies.iter().flat_map(|d| strings(&d["Action"])).collect();
    for action in ["iam:*", "sts:AssumeRole", "sts:AssumeRoleWithWebIdentity", "sts:GetSessionToken"] {
        assert!(explicitly.contains(action), "the boundary denies {action} by name");
    }
    for action in [
        "iam:CreateAccessKey",
        "sts:AssumeRole",
        "kms:Encrypt",
        "kms:ReEncryptFrom",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:GenerateDataKeyPair",
        "kms:CreateGrant",
        "kms:CreateKey",
        "kms:DescribeKey",
        "kms:PutKeyPolicy",
        "kms:ScheduleKeyDeletion",
        "kms:Sign",
        "kms:SomeActionAddedLater",
        "ec2:RunInstances",
    ] {
        assert!(denied(action), "the boundary denies {action}");
    }
    for action in given.iter().map(String::as_str).chain(["kms:GenerateDataKey", "kms:Decrypt"]) {
        assert!(!denied(action), "the boundary denies {action}, which credentials are given");
    }

    let deployment = install().deployment;
    let container = the_container(&deployment);
    let arn = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "BUCKET_BROKER_PERMISSIONS_BOUNDARY_ARN")
        .and_then(|e| e.value.as_deref())
        .expect("the deployment sets the required boundary");
    let (prefix, name) = BOUNDARY_ARN.split_once('*').expect("a pattern");
    assert!(arn.starts_with(prefix) && arn.ends_with(name), "{arn} matches {BOUNDARY_ARN}");
}

/// IAM's wildcard matching of an action or a resource: `*` is any run of characters, `?` any one;
/// actions are case-insensitive (resources are not, but the ones here are lower case).
fn iam_matches(pattern: &str, value: &str) -> bool {
    fn matches(p: &[u8], v: &[u8]) -> bool {
        match (p.first(), v.first()) {
            (None, None) => true,
            (Some(b'*'), _) => matches(&p[1..], v) || (!v.is_empty() && matches(p, &v[1..])),
            (Some(b'?'), Some(_)) => matches(&p[1..], &v[1..]),
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b) && matches(&p[1..], &v[1..]),
            _ => false,
        }
    }
    matches(pattern.as_bytes(), value.as_bytes())
}

#[test]
fn the_iam_matcher_matches_as_iam_does() {
    assert!(iam_matches("kms:*", "kms:Decrypt"));
    assert!(iam_matches("s3:GetBucketCORS", "s3:getbucketcors"));
    assert!(iam_matches("s3.*.amazonaws.com", "s3.eu-west-2.amazonaws.com"));
    assert!(iam_matches("kms:De?rypt", "kms:Decrypt"));
    assert!(!iam_matches("kms:Decrypt", "kms:DecryptMore"));
    assert!(!iam_matches("s3:*", "kms:Decrypt"));
}

/// The policy's resources are the controller's defaults; a changed default must change the policy too.
#[test]
fn the_aws_policy_resources_follow_the_default_prefix_and_path() {
    let parsed = Cli::try_parse_from(["bucket-broker", "run"]).expect("the defaults parse");
    let Command::Run(args) = parsed.command else { panic!("not run") };
    assert_eq!(BUCKET_RESOURCE, format!("arn:aws:s3:::{}*", args.bucket_prefix));
    assert_eq!(USER_RESOURCE, format!("arn:aws:iam::*:user{}*", args.iam_path));
    assert_eq!(ROLE_RESOURCE, format!("arn:aws:iam::*:role{}*", args.iam_path));
}

#[test]
fn every_signed_in_user_may_read_the_classes_and_nobody_write_them() {
    let role: ClusterRole = parse("deploy/tenant-roles/classes-reader.yaml");
    let expected = grants(&[rule("bucketbroker.io", &["bucketclasses"], &["get", "list", "watch"], &[])]);
    assert_eq!(grants(role.rules.as_deref().unwrap_or_default()), expected);
    let binding: ClusterRoleBinding = parse("deploy/tenant-roles/classes-reader-binding.yaml");
    assert_eq!(binding.role_ref.name, "bucket-broker-classes-reader");
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!((subjects[0].kind.as_str(), subjects[0].name.as_str()), ("Group", "system:authenticated"));
}

#[test]
fn tenant_roles_aggregate_into_edit_and_view_and_never_grant_status() {
    let kinds = ["buckets", "bucketbindings", "bucketservicekeys"];
    let cases = [
        ("deploy/tenant-roles/edit.yaml", &["aggregate-to-edit", "aggregate-to-admin"][..], true),
        ("deploy/tenant-roles/view.yaml", &["aggregate-to-view"][..], false),
    ];
    for (path, aggregates, writes) in cases {
        let role: ClusterRole = parse(path);
        let labels = role.metadata.labels.clone().unwrap_or_default();
        for aggregate in aggregates {
            let key = format!("rbac.authorization.k8s.io/{aggregate}");
            assert_eq!(labels.get(&key).map(String::as_str), Some("true"), "{path}: {key}");
        }
        let rules = role.rules.unwrap_or_default();
        assert!(!rules.is_empty(), "{path} grants something");
        for rule in &rules {
            assert_eq!(rule.api_groups.as_deref(), Some(&["bucketbroker.io".to_owned()][..]), "{path}");
            let resources = rule.resources.clone().unwrap_or_default();
            assert_eq!(resources, kinds, "{path}: exactly the three kinds, no subresource, no wildcard");
            let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
            let read: BTreeSet<&str> = ["get", "list", "watch"].into();
            if writes {
                assert!(verbs.is_superset(&read) && verbs.contains("create") && verbs.contains("delete"));
            } else {
                assert_eq!(verbs, read, "{path}: read only");
            }
            assert!(!verbs.contains("*"), "{path}: no wildcard verb");
        }
    }
}

/// The finalizers the controller puts on its kinds (`FINALIZER` in src/controller).
fn our_finalizers() -> BTreeSet<String> {
    let finalizers = [
        bucket_broker::controller::bucket::FINALIZER,
        <BucketBinding as CredentialKind>::FINALIZER,
        <BucketServiceKey as CredentialKind>::FINALIZER,
    ];
    finalizers.into_iter().map(str::to_owned).collect()
}

/// The single-quoted string literals of a CEL expression.
fn cel_strings(expression: &str) -> Vec<&str> {
    expression.split('\'').skip(1).step_by(2).collect()
}

/// What the policy's CEL does is tried on the real control plane (`platform.rs`); this checks what it is
/// given: our three finalizers, the updates of our three kinds, the controller's user name and the
/// break-glass group, a message that says what to do, and enforcement everywhere.
#[test]
fn the_admission_policy_guards_our_finalizers_from_everyone_but_the_controller() {
    let install = install();
    let policy = &install.admission_policy;
    let spec = policy.spec.as_ref().expect("the policy's spec");
    assert_eq!(
        spec.failure_policy.as_deref(),
        Some("Fail"),
        "an expression that cannot be evaluated refuses"
    );
    assert!(spec.param_kind.is_none(), "no parameters: nothing else to install");
    let rules = spec.match_constraints.as_ref().and_then(|m| m.resource_rules.clone()).unwrap_or_default();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let strings = |values: &[&str]| Some(values.iter().map(|v| v.to_string()).collect::<Vec<_>>());
    assert_eq!(rules[0].api_groups, strings(&["bucketbroker.io"]));
    assert_eq!(rules[0].api_versions, strings(&["*"]), "every version of the API, present and future");
    assert_eq!(rules[0].operations, strings(&["UPDATE"]), "a patch is an UPDATE; delete stays allowed");
    assert_eq!(rules[0].resources, strings(&["buckets", "bucketbindings", "bucketservicekeys"]));
    assert!(rules[0].resource_names.is_none());

    let conditions: BTreeMap<&str, &str> =
        spec.match_conditions.iter().flatten().map(|c| (c.name.as_str(), c.expression.as_str())).collect();
    assert_eq!(conditions.keys().copied().collect::<Vec<_>>(), ["not-break-glass", "not-the-controller"]);
    let controller = format!(
        "system:serviceaccount:{}:{}",
        name(&install.namespace.metadata),
        name(&install.service_account.metadata)
    );
    let not_the_controller = conditions["not-the-controller"];
    assert!(not_the_controller.starts_with("request.userInfo.username != "), "{not_the_controller}");
    assert_eq!(cel_strings(not_the_controller), [controller.as_str()], "deploy/'s ServiceAccount");
    assert_eq!(cel_strings(conditions["not-break-glass"]), ["system:masters"]);

    let variables: BTreeMap<&str, &str> =
        spec.variables.iter().flatten().map(|v| (v.name.as_str(), v.expression.as_str())).collect();
    let ours: BTreeSet<String> = cel_strings(variables["ours"]).into_iter().map(str::to_owned).collect();
    assert_eq!(ours, our_finalizers(), "the policy's finalizers are the controller's");
    let validations = spec.validations.as_deref().unwrap_or_default();
    assert_eq!(validations.len(), 1, "{validations:?}");
    assert!(validations[0].expression.contains("variables.ours"), "{}", validations[0].expression);
    let message = validations[0].message.as_deref().unwrap_or_default();
    assert!(message.contains("delete the object"), "the message says what to do instead: {message}");
    assert!(validations[0].message_expression.is_none(), "one fixed message");

    let binding = &install.admission_binding.spec;
    assert_eq!(binding.policy_name, name(&policy.metadata));
    assert_eq!(binding.validation_actions, ["Deny"]);
    assert!(binding.match_resources.is_none(), "enforced in every namespace");
    assert!(binding.param_ref.is_none());
}

/// What the deletion-protection policy's CEL does is tried on the real control plane (`protection.rs`); this
/// checks what it is given: deletes of Buckets only, the annotation the API documents, a message that says
/// what to do, and enforcement everywhere with no exemption.
#[test]
fn the_deletion_protection_policy_refuses_deleting_an_annotated_bucket() {
    let install = install();
    let policy = &install.deletion_protection;
    let spec = policy.spec.as_ref().expect("the policy's spec");
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    assert!(spec.param_kind.is_none());
    assert!(spec.match_conditions.is_none(), "no exemption: remove the annotation to delete");
    let rules = spec.match_constraints.as_ref().and_then(|m| m.resource_rules.clone()).unwrap_or_default();
    assert_eq!(rules.len(), 1, "{rules:?}");
    let strings = |values: &[&str]| Some(values.iter().map(|v| v.to_string()).collect::<Vec<_>>());
    assert_eq!(rules[0].api_groups, strings(&["bucketbroker.io"]));
    assert_eq!(rules[0].api_versions, strings(&["*"]));
    assert_eq!(rules[0].operations, strings(&["DELETE"]));
    assert_eq!(rules[0].resources, strings(&["buckets"]), "Buckets only: bindings are the seed's unbind");
    let validations = spec.validations.as_deref().unwrap_or_default();
    assert_eq!(validations.len(), 1, "{validations:?}");
    let expression = &validations[0].expression;
    let annotation = bucket_broker::api::DELETION_PROTECTION_ANNOTATION;
    assert!(cel_strings(expression).contains(&annotation), "{expression}");
    assert!(expression.contains("oldObject"), "a DELETE has only the old object: {expression}");
    for message in [validations[0].message.as_deref(), validations[0].message_expression.as_deref()] {
        let message = message.unwrap_or_default();
        assert!(message.contains(annotation), "names the annotation: {message}");
        assert!(message.contains("remove the annotation first"), "says what to do: {message}");
    }
    let binding = &install.deletion_protection_binding.spec;
    assert_eq!(binding.policy_name, name(&policy.metadata));
    assert_eq!(binding.validation_actions, ["Deny"]);
    assert!(binding.match_resources.is_none(), "enforced in every namespace");
}

#[test]
fn the_namespace_scoped_component_grants_one_namespace_and_reads_the_cluster_identity() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cluster_wide = kustomize(&root.join("deploy"));
    let scoped = namespace_scoped_install(DOCUMENTED_NAMESPACE);
    let of_kind = |kind: &'static str| scoped.iter().filter(move |o| o["kind"] == kind);
    let install = install();
    let main_role = name(&install.cluster_role.metadata);
    let the_service_account = serde_json::json!([{
        "kind": "ServiceAccount",
        "name": name(&install.service_account.metadata),
        "namespace": NAMESPACE,
    }]);

    // The main ClusterRole is bound in the watched namespace, and nowhere else.
    assert!(
        of_kind("ClusterRoleBinding").all(|b| b["roleRef"]["name"] != main_role),
        "no ClusterRoleBinding of {main_role} is left"
    );
    let bindings: Vec<&Value> =
        of_kind("RoleBinding").filter(|b| b["roleRef"]["name"] == main_role).collect();
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    assert_eq!(bindings[0]["roleRef"]["kind"], "ClusterRole");
    assert_eq!(bindings[0]["metadata"]["namespace"], DOCUMENTED_NAMESPACE);
    assert_eq!(bindings[0]["subjects"], the_service_account);

    // What stays cluster-wide: reading the kube-system Namespace and the BucketClasses.
    let mut cluster_wide_grants = BTreeSet::new();
    // (The tenant roles' reader of BucketClasses is every signed-in user's, not the controller's.)
    for binding in
        of_kind("ClusterRoleBinding").filter(|b| b["metadata"]["name"] != "bucket-broker-classes-reader")
    {
        assert_eq!(binding["subjects"], the_service_account);
        assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
        let role = of_kind("ClusterRole").find(|r| r["metadata"]["name"] == binding["roleRef"]["name"]);
        let role: ClusterRole =
            serde_json::from_value(role.expect("the bound ClusterRole").clone()).expect("role");
        cluster_wide_grants.extend(grants(role.rules.as_deref().unwrap_or_default()));
    }
    let expected = grants(&[
        rule("", &["namespaces"], &["get"], &["kube-system"]),
        rule("bucketbroker.io", &["bucketclasses"], &["get", "list", "watch"], &[]),
    ]);
    assert_eq!(cluster_wide_grants, expected);

    // The controller watches that namespace: --namespace, set by its environment variable, once.
    let flag = Cli::command()
        .find_subcommand("run")
        .and_then(|run| run.get_arguments().find(|a| a.get_long() == Some("namespace")).cloned())
        .and_then(|arg| arg.get_env().and_then(|e| e.to_str()).map(str::to_owned));
    assert_eq!(flag.as_deref(), Some("BUCKET_BROKER_NAMESPACE"));
    let deployment = of_kind("Deployment").next().expect("the Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let env = containers[0]["env"].as_array().expect("env");
    let watched: Vec<&Value> = env.iter().filter(|e| e["name"] == "BUCKET_BROKER_NAMESPACE").collect();
    assert_eq!(
        watched,
        [&serde_json::json!({"name": "BUCKET_BROKER_NAMESPACE", "value": DOCUMENTED_NAMESPACE})]
    );

    // Nothing else changed: one ClusterRoleBinding gone, a RoleBinding, a ClusterRole and its binding added.
    assert_eq!(scoped.len(), cluster_wide.len() + 2);
    let unchanged = |objects: &[Value]| -> BTreeSet<String> {
        objects
            .iter()
            .filter(|o| {
                !matches!(
                    o["kind"].as_str(),
                    Some("Deployment" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding")
                )
            })
            .map(|o| o.to_string())
            .collect()
    };
    assert_eq!(unchanged(&scoped), unchanged(&cluster_wide));
    let default_env: Vec<&Value> = cluster_wide
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .and_then(|d| d["spec"]["template"]["spec"]["containers"][0]["env"].as_array())
        .expect("the default env")
        .iter()
        .collect();
    let other_env: Vec<&Value> = env.iter().filter(|e| e["name"] != "BUCKET_BROKER_NAMESPACE").collect();
    assert_eq!(other_env, default_env, "the other variables are kept, in their order");
}
