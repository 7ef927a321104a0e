//! Safe for the platform (issue 21), on the real control plane only: the in-memory server runs neither
//! admission policies nor RBAC, so there each test says it is skipped.
//!
//! - `deploy/`'s ValidatingAdmissionPolicy keeps a tenant (the built-in `edit` role) from removing the
//!   controller's finalizers, while deleting stays allowed and the controller still finishes deletions.

use std::time::Duration;

use bucket_broker::api::{Bucket, BucketBinding, find_condition};
use bucket_broker::controller::credentials::CredentialKind;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde_json::{Value, json};

use crate::credentials::{credential, ready_binding, secret};
use crate::harness::{TIMEOUT, TestEnv, on_real_cluster};

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
