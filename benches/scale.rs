//! Scale benchmark: the controller binary (`bucket-broker run`) as a process of its own, driven through the
//! Kubernetes API with N Buckets and N BucketBindings, measured from outside through its `/metrics`,
//! `/readyz` and `/proc`. See docs/benchmarks.md for what each figure means.
//!
//! `cargo bench --bench scale`: moto (IAM enforced) and the in-memory API server run in this process; the
//! controller runs in a child process. Environment:
//!
//! - `BENCH_OBJECTS` (default 500): N, the number of Buckets and of BucketBindings.
//! - `BENCH_RESYNC` (default `30s`): the controller's `--resync-interval` after the first run (the
//!   provisioning run uses `1h`, so that no resync falls into the figures to converge).
//! - `BENCH_PRELOAD=1`: memory mode. The objects are written straight into the API server, looking
//!   provisioned (finalizer, Ready status, the binding's Secret), then a controller starts on them.
//! - `BENCH_PRELOAD_WAIT` (default `60s`): how long the memory mode watches the controller after `/readyz`.
//! - `BENCH_NOISY=1`: the noisy neighbour. A namespace with 300 bindings stuck on `SecretConflict` and 300
//!   label changes a minute; how long a new Bucket and binding in another namespace take to be Ready, and
//!   what the noisy namespace costs in IAM calls and passes a minute (in-memory API server only).
//! - `BENCH_NOISY=burst`: a namespace creates 300 bindings at once (a backlog of about 2 minutes of IAM
//!   calls); how long a new Bucket and binding in another namespace take to be Ready meanwhile (in-memory
//!   API server only).
//! - `BUCKET_BROKER_TEST_KUBECONFIG`: use that cluster instead of the in-memory API server (in a fresh
//!   namespace, removed at the end); Kubernetes write counts are then not available.
//! - `BENCH_PROVISIONING_ONLY=1`: stop after the provisioning run (figures 1, 2 and its part of 6): for
//!   comparing the CPU to provision of builds quickly.
//! - `BENCH_FLOOR=1`: the floor. The libraries' own cost of one request, without the controller: a child
//!   process (this binary again) built like the controller sends `BENCH_FLOOR_CALLS` (default 1000) of
//!   each of a few AWS calls and Kubernetes writes one after another, and prints its CPU per request and
//!   what the provisioning run's mix of requests costs at that rate (in-memory API server only).
//! - `BENCH_CONTROLLER`: the controller binary to run instead of this build's (another commit's, to
//!   compare: its flags must match).
//! - Any `BUCKET_BROKER_*` variable the benchmark does not set (for example `BUCKET_BROKER_AWS_IAM_RATE`)
//!   reaches the controller, which reads it as its flag.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bucket_broker::api::{Bucket, BucketBinding, find_condition};
use bucket_broker::controller::credentials::MANAGED_BY;
use bucket_broker::desired::{names, rotation, secret};
use bucket_broker::local::moto::{self, Moto, MotoOptions};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use kube_memory_apiserver::ApiServer;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_bucket-broker");
const STATE_DIR: &str = env!("CARGO_TARGET_TMPDIR");
const KUBECONFIG_ENV: &str = "BUCKET_BROKER_TEST_KUBECONFIG";
const BUCKET: &str = "Bucket";
const BINDING: &str = "BucketBinding";
/// The resync of the provisioning run: longer than any run, so that every reconcile counted is provisioning.
const NO_RESYNC: &str = "1h";
/// The longest wait for anything (all Ready, a restart pass).
const TIMEOUT: Duration = Duration::from_secs(3600);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if var(FLOOR_CHILD).is_some() {
        // On a worker thread, as the controller's reconciles are.
        runtime.block_on(async { tokio::spawn(floor_child()).await }).expect("the floor's requests");
        return;
    }
    runtime.block_on(async {
        let env = Env::start().await;
        if var("BENCH_FLOOR").is_some_and(|v| v == "1") {
            floor_bench(&env).await;
            env.stop().await;
            return;
        }
        let n: usize = var("BENCH_OBJECTS").and_then(|v| v.parse().ok()).unwrap_or(500);
        if var("BENCH_NOISY").is_some_and(|v| v == "1") {
            noisy_bench(&env).await;
        } else if var("BENCH_NOISY").is_some_and(|v| v == "burst") {
            burst_bench(&env).await;
        } else if var("BENCH_PRELOAD").is_some_and(|v| v == "1") {
            preload_bench(&env, n).await;
        } else {
            provisioning_bench(&env, n).await;
        }
        env.stop().await;
    });
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Seconds from a `30s`/`10m`/`1h` duration, as the controller reads it.
fn seconds(text: &str) -> u64 {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: u64 = number.parse().expect("a duration such as 30s");
    number
        * match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            other => panic!("unknown duration unit {other:?}"),
        }
}

/// The controller's AWS rate limits: its defaults unless set in the environment it inherits.
fn rate_limits() -> String {
    let rate = |service: &str, default: &str| {
        let set = var(&format!("BUCKET_BROKER_AWS_{}_RATE", service.to_uppercase()));
        format!("{service} {}", set.unwrap_or_else(|| format!("{default} (default)")))
    };
    [rate("iam", "10"), rate("s3", "100"), rate("sts", "20")].join(", ")
}

fn progress(message: &str) {
    eprintln!("[bench] {message}");
}

// ---------------------------------------------------------------------------------------------------------
// The environment: moto, the Kubernetes API, a namespace.

struct Env {
    moto: Moto,
    /// The in-memory API server; `None` on a real cluster.
    server: Option<ApiServer>,
    client: Client,
    kubeconfig: PathBuf,
    namespace: String,
}

impl Env {
    async fn start() -> Env {
        let moto =
            Moto::start(MotoOptions { enforce_iam: true }).await.expect("moto (source scripts/moto-env)");
        std::fs::create_dir_all(STATE_DIR).expect("state dir");
        let (server, client, kubeconfig, namespace) = match var(KUBECONFIG_ENV) {
            Some(path) => {
                let config = Kubeconfig::read_from(&path).expect("readable kubeconfig");
                let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
                    .await
                    .expect("valid kubeconfig");
                let client = Client::try_from(config).expect("client");
                let suffix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis()
                    % 1_000_000;
                (None, client, PathBuf::from(path), format!("bench-{suffix}"))
            }
            None => {
                let server = ApiServer::start().await.expect("in-memory API server");
                let kubeconfig = Path::new(STATE_DIR).join("bench-kubeconfig");
                std::fs::write(&kubeconfig, kubeconfig_yaml(&server.url())).expect("kubeconfig");
                let client = server.client();
                (Some(server), client, kubeconfig, "bench".to_owned())
            }
        };
        install_crds(&client).await;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("ns");
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
        Env { moto, server, client, kubeconfig, namespace }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Kubernetes write requests since the last reset, by (verb, resource, subresource); `None` on a real
    /// cluster.
    fn writes(&self) -> Option<BTreeMap<String, u64>> {
        const WRITES: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];
        let stats = self.server.as_ref()?.stats();
        let mut writes = BTreeMap::new();
        for ((verb, resource, sub), n) in stats.counts {
            if WRITES.contains(&verb.as_str()) {
                let key = if sub.is_empty() {
                    format!("{verb} {resource}")
                } else {
                    format!("{verb} {resource}/{sub}")
                };
                *writes.entry(key).or_default() += n;
            }
        }
        Some(writes)
    }

    fn reset_writes(&self) {
        if let Some(server) = &self.server {
            server.reset_stats();
        }
    }

    /// Starts `bucket-broker run` against this environment's namespace, and waits until `/readyz` answers 200.
    async fn controller(&self, name: &str, resync: &str) -> Controller {
        self.controller_in(name, resync, Some(&self.namespace)).await
    }

    /// [`Env::controller`], watching `namespace`, or every namespace with `None`.
    async fn controller_in(&self, name: &str, resync: &str, namespace: Option<&str>) -> Controller {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log_path = Path::new(STATE_DIR).join(format!("bench-{name}.log"));
        let log = std::fs::File::create(&log_path).expect("controller log");
        let admin = self.moto.admin_credentials();
        let started = Instant::now();
        let child = Command::new(var("BENCH_CONTROLLER").unwrap_or_else(|| BINARY.to_owned()))
            .arg("run")
            .args(["--region", moto::REGION, "--aws-endpoint-url", self.moto.endpoint_url()])
            .args(namespace.map(|n| ["--namespace", n]).into_iter().flatten())
            .args(["--cluster-name", "bench", "--deploy-env", "bench"])
            .args(["--bucket-prefix", "bench-", "--user-prefix", "bench-", "--require-tls=false"])
            .args(["--resync-interval", resync, "--orphan-sweep-interval", "0"])
            // As the tests and the quickstart run it: moto holds no boundary policy to name.
            .arg("--permissions-boundary-arn=none")
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("AWS_ACCESS_KEY_ID", admin.access_key_id())
            .env("AWS_SECRET_ACCESS_KEY", admin.secret_access_key())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the controller binary");
        let pid = child.id().expect("pid");
        let controller = Controller { child, pid, addr: format!("127.0.0.1:{port}"), started, log: log_path };
        controller.await_ready().await;
        controller
    }

    async fn stop(self) {
        if self.server.is_none() {
            // A real cluster: nothing runs any more to remove the finalizers, so they go by hand.
            let remove = Patch::Merge(json!({"metadata": {"finalizers": null}}));
            let params = PatchParams::default();
            for bucket in self.api::<Bucket>().list(&ListParams::default()).await.expect("list").items {
                let _ = self.api::<Bucket>().patch(&bucket.name_any(), &params, &remove).await;
            }
            for binding in self.api::<BucketBinding>().list(&ListParams::default()).await.expect("list").items
            {
                let _ = self.api::<BucketBinding>().patch(&binding.name_any(), &params, &remove).await;
            }
            let _ = Api::<Namespace>::all(self.client.clone())
                .delete(&self.namespace, &DeleteParams::default())
                .await;
        }
        if let Some(server) = self.server {
            server.shutdown().await;
        }
        self.moto.stop().await;
    }
}

fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: {url}\n\
         contexts:\n- name: bench\n  context:\n    cluster: bench\n    user: bench\n\
         users:\n- name: bench\n  user: {{}}\ncurrent-context: bench\n"
    )
}

async fn install_crds(client: &Client) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in bucket_broker::api::crds() {
        let name = crd.metadata.name.clone().expect("name");
        api.patch(&name, &PatchParams::apply("bucket-broker-bench").force(), &Patch::Apply(&crd))
            .await
            .expect("crd");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let current = api.get(&name).await.expect("crd");
            let conditions = current.status.and_then(|s| s.conditions).unwrap_or_default();
            if conditions.iter().any(|c| c.type_ == "Established" && c.status == "True") {
                break;
            }
            assert!(Instant::now() < deadline, "CRD {name} not established");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The controller process, seen from outside.

struct Controller {
    child: Child,
    pid: u32,
    addr: String,
    started: Instant,
    log: PathBuf,
}

/// What `/proc` shows of a process.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    rss_kib: u64,
    hwm_kib: u64,
    /// User plus system CPU time.
    cpu: Duration,
}

impl Controller {
    /// Waits until `/readyz` answers 200; returns how long after the start that was.
    async fn await_ready(&self) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Some((200, _)) = http_get(&self.addr, "/readyz").await {
                return self.started.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "the controller never became ready; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn metrics(&self) -> Metrics {
        match http_get(&self.addr, "/metrics").await {
            Some((200, body)) => Metrics::parse(&body),
            other => panic!("cannot scrape the controller: {other:?}; see {}", self.log.display()),
        }
    }

    fn usage(&self) -> Usage {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Usage { rss_kib: field("VmRSS:"), hwm_kib: field("VmHWM:"), cpu: cpu_time(&self.pid.to_string()) }
    }

    /// SIGTERM, then waits for the exit; returns how long it took.
    async fn stop(mut self) -> Duration {
        let asked = Instant::now();
        let _ = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        if tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await.is_err() {
            progress("the controller did not exit within 60 s of SIGTERM: killed");
            let _ = self.child.kill().await;
        }
        asked.elapsed()
    }

    /// Waits until at least `n` passes of each of `kinds` are counted; returns when each kind got there,
    /// and the scrape when the last did.
    async fn await_reconciles(&self, kinds: &[&str], n: f64) -> (Vec<Duration>, Metrics) {
        let deadline = Instant::now() + TIMEOUT;
        let mut reached: Vec<Option<Duration>> = vec![None; kinds.len()];
        loop {
            let metrics = self.metrics().await;
            for (kind, at) in kinds.iter().zip(reached.iter_mut()) {
                if at.is_none() && metrics.passes(kind) >= n {
                    *at = Some(self.started.elapsed());
                }
            }
            if reached.iter().all(Option::is_some) {
                return (reached.into_iter().flatten().collect(), metrics);
            }
            assert!(Instant::now() < deadline, "only {} reconciles", metrics.reconciles(None));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until no pass has finished for `quiet` (at most `limit`); returns the last scrape.
    async fn await_quiet(&self, quiet: Duration, limit: Duration) -> Metrics {
        let deadline = Instant::now() + limit;
        let mut last = self.metrics().await;
        let mut since = Instant::now();
        while since.elapsed() < quiet && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.metrics().await;
            if now.passes(BUCKET) + now.passes(BINDING) != last.passes(BUCKET) + last.passes(BINDING) {
                since = Instant::now();
            }
            last = now;
        }
        last
    }
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// A plain HTTP/1.1 GET on 127.0.0.1: the status code and the body.
async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// One scrape of `/metrics`: every sample, by metric name and labels.
#[derive(Clone, Debug, Default)]
struct Metrics(Vec<(String, BTreeMap<String, String>, f64)>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split(',')
                        .filter_map(|pair| pair.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                        .collect();
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            samples.push((name.to_owned(), labels, value));
        }
        Metrics(samples)
    }

    /// The sum of `name`'s samples whose labels include all of `with`.
    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, labels, _)| {
                n == name && with.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum::<f64>()
            + 0.0 // An empty sum is -0.0.
    }

    fn reconciles(&self, kind: Option<&str>) -> f64 {
        match kind {
            Some(kind) => self.sum("bucket_broker_reconciles_total", &[("kind", kind)]),
            None => self.sum("bucket_broker_reconciles_total", &[]),
        }
    }

    /// Reconciles of `kind` with `outcome` (`success`, `error`: a pass ran; `settled`, `deferred`: none).
    fn outcome(&self, kind: &str, outcome: &str) -> f64 {
        self.sum("bucket_broker_reconciles_total", &[("kind", kind), ("outcome", outcome)])
    }

    /// Reconciles of `kind` that ran a pass (the others found nothing to do, or put a resync off).
    fn passes(&self, kind: &str) -> f64 {
        self.outcome(kind, "success") + self.outcome(kind, "error")
    }

    /// Every counter that went up from `before` to `self` (`self - before`, by series).
    fn since(&self, before: &Metrics) -> Metrics {
        let earlier = |name: &str, labels: &BTreeMap<String, String>| {
            before.0.iter().find(|(n, l, _)| n == name && l == labels).map_or(0.0, |(_, _, v)| *v)
        };
        Metrics(
            self.0
                .iter()
                .map(|(name, labels, v)| (name.clone(), labels.clone(), v - earlier(name, labels)))
                .filter(|(_, _, v)| *v != 0.0)
                .collect(),
        )
    }

    /// AWS calls by (service, operation): (all outcomes, failed ones).
    fn aws_calls(&self) -> BTreeMap<(String, String), (f64, f64)> {
        let mut calls: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
        for (name, labels, value) in &self.0 {
            if name != "bucket_broker_aws_calls_total" {
                continue;
            }
            let key = (
                labels.get("service").cloned().unwrap_or_default(),
                labels.get("operation").cloned().unwrap_or_default(),
            );
            let entry = calls.entry(key).or_default();
            entry.0 += value;
            if labels.get("outcome").is_some_and(|o| o != "success") {
                entry.1 += value;
            }
        }
        calls
    }

    /// AWS calls (reads, writes) in all.
    fn aws_reads_writes(&self) -> (f64, f64) {
        self.aws_calls().iter().fold((0.0, 0.0), |(r, w), ((_, op), (n, _))| {
            if bucket_broker::aws::is_write(op) { (r, w + n) } else { (r + n, w) }
        })
    }

    /// Samples of any family about skipped reconciles (none today; counted if the controller adds one).
    fn skipped(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(name, _, _)| name.contains("skip"))
            .map(|(name, labels, v)| format!("{name}{labels:?} {v}"))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Readiness, seen through watches: when each object was created and when it first showed Ready=True.

#[derive(Default)]
struct Readiness {
    created: HashMap<(&'static str, String), Instant>,
    ready: HashMap<(&'static str, String), Instant>,
}

type Tracker = Arc<Mutex<Readiness>>;

fn is_ready(conditions: Option<&[Condition]>) -> bool {
    conditions.and_then(|c| find_condition(c, "Ready")).is_some_and(|c| c.status == "True")
}

/// Watches both kinds and records the first time each object is Ready.
fn track(env: &Env) -> Tracker {
    let tracker = Tracker::default();
    let buckets = watcher::watcher(env.api::<Bucket>(), watcher::Config::default());
    let t = tracker.clone();
    tokio::spawn(buckets.try_for_each(move |event| {
        if let watcher::Event::Apply(b) | watcher::Event::InitApply(b) = event
            && is_ready(b.status.as_ref().map(|s| s.conditions.as_slice()))
        {
            t.lock().expect("tracker").ready.entry((BUCKET, b.name_any())).or_insert_with(Instant::now);
        }
        futures::future::ready(Ok(()))
    }));
    let bindings = watcher::watcher(env.api::<BucketBinding>(), watcher::Config::default());
    let t = tracker.clone();
    tokio::spawn(bindings.try_for_each(move |event| {
        if let watcher::Event::Apply(b) | watcher::Event::InitApply(b) = event
            && is_ready(b.status.as_ref().map(|s| s.conditions.as_slice()))
        {
            t.lock().expect("tracker").ready.entry((BINDING, b.name_any())).or_insert_with(Instant::now);
        }
        futures::future::ready(Ok(()))
    }));
    tracker
}

fn bucket(name: &str, public: bool) -> Bucket {
    serde_json::from_value(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": BUCKET,
        "metadata": {"name": name}, "spec": {"public": public}}))
    .expect("bucket")
}

fn binding(name: &str, bucket: &str, read_write: bool) -> BucketBinding {
    serde_json::from_value(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": BINDING,
        "metadata": {"name": name},
        "spec": {"bucketRef": {"name": bucket}, "permissions": if read_write { "ReadWrite" } else { "ReadOnly" }}}))
    .expect("binding")
}

/// Creates Bucket `b<i>` and BucketBinding `a<i>` (bound to it), recording when each was created.
async fn create_pair(env: &Env, tracker: &Tracker, bucket_name: &str, binding_name: &str, i: usize) {
    let params = PostParams::default();
    env.api::<Bucket>()
        .create(&params, &bucket(bucket_name, i.is_multiple_of(2)))
        .await
        .expect("create bucket");
    tracker.lock().expect("tracker").created.insert((BUCKET, bucket_name.to_owned()), Instant::now());
    env.api::<BucketBinding>()
        .create(&params, &binding(binding_name, bucket_name, i.is_multiple_of(2)))
        .await
        .expect("create binding");
    tracker.lock().expect("tracker").created.insert((BINDING, binding_name.to_owned()), Instant::now());
}

/// Waits until every one of `objects` is Ready; returns when the last became so, or `None` after `timeout`.
async fn await_ready(
    tracker: &Tracker,
    objects: &[(&'static str, String)],
    timeout: Duration,
) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        {
            let t = tracker.lock().expect("tracker");
            let done: Vec<Instant> = objects.iter().filter_map(|o| t.ready.get(o).copied()).collect();
            if done.len() == objects.len() {
                return done.into_iter().max();
            }
            if Instant::now() > deadline {
                progress(&format!(
                    "only {} of {} objects Ready after {timeout:?}",
                    done.len(),
                    objects.len()
                ));
                return None;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Apply-to-Ready of each object of `kind`, sorted.
fn latencies(tracker: &Tracker, kind: &str) -> Vec<Duration> {
    let t = tracker.lock().expect("tracker");
    let mut all: Vec<Duration> = t
        .created
        .iter()
        .filter(|((k, _), _)| *k == kind)
        .filter_map(|(key, created)| Some(t.ready.get(key)?.saturating_duration_since(*created)))
        .collect();
    all.sort();
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------------------------
// Report helpers.

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn usage_line(label: &str, u: Usage) -> String {
    format!(
        "  {label:<44} RSS {:>7.1} MiB   VmHWM {:>7.1} MiB   CPU {:>8.2} s",
        mib(u.rss_kib),
        mib(u.hwm_kib),
        u.cpu.as_secs_f64()
    )
}

/// One line per AWS operation: calls, and calls per `per` (with `unit`), failed calls if any.
fn aws_table(out: &mut Vec<String>, calls: &Metrics, per: &dyn Fn(&str) -> (f64, &'static str)) {
    for ((service, op), (n, failed)) in calls.aws_calls() {
        let (divisor, unit) = per(&service);
        let kind = if bucket_broker::aws::is_write(&op) { "write" } else { "read" };
        let failed = if failed > 0.0 { format!("  ({failed} failed)") } else { String::new() };
        out.push(format!(
            "    {service:<4} {op:<32} {kind:<5} {n:>8}  {:>6.2} per {unit}{failed}",
            if divisor > 0.0 { n / divisor } else { 0.0 }
        ));
    }
}

/// S3 calls per Bucket and IAM+STS calls per binding, from `calls` divided by (Buckets, bindings).
fn per_kind(calls: &Metrics, buckets: f64, bindings: f64) -> (f64, f64, f64) {
    let (mut s3, mut iam_sts, mut tagging) = (0.0, 0.0, 0.0);
    for ((service, op), (n, _)) in calls.aws_calls() {
        if op == "GetBucketTagging" {
            tagging += n;
        } else if service == "s3" {
            s3 += n;
        } else {
            iam_sts += n;
        }
    }
    let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    (div(s3, buckets), div(iam_sts, bindings), div(tagging, buckets + bindings))
}

fn writes_line(writes: &Option<BTreeMap<String, u64>>, per: f64, unit: &str) -> String {
    match writes {
        None => "  Kubernetes writes: not measured (a real cluster has no request counts)".to_owned(),
        Some(w) => {
            let total: u64 = w.values().sum();
            let detail: Vec<String> = w.iter().map(|(k, n)| format!("{k} {n}")).collect();
            format!(
                "  Kubernetes writes                 {total:>8}  ({:.2} per {unit}) [{}]",
                if per > 0.0 { total as f64 / per } else { 0.0 },
                detail.join(", ")
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The provisioning benchmark: figures 1 to 6.

async fn provisioning_bench(env: &Env, n: usize) {
    let resync = var("BENCH_RESYNC").unwrap_or_else(|| "30s".to_owned());
    let resync_s = seconds(&resync);
    let objects = (2 * n) as f64;
    let mut out = vec![format!(
        "bucket-broker scale benchmark: {n} Buckets + {n} BucketBindings; controller {BINARY} as a process; \
         moto (IAM enforced){}",
        if env.server.is_some() { ", in-memory API server" } else { ", a real cluster" }
    )];
    out.push(format!("AWS rate limits (calls/s): {}", rate_limits()));
    let tracker = track(env);

    // Provisioning run: resync 1h, so that every reconcile counted provisions.
    progress("starting the controller (provisioning run)");
    let first = env.controller("provisioning", NO_RESYNC).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = first.usage();
    let before = first.metrics().await;
    env.reset_writes();
    progress(&format!("creating {n} Buckets and {n} BucketBindings"));
    let started = Instant::now();
    for i in 0..n {
        create_pair(env, &tracker, &format!("b{i}"), &format!("a{i}"), i).await;
    }
    let created = started.elapsed();
    let all: Vec<(&'static str, String)> =
        (0..n).flat_map(|i| [(BUCKET, format!("b{i}")), (BINDING, format!("a{i}"))]).collect();
    progress(&format!("created in {:.1} s; waiting for all Ready", created.as_secs_f64()));
    let last_ready = await_ready(&tracker, &all, TIMEOUT).await.expect("all Ready");
    let converged = last_ready.saturating_duration_since(started);
    progress(&format!(
        "all Ready after {:.1} s; waiting for the controller to go quiet",
        converged.as_secs_f64()
    ));
    let after = first.await_quiet(Duration::from_secs(3), Duration::from_secs(60)).await;
    let converge_writes = env.writes().map(|mut w| {
        // The benchmark's own creates.
        w.remove("create buckets");
        w.remove("create bucketbindings");
        w
    });
    let converge = after.since(&before);
    let usage_converged = first.usage();

    // 1. Time to Ready.
    out.push("1. Provisioning (all applied at once, one Bucket then its binding)".to_owned());
    out.push(format!("  created {:>6} objects in             {:>8.2} s", 2 * n, created.as_secs_f64()));
    out.push(format!(
        "  all Ready after                   {:>8.2} s  ({:.1} objects/s)",
        converged.as_secs_f64(),
        objects / converged.as_secs_f64()
    ));
    for kind in [BUCKET, BINDING] {
        let l = latencies(&tracker, kind);
        out.push(format!(
            "  apply-to-Ready {kind:<14}     p50 {:>7.2} s   p95 {:>7.2} s   max {:>7.2} s",
            percentile(&l, 50.0).as_secs_f64(),
            percentile(&l, 95.0).as_secs_f64(),
            percentile(&l, 100.0).as_secs_f64()
        ));
    }

    // 2. Reconciles and AWS calls to converge.
    out.push(
        "2. To converge (from the first create until the controller is quiet; no resync in between)"
            .to_owned(),
    );
    for kind in [BUCKET, BINDING] {
        let total = converge.reconciles(Some(kind));
        let errors = converge.outcome(kind, "error");
        let (settled, deferred) = (converge.outcome(kind, "settled"), converge.outcome(kind, "deferred"));
        out.push(format!(
            "  reconciles {kind:<14}         {total:>8}  ({:.2} per object: {:.2} passes, {:.2} settled, {:.2} deferred; {errors} failed)",
            total / n as f64,
            converge.passes(kind) / n as f64,
            settled / n as f64,
            deferred / n as f64,
        ));
    }
    for skipped in converge.skipped() {
        out.push(format!("  skipped: {skipped}"));
    }
    let (reads, writes) = converge.aws_reads_writes();
    let (per_bucket, per_binding, tagging) = per_kind(&converge, n as f64, n as f64);
    out.push(format!(
        "  AWS calls                         {:>8}  ({:.2} per object; {reads} reads, {writes} writes)",
        reads + writes,
        (reads + writes) / objects
    ));
    out.push(format!(
        "  AWS calls per Bucket (S3)         {per_bucket:>8.2}   per BucketBinding (IAM+STS) {per_binding:.2}   \
         + S3 GetBucketTagging {tagging:.2} per object (read by both kinds)"
    ));
    aws_table(&mut out, &converge, &|service| {
        if service == "s3" { (n as f64, "Bucket") } else { (n as f64, "binding") }
    });
    out.push(writes_line(&converge_writes, objects, "object"));

    if var("BENCH_PROVISIONING_ONLY").is_some_and(|v| v == "1") {
        out.push("6. Controller process resources (from /proc)".to_owned());
        provisioning_usage(&mut out, idle, usage_converged, objects);
        first.stop().await;
        println!("\n{}", out.join("\n"));
        return;
    }

    // 5. Restart with N objects present; the new controller has the short resync.
    progress("restarting the controller with the short resync");
    let stopped = first.stop().await;
    let second = env.controller("steady", &resync).await;
    let readyz = second.started.elapsed();
    let (pass, pass_metrics) = second.await_reconciles(&[BUCKET, BINDING], n as f64).await;
    let restart_calls = pass_metrics.clone();
    let usage_restart = second.usage();
    progress(&format!("restart pass done after {:.1} s", pass[1].max(pass[0]).as_secs_f64()));

    // 3. Steady-state resync: a window of two resync intervals after the restart pass.
    let window = Duration::from_secs(2 * resync_s);
    progress(&format!("measuring steady state for {} s", window.as_secs()));
    let before = second.metrics().await;
    env.reset_writes();
    tokio::time::sleep(window).await;
    let steady = second.metrics().await.since(&before);
    let steady_writes = env.writes();
    let steady_buckets = steady.passes(BUCKET);
    let steady_bindings = steady.passes(BINDING);

    // 4. New work under resync load.
    let latency_timeout =
        Duration::from_secs(seconds(&var("BENCH_LATENCY_TIMEOUT").unwrap_or_else(|| "120s".to_owned())));
    let mut runs = Vec::new();
    for k in 0..3 {
        let (b, a) = (format!("late-b{k}"), format!("late-a{k}"));
        let start = Instant::now();
        create_pair(env, &tracker, &b, &a, k).await;
        let done = await_ready(&tracker, &[(BUCKET, b.clone()), (BINDING, a)], latency_timeout).await;
        let bucket_ready = tracker
            .lock()
            .expect("tracker")
            .ready
            .get(&(BUCKET, b))
            .map(|t| t.saturating_duration_since(start));
        runs.push((done.map(|d| d.saturating_duration_since(start)), bucket_ready));
        progress(&format!("new Bucket + binding {k}: {:?}", runs[k]));
        tokio::time::sleep(Duration::from_secs(resync_s / 3)).await;
    }
    let usage_end = second.usage();
    let objects_end = objects + 6.0;
    second.stop().await;

    out.push(format!(
        "3. Steady-state resync (resync {resync}; a window of {} s after the restart pass)",
        window.as_secs()
    ));
    out.push(format!(
        "  passes in the window              Bucket {steady_buckets} ({:.2} per Bucket), BucketBinding {steady_bindings} ({:.2} per binding)",
        steady_buckets / n as f64,
        steady_bindings / n as f64
    ));
    let period = |reconciles: f64| {
        if reconciles > 0.0 { window.as_secs_f64() * n as f64 / reconciles } else { f64::INFINITY }
    };
    out.push(format!(
        "  effective resync period           Bucket {:.0} s, BucketBinding {:.0} s (asked: {resync}, spread 0.75-1.25x)",
        period(steady_buckets),
        period(steady_bindings)
    ));
    for skipped in steady.skipped() {
        out.push(format!("  skipped: {skipped}"));
    }
    let (reads, writes) = steady.aws_reads_writes();
    out.push(format!(
        "  AWS calls in the window           {:>8}  ({reads} reads, {writes} writes)",
        reads + writes
    ));
    let (per_bucket, per_binding, tagging) = per_kind(&steady, steady_buckets, steady_bindings);
    out.push(format!(
        "  AWS calls per resync: Bucket (S3) {per_bucket:>8.2}   BucketBinding (IAM+STS) {per_binding:.2}   \
         + S3 GetBucketTagging {tagging:.2} per object resync"
    ));
    aws_table(&mut out, &steady, &|service| {
        if service == "s3" { (steady_buckets, "Bucket resync") } else { (steady_bindings, "binding resync") }
    });
    out.push(writes_line(&steady_writes, steady_buckets + steady_bindings, "object resync"));

    out.push(format!(
        "4. A new Bucket + BucketBinding under resync load ({n} + {n} objects, resync {resync})"
    ));
    let show = |d: Option<Duration>| match d {
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
        None => format!("not within {} s", latency_timeout.as_secs()),
    };
    out.push(format!(
        "  both Ready after                  {}",
        runs.iter().map(|(both, _)| show(*both)).collect::<Vec<_>>().join(", ")
    ));
    out.push(format!(
        "  the Bucket alone Ready after      {}",
        runs.iter().map(|(_, bucket)| show(*bucket)).collect::<Vec<_>>().join(", ")
    ));
    // A run that timed out counts as the timeout: the median is then a lower bound.
    let mut sorted: Vec<Duration> = runs.iter().map(|(both, _)| both.unwrap_or(latency_timeout)).collect();
    sorted.sort();
    out.push(format!(
        "  median (both)                     {:>8.2} s{}",
        sorted[sorted.len() / 2].as_secs_f64(),
        if runs.iter().any(|(both, _)| both.is_none()) { " (at least: a run timed out)" } else { "" }
    ));

    out.push(format!("5. Restart with {} objects present", 2 * n));
    out.push(format!("  old process exited after SIGTERM  {:>8.2} s", stopped.as_secs_f64()));
    out.push(format!("  new process /readyz 200 after     {:>8.2} s", readyz.as_secs_f64()));
    out.push(format!(
        "  {n} Bucket passes after            {:>8.2} s   {n} BucketBinding passes after {:.2} s (every object verified in AWS, as background work)",
        pass[0].as_secs_f64(),
        pass[1].as_secs_f64()
    ));
    let (reads, writes) = restart_calls.aws_reads_writes();
    out.push(format!(
        "  AWS calls until then              {:>8}  ({reads} reads, {writes} writes; {:.2} per object)",
        reads + writes,
        (reads + writes) / objects
    ));
    aws_table(&mut out, &restart_calls, &|service| {
        if service == "s3" { (n as f64, "Bucket") } else { (n as f64, "binding") }
    });

    out.push("6. Controller process resources (from /proc)".to_owned());
    provisioning_usage(&mut out, idle, usage_converged, objects);
    out.push(usage_line("restarted, after its pass over every object", usage_restart));
    out.push(usage_line(&format!("restarted, at the end ({objects_end} objects)"), usage_end));
    let steady_cpu = usage_end.cpu.saturating_sub(usage_restart.cpu);
    out.push(format!(
        "  CPU after the restart pass        {:>8.2} s  (steady state and the new pairs)",
        steady_cpu.as_secs_f64()
    ));
    println!("\n{}", out.join("\n"));
}

/// The provisioning run's lines of figure 6: idle, converged, RSS and CPU per object (`objects`: 2N).
fn provisioning_usage(out: &mut Vec<String>, idle: Usage, converged: Usage, objects: f64) {
    out.push(usage_line("provisioning run, idle (no objects)", idle));
    out.push(usage_line(&format!("provisioning run, converged ({objects} objects)"), converged));
    out.push(format!(
        "  RSS per object (converged - idle)  {:>7.2} KiB",
        (converged.rss_kib as f64 - idle.rss_kib as f64) / objects
    ));
    let cpu = converged.cpu.saturating_sub(idle.cpu);
    out.push(format!(
        "  CPU to provision                  {:>8.2} s  ({:.2} ms per provisioned object)",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 / objects
    ));
}

// ---------------------------------------------------------------------------------------------------------
// The memory benchmark: objects loaded as if provisioned, then a controller started on them.

async fn preload_bench(env: &Env, n: usize) {
    let resync = var("BENCH_RESYNC").unwrap_or_else(|| "30s".to_owned());
    let wait = seconds(&var("BENCH_PRELOAD_WAIT").unwrap_or_else(|| "60s".to_owned()));
    progress("starting a controller with no objects, for the idle figure");
    let idle_controller = env.controller("idle", &resync).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = idle_controller.usage();
    idle_controller.stop().await;

    progress(&format!("loading {n} Buckets, {n} BucketBindings and {n} Secrets as if provisioned"));
    let started = Instant::now();
    futures::stream::iter(0..n).map(|i| preload_pair(env, i)).buffer_unordered(16).collect::<Vec<()>>().await;
    let loaded = started.elapsed();
    progress(&format!("loaded in {:.1} s; starting the controller", loaded.as_secs_f64()));
    env.reset_writes();
    let controller = env.controller("preloaded", &resync).await;
    let readyz = controller.started.elapsed();
    let at_ready = controller.usage();
    let metrics_at_ready = controller.metrics().await;
    progress(&format!("ready after {:.1} s; watching for {wait} s", readyz.as_secs_f64()));
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let later = controller.usage();
    let calls = controller.metrics().await;
    let writes = env.writes();
    controller.stop().await;

    let objects = (2 * n) as f64;
    let mut out = vec![format!(
        "bucket-broker memory benchmark: {n} Buckets + {n} BucketBindings + {n} Secrets loaded as provisioned \
         (finalizer, Ready status, ~1.5 KB Secret){}",
        if env.server.is_some() { ", in-memory API server" } else { ", a real cluster" }
    )];
    out.push(format!("  AWS rate limits (calls/s): {}", rate_limits()));
    out.push(format!("  loaded in                         {:>8.2} s", loaded.as_secs_f64()));
    out.push(format!("  controller /readyz 200 after      {:>8.2} s (caches synced)", readyz.as_secs_f64()));
    out.push(usage_line("idle controller (no objects)", idle));
    out.push(usage_line("at /readyz (caches synced)", at_ready));
    out.push(usage_line(&format!("{wait} s later"), later));
    out.push(format!(
        "  RSS per object at /readyz (- idle) {:>7.2} KiB; {wait} s later {:.2} KiB (per Bucket or binding; Secrets not counted)",
        (at_ready.rss_kib as f64 - idle.rss_kib as f64) / objects,
        (later.rss_kib as f64 - idle.rss_kib as f64) / objects
    ));
    out.push(format!(
        "  reconciles by /readyz             Bucket {} ({} passes), BucketBinding {} ({} passes)",
        metrics_at_ready.reconciles(Some(BUCKET)),
        metrics_at_ready.passes(BUCKET),
        metrics_at_ready.reconciles(Some(BINDING)),
        metrics_at_ready.passes(BINDING)
    ));
    out.push(format!(
        "  reconciles after {wait} s             Bucket {} ({} passes), BucketBinding {} ({} passes) (errors {})",
        calls.reconciles(Some(BUCKET)),
        calls.passes(BUCKET),
        calls.reconciles(Some(BINDING)),
        calls.passes(BINDING),
        calls.sum("bucket_broker_reconciles_total", &[("outcome", "error")])
    ));
    let (reads, aws_writes) = calls.aws_reads_writes();
    out.push(format!(
        "  AWS calls in that time            {:>8}  ({reads} reads, {aws_writes} writes: these objects do not exist in moto, \
         so the controller provisions them at its rate limits)",
        reads + aws_writes
    ));
    aws_table(&mut out, &calls, &|service| {
        if service == "s3" { (n as f64, "Bucket") } else { (n as f64, "binding") }
    });
    out.push(writes_line(&writes, objects, "object"));
    println!("\n{}", out.join("\n"));
}

/// Bucket `b<i>` and BucketBinding `a<i>` as a converged controller leaves them, with the binding's Secret.
async fn preload_pair(env: &Env, i: usize) {
    let params = PostParams::default();
    let status = PatchParams::default();
    let region = moto::REGION;
    let endpoint = env.moto.endpoint_url();
    let (bucket_name, binding_name) = (format!("b{i}"), format!("a{i}"));
    let public = i.is_multiple_of(2);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let ready = |message: String| {
        json!([{"type": "Ready", "status": "True", "reason": "Provisioned", "message": message,
                "observedGeneration": 1, "lastTransitionTime": now}])
    };

    let mut b = bucket(&bucket_name, public);
    b.metadata.finalizers = Some(vec![bucket_broker::controller::bucket::FINALIZER.to_owned()]);
    let b = env.api::<Bucket>().create(&params, &b).await.expect("create bucket");
    let uid = b.metadata.uid.clone().expect("uid");
    let aws_bucket = names::bucket_name("bench-", &uid);
    let url = names::bucket_endpoint(&aws_bucket, region, Some(endpoint));
    let bucket_status = json!({"status": {
        "bucketName": aws_bucket, "region": region, "arn": names::bucket_arn("aws", &aws_bucket),
        "endpoint": url, "publicUrl": if public { Some(&url) } else { None },
        "observedGeneration": 1,
        "conditions": ready(format!("the bucket is {}, encrypted with SSE-S3", if public { "public-read" } else { "private" })),
    }});
    env.api::<Bucket>()
        .patch_status(&bucket_name, &status, &Patch::Merge(&bucket_status))
        .await
        .expect("bucket status");

    let mut a = binding(&binding_name, &bucket_name, public);
    a.metadata.finalizers = Some(vec!["bucketbindings.bucketbroker.io/finalizer".to_owned()]);
    let a = env.api::<BucketBinding>().create(&params, &a).await.expect("create binding");
    let binding_uid = a.metadata.uid.clone().expect("uid");
    let user = names::user_name("bench-", &binding_uid);
    // An access key id and secret shaped like AWS's (20 and 40 characters).
    let key_id = format!("AKIA{:016}", i);
    let secret_key = format!("{:040}", i).replace('0', "k");
    let credentials = secret::Credentials {
        grant: bucket_broker::desired::secret::Grant::Key { id: &key_id, secret: &secret_key },
        region,
        bucket_name: &aws_bucket,
        deploy_env: "bench",
        endpoint_url: Some(endpoint),
    };
    let data: BTreeMap<String, k8s_openapi::ByteString> = secret::binding_data(&bucket_name, &credentials)
        .into_iter()
        .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
        .collect();
    let owner = a.controller_owner_ref(&()).expect("owner reference");
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(binding_name.clone()),
            annotations: Some(BTreeMap::from([(rotation::KEY_ANNOTATION.to_owned(), key_id.clone())])),
            labels: Some(BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some(secret::BINDING_SECRET_TYPE.to_owned()),
        data: Some(data),
        ..Default::default()
    };
    env.api::<Secret>().create(&params, &secret).await.expect("create secret");
    let binding_status = json!({"status": {
        "binding": {"name": binding_name},
        "userName": user,
        "userArn": format!("arn:aws:iam::123456789012:user/bucket-broker/{user}"),
        "accessKeys": [{"id": key_id, "created": now, "state": "Active"}],
        "keyRotation": {"last": now},
        "accessKeyId": key_id,
        "observedGeneration": 1,
        "conditions": ready(format!("the credentials are in Secret {binding_name}")),
    }});
    env.api::<BucketBinding>()
        .patch_status(&binding_name, &status, &Patch::Merge(&binding_status))
        .await
        .expect("binding status");
}

// ---------------------------------------------------------------------------------------------------------
// The noisy neighbour: one tenant's stuck bindings and label churn against another tenant's new work.

/// How many bindings the noisy namespace holds, each stuck on a foreign Secret.
const NOISY_BINDINGS: usize = 300;
/// Label changes a minute on the noisy bindings.
const NOISY_CHURN_PER_MINUTE: u64 = 300;

async fn noisy_bench(env: &Env) {
    assert!(
        env.server.is_some(),
        "BENCH_NOISY runs on the in-memory API server (the controller watches every namespace)"
    );
    let noisy = "noisy";
    create_namespace(env, noisy).await;
    let controller = env.controller_in("noisy", "10m", None).await;
    let params = PostParams::default();
    let buckets = Api::<Bucket>::namespaced(env.client.clone(), noisy);
    let bindings = Api::<BucketBinding>::namespaced(env.client.clone(), noisy);
    let secrets = Api::<Secret>::namespaced(env.client.clone(), noisy);
    buckets.create(&params, &bucket("shared", false)).await.expect("noisy bucket");
    progress(&format!("noisy: {NOISY_BINDINGS} bindings, each in the way of a foreign Secret"));
    for i in 0..NOISY_BINDINGS {
        let foreign: Secret = serde_json::from_value(json!({"metadata": {"name": format!("taken-{i}")},
            "stringData": {"owner": "someone else"}}))
        .expect("secret");
        secrets.create(&params, &foreign).await.expect("foreign secret");
        let stuck: BucketBinding = serde_json::from_value(json!({"apiVersion": "bucketbroker.io/v1alpha1",
            "kind": BINDING, "metadata": {"name": format!("stuck-{i}")},
            "spec": {"bucketRef": {"name": "shared"}, "secretName": format!("taken-{i}")}}))
        .expect("binding");
        bindings.create(&params, &stuck).await.expect("noisy binding");
    }
    let conflicted = || async {
        let listed = bindings.list(&ListParams::default()).await.expect("list");
        listed
            .items
            .iter()
            .filter(|b| {
                b.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "SecretConflict")
                })
            })
            .count()
    };
    let started = Instant::now();
    while conflicted().await < NOISY_BINDINGS {
        assert!(started.elapsed() < TIMEOUT, "the noisy bindings never all reached SecretConflict");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    progress(&format!(
        "noisy: all in SecretConflict after {:.1} s; churning labels",
        started.elapsed().as_secs_f64()
    ));

    // Labels churned on the stuck bindings for the rest of the run.
    let churner = {
        let bindings = bindings.clone();
        tokio::spawn(async move {
            let every = Duration::from_millis(60_000 / NOISY_CHURN_PER_MINUTE);
            for round in 0u64.. {
                let name = format!("stuck-{}", round as usize % NOISY_BINDINGS);
                let patch = Patch::Merge(json!({"metadata": {"labels": {"churn": round.to_string()}}}));
                let _ = bindings.patch(&name, &PatchParams::default(), &patch).await;
                tokio::time::sleep(every).await;
            }
        })
    };

    // A minute of the noisy namespace alone: what it costs.
    let before = controller.metrics().await;
    let usage_before = controller.usage();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let minute = controller.metrics().await.since(&before);
    let cpu = controller.usage().cpu.saturating_sub(usage_before.cpu);
    let iam: f64 =
        minute.aws_calls().iter().filter(|((service, _), _)| service == "iam").map(|(_, (n, _))| n).sum();
    let (reads, writes) = minute.aws_reads_writes();

    // Then the quiet tenant's new work, three times.
    let mut times = Vec::new();
    for round in 0..3 {
        let took = new_pair_ready(env, &format!("quiet-{round}")).await;
        times.push(took);
        progress(&format!(
            "quiet pair {round}: Ready {:.2} s after its Bucket was created",
            took.as_secs_f64()
        ));
    }
    churner.abort();
    times.sort();
    let mut out = vec![
        format!(
            "noisy neighbour: {NOISY_BINDINGS} bindings in SecretConflict, {NOISY_CHURN_PER_MINUTE} label changes/min"
        ),
        format!(
            "  the noisy namespace alone, one minute: {} passes, {:.0} AWS calls ({:.0} IAM; {:.0} reads, {:.0} writes), CPU {:.2} s",
            minute.passes(BINDING) + minute.passes(BUCKET),
            reads + writes,
            iam,
            reads,
            writes,
            cpu.as_secs_f64()
        ),
        format!(
            "  a new Bucket and binding in another namespace, Bucket created to binding Ready: {} (median {:.2} s)",
            times.iter().map(|t| format!("{:.2} s", t.as_secs_f64())).collect::<Vec<_>>().join(", "),
            times[1].as_secs_f64()
        ),
    ];
    out.push(format!("  skipped reconciles in the minute: {}", minute.skipped().join(", ")));
    println!("{}", out.join("\n"));
    drop(controller);
}

/// Bindings a bursting namespace creates at once.
const BURST_BINDINGS: usize = 300;

async fn burst_bench(env: &Env) {
    assert!(
        env.server.is_some(),
        "BENCH_NOISY=burst runs on the in-memory API server (the controller watches every namespace)"
    );
    let noisy = "burst";
    create_namespace(env, noisy).await;
    let controller = env.controller_in("burst", "1h", None).await;
    let params = PostParams::default();
    let buckets = Api::<Bucket>::namespaced(env.client.clone(), noisy);
    let bindings = Api::<BucketBinding>::namespaced(env.client.clone(), noisy);
    buckets.create(&params, &bucket("shared", false)).await.expect("burst bucket");
    let started = Instant::now();
    loop {
        let b = buckets.get("shared").await.expect("bucket");
        if is_ready(b.status.as_ref().map(|s| s.conditions.as_slice())) {
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "the burst namespace's Bucket never became Ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress(&format!("burst: {BURST_BINDINGS} bindings of one Bucket, created at once"));
    let started = Instant::now();
    for i in 0..BURST_BINDINGS {
        bindings
            .create(&params, &binding(&format!("burst-{i}"), "shared", true))
            .await
            .expect("burst binding");
    }
    let ready_bursts = || async {
        let listed = bindings.list(&ListParams::default()).await.expect("list");
        listed.items.iter().filter(|b| is_ready(b.status.as_ref().map(|s| s.conditions.as_slice()))).count()
    };

    // The quiet tenant's new work, three times, while the burst is worked through.
    let mut times = Vec::new();
    let mut lines = Vec::new();
    for round in 0..3 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let waiting = controller.metrics().await.sum("bucket_broker_passes_waiting", &[("kind", BINDING)]);
        let ready_before = ready_bursts().await;
        let took = new_pair_ready(env, &format!("calm-{round}")).await;
        times.push(took);
        let ready_after = ready_bursts().await;
        let line = format!(
            "quiet pair {round}: Ready {:.2} s after its Bucket was created; {waiting} binding passes were waiting, \
             {ready_before} → {ready_after} of the {BURST_BINDINGS} burst bindings Ready meanwhile",
            took.as_secs_f64()
        );
        progress(&line);
        lines.push(format!("  {line}"));
    }
    let drained = Instant::now();
    while ready_bursts().await < BURST_BINDINGS {
        assert!(drained.elapsed() < TIMEOUT, "the burst never drained");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    times.sort();
    let mut out = vec![format!(
        "burst: {BURST_BINDINGS} bindings created at once in one namespace, all Ready {:.0} s after the first was created",
        started.elapsed().as_secs_f64()
    )];
    out.extend(lines);
    out.push(format!(
        "  a new Bucket and binding in another namespace, Bucket created to binding Ready: median {:.2} s",
        times[1].as_secs_f64()
    ));
    println!("{}", out.join("\n"));
    drop(controller);
}

/// Creates a namespace of the benchmark's own (the controller watches every namespace in these modes).
async fn create_namespace(env: &Env, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    Api::<Namespace>::all(env.client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
}

/// Creates a Bucket `name` and its binding `<name>-app` in the benchmark's namespace, and returns the time
/// from the Bucket's create to the binding's `Ready=True`.
async fn new_pair_ready(env: &Env, name: &str) -> Duration {
    let (buckets, bindings, params) =
        (env.api::<Bucket>(), env.api::<BucketBinding>(), PostParams::default());
    let app = format!("{name}-app");
    let created = Instant::now();
    buckets.create(&params, &bucket(name, false)).await.expect("new bucket");
    bindings.create(&params, &binding(&app, name, true)).await.expect("new binding");
    loop {
        let b = bindings.get(&app).await.expect("binding");
        if is_ready(b.status.as_ref().map(|s| s.conditions.as_slice())) {
            return created.elapsed();
        }
        assert!(created.elapsed() < Duration::from_secs(600), "the new binding never became Ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// The floor: what one request costs in the libraries the controller is built on, with nothing of ours.

/// Set in the child process of the floor benchmark: it sends the requests.
const FLOOR_CHILD: &str = "BENCH_FLOOR_CHILD";
/// The bucket, IAM user and Bucket the floor's requests are about.
const FLOOR_OBJECT: &str = "bench-floor";

/// Makes what the requests read and write, then runs this binary again as the child that sends them, with
/// the controller's environment (the same AWS credentials, the same kubeconfig), and prints its figures.
async fn floor_bench(env: &Env) {
    assert!(env.server.is_some(), "BENCH_FLOOR runs on the in-memory API server");
    let aws = env.moto.aws(env.moto.admin_credentials()).await;
    aws.s3
        .create_bucket()
        .bucket(FLOOR_OBJECT)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(moto::REGION))
                .build(),
        )
        .send()
        .await
        .expect("bucket");
    aws.iam.create_user().user_name(FLOOR_OBJECT).send().await.expect("user");
    env.api::<Bucket>().create(&PostParams::default(), &bucket(FLOOR_OBJECT, false)).await.expect("Bucket");
    let admin = env.moto.admin_credentials();
    let null = null_endpoint().await;
    let status = Command::new(std::env::current_exe().expect("this binary"))
        .env(FLOOR_CHILD, "1")
        .env("BENCH_FLOOR_NULL_ENDPOINT", &null)
        .env("BENCH_FLOOR_NAMESPACE", &env.namespace)
        .env("BENCH_FLOOR_ENDPOINT", env.moto.endpoint_url())
        .env("KUBECONFIG", &env.kubeconfig)
        .env("AWS_ACCESS_KEY_ID", admin.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", admin.secret_access_key())
        .env("AWS_REGION", moto::REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .status()
        .await
        .expect("the floor's child process");
    assert!(status.success(), "the floor's child process failed: {status}");
}

/// An HTTP/1.1 endpoint that keeps connections alive, as AWS does (moto closes each one), and answers every
/// request at once with the same S3 GetBucketTagging response: what is left of an AWS call's cost is the
/// client's alone. Returns its URL.
async fn null_endpoint() -> String {
    const BODY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Tagging><TagSet><Tag><Key>n</Key>\
                        <Value>1</Value></Tag></TagSet></Tagging>";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut stream = tokio::io::BufReader::new(stream);
                loop {
                    // The request's head, then as much body as it announces.
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(value) = lower.strip_prefix("content-length:") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{BODY}",
                        BODY.len()
                    );
                    if stream.get_mut().write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// The user plus system CPU time of process `pid` (a number, or `self`), from `/proc/<pid>/stat`.
fn cpu_time(pid: &str) -> Duration {
    // utime and stime are fields 14 and 15 of /proc/PID/stat, 12th and 13th after the `(comm)`.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<u64> = after_comm.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

/// Sends `calls` requests one after another with `send`; returns the CPU per request, after ten unmeasured
/// ones (connections, caches).
async fn per_request<F, Fut>(calls: usize, mut send: F) -> Duration
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..10 {
        send(i).await;
    }
    let before = cpu_time("self");
    for i in 10..10 + calls {
        send(i).await;
    }
    cpu_time("self").saturating_sub(before) / calls as u32
}

/// The child: AWS clients and a Kubernetes client built as `bucket-broker run` builds them (the default
/// credential chain, adaptive retries, the same timeouts; `Client::try_default`), the same Tokio runtime
/// (one worker per core), and nothing else running.
async fn floor_child() {
    let calls: usize = var("BENCH_FLOOR_CALLS").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let namespace = var("BENCH_FLOOR_NAMESPACE").expect("namespace");
    let endpoint = var("BENCH_FLOOR_ENDPOINT").expect("endpoint");
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(90))
        .build();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .retry_config(aws_config::retry::RetryConfig::adaptive())
        .timeout_config(timeouts)
        .load()
        .await;
    let aws = bucket_broker::aws::Aws::new(&sdk, moto::REGION.to_owned(), Some(endpoint));
    let null = var("BENCH_FLOOR_NULL_ENDPOINT").expect("null endpoint");
    let null = bucket_broker::aws::Aws::new(&sdk, moto::REGION.to_owned(), Some(null));
    let client = Client::try_default().await.expect("kubeconfig");

    let (s3, iam, null_s3) = (&aws.s3, &aws.iam, &null.s3);
    let null_read = per_request(calls, |_| async move {
        null_s3.get_bucket_tagging().bucket(FLOOR_OBJECT).send().await.expect("GetBucketTagging");
    })
    .await;
    let s3_read = per_request(calls, |_| async move {
        s3.get_bucket_tagging().bucket(FLOOR_OBJECT).send().await.ok();
    })
    .await;
    let iam_read = per_request(calls, |_| async move {
        iam.get_user().user_name(FLOOR_OBJECT).send().await.expect("GetUser");
    })
    .await;
    let s3_write = per_request(calls, |i| async move {
        let tag = aws_sdk_s3::types::Tag::builder().key("n").value(i.to_string()).build().expect("tag");
        let tagging = aws_sdk_s3::types::Tagging::builder().tag_set(tag).build().expect("tagging");
        s3.put_bucket_tagging().bucket(FLOOR_OBJECT).tagging(tagging).send().await.expect("PutBucketTagging");
    })
    .await;

    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &namespace);
    let (events, namespace) = (&events, namespace.as_str());
    let event_create = per_request(calls, |i| async move {
        let event: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
            "metadata": {"name": format!("{FLOOR_OBJECT}.{i}")},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "action": "Provision", "reason": "KeyIssued", "type": "Normal",
            "reportingController": "bucketbroker.io/bucket-broker", "reportingInstance": "bench",
            "note": "Issued access key AKIAEXAMPLEEXAMPLE01 to IAM user bench-0123456789abcdef.",
            "regarding": {"kind": "BucketBinding", "name": FLOOR_OBJECT, "namespace": namespace},
        }))
        .expect("event");
        events.create(&PostParams::default(), &event).await.expect("event");
    })
    .await;

    // A status write to a watched object, and its watch event received: what the controller's own
    // writes cost it, the echo included.
    let buckets: Api<Bucket> = Api::namespaced(client.clone(), namespace);
    let watch = watcher(buckets.clone(), watcher::Config::default()).boxed();
    let watch = &tokio::sync::Mutex::new(watch);
    let buckets = &buckets;
    let status_write = per_request(calls, |i| async move {
        let patch = json!({
            "apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
            "status": {"observedGeneration": 1, "conditions": [{
                "type": "Ready", "status": "False", "reason": "Provisioning", "observedGeneration": 1,
                "lastTransitionTime": "2026-01-01T00:00:00Z", "message": format!("Write {i} of the floor."),
            }]},
        });
        let params = PatchParams::apply("bucket-broker").force();
        let written =
            buckets.patch_status(FLOOR_OBJECT, &params, &Patch::Apply(&patch)).await.expect("status");
        let version = written.resource_version();
        let mut watch = watch.lock().await;
        while let Some(event) = watch.next().await {
            if let Ok(watcher::Event::Apply(b) | watcher::Event::InitApply(b)) = event
                && b.resource_version() == version
            {
                break;
            }
        }
    })
    .await;

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (aws_calls, writes) = (6.87, 5.5);
    let aws_mean = (s3_read + iam_read + s3_write).as_secs_f64() / 3.0;
    let write_mean = (event_create + status_write).as_secs_f64() / 2.0;
    println!(
        "bucket-broker floor benchmark: {calls} requests of each kind, one after another, from a process built \
         like the controller; moto (IAM enforced), in-memory API server"
    );
    println!("CPU per request (the whole process: user and system)");
    println!("  S3 GetBucketTagging                         {:>8.0} µs", us(s3_read));
    println!("  IAM GetUser                                 {:>8.0} µs", us(iam_read));
    println!("  S3 PutBucketTagging                         {:>8.0} µs", us(s3_write));
    println!(
        "  S3 GetBucketTagging, connection kept alive  {:>8.0} µs  (an endpoint that answers at once)",
        us(null_read)
    );
    println!("  Kubernetes create Event                     {:>8.0} µs", us(event_create));
    println!("  Kubernetes status apply + its watch event   {:>8.0} µs", us(status_write));
    println!(
        "The provisioning run's mix ({aws_calls} AWS calls and {writes} Kubernetes writes per object) at these \
         rates: {:.2} ms per provisioned object",
        (aws_calls * aws_mean + writes * write_mean) * 1000.0
    );
}
