//! How GitOps tools read our objects, by their own code: kstatus (Flux, kpt, cli-utils) and the Argo CD
//! health checks shipped in `deploy/argocd/argocd-cm.yaml`, run by `gitops-health`, a program of
//! `tools/control-plane` that `scripts/cluster build` puts beside kubectl.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use bucket_broker::api::{Bucket, BucketBinding, BucketServiceKey, find_condition};
use bucket_broker::local::moto::MotoOptions;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::credentials::{can_get, can_put, client_from, credential};
use crate::harness::{Namespaced, TIMEOUT, TestEnv};

/// What each tool says of one object.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Verdict {
    kind: String,
    name: String,
    kstatus: String,
    kstatus_message: String,
    argocd: String,
    argocd_message: String,
}

/// The verdicts of kstatus and Argo CD on `objects`, keyed by kind and name.
fn verdicts(objects: &[Value]) -> BTreeMap<(String, String), Verdict> {
    use std::io::Write;
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/argocd/argocd-cm.yaml");
    let mut child = std::process::Command::new("gitops-health")
        .arg(&config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gitops-health on the PATH: scripts/cluster build makes it, beside kubectl (scripts/test adds it)");
    let list = serde_json::to_vec(&json!({"items": objects})).expect("list");
    child.stdin.take().expect("stdin").write_all(&list).expect("objects sent");
    let output = child.wait_with_output().expect("gitops-health ends");
    assert!(output.status.success(), "gitops-health: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let verdict: Verdict = serde_json::from_str(line).expect("a verdict");
            ((verdict.kind.clone(), verdict.name.clone()), verdict)
        })
        .collect()
}

async fn object<K: Namespaced + serde::Serialize>(env: &TestEnv, name: &str) -> Value {
    serde_json::to_value(env.api::<K>().get(name).await.expect("get")).expect("json")
}

fn ready_reason(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> String {
    find_condition(conditions, "Ready").map(|c| format!("{}/{}", c.status, c.reason)).unwrap_or_default()
}

async fn binding_reaches(env: &TestEnv, name: &str, reason: &str) {
    env.wait_for::<BucketBinding>(name, reason, |b| {
        b.status.as_ref().is_some_and(|s| ready_reason(&s.conditions) == reason)
    })
    .await;
}

/// Every state of every kind, as kstatus and Argo CD classify it; the README's GitOps table says the same.
#[tokio::test(flavor = "multi_thread")]
async fn kstatus_and_argocd_classify_every_state_of_every_kind() {
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    let bucket = |name: &str| {
        json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": name}, "spec": {}})
    };

    // Before the controller has seen it: the status the CRD defaults says no generation is handled yet.
    env.create::<Bucket>(bucket("fresh")).await;
    let fresh = object::<Bucket>(&env, "fresh").await;
    assert_eq!(
        fresh["status"],
        json!({"observedGeneration": 0}),
        "the API server sets a new object's status"
    );

    env.start_controller().await;
    env.create::<Bucket>(bucket("data")).await;
    env.create::<Bucket>(bucket("full")).await;
    for name in ["data", "full"] {
        env.wait_for::<Bucket>(name, "ready", |b| {
            b.status.as_ref().is_some_and(|s| ready_reason(&s.conditions) == "True/Provisioned")
        })
        .await;
    }
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    env.create::<BucketServiceKey>(credential(
        "BucketServiceKey",
        "laptop",
        json!({"bucketRef": {"name": "data"}}),
    ))
    .await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "early",
        json!({"bucketRef": {"name": "later"}}),
    ))
    .await;
    let foreign: Secret =
        serde_json::from_value(json!({"metadata": {"name": "taken"}, "stringData": {"k": "v"}}))
            .expect("secret");
    env.api::<Secret>().create(&Default::default(), &foreign).await.expect("a foreign Secret");
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "clash",
        json!({"bucketRef": {"name": "data"}, "secretName": "taken"}),
    ))
    .await;
    binding_reaches(&env, "app", "True/Provisioned").await;
    binding_reaches(&env, "early", "False/BucketNotReady").await;
    binding_reaches(&env, "clash", "False/SecretConflict").await;
    env.wait_for::<BucketServiceKey>("laptop", "ready", |k| {
        k.status.as_ref().is_some_and(|s| ready_reason(&s.conditions) == "True/Provisioned")
    })
    .await;

    // A Bucket deleted while it holds data waits (both tools judge it by its deletionTimestamp); a binding
    // made for it then waits for a person.
    let full_bucket = env.api::<Bucket>().get("full").await.expect("full").status.and_then(|s| s.bucket_name);
    env.admin
        .s3
        .put_object()
        .bucket(full_bucket.expect("bucket name"))
        .key("keep.txt")
        .body(ByteStream::from_static(b"data"))
        .send()
        .await
        .expect("an object in the bucket");
    env.delete::<Bucket>("full").await;
    env.wait_for::<Bucket>("full", "blocked", |b| {
        b.status.as_ref().is_some_and(|s| ready_reason(&s.conditions) == "False/DeletionBlocked")
    })
    .await;
    env.create::<BucketBinding>(credential("BucketBinding", "late", json!({"bucketRef": {"name": "full"}})))
        .await;
    binding_reaches(&env, "late", "False/BucketDeleting").await;

    // A change the controller has not handled yet (it is stopped): the Ready of the last generation is old.
    env.stop_controller().await;
    env.api::<BucketBinding>()
        .patch("app", &PatchParams::default(), &Patch::Merge(json!({"spec": {"permissions": "ReadOnly"}})))
        .await
        .expect("a spec change");

    let mut objects = vec![fresh];
    for name in ["data", "full"] {
        objects.push(object::<Bucket>(&env, name).await);
    }
    for name in ["app", "early", "clash", "late"] {
        objects.push(object::<BucketBinding>(&env, name).await);
    }
    objects.push(object::<BucketServiceKey>(&env, "laptop").await);
    let verdicts = verdicts(&objects);
    let expected = [
        ("Bucket", "fresh", "InProgress", "Progressing"),
        ("Bucket", "data", "Current", "Healthy"),
        ("Bucket", "full", "Terminating", "Progressing"),
        ("BucketBinding", "app", "InProgress", "Progressing"),
        ("BucketBinding", "early", "InProgress", "Progressing"),
        ("BucketBinding", "clash", "Failed", "Degraded"),
        ("BucketBinding", "late", "Failed", "Degraded"),
        ("BucketServiceKey", "laptop", "Current", "Healthy"),
    ];
    for (kind, name, kstatus, argocd) in expected {
        let verdict = &verdicts[&(kind.to_owned(), name.to_owned())];
        println!(
            "{kind} {name}: kstatus {} ({}), Argo CD {} ({})",
            verdict.kstatus, verdict.kstatus_message, verdict.argocd, verdict.argocd_message
        );
        assert_eq!((verdict.kstatus.as_str(), verdict.argocd.as_str()), (kstatus, argocd), "{verdict:?}");
    }
    // What a person reads says what is wrong.
    let clash = &verdicts[&("BucketBinding".to_owned(), "clash".to_owned())];
    assert!(
        clash.argocd_message.starts_with("SecretConflict: ") && clash.kstatus_message.contains("taken"),
        "{clash:?}"
    );
    let full = &verdicts[&("Bucket".to_owned(), "full".to_owned())];
    assert_eq!(full.argocd_message, "Pending deletion", "Argo CD's own rule, before any script: {full:?}");
    let app = &verdicts[&("BucketBinding".to_owned(), "app".to_owned())];
    assert_eq!(app.argocd_message, "Waiting for bucket-broker to apply generation 2");
}

/// A Deployment synced after its BucketBinding (a later sync wave, or Flux's `dependsOn` with `wait`)
/// starts with a usable Secret: from its creation on, the binding is Current for kstatus and Healthy for
/// Argo CD only once the Secret holds a key that works.
#[tokio::test(flavor = "multi_thread")]
async fn a_binding_is_current_only_once_its_secret_holds_a_working_key() {
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    env.start_controller().await;
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "data"}, "spec": {}}))
        .await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let binding = object::<BucketBinding>(&env, "app").await;
        let verdict = verdicts(std::slice::from_ref(&binding)).into_values().next().expect("a verdict");
        if seen.last() != Some(&(verdict.kstatus.clone(), verdict.argocd.clone())) {
            seen.push((verdict.kstatus.clone(), verdict.argocd.clone()));
        }
        match (verdict.kstatus.as_str(), verdict.argocd.as_str()) {
            ("Current", "Healthy") => break,
            ("InProgress", "Progressing") => {}
            other => {
                panic!("between creation and Ready a binding is in progress, not {other:?}: {verdict:?}")
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "never Current: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The sync moves on now: the Secret is there and its key works.
    let secret = env.api::<Secret>().get("app").await.expect("the Secret exists when the binding is Current");
    let app = client_from(&env, &secret).await;
    let bucket = crate::credentials::bucket_of(&secret);
    assert!(can_put(&app, &bucket, "first.txt").await, "the key writes");
    assert!(can_get(&app, &bucket, "first.txt").await, "and reads");
    println!("kstatus and Argo CD saw, in order: {seen:?}");
    assert_eq!(seen.first(), Some(&("InProgress".to_owned(), "Progressing".to_owned())), "{seen:?}");
}
