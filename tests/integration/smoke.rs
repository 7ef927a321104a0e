//! The harness itself: a custom resource's life on the Kubernetes API, and moto enforcing IAM.

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use bucket_broker::api::{Bucket, BucketStatus};
use bucket_broker::local::moto::MotoOptions;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::watcher;

use crate::harness::{TestEnv, aws_for};

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_object_is_watched_patched_and_deleted_through_a_finalizer() {
    let env = TestEnv::new().await;
    let api = env.api::<Bucket>();
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();

    env.create::<Bucket>(serde_json::json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "smoke"}, "spec": {"public": true}}))
        .await;
    let seen = tokio::time::timeout(crate::harness::TIMEOUT, async {
        while let Some(event) = events.try_next().await.expect("watch") {
            if let watcher::Event::Apply(b) | watcher::Event::InitApply(b) = event
                && b.metadata.name.as_deref() == Some("smoke")
            {
                return b;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("the watch sees the Bucket");
    assert!(seen.spec.public);
    assert_eq!(seen.spec.deletion_policy, None, "no schema default: the Bucket's class decides");

    let status = BucketStatus { bucket_name: Some("smoke-bucket".into()), ..Default::default() };
    let patch =
        serde_json::json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket", "status": status});
    let patched = api
        .patch_status("smoke", &PatchParams::apply("smoke-test").force(), &Patch::Apply(&patch))
        .await
        .expect("status");
    assert_eq!(patched.status.and_then(|s| s.bucket_name).as_deref(), Some("smoke-bucket"));
    assert_eq!(
        patched.metadata.generation, seen.metadata.generation,
        "a status write does not move generation"
    );

    const FINALIZER: &str = "smoke.bucketbroker.io/finalizer";
    let current = Arc::new(api.get("smoke").await.expect("get"));
    finalizer(&api, FINALIZER, current, |event| async move {
        assert!(matches!(event, Event::Apply(_)), "not deleting yet");
        Ok::<_, kube::Error>(Action::await_change())
    })
    .await
    .expect("finalizer added");
    assert_eq!(api.get("smoke").await.expect("get").metadata.finalizers, Some(vec![FINALIZER.to_owned()]));

    env.delete::<Bucket>("smoke").await;
    let deleting = api.get("smoke").await.expect("still there while the finalizer is");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(
        deleting.metadata.generation,
        seen.metadata.generation.map(|g| g + 1),
        "deletion bumps generation"
    );
    finalizer(&api, FINALIZER, Arc::new(deleting), |event| async move {
        assert!(matches!(event, Event::Cleanup(_)), "deleting now");
        Ok::<_, kube::Error>(Action::await_change())
    })
    .await
    .expect("finalizer removed");
    env.wait_gone::<Bucket>("smoke").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn moto_enforces_iam_for_a_user_without_a_policy() {
    let env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    let s3 = &env.admin.s3;
    s3.create_bucket()
        .bucket("smoke")
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest2)
                .build(),
        )
        .send()
        .await
        .expect("the administrator creates a bucket");
    s3.put_object()
        .bucket("smoke")
        .key("k")
        .body(ByteStream::from_static(b"v"))
        .send()
        .await
        .expect("admin writes");

    let iam = &env.admin.iam;
    iam.create_user().user_name("nobody").send().await.expect("user created");
    let key = iam.create_access_key().user_name("nobody").send().await.expect("key").access_key.expect("key");
    let credentials =
        aws_sdk_iam::config::Credentials::new(key.access_key_id, key.secret_access_key, None, None, "test");
    let nobody = aws_for(&env.moto, credentials).await;

    let read = nobody.s3.get_object().bucket("smoke").key("k").send().await;
    let err = read.expect_err("a user without a policy cannot read");
    assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::code(&err), Some("AccessDenied"));
    let write =
        nobody.s3.put_object().bucket("smoke").key("x").body(ByteStream::from_static(b"v")).send().await;
    assert!(write.is_err(), "a user without a policy cannot write");
    let list = nobody.s3.list_objects_v2().bucket("smoke").send().await;
    assert!(list.is_err(), "a user without a policy cannot list");
}
