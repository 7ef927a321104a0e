//! Keyless BucketBindings (IRSA) against moto enforcing IAM: the role of the app's ServiceAccount, its trust
//! policy, one inline policy per binding, the ServiceAccount's annotation (never a foreign one), the role's
//! credentials at work through `AssumeRoleWithWebIdentity`, and no IAM user or access key, ever.
//!
//! On the real control plane the web identity token comes from the API server (TokenRequest, audience
//! `sts.amazonaws.com`); the in-memory server has no TokenRequest, so there a placeholder token is sent:
//! moto checks no web identity token against its provider either way, so the trust policy's content is
//! asserted as a document.

use std::time::Duration;

use bucket_broker::api::{
    Bucket, BucketBinding, BucketClass, BucketServiceKey, CredentialStatus, find_condition,
};
use bucket_broker::aws::Aws;
use bucket_broker::aws::iam::parse_document;
use bucket_broker::controller::{Context, Settings};
use bucket_broker::desired::keyless::{self, ROLE_ARN_ANNOTATION, Setup};
use bucket_broker::desired::policy;
use bucket_broker::local::moto::MotoOptions;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::account::{SentRequests, recorded_aws};
use crate::credentials::{can_get, can_put, credential, value};
use crate::harness::{TestEnv, on_real_cluster, unique_name};

/// The IAM OIDC provider of the test "cluster": moto stores no provider it is not told of, and checks none.
const PROVIDER: &str =
    "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-2.amazonaws.com/id/BUCKETBROKERTEST";

fn bucket(name: &str) -> Value {
    json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket", "metadata": {"name": name}, "spec": {}})
}

fn reason(status: Option<&CredentialStatus>) -> Option<(String, String)> {
    let ready = find_condition(&status?.conditions, "Ready")?;
    Some((ready.reason.clone(), ready.message.clone()))
}

async fn binding_with_reason(env: &TestEnv, name: &str, expected: &str) -> BucketBinding {
    env.wait_for::<BucketBinding>(name, expected, |b| {
        reason(b.status.as_ref()).is_some_and(|(r, _)| r == expected)
    })
    .await
}

async fn ready_bucket(env: &TestEnv, name: &str) -> String {
    let ready = env
        .wait_for::<Bucket>(name, "ready", |b| {
            b.status
                .as_ref()
                .is_some_and(|s| find_condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True"))
        })
        .await;
    ready.status.and_then(|s| s.bucket_name).expect("bucket name")
}

async fn service_account(env: &TestEnv, name: &str, annotations: Value) -> ServiceAccount {
    let account = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "annotations": annotations},
    }))
    .expect("ServiceAccount");
    env.api::<ServiceAccount>().create(&PostParams::default(), &account).await.expect("create ServiceAccount")
}

async fn annotation(env: &TestEnv, name: &str) -> Option<String> {
    let account = env.api::<ServiceAccount>().get(name).await.expect("ServiceAccount");
    account.metadata.annotations.and_then(|a| a.get(ROLE_ARN_ANNOTATION).cloned())
}

/// The controller, keyless through IRSA, with every S3 and IAM request it sends recorded.
async fn keyless_controller(
    env: &mut TestEnv,
    settings: impl FnOnce(Settings) -> Settings,
) -> (std::sync::Arc<Context>, SentRequests) {
    keyless_controller_with_eks(env, settings, None).await
}

/// [`keyless_controller`], its EKS calls sent to `eks` when given.
async fn keyless_controller_with_eks(
    env: &mut TestEnv,
    settings: impl FnOnce(Settings) -> Settings,
    eks: Option<&crate::eks::FakeEks>,
) -> (std::sync::Arc<Context>, SentRequests) {
    let (mut aws, sent) = recorded_aws(env).await;
    if let Some(eks) = eks {
        aws.eks = eks.client(&aws.eks);
    }
    // moto 5.2.5's GetBucketVersioning answer needs the tests' front (a class made by hand reads it).
    let front = crate::features::versioning_readable(env.moto.endpoint_url()).await;
    aws.s3 = aws_sdk_s3::Client::from_conf(aws.s3.config().to_builder().endpoint_url(&front).build());
    let base = Settings {
        keyless: Setup::irsa(PROVIDER),
        resync_interval: Duration::from_secs(1),
        ..env.settings()
    };
    (env.start_controller_on(settings(base), aws), sent)
}

/// A web identity token for `account`: the API server's own (TokenRequest) on a real cluster, a placeholder
/// in memory.
async fn web_identity_token(env: &TestEnv, account: &str) -> String {
    if !on_real_cluster("TokenRequest for a real web identity token") {
        return "in-memory-server-has-no-token-request".to_owned();
    }
    let request: k8s_openapi::api::authentication::v1::TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": [keyless::AUDIENCE], "expirationSeconds": 600},
    }))
    .expect("TokenRequest");
    let answer = env
        .api::<ServiceAccount>()
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("TokenRequest");
    let token = answer.status.and_then(|s| s.token).expect("a token");
    // The token names the ServiceAccount as the trust policy's condition expects it.
    let claims = token.split('.').nth(1).expect("a JWT");
    let claims = base64_url_decode(claims);
    let claims: Value = serde_json::from_slice(&claims).expect("JSON claims");
    assert_eq!(claims["sub"], format!("system:serviceaccount:{}:{account}", env.namespace));
    assert_eq!(claims["aud"], json!([keyless::AUDIENCE]));
    token
}

fn base64_url_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let bits: Vec<u8> = text.bytes().filter(|c| *c != b'=').map(value).collect();
    bits.chunks(4)
        .flat_map(|chunk| {
            let n = chunk.iter().fold(0u32, |n, v| (n << 6) | u32::from(*v)) << (6 * (4 - chunk.len()));
            let bytes = n.to_be_bytes();
            bytes[1..chunk.len()].to_vec()
        })
        .collect()
}

/// Calls moto's `AssumeRoleWithWebIdentity` and returns AWS clients with the role's credentials, or the
/// error code. The SDK sends this call unsigned, as AWS expects; a moto that enforces IAM authenticates
/// every request, so this one is signed with the administrator's key (which moto only checks, then ignores:
/// the credentials are the role's).
async fn assume(env: &TestEnv, role_arn: &str, token: &str) -> Result<Aws, String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    let endpoint = env.moto.endpoint_url();
    let host = endpoint.strip_prefix("http://").expect("an http:// endpoint");
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let body = format!(
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName=app&WebIdentityToken={}",
        encode(role_arn),
        encode(token)
    );
    let admin = env.moto.admin_credentials();
    let identity = admin.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(bucket_broker::local::moto::REGION)
        .name("sts")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .expect("signing parameters")
        .into();
    let headers = [("host", host), ("content-type", "application/x-www-form-urlencoded")];
    let signable = SignableRequest::new(
        "POST",
        format!("{endpoint}/"),
        headers.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .expect("signable");
    let (instructions, _) = sign(signable, &params).expect("signed").into_parts();
    let mut request =
        format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n");
    for (name, value) in instructions.headers() {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
    let (head, body) = crate::features::exchange(host, &request).await;
    let between = |open: &str, close: &str| {
        body.split_once(open).and_then(|(_, rest)| rest.split_once(close)).map(|(v, _)| v.to_owned())
    };
    if !head.contains(" 200 ") {
        return Err(between("<Code>", "</Code>")
            .unwrap_or_else(|| head.lines().next().unwrap_or_default().to_owned()));
    }
    let key = between("<AccessKeyId>", "</AccessKeyId>").expect("AccessKeyId");
    let secret = between("<SecretAccessKey>", "</SecretAccessKey>").expect("SecretAccessKey");
    let session = between("<SessionToken>", "</SessionToken>").expect("SessionToken");
    let credentials = aws_sdk_iam::config::Credentials::new(key, secret, Some(session), None, "web-identity");
    Ok(crate::harness::aws_for(&env.moto, credentials).await)
}

/// The IAM calls among `sent` that would make a user or an access key.
fn user_or_key_calls(sent: &SentRequests) -> Vec<String> {
    sent.take()
        .into_iter()
        .map(|(_, _, body)| body)
        .filter(|body| ["Action=CreateUser", "Action=CreateAccessKey"].iter().any(|a| body.contains(a)))
        .collect()
}

async fn role_policy(env: &TestEnv, role: &str, name: &str) -> Option<Value> {
    let got = env.admin.iam.get_role_policy().role_name(role).policy_name(name).send().await.ok()?;
    parse_document(&got.policy_document)
}

async fn role_exists(env: &TestEnv, role: &str) -> bool {
    env.admin.iam.get_role().role_name(role).send().await.is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyless_binding_gives_the_service_account_a_role_and_never_a_user_or_key() {
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    let (ctx, sent) = keyless_controller(&mut env, |s| s).await;
    env.create::<Bucket>(bucket("data")).await;
    env.create::<Bucket>(bucket("other")).await;
    let data = ready_bucket(&env, "data").await;
    let other = ready_bucket(&env, "other").await;

    // The binding comes first: it waits for its ServiceAccount, and goes on as soon as it exists.
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "app",
        json!({"bucketRef": {"name": "data"}, "serviceAccountName": "app"}),
    ))
    .await;
    let waiting = binding_with_reason(&env, "app", "ServiceAccountNotFound").await;
    let (_, message) = reason(waiting.status.as_ref()).expect("condition");
    assert!(message.contains("ServiceAccount app"), "{message}");
    let account = service_account(&env, "app", json!({})).await;
    let started = std::time::Instant::now();
    let ready = binding_with_reason(&env, "app", "Provisioned").await;
    eprintln!("ServiceAccount to Provisioned: {:?}", started.elapsed());
    let status = ready.status.clone().expect("status");
    let account_uid = account.metadata.uid.expect("uid");
    let role = keyless::role_arn("aws", "123456789012", "/bucket-broker/", &format!("bb-{account_uid}"));
    assert_eq!(status.role_arn.as_deref(), Some(role.as_str()));
    let role_name = status.role_name.clone().expect("role name");
    assert_eq!(
        role_name,
        format!("bb-{account_uid}"),
        "the role is the ServiceAccount's, named from its uid"
    );
    assert_eq!((status.user_name, status.access_key_id), (None, None));
    assert!(status.access_keys.is_empty());

    // The role: trusted by exactly this ServiceAccount through the OIDC provider, under the boundary of
    // the settings, tagged as the ServiceAccount's; the binding's policy is the keyed user's policy.
    let got = env.admin.iam.get_role().role_name(&role_name).send().await.expect("role").role.expect("role");
    assert_eq!(got.path, "/bucket-broker/");
    let trust = parse_document(got.assume_role_policy_document().expect("trust")).expect("JSON");
    let setup = Setup::irsa(PROVIDER).expect("setup");
    assert!(
        policy::equivalent(&trust, &keyless::trust_policy(&setup, "123456789012", &env.namespace, "app")),
        "{trust}"
    );
    let tags: Vec<(String, String)> =
        got.tags().iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect();
    for (key, value) in [
        ("bucketbroker.io/kind", "ServiceAccount"),
        ("bucketbroker.io/name", "app"),
        ("bucketbroker.io/uid", account_uid.as_str()),
    ] {
        assert!(tags.contains(&(key.to_owned(), value.to_owned())), "{key} in {tags:?}");
    }
    let uid = ready.metadata.uid.clone().expect("uid");
    let document =
        role_policy(&env, &role_name, &keyless::role_policy_name(&uid)).await.expect("the binding's policy");
    let bucket_arn = format!("arn:aws:s3:::{data}");
    let expected = policy::user_policy(
        &bucket_arn,
        "123456789012",
        Default::default(),
        false,
        &Default::default(),
        None,
    );
    assert!(policy::equivalent(&document, &expected), "{document}");
    assert_eq!(
        annotation(&env, "app").await.as_deref(),
        Some(role.as_str()),
        "the ServiceAccount names its role"
    );

    // The Secret: the seed's shape, the role instead of a key.
    let secret = env.api::<Secret>().get("app").await.expect("Secret");
    assert_eq!(value(&secret, "AWS_ROLE_ARN"), role);
    assert_eq!(value(&secret, "BUCKET_NAME"), data);
    let data_keys = secret.data.as_ref().expect("data");
    assert!(!data_keys.contains_key("AWS_ACCESS_KEY_ID") && !data_keys.contains_key("AWS_SECRET_ACCESS_KEY"));
    let vcap: Value = serde_json::from_str(&value(&secret, "VCAP_SERVICES")).expect("JSON");
    assert_eq!(vcap["aws-s3-bucket"][0]["credentials"]["role_arn"], json!(role));
    assert_eq!(vcap["aws-s3-bucket"][0]["credentials"]["bucket_name"], json!(data));

    // The app's pods: their token, exchanged for the role's credentials, reads and writes its bucket only.
    let token = web_identity_token(&env, "app").await;
    let app = assume(&env, &role, &token).await.expect("AssumeRoleWithWebIdentity");
    assert!(can_put(&app, &data, "a.txt").await, "the role writes its bucket");
    assert!(can_get(&app, &data, "a.txt").await, "and reads it");
    assert!(!can_put(&app, &other, "a.txt").await, "but no other bucket");

    // A second binding of the same ServiceAccount: the same role gains read-only access to the other bucket.
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "app-reports",
        json!({"bucketRef": {"name": "other"}, "serviceAccountName": "app", "permissions": "ReadOnly"}),
    ))
    .await;
    let second = binding_with_reason(&env, "app-reports", "Provisioned").await;
    assert_eq!(second.status.as_ref().and_then(|s| s.role_name.clone()), Some(role_name.clone()));
    env.admin
        .s3
        .put_object()
        .bucket(&other)
        .key("report.csv")
        .body(b"1,2".to_vec().into())
        .send()
        .await
        .expect("put");
    assert!(can_get(&app, &other, "report.csv").await, "read-only access to the other bucket");
    assert!(!can_put(&app, &other, "b.txt").await, "and no more");

    // Steady state: the resync (every second) reads and writes nothing.
    crate::classes::assert_steady(&ctx).await;

    // Removing one binding takes its policy off the role, which stays for the other.
    env.delete::<BucketBinding>("app-reports").await;
    env.wait_gone::<BucketBinding>("app-reports").await;
    let second_uid = second.metadata.uid.clone().expect("uid");
    assert_eq!(role_policy(&env, &role_name, &keyless::role_policy_name(&second_uid)).await, None);
    assert!(role_exists(&env, &role_name).await, "the role stays for the other binding");
    assert!(!can_get(&app, &other, "report.csv").await, "access to the other bucket is gone");
    assert!(can_get(&app, &data, "a.txt").await, "access to its own stays");
    assert_eq!(annotation(&env, "app").await.as_deref(), Some(role.as_str()));

    // The last binding takes the role and the annotation with it; the data stays.
    env.delete::<BucketBinding>("app").await;
    env.wait_gone::<BucketBinding>("app").await;
    assert!(!role_exists(&env, &role_name).await, "the role goes with the last binding");
    assert_eq!(annotation(&env, "app").await, None, "our annotation is removed");
    assert!(!can_get(&app, &data, "a.txt").await, "the role's credentials are refused after the deletion");
    // (moto 5.2.5 answers AssumeRoleWithWebIdentity even for a role that no longer exists, so that AWS
    // refusal cannot be shown here; the credentials it returns have no policy left, as above.)
    assert!(env.admin.s3.head_object().bucket(&data).key("a.txt").send().await.is_ok(), "the data stays");

    // Counted at the AWS endpoint: not one user, not one key.
    assert_eq!(user_or_key_calls(&sent), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_role_annotation_is_never_replaced_and_a_missing_setup_or_banned_keys_say_why() {
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    let class = unique_name("keyless-only");
    let made: BucketClass = serde_json::from_value(json!({
        "apiVersion": "bucketbroker.io/v1alpha1", "kind": "BucketClass",
        "metadata": {"name": class, "labels": {"bucketbroker.io/test": "true"}},
        "spec": {"requireKeyless": true},
    }))
    .expect("class");
    let classes = kube::Api::<BucketClass>::all(env.client.clone());
    classes.create(&PostParams::default(), &made).await.expect("create class");
    let (_ctx, sent) = keyless_controller(&mut env, |s| s).await;
    env.create::<Bucket>(bucket("data")).await;
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": "locked"}, "spec": {"className": class}}))
        .await;
    ready_bucket(&env, "data").await;
    ready_bucket(&env, "locked").await;

    // A ServiceAccount that already names another role: refused, nothing made, the annotation as it was.
    let foreign = "arn:aws:iam::123456789012:role/someone-elses";
    service_account(&env, "taken", json!({ROLE_ARN_ANNOTATION: foreign})).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "taken",
        json!({"bucketRef": {"name": "data"}, "serviceAccountName": "taken"}),
    ))
    .await;
    let refused = binding_with_reason(&env, "taken", "ServiceAccountConflict").await;
    let (_, message) = reason(refused.status.as_ref()).expect("condition");
    // The ARN itself is redacted for tenants, as every role ARN is.
    assert!(message.contains("did not make for it") && message.contains("left untouched"), "{message}");
    assert_eq!(annotation(&env, "taken").await.as_deref(), Some(foreign));
    assert!(refused.status.as_ref().is_some_and(|s| s.role_name.is_none()));
    let listed = env.admin.iam.list_roles().path_prefix("/bucket-broker/").send().await.expect("roles");
    assert!(listed.roles.is_empty(), "no role was made: {:?}", listed.roles);
    // Once the owner removes it, the binding converges (the ServiceAccount watch wakes it).
    let patch = json!({"metadata": {"annotations": {ROLE_ARN_ANNOTATION: null}}});
    env.api::<ServiceAccount>()
        .patch("taken", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let ready = binding_with_reason(&env, "taken", "Provisioned").await;
    let role = ready.status.and_then(|s| s.role_arn).expect("role");
    assert_eq!(annotation(&env, "taken").await, Some(role));

    // A class that requires keyless credentials refuses keys, for bindings and service keys alike.
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "keyed",
        json!({"bucketRef": {"name": "locked"}}),
    ))
    .await;
    let keyed = binding_with_reason(&env, "keyed", "KeysNotAllowed").await;
    let (_, message) = reason(keyed.status.as_ref()).expect("condition");
    assert!(message.contains(&class) && message.contains("serviceAccountName"), "{message}");
    env.create::<BucketServiceKey>(credential(
        "BucketServiceKey",
        "laptop",
        json!({"bucketRef": {"name": "locked"}}),
    ))
    .await;
    env.wait_for::<BucketServiceKey>("laptop", "KeysNotAllowed", |k| {
        reason(k.status.as_ref()).is_some_and(|(r, m)| r == "KeysNotAllowed" && m.contains("no keyless form"))
    })
    .await;
    // Outside that class, keys are still issued.
    env.create::<BucketBinding>(credential("BucketBinding", "plain", json!({"bucketRef": {"name": "data"}})))
        .await;
    binding_with_reason(&env, "plain", "Provisioned").await;
    let creates = user_or_key_calls(&sent);
    assert_eq!(
        creates.iter().filter(|c| c.contains("Action=CreateUser")).count(),
        1,
        "one user, for plain: {creates:?}"
    );
    classes.delete(&class, &Default::default()).await.expect("delete class");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_keyless_setup_a_service_account_binding_is_refused_and_required_keyless_bans_keys() {
    let mut env = TestEnv::new().await;
    // No --oidc-provider-arn, no --pod-identity-cluster-name; and no keys either (--keyless=required
    // cannot start without a setup: this only tests each refusal's message).
    let (_ctx, sent) =
        keyless_controller(&mut env, |s| Settings { keyless: None, keys_allowed: false, ..s }).await;
    env.create::<Bucket>(bucket("data")).await;
    ready_bucket(&env, "data").await;
    service_account(&env, "app", json!({})).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "keyless",
        json!({"bucketRef": {"name": "data"}, "serviceAccountName": "app"}),
    ))
    .await;
    let refused = binding_with_reason(&env, "keyless", "KeylessNotConfigured").await;
    let (_, message) = reason(refused.status.as_ref()).expect("condition");
    assert!(
        message.starts_with("spec.serviceAccountName") && message.contains("--oidc-provider-arn"),
        "{message}"
    );
    env.create::<BucketBinding>(credential("BucketBinding", "keyed", json!({"bucketRef": {"name": "data"}})))
        .await;
    let banned = binding_with_reason(&env, "keyed", "KeysNotAllowed").await;
    let (_, message) = reason(banned.status.as_ref()).expect("condition");
    assert!(message.contains("--keyless=required"), "{message}");
    // Both need a person: kstatus reads them as failed, not in progress.
    for binding in [&refused, &banned] {
        let conditions = &binding.status.as_ref().expect("status").conditions;
        assert!(find_condition(conditions, "Stalled").is_some_and(|c| c.status == "True"), "{conditions:?}");
    }
    assert_eq!(user_or_key_calls(&sent), Vec::<String>::new());
    assert!(annotation(&env, "app").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_schema_keeps_a_binding_keyed_or_keyless_for_life() {
    let env = TestEnv::new().await;
    env.create::<Bucket>(bucket("data")).await;
    let api = env.api::<BucketBinding>();
    let with_rotation: BucketBinding = serde_json::from_value(credential(
        "BucketBinding",
        "rotating",
        json!({"bucketRef": {"name": "data"}, "serviceAccountName": "app", "keyRotation": {"interval": "30d"}}),
    ))
    .expect("binding");
    let err = api.create(&PostParams::default(), &with_rotation).await.expect_err("refused");
    assert!(err.to_string().contains("a binding with serviceAccountName has none"), "{err}");
    env.create::<BucketBinding>(credential("BucketBinding", "keyed", json!({"bucketRef": {"name": "data"}})))
        .await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "keyless",
        json!({"bucketRef": {"name": "data"}, "serviceAccountName": "app"}),
    ))
    .await;
    for (name, patch) in [
        ("keyed", json!({"spec": {"serviceAccountName": "app"}})),
        ("keyless", json!({"spec": {"serviceAccountName": "other"}})),
        ("keyless", json!({"spec": {"serviceAccountName": null}})),
    ] {
        let err =
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect_err("immutable");
        assert!(err.to_string().contains("serviceAccountName is immutable"), "{name}: {err}");
    }
    let bad = credential(
        "BucketBinding",
        "bad",
        json!({"bucketRef": {"name": "data"}, "serviceAccountName": "Not_A_Name"}),
    );
    let bad: BucketBinding = serde_json::from_value(bad).expect("binding");
    if on_real_cluster("OpenAPI pattern validation") {
        let refused = api.create(&PostParams::default(), &bad).await;
        assert!(refused.is_err(), "a ServiceAccount name is a DNS subdomain");
    }
}

/// The EKS cluster of the Pod Identity tests, as the fake EKS endpoint serves it.
const EKS_CLUSTER: &str = "bucket-broker-test";

/// Keyless through EKS Pod Identity (against the tests' fake EKS endpoint, `eks.rs`: moto serves no Pod
/// Identity associations): the role trusts the Pod Identity agent for exactly this ServiceAccount, the
/// ServiceAccount gets one association with it (and no annotation), a foreign association is never
/// replaced, and the association goes with the role.
#[tokio::test(flavor = "multi_thread")]
async fn pod_identity_associates_the_service_account_with_its_role_and_never_takes_a_foreign_association() {
    let mut env = TestEnv::with(MotoOptions { enforce_iam: true }).await;
    let fake = crate::eks::FakeEks::start(EKS_CLUSTER).await;
    let setup = Setup::PodIdentity { cluster: EKS_CLUSTER.to_owned() };
    let pod_identity = |s| Settings { keyless: Some(setup.clone()), ..s };
    let (ctx, sent) = keyless_controller_with_eks(&mut env, pod_identity, Some(&fake)).await;
    env.create::<Bucket>(bucket("data")).await;
    env.create::<Bucket>(bucket("other")).await;
    let data = ready_bucket(&env, "data").await;
    let other = ready_bucket(&env, "other").await;

    let account = service_account(&env, "app", json!({})).await;
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "app",
        json!({"bucketRef": {"name": "data"}, "serviceAccountName": "app"}),
    ))
    .await;
    let ready = binding_with_reason(&env, "app", "Provisioned").await;
    let status = ready.status.clone().expect("status");
    let account_uid = account.metadata.uid.expect("uid");
    let role_name = format!("bb-{account_uid}");
    let role = keyless::role_arn("aws", "123456789012", "/bucket-broker/", &role_name);
    assert_eq!(status.role_arn.as_deref(), Some(role.as_str()));

    // The role trusts the Pod Identity agent, for this cluster, namespace and ServiceAccount alone.
    let got = env.admin.iam.get_role().role_name(&role_name).send().await.expect("role").role.expect("role");
    let trust = parse_document(got.assume_role_policy_document().expect("trust")).expect("JSON");
    assert!(
        policy::equivalent(&trust, &keyless::trust_policy(&setup, "123456789012", &env.namespace, "app")),
        "{trust}"
    );
    assert_eq!(trust["Statement"][0]["Principal"], json!({"Service": "pods.eks.amazonaws.com"}));
    // One association: this cluster, this ServiceAccount, this role, tagged as ours; no IRSA annotation.
    let associations = fake.associations();
    assert_eq!(associations.len(), 1, "{associations:?}");
    let association = &associations[0];
    assert_eq!(
        (association.cluster.as_str(), association.namespace.as_str(), association.service_account.as_str()),
        (EKS_CLUSTER, env.namespace.as_str(), "app")
    );
    assert_eq!(association.role_arn, role);
    assert_eq!(association.tags.get("bucketbroker.io/kind").map(String::as_str), Some("ServiceAccount"));
    assert_eq!(association.tags.get("bucketbroker.io/uid"), Some(&account_uid));
    assert_eq!(annotation(&env, "app").await, None, "Pod Identity needs no annotation");
    let secret = env.api::<Secret>().get("app").await.expect("Secret");
    assert_eq!(value(&secret, "AWS_ROLE_ARN"), role);

    // A session of the role, as the Pod Identity agent would hand the pods: moto 5.2.5 fails (HTTP 500) on
    // AssumeRole with this trust policy, and checks no trust on AssumeRoleWithWebIdentity, so the session
    // comes from the latter; what it proves is the role's policy.
    let app = assume(&env, &role, "pod-identity-session").await.expect("a session of the role");
    assert!(can_put(&app, &data, "a.txt").await, "the role writes its bucket");
    assert!(!can_put(&app, &other, "a.txt").await, "and no other");

    // A second binding of the ServiceAccount uses the same role and association; a resync writes nothing,
    // to EKS either.
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "app-reports",
        json!({"bucketRef": {"name": "other"}, "serviceAccountName": "app", "permissions": "ReadOnly"}),
    ))
    .await;
    binding_with_reason(&env, "app-reports", "Provisioned").await;
    assert_eq!(fake.associations().len(), 1);
    crate::classes::assert_steady(&ctx).await;
    assert_eq!(fake.requests("POST"), 1, "one CreatePodIdentityAssociation, no update");

    // A ServiceAccount someone else associated with another role: refused, nothing made, the association
    // as it was; once its owner deletes it, the binding converges.
    service_account(&env, "taken", json!({})).await;
    let foreign = "arn:aws:iam::123456789012:role/someone-elses";
    fake.associate(EKS_CLUSTER, &env.namespace, "taken", foreign);
    env.create::<BucketBinding>(credential(
        "BucketBinding",
        "taken",
        json!({"bucketRef": {"name": "data"}, "serviceAccountName": "taken"}),
    ))
    .await;
    let refused = binding_with_reason(&env, "taken", "ServiceAccountConflict").await;
    let (_, message) = reason(refused.status.as_ref()).expect("condition");
    assert!(
        message.contains("EKS Pod Identity association") && message.contains("left untouched"),
        "{message}"
    );
    let theirs: Vec<_> = fake.associations().into_iter().filter(|a| a.service_account == "taken").collect();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].role_arn, foreign, "a foreign association is never repointed");
    let roles = env.admin.iam.list_roles().path_prefix("/bucket-broker/").send().await.expect("roles");
    assert_eq!(roles.roles.len(), 1, "no role for the refused binding: {:?}", roles.roles);
    fake.dissociate(&theirs[0].id);
    let converged = binding_with_reason(&env, "taken", "Provisioned").await;
    let taken_role = converged.status.and_then(|s| s.role_arn).expect("role");
    assert!(fake.associations().iter().any(|a| a.service_account == "taken" && a.role_arn == taken_role));

    // One binding gone: the association stays for the other. The last one: the association and the role go.
    env.delete::<BucketBinding>("app-reports").await;
    env.wait_gone::<BucketBinding>("app-reports").await;
    assert!(fake.associations().iter().any(|a| a.service_account == "app"));
    env.delete::<BucketBinding>("app").await;
    env.wait_gone::<BucketBinding>("app").await;
    assert!(!fake.associations().iter().any(|a| a.service_account == "app"), "the association goes");
    assert!(!role_exists(&env, &role_name).await, "the role goes with the last binding");
    assert!(env.admin.s3.head_object().bucket(&data).key("a.txt").send().await.is_ok(), "the data stays");
    env.delete::<BucketBinding>("taken").await;
    env.wait_gone::<BucketBinding>("taken").await;
    assert!(fake.associations().is_empty(), "{:?}", fake.associations());
    assert_eq!(user_or_key_calls(&sent), Vec::<String>::new());
}

/// A keyless binding of a Bucket being deleted keeps what protects it: a downgrade reaches its policy on
/// the role; a new binding of that Bucket puts no policy on the role.
#[tokio::test(flavor = "multi_thread")]
async fn a_keyless_binding_of_a_deleting_bucket_is_downgraded_and_a_new_one_gets_nothing() {
    let mut env = TestEnv::new().await;
    let _controller = keyless_controller(&mut env, |s| s).await;
    env.create::<Bucket>(bucket("data")).await;
    let data = ready_bucket(&env, "data").await;
    service_account(&env, "app", json!({})).await;
    let app = env
        .create::<BucketBinding>(credential(
            "BucketBinding",
            "app",
            json!({"bucketRef": {"name": "data"}, "serviceAccountName": "app", "permissions": "ReadWrite"}),
        ))
        .await;
    let ready = binding_with_reason(&env, "app", "Provisioned").await;
    let role = ready.status.and_then(|s| s.role_name).expect("role");

    env.delete::<Bucket>("data").await;
    binding_with_reason(&env, "app", "BucketDeleting").await;
    env.api::<BucketBinding>()
        .patch("app", &PatchParams::default(), &Patch::Merge(json!({"spec": {"permissions": "ReadOnly"}})))
        .await
        .expect("downgrade");
    let read_only = policy::user_policy(
        &format!("arn:aws:s3:::{data}"),
        "123456789012",
        bucket_broker::api::Permissions::ReadOnly,
        false,
        &Default::default(),
        None,
    );
    let name = keyless::role_policy_name(app.metadata.uid.as_deref().expect("uid"));
    let deadline = tokio::time::Instant::now() + crate::harness::TIMEOUT;
    while !role_policy(&env, &role, &name).await.is_some_and(|d| policy::equivalent(&d, &read_only)) {
        assert!(tokio::time::Instant::now() < deadline, "the downgrade never reached the role");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let held = env.api::<BucketBinding>().get("app").await.expect("binding");
    assert_eq!(reason(held.status.as_ref()).map(|(r, _)| r).as_deref(), Some("BucketDeleting"));

    let late = env
        .create::<BucketBinding>(credential(
            "BucketBinding",
            "late",
            json!({"bucketRef": {"name": "data"}, "serviceAccountName": "app"}),
        ))
        .await;
    binding_with_reason(&env, "late", "BucketDeleting").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late_policy = keyless::role_policy_name(late.metadata.uid.as_deref().expect("uid"));
    assert!(role_policy(&env, &role, &late_policy).await.is_none(), "no policy for the new binding");
}
