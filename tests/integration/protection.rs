//! Deletion protection, the Cloud Foundry way (issue 25), on the real control plane only: the in-memory
//! server runs no admission policies, so there the test says it is skipped. `deploy/`'s
//! ValidatingAdmissionPolicy (installed by the harness as shipped, bound in test namespaces) refuses
//! `kubectl delete` of a Bucket annotated `bucketbroker.io/deletion-protection: "true"`, one by one or all
//! at once, with a message that says to remove the annotation first; once a tenant removes it, the delete
//! goes through and the controller deletes the AWS bucket.

use std::time::Duration;

use bucket_broker::api::{Bucket, DELETION_PROTECTION_ANNOTATION, find_condition};
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::harness::{TIMEOUT, TestEnv, on_real_cluster, unique_name};

/// kubectl as the suite's admin, in the test namespace.
fn kubectl(env: &TestEnv, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let output = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(env.kubeconfig(dir))
        .args(["--namespace", &env.namespace])
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

#[tokio::test(flavor = "multi_thread")]
async fn a_protected_bucket_is_deleted_only_after_its_annotation_is_removed() {
    if !on_real_cluster("admission policies (ValidatingAdmissionPolicy)") {
        return;
    }
    let mut env = TestEnv::new().await;
    env.start_controller().await;
    let bucket = |name: &str, protection: &str| {
        json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
            "metadata": {"name": name, "annotations": {DELETION_PROTECTION_ANNOTATION: protection}}, "spec": {}})
    };
    env.create::<Bucket>(bucket("records", "true")).await;
    // Only "true" protects.
    env.create::<Bucket>(bucket("scratch", "false")).await;
    let ready = |b: &Bucket| {
        b.status
            .as_ref()
            .is_some_and(|s| find_condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True"))
    };
    let records = env.wait_for::<Bucket>("records", "ready", ready).await;
    env.wait_for::<Bucket>("scratch", "ready", ready).await;
    let aws_name = records.status.and_then(|s| s.bucket_name).expect("the AWS bucket's name");

    // The harness installed the policy at the start of the run; the API server loads it asynchronously.
    let dry_run = DeleteParams { dry_run: true, ..Default::default() };
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while env.api::<Bucket>().delete("records", &dry_run).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the deletion-protection policy never took effect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let dir = std::env::temp_dir().join(unique_name("bb-protection"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let refused = tokio::task::block_in_place(|| kubectl(&env, &dir, &["delete", "bucket", "records"]));
    assert!(!refused.status.success(), "kubectl delete of a protected Bucket fails");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("Forbidden"), "{said}");
    assert!(
        said.contains(&format!(
            "the Bucket records is protected from deletion by its annotation {DELETION_PROTECTION_ANNOTATION}: \"true\""
        )),
        "names the Bucket and the annotation: {said}"
    );
    assert!(
        said.contains(&format!(
            "remove the annotation first (kubectl annotate bucket records {DELETION_PROTECTION_ANNOTATION}-)"
        )),
        "says what to do: {said}"
    );

    // A delete of every Bucket deletes the unprotected one and keeps the protected one.
    let all =
        tokio::task::block_in_place(|| kubectl(&env, &dir, &["delete", "buckets", "--all", "--timeout=60s"]));
    assert!(!all.status.success(), "the protected Bucket makes the delete fail");
    env.wait_gone::<Bucket>("scratch").await;
    let kept = env.api::<Bucket>().get("records").await.expect("the protected Bucket is kept");
    assert!(kept.metadata.deletion_timestamp.is_none(), "not even marked for deletion");

    // A tenant (the built-in edit role) may remove the annotation; then the delete goes through, and the
    // controller deletes the (empty) AWS bucket.
    let tenant = env.tenant_client("tenant").await;
    let unprotect = json!({"metadata": {"annotations": {DELETION_PROTECTION_ANNOTATION: null}}});
    kube::Api::<Bucket>::namespaced(tenant, &env.namespace)
        .patch("records", &PatchParams::default(), &Patch::Merge(&unprotect))
        .await
        .expect("the tenant removes the annotation");
    let deleted = tokio::task::block_in_place(|| {
        kubectl(&env, &dir, &["delete", "bucket", "records", "--timeout=60s"])
    });
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    env.wait_gone::<Bucket>("records").await;
    let head = env.admin.s3.head_bucket().bucket(&aws_name).send().await;
    assert!(head.is_err(), "the AWS bucket {aws_name} is deleted with the Bucket");
    let _ = std::fs::remove_dir_all(&dir);
}
