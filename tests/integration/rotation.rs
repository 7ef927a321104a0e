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

/// An STS endpoint in front of moto that answers `InvalidClientTokenId`, as real STS does while a new key
/// propagates, for every key it first sees after [`SlowSts::arm`], until `delay` after it first saw it;
/// everything else (keys seen before, the controller's own identity) is forwarded. moto accepts a new key
/// at once.
struct SlowSts {
    url: String,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SlowSts {
    async fn start(upstream: &str, delay: Duration) -> SlowSts {
        use std::collections::HashMap;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let armed = Arc::new(AtomicBool::new(false));
        // Each key's first sight, and whether it was seen after arming.
        let seen: Arc<Mutex<HashMap<String, (tokio::time::Instant, bool)>>> = Arc::default();
        let on = armed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, seen, on) = (upstream.clone(), seen.clone(), on.clone());
                tokio::spawn(async move {
                    let refused = move |key: &str| {
                        let mut seen = seen.lock().expect("seen");
                        let now = tokio::time::Instant::now();
                        let (first, delayed) =
                            *seen.entry(key.to_owned()).or_insert((now, on.load(Ordering::SeqCst)));
                        delayed && now < first + delay
                    };
                    serve_slow_sts(client, upstream, refused).await;
                });
            }
        });
        SlowSts { url, armed }
    }

    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn serve_slow_sts(client: tokio::net::TcpStream, upstream: String, refused: impl Fn(&str) -> bool) {
    crate::account::serve_front(client, upstream, |head, _| {
        let key = head.split("Credential=").nth(1).and_then(|rest| rest.split('/').next()).unwrap_or_default();
        refused(key).then(|| {
            crate::account::forbidden(
                "text/xml",
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
                 <Code>InvalidClientTokenId</Code><Message>The security token included in the request is \
                 invalid.</Message></Error><RequestId>slow-sts</RequestId></ErrorResponse>",
            )
        })
    })
    .await;
}

/// An IAM endpoint in front of moto whose ListAccessKeys leaves out, for `hidden` after it was created,
/// every key it sees created: what IAM's eventual consistency can look like right after CreateAccessKey.
struct LaggingIam {
    url: String,
}

impl LaggingIam {
    async fn start(upstream: &str, hidden: Duration) -> LaggingIam {
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex};
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let created: Arc<Mutex<HashMap<String, tokio::time::Instant>>> = Arc::default();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, created) = (upstream.clone(), created.clone());
                tokio::spawn(serve_lagging_iam(client, upstream, created, hidden));
            }
        });
        LaggingIam { url }
    }
}

async fn serve_lagging_iam(
    mut client: tokio::net::TcpStream,
    upstream: String,
    created: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>>,
    hidden: Duration,
) {
    use tokio::io::AsyncWriteExt;
    let between = |text: &str, open: &str, close: &str| {
        text.split_once(open).and_then(|(_, rest)| rest.split_once(close)).map(|(v, _)| v.to_owned())
    };
    let mut from_client = Vec::new();
    while let Some((head, body)) = crate::account::read_message(&mut client, &mut from_client, |_| true).await
    {
        let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { return };
        if server.write_all(head.as_bytes()).await.is_err() || server.write_all(&body).await.is_err() {
            return;
        }
        let mut from_server = Vec::new();
        let Some((answer, mut answer_body)) =
            crate::account::read_message(&mut server, &mut from_server, |_| true).await
        else {
            return;
        };
        let request = String::from_utf8_lossy(&body).into_owned();
        let mut text = String::from_utf8_lossy(&answer_body).into_owned();
        if request.contains("Action=CreateAccessKey")
            && let Some(id) = between(&text, "<AccessKeyId>", "</AccessKeyId>")
        {
            created.lock().expect("created").insert(id, tokio::time::Instant::now());
        }
        let mut answer = answer;
        if request.contains("Action=ListAccessKeys") {
            let now = tokio::time::Instant::now();
            let young: Vec<String> = created
                .lock()
                .expect("created")
                .iter()
                .filter(|(_, at)| now < **at + hidden)
                .map(|(id, _)| id.clone())
                .collect();
            for id in young {
                let Some(at) = text.find(&format!("<AccessKeyId>{id}</AccessKeyId>")) else { continue };
                let (Some(start), Some(end)) = (text[..at].rfind("<member>"), text[at..].find("</member>"))
                else {
                    continue;
                };
                text.replace_range(start..at + end + "</member>".len(), "");
            }
            answer_body = text.into_bytes();
            answer = answer
                .lines()
                .map(|line| {
                    if line.to_ascii_lowercase().starts_with("content-length:") {
                        format!("Content-Length: {}", answer_body.len())
                    } else {
                        line.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\r\n");
            // `lines` drops the blank line that ends the head.
            answer.push_str("\r\n");
        }
        if client.write_all(answer.as_bytes()).await.is_err() || client.write_all(&answer_body).await.is_err()
        {
            return;
        }
    }
}

/// IAM may not list a key issued moments ago: a first key in the Secret that ListAccessKeys does not show
/// yet is trusted within the propagation window, and no second key is made.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_key_iam_does_not_list_yet_is_not_replaced_by_a_second() {
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    let sts = SlowSts::start(env.moto.endpoint_url(), Duration::from_secs(8)).await;
    let iam = LaggingIam::start(env.moto.endpoint_url(), Duration::from_secs(6)).await;
    let mut aws = crate::harness::aws_for(&env.moto, env.moto.admin_credentials()).await;
    aws.sts = aws_sdk_sts::Client::from_conf(aws.sts.config().to_builder().endpoint_url(&sts.url).build());
    aws.iam = aws_sdk_iam::Client::from_conf(aws.iam.config().to_builder().endpoint_url(&iam.url).build());
    let ctx = env.start_controller_on(env.settings(), aws);
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "data"}, "spec": {}}))
        .await;
    env.wait_for::<Bucket>("data", "ready", |b| {
        b.status.as_ref().is_some_and(|s| {
            bucket_broker::api::find_condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True")
        })
    })
    .await;
    sts.arm();
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    let binding = ready_binding(&env, "app").await;
    assert_eq!(calls(&ctx, "CreateAccessKey"), 1, "one key, trusted while IAM did not list it");
    let user = user_of(&binding);
    let key = key_in_secret(&env, "app").await;
    assert_eq!(iam_keys(&env, &user).await, [key]);
    let current = secret(&env, "app").await;
    assert!(can_put(&client_from(&env, &current).await, &bucket_of(&current), "first.txt").await);
}

/// A controller whose STS is `sts`, on moto enforcing IAM, with a ready Bucket "data".
async fn env_with_sts(
    sts_delay: Duration,
    settings: impl FnOnce(bucket_broker::controller::Settings) -> bucket_broker::controller::Settings,
) -> (TestEnv, SlowSts, std::sync::Arc<bucket_broker::controller::Context>) {
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    let sts = SlowSts::start(env.moto.endpoint_url(), sts_delay).await;
    let mut aws = crate::harness::aws_for(&env.moto, env.moto.admin_credentials()).await;
    let config = aws.sts.config().to_builder().endpoint_url(&sts.url).build();
    aws.sts = aws_sdk_sts::Client::from_conf(config);
    let configured = settings(env.settings());
    let ctx = env.start_controller_on(configured, aws);
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "data"}, "spec": {}}))
        .await;
    (env, sts, ctx)
}

fn calls(ctx: &bucket_broker::controller::Context, operation: &str) -> u64 {
    ctx.aws.stats.snapshot().iter().filter(|((_, op, _), _)| *op == operation).map(|(_, n)| n).sum()
}

fn ready_reason_of(binding: &BucketBinding) -> Option<String> {
    let status = binding.status.as_ref()?;
    bucket_broker::api::find_condition(&status.conditions, "Ready")
        .map(|c| format!("{}/{}", c.status, c.reason))
}

/// Real IAM may take longer than a pass should wait before STS accepts a new key: the rotation waits
/// across passes (its key held in a Secret of its own), Ready stays True, no second key is made, and the
/// Secret switches once STS accepts the key.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_whose_key_sts_accepts_late_waits_without_flipping_ready_or_making_more_keys() {
    let delay = Duration::from_secs(12);
    let (env, sts, ctx) = env_with_sts(delay, |s| s).await;
    let created = env
        .create::<BucketBinding>(credential(
            "BucketBinding",
            "app",
            json!({"bucketRef": {"name": "data"}, "keyRotation": {"overlap": "3s"}}),
        ))
        .await;
    let binding = ready_binding(&env, "app").await;
    let user = user_of(&binding);
    let old_key = key_in_secret(&env, "app").await;
    let creates_before = calls(&ctx, "CreateAccessKey");

    sts.arm();
    let asked = tokio::time::Instant::now();
    env.api::<BucketBinding>().patch("app", &PatchParams::default(), &rotate("now")).await.expect("rotate");
    let store = format!("bucket-broker-rotation-{}", created.metadata.uid.as_deref().expect("uid"));
    let mut saw_store = false;
    let mut pending_in_status = None;
    let new_key = loop {
        assert!(asked.elapsed() < delay + TIMEOUT, "the rotation never finished");
        let binding = env.api::<BucketBinding>().get("app").await.expect("binding");
        assert_eq!(ready_reason_of(&binding).as_deref(), Some("True/Provisioned"), "Ready stays True");
        let listed = binding.status.as_ref().map(|s| s.access_keys.clone()).unwrap_or_default();
        if let Some(pending) = listed.iter().find(|k| k.state == KeyState::Pending) {
            assert_ne!(pending.id, old_key, "{listed:?}");
            pending_in_status = Some(pending.id.clone());
        }
        let in_secret = key_in_secret(&env, "app").await;
        let keys = iam_keys(&env, &user).await;
        assert!(keys.len() <= 2, "never more than two keys: {keys:?}");
        if in_secret != old_key {
            break in_secret;
        }
        let pending = env.api::<k8s_openapi::api::core::v1::Secret>().get_opt(&store).await.expect("get");
        if let Some(pending) = pending {
            saw_store = true;
            let labels = pending.metadata.labels.unwrap_or_default();
            assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("bucket-broker"));
            let owner = pending.metadata.owner_references.unwrap_or_default();
            assert!(
                owner
                    .iter()
                    .any(|r| Some(&r.uid) == created.metadata.uid.as_ref() && r.controller == Some(true))
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let took = asked.elapsed();
    assert!(took >= delay - Duration::from_secs(1), "the Secret switched only once STS accepted: {took:?}");
    assert!(saw_store, "the new key waited in its own Secret");
    assert_eq!(pending_in_status.as_ref(), Some(&new_key), "status listed the waiting key as Pending");
    assert_eq!(calls(&ctx, "CreateAccessKey") - creates_before, 1, "exactly one new key");
    let current = secret(&env, "app").await;
    assert!(can_put(&client_from(&env, &current).await, &bucket_of(&current), "late.txt").await);
    // The old key retires as before, and the pending store is gone.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while iam_keys(&env, &user).await != [new_key.clone()] {
        assert!(tokio::time::Instant::now() < deadline, "the old key was never retired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = env.api::<k8s_openapi::api::core::v1::Secret>().get_opt(&store).await.expect("get");
    assert!(left.is_none(), "the pending store is deleted once the Secret holds the key");
    let done = ready_binding(&env, "app").await;
    assert_eq!(ready_reason_of(&done).as_deref(), Some("True/Provisioned"));
    let listed = done.status.map(|s| s.access_keys).unwrap_or_default();
    assert!(listed.iter().all(|k| k.state != KeyState::Pending), "no Pending key once switched: {listed:?}");
}

/// A controller restarted while a rotation's key waits for STS finds the key in its store and goes on with
/// it: no second key, and the Secret switches once STS accepts it.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_waiting_for_sts_survives_a_controller_restart() {
    let delay = Duration::from_secs(10);
    let (mut env, sts, ctx) = env_with_sts(delay, |s| s).await;
    let created = env
        .create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    let binding = ready_binding(&env, "app").await;
    let user = user_of(&binding);
    let old_key = key_in_secret(&env, "app").await;
    let creates_before = calls(&ctx, "CreateAccessKey");
    sts.arm();
    env.api::<BucketBinding>().patch("app", &PatchParams::default(), &rotate("now")).await.expect("rotate");
    let store = format!("bucket-broker-rotation-{}", created.metadata.uid.as_deref().expect("uid"));
    env.wait_for::<k8s_openapi::api::core::v1::Secret>(&store, "the key waits in its store", |_| true).await;
    env.kill_controller().await;
    let aws = ctx.aws.clone();
    env.start_controller_on(env.settings(), aws);
    let (client, new_key) = rotated_from(&env, "app", &old_key).await;
    assert_eq!(calls(&ctx, "CreateAccessKey") - creates_before, 1, "the stored key was used, not another");
    assert!(can_put(&client, &bucket_of(&secret(&env, "app").await), "restarted.txt").await);
    assert!(iam_keys(&env, &user).await.contains(&new_key));
    assert!(iam_keys(&env, &user).await.len() <= 2);
}

/// A rotation's key STS never accepts within the window is deleted, the Secret keeps the working key and
/// Ready stays True, its message (and a Warning event) says the rotation failed, and the retry backs off
/// instead of making keys in a tight loop.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_whose_key_sts_never_accepts_gives_up_after_the_window_and_backs_off() {
    let window = Duration::from_secs(4);
    let (env, sts, ctx) = env_with_sts(Duration::from_secs(3600), |s| bucket_broker::controller::Settings {
        key_propagation_timeout: window,
        ..s
    })
    .await;
    let created = env
        .create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    let binding = ready_binding(&env, "app").await;
    let user = user_of(&binding);
    let old_key = key_in_secret(&env, "app").await;
    let creates_before = calls(&ctx, "CreateAccessKey");
    sts.arm();
    env.api::<BucketBinding>().patch("app", &PatchParams::default(), &rotate("now")).await.expect("rotate");
    let failed = env
        .wait_for::<BucketBinding>("app", "rotation given up", |b| {
            b.status
                .as_ref()
                .and_then(|s| bucket_broker::api::find_condition(&s.conditions, "Ready"))
                .is_some_and(|c| c.message.contains("rotation failed"))
        })
        .await;
    assert_eq!(ready_reason_of(&failed).as_deref(), Some("True/Provisioned"), "the Secret's key still works");
    assert_eq!(key_in_secret(&env, "app").await, old_key, "the Secret keeps the working key");
    let current = secret(&env, "app").await;
    assert!(can_put(&client_from(&env, &current).await, &bucket_of(&current), "kept.txt").await);
    assert_eq!(iam_keys(&env, &user).await, std::slice::from_ref(&old_key), "the new key is deleted");
    let store = format!("bucket-broker-rotation-{}", created.metadata.uid.as_deref().expect("uid"));
    let kept = env.api::<k8s_openapi::api::core::v1::Secret>().get_opt(&store).await.expect("get");
    assert!(kept.is_none(), "and so is its store");
    // The next attempt waits (30 s after a first failure): no key per pass meanwhile.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(calls(&ctx, "CreateAccessKey") - creates_before, 1, "one key, then a wait");
    assert_eq!(key_in_secret(&env, "app").await, old_key);
    let still = env.api::<BucketBinding>().get("app").await.expect("binding");
    assert_eq!(ready_reason_of(&still).as_deref(), Some("True/Provisioned"));
}

/// Bindings of a Bucket being deleted keep what protects them: a downgrade applies to the existing user,
/// and a rotation still happens; only new users and keys are withheld.
#[tokio::test(flavor = "multi_thread")]
async fn a_binding_of_a_deleting_bucket_is_downgraded_and_rotated_but_no_new_one_is_issued() {
    let env = env_with_data(|s| s).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "app",
        json!({"bucketRef": {"name": "data"}, "permissions": "ReadWrite", "keyRotation": {"overlap": "2s"}}),
    ))
    .await;
    let binding = ready_binding(&env, "app").await;
    let user = user_of(&binding);
    let before = secret(&env, "app").await;
    let bucket = bucket_of(&before);
    let old_client = client_from(&env, &before).await;
    assert!(can_put(&old_client, &bucket, "before.txt").await);

    // The binding holds the Bucket's deletion: the Bucket stays, deleting.
    env.delete::<Bucket>("data").await;
    let deleting = env
        .wait_for::<BucketBinding>("app", "BucketDeleting", |b| {
            ready_reason_of(b).as_deref() == Some("False/BucketDeleting")
        })
        .await;
    let status = deleting.status.as_ref().expect("status");
    let message = &bucket_broker::api::find_condition(&status.conditions, "Ready").expect("Ready").message;
    assert!(message.contains("keep working"), "{message}");

    env.api::<BucketBinding>()
        .patch("app", &PatchParams::default(), &Patch::Merge(json!({"spec": {"permissions": "ReadOnly"}})))
        .await
        .expect("downgrade");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while can_put(&old_client, &bucket, "downgraded.txt").await {
        assert!(tokio::time::Instant::now() < deadline, "the downgrade never reached IAM");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(can_get(&old_client, &bucket, "before.txt").await, "ReadOnly still reads");

    let old_key = value(&before, "AWS_ACCESS_KEY_ID");
    env.api::<BucketBinding>().patch("app", &PatchParams::default(), &rotate("now")).await.expect("rotate");
    let (new_client, _) = rotated_from(&env, "app", &old_key).await;
    assert!(can_get(&new_client, &bucket, "before.txt").await, "the new key works");
    assert!(!can_put(&new_client, &bucket, "no.txt").await, "and is read-only");
    assert!(iam_keys(&env, &user).await.len() <= 2);
    let after = env.api::<BucketBinding>().get("app").await.expect("binding");
    assert_eq!(ready_reason_of(&after).as_deref(), Some("False/BucketDeleting"), "still not Ready");

    // A new binding of the deleting Bucket gets nothing.
    let late = env
        .create::<BucketBinding>(credential("BucketBinding", "late", json!({"bucketRef": {"name": "data"}})))
        .await;
    env.wait_for::<BucketBinding>("late", "BucketDeleting", |b| {
        ready_reason_of(b).as_deref() == Some("False/BucketDeleting")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late_user = format!("{}{}", env.settings().user_prefix, late.metadata.uid.as_deref().expect("uid"));
    assert!(env.admin.iam.get_user().user_name(&late_user).send().await.is_err(), "no user for it");
    assert!(env.api::<k8s_openapi::api::core::v1::Secret>().get_opt("late").await.expect("get").is_none());
}
