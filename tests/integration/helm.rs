//! The Helm chart `charts/bucket-broker`, driven by the real `helm` (helm.sh/helm/v4, built by
//! `scripts/cluster build` and found on the PATH, as kubectl is):
//!
//! - its `crds/` are the repository's `crds/`, byte for byte, and `helm template --include-crds` renders them;
//! - `helm lint --strict` passes;
//! - `helm template` renders the objects `kubectl kustomize` renders from `deploy/` and its overlays for the
//!   same settings (Helm's own labels aside, and the Namespace, which Helm leaves to `--create-namespace`);
//! - every value becomes a flag the controller accepts, and the chart refuses to render without a platform
//!   network unless told that keys may work from anywhere;
//! - on the real control plane, `helm install` installs it; the controller then runs as the chart's
//!   ServiceAccount, with the chart's RBAC and the installed Deployment's own arguments and environment,
//!   becomes ready, leads, provisions, and is refused deleting a protected Bucket by the chart's policy;
//!   `helm uninstall` removes it all and leaves the CRDs. The control plane has no kubelet, so the test
//!   starts the process the pod would run, the way the pod would start it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bucket_broker::api::{Bucket, DELETION_PROTECTION_ANNOTATION, find_condition};
use bucket_broker::cli::{Cli, Command};
use clap::{CommandFactory, Parser};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::deploy::{kustomize, kustomize_overlay, read};
use crate::harness::{KUBECONFIG_ENV, TIMEOUT, TestEnv, http_get, on_real_cluster, unique_name};

const CHART: &str = "charts/bucket-broker";
/// The release and namespace that render the chart's objects under deploy/'s names.
const RELEASE: &str = "bucket-broker";
/// Labels Helm's releases carry and kustomize's install does not: bookkeeping, not selection semantics.
const HELM_LABELS: &[&str] = &[
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
];
/// The boundary's ARN deploy/ and the EKS overlay name.
const BOUNDARY: &str = "arn:aws:iam::123456789012:policy/bucket-broker-user-boundary";

/// helm with homes of its own (no repositories, no plugins, nothing of the user's), run from the repository.
struct Helm {
    dir: PathBuf,
}

impl Helm {
    fn new() -> Helm {
        let dir = std::env::temp_dir().join(unique_name("bb-helm"));
        std::fs::create_dir_all(&dir).expect("helm's home");
        Helm { dir }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let output = std::process::Command::new("helm")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("HELM_CACHE_HOME", self.dir.join("cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("config"))
            .env("HELM_DATA_HOME", self.dir.join("data"))
            .args(args)
            .output()
            .expect("helm runs (scripts/cluster build builds it; put $(scripts/cluster bin) on the PATH)");
        println!(
            "$ helm {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// A values file of `values` (JSON is YAML).
    fn values_file(&self, values: &Value) -> String {
        let file = self.dir.join(format!("{}.yaml", unique_name("values")));
        std::fs::write(&file, values.to_string()).expect("values file written");
        file.display().to_string()
    }

    /// `helm template` of the chart: its objects, or what helm said when it refused.
    fn template(&self, values: &Value, extra: &[&str]) -> Result<Vec<Value>, String> {
        let file = self.values_file(values);
        let args =
            [&["template", RELEASE, CHART, "--namespace", RELEASE, "--values", &file][..], extra].concat();
        let output = self.run(&args);
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(documents(&String::from_utf8_lossy(&output.stdout)))
    }
}

impl Drop for Helm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The objects of a multi-document YAML stream; documents of comments alone are skipped.
fn documents(text: &str) -> Vec<Value> {
    text.trim_start_matches("---\n")
        .split("\n---\n")
        .filter(|doc| doc.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')))
        .map(|doc| serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("rendered YAML: {e}\n{doc}")))
        .collect()
}

/// The values that say what deploy/ says: its placeholders, and knowingly no platform network (deploy/ has
/// none, and the chart wants that said).
fn deploy_values() -> Value {
    json!({
        "aws": {"region": "eu-west-2", "permissionsBoundaryArn": BOUNDARY},
        "platformNetwork": {"allowKeysFromAnywhere": true},
    })
}

/// The values that say what examples/install-eks says.
fn eks_values() -> Value {
    json!({
        "image": {"repository": "123456789012.dkr.ecr.eu-west-2.amazonaws.com/bucket-broker", "tag": "0.1.0"},
        "aws": {
            "region": "eu-west-2",
            "permissionsBoundaryArn": BOUNDARY,
            "roleArn": "arn:aws:iam::123456789012:role/bucket-broker",
        },
        "deployEnv": "prod",
        "clusterName": "eks-prod-eu-west-2",
        "platformNetwork": {"cidrs": ["203.0.113.10/32", "203.0.113.11/32"]},
    })
}

/// An object as the comparison sees it: without Helm's labels, without the namespace kustomize writes
/// into cluster-scoped objects (the API server drops it), and the container's variables in name order
/// (kustomize's patches append, Helm writes them in its template's order; a variable's meaning does not
/// depend on its place, as none refers to another).
fn normalized(object: &Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for label in HELM_LABELS {
                    map.remove(*label);
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut object = object.clone();
    strip(&mut object);
    let cluster_scoped = matches!(
        object["kind"].as_str(),
        Some(
            "ClusterRole"
                | "ClusterRoleBinding"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
                | "CustomResourceDefinition"
        )
    );
    if cluster_scoped && let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("namespace");
    }
    if let Some(containers) =
        object.pointer_mut("/spec/template/spec/containers").and_then(Value::as_array_mut)
    {
        for container in containers {
            if let Some(env) = container["env"].as_array_mut() {
                env.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            }
        }
    }
    object
}

/// Objects by kind and name.
fn by_name(objects: &[Value]) -> BTreeMap<(String, String), Value> {
    let mut map = BTreeMap::new();
    for object in objects {
        let key = (
            object["kind"].as_str().expect("a kind").to_owned(),
            object["metadata"]["name"].as_str().expect("a name").to_owned(),
        );
        assert!(map.insert(key.clone(), normalized(object)).is_none(), "{key:?} rendered twice");
    }
    map
}

/// The chart's objects are kustomize's, but for the Namespace.
fn assert_same_objects(what: &str, chart: &[Value], kustomized: &[Value]) {
    let namespaces: Vec<&Value> = kustomized.iter().filter(|o| o["kind"] == "Namespace").collect();
    assert_eq!(namespaces.len(), 1, "{what}: kustomize renders the controller's Namespace");
    assert!(
        chart.iter().all(|o| o["kind"] != "Namespace"),
        "{what}: Helm's release namespace is made by helm"
    );
    let kustomized: Vec<Value> = kustomized.iter().filter(|o| o["kind"] != "Namespace").cloned().collect();
    let (chart, kustomized) = (by_name(chart), by_name(&kustomized));
    let only_chart: Vec<_> = chart.keys().filter(|k| !kustomized.contains_key(*k)).collect();
    let only_kustomize: Vec<_> = kustomized.keys().filter(|k| !chart.contains_key(*k)).collect();
    assert!(
        only_chart.is_empty() && only_kustomize.is_empty(),
        "{what}: only in the chart {only_chart:?}, only in kustomize {only_kustomize:?}"
    );
    for (key, object) in &chart {
        let other = &kustomized[key];
        assert!(
            object == other,
            "{what}: {key:?} differs\n--- helm template\n{}\n--- kubectl kustomize\n{}",
            serde_json::to_string_pretty(object).unwrap_or_default(),
            serde_json::to_string_pretty(other).unwrap_or_default()
        );
    }
    assert!(chart.len() >= 14, "{what}: {} objects", chart.len());
}

#[test]
fn the_charts_crds_are_the_crds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|e| e.expect("entry").file_name().into_string().expect("a UTF-8 name"))
            .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
            .collect()
    };
    let ours = files(&root.join("crds"));
    assert_eq!(ours.len(), 4);
    assert_eq!(files(&root.join(CHART).join("crds")), ours, "the chart's crds/ holds exactly the CRDs");
    for file in &ours {
        assert_eq!(
            read(&format!("{CHART}/crds/{file}")),
            read(&format!("crds/{file}")),
            "{CHART}/crds/{file} differs from crds/{file}: copy it (cp crds/*.yaml {CHART}/crds/ after \
             `cargo run -- crds --out-dir crds`)"
        );
    }
}

#[test]
fn helm_lint_passes() {
    let helm = Helm::new();
    for values in [deploy_values(), eks_values()] {
        let file = helm.values_file(&values);
        let output = helm.run(&["lint", "--strict", CHART, "--values", &file]);
        assert!(output.status.success(), "helm lint --strict failed with {values}");
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(said.contains("1 chart(s) linted, 0 chart(s) failed"), "{said}");
    }
}

#[test]
fn helm_template_renders_what_kustomize_renders_for_the_same_settings() {
    let helm = Helm::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    let chart = helm.template(&deploy_values(), &[]).expect("the chart renders");
    assert_same_objects("deploy/", &chart, &kustomize(&root.join("deploy")));

    let chart = helm.template(&eks_values(), &[]).expect("the chart renders");
    assert_same_objects("examples/install-eks", &chart, &kustomize(&root.join("examples/install-eks")));

    let mut with_monitor = deploy_values();
    with_monitor["serviceMonitor"] = json!({"enabled": true});
    let with_monitor = helm.template(&with_monitor, &[]).expect("the chart renders");
    let kustomized = kustomize_overlay(|repo| {
        format!("resources:\n  - {repo}/deploy\ncomponents:\n  - {repo}/deploy/components/servicemonitor\n")
    });
    assert!(with_monitor.iter().any(|o| o["kind"] == "ServiceMonitor"));
    assert_same_objects("deploy/ with the ServiceMonitor component", &with_monitor, &kustomized);

    // One watched namespace: the overlay deploy/components/namespace-scoped documents.
    let mut scoped = deploy_values();
    scoped["watchNamespace"] = json!("team-a");
    let chart = helm.template(&scoped, &[]).expect("the chart renders");
    let kustomized = crate::deploy::namespace_scoped_install("team-a");
    assert_same_objects("deploy/ with the namespace-scoped component", &chart, &kustomized);

    // With --include-crds, the CRDs are rendered too, as crds/ holds them (kustomize would print their
    // `36500.0` as `36500`, so the files themselves are compared).
    let with_crds = helm.template(&deploy_values(), &["--include-crds"]).expect("the chart renders");
    let crds: Vec<Value> =
        with_crds.iter().filter(|o| o["kind"] == "CustomResourceDefinition").cloned().collect();
    let files: Vec<Value> = kustomize(&root.join("crds"))
        .iter()
        .map(|crd| {
            let name = crd["spec"]["names"]["singular"].as_str().expect("a CRD's singular name");
            documents(&read(&format!("crds/{name}.yaml"))).remove(0)
        })
        .collect();
    let (rendered, ours) = (by_name(&crds), by_name(&files));
    assert_eq!(rendered.keys().collect::<Vec<_>>(), ours.keys().collect::<Vec<_>>());
    for (key, crd) in &rendered {
        assert!(crd == &ours[key], "{key:?}: helm renders the CRD otherwise than crds/ holds it");
    }
    let plain = helm.template(&deploy_values(), &[]).expect("the chart renders");
    assert_eq!(with_crds.len(), plain.len() + crds.len(), "the CRDs and the objects, nothing else");
}

/// The README's `helm install` command, as a user copies it (with an account id), renders: the values it sets
/// exist and satisfy the schema and the chart's checks.
#[test]
fn the_readmes_helm_install_command_renders() {
    let readme = read("README.md");
    let section = readme.split("### Install with Helm").nth(1).expect("the README's Install with Helm");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("a shell block");
    let command = block
        .replace("\\\n", " ")
        .lines()
        .find(|line| line.starts_with("helm install "))
        .expect("a helm install command")
        .to_owned();
    assert!(command.contains("platformNetwork."), "the command sets the platform network: {command}");
    let helm = Helm::new();
    let template = command.replacen("helm install ", "helm template ", 1).replace(" --create-namespace", "");
    let output = std::process::Command::new("bash")
        .args(["-c", &template])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("ACCOUNT", "123456789012")
        .env("HELM_CACHE_HOME", helm.dir.join("cache"))
        .env("HELM_CONFIG_HOME", helm.dir.join("config"))
        .env("HELM_DATA_HOME", helm.dir.join("data"))
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{template}\n{stderr}");
    let objects = documents(&String::from_utf8_lossy(&output.stdout));
    let env = container(&objects)["env"].as_array().expect("env").clone();
    let value = |name: &str| env.iter().find(|v| v["name"] == name).map(|v| v["value"].clone());
    assert_eq!(value("BUCKET_BROKER_PLATFORM_CIDRS"), Some(json!("203.0.113.10/32,203.0.113.11/32")));
    assert_eq!(value("BUCKET_BROKER_PERMISSIONS_BOUNDARY_ARN"), Some(json!(BOUNDARY)));
    assert_eq!(
        container(&objects)["image"],
        "123456789012.dkr.ecr.eu-west-2.amazonaws.com/bucket-broker:0.1.0"
    );
}

/// Every value in values.yaml is documented: a comment right above it (`# -- ...`, the form chart
/// documentation tools read).
#[test]
fn every_value_is_documented() {
    let text = read(&format!("{CHART}/values.yaml"));
    let lines: Vec<&str> = text.lines().collect();
    let mut values = 0;
    // The indentation of a map documented as a whole (`resources`): its keys need no comment of their own.
    let mut documented_map: Option<usize> = None;
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.is_empty() || trimmed.starts_with('-') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if documented_map.is_some_and(|outer| indent > outer) {
            continue;
        }
        documented_map = None;
        let Some((key, value)) = trimmed.split_once(':') else { continue };
        let comment: Vec<&str> =
            lines[..i].iter().rev().take_while(|l| l.trim_start().starts_with('#')).copied().collect();
        let documented = comment.last().is_some_and(|l| l.trim_start().starts_with("# -- "));
        if value.trim().is_empty() {
            // A map: documented as a whole, or each of its values is.
            if documented {
                documented_map = Some(indent);
                values += 1;
            }
            continue;
        }
        values += 1;
        assert!(documented, "{CHART}/values.yaml: {key} has no `# -- ` comment right above it");
    }
    assert!(values > 30, "{values} values found");
}

#[test]
fn the_chart_refuses_to_render_without_a_platform_network() {
    let helm = Helm::new();
    let mut values = deploy_values();
    values["platformNetwork"] = json!({});
    let refusal = helm.template(&values, &[]).expect_err("no platform network is refused");
    assert!(refusal.contains("platformNetwork is required"), "{refusal}");
    assert!(refusal.contains("would work from anywhere on the internet"), "says why: {refusal}");
    assert!(refusal.contains("platformNetwork.allowKeysFromAnywhere=true"), "says how to insist: {refusal}");

    // Any one of the three networks is enough, and reaches the controller.
    for (key, value, variable) in [
        ("cidrs", "203.0.113.10/32", "BUCKET_BROKER_PLATFORM_CIDRS"),
        ("vpcEndpoints", "vpce-0123456789abcdef0", "BUCKET_BROKER_PLATFORM_VPC_ENDPOINTS"),
        ("vpcs", "vpc-0123456789abcdef0", "BUCKET_BROKER_PLATFORM_VPCS"),
    ] {
        values["platformNetwork"] = json!({key: [value]});
        let objects = helm.template(&values, &[]).unwrap_or_else(|e| panic!("{key} alone: {e}"));
        let env = &container(&objects)["env"];
        let set = env.as_array().expect("env").iter().find(|v| v["name"] == variable);
        assert_eq!(set, Some(&json!({"name": variable, "value": value})), "{key}");
    }

    let mut values = deploy_values();
    values["aws"]["permissionsBoundaryArn"] = json!("");
    let refusal = helm.template(&values, &[]).expect_err("no boundary is refused");
    assert!(refusal.contains("aws.permissionsBoundaryArn is required"), "{refusal}");
    let mut values = deploy_values();
    values["leaderElection"] = json!(false);
    let refusal = helm.template(&values, &[]).expect_err("two replicas without leader election are refused");
    assert!(refusal.contains("leaderElection must stay true"), "{refusal}");
    let mut values = deploy_values();
    values["platfromNetwork"] = json!({"cidrs": ["203.0.113.10/32"]});
    let refusal = helm.template(&values, &[]).expect_err("a misspelt value is refused by the schema");
    assert!(refusal.contains("platfromNetwork"), "{refusal}");
}

/// The controller container of rendered objects.
fn container(objects: &[Value]) -> &Value {
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").expect("the Deployment");
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// Every value that sets a flag sets one the controller accepts, with the value given.
#[test]
fn every_chart_value_becomes_a_flag_the_controller_accepts() {
    let helm = Helm::new();
    let values = json!({
        "aws": {
            "region": "eu-west-1",
            "permissionsBoundaryArn": BOUNDARY,
            "commonUserPolicyArn": "arn:aws:iam::123456789012:policy/bucket-broker-common-user-policy",
            "endpointUrl": "https://s3.example.com",
            "requireTls": false,
        },
        "clusterName": "prod",
        "deployEnv": "production",
        "platformNetwork": {
            "cidrs": ["203.0.113.10/32", "198.51.100.0/24"],
            "vpcEndpoints": ["vpce-0123456789abcdef0"],
            "vpcs": ["vpc-0123456789abcdef0"],
        },
        "controller": {
            "resyncInterval": "5m",
            "orphanSweepInterval": "2h",
            "concurrency": 8,
            "rateLimits": {"iam": 5, "s3": 50, "sts": 10},
            "maxKeyAge": "90d",
            "bucketPrefix": "acme-",
            "userPrefix": "acme-",
            "iamPath": "/acme/",
            "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/ABC",
            "keyless": "required",
            "logFormat": "json",
        },
        "watchNamespace": "team-a",
        "leaseName": "bucket-broker-eu",
    });
    let objects = helm.template(&values, &[]).expect("the chart renders");
    let role = objects.iter().find(|o| o["kind"] == "Role").expect("the leader-election Role");
    assert_eq!(role["rules"][1]["resourceNames"], json!(["bucket-broker-eu"]), "the Role grants that Lease");
    let container = container(&objects);
    let run = Cli::command();
    let run = run.find_subcommand("run").expect("the run subcommand");
    let flags: BTreeMap<String, String> = run
        .get_arguments()
        .filter_map(|arg| Some((arg.get_env()?.to_str()?.to_owned(), arg.get_long()?.to_owned())))
        .collect();
    let mut argv = vec!["bucket-broker".to_owned()];
    argv.extend(
        container["args"].as_array().expect("args").iter().map(|a| a.as_str().expect("arg").to_owned()),
    );
    let mut set = BTreeSet::new();
    for var in container["env"].as_array().expect("env") {
        let name = var["name"].as_str().expect("name");
        if !name.starts_with("BUCKET_BROKER_") {
            continue;
        }
        let flag = flags.get(name).unwrap_or_else(|| panic!("{name} is not a flag's variable"));
        argv.push(format!("--{flag}={}", var["value"].as_str().expect("a plain value")));
        set.insert(name.to_owned());
    }
    assert_eq!(set.len(), 25, "every value above is set: {set:?}");
    let parsed = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?} does not parse: {e}"));
    let Command::Run(args) = parsed.command else { panic!("{argv:?} is not `run`") };
    assert!(args.leader_election);
    assert_eq!(args.platform_cidrs.len(), 2);
    assert_eq!(args.platform_vpc_endpoints, ["vpce-0123456789abcdef0"]);
    assert_eq!(args.platform_vpcs, ["vpc-0123456789abcdef0"]);
    assert_eq!((args.aws_iam_rate, args.aws_s3_rate, args.aws_sts_rate), (5.0, 50.0, 10.0));
    assert_eq!(args.concurrency, 8);
    assert!(!args.require_tls);
    assert_eq!(args.iam_path, "/acme/");
    assert_eq!(args.namespace.as_deref(), Some("team-a"));
    assert_eq!(args.leader_election_lease_name, "bucket-broker-eu");

    // EKS Pod Identity instead of IRSA (the two exclude each other).
    let mut values = values;
    values["controller"]["oidcProviderArn"] = json!("");
    values["controller"]["podIdentityClusterName"] = json!("prod-eu");
    let objects = helm.template(&values, &[]).expect("the chart renders");
    let env = self::container(&objects)["env"].as_array().expect("env").clone();
    let pod_identity =
        env.iter().find(|v| v["name"] == "BUCKET_BROKER_POD_IDENTITY_CLUSTER_NAME").expect("set");
    assert_eq!(pod_identity["value"], "prod-eu");
    assert!(
        !env.iter().any(|v| v["name"] == "BUCKET_BROKER_OIDC_PROVIDER_ARN"),
        "an empty value sets nothing"
    );
}

/// A release of the chart on the real control plane, uninstalled (and its namespace deleted) when dropped,
/// also after a failed test: its admission policies are cluster-wide.
struct Release {
    helm: Helm,
    name: String,
    namespace: String,
    kubeconfig: String,
    installed: bool,
}

impl Release {
    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        let output = std::process::Command::new("kubectl")
            .args(["--kubeconfig", &self.kubeconfig, "--namespace", &self.namespace])
            .args(args)
            .output()
            .expect("kubectl runs");
        println!(
            "$ kubectl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn uninstall(&mut self) -> std::process::Output {
        self.installed = false;
        self.helm.run(&[
            "uninstall",
            &self.name,
            "--namespace",
            &self.namespace,
            "--kubeconfig",
            &self.kubeconfig,
        ])
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.installed {
            self.uninstall();
        }
        // With no controller left, our finalizers would keep the Buckets, and so the namespace.
        let listed = self.kubectl(&["get", "buckets", "-o", "name"]);
        for bucket in String::from_utf8_lossy(&listed.stdout).lines() {
            self.kubectl(&[
                "patch",
                bucket,
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
            ]);
        }
        let namespace = format!("namespace/{}", self.namespace);
        self.kubectl(&["delete", &namespace, "--wait=false"]);
    }
}

/// A kubeconfig acting as `account` of `namespace`, with a token from the TokenRequest API (as a pod's
/// projected token), once RBAC lets it list Buckets there.
async fn service_account_kubeconfig(
    admin: &Client,
    path: &str,
    namespace: &str,
    account: &str,
    dir: &Path,
) -> PathBuf {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("a token for the chart's ServiceAccount")
        .status
        .and_then(|s| s.token)
        .expect("a token");
    let mut kubeconfig = kube::config::Kubeconfig::read_from(path).expect("readable kubeconfig");
    for named in &mut kubeconfig.auth_infos {
        named.auth_info =
            Some(kube::config::AuthInfo { token: Some(token.clone().into()), ..Default::default() });
    }
    let file = dir.join("controller.kubeconfig");
    std::fs::write(&file, serde_json::to_string(&kubeconfig).expect("kubeconfig"))
        .expect("kubeconfig written");

    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("config");
    let client = Client::try_from(config).expect("client");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while let Err(e) = Api::<Bucket>::namespaced(client.clone(), namespace).list(&ListParams::default()).await
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the chart's ServiceAccount cannot list Buckets: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    file
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_installs_the_chart_and_the_controller_runs_as_installed() {
    if !on_real_cluster("a real API server to install the chart into, with RBAC and admission policies") {
        return;
    }
    // Alone: the chart's admission policies are bound in every namespace while it is installed.
    let env = TestEnv::alone(Default::default()).await;
    let kubeconfig = std::env::var(KUBECONFIG_ENV).expect("the real cluster's kubeconfig");
    let name = unique_name("bb-helm");
    let mut release = Release {
        helm: Helm::new(),
        name: name.clone(),
        namespace: name.clone(),
        kubeconfig: kubeconfig.clone(),
        installed: true,
    };
    let fullname = format!("{name}-bucket-broker");
    let role = "arn:aws:iam::123456789012:role/bucket-broker";
    let values = json!({
        "aws": {
            "region": bucket_broker::local::moto::REGION,
            "permissionsBoundaryArn": "none",
            "roleArn": role,
            "endpointUrl": env.moto.endpoint_url(),
            // moto denies everything under a conditional Deny (DESIGN.md, Tests).
            "requireTls": false,
        },
        "platformNetwork": {"allowKeysFromAnywhere": true},
        "clusterName": "test",
        "deployEnv": "test",
    });
    let file = release.helm.values_file(&values);
    let started = std::time::Instant::now();
    let installed = tokio::task::block_in_place(|| {
        release.helm.run(&[
            "install",
            &name,
            CHART,
            "--namespace",
            &name,
            "--create-namespace",
            "--values",
            &file,
            "--kubeconfig",
            &kubeconfig,
        ])
    });
    assert!(installed.status.success(), "helm install failed");
    println!("helm install took {:?}", started.elapsed());
    let notes = String::from_utf8_lossy(&installed.stdout);
    assert!(notes.contains("STATUS: deployed"), "{notes}");
    assert!(notes.contains(&format!("IRSA, with the role {role}")), "the NOTES name the role: {notes}");
    assert!(notes.contains("WARNING: no platform network"), "the NOTES say keys work from anywhere: {notes}");

    let admin = env.client.clone();
    let account = Api::<ServiceAccount>::namespaced(admin.clone(), &name).get(&fullname).await.expect("SA");
    let annotations = account.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get("eks.amazonaws.com/role-arn").map(String::as_str), Some(role), "IRSA");
    for crd in ["buckets", "bucketbindings", "bucketservicekeys", "bucketclasses"] {
        let crd = format!("{crd}.bucketbroker.io");
        Api::<CustomResourceDefinition>::all(admin.clone()).get(&crd).await.expect("the CRD is installed");
    }

    // The pod the Deployment would run: its arguments and environment, as installed, resolved as the
    // kubelet resolves the downward API; AWS credentials as IRSA or Pod Identity would give them (moto's).
    let deployment =
        Api::<Deployment>::namespaced(admin.clone(), &name).get(&fullname).await.expect("Deployment");
    let pod = deployment.spec.template.spec.expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some(fullname.as_str()));
    let container = &pod.containers[0];
    let pod_name = format!("{fullname}-5d8f7c9b6-x2x4z");
    let dir = std::env::temp_dir().join(unique_name("bb-helm-pod"));
    std::fs::create_dir_all(&dir).expect("the pod's directory");
    let controller_kubeconfig = service_account_kubeconfig(&admin, &kubeconfig, &name, &fullname, &dir).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let credentials = env.moto.admin_credentials();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bucket-broker"));
    command
        .env_clear()
        .env("HOME", &dir)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBECONFIG", &controller_kubeconfig)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", credentials.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key());
    for var in container.env.iter().flatten() {
        let value = match (&var.value, var.value_from.as_ref().and_then(|f| f.field_ref.as_ref())) {
            (Some(value), _) => value.clone(),
            (None, Some(field)) if field.field_path == "metadata.name" => pod_name.clone(),
            (None, Some(field)) if field.field_path == "metadata.namespace" => name.clone(),
            other => panic!("{}: a value the test cannot resolve: {other:?}", var.name),
        };
        command.env(&var.name, value);
    }
    // The one change: the metrics port, 8080 in a pod of its own, is a free one here.
    let args = container.args.clone().unwrap_or_default();
    assert_eq!(args, ["run", "--leader-election=true"]);
    let mut child = command
        .args(&args)
        .arg(format!("--metrics-addr=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the controller starts");

    let readyz = format!("http://127.0.0.1:{port}/readyz");
    until("the controller to be ready", async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() && http_get(&readyz).await.0 == 200
    })
    .await;
    let leases = Api::<Lease>::namespaced(admin.clone(), &name);
    until("the controller to lead", async || {
        let lease = leases.get_opt("bucket-broker").await.ok().flatten();
        let holder = lease.and_then(|l| l.spec).and_then(|s| s.holder_identity);
        holder.as_deref() == Some(pod_name.as_str())
    })
    .await;

    // It provisions with the chart's RBAC, and the chart's deletion protection holds.
    let buckets = Api::<Bucket>::namespaced(admin.clone(), &name);
    let bucket: Bucket = serde_json::from_value(json!({
        "apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "records", "annotations": {DELETION_PROTECTION_ANNOTATION: "true"}},
        "spec": {},
    }))
    .expect("a Bucket");
    buckets.create(&PostParams::default(), &bucket).await.expect("Bucket created");
    until("the Bucket to be ready", async || {
        let bucket = buckets.get("records").await.expect("Bucket");
        let ready = bucket.status.as_ref().and_then(|s| find_condition(&s.conditions, "Ready").cloned());
        ready.is_some_and(|c| c.status == "True")
    })
    .await;
    let refused =
        tokio::task::block_in_place(|| release.kubectl(&["delete", "bucket", "records", "--timeout=30s"]));
    assert!(!refused.status.success(), "a protected Bucket is not deleted");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains(&format!("{fullname}-deletion-protection")), "the chart's policy refuses: {said}");
    assert!(said.contains("remove the annotation first"), "{said}");
    let annotation = format!("{DELETION_PROTECTION_ANNOTATION}-");
    let removed =
        tokio::task::block_in_place(|| release.kubectl(&["annotate", "bucket", "records", &annotation]));
    assert!(removed.status.success());
    // The controller removes its finalizer, which the chart's finalizer policy lets its ServiceAccount do.
    let deleted =
        tokio::task::block_in_place(|| release.kubectl(&["delete", "bucket", "records", "--timeout=60s"]));
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));

    child.kill().expect("stop the controller");
    let output = child.wait_with_output().expect("the controller ends");
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(log.contains("Resolved the controller's AWS identity"), "{log}");
    assert!(log.contains("Acquired the leader Lease"), "{log}");
    assert!(log.contains(bucket_broker::run::NO_PLATFORM_NETWORK), "{log}");
    let _ = std::fs::remove_dir_all(&dir);

    // Uninstalled: the controller's cluster-wide objects go, the CRDs stay (and with them every Bucket).
    let uninstalled = tokio::task::block_in_place(|| release.uninstall());
    assert!(uninstalled.status.success(), "helm uninstall failed");
    let gone = Api::<ClusterRole>::all(admin.clone()).get_opt(&fullname).await.expect("get");
    assert!(gone.is_none(), "the ClusterRole is uninstalled");
    for crd in ["buckets", "bucketbindings", "bucketservicekeys", "bucketclasses"] {
        let crd = format!("{crd}.bucketbroker.io");
        let kept = Api::<CustomResourceDefinition>::all(admin.clone()).get(&crd).await.expect("kept");
        assert!(kept.metadata.deletion_timestamp.is_none(), "{crd} is kept by helm uninstall");
    }
    drop(release);
    let namespaces = Api::<Namespace>::all(admin.clone());
    until("the release namespace to go", async || namespaces.get_opt(&name).await.ok().flatten().is_none())
        .await;
}
