//! The controllers: one per kind, sharing a [`Context`].
//!
//! Each reconcile follows the same pipeline: the finalizer helper splits it into `apply` and `cleanup`;
//! `apply` records the AWS identity (derived from the uid) in status before creating anything, then
//! ensures every AWS setting (reading first, writing only on a difference), then writes status with
//! server-side apply, skipped when nothing changed. Any reconcile can stop at any line and run again.

pub mod binding;
pub mod bucket;
pub mod credentials;
pub mod service_key;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aws::{Aws, AwsError, ErrorKind};
use crate::config::RunArgs;
use crate::desired::conditions::reasons;
use crate::desired::policy::PlatformNetwork;
use crate::metrics::Metrics;

/// Runs every controller until `shutdown` turns true.
pub async fn run_all(ctx: Arc<Context>, shutdown: tokio::sync::watch::Receiver<bool>) {
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    tokio::join!(
        bucket::run(ctx.clone(), stopped(shutdown.clone())),
        credentials::run::<crate::api::BucketBinding>(ctx.clone(), stopped(shutdown.clone())),
        credentials::run::<crate::api::BucketServiceKey>(ctx.clone(), stopped(shutdown)),
    );
}

/// The field manager of every write, and the reporting controller of every event.
pub const MANAGER: &str = "bucket-broker";

/// The controller's settings, after validation and with the AWS region resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub region: String,
    pub deploy_env: String,
    pub bucket_prefix: String,
    pub user_prefix: String,
    pub iam_path: String,
    pub network: PlatformNetwork,
    pub permissions_boundary_arn: Option<String>,
    pub common_user_policy_arn: Option<String>,
    pub require_tls: bool,
    pub resync_interval: Duration,
    pub concurrency: u16,
    pub namespace: Option<String>,
}

impl Settings {
    pub fn new(args: &RunArgs, region: String) -> Self {
        Settings {
            region,
            deploy_env: args.deploy_env.clone(),
            bucket_prefix: args.bucket_prefix.clone(),
            user_prefix: args.user_prefix.clone(),
            iam_path: args.iam_path.clone(),
            network: PlatformNetwork {
                cidrs: args.platform_cidrs.clone(),
                vpc_endpoints: args.platform_vpc_endpoints.clone(),
            },
            permissions_boundary_arn: args.permissions_boundary_arn.clone(),
            common_user_policy_arn: args.common_user_policy_arn.clone(),
            require_tls: args.require_tls,
            resync_interval: args.resync_interval.0,
            concurrency: args.concurrency,
            namespace: args.namespace.clone(),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub aws: Aws,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    backoff: Backoff,
}

impl Context {
    pub fn new(client: Client, aws: Aws, settings: Settings) -> Arc<Self> {
        let reporter = Reporter { controller: MANAGER.to_owned(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        let metrics = Metrics::new(aws.stats.clone());
        Arc::new(Context { client, aws, settings, metrics, recorder, backoff: Backoff::default() })
    }

    /// Records a reconcile's outcome and duration, and resets the object's backoff after a success.
    pub fn record<T>(
        &self,
        kind: &'static str,
        key: &str,
        started: Instant,
        result: &Result<T, ReconcileError>,
    ) {
        let outcome = if result.is_ok() { "success" } else { "error" };
        self.metrics.reconciled(kind, outcome, started.elapsed());
        if result.is_ok() {
            self.backoff.reset(key);
        }
    }

    /// Registers a controller's cache with the metrics (object counts) and readiness (synced).
    pub fn watch_cache<K>(&self, kind: &'static str, store: Store<K>, ready: fn(&K) -> bool)
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let counted = store.clone();
        self.metrics.count_objects(kind, move || {
            let objects = counted.state();
            let ready = objects.iter().filter(|o| ready(o)).count() as u64;
            (ready, objects.len() as u64 - ready)
        });
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            // A bare `wait_until_ready().await` was seen never to wake up (kube 5.0, one writer shared by
            // the controller): polling it again after a timeout finds it ready.
            loop {
                if let Ok(result) =
                    tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready()).await
                {
                    if result.is_ok() {
                        metrics.synced();
                    }
                    break;
                }
            }
        });
    }

    /// Publishes an event; a failure to publish is logged, never fatal.
    pub async fn event(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, reference).await {
            tracing::warn!(error = %err, reason, "Failed to publish event");
        }
    }

    /// An `Api` for a namespaced kind in `namespace`.
    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }
}

/// A reconcile failure. Messages are lowercase, never repeat their source, and never hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Aws(#[from] AwsError),
    // The cause is in the message (conditions show it) and therefore not also a `source`, so that a
    // printed error chain does not repeat it.
    #[error("kubernetes request failed: {0}")]
    Kube(kube::Error),
    /// Deletion must wait; the message says for what.
    #[error("{0}")]
    DeletionBlocked(String),
    /// An AWS object with our name belongs to another Kubernetes object.
    #[error("{0}")]
    Conflict(String),
    #[error("the object has no {0}")]
    Incomplete(&'static str),
}

impl Error {
    /// A static PascalCase reason, for conditions, events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Aws(_) => reasons::AWS_ERROR,
            Error::Kube(_) => "KubernetesError",
            Error::DeletionBlocked(_) => reasons::DELETION_BLOCKED,
            Error::Conflict(_) => "NameConflict",
            Error::Incomplete(_) => reasons::INVALID_SPEC,
        }
    }

    /// Whether retrying soon is likely to help (throttling, network) rather than waiting for a person.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Aws(err) => err.is(ErrorKind::Transient),
            Error::Kube(_) => true,
            _ => false,
        }
    }
}

impl From<kube::Error> for Error {
    fn from(err: kube::Error) -> Self {
        Error::Kube(err)
    }
}

/// The reconcile result of every controller: the finalizer helper wraps our error.
pub type ReconcileError = kube::runtime::finalizer::Error<Error>;

/// Per-object exponential backoff for failed reconciles (kube's controller has none built in).
#[derive(Default)]
pub struct Backoff(Mutex<HashMap<String, u32>>);

impl Backoff {
    const BASE: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(300);

    /// The delay before the next attempt after one more failure of `key`.
    pub fn next(&self, key: &str) -> Duration {
        let attempts = self
            .0
            .lock()
            .map(|mut failures| {
                let n = failures.entry(key.to_owned()).or_default();
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        Self::BASE.saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(16))).min(Self::MAX)
    }

    /// Forgets the failures of `key` after a success.
    pub fn reset(&self, key: &str) {
        if let Ok(mut failures) = self.0.lock() {
            failures.remove(key);
        }
    }
}

/// The key of an object in the backoff table.
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// The static reason of a reconcile failure, for metrics.
pub fn failure_reason(error: &ReconcileError) -> &'static str {
    use kube::runtime::finalizer::Error as F;
    match error {
        F::ApplyFailed(err) | F::CleanupFailed(err) => err.reason(),
        F::AddFinalizer(_) | F::RemoveFinalizer(_) => "KubernetesError",
        _ => reasons::INVALID_SPEC,
    }
}

/// The requeue after a failed reconcile: exponential per object, logged with its static reason.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    kind: &'static str,
    obj: &K,
    error: &ReconcileError,
    ctx: &Context,
) -> Action {
    ctx.metrics.failed(kind, failure_reason(error));
    let delay = ctx.backoff.next(&object_key(obj));
    tracing::warn!(
        kind,
        namespace = obj.meta().namespace.as_deref().unwrap_or_default(),
        name = obj.meta().name.as_deref().unwrap_or_default(),
        error = %error,
        retry_in = ?delay,
        "Reconcile failed"
    );
    Action::requeue(delay)
}

/// Writes `status` with server-side apply, unless it equals `current`.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    obj: &K,
    current: Option<&S>,
    status: &S,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let name = obj.meta().name.as_deref().unwrap_or_default();
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(true)
}

/// The uid, namespace and name of an object, which every AWS name and tag is made from.
pub fn identity<K: Resource>(obj: &K) -> Result<(&str, &str, &str), Error> {
    let meta = obj.meta();
    let uid = meta.uid.as_deref().ok_or(Error::Incomplete("uid"))?;
    let namespace = meta.namespace.as_deref().ok_or(Error::Incomplete("namespace"))?;
    let name = meta.name.as_deref().ok_or(Error::Incomplete("name"))?;
    Ok((uid, namespace, name))
}

/// The current time as a Kubernetes timestamp.
pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_object_and_resets() {
        let backoff = Backoff::default();
        let delays: Vec<u64> = (0..4).map(|_| backoff.next("a").as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8]);
        assert_eq!(backoff.next("b").as_secs(), 1, "objects back off independently");
        for _ in 0..30 {
            backoff.next("a");
        }
        assert_eq!(backoff.next("a"), Backoff::MAX);
        backoff.reset("a");
        assert_eq!(backoff.next("a").as_secs(), 1);
    }
}
