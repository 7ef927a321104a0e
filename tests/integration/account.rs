//! Safe for the platform: the controller touches only its own account's buckets, keeps what other teams
//! add to them, and gives every user the shipped permissions boundary.
//!
//! moto ignores `ExpectedBucketOwner` and evaluates neither conditions nor boundaries (DESIGN.md, Tests):
//! what the controller sends is checked at the HTTP level, and a bucket of another account is made with
//! moto's `x-moto-account-id` header.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use bucket_broker::api::{Bucket, BucketBinding, find_condition};
use bucket_broker::aws::Aws;
use bucket_broker::controller::Settings;
use bucket_broker::desired::names;
use bucket_broker::local::moto::{ACCOUNT_ID, MotoOptions};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::credentials::{bucket_of, can_get, can_put, client_from, credential, ready_binding, secret};
use crate::harness::{TestEnv, aws_for};

/// Every request the SDK sends, as `METHOD path?query`, with its `x-amz-expected-bucket-owner` header and
/// its body (IAM's are form-encoded queries).
#[derive(Clone, Debug, Default)]
pub(crate) struct SentRequests(Arc<Mutex<Vec<Sent>>>);

/// `METHOD path?query`, the expected bucket owner header, the body.
pub(crate) type Sent = (String, Option<String>, String);

impl Intercept for SentRequests {
    fn name(&self) -> &'static str {
        "SentRequests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let uri = request.uri();
        let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
        let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
        let line = format!("{} {path}", request.method());
        let owner = request.headers().get("x-amz-expected-bucket-owner").map(str::to_owned);
        let body =
            request.body().bytes().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
        if let Ok(mut sent) = self.0.lock() {
            sent.push((line, owner, body));
        }
        Ok(())
    }
}

impl SentRequests {
    pub(crate) fn take(&self) -> Vec<Sent> {
        self.0.lock().map(|mut sent| std::mem::take(&mut *sent)).unwrap_or_default()
    }
}

/// The controller's AWS clients, with every S3 and IAM request recorded.
pub(crate) async fn recorded_aws(env: &TestEnv) -> (Aws, SentRequests) {
    let sent = SentRequests::default();
    let mut aws = aws_for(&env.moto, env.moto.admin_credentials()).await;
    let config = aws.s3.config().to_builder().interceptor(sent.clone()).build();
    aws.s3 = aws_sdk_s3::Client::from_conf(config);
    let config = aws.iam.config().to_builder().interceptor(sent.clone()).build();
    aws.iam = aws_sdk_iam::Client::from_conf(config);
    (aws, sent)
}

fn bucket(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket", "metadata": {"name": name}, "spec": spec})
}

fn ready_reason(bucket: &Bucket) -> Option<String> {
    let status = bucket.status.as_ref()?;
    find_condition(&status.conditions, "Ready").map(|c| c.reason.clone())
}

async fn ready_bucket(env: &TestEnv, name: &str) -> Bucket {
    env.wait_for::<Bucket>(name, "ready", |b| ready_reason(b).as_deref() == Some("Provisioned")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bucket_call_expects_our_account_and_a_name_taken_elsewhere_is_never_adopted() {
    let mut env = TestEnv::new().await;
    // The squatted Bucket exists before the controller: its name (from its uid) is taken in another account.
    env.create::<Bucket>(bucket("squatted", json!({"public": true}))).await;
    let uid = env.api::<Bucket>().get("squatted").await.expect("Bucket").metadata.uid.expect("uid");
    let taken = names::bucket_name(&env.settings().bucket_prefix, &uid);
    env.admin
        .s3
        .create_bucket()
        .bucket(&taken)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest2)
                .build(),
        )
        .customize()
        .mutate_request(|request| {
            request.headers_mut().insert("x-moto-account-id", "111111111111");
        })
        .send()
        .await
        .expect("another account's bucket");

    let (aws, sent) = recorded_aws(&env).await;
    env.start_controller_on(env.settings(), aws);
    env.create::<Bucket>(bucket("assets", json!({}))).await;
    ready_bucket(&env, "assets").await;

    let squatted = env
        .wait_for::<Bucket>("squatted", "BucketNameTaken", |b| {
            ready_reason(b).as_deref() == Some("BucketNameTaken")
        })
        .await;
    let status = squatted.status.as_ref().expect("status");
    let ready = find_condition(&status.conditions, "Ready").expect("Ready");
    assert!(
        ready.message.contains("another AWS account") && ready.message.contains("create it again"),
        "{}",
        ready.message
    );
    assert!(
        find_condition(&status.conditions, "Stalled").is_some_and(|c| c.status == "True"),
        "a person must act"
    );
    assert!(
        !ready.message.contains(ACCOUNT_ID) && !ready.message.contains("111111111111"),
        "{}",
        ready.message
    );

    // Nothing was written to the other account's bucket: no tags, no policy, no public access block.
    let theirs = &env.admin.s3;
    let tags = theirs.get_bucket_tagging().bucket(&taken).send().await;
    assert!(tags.map(|t| t.tag_set.is_empty()).unwrap_or(true), "the squatted bucket got no tags");
    assert!(theirs.get_bucket_policy().bucket(&taken).send().await.is_err(), "no policy on it");
    assert!(theirs.get_public_access_block().bucket(&taken).send().await.is_err(), "no access block on it");

    // Every bucket-level request carried our account as the expected owner; only CreateBucket (which has
    // no such parameter) and ListBuckets (account-level) went without.
    let requests: Vec<(String, Option<String>)> = sent.take().into_iter().map(|(l, o, _)| (l, o)).collect();
    let on_squatted = requests.iter().filter(|(line, _)| line.contains(&taken)).count();
    assert!(
        requests.len() >= 6 && on_squatted >= 2,
        "the controller's S3 requests were recorded: {requests:?}"
    );
    for (line, owner) in &requests {
        let (method, target) = line.split_once(' ').expect("method and path");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let account_level = path == "/";
        let create = method == "PUT" && path.trim_matches('/').split('/').count() == 1 && query.is_empty();
        if account_level || create {
            continue;
        }
        assert_eq!(owner.as_deref(), Some(ACCOUNT_ID), "{line} expects no owner");
    }

    // A person must act: the name is not retried in a hot loop.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let again = sent.take().iter().filter(|(line, _, _)| line.contains(&taken)).count();
    assert!(again <= 4, "{again} more requests on the squatted name in 4 s (after {on_squatted})");

    // Deleting the Bucket releases it and leaves the other account's bucket alone.
    env.delete::<Bucket>("squatted").await;
    env.wait_gone::<Bucket>("squatted").await;
    assert!(theirs.head_bucket().bucket(&taken).send().await.is_ok(), "their bucket is still there");
}

#[tokio::test(flavor = "multi_thread")]
async fn statements_and_tags_other_teams_add_survive_every_pass() {
    let mut env = TestEnv::new().await;
    env.start_controller().await;
    env.create::<Bucket>(bucket("logs", json!({}))).await;
    let ready = ready_bucket(&env, "logs").await;
    let name = ready.status.as_ref().and_then(|s| s.bucket_name.clone()).expect("bucket name");
    let s3 = &env.admin.s3;
    let log_delivery = json!({
        "Sid": "SecurityTeamLogDelivery",
        "Effect": "Allow",
        "Principal": {"Service": "logging.s3.amazonaws.com"},
        "Action": "s3:PutObject",
        "Resource": format!("arn:aws:s3:::{name}/access-logs/*"),
    });
    let theirs = json!({"Version": "2012-10-17", "Statement": [log_delivery]});
    s3.put_bucket_policy().bucket(&name).policy(theirs.to_string()).send().await.expect("their policy");
    let mut tags = s3.get_bucket_tagging().bucket(&name).send().await.expect("tags").tag_set;
    tags.push(aws_sdk_s3::types::Tag::builder().key("cost-centre").value("42").build().expect("tag"));
    let tagging = aws_sdk_s3::types::Tagging::builder().set_tag_set(Some(tags)).build().expect("tagging");
    s3.put_bucket_tagging().bucket(&name).tagging(tagging).send().await.expect("their tag");

    let statements = async || -> Vec<Value> {
        let policy =
            s3.get_bucket_policy().bucket(&name).send().await.expect("a policy").policy.expect("text");
        let policy: Value = serde_json::from_str(&policy).expect("JSON");
        match &policy["Statement"] {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        }
    };
    let sids = |statements: &[Value]| -> Vec<String> {
        let mut sids: Vec<String> =
            statements.iter().filter_map(|s| s["Sid"].as_str()).map(str::to_owned).collect();
        sids.sort();
        sids
    };
    let api = env.api::<Bucket>();
    for (public, ours) in [
        (true, vec!["PublicReadObjects", "SecurityTeamLogDelivery"]),
        (false, vec!["SecurityTeamLogDelivery"]),
    ] {
        api.patch("logs", &PatchParams::default(), &Patch::Merge(json!({"spec": {"public": public}})))
            .await
            .expect("patched");
        let generation = api.get("logs").await.expect("Bucket").metadata.generation;
        env.wait_for::<Bucket>("logs", "the change applied", |b| {
            b.status.as_ref().is_some_and(|s| s.observed_generation == generation)
                && ready_reason(b).as_deref() == Some("Provisioned")
        })
        .await;
        let now = statements().await;
        assert_eq!(sids(&now), ours, "public: {public}");
        assert!(
            now.iter().any(|s| s["Principal"]["Service"] == "logging.s3.amazonaws.com"),
            "theirs unchanged"
        );
    }
    let tags = s3.get_bucket_tagging().bucket(&name).send().await.expect("tags").tag_set;
    assert!(tags.iter().any(|t| t.key == "cost-centre" && t.value == "42"), "their tag is kept: {tags:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_user_gets_the_shipped_boundary_and_its_key_still_works() {
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    let document =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/aws/boundary-policy.json"))
            .expect("the boundary policy");
    // The shipped document is written for the default bucket prefix; the tests use their own. moto
    // refuses the signature of a request whose body holds a policy variable, and evaluates no conditions:
    // the account id stands in for `${aws:PrincipalAccount}` here.
    let document = document
        .replace("bucket-broker-*", &format!("{}*", env.settings().bucket_prefix))
        .replace("${aws:PrincipalAccount}", ACCOUNT_ID);
    // Compact, as moto also miscomputes the signature of a body with line breaks in it.
    let document = serde_json::from_str::<Value>(&document).expect("JSON").to_string();
    let created = env
        .admin
        .iam
        .create_policy()
        .policy_name("bucket-broker-user-boundary")
        .policy_document(document)
        .send()
        .await
        .expect("IAM takes the boundary policy");
    let boundary = created.policy.and_then(|p| p.arn).expect("its ARN");
    let settings = Settings { permissions_boundary_arn: Some(boundary.clone()), ..env.settings() };
    let (aws, sent) = recorded_aws(&env).await;
    env.start_controller_on(settings, aws);
    env.create::<Bucket>(bucket("data", json!({}))).await;
    ready_bucket(&env, "data").await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "app",
        json!({"bucketRef": {"name": "data"}, "permissions": "ReadWrite"}),
    ))
    .await;
    ready_binding(&env, "app").await;
    // moto keeps no user boundaries: the request is the evidence.
    let creates: Vec<String> = sent
        .take()
        .into_iter()
        .filter(|(_, _, body)| body.contains("Action=CreateUser"))
        .map(|(_, _, b)| b)
        .collect();
    assert_eq!(creates.len(), 1, "one user: {creates:?}");
    let encoded = boundary.replace(':', "%3A").replace('/', "%2F");
    assert!(creates[0].contains(&format!("PermissionsBoundary={encoded}")), "{}", creates[0]);
    let secret = secret(&env, "app").await;
    let key = client_from(&env, &secret).await;
    let bucket = bucket_of(&secret);
    assert!(can_put(&key, &bucket, "a.txt").await && can_get(&key, &bucket, "a.txt").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_iam_does_not_show_yet_is_looked_for_again_before_the_binding_goes() {
    let mut env = TestEnv::new().await;
    let window = Duration::from_secs(8);
    env.start_controller_with(Settings { key_propagation_timeout: window, ..env.settings() }).await;
    env.create::<Bucket>(bucket("data", json!({}))).await;
    ready_bucket(&env, "data").await;
    env.create::<BucketBinding>(credential("BucketBinding", "app", json!({"bucketRef": {"name": "data"}})))
        .await;
    let binding = ready_binding(&env, "app").await;
    let user = binding.status.as_ref().and_then(|s| s.user_name.clone()).expect("userName");
    // What IAM's eventual consistency can look like right after a create: the user is not shown.
    let ops = bucket_broker::aws::iam::UserOps {
        client: env.admin.iam.clone(),
        stats: &env.admin.stats,
        user: &user,
    };
    ops.delete_all().await.expect("user removed behind the controller");
    let deleted = tokio::time::Instant::now();
    env.delete::<BucketBinding>("app").await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = env.api::<BucketBinding>().get("app").await.expect("still there: not taken as gone yet");
    let ready = waiting.status.as_ref().and_then(|s| find_condition(&s.conditions, "Ready")).expect("Ready");
    assert!(ready.message.contains("does not show the user"), "{}", ready.message);
    env.wait_gone::<BucketBinding>("app").await;
    let took = deleted.elapsed();
    assert!(took < window + Duration::from_secs(10), "bounded by the window: {took:?}");
}

/// An S3 endpoint in front of `upstream` that answers a bucket policy with a public statement as an account
/// whose Block Public Access forbids public policies does (403 AccessDenied), and forwards everything else.
/// moto has no account-level Block Public Access.
async fn blocking_public_policies(upstream: &str) -> String {
    let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(serve_blocking(client, upstream.clone()));
        }
    });
    url
}

/// One HTTP/1.1 message from `stream`: its head and its body (by Content-Length). `None` at the end.
pub(crate) async fn read_message(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
    has_body: impl Fn(&str) -> bool,
) -> Option<(String, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end + 4]).into_owned();
            let length = head
                .lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .filter(|_| has_body(&head))
                .unwrap_or(0);
            while buffer.len() < end + 4 + length {
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                buffer.extend_from_slice(&chunk[..n]);
            }
            let body = buffer[end + 4..end + 4 + length].to_vec();
            buffer.drain(..end + 4 + length);
            return Some((head, body));
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// One client connection of an HTTP front to `upstream` (`host:port`): a request `answer` has a response
/// for (a whole HTTP/1.1 response) is answered with it; any other is forwarded, and its response passed back.
pub(crate) async fn serve_front(
    mut client: tokio::net::TcpStream,
    upstream: String,
    answer: impl Fn(&str, &[u8]) -> Option<String>,
) {
    use tokio::io::AsyncWriteExt;
    let mut from_client = Vec::new();
    while let Some((head, body)) = read_message(&mut client, &mut from_client, |_| true).await {
        if let Some(response) = answer(&head, &body) {
            if client.write_all(response.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { return };
        if server.write_all(head.as_bytes()).await.is_err() || server.write_all(&body).await.is_err() {
            return;
        }
        let is_head = head.starts_with("HEAD ");
        let mut from_server = Vec::new();
        let Some((response, response_body)) = read_message(&mut server, &mut from_server, |h| {
            !is_head && !h.starts_with("HTTP/1.1 204") && !h.starts_with("HTTP/1.1 304")
        })
        .await
        else {
            return;
        };
        if client.write_all(response.as_bytes()).await.is_err()
            || client.write_all(&response_body).await.is_err()
        {
            return;
        }
    }
}

/// A 403 Forbidden response with an XML error document.
pub(crate) fn forbidden(content_type: &str, document: &str) -> String {
    format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{document}",
        document.len()
    )
}

async fn serve_blocking(client: tokio::net::TcpStream, upstream: String) {
    serve_front(client, upstream, |head, body| {
        let public_policy = head.starts_with("PUT ")
            && head.lines().next().is_some_and(|l| l.contains("?policy"))
            && String::from_utf8_lossy(body).contains("PublicReadObjects");
        public_policy.then(|| {
            forbidden(
                "application/xml",
                "<Error><Code>AccessDenied</Code><Message>Access Denied: public policies are blocked by the \
                 BlockPublicPolicy block public access setting.</Message></Error>",
            )
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_that_blocks_public_access_gets_a_private_bucket_and_a_clear_condition() {
    let mut env = TestEnv::new().await;
    let endpoint = blocking_public_policies(env.moto.endpoint_url()).await;
    let sdk = env.moto.sdk_config(env.moto.admin_credentials()).await;
    let aws = Aws::new(&sdk, env.admin.region.clone(), Some(endpoint));
    // With the TLS-only statement there is a private policy to write, which tells the account's block from
    // a permission the controller lacks.
    let ctx = env.start_controller_on(Settings { require_tls: true, ..env.settings() }, aws);
    env.create::<Bucket>(bucket("site", json!({"public": true}))).await;
    let blocked = env
        .wait_for::<Bucket>("site", "PublicAccessBlockedByAccount", |b| {
            ready_reason(b).as_deref() == Some("PublicAccessBlockedByAccount")
        })
        .await;
    let status = blocked.status.as_ref().expect("status");
    assert_eq!(status.public_url, None, "no URL that cannot work");
    let ready = find_condition(&status.conditions, "Ready").expect("Ready");
    assert!(
        ready.message.contains("Block Public Access") && ready.message.contains("spec.public"),
        "{}",
        ready.message
    );
    assert!(!ready.message.contains("IAM permissions"), "not blamed on the controller's permissions");
    assert!(find_condition(&status.conditions, "Stalled").is_some_and(|c| c.status == "True"));
    // Retried with backoff, it stays so: the next passes find the private policy in place and tell the
    // account's block from a missing permission all the same.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again = env.api::<Bucket>().get("site").await.expect("Bucket");
    assert_eq!(ready_reason(&again).as_deref(), Some("PublicAccessBlockedByAccount"));
    let puts: u64 = ctx
        .aws
        .stats
        .snapshot()
        .iter()
        .filter(|((_, op, _), _)| *op == "PutBucketPolicy")
        .map(|(_, n)| n)
        .sum();
    assert!(puts >= 4, "two passes at least, each a refused public policy and a private one: {puts}");
    let name = status.bucket_name.clone().expect("bucket name");
    let policy = env.admin.s3.get_bucket_policy().bucket(&name).send().await.expect("a policy");
    let policy = policy.policy.expect("text");
    assert!(
        policy.contains("DenyInsecureTransport") && !policy.contains("PublicReadObjects"),
        "private: {policy}"
    );

    // Made private, it is Ready.
    env.api::<Bucket>()
        .patch("site", &PatchParams::default(), &Patch::Merge(json!({"spec": {"public": false}})))
        .await
        .expect("patched");
    ready_bucket(&env, "site").await;
}

/// Conditions and events are redacted where they are made (the redaction itself is unit-tested): a
/// twelve-digit name a tenant writes into a status, echoed in the controller's event, comes out redacted.
#[tokio::test(flavor = "multi_thread")]
async fn what_tenants_read_goes_through_the_redaction() {
    let mut env = TestEnv::new().await;
    env.start_controller().await;
    env.create::<Bucket>(bucket("data", json!({}))).await;
    ready_bucket(&env, "data").await;
    // Forged while no controller runs, so that the next one's first pass reads it: with one running, a pass
    // under way can write the status back over the forgery before any pass reads it (no event then; seen
    // once on the real control plane, with other tests running).
    env.stop_controller().await;
    let api = env.api::<Bucket>();
    let forged = json!({"status": {"bucketName": ACCOUNT_ID}});
    api.patch_status("data", &PatchParams::default(), &Patch::Merge(forged)).await.expect("status forged");
    env.start_controller().await;
    let mut notes = Vec::new();
    crate::operations::until("the StatusIgnored event", async || {
        notes = env.event_notes("StatusIgnored").await;
        !notes.is_empty()
    })
    .await;
    assert!(notes.iter().all(|n| !n.contains(ACCOUNT_ID)), "{notes:?}");
    assert!(notes.iter().all(|n| n.contains("status.bucketName names <account>")), "{notes:?}");
}
