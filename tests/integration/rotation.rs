//! Zero-downtime key rotation against moto enforcing IAM: both keys work during the overlap, the old one is
//! refused after it, the annotation rotates once per value, the interval rotates by age, kills mid-rotation
//! end in one working key, and a steady state between rotations writes nothing to AWS.

use std::time::Duration;

use bucket_broker::api::{Bucket, BucketBinding, KeyState};
use bucket_broker::aws::Aws;
use bucket_broker::local::moto::MotoOptions;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::credentials::{
    bucket_of, can_get, can_put, client_from, credential, ready_binding, secret, value,
};
use crate::harness::{TIMEOUT, TestEnv};

async fn env_with_data(
    settings: impl FnOnce(bucket_broker::controller::Settings) -> bucket_broker::controller::Settings,
) -> TestEnv {
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    let configured = settings(env.settings());
    env.start_controller_with(configured).await;
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "data"}, "spec": {}}))
        .await;
    env
}

/// The user's live access key ids, as IAM lists them.
async fn iam_keys(env: &TestEnv, user: &str) -> Vec<String> {
    let listed = env.admin.iam.list_access_keys().user_name(user).send().await.expect("keys");
    let mut ids: Vec<String> =
        listed.access_key_metadata.into_iter().filter_map(|k| k.access_key_id).collect();
    ids.sort();
    ids
}

fn user_of(binding: &BucketBinding) -> String {
    binding.status.as_ref().and_then(|s| s.user_name.clone()).expect("user")
}

async fn key_in_secret(env: &TestEnv, name: &str) -> String {
    value(&secret(env, name).await, "AWS_ACCESS_KEY_ID")
}

/// Waits until the Secret holds a key other than `old`, and returns the Secret's client and key id.
async fn rotated_from(env: &TestEnv, name: &str, old: &str) -> (Aws, String) {
    let rotated = env
        .wait_for::<k8s_openapi::api::core::v1::Secret>(name, "rotated", |s| {
            s.data.as_ref().and_then(|d| d.get("AWS_ACCESS_KEY_ID")).is_some_and(|v| v.0 != old.as_bytes())
        })
        .await;
    (client_from(env, &rotated).await, value(&rotated, "AWS_ACCESS_KEY_ID"))
}

fn rotate(value: &str) -> Patch<serde_json::Value> {
    Patch::Merge(json!({"metadata": {"annotations": {"bucketbroker.io/rotate": value}}}))
}

#[tokio::test(flavor = "multi_thread")]
async fn both_keys_work_during_the_overlap_and_the_old_one_is_refused_after() {
    let env = env_with_data(|s| s).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "app",
        json!({"bucketRef": {"name": "data"}, "keyRotation": {"overlap": "4s"}}),
    ))
    .await;
    let binding = ready_binding(&env, "app").await;
    let user = user_of(&binding);
    let before = secret(&env, "app").await;
    let old_key = value(&before, "AWS_ACCESS_KEY_ID");
    let bucket = bucket_of(&before);
    let old_client = client_from(&env, &before).await;
    assert!(can_put(&old_client, &bucket, "before.txt").await);
    let old_annotation = before.metadata.annotations.clone().unwrap_or_default();

    env.api::<BucketBinding>().patch("app", &PatchParams::default(), &rotate("now")).await.expect("rotate");
    let (new_client, new_key) = rotated_from(&env, "app", &old_key).await;
    let after = secret(&env, "app").await;
    assert_eq!(
        after.data.as_ref().map(|d| d.keys().cloned().collect::<Vec<_>>()),
        before.data.as_ref().map(|d| d.keys().cloned().collect::<Vec<_>>()),
        "the Secret keeps its keys and format"
    );
    assert_ne!(
        after.metadata.annotations.unwrap_or_default().get("bucketbroker.io/access-key-id"),
        old_annotation.get("bucketbroker.io/access-key-id"),
        "the annotation reloader tools watch changes"
    );
    assert!(can_get(&new_client, &bucket, "before.txt").await, "the new key works at once");
    assert!(can_get(&old_client, &bucket, "before.txt").await, "the old key still works during the overlap");
    assert_eq!(iam_keys(&env, &user).await.len(), 2, "two keys, never more");
    let during = ready_binding(&env, "app").await;
    let states: Vec<(String, KeyState)> = during
        .status
        .as_ref()
        .map(|s| s.access_keys.iter().map(|k| (k.id.clone(), k.state)).collect())
        .unwrap_or_default();
    assert_eq!(states, [(new_key.clone(), KeyState::Active), (old_key.clone(), KeyState::Retiring)]);

    // After the overlap the old key is deleted, without any other trigger.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while iam_keys(&env, &user).await != [new_key.clone()] {
        assert!(tokio::time::Instant::now() < deadline, "the old key was never retired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!can_get(&old_client, &bucket, "before.txt").await, "the old key is refused after the overlap");
    assert!(can_put(&new_client, &bucket, "after.txt").await);
    let settled = env
        .wait_for::<BucketBinding>("app", "one key listed", |b| {
            b.status.as_ref().is_some_and(|s| s.access_keys.len() == 1)
        })
        .await;
    assert!(settled.status.and_then(|s| s.key_rotation).and_then(|r| r.last).is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_annotation_rotates_exactly_once_per_value() {
    let env = env_with_data(|s| bucket_broker::controller::Settings {
        resync_interval: Duration::from_secs(1),
        ..s
    })
    .await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "app",
        json!({"bucketRef": {"name": "data"}, "keyRotation": {"overlap": "1s"}}),
    ))
    .await;
    ready_binding(&env, "app").await;
    let first = key_in_secret(&env, "app").await;
    env.api::<BucketBinding>()
        .patch("app", &PatchParams::default(), &rotate("2026-11-29"))
        .await
        .expect("rotate");
    let (_, second) = rotated_from(&env, "app", &first).await;
    // Several resyncs later, the same value has not rotated again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(key_in_secret(&env, "app").await, second, "one rotation for one value");
    env.api::<BucketBinding>()
        .patch("app", &PatchParams::default(), &rotate("2026-11-30"))
        .await
        .expect("again");
    let (client, third) = rotated_from(&env, "app", &second).await;
    assert_ne!(third, first);
    assert!(can_put(&client, &bucket_of(&secret(&env, "app").await), "third.txt").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_older_than_the_interval_are_rotated() {
    let env = env_with_data(|s| s).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "app",
        json!({"bucketRef": {"name": "data"}, "keyRotation": {"interval": "3s", "overlap": "1s"}}),
    ))
    .await;
    let binding = ready_binding(&env, "app").await;
    let next = binding.status.as_ref().and_then(|s| s.key_rotation.as_ref()).and_then(|r| r.next.clone());
    assert!(next.is_some(), "the next rotation is shown");
    let first = key_in_secret(&env, "app").await;
    let (_, second) = rotated_from(&env, "app", &first).await;
    let (client, third) = rotated_from(&env, "app", &second).await;
    assert!(can_put(&client, &bucket_of(&secret(&env, "app").await), "aged.txt").await);
    assert_ne!(third, first);
}

#[tokio::test(flavor = "multi_thread")]
async fn kills_during_rotations_end_in_one_working_key() {
    let mut env = env_with_data(|s| s).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "app",
        json!({"bucketRef": {"name": "data"}, "keyRotation": {"overlap": "1s"}}),
    ))
    .await;
    let binding = ready_binding(&env, "app").await;
    let user = user_of(&binding);
    // Kill the controller at different points of a rotation, many times, and restart it each time.
    for (round, pause_ms) in [5u64, 20, 40, 80, 120, 200, 350, 500].into_iter().enumerate() {
        env.api::<BucketBinding>()
            .patch("app", &PatchParams::default(), &rotate(&format!("round-{round}")))
            .await
            .expect("rotate");
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        env.kill_controller().await;
        assert!(iam_keys(&env, &user).await.len() <= 2, "never more than two keys");
        env.start_controller().await;
    }
    // Converged: exactly one key, the one in the Secret, and it works.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let keys = iam_keys(&env, &user).await;
        let in_secret = key_in_secret(&env, "app").await;
        if keys == [in_secret.clone()] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never converged: {keys:?} vs {in_secret}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ready_binding(&env, "app").await;
    let current = secret(&env, "app").await;
    assert!(can_put(&client_from(&env, &current).await, &bucket_of(&current), "survived.txt").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_deleted_during_the_overlap_ends_with_one_active_key_in_it() {
    let env = env_with_data(|s| s).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "app",
        json!({"bucketRef": {"name": "data"}, "keyRotation": {"overlap": "3s"}}),
    ))
    .await;
    let binding = ready_binding(&env, "app").await;
    let user = user_of(&binding);
    let first = key_in_secret(&env, "app").await;
    env.api::<BucketBinding>().patch("app", &PatchParams::default(), &rotate("now")).await.expect("rotate");
    let (_, second) = rotated_from(&env, "app", &first).await;
    env.delete::<k8s_openapi::api::core::v1::Secret>("app").await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let keys = iam_keys(&env, &user).await;
        let current = env.api::<k8s_openapi::api::core::v1::Secret>().get_opt("app").await.expect("get");
        let in_secret = current.as_ref().map(|s| value(s, "AWS_ACCESS_KEY_ID"));
        if let Some(id) = &in_secret
            && keys == [id.clone()]
            && *id != second
            && *id != first
        {
            break;
        }
        assert!(keys.len() <= 2, "never more than two keys: {keys:?}");
        assert!(tokio::time::Instant::now() < deadline, "never converged: {keys:?} vs {in_secret:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The pass that retired the old key reports it a moment after IAM shows it.
    let settled = env
        .wait_for::<BucketBinding>("app", "one key listed", |b| {
            b.status.as_ref().is_some_and(|s| s.access_keys.len() == 1)
        })
        .await;
    let states: Vec<KeyState> =
        settled.status.map(|s| s.access_keys.iter().map(|k| k.state).collect()).unwrap_or_default();
    assert_eq!(states, [KeyState::Active], "exactly one Active key");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_steady_state_with_rotation_configured_writes_nothing_to_aws() {
    let env = env_with_data(|s| bucket_broker::controller::Settings {
        resync_interval: Duration::from_secs(1),
        max_key_age: Some(Duration::from_secs(7200)),
        ..s
    })
    .await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "app",
        json!({"bucketRef": {"name": "data"}, "keyRotation": {"interval": "1h", "overlap": "5m"}}),
    ))
    .await;
    ready_binding(&env, "app").await;
    // Let the first passes settle, then count over several resyncs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let aws = env.controller_aws();
    let writes = aws.stats.writes();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(aws.stats.writes(), writes, "no AWS write between rotations");
}
