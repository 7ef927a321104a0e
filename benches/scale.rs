//! Scale benchmark: how long N Buckets and N BucketBindings take to become Ready, what a steady-state resync
//! costs in AWS calls and Kubernetes writes, reconcile durations, and this process's memory.
//!
//! `cargo bench --bench scale` (N from `BENCH_OBJECTS`, default 50). It runs the real controllers against
//! moto (IAM enforced) and the in-memory API server in this process, so the memory figure includes both
//! the controller and the API server; the timings include moto's own speed, which dominates.

use std::time::{Duration, Instant};

use bucket_broker::api::{Bucket, BucketBinding, find_condition};
use bucket_broker::controller::{self, Context, Settings};
use bucket_broker::local::moto::{Moto, MotoOptions};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube_memory_apiserver::ApiServer;
use serde_json::json;

const NAMESPACE: &str = "bench";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(bench());
}

/// How many of `objects` have a True Ready condition.
fn count_ready<K>(
    objects: &[K],
    conditions: impl Fn(&K) -> Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
) -> usize {
    objects
        .iter()
        .filter(|o| {
            conditions(o).and_then(|c| find_condition(c, "Ready")).is_some_and(|c| c.status == "True")
        })
        .count()
}

fn memory_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

async fn bench() {
    let n: usize = std::env::var("BENCH_OBJECTS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let resync = Duration::from_secs(5);
    let moto = Moto::start(MotoOptions { enforce_iam: true }).await.expect("moto");
    let server = ApiServer::start().await.expect("api server");
    let client = server.client();
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in bucket_broker::api::crds() {
        let name = crd.metadata.name.clone().expect("name");
        crds.patch(&name, &PatchParams::apply("bench").force(), &Patch::Apply(&crd)).await.expect("crd");
    }
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).expect("ns");
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
    let rss_before = memory_kib("VmRSS:");

    let aws = moto.aws(moto.admin_credentials()).await;
    let settings = Settings {
        deploy_env: "bench".to_owned(),
        bucket_prefix: "bench-".to_owned(),
        user_prefix: "bench-".to_owned(),
        resync_interval: resync,
        ..bucket_broker::local::settings(NAMESPACE)
    };
    let ctx = Context::new(client.clone(), aws, settings);
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(controller::run_all(ctx.clone(), stopped));

    let buckets = Api::<Bucket>::namespaced(client.clone(), NAMESPACE);
    let bindings = Api::<BucketBinding>::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    for i in 0..n {
        let bucket: Bucket =
            serde_json::from_value(json!({"apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
            "metadata": {"name": format!("b{i}")}, "spec": {"public": i % 2 == 0}}))
            .expect("bucket");
        buckets.create(&PostParams::default(), &bucket).await.expect("create bucket");
        let binding: BucketBinding = serde_json::from_value(json!({"apiVersion": "bucketbroker.io/v1alpha1",
            "kind": "BucketBinding", "metadata": {"name": format!("a{i}")},
            "spec": {"bucketRef": {"name": format!("b{i}")}, "permissions": if i % 2 == 0 { "ReadWrite" } else { "ReadOnly" }}}))
        .expect("binding");
        bindings.create(&PostParams::default(), &binding).await.expect("create binding");
    }
    loop {
        let listed_buckets = buckets.list(&Default::default()).await.expect("list").items;
        let ready_buckets =
            count_ready(&listed_buckets, |b| b.status.as_ref().map(|s| s.conditions.as_slice()));
        let listed_bindings = bindings.list(&Default::default()).await.expect("list").items;
        let ready_bindings =
            count_ready(&listed_bindings, |b| b.status.as_ref().map(|s| s.conditions.as_slice()));
        if ready_buckets == n && ready_bindings == n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not converged: {ready_buckets} buckets, {ready_bindings} bindings"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let converged = started.elapsed();
    let calls_to_converge = ctx.aws.stats.total();
    let writes_to_converge = ctx.aws.stats.writes();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let (calls, writes) = (ctx.aws.stats.total(), ctx.aws.stats.writes());
    server.reset_stats();
    tokio::time::sleep(resync * 2).await;
    let resync_calls = ctx.aws.stats.total() - calls;
    let resync_writes = ctx.aws.stats.writes() - writes;
    let kube_writes = server.stats().writes();

    let metrics = ctx.metrics.render();
    let duration = |kind: &str, what: &str| -> f64 {
        let prefix = format!("bucket_broker_reconcile_duration_seconds_{what}{{kind=\"{kind}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok()).unwrap_or(0.0)
    };

    println!(
        "bucket-broker scale benchmark: {n} Buckets + {n} BucketBindings (moto with IAM enforced, in-memory API server)"
    );
    println!(
        "  converged (all Ready)           {:>8.2} s  ({:.1} objects/s)",
        converged.as_secs_f64(),
        (2 * n) as f64 / converged.as_secs_f64()
    );
    println!(
        "  AWS calls to converge           {calls_to_converge:>8}  ({writes_to_converge} writes, {:.1} calls per object)",
        calls_to_converge as f64 / (2 * n) as f64
    );
    println!(
        "  AWS calls over 2 resyncs        {resync_calls:>8}  ({:.1} per object per resync), writes: {resync_writes}",
        resync_calls as f64 / (4 * n) as f64
    );
    println!("  Kubernetes writes over 2 resyncs {kube_writes:>7}");
    for kind in ["Bucket", "BucketBinding"] {
        let (sum, count) = (duration(kind, "sum"), duration(kind, "count"));
        println!(
            "  {kind:<14} reconciles         {count:>8}  (mean {:.1} ms)",
            if count > 0.0 { sum / count * 1000.0 } else { 0.0 }
        );
    }
    println!("  RSS before controllers          {:>8} KiB", rss_before);
    println!(
        "  RSS now / peak                  {:>8} KiB / {} KiB",
        memory_kib("VmRSS:"),
        memory_kib("VmHWM:")
    );
}
