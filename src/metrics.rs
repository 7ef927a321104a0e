//! Prometheus metrics and readiness, rendered in the text exposition format without a metrics crate.
//!
//! Every label value is static (kinds, outcomes, reasons, AWS operation names) or a bounded readiness flag:
//! no object names, so cardinality stays bounded however many objects there are.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::aws::CallStats;

/// Upper bounds of the reconcile duration histogram, in seconds.
const BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Counts of managed objects by readiness, read from a controller's cache at scrape time.
type ObjectCounter = Box<dyn Fn() -> (u64, u64) + Send + Sync>;

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// The controller's metrics and health.
#[derive(Default)]
pub struct Metrics {
    reconciles: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    failures: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    durations: Mutex<BTreeMap<&'static str, Histogram>>,
    objects: Mutex<Vec<(&'static str, ObjectCounter)>>,
    /// How many controllers have synced their caches.
    synced: AtomicUsize,
    /// Waiting for the leader Lease: nothing to sync, yet healthy.
    standby: AtomicBool,
}

/// The number of controllers whose caches must sync before the process is ready.
pub const CONTROLLERS: usize = 3;

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    /// Records one reconcile of `kind`: `outcome` is `success` or `error`.
    pub fn reconciled(&self, kind: &'static str, outcome: &'static str, took: Duration) {
        if let Ok(mut counts) = self.reconciles.lock() {
            *counts.entry((kind, outcome)).or_default() += 1;
        }
        if let Ok(mut durations) = self.durations.lock() {
            let histogram = durations
                .entry(kind)
                .or_insert_with(|| Histogram { counts: vec![0; BUCKETS.len()], ..Default::default() });
            let seconds = took.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    histogram.counts[i] += 1;
                }
            }
            histogram.sum += seconds;
            histogram.count += 1;
        }
    }

    /// Records a failed reconcile with its static reason.
    pub fn failed(&self, kind: &'static str, reason: &'static str) {
        if let Ok(mut failures) = self.failures.lock() {
            *failures.entry((kind, reason)).or_default() += 1;
        }
    }

    /// Registers a source of object counts (ready, not ready) for `kind`.
    pub fn count_objects(
        &self,
        kind: &'static str,
        counter: impl Fn() -> (u64, u64) + Send + Sync + 'static,
    ) {
        if let Ok(mut objects) = self.objects.lock() {
            objects.push((kind, Box::new(counter)));
        }
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

    /// The metrics in the Prometheus text format.
    pub fn render(&self, aws: &CallStats) -> String {
        let mut out = String::new();
        header(&mut out, "bucket_broker_reconciles_total", "counter", "Reconciles by kind and outcome.");
        for ((kind, outcome), n) in self.reconciles.lock().map(|m| m.clone()).unwrap_or_default() {
            let _ =
                writeln!(out, "bucket_broker_reconciles_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}");
        }
        header(
            &mut out,
            "bucket_broker_reconcile_failures_total",
            "counter",
            "Failed reconciles by kind and reason.",
        );
        for ((kind, reason), n) in self.failures.lock().map(|m| m.clone()).unwrap_or_default() {
            let _ = writeln!(
                out,
                "bucket_broker_reconcile_failures_total{{kind=\"{kind}\",reason=\"{reason}\"}} {n}"
            );
        }
        header(
            &mut out,
            "bucket_broker_reconcile_duration_seconds",
            "histogram",
            "Reconcile duration by kind.",
        );
        if let Ok(durations) = self.durations.lock() {
            for (kind, h) in durations.iter() {
                for (bound, n) in BUCKETS.iter().zip(&h.counts) {
                    let _ = writeln!(
                        out,
                        "bucket_broker_reconcile_duration_seconds_bucket{{kind=\"{kind}\",le=\"{bound}\"}} {n}"
                    );
                }
                let _ = writeln!(
                    out,
                    "bucket_broker_reconcile_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "bucket_broker_reconcile_duration_seconds_sum{{kind=\"{kind}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "bucket_broker_reconcile_duration_seconds_count{{kind=\"{kind}\"}} {}",
                    h.count
                );
            }
        }
        header(
            &mut out,
            "bucket_broker_aws_calls_total",
            "counter",
            "AWS API calls by service, operation and outcome.",
        );
        for ((service, operation, outcome), n) in aws.snapshot() {
            let _ = writeln!(
                out,
                "bucket_broker_aws_calls_total{{service=\"{service}\",operation=\"{operation}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        header(&mut out, "bucket_broker_managed_objects", "gauge", "Objects managed, by kind and readiness.");
        if let Ok(objects) = self.objects.lock() {
            for (kind, counter) in objects.iter() {
                let (ready, not_ready) = counter();
                let _ =
                    writeln!(out, "bucket_broker_managed_objects{{kind=\"{kind}\",ready=\"true\"}} {ready}");
                let _ = writeln!(
                    out,
                    "bucket_broker_managed_objects{{kind=\"{kind}\",ready=\"false\"}} {not_ready}"
                );
            }
        }
        out
    }
}

fn header(out: &mut String, name: &str, type_: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {type_}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let metrics = Metrics::new();
        metrics.reconciled("Bucket", "success", Duration::from_millis(70));
        metrics.reconciled("Bucket", "error", Duration::from_secs(3));
        metrics.failed("Bucket", "AwsError");
        metrics.count_objects("Bucket", || (2, 1));
        let text = metrics.render(&CallStats::default());
        assert!(
            text.contains("bucket_broker_reconciles_total{kind=\"Bucket\",outcome=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("bucket_broker_reconcile_failures_total{kind=\"Bucket\",reason=\"AwsError\"} 1")
        );
        assert!(
            text.contains("bucket_broker_reconcile_duration_seconds_bucket{kind=\"Bucket\",le=\"0.1\"} 1")
        );
        assert!(text.contains("bucket_broker_reconcile_duration_seconds_bucket{kind=\"Bucket\",le=\"5\"} 2"));
        assert!(text.contains("bucket_broker_reconcile_duration_seconds_count{kind=\"Bucket\"} 2"));
        assert!(text.contains("bucket_broker_managed_objects{kind=\"Bucket\",ready=\"false\"} 1"));
        assert!(text.contains("# TYPE bucket_broker_aws_calls_total counter"));
    }

    #[test]
    fn ready_once_every_controller_synced_or_standing_by() {
        let metrics = Metrics::new();
        assert!(!metrics.is_ready());
        for _ in 0..CONTROLLERS {
            metrics.synced();
        }
        assert!(metrics.is_ready());
        let standby = Metrics::new();
        standby.set_standby(true);
        assert!(standby.is_ready());
    }
}
