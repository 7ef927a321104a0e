//! Safe for the platform (issue 21), on the real control plane only: the in-memory server runs neither
//! admission policies nor RBAC, so there each test says it is skipped.
//!
//! - `deploy/`'s ValidatingAdmissionPolicy keeps a tenant (the built-in `edit` role) from removing the
//!   controller's finalizers, while deleting stays allowed and the controller still finishes deletions.
//! - `deploy/components/namespace-scoped` runs the controller on exactly its rendered RBAC: it provisions in
//!   the watched namespace, and cannot read Secrets anywhere else.

use std::time::Duration;

use bucket_broker::api::{Bucket, BucketBinding, find_condition};
use bucket_broker::controller::credentials::CredentialKind;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde_json::{Value, json};

use crate::credentials::{credential, ready_binding, secret};
use crate::harness::{NAMESPACED_IDENTITY, TEST_IDENTITY, TIMEOUT, TestEnv, on_real_cluster, subjects_for};

/// How the policy's message starts (deploy/validatingadmissionpolicy.yaml).
const REFUSAL: &str = "the bucket-broker finalizer can only be removed by the controller";

fn bucket(name: &str) -> Value {
    json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket", "metadata": {"name": name},
        "spec": {}})
}

async fn bucket_ready(env: &TestEnv, name: &str) -> Bucket {
    env.wait_for::<Bucket>(name, "ready", |b| {
        b.status
            .as_ref()
            .is_some_and(|s| find_condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True"))
    })
    .await
}

/// Removes every finalizer of `name` with a JSON patch, as `kubectl patch --type=json` does.
async fn strip<K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug>(
    api: &Api<K>,
    name: &str,
    params: &PatchParams,
) -> Result<K, kube::Error> {
    let remove = json!([{"op": "remove", "path": "/metadata/finalizers"}]);
    let patch: json_patch::Patch = serde_json::from_value(remove).expect("a JSON patch");
    api.patch(name, params, &Patch::Json::<()>(patch)).await
}

/// The policy's refusal: 403, with its message.
fn assert_refused<K: std::fmt::Debug>(result: Result<K, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 && status.message.contains(REFUSAL) => {
            assert!(
                status.message.contains("delete the object"),
                "{what}: says what to do: {}",
                status.message
            );
        }
        other => panic!("{what}: expected the finalizer policy's refusal, got {other:?}"),
    }
}

fn has_our_finalizer(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, ours: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == ours)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_strip_our_finalizers_but_can_delete() {
    if !on_real_cluster("admission policies (ValidatingAdmissionPolicy) and RBAC") {
        return;
    }
    let mut env = TestEnv::new().await;
    env.start_controller().await;
    env.create::<Bucket>(bucket("assets")).await;
    bucket_ready(&env, "assets").await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "assets"}})))
        .await;
    let binding = ready_binding(&env, "app").await;
    let user = format!("{}{}", env.settings().user_prefix, binding.metadata.uid.as_deref().expect("uid"));
    secret(&env, "app").await;

    let tenant = env.tenant_client("tenant").await;
    let buckets = Api::<Bucket>::namespaced(tenant.clone(), &env.namespace);
    let bindings = Api::<BucketBinding>::namespaced(tenant.clone(), &env.namespace);

    // The harness installed the policy at the start of the run; the API server loads it asynchronously.
    // Dry runs pass admission as real requests do, and change nothing meanwhile.
    let dry_run = PatchParams { dry_run: true, ..Default::default() };
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while strip(&bindings, "app", &dry_run).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the finalizer policy never took effect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The tenant may edit these objects (a label), but not remove our finalizers, with a JSON patch or a
    // merge patch.
    let label = json!({"metadata": {"labels": {"team": "shop"}}});
    bindings.patch("app", &PatchParams::default(), &Patch::Merge(&label)).await.expect("the tenant edits");
    assert_refused(strip(&bindings, "app", &PatchParams::default()).await, "JSON patch of the binding");
    assert_refused(strip(&buckets, "assets", &PatchParams::default()).await, "JSON patch of the Bucket");
    let emptied = json!({"metadata": {"finalizers": null}});
    assert_refused(
        buckets.patch("assets", &PatchParams::default(), &Patch::Merge(&emptied)).await,
        "merge patch of the Bucket",
    );
    let binding_finalizer = <BucketBinding as CredentialKind>::FINALIZER;
    let kept = env.api::<BucketBinding>().get("app").await.expect("binding");
    assert!(has_our_finalizer(&kept.metadata, binding_finalizer), "{:?}", kept.metadata.finalizers);
    let kept = env.api::<Bucket>().get("assets").await.expect("bucket");
    assert!(has_our_finalizer(&kept.metadata, bucket_broker::controller::bucket::FINALIZER));

    // Deleting is the way: the controller (its own ServiceAccount) cleans up AWS and removes its finalizer.
    bindings.delete("app", &Default::default()).await.expect("the tenant deletes the binding");
    env.wait_gone::<BucketBinding>("app").await;
    let gone = env.admin.iam.get_user().user_name(&user).send().await;
    assert!(
        gone.is_err_and(|e| e.as_service_error().is_some_and(|e| e.is_no_such_entity_exception())),
        "the binding's IAM user is deleted"
    );
    buckets.delete("assets", &Default::default()).await.expect("the tenant deletes the Bucket");
    env.wait_gone::<Bucket>("assets").await;

    // Break-glass: with no controller running (uninstalled), a deleted object keeps its finalizer; the
    // tenant still cannot remove it, a member of system:masters (the suite's admin) can.
    env.stop_controller().await;
    let stuck = json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "stuck", "finalizers": [bucket_broker::controller::bucket::FINALIZER]}, "spec": {}});
    env.create::<Bucket>(stuck).await;
    buckets.delete("stuck", &Default::default()).await.expect("the tenant deletes the Bucket");
    assert_refused(strip(&buckets, "stuck", &PatchParams::default()).await, "the tenant, with no controller");
    let admin = env.api::<Bucket>();
    let deleting = admin.get("stuck").await.expect("kept by its finalizer");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    strip(&admin, "stuck", &PatchParams::default()).await.expect("system:masters removes the finalizer");
    env.wait_gone::<Bucket>("stuck").await;
}

fn typed<K: serde::de::DeserializeOwned>(object: &Value) -> K {
    serde_json::from_value(object.clone()).expect("a typed RBAC object")
}

/// RBAC of `deploy/components/namespace-scoped` rendered for the test namespace, applied as the harness
/// applies `deploy/`'s: bound to [`NAMESPACED_IDENTITY`] instead of deploy's ServiceAccount, the main
/// ClusterRole as the harness's copy ([`TEST_IDENTITY`], asserted to be the same rules), the other
/// cluster-scoped objects renamed, and the controller's namespace the test namespace (as for every test).
async fn apply_namespace_scoped_rbac(env: &TestEnv) {
    let rendered = crate::deploy::namespace_scoped_install(&env.namespace);
    let deployed_role: ClusterRole = crate::deploy::parse("deploy/clusterrole.yaml");
    let main_role = deployed_role.metadata.name.clone().expect("deploy/'s ClusterRole");
    let renamed = |name: &str| name.replacen("bucket-broker", NAMESPACED_IDENTITY, 1);
    let params = PatchParams::apply(TEST_IDENTITY).force();
    let mut applied = Vec::new();
    for object in &rendered {
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        match kind {
            "ClusterRole" if name == main_role => {
                let role: ClusterRole = typed(object);
                assert_eq!(role.rules, deployed_role.rules, "the main ClusterRole is deploy/'s");
            }
            // The tenant roles (and the classes reader, every signed-in user's) are not the controller's.
            "ClusterRole" | "ClusterRoleBinding"
                if name.starts_with("bucket-broker-view")
                    || name.starts_with("bucket-broker-edit")
                    || name.starts_with("bucket-broker-classes-reader") => {}
            "ClusterRole" => {
                let mut role: ClusterRole = typed(object);
                role.metadata.name = Some(renamed(&name));
                let api = Api::<ClusterRole>::all(env.client.clone());
                api.patch(&renamed(&name), &params, &Patch::Apply(&role)).await.expect("ClusterRole applied");
                applied.push(format!("ClusterRole {}", renamed(&name)));
            }
            "ClusterRoleBinding" => {
                let mut binding: ClusterRoleBinding = typed(object);
                binding.metadata.name = Some(renamed(&name));
                binding.role_ref.name = renamed(&binding.role_ref.name);
                binding.subjects = subjects_for(binding.subjects, NAMESPACED_IDENTITY);
                let api = Api::<ClusterRoleBinding>::all(env.client.clone());
                api.patch(&renamed(&name), &params, &Patch::Apply(&binding)).await.expect("binding applied");
                applied.push(format!("ClusterRoleBinding {}", renamed(&name)));
            }
            "Role" => {
                let mut role: Role = typed(object);
                role.metadata.namespace = Some(env.namespace.clone());
                let api = Api::<Role>::namespaced(env.client.clone(), &env.namespace);
                api.patch(&name, &params, &Patch::Apply(&role)).await.expect("Role applied");
                applied.push(format!("Role {name}"));
            }
            "RoleBinding" => {
                let mut binding: RoleBinding = typed(object);
                let watched = binding.metadata.namespace.clone();
                if binding.role_ref.name == main_role {
                    assert_eq!(
                        watched.as_deref(),
                        Some(env.namespace.as_str()),
                        "bound in the watched namespace"
                    );
                    binding.role_ref.name = TEST_IDENTITY.to_owned();
                }
                binding.metadata.namespace = Some(env.namespace.clone());
                binding.subjects = subjects_for(binding.subjects, NAMESPACED_IDENTITY);
                let api = Api::<RoleBinding>::namespaced(env.client.clone(), &env.namespace);
                api.patch(&name, &params, &Patch::Apply(&binding)).await.expect("RoleBinding applied");
                applied.push(format!("RoleBinding {name} -> {}", binding.role_ref.name));
            }
            _ => {}
        }
    }
    eprintln!("namespace-scoped RBAC applied: {applied:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_namespace_scoped_install_provisions_in_its_namespace_and_reads_no_other_secrets() {
    if !on_real_cluster("RBAC, to run the controller with the component's rendered roles") {
        return;
    }
    let mut env = TestEnv::new().await;
    apply_namespace_scoped_rbac(&env).await;
    env.act_as_namespaced_identity().await;
    env.start_controller().await;

    env.create::<Bucket>(bucket("assets")).await;
    bucket_ready(&env, "assets").await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "assets"}})))
        .await;
    ready_binding(&env, "app").await;
    let written = secret(&env, "app").await;
    assert!(written.data.as_ref().is_some_and(|d| d.contains_key("VCAP_SERVICES")), "the Secret is written");

    // The controller's identity reads and writes Secrets in the watched namespace only.
    let controller = env.controller_client.clone();
    let elsewhere = Api::<Secret>::namespaced(controller.clone(), TEST_IDENTITY);
    let refused = |result: Result<_, kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    };
    refused(elsewhere.list(&ListParams::default()).await.map(|_| ()), "listing Secrets in another namespace");
    refused(elsewhere.get(TEST_IDENTITY).await.map(|_| ()), "reading a Secret in another namespace");
    refused(
        Api::<Secret>::all(controller.clone()).list(&ListParams::default()).await.map(|_| ()),
        "all Secrets",
    );
    let foreign: Secret =
        serde_json::from_value(json!({"metadata": {"generateName": "foreign-"}})).expect("a Secret");
    refused(
        elsewhere.create(&PostParams::default(), &foreign).await.map(|_| ()),
        "creating a Secret elsewhere",
    );
    Api::<Secret>::namespaced(controller.clone(), &env.namespace)
        .list(&ListParams::default())
        .await
        .expect("Secrets of the watched namespace");
    Api::<Namespace>::all(controller.clone()).get("kube-system").await.expect("the cluster's identity");
    refused(Api::<Namespace>::all(controller.clone()).get("default").await.map(|_| ()), "another Namespace");

    // The same, as `kubectl auth can-i` answers it for the controller's kubeconfig.
    let dir = tempfile_dir();
    let kubeconfig = env.controller_kubeconfig(&dir);
    let can_i = |args: &[&str]| {
        let output = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["auth", "can-i"])
            .args(args)
            .output()
            .expect("kubectl runs");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    assert_eq!(can_i(&["get", "secrets", "-n", TEST_IDENTITY]), "no");
    assert_eq!(can_i(&["list", "secrets", "--all-namespaces"]), "no");
    assert_eq!(can_i(&["get", "secrets", "-n", &env.namespace]), "yes");
    assert_eq!(can_i(&["get", "namespaces/kube-system"]), "yes");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A directory of the test's own for the controller's kubeconfig (it holds a token).
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(crate::harness::unique_name("bb-namespaced"));
    std::fs::create_dir_all(&dir).expect("a directory");
    dir
}
