//! The Bucket controller against moto: provisioning, public access, drift, deletion, steady state, crashes.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ObjectOwnership, ServerSideEncryption};
use bucket_broker::api::{Bucket, BucketBinding, BucketServiceKey, find_condition};
use bucket_broker::aws::s3::BucketOps;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::harness::{TestEnv, anonymous_get};

fn bucket(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket", "metadata": {"name": name}, "spec": spec})
}

/// Ready for the current generation.
fn is_ready(b: &Bucket) -> bool {
    b.status.as_ref().is_some_and(|s| {
        s.observed_generation == b.metadata.generation
            && find_condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True")
    })
}

fn ready_reason(b: &Bucket) -> Option<(String, String)> {
    let ready = find_condition(&b.status.as_ref()?.conditions, "Ready")?;
    Some((ready.reason.clone(), ready.message.clone()))
}

fn name_of(b: &Bucket) -> String {
    b.status.as_ref().and_then(|s| s.bucket_name.clone()).expect("status.bucketName")
}

async fn put(env: &TestEnv, bucket: &str, key: &str) {
    env.admin
        .s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .expect("put");
}

fn ops<'a>(env: &'a TestEnv, bucket: &'a str) -> BucketOps<'a> {
    BucketOps { client: env.admin.s3.clone(), stats: &env.admin.stats, bucket, owner: None }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_bucket_is_provisioned_with_every_setting() {
    let mut env = TestEnv::new().await;
    env.start_controller().await;
    let created: Bucket = env.create(bucket("assets", json!({}))).await;
    let b = env.wait_for::<Bucket>("assets", "ready", is_ready).await;

    let uid = created.metadata.uid.as_deref().expect("uid");
    let name = name_of(&b);
    assert_eq!(name, format!("bb-{uid}"), "the name comes from the uid");
    let status = b.status.as_ref().expect("status");
    assert_eq!(status.region.as_deref(), Some("eu-west-2"));
    assert_eq!(status.arn.as_deref(), Some(format!("arn:aws:s3:::{name}").as_str()));
    assert_eq!(status.endpoint.as_deref(), Some(format!("{}/{name}", env.moto.endpoint_url()).as_str()));
    assert_eq!(status.public_url, None);
    assert_eq!(ready_reason(&b).map(|r| r.0).as_deref(), Some("Provisioned"));

    let s3 = &env.admin.s3;
    let location = s3.get_bucket_location().bucket(&name).send().await.expect("location");
    assert_eq!(location.location_constraint.map(|l| l.as_str().to_owned()).as_deref(), Some("eu-west-2"));

    let tags = ops(&env, &name).tags().await.expect("tags").expect("bucket exists");
    let tag = |k: &str| tags.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(tag("bucketbroker.io/uid").as_deref(), Some(uid));
    assert_eq!(tag("bucketbroker.io/namespace").as_deref(), Some(env.namespace.as_str()));
    assert_eq!(tag("bucketbroker.io/name").as_deref(), Some("assets"));
    assert_eq!(tag("bucketbroker.io/kind").as_deref(), Some("Bucket"));
    assert_eq!(tag("created_by").as_deref(), Some("bucket-broker"));
    assert_eq!(tag("deploy_env").as_deref(), Some("test"));

    let encryption = s3.get_bucket_encryption().bucket(&name).send().await.expect("encryption");
    let rules = encryption.server_side_encryption_configuration.expect("configuration").rules;
    assert_eq!(
        rules[0].apply_server_side_encryption_by_default.as_ref().map(|d| d.sse_algorithm.clone()),
        Some(ServerSideEncryption::Aes256)
    );

    let block = s3.get_public_access_block().bucket(&name).send().await.expect("public access block");
    let block = block.public_access_block_configuration.expect("configuration");
    assert_eq!(
        (
            block.block_public_acls,
            block.ignore_public_acls,
            block.block_public_policy,
            block.restrict_public_buckets
        ),
        (Some(true), Some(true), Some(true), Some(true))
    );

    let ownership = s3.get_bucket_ownership_controls().bucket(&name).send().await.expect("ownership");
    assert_eq!(
        ownership.ownership_controls.expect("controls").rules[0].object_ownership,
        ObjectOwnership::BucketOwnerEnforced
    );

    // Without --require-tls a private bucket needs no policy at all: none is written.
    let policy = s3.get_bucket_policy().bucket(&name).send().await;
    assert_eq!(
        policy
            .err()
            .and_then(|e| aws_sdk_s3::error::ProvideErrorMetadata::code(&e).map(str::to_owned))
            .as_deref(),
        Some("NoSuchBucketPolicy")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tls_only_policy_is_written_when_tls_is_required() {
    let mut env = TestEnv::new().await;
    let settings = bucket_broker::controller::Settings { require_tls: true, ..env.settings() };
    env.start_controller_with(settings).await;
    env.create::<Bucket>(bucket("secure", json!({}))).await;
    let b = env.wait_for::<Bucket>("secure", "ready", is_ready).await;
    let name = name_of(&b);
    let stored =
        env.admin.s3.get_bucket_policy().bucket(&name).send().await.expect("policy").policy.expect("policy");
    let stored: serde_json::Value = serde_json::from_str(&stored).expect("json");
    let expected =
        bucket_broker::desired::policy::bucket_policy(&format!("arn:aws:s3:::{name}"), false, true)
            .expect("policy");
    assert!(bucket_broker::desired::policy::equivalent(&stored, &expected), "{stored:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_public_bucket_serves_objects_anonymously_until_made_private() {
    let mut env = TestEnv::new().await;
    env.start_controller().await;
    env.create::<Bucket>(bucket("public", json!({"public": true}))).await;
    env.create::<Bucket>(bucket("private", json!({}))).await;
    let public = env.wait_for::<Bucket>("public", "ready", is_ready).await;
    let private = env.wait_for::<Bucket>("private", "ready", is_ready).await;

    let public_url = public.status.as_ref().and_then(|s| s.public_url.clone()).expect("publicUrl");
    put(&env, &name_of(&public), "404.html").await;
    put(&env, &name_of(&private), "404.html").await;
    assert_eq!(anonymous_get(&format!("{public_url}/404.html")).await, 200, "public objects are readable");
    let private_endpoint = private.status.as_ref().and_then(|s| s.endpoint.clone()).expect("endpoint");
    assert_eq!(anonymous_get(&format!("{private_endpoint}/404.html")).await, 403, "private objects are not");

    let block = env.admin.s3.get_public_access_block().bucket(name_of(&public)).send().await.expect("block");
    let block = block.public_access_block_configuration.expect("configuration");
    assert_eq!(
        (block.block_public_acls, block.ignore_public_acls),
        (Some(true), Some(true)),
        "ACLs stay blocked"
    );
    assert_eq!((block.block_public_policy, block.restrict_public_buckets), (Some(false), Some(false)));

    env.api::<Bucket>()
        .patch("public", &PatchParams::default(), &Patch::Merge(json!({"spec": {"public": false}})))
        .await
        .expect("made private");
    let now_private = env
        .wait_for::<Bucket>("public", "ready and private", |b| {
            is_ready(b) && b.metadata.generation == Some(2)
        })
        .await;
    assert_eq!(now_private.status.as_ref().and_then(|s| s.public_url.clone()), None, "publicUrl is gone");
    assert_eq!(anonymous_get(&format!("{public_url}/404.html")).await, 403, "anonymous access is removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_waits_for_bindings_and_objects_and_never_deletes_data() {
    let mut env = TestEnv::new().await;
    env.start_controller().await;
    env.create::<Bucket>(bucket("data", json!({}))).await;
    let b = env.wait_for::<Bucket>("data", "ready", is_ready).await;
    let name = name_of(&b);
    put(&env, &name, "keep-me").await;
    env.create::<BucketBinding>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "BucketBinding",
        "metadata": {"name": "app"}, "spec": {"bucketRef": {"name": "data"}}}))
        .await;

    env.delete::<Bucket>("data").await;
    let waiting = env
        .wait_for::<Bucket>("data", "blocked by its binding", |b| {
            ready_reason(b).is_some_and(|(r, m)| r == "DeletionBlocked" && m.contains("BucketBinding/app"))
        })
        .await;
    assert!(waiting.metadata.deletion_timestamp.is_some());

    env.delete::<BucketBinding>("app").await;
    env.wait_gone::<BucketBinding>("app").await;
    env.wait_for::<Bucket>("data", "blocked by its object", |b| {
        ready_reason(b).is_some_and(|(r, m)| r == "DeletionBlocked" && m.contains("still holds 1 object"))
    })
    .await;
    assert!(ops(&env, &name).exists().await.expect("head"), "a non-empty bucket is never deleted");
    let kept = env.admin.s3.get_object().bucket(&name).key("keep-me").send().await;
    assert!(kept.is_ok(), "the data is untouched");

    env.admin.s3.delete_object().bucket(&name).key("keep-me").send().await.expect("emptied");
    env.wait_gone::<Bucket>("data").await;
    assert!(!ops(&env, &name).exists().await.expect("head"), "an empty bucket is deleted");
}

/// The way out of a deletion blocked on data: switch the deleting Bucket to `Retain`. Issuing new credentials
/// against it (to empty it) is refused, so that the one way out cannot be confused with a leak.
#[tokio::test(flavor = "multi_thread")]
async fn a_deletion_blocked_on_data_is_released_by_switching_to_retain() {
    let mut env = TestEnv::new().await;
    env.start_controller().await;
    env.create::<Bucket>(bucket("archive", json!({}))).await;
    let name = name_of(&env.wait_for::<Bucket>("archive", "ready", is_ready).await);
    put(&env, &name, "keep-me").await;

    env.delete::<Bucket>("archive").await;
    let blocked = env
        .wait_for::<Bucket>("archive", "blocked by its object", |b| {
            ready_reason(b).is_some_and(|(r, m)| r == "DeletionBlocked" && m.contains("still holds 1 object"))
        })
        .await;
    let (_, message) = ready_reason(&blocked).expect("Ready");
    assert!(
        message.contains("spec.deletionPolicy is set to Retain"),
        "the message says the way out: {message}"
    );

    env.create::<BucketServiceKey>(
        json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "BucketServiceKey",
        "metadata": {"name": "emptier"}, "spec": {"bucketRef": {"name": "archive"}}}),
    )
    .await;
    let key = env
        .wait_for::<BucketServiceKey>("emptier", "refused", |k| {
            k.status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, "Ready"))
                .is_some_and(|c| c.reason == "BucketDeleting")
        })
        .await;
    assert!(key.status.and_then(|s| s.access_key_id).is_none(), "no credentials for a deleting Bucket");
    env.delete::<BucketServiceKey>("emptier").await;
    env.wait_gone::<BucketServiceKey>("emptier").await;

    let retain = json!({"spec": {"deletionPolicy": "Retain"}});
    env.api::<Bucket>()
        .patch("archive", &PatchParams::default(), &Patch::Merge(&retain))
        .await
        .expect("the policy of a deleting Bucket can be changed");
    env.wait_gone::<Bucket>("archive").await;
    assert!(ops(&env, &name).exists().await.expect("head"), "the AWS bucket is released, not deleted");
    let kept = env.admin.s3.get_object().bucket(&name).key("keep-me").send().await;
    assert!(kept.is_ok(), "with its data");
}

#[tokio::test(flavor = "multi_thread")]
async fn retain_leaves_the_bucket_and_deleting_twice_or_after_an_outside_delete_is_fine() {
    let mut env = TestEnv::new().await;
    env.start_controller().await;
    env.create::<Bucket>(bucket("kept", json!({"deletionPolicy": "Retain"}))).await;
    env.create::<Bucket>(bucket("gone", json!({}))).await;
    let kept = name_of(&env.wait_for::<Bucket>("kept", "ready", is_ready).await);
    let gone = name_of(&env.wait_for::<Bucket>("gone", "ready", is_ready).await);

    env.delete::<Bucket>("kept").await;
    env.wait_gone::<Bucket>("kept").await;
    assert!(ops(&env, &kept).exists().await.expect("head"), "Retain leaves the AWS bucket");

    env.admin.s3.delete_bucket().bucket(&gone).send().await.expect("deleted out of band");
    env.delete::<Bucket>("gone").await;
    let second = env.api::<Bucket>().delete("gone", &Default::default()).await;
    assert!(second.is_ok() || matches!(second, Err(kube::Error::Api(ref s)) if s.code == 404), "{second:?}");
    env.wait_gone::<Bucket>("gone").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_is_repaired_at_the_next_resync() {
    let mut env = TestEnv::new().await;
    let settings =
        bucket_broker::controller::Settings { resync_interval: Duration::from_secs(1), ..env.settings() };
    env.start_controller_with(settings).await;
    env.create::<Bucket>(bucket("drifty", json!({"public": true}))).await;
    let name = name_of(&env.wait_for::<Bucket>("drifty", "ready", is_ready).await);

    let s3 = &env.admin.s3;
    s3.delete_bucket_encryption().bucket(&name).send().await.expect("encryption removed");
    s3.delete_public_access_block().bucket(&name).send().await.expect("block removed");
    s3.delete_bucket_tagging().bucket(&name).send().await.expect("tags removed");
    s3.delete_bucket_policy().bucket(&name).send().await.expect("policy removed");

    let deadline = tokio::time::Instant::now() + crate::harness::TIMEOUT;
    loop {
        let encryption = s3.get_bucket_encryption().bucket(&name).send().await.is_ok();
        let block = s3.get_public_access_block().bucket(&name).send().await.is_ok();
        let tags = ops(&env, &name)
            .tags()
            .await
            .expect("tags")
            .expect("bucket exists")
            .iter()
            .any(|(k, _)| k == "bucketbroker.io/uid");
        let policy = s3.get_bucket_policy().bucket(&name).send().await.is_ok();
        if encryption && block && tags && policy {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "drift not repaired: {encryption} {block} {tags} {policy}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    s3.delete_bucket().bucket(&name).send().await.expect("bucket deleted out of band");
    let deadline = tokio::time::Instant::now() + crate::harness::TIMEOUT;
    while !(ops(&env, &name).exists().await.expect("head")
        && s3.get_bucket_encryption().bucket(&name).send().await.is_ok())
    {
        assert!(tokio::time::Instant::now() < deadline, "deleted bucket not re-created");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every Kubernetes request is counted on the in-memory server only; on a real cluster the Bucket's
/// resourceVersion shows that nothing was written.
#[tokio::test(flavor = "multi_thread")]
async fn a_ready_bucket_costs_no_writes_on_resync() {
    let mut env = TestEnv::new().await;
    let settings =
        bucket_broker::controller::Settings { resync_interval: Duration::from_secs(1), ..env.settings() };
    env.start_controller_with(settings).await;
    env.create::<Bucket>(bucket("steady", json!({"public": true}))).await;
    let before = env.wait_for::<Bucket>("steady", "ready", is_ready).await;
    // Let the reconcile that made it ready finish its last write.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let aws = env.controller_aws().stats.clone();
    let (aws_writes, aws_calls) = (aws.writes(), aws.total());
    let kube_writes = env.in_memory("the request counters").map(|s| s.stats().writes());
    tokio::time::sleep(Duration::from_millis(4500)).await;

    let resync_calls = aws.total() - aws_calls;
    assert!(resync_calls >= 10, "several resyncs ran ({resync_calls} AWS reads)");
    assert_eq!(aws.writes() - aws_writes, 0, "no AWS write in steady state: {:?}", aws.snapshot());
    if let (Some(server), Some(before)) = (&env.server, kube_writes) {
        assert_eq!(server.stats().writes() - before, 0, "no Kubernetes write in steady state");
    }
    let after = env.api::<Bucket>().get("steady").await.expect("get");
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version, "no change to the Bucket");
    let after = env.api::<Bucket>().get("steady").await.expect("get");
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the Bucket was not rewritten"
    );
    println!("steady state: {resync_calls} AWS reads over ~4 resyncs, {} per resync", resync_calls / 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_killed_mid_provisioning_converges_to_one_bucket() {
    let mut env = TestEnv::new().await;
    env.start_controller().await;
    env.create::<Bucket>(bucket("crashy", json!({}))).await;
    let named = env
        .wait_for::<Bucket>("crashy", "named", |b| b.status.as_ref().is_some_and(|s| s.bucket_name.is_some()))
        .await;
    env.kill_controller().await;
    let name = name_of(&named);

    env.start_controller().await;
    let ready = env.wait_for::<Bucket>("crashy", "ready", is_ready).await;
    assert_eq!(name_of(&ready), name, "the recorded name is reused");
    let buckets = env.admin.s3.list_buckets().send().await.expect("list").buckets.unwrap_or_default();
    let ours: Vec<_> =
        buckets.iter().filter_map(|b| b.name.clone()).filter(|n| n.starts_with("bb-")).collect();
    assert_eq!(ours, [name], "exactly one bucket");
    env.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_created_before_a_crash_without_settings_is_adopted_and_secured() {
    let mut env = TestEnv::new().await;
    // As if a controller had created the bucket and died before tagging or securing it.
    let created: Bucket = env.create(bucket("adopted", json!({}))).await;
    let name = format!("bb-{}", created.metadata.uid.as_deref().expect("uid"));
    ops(&env, &name).create("eu-west-2").await.expect("bare bucket");
    env.start_controller().await;
    env.wait_for::<Bucket>("adopted", "ready", is_ready).await;
    assert!(env.admin.s3.get_bucket_encryption().bucket(&name).send().await.is_ok());
    assert!(
        ops(&env, &name)
            .tags()
            .await
            .expect("tags")
            .expect("bucket exists")
            .iter()
            .any(|(k, _)| k == "bucketbroker.io/uid")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn access_denied_is_reported_in_the_condition_and_recovers_once_granted() {
    let mut env = TestEnv::with(bucket_broker::local::moto::MotoOptions { enforce_iam: true }).await;
    let iam = env.admin.iam.clone();
    iam.create_user().user_name("weak").send().await.expect("user");
    let key = iam.create_access_key().user_name("weak").send().await.expect("key").access_key.expect("key");
    let credentials =
        aws_sdk_iam::config::Credentials::new(key.access_key_id, key.secret_access_key, None, None, "weak");
    let settings = env.settings();
    env.start_controller_as(settings, credentials).await;
    env.create::<Bucket>(bucket("denied", json!({}))).await;

    let failing = env
        .wait_for::<Bucket>("denied", "failing with AccessDenied", |b| {
            ready_reason(b)
                .is_some_and(|(reason, message)| reason == "AwsError" && message.contains("AccessDenied"))
        })
        .await;
    let (_, message) = ready_reason(&failing).expect("condition");
    assert!(message.starts_with("s3 "), "names the service and operation: {message}");

    let everything =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    iam.put_user_policy()
        .user_name("weak")
        .policy_name("fixed")
        .policy_document(everything)
        .send()
        .await
        .expect("granted");
    env.wait_for::<Bucket>("denied", "ready after the fix", is_ready).await;
}
