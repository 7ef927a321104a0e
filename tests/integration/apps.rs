//! Apps with several buckets: the `<app>-vcap-services` Secret lists every binding of an app, in exactly the
//! entry shape of the bindings' own Secrets, as Cloud Foundry's `VCAP_SERVICES` did.

use std::time::Duration;

use bucket_broker::api::{Bucket, BucketBinding, find_condition};
use bucket_broker::local::moto::MotoOptions;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::credentials::{can_get, can_put, credential, env_with_bucket, ready_binding, secret, value};
use crate::harness::{TIMEOUT, TestEnv, aws_for};

fn binding(name: &str, bucket: &str, app: &str, permissions: &str) -> Value {
    credential(
        "BucketBinding",
        name,
        json!({"bucketRef": {"name": bucket}, "app": app, "permissions": permissions}),
    )
}

fn vcap(secret: &Secret) -> Value {
    serde_json::from_str(&value(secret, "VCAP_SERVICES")).expect("VCAP_SERVICES is JSON")
}

/// Waits until the app Secret lists exactly `expected` bindings' entries (or is gone, for none).
async fn app_secret_lists(env: &TestEnv, app: &str, expected: &[&str]) -> Option<Secret> {
    let name = format!("{app}-vcap-services");
    let mut wanted = Vec::new();
    for binding in expected {
        wanted.push(vcap(&secret(env, binding).await)["aws-s3-bucket"][0].clone());
    }
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let current = env.api::<Secret>().get_opt(&name).await.expect("get");
        let listed = current.as_ref().map(|s| vcap(s)["aws-s3-bucket"].clone());
        match (&current, expected.is_empty()) {
            (None, true) => return None,
            (Some(_), false) if listed == Some(Value::Array(wanted.clone())) => return current,
            _ => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} never listed {expected:?}: {listed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_vcap_services_lists_every_binding_of_an_app_and_follows_changes() {
    let env = env_with_bucket(&["images", "reports"]).await;
    // Created out of order: the entries come in the order of the bindings' names.
    for (name, bucket, app, permissions) in [
        ("shop-reports", "reports", "shop", "ReadOnly"),
        ("shop-images", "images", "shop", "ReadWrite"),
        ("shop-archive", "images", "shop", "ReadOnly"),
        ("blog-images", "images", "blog", "ReadWrite"),
    ] {
        env.create::<BucketBinding>(binding(name, bucket, app, permissions)).await;
    }
    for name in ["shop-reports", "shop-images", "shop-archive", "blog-images"] {
        let ready = ready_binding(&env, name).await;
        let app = ready.spec.app.clone().expect("app");
        assert_eq!(
            ready.status.and_then(|s| s.app_secret_name),
            Some(format!("{app}-vcap-services")),
            "{name} reports its app Secret"
        );
    }
    let shop =
        app_secret_lists(&env, "shop", &["shop-archive", "shop-images", "shop-reports"]).await.expect("shop");
    app_secret_lists(&env, "blog", &["blog-images"]).await.expect("blog");
    assert_eq!(
        shop.data.as_ref().map(|d| d.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["VCAP_SERVICES".into()])
    );
    let owners: Vec<String> =
        shop.metadata.owner_references.iter().flatten().map(|r| r.name.clone()).collect::<Vec<_>>();
    assert_eq!(owners.len(), 3, "owned by the three bindings it lists: {owners:?}");

    // Code written for Cloud Foundry: look the service up by name, use its credentials.
    let entries = vcap(&shop)["aws-s3-bucket"].as_array().cloned().expect("entries");
    let by_name = |name: &str| entries.iter().find(|e| e["name"] == name).cloned().expect("entry");
    let client = |entry: &Value| {
        let c = &entry["credentials"];
        aws_sdk_iam::config::Credentials::new(
            c["aws_access_key_id"].as_str().expect("id"),
            c["aws_secret_access_key"].as_str().expect("secret"),
            None,
            None,
            "app",
        )
    };
    // Two bindings of the app are to "images" (read-only archive, read-write shop): the read-write one is
    // second, in the order of the binding names.
    assert_eq!(entries.iter().filter(|e| e["name"] == "images").count(), 2);
    let images = entries[1].clone();
    assert_eq!(images["name"], "images");
    let writer = aws_for(&env.moto, client(&images)).await;
    let images_bucket = images["credentials"]["bucket_name"].as_str().expect("bucket").to_owned();
    assert!(can_put(&writer, &images_bucket, "logo.png").await, "the read-write images entry writes");
    let reports = by_name("reports");
    let reader = aws_for(&env.moto, client(&reports)).await;
    let reports_bucket = reports["credentials"]["bucket_name"].as_str().expect("bucket").to_owned();
    assert!(can_put(&env.admin, &reports_bucket, "q1.csv").await);
    assert!(can_get(&reader, &reports_bucket, "q1.csv").await, "the read-only reports entry reads");
    assert!(!can_put(&reader, &reports_bucket, "q2.csv").await, "and cannot write");

    // Steady state: no write to any Secret (every request counted on the in-memory server; on a real
    // cluster, the app Secret keeps its resourceVersion).
    let server = env.in_memory("request counters");
    if let Some(server) = server {
        server.reset_stats();
    }
    let app_secret_before = env.api::<Secret>().get("shop-vcap-services").await.expect("app Secret");
    let touch = json!({"metadata": {"annotations": {"touched": "1"}}});
    for name in ["shop-reports", "shop-images", "shop-archive"] {
        env.api::<BucketBinding>()
            .patch(name, &PatchParams::default(), &Patch::Merge(&touch))
            .await
            .expect("touch");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let app_secret_after = env.api::<Secret>().get("shop-vcap-services").await.expect("app Secret");
    assert_eq!(
        app_secret_after.metadata.resource_version, app_secret_before.metadata.resource_version,
        "unchanged content is never written"
    );
    if let Some(server) = server {
        assert_eq!(server.stats().writes_for("secrets"), 0, "unchanged content is never written");
    }

    // A binding leaves the app: the Secret follows; the last one leaving takes it away.
    env.api::<BucketBinding>()
        .patch("shop-archive", &PatchParams::default(), &Patch::Merge(json!({"spec": {"app": "blog"}})))
        .await
        .expect("moved to blog");
    app_secret_lists(&env, "shop", &["shop-images", "shop-reports"]).await;
    app_secret_lists(&env, "blog", &["blog-images", "shop-archive"]).await;
    env.delete::<BucketBinding>("shop-images").await;
    env.wait_gone::<BucketBinding>("shop-images").await;
    app_secret_lists(&env, "shop", &["shop-reports"]).await;
    env.delete::<BucketBinding>("shop-reports").await;
    env.wait_gone::<BucketBinding>("shop-reports").await;
    assert!(app_secret_lists(&env, "shop", &[]).await.is_none(), "the app Secret goes with its last binding");

    // A Secret edited by hand is restored.
    let edit = json!({"data": {"VCAP_SERVICES": "e30="}});
    env.api::<Secret>()
        .patch("blog-vcap-services", &PatchParams::default(), &Patch::Merge(edit))
        .await
        .expect("edit");
    app_secret_lists(&env, "blog", &["blog-images", "shop-archive"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_app_secret_is_never_touched() {
    let env = env_with_bucket(&["data"]).await;
    let foreign: Secret = serde_json::from_value(json!({"metadata": {"name": "legacy-vcap-services"},
        "stringData": {"VCAP_SERVICES": "{\"user-provided\": []}"}}))
    .expect("secret");
    env.api::<Secret>().create(&PostParams::default(), &foreign).await.expect("foreign secret");
    let before = secret(&env, "legacy-vcap-services").await;
    env.create::<BucketBinding>(binding("legacy-data", "data", "legacy", "ReadWrite")).await;
    let conflicted = env
        .wait_for::<BucketBinding>("legacy-data", "in conflict", |b| {
            b.status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, "Ready"))
                .is_some_and(|c| c.reason == "SecretConflict")
        })
        .await;
    let status = conflicted.status.expect("status");
    let message = &find_condition(&status.conditions, "Ready").expect("Ready").message;
    assert!(message.contains("legacy-vcap-services"), "{message}");
    let after = secret(&env, "legacy-vcap-services").await;
    assert_eq!(after.data, before.data);
    assert_eq!(after.metadata.owner_references, before.metadata.owner_references);
    assert_eq!(after.metadata.labels, before.metadata.labels);
    // The binding's own credentials are unaffected.
    let own = secret(&env, "legacy-data").await;
    let aws = crate::credentials::client_from(&env, &own).await;
    assert!(can_put(&aws, &crate::credentials::bucket_of(&own), "still-works.txt").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn bindings_of_one_app_created_together_all_end_up_listed() {
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    env.start_controller().await;
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "data"}, "spec": {}}))
        .await;
    let names: Vec<String> = (0..6).map(|i| format!("crowd-{i}")).collect();
    let creates =
        names.iter().map(|name| env.create::<BucketBinding>(binding(name, "data", "crowd", "ReadOnly")));
    futures::future::join_all(creates).await;
    for name in &names {
        ready_binding(&env, name).await;
    }
    let listed: Vec<&str> = names.iter().map(String::as_str).collect();
    app_secret_lists(&env, "crowd", &listed).await.expect("every binding is listed: no lost update");
}
