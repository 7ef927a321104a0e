//! Running in a cluster: the HTTP endpoints and leader election between two replicas.

use std::sync::Arc;
use std::time::Duration;

use bucket_broker::api::{Bucket, find_condition};
use bucket_broker::aws::Aws;
use bucket_broker::controller::{Context, Settings};
use bucket_broker::http;
use bucket_broker::leader::LeaseSettings;
use bucket_broker::local::moto::REGION;
use bucket_broker::run::{RunError, serve};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::harness::{TIMEOUT, TestEnv, aws_for, http_get};
use crate::proxy::{Hold, Proxy};

fn is_ready(b: &Bucket) -> bool {
    b.status
        .as_ref()
        .is_some_and(|s| find_condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True"))
}

async fn create_bucket(env: &TestEnv, name: &str) {
    env.create::<Bucket>(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
        "metadata": {"name": name}, "spec": {}}))
        .await;
}

pub(crate) async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics_endpoints() {
    let mut env = TestEnv::new().await;
    // Not started yet: alive, not ready.
    let idle = Context::new(env.controller_client.clone(), env.admin.clone(), env.settings());
    let (addr, server) =
        http::bind("127.0.0.1:0".parse().expect("addr"), idle.metrics.clone()).await.expect("bind");
    let idle_server = tokio::spawn(server);
    assert_eq!(http_get(&format!("http://{addr}/healthz")).await.0, 200);
    assert_eq!(http_get(&format!("http://{addr}/readyz")).await.0, 503, "not ready before the caches sync");
    assert_eq!(http_get(&format!("http://{addr}/nothing")).await.0, 404);
    idle_server.abort();

    let ctx = env.start_controller().await;
    let (addr, server) =
        http::bind("127.0.0.1:0".parse().expect("addr"), ctx.metrics.clone()).await.expect("bind");
    tokio::spawn(server);
    until("readiness", async || http_get(&format!("http://{addr}/readyz")).await.0 == 200).await;

    create_bucket(&env, "measured").await;
    env.wait_for::<Bucket>("measured", "ready", is_ready).await;
    let expected = [
        "bucket_broker_reconciles_total{kind=\"Bucket\",outcome=\"success\"}",
        "bucket_broker_reconcile_duration_seconds_count{kind=\"Bucket\"}",
        "bucket_broker_aws_calls_total{service=\"s3\",operation=\"CreateBucket\",outcome=\"success\"} 1",
        "bucket_broker_managed_objects{kind=\"Bucket\",ready=\"true\"} 1",
        "bucket_broker_managed_objects{kind=\"BucketBinding\",ready=\"true\"} 0",
    ];
    // The reconcile is counted after its status write, and the cache sees that write a moment later.
    until("the metrics of the reconcile", async || {
        let (status, text) = http_get(&format!("http://{addr}/metrics")).await;
        status == 200 && expected.iter().all(|e| text.contains(e))
    })
    .await;
    let (_, text) = http_get(&format!("http://{addr}/metrics")).await;
    assert!(!text.contains("measured"), "no object names in labels");
}

pub(crate) struct Replica {
    pub ctx: Arc<Context>,
    pub stop: watch::Sender<bool>,
    pub handle: JoinHandle<Result<(), RunError>>,
}

/// Short timings, so that the tests see takeovers in seconds.
pub(crate) fn lease(env: &TestEnv, identity: &str) -> LeaseSettings {
    LeaseSettings {
        name: "bucket-broker".to_owned(),
        namespace: env.namespace.clone(),
        identity: identity.to_owned(),
        duration: Duration::from_secs(4),
        renew_deadline: Duration::from_secs(3),
        retry: Duration::from_millis(300),
    }
}

async fn replica(env: &TestEnv, identity: &str) -> Replica {
    let aws = aws_for(&env.moto, env.moto.admin_credentials()).await;
    replica_on(env.controller_client.clone(), aws, env.settings(), lease(env, identity))
}

/// A replica running `serve` with the given clients, settings and Lease.
pub(crate) fn replica_on(client: Client, aws: Aws, settings: Settings, lease: LeaseSettings) -> Replica {
    let ctx = Context::new(client, aws, settings);
    let (stop, stopped) = watch::channel(false);
    let handle = tokio::spawn(serve(ctx.clone(), Some(lease), stopped));
    Replica { ctx, stop, handle }
}

pub(crate) async fn holder(env: &TestEnv) -> Option<String> {
    let lease = env.api::<Lease>().get_opt("bucket-broker").await.expect("get lease")?;
    lease.spec?.holder_identity
}

/// Someone else takes the Lease, as a replica that judged it expired would. A renew by the holder between
/// the read and the write is a conflict: read again and retry, as that replica would.
pub(crate) async fn steal_lease(env: &TestEnv, thief: &str) {
    for _ in 0..20 {
        let mut lease = env.api::<Lease>().get("bucket-broker").await.expect("lease");
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = Some(thief.to_owned());
            spec.lease_duration_seconds = Some(1);
        }
        match env.api::<Lease>().replace("bucket-broker", &Default::default(), &lease).await {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(err) => panic!("taking the Lease over: {err}"),
        }
    }
    panic!("the Lease could not be taken over in 20 tries: the holder renews in between every time");
}

/// AWS clients for moto that go through `proxy`.
pub(crate) async fn aws_through(env: &TestEnv, proxy: &Proxy) -> Aws {
    let sdk = env.moto.sdk_config(env.moto.admin_credentials()).await;
    Aws::new(&sdk, REGION.to_owned(), Some(proxy.url.clone()))
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let env = TestEnv::new().await;
    let a = replica(&env, "replica-a").await;
    until("replica-a to lead", async || holder(&env).await.as_deref() == Some("replica-a")).await;
    let b = replica(&env, "replica-b").await;

    create_bucket(&env, "first").await;
    env.wait_for::<Bucket>("first", "ready", is_ready).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(a.ctx.aws.stats.total() > 0, "the leader reconciles");
    assert_eq!(b.ctx.aws.stats.total(), 0, "the standby does nothing");
    assert!(b.ctx.metrics.is_ready(), "a standby is ready");
    assert!(a.ctx.aws.stats.fence().allows_writes(), "the leader's AWS writes are let through");
    assert!(!b.ctx.aws.stats.fence().allows_writes(), "a standby's are fenced off");

    a.stop.send(true).expect("stop a");
    a.handle.await.expect("a ends").expect("a released the Lease cleanly");
    until("replica-b to lead", async || holder(&env).await.as_deref() == Some("replica-b")).await;
    create_bucket(&env, "second").await;
    env.wait_for::<Bucket>("second", "ready", is_ready).await;
    assert!(b.ctx.aws.stats.writes() > 0, "the new leader reconciles");

    // Someone else takes the Lease: the leader stops reconciling and exits with an error.
    steal_lease(&env, "intruder").await;
    let ended = tokio::time::timeout(TIMEOUT, b.handle).await.expect("b stops").expect("b ends");
    assert!(matches!(ended, Err(RunError::LostLease)), "{ended:?}");
    drop(b.stop);
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_fails_clearly_when_the_crds_are_missing() {
    // Always the in-memory server: a real cluster under test has the CRDs installed.
    let server = kube_memory_apiserver::ApiServer::start().await.expect("api server");
    let err = bucket_broker::run::check_crds(&server.client(), None).await.expect_err("no CRDs yet");
    assert!(matches!(err, RunError::MissingCrd("buckets.bucketbroker.io")), "{err:?}");
    assert!(err.to_string().contains("kubectl apply -k crds/"), "says how to fix it: {err}");

    let crds = kube::Api::<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    >::all(server.client());
    for crd in bucket_broker::api::crds() {
        crds.create(&Default::default(), &crd).await.expect("crd installed");
    }
    bucket_broker::run::check_crds(&server.client(), None).await.expect("CRDs found");
    // With --namespace it lists only there (a namespaced install may list nothing cluster-wide).
    bucket_broker::run::check_crds(&server.client(), Some("team-a"))
        .await
        .expect("CRDs found in a namespace");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_cut_off_from_the_api_server_stops_before_its_lease_could_expire() {
    let env = TestEnv::new().await;
    let proxy = Proxy::start(&env.api_url()).await;
    let cut_off = env.controller_client_through(&proxy.url);
    let aws = aws_for(&env.moto, env.moto.admin_credentials()).await;
    let settings = lease(&env, "replica-a");
    let a = replica_on(cut_off, aws, env.settings(), settings.clone());
    until("replica-a to lead", async || holder(&env).await.as_deref() == Some("replica-a")).await;
    let b = replica(&env, "replica-b").await;

    // Every request of replica-a now hangs, its renews too: kube's client would wait forever.
    proxy.hold(Hold::Everything);
    let cut = tokio::time::Instant::now();
    let ended = tokio::time::timeout(TIMEOUT, a.handle).await.expect("a stops").expect("a ends");
    let took = cut.elapsed();
    assert!(matches!(ended, Err(RunError::LostLease)), "{ended:?}");
    // Its last renew was sent at most one retry before the cut, and a standby waits a whole lease after
    // seeing it: stopping within `duration - retry` of the cut is stopping before anyone may take over.
    assert!(took < settings.duration - settings.retry, "stopped {took:?} after the cut");
    assert!(took >= settings.renew_deadline - settings.retry, "not before the renew deadline: {took:?}");
    // Whatever of it might still run (a paused process resumed), its AWS writes are fenced off by then.
    assert!(!a.ctx.aws.stats.fence().allows_writes(), "no AWS write after the renew deadline");
    assert_eq!(holder(&env).await.as_deref(), Some("replica-a"), "nobody took over before a stopped");
    until("replica-b to take over", async || holder(&env).await.as_deref() == Some("replica-b")).await;
    drop(b.stop);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconcile_blocked_in_a_slow_aws_call_is_dropped_when_the_lease_is_stolen() {
    let env = TestEnv::new().await;
    let proxy = Proxy::start(env.moto.endpoint_url()).await;
    let settings = Settings { orphan_sweep_interval: Duration::ZERO, ..env.settings() };
    let a = replica_on(
        env.controller_client.clone(),
        aws_through(&env, &proxy).await,
        settings,
        lease(&env, "replica-a"),
    );
    until("replica-a to lead", async || holder(&env).await.as_deref() == Some("replica-a")).await;

    proxy.hold(Hold::Everything);
    create_bucket(&env, "slow").await;
    until("a reconcile inside an AWS call", async || proxy.held() > 0).await;
    let calls = a.ctx.aws.stats.snapshot();

    steal_lease(&env, "intruder").await;
    // Draining would wait for the AWS call, which never returns while it is held.
    let ended = tokio::time::timeout(Duration::from_secs(5), a.handle)
        .await
        .expect("the leader stops at once, without waiting for its reconcile")
        .expect("a ends");
    assert!(matches!(ended, Err(RunError::LostLease)), "{ended:?}");
    proxy.hold(Hold::Nothing);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(a.ctx.aws.stats.snapshot(), calls, "the dropped reconcile made no further AWS call");
    drop(a.stop);
}

/// The released binary, started as a Deployment would start it, with an environment of the test's choosing.
fn controller_process(env: &TestEnv, dir: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bucket-broker"));
    // Nothing from the test's own environment: no AWS credentials, no profile, no instance metadata.
    command
        .env_clear()
        .env("HOME", dir)
        // A real cluster's kubeconfig may run a credential plugin found on the PATH.
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBECONFIG", env.controller_kubeconfig(dir))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// A local port nothing listens on (yet).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread")]
async fn without_aws_credentials_the_process_is_not_ready_and_says_why() {
    let env = TestEnv::new().await;
    let dir = std::env::temp_dir().join(crate::harness::unique_name("bb-no-credentials"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let mut child = controller_process(&env, &dir)
        .args([
            "run",
            "--region=eu-west-2",
            "--permissions-boundary-arn=none",
            "--namespace",
            env.namespace.as_str(),
        ])
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--aws-endpoint-url", env.moto.endpoint_url()])
        .spawn()
        .expect("the controller starts");

    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let mut answer = (0, String::new());
    until("an answer from /readyz", async || {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            return false;
        }
        answer = http_get(&readyz).await;
        answer.1.contains("no AWS identity")
    })
    .await;
    let (status, body) = answer;
    assert_eq!(status, 503, "not ready without an AWS identity: {body}");
    assert!(
        body.starts_with("no AWS identity yet: sts GetCallerIdentity failed: no AWS credentials:"),
        "{body}"
    );
    assert_eq!(body.lines().count(), 1, "one line: {body}");
    // Running without a boundary was said explicitly, and is visible to whoever watches the metrics.
    let (_, metrics) = http_get(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert!(metrics.contains("bucket_broker_permissions_boundary{state=\"none\"} 1"), "{metrics}");
    assert!(metrics.contains("bucket_broker_permissions_boundary{state=\"set\"} 0"), "{metrics}");

    child.kill().expect("stop the controller");
    let output = child.wait_with_output().expect("the controller ends");
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(log.contains("--permissions-boundary-arn=none"), "a warning at start:\n{log}");
    assert!(
        log.contains(bucket_broker::run::NO_PLATFORM_NETWORK),
        "no platform network is said loudly at start:\n{log}"
    );
    assert!(log.contains("No AWS identity yet; not ready"), "the log says why:\n{log}");
    assert!(log.contains("no AWS credentials"), "{log}");
    assert!(!log.contains('\u{1b}'), "no colour codes when stdout is not a terminal:\n{log}");
    assert!(!log.contains("DispatchFailure"), "no debug dump:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_identity_is_resolved_before_the_controllers_start() {
    let env = TestEnv::new().await;
    let ctx = Context::new(env.controller_client.clone(), env.admin.clone(), env.settings());
    let (_stop, mut stopped) = watch::channel(false);
    let identity = bucket_broker::run::await_aws_identity(&ctx.aws, &ctx.metrics, &mut stopped)
        .await
        .expect("an identity");
    assert!(identity.arn.starts_with("arn:aws:"), "{identity:?}");
    assert_eq!(
        identity.account,
        bucket_broker::local::moto::ACCOUNT_ID,
        "the account, for ExpectedBucketOwner"
    );
    assert_eq!(ctx.metrics.not_ready_because().as_deref(), Some("caches not synced yet"));
}

#[test]
fn a_bad_environment_variable_is_named_at_start_up() {
    let dir = std::env::temp_dir().join(crate::harness::unique_name("bb-bad-env"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bucket-broker"))
        .env_clear()
        .env("HOME", &dir)
        .env("BUCKET_BROKER_RESYNC_INTERVAL", "10")
        .arg("run")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "invalid value '10' for 'BUCKET_BROKER_RESYNC_INTERVAL (environment variable for --resync-interval)'"
        ),
        "{stderr}"
    );
}

/// A configuration that cannot work stops the process before it touches anything, naming the flag.
#[test]
fn a_missing_boundary_or_an_oversized_policy_is_refused_at_start() {
    let dir = std::env::temp_dir().join(crate::harness::unique_name("bb-refused"));
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_bucket-broker"))
            .env_clear()
            .env("HOME", &dir)
            // Nothing to reach: the checks come before any connection.
            .env("KUBECONFIG", dir.join("absent"))
            .arg("run")
            .args(args)
            .output()
            .expect("the binary runs");
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (code, stderr) = run(&["--region=eu-west-2"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--permissions-boundary-arn is required"), "{stderr}");
    assert!(stderr.contains("deploy/aws/boundary-policy.json") && stderr.contains("=none"), "{stderr}");

    // 200 CIDRs do not fit in the 2,048 characters IAM allows a user's inline policies.
    let cidrs: Vec<String> = (0..200).map(|i| format!("10.{}.{}.0/24", i / 250, i % 250)).collect();
    let (code, stderr) =
        run(&["--permissions-boundary-arn=none", &format!("--platform-cidrs={}", cidrs.join(","))]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--platform-cidrs") && stderr.contains("2048"), "{stderr}");
}

/// Two controller processes with leader election, as two replicas of the Deployment: one leads, and when
/// it dies without a word (SIGKILL, no release) the other takes the Lease over once it expires.
#[tokio::test(flavor = "multi_thread")]
async fn two_controller_processes_contend_for_one_lease_and_the_survivor_takes_over() {
    let env = TestEnv::new().await;
    let dir = std::env::temp_dir().join(crate::harness::unique_name("bb-two-replicas"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let admin = env.moto.admin_credentials();
    let start = |name: &str| {
        let mut command = controller_process(&env, &dir);
        command
            .arg("run")
            .args(["--region", REGION, "--aws-endpoint-url", env.moto.endpoint_url()])
            .args(["--namespace", env.namespace.as_str(), "--require-tls=false", "--leader-election"])
            .args(["--orphan-sweep-interval", "0", "--permissions-boundary-arn=none"])
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{}", free_port()))
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", env.namespace.as_str())
            .env("AWS_ACCESS_KEY_ID", admin.access_key_id())
            .env("AWS_SECRET_ACCESS_KEY", admin.secret_access_key())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        KilledOnDrop(command.spawn().expect("the controller starts"))
    };
    let mut a = start("replica-a");
    until("a leader", async || holder(&env).await.is_some()).await;
    let mut b = start("replica-b");
    let first = holder(&env).await.expect("a holder");
    create_bucket(&env, "first").await;
    env.wait_for::<Bucket>("first", "ready", is_ready).await;

    let (leader, survivor_name) =
        if first == "replica-a" { (&mut a, "replica-b") } else { (&mut b, "replica-a") };
    leader.0.kill().expect("SIGKILL the leader");
    let _ = leader.0.wait();
    // client-go's timing: the survivor takes over within a lease (15 s) of the leader's last renew.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while holder(&env).await.as_deref() != Some(survivor_name) {
        assert!(tokio::time::Instant::now() < deadline, "{survivor_name} did not take the Lease over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    create_bucket(&env, "second").await;
    env.wait_for::<Bucket>("second", "ready", is_ready).await;
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child process that is killed when dropped, also when the test fails on the way.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
