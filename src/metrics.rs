//! Prometheus metrics and readiness, through `prometheus-client`.
//!
//! Every label value is static (kinds, outcomes, reasons, AWS operation names) or a bounded readiness flag:
//! no object names, so cardinality stays bounded however many objects there are. Two families are read at
//! scrape time rather than counted twice: AWS calls (from the AWS layer's [`CallStats`]) and managed objects
//! (from the controllers' caches).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::aws::CallStats;

/// The `Content-Type` of [`Metrics::render`]: the Prometheus text format every scraper reads.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the reconcile duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The number of controllers whose caches must sync before the process is ready.
pub const CONTROLLERS: usize = 3;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AwsCallLabels {
    service: &'static str,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadinessLabels {
    kind: &'static str,
    ready: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

type DurationFamily = Family<KindLabels, Histogram, fn() -> Histogram>;

/// The controller's metrics and health.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<OutcomeLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    durations: DurationFamily,
    objects: Arc<ManagedObjects>,
    rotations: Family<OutcomeLabels, Counter>,
    key_ages: Arc<OldestKeys>,
    waiting: Arc<WaitingPasses>,
    swept: Family<KindLabels, Counter>,
    orphaned_buckets: Gauge,
    other_cluster_objects: Gauge,
    sweep_success: Family<KindLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    sweep_failures: Family<KindLabels, Counter>,
    boundary: Family<StateLabels, Gauge>,
    /// How many controllers have synced their caches.
    synced: AtomicUsize,
    /// Waiting for the leader Lease: nothing to sync, yet healthy.
    standby: AtomicBool,
    /// Why the controller has no AWS identity yet, while it has none (controllers start only after).
    aws_identity_error: Mutex<Option<String>>,
}

impl Metrics {
    /// The metrics of a process whose AWS calls are counted in `aws`.
    pub fn new(aws: CallStats) -> Arc<Self> {
        let mut registry = Registry::default();
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "bucket_broker_reconciles",
            "Reconciles by kind and outcome: success or error (a pass ran), settled or deferred (none ran)",
            reconciles.clone(),
        );
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "bucket_broker_reconcile_failures",
            "Failed reconciles by kind and reason",
            failures.clone(),
        );
        let durations: DurationFamily = Family::new_with_constructor(|| Histogram::new(BUCKETS));
        registry.register(
            "bucket_broker_reconcile_duration_seconds",
            "Reconcile duration by kind",
            durations.clone(),
        );
        registry.register_collector(Box::new(AwsCalls(aws)));
        let objects = Arc::new(ManagedObjects::default());
        registry.register_collector(Box::new(objects.clone()));
        let rotations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "bucket_broker_key_rotations",
            "Access key rotations by kind and outcome",
            rotations.clone(),
        );
        let key_ages = Arc::new(OldestKeys::default());
        registry.register_collector(Box::new(key_ages.clone()));
        let waiting = Arc::new(WaitingPasses::default());
        registry.register_collector(Box::new(waiting.clone()));
        let swept = Family::<KindLabels, Counter>::default();
        registry.register(
            "bucket_broker_orphans_swept",
            "AWS objects deleted by the orphan sweeper because their Kubernetes object is gone, by kind",
            swept.clone(),
        );
        let orphaned_buckets = Gauge::default();
        registry.register(
            "bucket_broker_orphaned_buckets",
            "Buckets whose Bucket object is gone, found by the last orphan sweep; kept, since they may hold data",
            orphaned_buckets.clone(),
        );
        let other_cluster_objects = Gauge::default();
        registry.register(
            "bucket_broker_other_cluster_objects",
            "Users and buckets made by this controller for another cluster (another kube-system uid) sharing the AWS account, found by the last orphan sweep; never touched",
            other_cluster_objects.clone(),
        );
        let sweep_success = Family::<KindLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "bucket_broker_orphan_sweep_last_success_timestamp_seconds",
            "When the orphan sweeper last finished a sweep of this kind (User, Bucket) without a listing error, in seconds since the Unix epoch",
            sweep_success.clone(),
        );
        let sweep_failures = Family::<KindLabels, Counter>::default();
        registry.register(
            "bucket_broker_orphan_sweep_failures",
            "Orphan sweeps of this kind (User, Bucket) that could not list what they judge",
            sweep_failures.clone(),
        );
        let boundary = Family::<StateLabels, Gauge>::default();
        registry.register(
            "bucket_broker_permissions_boundary",
            "1 for the state of --permissions-boundary-arn: set, or none (users are created without a boundary)",
            boundary.clone(),
        );
        Arc::new(Metrics {
            registry,
            other_cluster_objects,
            sweep_success,
            sweep_failures,
            boundary,
            reconciles,
            failures,
            durations,
            objects,
            rotations,
            key_ages,
            waiting,
            swept,
            orphaned_buckets,
            synced: AtomicUsize::new(0),
            standby: AtomicBool::new(false),
            aws_identity_error: Mutex::new(None),
        })
    }

    /// Records one reconcile of `kind`: `outcome` is `success` or `error`.
    pub fn reconciled(&self, kind: &'static str, outcome: &'static str, took: Duration) {
        self.reconciles.get_or_create(&OutcomeLabels { kind, outcome }).inc();
        self.durations.get_or_create(&KindLabels { kind }).observe(took.as_secs_f64());
    }

    /// Records a reconcile that ran no pass: `settled` (nothing changed and not due) or `deferred` (a
    /// background pass put off while the background slots are busy).
    pub fn skipped(&self, kind: &'static str, outcome: &'static str) {
        self.reconciles.get_or_create(&OutcomeLabels { kind, outcome }).inc();
    }

    /// Records a failed reconcile with its static reason.
    pub fn failed(&self, kind: &'static str, reason: &'static str) {
        self.failures.get_or_create(&FailureLabels { kind, reason }).inc();
    }

    /// Registers a source of object counts (ready, not ready) for `kind`, read at each scrape.
    pub fn count_objects(
        &self,
        kind: &'static str,
        counter: impl Fn() -> (u64, u64) + Send + Sync + 'static,
    ) {
        self.objects.0.add(kind, Box::new(counter));
    }

    /// Records one key rotation of `kind`: `outcome` is `success` or `failed`.
    pub fn rotated(&self, kind: &'static str, outcome: &'static str) {
        self.rotations.get_or_create(&OutcomeLabels { kind, outcome }).inc();
    }

    /// Registers a source of the oldest access key's creation (unix seconds) for `kind`, read at each scrape.
    pub fn track_key_ages(
        &self,
        kind: &'static str,
        oldest: impl Fn() -> Option<i64> + Send + Sync + 'static,
    ) {
        self.key_ages.0.add(kind, Box::new(oldest));
    }

    /// Registers a source of how many reconciles of `kind` wait for a pass slot, read at each scrape.
    pub fn track_waiting(&self, kind: &'static str, waiting: impl Fn() -> usize + Send + Sync + 'static) {
        self.waiting.0.add(kind, Box::new(waiting));
    }

    /// Records AWS objects of `kind` (`User`, `AccessKey`) deleted by the orphan sweeper.
    pub fn swept(&self, kind: &'static str, n: u64) {
        self.swept.get_or_create(&KindLabels { kind }).inc_by(n);
    }

    /// The number of orphaned buckets the last sweep found.
    pub fn set_orphaned_buckets(&self, n: usize) {
        self.orphaned_buckets.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The number of objects of other clusters the last sweep saw (and left alone).
    pub fn set_other_cluster_objects(&self, n: u64) {
        self.other_cluster_objects.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A sweep of `kind` (`User`, `Bucket`) finished: its timestamp on success, its counter on failure.
    pub fn sweep_finished(&self, kind: &'static str, succeeded: bool) {
        if succeeded {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            self.sweep_success.get_or_create(&KindLabels { kind }).set(now.as_secs_f64());
        } else {
            self.sweep_failures.get_or_create(&KindLabels { kind }).inc();
        }
    }

    /// Whether users get a permissions boundary (`set`) or not (`none`).
    pub fn set_permissions_boundary(&self, set: bool) {
        let (on, off) = if set { ("set", "none") } else { ("none", "set") };
        self.boundary.get_or_create(&StateLabels { state: on }).set(1);
        self.boundary.get_or_create(&StateLabels { state: off }).set(0);
    }

    /// One more controller has synced its cache.
    pub fn synced(&self) {
        self.synced.fetch_add(1, Ordering::SeqCst);
    }

    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::SeqCst);
    }

    /// Ready: every controller's cache is synced, or this replica is a standby waiting for the Lease.
    pub fn is_ready(&self) -> bool {
        self.standby.load(Ordering::SeqCst) || self.synced.load(Ordering::SeqCst) >= CONTROLLERS
    }

    /// Records why the controller's AWS identity could not be resolved (`None` once it is).
    pub fn set_aws_identity_error(&self, error: Option<String>) {
        if let Ok(mut current) = self.aws_identity_error.lock() {
            *current = error;
        }
    }

    /// Why the process is not ready, for `/readyz`; `None` when it is.
    pub fn not_ready_because(&self) -> Option<String> {
        if self.is_ready() {
            return None;
        }
        let identity = self.aws_identity_error.lock().ok().and_then(|e| e.clone());
        Some(match identity {
            Some(error) => format!("no AWS identity yet: {error}"),
            None => "caches not synced yet".to_owned(),
        })
    }

    /// The metrics in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; a collector's error would only truncate the page.
        if let Err(err) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %err, "Failed to encode the metrics");
        }
        out
    }
}

/// `bucket_broker_aws_calls_total`, read from the AWS layer's own counts.
#[derive(Debug)]
struct AwsCalls(CallStats);

impl Collector for AwsCalls {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "bucket_broker_aws_calls",
            "AWS API calls by service, operation and outcome",
            None,
            MetricType::Counter,
        )?;
        for ((service, operation, outcome), n) in self.0.snapshot() {
            let labels = AwsCallLabels { service, operation, outcome };
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Functions registered per kind, each read at every scrape (from a controller's cache).
struct Sources<F: ?Sized>(Mutex<Vec<(&'static str, Box<F>)>>);

impl<F: ?Sized> Default for Sources<F> {
    fn default() -> Self {
        Sources(Mutex::new(Vec::new()))
    }
}

impl<F: ?Sized> std::fmt::Debug for Sources<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

impl<F: ?Sized> Sources<F> {
    fn add(&self, kind: &'static str, source: Box<F>) {
        if let Ok(mut sources) = self.0.lock() {
            sources.push((kind, source));
        }
    }
}

/// `bucket_broker_managed_objects`: (ready, not ready) counts per kind.
#[derive(Debug, Default)]
struct ManagedObjects(Sources<dyn Fn() -> (u64, u64) + Send + Sync>);

impl Collector for ManagedObjects {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "bucket_broker_managed_objects",
            "Objects managed, by kind and readiness",
            None,
            MetricType::Gauge,
        )?;
        let Ok(sources) = self.0.0.lock() else { return Ok(()) };
        for (kind, counter) in sources.iter() {
            let (ready, not_ready) = counter();
            for (flag, n) in [("true", ready), ("false", not_ready)] {
                let labels = ReadinessLabels { kind, ready: flag };
                ConstGauge::new(n as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// `bucket_broker_oldest_key_age_seconds`: the creation (unix seconds) of the oldest live access key per kind.
#[derive(Debug, Default)]
struct OldestKeys(Sources<dyn Fn() -> Option<i64> + Send + Sync>);

impl Collector for OldestKeys {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "bucket_broker_oldest_key_age_seconds",
            "Age of the oldest live access key, by kind",
            None,
            MetricType::Gauge,
        )?;
        let Ok(sources) = self.0.0.lock() else { return Ok(()) };
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        for (kind, oldest) in sources.iter() {
            if let Some(created) = oldest() {
                ConstGauge::new(now.saturating_sub(created))
                    .encode(family.encode_family(&KindLabels { kind })?)?;
            }
        }
        Ok(())
    }
}

/// `bucket_broker_passes_waiting`: reconciles waiting for a pass slot, per kind.
#[derive(Debug, Default)]
struct WaitingPasses(Sources<dyn Fn() -> usize + Send + Sync>);

impl Collector for WaitingPasses {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "bucket_broker_passes_waiting",
            "Reconciles waiting for one of the --concurrency pass slots (handed out in turns by namespace), by kind",
            None,
            MetricType::Gauge,
        )?;
        let Ok(sources) = self.0.0.lock() else { return Ok(()) };
        for (kind, waiting) in sources.iter() {
            ConstGauge::new(waiting() as i64).encode(family.encode_family(&KindLabels { kind })?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let metrics = Metrics::new(CallStats::default());
        metrics.reconciled("Bucket", "success", Duration::from_millis(70));
        metrics.reconciled("Bucket", "error", Duration::from_secs(3));
        metrics.failed("Bucket", "AwsError");
        metrics.skipped("Bucket", "settled");
        metrics.count_objects("Bucket", || (2, 1));
        metrics.track_waiting("Bucket", || 3);
        metrics.rotated("BucketBinding", "success");
        let an_hour_ago = k8s_openapi::jiff::Timestamp::now().as_second() - 3600;
        metrics.track_key_ages("BucketBinding", move || Some(an_hour_ago));
        metrics.swept("User", 2);
        metrics.swept("AccessKey", 3);
        metrics.set_orphaned_buckets(1);
        let text = metrics.render();
        for expected in [
            "bucket_broker_reconciles_total{kind=\"Bucket\",outcome=\"success\"} 1\n",
            "bucket_broker_reconcile_failures_total{kind=\"Bucket\",reason=\"AwsError\"} 1\n",
            "bucket_broker_reconcile_duration_seconds_bucket{kind=\"Bucket\",le=\"0.1\"} 1\n",
            "bucket_broker_reconcile_duration_seconds_bucket{kind=\"Bucket\",le=\"5\"} 2\n",
            "bucket_broker_reconcile_duration_seconds_bucket{kind=\"Bucket\",le=\"+Inf\"} 2\n",
            "bucket_broker_reconcile_duration_seconds_count{kind=\"Bucket\"} 2\n",
            "bucket_broker_managed_objects{kind=\"Bucket\",ready=\"true\"} 2\n",
            "bucket_broker_managed_objects{kind=\"Bucket\",ready=\"false\"} 1\n",
            "bucket_broker_key_rotations_total{kind=\"BucketBinding\",outcome=\"success\"} 1\n",
            "bucket_broker_passes_waiting{kind=\"Bucket\"} 3\n",
            "bucket_broker_oldest_key_age_seconds{kind=\"BucketBinding\"} 3600\n",
            "bucket_broker_orphans_swept_total{kind=\"User\"} 2\n",
            "bucket_broker_orphans_swept_total{kind=\"AccessKey\"} 3\n",
            "bucket_broker_orphaned_buckets 1\n",
            "# HELP bucket_broker_reconciles_total Reconciles by kind and outcome: success or error (a pass ran), settled or deferred (none ran).\n",
            "bucket_broker_reconciles_total{kind=\"Bucket\",outcome=\"settled\"} 1\n",
            "# TYPE bucket_broker_aws_calls_total counter\n",
            "# TYPE bucket_broker_reconcile_duration_seconds histogram\n",
            "# TYPE bucket_broker_managed_objects gauge\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn ready_once_every_controller_synced_or_standing_by() {
        let metrics = Metrics::new(CallStats::default());
        assert!(!metrics.is_ready());
        for _ in 0..CONTROLLERS {
            metrics.synced();
        }
        assert!(metrics.is_ready());
        let standby = Metrics::new(CallStats::default());
        standby.set_standby(true);
        assert!(standby.is_ready());
    }
}
