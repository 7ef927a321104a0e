//! The AWS layer of the BucketClass settings against moto: versioning, lifecycle rules, CORS and SSE-KMS
//! default encryption. Each is applied, read back with the administrator's client, changed behind our back
//! (drift) and repaired by the next pass; a pass over a bucket already as desired makes no write.
//!
//! The `BucketOps` here are the controller's: they name our account as the expected bucket owner, and
//! every request is recorded to check that it carries it. Measured in moto 5.2.5 (see
//! `moto_ignores_the_expected_owner_so_it_is_checked_on_the_wire`): moto ignores `ExpectedBucketOwner` on
//! all of these calls, so the header is checked at the HTTP level, as in `account.rs`.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketVersioningStatus, CorsConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, NoncurrentVersionExpiration,
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule, VersioningConfiguration,
};
use bucket_broker::aws::CallStats;
use bucket_broker::aws::s3::{BucketOps, Change, CorsRule, Encryption, Lifecycle, Versioning};
use bucket_broker::local::moto::{ACCOUNT_ID, REGION};

use crate::account::{SentRequests, read_message};
use crate::harness::TestEnv;

/// One bucket, created by the administrator, and the controller's view of it: its operations with our
/// account as the expected owner, their own call counts, and every request recorded.
struct Fixture {
    env: TestEnv,
    bucket: String,
    client: aws_sdk_s3::Client,
    /// The administrator's client, through the same endpoint as `client`.
    admin: aws_sdk_s3::Client,
    stats: CallStats,
    sent: SentRequests,
}

impl Fixture {
    async fn new(bucket: &str) -> Fixture {
        Self::start(bucket, false).await
    }

    /// With both clients through [`versioning_readable`], for the tests that read versioning.
    async fn reading_versioning(bucket: &str) -> Fixture {
        Self::start(bucket, true).await
    }

    async fn start(bucket: &str, fix_versioning: bool) -> Fixture {
        let env = TestEnv::new().await;
        let sent = SentRequests::default();
        let mut config = env.admin.s3.config().to_builder();
        if fix_versioning {
            config = config.endpoint_url(versioning_readable(env.moto.endpoint_url()).await);
        }
        let admin = aws_sdk_s3::Client::from_conf(config.clone().build());
        let fixture = Fixture {
            bucket: bucket.to_owned(),
            client: aws_sdk_s3::Client::from_conf(config.interceptor(sent.clone()).build()),
            admin,
            stats: CallStats::default(),
            sent,
            env,
        };
        let admin = BucketOps {
            client: fixture.env.admin.s3.clone(),
            stats: &fixture.env.admin.stats,
            bucket,
            owner: None,
        };
        assert_eq!(admin.create(REGION).await.expect("bucket created"), Change::Created);
        fixture
    }

    fn ops(&self) -> BucketOps<'_> {
        BucketOps {
            client: self.client.clone(),
            stats: &self.stats,
            bucket: &self.bucket,
            owner: Some(ACCOUNT_ID),
        }
    }

    fn admin(&self) -> &aws_sdk_s3::Client {
        &self.admin
    }

    /// Every request since the last look named our account as the bucket's owner; how many there were.
    fn every_request_expected_our_account(&self) -> usize {
        let sent = self.sent.take();
        for (line, owner, _) in &sent {
            assert!(line.contains(&self.bucket), "{line}: a bucket-level request");
            assert_eq!(owner.as_deref(), Some(ACCOUNT_ID), "{line} names no expected owner");
        }
        sent.len()
    }
}

/// An endpoint in front of moto that forwards every request unchanged and corrects one thing in the
/// answers: moto 5.2.5 answers GetBucketVersioning with the root element `GetBucketVersioningResponse`
/// where S3 (and its API model) has `VersioningConfiguration`, which the Rust SDK refuses ("invalid XML
/// root"); boto3 does not check it. Only that element's name is rewritten: the status inside is moto's,
/// so what the versioning tests prove (what was written, read back and repaired) is unchanged.
pub(crate) async fn versioning_readable(upstream: &str) -> String {
    let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(forward_fixing_versioning(client, upstream.clone()));
        }
    });
    url
}

async fn forward_fixing_versioning(mut client: tokio::net::TcpStream, upstream: String) {
    use tokio::io::AsyncWriteExt;
    const MOTO_ROOT: &str = "GetBucketVersioningResponse";
    const S3_ROOT: &str = "VersioningConfiguration";
    let mut from_client = Vec::new();
    while let Some((head, body)) = read_message(&mut client, &mut from_client, |_| true).await {
        let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else { return };
        if server.write_all(head.as_bytes()).await.is_err() || server.write_all(&body).await.is_err() {
            return;
        }
        let is_head = head.starts_with("HEAD ");
        let reads_versioning =
            head.starts_with("GET ") && head.lines().next().is_some_and(|l| l.contains("?versioning"));
        let mut from_server = Vec::new();
        let Some((mut answer, mut answer_body)) = read_message(&mut server, &mut from_server, |h| {
            !is_head && !h.starts_with("HTTP/1.1 204") && !h.starts_with("HTTP/1.1 304")
        })
        .await
        else {
            return;
        };
        let text = String::from_utf8_lossy(&answer_body).into_owned();
        if reads_versioning && text.contains(&format!("<{MOTO_ROOT}")) {
            let fixed = text
                .replace(&format!("<{MOTO_ROOT}"), &format!("<{S3_ROOT}"))
                .replace(&format!("</{MOTO_ROOT}>"), &format!("</{S3_ROOT}>"));
            let lines: Vec<String> = answer
                .lines()
                .filter(|line| !line.is_empty())
                .map(|line| match line.split_once(':') {
                    Some((name, _)) if name.eq_ignore_ascii_case("content-length") => {
                        format!("{name}: {}", fixed.len())
                    }
                    _ => line.to_owned(),
                })
                .collect();
            answer = format!("{}\r\n\r\n", lines.join("\r\n"));
            answer_body = fixed.into_bytes();
        }
        if client.write_all(answer.as_bytes()).await.is_err() || client.write_all(&answer_body).await.is_err()
        {
            return;
        }
    }
}

fn code<E: ProvideErrorMetadata>(err: &E) -> Option<String> {
    err.code().map(str::to_owned)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn versioning_is_enabled_and_suspended_on_request_and_left_alone_otherwise() {
    let f = Fixture::reading_versioning("bb-features-versioning").await;
    let ops = f.ops();
    let status = || async {
        f.admin().get_bucket_versioning().bucket(&f.bucket).send().await.expect("versioning").status
    };

    // Not asked: no call at all, and a bucket never versioned stays so.
    assert_eq!(ops.ensure_versioning(None).await.expect("none"), Change::Unchanged);
    assert_eq!(f.stats.total(), 0, "no call when versioning is not asked for");
    // Suspended on a bucket never versioned: it already keeps no versions, so nothing is written.
    assert_eq!(
        ops.ensure_versioning(Some(Versioning::Suspended)).await.expect("suspended"),
        Change::Unchanged
    );
    assert_eq!(f.stats.writes(), 0);
    assert_eq!(status().await, None, "still never versioned");

    assert_eq!(ops.ensure_versioning(Some(Versioning::Enabled)).await.expect("enable"), Change::Updated);
    assert_eq!(status().await, Some(BucketVersioningStatus::Enabled));
    let writes = f.stats.writes();
    assert_eq!(ops.ensure_versioning(Some(Versioning::Enabled)).await.expect("again"), Change::Unchanged);
    assert_eq!(f.stats.writes(), writes, "a second pass makes no write");

    // Drift: someone suspends it; the next pass enables it again.
    f.admin()
        .put_bucket_versioning()
        .bucket(&f.bucket)
        .versioning_configuration(
            VersioningConfiguration::builder().status(BucketVersioningStatus::Suspended).build(),
        )
        .send()
        .await
        .expect("suspended behind our back");
    assert_eq!(ops.ensure_versioning(Some(Versioning::Enabled)).await.expect("repair"), Change::Updated);
    assert_eq!(status().await, Some(BucketVersioningStatus::Enabled));

    // Once enabled, versioning can only be suspended; and not asking any more leaves it as it is.
    assert_eq!(ops.ensure_versioning(Some(Versioning::Suspended)).await.expect("suspend"), Change::Updated);
    assert_eq!(status().await, Some(BucketVersioningStatus::Suspended));
    let calls = f.stats.total();
    assert_eq!(ops.ensure_versioning(None).await.expect("none"), Change::Unchanged);
    assert_eq!(f.stats.total(), calls);
    assert_eq!(status().await, Some(BucketVersioningStatus::Suspended));
    assert!(f.every_request_expected_our_account() >= 8);
}

/// A rule on `prefix` that expires objects after `days`: someone else's rule when its ID is not ours.
fn their_rule(id: &str, prefix: &str, days: i32) -> LifecycleRule {
    LifecycleRule::builder()
        .id(id)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
        .expiration(LifecycleExpiration::builder().days(days).build())
        .build()
        .expect("rule")
}

async fn put_lifecycle(f: &Fixture, rules: Vec<LifecycleRule>) {
    let configuration =
        BucketLifecycleConfiguration::builder().set_rules(Some(rules)).build().expect("rules");
    f.admin()
        .put_bucket_lifecycle_configuration()
        .bucket(&f.bucket)
        .lifecycle_configuration(configuration)
        .send()
        .await
        .expect("lifecycle written by the administrator");
}

/// The bucket's lifecycle rules as the administrator reads them, by ID; `None` when it has none.
async fn lifecycle(f: &Fixture) -> Option<Vec<LifecycleRule>> {
    match f.admin().get_bucket_lifecycle_configuration().bucket(&f.bucket).send().await {
        Ok(output) => {
            let mut rules = output.rules.unwrap_or_default();
            rules.sort_by(|a, b| a.id.cmp(&b.id));
            Some(rules)
        }
        Err(err) if code(&err).as_deref() == Some("NoSuchLifecycleConfiguration") => None,
        Err(err) => panic!("lifecycle: {err:?}"),
    }
}

fn ids(rules: &[LifecycleRule]) -> Vec<&str> {
    rules.iter().filter_map(|r| r.id.as_deref()).collect()
}

fn rule<'a>(rules: &'a [LifecycleRule], id: &str) -> &'a LifecycleRule {
    rules.iter().find(|r| r.id.as_deref() == Some(id)).unwrap_or_else(|| panic!("no rule {id}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_rules_are_ours_by_id_and_everyone_elses_are_kept_through_every_pass() {
    let f = Fixture::new("bb-features-lifecycle").await;
    let ops = f.ops();
    let logs = their_rule("archive-logs", "logs/", 30);
    put_lifecycle(&f, vec![logs.clone()]).await;

    let all = Lifecycle {
        noncurrent_version_expiration_days: Some(30),
        abort_incomplete_multipart_upload_days: Some(7),
        expire_objects_after_days: Some(365),
    };
    assert_eq!(ops.ensure_lifecycle(&all).await.expect("apply"), Change::Updated);
    let rules = lifecycle(&f).await.expect("rules");
    assert_eq!(
        ids(&rules),
        [
            "archive-logs",
            "bucket-broker-abort-incomplete-multipart-upload",
            "bucket-broker-expire-objects",
            "bucket-broker-noncurrent-version-expiration",
        ]
    );
    assert_eq!(rule(&rules, "archive-logs"), &logs, "their rule is kept as it was");
    let noncurrent = rule(&rules, "bucket-broker-noncurrent-version-expiration");
    assert_eq!(noncurrent.noncurrent_version_expiration.as_ref().and_then(|n| n.noncurrent_days), Some(30));
    assert_eq!(noncurrent.filter.as_ref().and_then(|f| f.prefix.as_deref()), Some(""), "the whole bucket");
    let abort = rule(&rules, "bucket-broker-abort-incomplete-multipart-upload");
    assert_eq!(
        abort.abort_incomplete_multipart_upload.as_ref().and_then(|a| a.days_after_initiation),
        Some(7)
    );
    let expire = rule(&rules, "bucket-broker-expire-objects");
    assert_eq!(expire.expiration.as_ref().and_then(|e| e.days), Some(365));
    assert!(rules.iter().all(|r| r.status == ExpirationStatus::Enabled));

    let writes = f.stats.writes();
    assert_eq!(ops.ensure_lifecycle(&all).await.expect("again"), Change::Unchanged);
    assert_eq!(f.stats.writes(), writes, "a second pass makes no write");

    // The same rules in another order mean the same: no write.
    let mut reversed = lifecycle(&f).await.expect("rules");
    reversed.reverse();
    put_lifecycle(&f, reversed).await;
    assert_eq!(ops.ensure_lifecycle(&all).await.expect("reordered"), Change::Unchanged);
    assert_eq!(f.stats.writes(), writes);

    // Drift: one of ours changed, one deleted, and another team adds a rule. Ours are repaired, both of
    // theirs stay.
    let tmp = their_rule("expire-tmp", "tmp/", 1);
    let changed = LifecycleRule::builder()
        .id("bucket-broker-noncurrent-version-expiration")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .noncurrent_version_expiration(NoncurrentVersionExpiration::builder().noncurrent_days(1).build())
        .build()
        .expect("rule");
    put_lifecycle(
        &f,
        vec![logs.clone(), changed, rule(&rules, "bucket-broker-expire-objects").clone(), tmp.clone()],
    )
    .await;
    assert_eq!(ops.ensure_lifecycle(&all).await.expect("repair"), Change::Updated);
    let repaired = lifecycle(&f).await.expect("rules");
    assert_eq!(repaired.len(), 5, "{repaired:?}");
    for id in ids(&rules) {
        assert_eq!(rule(&repaired, id), rule(&rules, id), "{id} is as we wrote it");
    }
    assert_eq!(rule(&repaired, "expire-tmp"), &tmp, "a rule added later is kept too");

    // Fewer settings: only our rules go.
    let expiry_only = Lifecycle { expire_objects_after_days: Some(90), ..Lifecycle::default() };
    assert_eq!(ops.ensure_lifecycle(&expiry_only).await.expect("fewer"), Change::Updated);
    let fewer = lifecycle(&f).await.expect("rules");
    assert_eq!(ids(&fewer), ["archive-logs", "bucket-broker-expire-objects", "expire-tmp"]);
    assert_eq!(
        rule(&fewer, "bucket-broker-expire-objects").expiration.as_ref().and_then(|e| e.days),
        Some(90)
    );

    // None of ours wanted: theirs stay, and the configuration with them.
    assert_eq!(ops.ensure_lifecycle(&Lifecycle::default()).await.expect("none of ours"), Change::Updated);
    assert_eq!(lifecycle(&f).await.as_deref(), Some(&[logs.clone(), tmp][..]));
    let writes = f.stats.writes();
    assert_eq!(ops.ensure_lifecycle(&Lifecycle::default()).await.expect("again"), Change::Unchanged);
    assert_eq!(f.stats.writes(), writes);

    // Only ours there and none wanted: the configuration is deleted, and an absent one stays absent.
    f.admin().delete_bucket_lifecycle().bucket(&f.bucket).send().await.expect("deleted");
    assert_eq!(ops.ensure_lifecycle(&expiry_only).await.expect("create"), Change::Created);
    assert_eq!(ids(&lifecycle(&f).await.expect("rules")), ["bucket-broker-expire-objects"]);
    assert_eq!(ops.ensure_lifecycle(&Lifecycle::default()).await.expect("delete"), Change::Deleted);
    assert_eq!(lifecycle(&f).await, None, "nothing left: no configuration");
    let writes = f.stats.writes();
    assert_eq!(ops.ensure_lifecycle(&Lifecycle::default()).await.expect("absent"), Change::Unchanged);
    assert_eq!(f.stats.writes(), writes);
    assert!(f.every_request_expected_our_account() >= 16);
}

async fn cors(f: &Fixture) -> Option<Vec<CorsRule>> {
    match f.admin().get_bucket_cors().bucket(&f.bucket).send().await {
        Ok(output) => Some(
            output
                .cors_rules
                .unwrap_or_default()
                .iter()
                .map(|r| CorsRule {
                    allowed_origins: r.allowed_origins.clone(),
                    allowed_methods: r.allowed_methods.clone(),
                    allowed_headers: r.allowed_headers.clone().unwrap_or_default(),
                    expose_headers: r.expose_headers.clone().unwrap_or_default(),
                    max_age_seconds: r.max_age_seconds,
                })
                .collect(),
        ),
        Err(err) if code(&err).as_deref() == Some("NoSuchCORSConfiguration") => None,
        Err(err) => panic!("cors: {err:?}"),
    }
}

async fn put_cors(f: &Fixture, rules: &[CorsRule]) {
    let rules = rules
        .iter()
        .map(|r| {
            aws_sdk_s3::types::CorsRule::builder()
                .set_allowed_origins(Some(r.allowed_origins.clone()))
                .set_allowed_methods(Some(r.allowed_methods.clone()))
                .set_allowed_headers(Some(r.allowed_headers.clone()).filter(|h| !h.is_empty()))
                .set_expose_headers(Some(r.expose_headers.clone()).filter(|h| !h.is_empty()))
                .set_max_age_seconds(r.max_age_seconds)
                .build()
                .expect("rule")
        })
        .collect();
    let configuration = CorsConfiguration::builder().set_cors_rules(Some(rules)).build().expect("cors");
    f.admin()
        .put_bucket_cors()
        .bucket(&f.bucket)
        .cors_configuration(configuration)
        .send()
        .await
        .expect("CORS written by the administrator");
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_is_the_tenants_whole_configuration_written_only_when_it_means_something_else() {
    let f = Fixture::new("bb-features-cors").await;
    let ops = f.ops();
    assert_eq!(ops.ensure_cors(&[]).await.expect("nothing"), Change::Unchanged);
    assert_eq!(f.stats.writes(), 0, "no CORS wanted, none there: no write");

    let app = CorsRule {
        allowed_origins: strings(&["https://app.example.com", "https://admin.example.com"]),
        allowed_methods: strings(&["GET", "PUT", "POST"]),
        allowed_headers: strings(&["*"]),
        expose_headers: strings(&["ETag"]),
        max_age_seconds: Some(3000),
    };
    let anyone_reads = CorsRule {
        allowed_origins: strings(&["*"]),
        allowed_methods: strings(&["GET"]),
        ..CorsRule::default()
    };
    let desired = vec![app.clone(), anyone_reads.clone()];
    assert_eq!(ops.ensure_cors(&desired).await.expect("apply"), Change::Created);
    assert_eq!(cors(&f).await.as_deref(), Some(&desired[..]), "read back as written");
    let writes = f.stats.writes();
    assert_eq!(ops.ensure_cors(&desired).await.expect("again"), Change::Unchanged);
    assert_eq!(f.stats.writes(), writes, "a second pass makes no write");

    // The same rules with their lists in another order mean the same: no write.
    let reordered = CorsRule {
        allowed_origins: strings(&["https://admin.example.com", "https://app.example.com"]),
        allowed_methods: strings(&["POST", "GET", "PUT"]),
        ..app.clone()
    };
    put_cors(&f, &[reordered, anyone_reads.clone()]).await;
    assert_eq!(ops.ensure_cors(&desired).await.expect("reordered"), Change::Unchanged);
    assert_eq!(f.stats.writes(), writes);

    // Drift: someone opens every method to every origin; the next pass writes the tenant's rules back.
    let wide = CorsRule {
        allowed_origins: strings(&["*"]),
        allowed_methods: strings(&["GET", "PUT", "POST", "DELETE"]),
        ..CorsRule::default()
    };
    put_cors(&f, &[wide]).await;
    assert_eq!(ops.ensure_cors(&desired).await.expect("repair"), Change::Updated);
    assert_eq!(cors(&f).await.as_deref(), Some(&desired[..]));

    // The order of the rules is meaningful (S3 applies the first that matches): swapped, they are written.
    let swapped = vec![anyone_reads, app];
    assert_eq!(ops.ensure_cors(&swapped).await.expect("swap"), Change::Updated);
    assert_eq!(cors(&f).await.as_deref(), Some(&swapped[..]));

    // No CORS wanted any more: the configuration is deleted.
    assert_eq!(ops.ensure_cors(&[]).await.expect("delete"), Change::Deleted);
    assert_eq!(cors(&f).await, None);
    let writes = f.stats.writes();
    assert_eq!(ops.ensure_cors(&[]).await.expect("absent"), Change::Unchanged);
    assert_eq!(f.stats.writes(), writes);
    assert!(f.every_request_expected_our_account() >= 12);
}

/// Creates a KMS key in moto and returns its ARN, without an AWS KMS client (the project has none).
///
/// moto serves KMS's JSON protocol on the same endpoint as everything else, and picks the service of a
/// request from the credential scope of its `Authorization` header. An unsigned request names no service,
/// and moto 5.2.5 routes it to S3, whatever its `X-Amz-Target` (it recognises only Cognito's targets
/// unsigned): so this request carries an `Authorization` header whose scope names `kms` and whose
/// signature is a placeholder. That is enough for a moto that does not enforce IAM (`TestEnv::new()`),
/// which checks no signature; with enforcement, this would need a real SigV4 signature.
pub(crate) async fn create_kms_key(endpoint: &str) -> String {
    let host = endpoint.strip_prefix("http://").expect("an http:// endpoint");
    let body = r#"{"Description":"bucket-broker test key","KeyUsage":"ENCRYPT_DECRYPT"}"#;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: TrentService.CreateKey\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=testing/20250101/{REGION}/kms/aws4_request, \
         SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (head, body) = exchange(host, &request).await;
    assert!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"), "{head}\n{body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("a JSON answer");
    created["KeyMetadata"]["Arn"].as_str().expect("the key's ARN").to_owned()
}

/// Sends one raw HTTP/1.1 `request` (with `Connection: close`) to `host` and returns the response's head
/// and body: for the requests moto needs that the SDK will not send as they must be.
pub(crate) async fn exchange(host: &str, request: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_owned(), body.to_owned())
}

/// The bucket's default encryption rules as the administrator reads them (none when it has none).
async fn encryption(f: &Fixture) -> Vec<ServerSideEncryptionRule> {
    match f.admin().get_bucket_encryption().bucket(&f.bucket).send().await {
        Ok(output) => output.server_side_encryption_configuration.map(|c| c.rules).unwrap_or_default(),
        Err(err) if code(&err).as_deref() == Some("ServerSideEncryptionConfigurationNotFoundError") => {
            Vec::new()
        }
        Err(err) => panic!("encryption: {err:?}"),
    }
}

/// (algorithm, key, Bucket Key) of the one rule; an absent Bucket Key setting is off.
fn the_rule(rules: &[ServerSideEncryptionRule]) -> (ServerSideEncryption, Option<String>, bool) {
    assert_eq!(rules.len(), 1, "{rules:?}");
    let by_default = rules[0].apply_server_side_encryption_by_default.as_ref().expect("a default");
    (
        by_default.sse_algorithm.clone(),
        by_default.kms_master_key_id.clone(),
        rules[0].bucket_key_enabled.unwrap_or(false),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_kms_uses_the_platform_key_is_repaired_and_sse_s3_stays_as_it_was() {
    let f = Fixture::new("bb-features-kms").await;
    let ops = f.ops();
    let key_arn = create_kms_key(f.env.moto.endpoint_url()).await;
    assert!(key_arn.starts_with(&format!("arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/")), "{key_arn}");
    let kms = Encryption::SseKms { key_arn: key_arn.clone(), bucket_key: true };

    // moto 5.2.5 gives a new bucket no default encryption (AWS has given every new bucket SSE-S3 since
    // January 2023), so this first pass writes; SSE-S3 is then as the Bucket controller always wrote it.
    assert_eq!(encryption(&f).await, Vec::new());
    assert_eq!(ops.ensure_encryption(&Encryption::SseS3).await.expect("SSE-S3"), Change::Updated);
    assert_eq!(the_rule(&encryption(&f).await), (ServerSideEncryption::Aes256, None, false));
    let writes = f.stats.writes();
    assert_eq!(ops.ensure_encryption(&Encryption::SseS3).await.expect("again"), Change::Unchanged);
    assert_eq!(f.stats.writes(), writes);

    // SSE-KMS with the platform's key and a Bucket Key; objects written then are encrypted with it.
    assert_eq!(ops.ensure_encryption(&kms).await.expect("SSE-KMS"), Change::Updated);
    assert_eq!(the_rule(&encryption(&f).await), (ServerSideEncryption::AwsKms, Some(key_arn.clone()), true));
    f.admin()
        .put_object()
        .bucket(&f.bucket)
        .key("report.csv")
        .body(ByteStream::from_static(b"a,b"))
        .send()
        .await
        .expect("put");
    let head = f.admin().head_object().bucket(&f.bucket).key("report.csv").send().await.expect("head");
    assert_eq!(head.server_side_encryption, Some(ServerSideEncryption::AwsKms));
    assert_eq!(head.ssekms_key_id.as_deref(), Some(key_arn.as_str()));
    let writes = f.stats.writes();
    assert_eq!(ops.ensure_encryption(&kms).await.expect("again"), Change::Unchanged);
    assert_eq!(f.stats.writes(), writes, "a second pass makes no write");

    // Drift: someone switches the bucket back to SSE-S3; the next pass restores the key.
    let aes = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::Aes256)
        .build()
        .expect("default");
    let configuration = ServerSideEncryptionConfiguration::builder()
        .rules(ServerSideEncryptionRule::builder().apply_server_side_encryption_by_default(aes).build())
        .build()
        .expect("configuration");
    f.admin()
        .put_bucket_encryption()
        .bucket(&f.bucket)
        .server_side_encryption_configuration(configuration)
        .send()
        .await
        .expect("switched behind our back");
    assert_eq!(ops.ensure_encryption(&kms).await.expect("repair"), Change::Updated);
    assert_eq!(the_rule(&encryption(&f).await), (ServerSideEncryption::AwsKms, Some(key_arn.clone()), true));

    // The Bucket Key setting is part of what is asked for.
    let without_bucket_key = Encryption::SseKms { key_arn: key_arn.clone(), bucket_key: false };
    assert_eq!(ops.ensure_encryption(&without_bucket_key).await.expect("no bucket key"), Change::Updated);
    assert_eq!(the_rule(&encryption(&f).await), (ServerSideEncryption::AwsKms, Some(key_arn.clone()), false));

    // Back to SSE-S3 (a class that drops its key): AES256 again.
    assert_eq!(ops.ensure_encryption(&Encryption::SseS3).await.expect("SSE-S3"), Change::Updated);
    assert_eq!(the_rule(&encryption(&f).await).0, ServerSideEncryption::Aes256);

    // A bucket this pass created is written without a read.
    let calls = f.stats.total();
    assert_eq!(ops.put_encryption(&kms).await.expect("put"), Change::Updated);
    assert_eq!(f.stats.total(), calls + 1, "one call: the write");
    assert_eq!(the_rule(&encryption(&f).await).1.as_deref(), Some(key_arn.as_str()));
    assert!(f.every_request_expected_our_account() >= 12);
}

/// What moto 5.2.5 does with `ExpectedBucketOwner` on these calls: it ignores it. AWS refuses a request
/// whose expected owner is not the bucket's (403 AccessDenied); moto answers it. The refusal is therefore
/// not testable here, and the tests above check the header on the wire instead. Should this start failing,
/// moto has learnt the check, and the refusal can be asserted instead.
#[tokio::test(flavor = "multi_thread")]
async fn moto_ignores_the_expected_owner_so_it_is_checked_on_the_wire() {
    let f = Fixture::reading_versioning("bb-features-owner").await;
    let stats = CallStats::default();
    let elsewhere =
        BucketOps { client: f.client.clone(), stats: &stats, bucket: &f.bucket, owner: Some("111111111111") };
    let rule = CorsRule {
        allowed_origins: strings(&["*"]),
        allowed_methods: strings(&["GET"]),
        ..CorsRule::default()
    };
    let lifecycle = Lifecycle { abort_incomplete_multipart_upload_days: Some(1), ..Lifecycle::default() };
    assert_eq!(elsewhere.ensure_versioning(Some(Versioning::Enabled)).await.ok(), Some(Change::Updated));
    assert_eq!(elsewhere.ensure_lifecycle(&lifecycle).await.ok(), Some(Change::Created));
    assert_eq!(elsewhere.ensure_lifecycle(&Lifecycle::default()).await.ok(), Some(Change::Deleted));
    assert_eq!(elsewhere.ensure_cors(&[rule]).await.ok(), Some(Change::Created));
    assert_eq!(elsewhere.ensure_cors(&[]).await.ok(), Some(Change::Deleted));
    assert_eq!(elsewhere.ensure_encryption(&Encryption::SseS3).await.ok(), Some(Change::Updated));
    let sent = f.sent.take();
    assert!(sent.len() >= 11, "{sent:?}");
    assert!(
        sent.iter().all(|(_, owner, _)| owner.as_deref() == Some("111111111111")),
        "the header was sent, and ignored: {sent:?}"
    );
}
