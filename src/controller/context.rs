//! What every reconcile shares: the settings, the clients, metrics, the event recorder, and the per-object
//! backoff of failed reconciles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::MANAGER;
use super::error::ReconcileError;
use super::events::{Change, Recorder};
use super::fair::Turns;
use super::memo::{Class, Memo};
use crate::aws::Aws;
use crate::config::RunArgs;
use crate::desired::policy::PlatformNetwork;
use crate::metrics::Metrics;

/// The controller's settings, after validation and with the AWS region resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub region: String,
    pub deploy_env: String,
    /// `--cluster-name`: tagged on every AWS object, and required of every object the controller manages.
    pub cluster_name: String,
    pub bucket_prefix: String,
    pub user_prefix: String,
    pub iam_path: String,
    pub network: PlatformNetwork,
    pub permissions_boundary_arn: Option<String>,
    pub common_user_policy_arn: Option<String>,
    pub require_tls: bool,
    /// The AWS account id of the controller's identity (STS at start): every bucket-level S3 call expects
    /// it as the bucket's owner, and every credential policy allows only its buckets (`s3:ResourceAccount`).
    pub account_id: String,
    /// The uid of the cluster's `kube-system` namespace, read at start: tagged on every AWS object, so that
    /// clusters sharing an account never adopt, delete or sweep each other's objects, whatever their names.
    pub cluster_uid: String,
    pub resync_interval: Duration,
    /// How long a new access key may stay unknown to STS before that is an error (IAM propagates in
    /// seconds; not a flag, tests shorten it).
    pub key_propagation_timeout: Duration,
    /// The oldest an access key may get (`--max-key-age`): the default and ceiling of rotation intervals.
    pub max_key_age: Option<Duration>,
    pub concurrency: u16,
    pub namespace: Option<String>,
    /// How often the orphan sweeper runs; zero turns it off.
    pub orphan_sweep_interval: Duration,
    /// AWS objects younger than this are never judged orphans (not a flag, tests shorten it).
    pub orphan_grace: Duration,
    /// The longest a pass may take before it is stopped and retried (not a flag, tests shorten it).
    pub pass_timeout: Duration,
    /// How keyless BucketBindings get their role (`--oidc-provider-arn`, `--pod-identity-cluster-name`);
    /// `None`: a BucketBinding naming a ServiceAccount is refused.
    pub keyless: Option<crate::desired::keyless::Setup>,
    /// Whether access keys may be issued at all (`--keyless=allowed`).
    pub keys_allowed: bool,
}

impl Settings {
    /// The cluster, as AWS tags name it.
    pub fn cluster(&self) -> crate::desired::names::Cluster<'_> {
        crate::desired::names::Cluster { name: &self.cluster_name, uid: &self.cluster_uid }
    }

    pub fn new(args: &RunArgs, region: String) -> Self {
        Settings {
            region,
            deploy_env: args.deploy_env.clone(),
            cluster_name: args.cluster_name.clone(),
            bucket_prefix: args.bucket_prefix.clone(),
            user_prefix: args.user_prefix.clone(),
            iam_path: args.iam_path.clone(),
            network: PlatformNetwork {
                cidrs: args.platform_cidrs.clone(),
                vpc_endpoints: args.platform_vpc_endpoints.clone(),
                vpcs: args.platform_vpcs.clone(),
            },
            permissions_boundary_arn: args
                .permissions_boundary_arn
                .as_ref()
                .and_then(|b| b.arn())
                .map(str::to_owned),
            common_user_policy_arn: args.common_user_policy_arn.clone(),
            require_tls: args.require_tls,
            account_id: String::new(),
            cluster_uid: String::new(),
            resync_interval: args.resync_interval.0,
            key_propagation_timeout: KEY_PROPAGATION_TIMEOUT,
            max_key_age: args.max_key_age.map(|age| age.0),
            concurrency: args.concurrency,
            namespace: args.namespace.clone(),
            orphan_sweep_interval: args.orphan_sweep_interval.0,
            orphan_grace: ORPHAN_GRACE,
            pass_timeout: PASS_TIMEOUT,
            keyless: args.keyless_setup(),
            keys_allowed: args.keyless == crate::config::Keyless::Allowed,
        }
    }
}

/// The default of [`Settings::key_propagation_timeout`].
pub const KEY_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(60);

/// The default of [`Settings::pass_timeout`]: far beyond a slow one (AWS calls time out after 90 s, the rate limits pace
/// a pass's dozen calls), short enough that a hung connection costs minutes, not forever.
pub const PASS_TIMEOUT: Duration = Duration::from_secs(300);

/// The default of [`Settings::orphan_grace`]: far longer than any create takes from reading the object
/// to tagging what it made.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(600);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub aws: Aws,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    pub(super) backoff: Backoff,
    /// What this process knows it did: own writes, settled objects, related changes, background slots.
    pub memo: Memo,
    /// Wakes a Bucket whose binding or service key was just deleted (a deleting Bucket waits for them).
    wake_bucket: tokio::sync::mpsc::UnboundedSender<ObjectRef<crate::api::Bucket>>,
    bucket_wakes: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<ObjectRef<crate::api::Bucket>>>>,
    /// The cluster's BucketClasses, once their watch has listed them.
    classes: std::sync::OnceLock<Store<crate::api::BucketClass>>,
    /// The BucketBindings and BucketServiceKeys, for the count in each Bucket's status.
    credentials: std::sync::OnceLock<(Store<crate::api::BucketBinding>, Store<crate::api::BucketServiceKey>)>,
    /// Each controller's pass slots (`--concurrency` of them), taken in turns by namespace.
    turns: Mutex<HashMap<&'static str, Arc<Turns>>>,
}

impl Context {
    pub fn new(client: Client, aws: Aws, settings: Settings) -> Arc<Self> {
        let metrics = Metrics::new(aws.stats.clone());
        Self::with_metrics(client, aws, settings, metrics)
    }

    /// A context reporting to `metrics` (served before the context exists, while the start-up checks run).
    pub fn with_metrics(client: Client, aws: Aws, settings: Settings, metrics: Arc<Metrics>) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), MANAGER, std::env::var("POD_NAME").ok());
        let memo = Memo::new(settings.concurrency);
        let (wake_bucket, bucket_wakes) = tokio::sync::mpsc::unbounded_channel();
        Arc::new(Context {
            client,
            aws,
            settings,
            metrics,
            recorder,
            backoff: Backoff::default(),
            memo,
            wake_bucket,
            bucket_wakes: Mutex::new(Some(bucket_wakes)),
            classes: std::sync::OnceLock::new(),
            credentials: std::sync::OnceLock::new(),
            turns: Mutex::default(),
        })
    }

    /// Hands the controllers the BucketClasses' cache (once, when its watch has listed them).
    pub fn set_classes(&self, store: Store<crate::api::BucketClass>) {
        let _ = self.classes.set(store);
    }

    /// Every BucketClass in the cluster, as last seen.
    pub fn classes(&self) -> Vec<crate::api::BucketClass> {
        self.classes.get().map(|s| s.state().iter().map(|c| c.as_ref().clone()).collect()).unwrap_or_default()
    }

    /// Hands the Bucket controller the caches of bindings and service keys, which it counts.
    pub fn set_credentials(
        &self,
        bindings: Store<crate::api::BucketBinding>,
        keys: Store<crate::api::BucketServiceKey>,
    ) {
        let _ = self.credentials.set((bindings, keys));
    }

    /// How many BucketBindings and BucketServiceKeys in `namespace` name the Bucket `name`, as cached;
    /// `None` before the caches are handed over.
    pub fn bindings_of(&self, namespace: &str, name: &str) -> Option<i32> {
        let (bindings, keys) = self.credentials.get()?;
        let names = |ns: Option<&str>, bucket: &str| ns == Some(namespace) && bucket == name;
        let count = bindings
            .state()
            .iter()
            .filter(|b| names(b.metadata.namespace.as_deref(), &b.spec.bucket_ref.name))
            .count()
            + keys
                .state()
                .iter()
                .filter(|k| names(k.metadata.namespace.as_deref(), &k.spec.bucket_ref.name))
                .count();
        Some(i32::try_from(count).unwrap_or(i32::MAX))
    }

    /// Wakes the Bucket `name` in `namespace` (a binding or service key of it is gone).
    pub fn wake_bucket(&self, namespace: &str, name: &str) {
        let _ = self.wake_bucket.send(ObjectRef::new(name).within(namespace));
    }

    /// The Buckets to wake, for the Bucket controller (once).
    pub fn bucket_wakes(
        &self,
    ) -> impl futures::Stream<Item = ObjectRef<crate::api::Bucket>> + Send + 'static {
        let receiver = self.bucket_wakes.lock().ok().and_then(|mut r| r.take());
        futures::stream::unfold(receiver, |receiver| async move {
            let mut receiver = receiver?;
            let next = receiver.recv().await?;
            Some((next, Some(receiver)))
        })
    }

    /// The pass slots of the controller of `kind`.
    pub fn turns(&self, kind: &'static str) -> Arc<Turns> {
        let Ok(mut turns) = self.turns.lock() else {
            return Turns::new(usize::from(self.settings.concurrency));
        };
        turns
            .entry(kind)
            .or_insert_with(|| {
                let turns = Turns::new(usize::from(self.settings.concurrency));
                let counted = Arc::downgrade(&turns);
                self.metrics.track_waiting(kind, move || counted.upgrade().map_or(0, |t| t.waiting()));
                turns
            })
            .clone()
    }

    /// One reconcile of `obj` (whose status has the [`super::memo::status_hash`] `status`): no pass at all
    /// when nothing changed since the last one settled it and it is not due; a background pass (a periodic
    /// verification) only in a slot free now that no urgent pass waits for, with its AWS calls after any
    /// urgent ones, and otherwise put off; an urgent pass (new work) in its namespace's turn ([`Turns`]).
    /// A failed pass unsettles the object, so that the next one starts from AWS.
    pub async fn reconcile<K, F>(
        &self,
        kind: &'static str,
        obj: &K,
        status: u64,
        looks_converged: bool,
        pass: F,
    ) -> Result<Action, ReconcileError>
    where
        K: Resource<DynamicType = ()>,
        F: Future<Output = Result<Action, ReconcileError>>,
    {
        let uid = obj.meta().uid.clone().unwrap_or_default();
        let namespace = obj.meta().namespace.as_deref().unwrap_or_default();
        let class = self.memo.classify(obj, status, looks_converged);
        let turns = self.turns(kind);
        let _slots = match class {
            Class::Settled(after) => {
                self.metrics.skipped(kind, "settled");
                return Ok(Action::requeue(after));
            }
            Class::Background => {
                match self.memo.admit_background(&uid).map(|permit| (permit, turns.try_take(namespace))) {
                    Some((permit, Some(slot))) => (Some(permit), slot),
                    Some((_, None)) | None => {
                        self.metrics.skipped(kind, "deferred");
                        return Ok(Action::requeue(self.memo.defer_background(&uid)));
                    }
                }
            }
            Class::Urgent => (None, turns.take(namespace).await),
        };
        let _running = self.memo.running(&uid);
        let started = Instant::now();
        // Every request in a pass is bounded but Kubernetes reads: a connection that hangs without an answer
        // must not pin the object (a pass stopped at any line is safe to run again).
        let limit = self.settings.pass_timeout;
        let result = match tokio::time::timeout(limit, class.priority().scope(pass)).await {
            Ok(result) => result,
            Err(_) => Err(kube::runtime::finalizer::Error::ApplyFailed(super::Error::Timeout(limit))),
        };
        if result.is_err() {
            self.memo.unsettle(&uid);
        }
        self.record(kind, &object_key(obj), started, &result);
        result
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

    /// Whether a pass that failed with `err` goes unreported to the object's users (no Warning event, no
    /// change to its Ready condition): a transient failure (throttling, a dropped connection, an API server
    /// restarting) the first [`QUIET_TRANSIENT_FAILURES`] times in a row. It is logged and retried with
    /// backoff all the same; one that lasts is reported. So a blip never flips a Ready object to not Ready
    /// (and a GitOps tool's health with it), nor fills its events.
    pub fn quiet_failure<K: Resource<DynamicType = ()>>(&self, obj: &K, err: &super::Error) -> bool {
        err.is_transient() && self.backoff.failures(&object_key(obj)) < QUIET_TRANSIENT_FAILURES
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
        // Tenants read events: the note goes without the platform's AWS identity (the log keeps it).
        let note = crate::desired::redact::for_tenants(&note);
        if let Err(err) = self.recorder.publish(reference, type_, reason, action, note).await {
            tracing::warn!(error = %err, reason, "Failed to publish event");
        }
    }

    /// Publishes one `Normal` event per change a pass made, in the order it made them.
    pub async fn changes(&self, reference: &ObjectReference, action: &str, changes: &[Change]) {
        for change in changes {
            self.event(reference, EventType::Normal, change.reason, action, change.note.clone()).await;
        }
    }

    /// When the object with `uid` is next resynced: the interval, spread evenly over three quarters to five
    /// quarters of it by the uid, so that objects created or restarted together do not all hit AWS at
    /// once, and each object keeps a steady period.
    pub fn resync_after(&self, uid: &str) -> Duration {
        self.settings.resync_interval.mul_f64(resync_spread(uid))
    }

    /// S3 calls on `bucket` in `region`, each expecting the bucket to be this account's.
    pub fn bucket_ops<'a>(&'a self, region: &str, bucket: &'a str) -> crate::aws::s3::BucketOps<'a> {
        crate::aws::s3::BucketOps {
            client: self.aws.s3_in(region),
            stats: &self.aws.stats,
            bucket,
            owner: Some(self.settings.account_id.as_str()),
        }
    }

    /// An `Api` for a namespaced kind in `namespace`.
    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// An `Api` for a namespaced kind in `namespace`, or in every namespace.
    pub fn api_for<K>(&self, namespace: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => self.api(ns),
            None => Api::all(self.client.clone()),
        }
    }
}

/// One watch of a kind, shared by every controller that needs it: the cache (objects as [`trim`] leaves
/// them: what reconciles read, not the largest part of most objects) and a subscription per controller.
/// Three watches in all (one per kind), not one per controller and related kind.
///
/// Built on a plain reflector and a channel per consumer rather than kube's `reflect_shared`, whose
/// subscriptions (kube-runtime 5.0) stop without a wake-up when an object is deleted before they read its
/// change, which stalled a controller until another event came.
pub struct SharedWatch<K: Resource<DynamicType = ()> + Clone + 'static> {
    pub store: Store<K>,
    /// One per consumer, made before the watch starts.
    subscriptions: Mutex<Vec<tokio::sync::mpsc::UnboundedReceiver<Arc<K>>>>,
}

/// The page size of initial lists: a page is held twice (bytes and objects) while it is read.
const LIST_PAGE: u32 = 100;

/// At most this many changes wait for their object's pass to end ([`SharedWatch::changes_by_others`]);
/// past that, the subscription waits (the changes stay queued in its channel, none is lost).
pub(super) const HELD_CHANGES: usize = 1024;

impl<K> SharedWatch<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    /// Starts watching `api` for `consumers` subscribers, each of which takes its subscription
    /// ([`Self::changes`]); the returned future drives the watch and must be polled meanwhile.
    pub fn start(api: Api<K>, consumers: usize) -> (Self, impl Future<Output = ()> + Send + 'static) {
        Self::start_watching(api, consumers, false)
    }

    /// As [`Self::start`], and deleted objects are changes too (the subscribers of BucketClasses must hear
    /// that a class is gone).
    pub fn start_with_deletions(
        api: Api<K>,
        consumers: usize,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        Self::start_watching(api, consumers, true)
    }

    fn start_watching(
        api: Api<K>,
        consumers: usize,
        deletions: bool,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (store, writer) = reflector::store();
        let (senders, subscriptions): (Vec<_>, Vec<_>) =
            (0..consumers).map(|_| tokio::sync::mpsc::unbounded_channel()).unzip();
        let config = watcher::Config::default().page_size(LIST_PAGE);
        let events = watcher::watcher(api, config).default_backoff().modify(trim).reflect(writer);
        let changed: futures::stream::BoxStream<'static, Result<K, watcher::Error>> =
            if deletions { events.touched_objects().boxed() } else { events.applied_objects().boxed() };
        let drive = changed.for_each(move |changed| {
            match changed {
                Ok(obj) => {
                    let obj = Arc::new(obj);
                    for sender in &senders {
                        let _ = sender.send(obj.clone());
                    }
                }
                Err(err) => tracing::warn!(kind = %K::kind(&()), error = %err, "Watch failed; retrying"),
            }
            std::future::ready(())
        });
        (SharedWatch { store, subscriptions: Mutex::new(subscriptions) }, drive)
    }

    /// A consumer's subscription: every object as it changes (a relist repeats them all).
    ///
    /// # Panics
    /// When more consumers take one than [`Self::start`] was told of (a wiring mistake).
    pub fn changes(&self) -> impl futures::Stream<Item = Arc<K>> + Send + 'static {
        let receiver = self
            .subscriptions
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .expect("a subscription for every consumer");
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|obj| (obj, receiver))
        })
    }

    /// A subscription without the versions this controller wrote (its own status writes start no pass):
    /// the trigger of the kind's own controller. A change that comes while the object's pass is under way
    /// is judged once the pass is over: by then the pass has recorded the versions it wrote.
    pub fn changes_by_others(
        &self,
        ctx: Arc<Context>,
    ) -> impl futures::Stream<Item = Arc<K>> + Send + 'static {
        self.changes()
            .map(move |obj| {
                let ctx = ctx.clone();
                async move {
                    ctx.memo.after_pass(&[obj.meta().uid.as_deref().unwrap_or_default()]).await;
                    (!ctx.memo.is_echo(obj.as_ref())).then_some(obj)
                }
            })
            .buffer_unordered(HELD_CHANGES)
            .filter_map(std::future::ready)
    }
}

/// Drops what no reconcile reads from a cached object: `managedFields`, labels, and every annotation but
/// the controller's own (`bucketbroker.io/...`; others can be large: kubectl's last-applied copy of the
/// whole object, a GitOps tool's).
pub fn trim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| key.starts_with(OWN_ANNOTATIONS));
    }
    if meta.annotations.as_ref().is_some_and(|a| a.is_empty()) {
        meta.annotations = None;
    }
}

/// The prefix of the annotations a reconcile reads (`bucketbroker.io/rotate`).
pub(super) const OWN_ANNOTATIONS: &str = "bucketbroker.io/";

/// Per-object exponential backoff for failed reconciles (kube's controller has none built in), keyed by
/// uid: a re-created object (same name, new uid) starts afresh. An object's entry goes with its success,
/// its deletion ([`Backoff::reset`] from the finalizer's cleanup), or, for an object that vanished while
/// failing, once it has not failed for twice the longest delay (every failing object fails again sooner).
#[derive(Default)]
pub struct Backoff(Mutex<Failures>);

/// How many transient failures in a row go unreported to an object's users ([`Context::quiet_failure`]):
/// with the backoff's 1 s and 2 s, a failure is reported once it has lasted about 3 s.
pub const QUIET_TRANSIENT_FAILURES: u32 = 2;

#[derive(Default)]
struct Failures {
    by_object: HashMap<String, (u32, tokio::time::Instant)>,
    pruned: Option<tokio::time::Instant>,
}

impl Backoff {
    const BASE: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(300);

    /// The delay before the next attempt after one more failure of `key`.
    pub fn next(&self, key: &str) -> Duration {
        let now = tokio::time::Instant::now();
        let attempts = self
            .0
            .lock()
            .map(|mut failures| {
                failures.prune(now);
                let entry = failures.by_object.entry(key.to_owned()).or_insert((0, now));
                *entry = (entry.0.saturating_add(1), now);
                entry.0
            })
            .unwrap_or(1);
        Self::BASE.saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(16))).min(Self::MAX)
    }

    /// How many passes of `key` failed in a row (before the one being reported).
    pub fn failures(&self, key: &str) -> u32 {
        self.0.lock().ok().and_then(|f| f.by_object.get(key).map(|(n, _)| *n)).unwrap_or(0)
    }

    /// Forgets the failures of `key` after a success or its deletion.
    pub fn reset(&self, key: &str) {
        if let Ok(mut failures) = self.0.lock() {
            failures.by_object.remove(key);
        }
    }

    /// How many objects have failures remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map(|f| f.by_object.len()).unwrap_or(0)
    }
}

impl Failures {
    /// Drops, at most once a minute, the entries of objects that have not failed for twice the longest
    /// delay: they succeeded or vanished without it being seen.
    fn prune(&mut self, now: tokio::time::Instant) {
        if self.pruned.is_some_and(|at| now.duration_since(at) < Duration::from_secs(60)) {
            return;
        }
        self.pruned = Some(now);
        self.by_object.retain(|_, (_, last)| now.duration_since(*last) < 2 * Backoff::MAX);
    }
}

/// A factor in [0.75, 1.25), fixed per uid and evenly spread over uids.
fn resync_spread(uid: &str) -> f64 {
    0.75 + (crate::desired::names::stable_hash(uid) % 10_000) as f64 / 20_000.0
}

/// The key of an object in the backoff table: its uid (its kind, namespace and name only for an object
/// without one, which an API server never serves).
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    match obj.meta().uid.as_deref() {
        Some(uid) => uid.to_owned(),
        None => format!(
            "{}/{}/{}",
            K::kind(&()),
            obj.meta().namespace.as_deref().unwrap_or_default(),
            obj.meta().name.as_deref().unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resyncs_spread_evenly_and_stay_put_per_object() {
        let factors: Vec<f64> = (0..1000).map(|i| resync_spread(&format!("uid-{i}"))).collect();
        assert!(factors.iter().all(|f| (0.75..1.25).contains(f)));
        let early = factors.iter().filter(|f| **f < 1.0).count();
        assert!((400..600).contains(&early), "about half before the interval: {early}");
        assert_eq!(resync_spread("uid-7"), resync_spread("uid-7"));
    }

    #[test]
    fn cached_objects_keep_only_what_reconciles_read() {
        let mut bucket: crate::api::Bucket = serde_json::from_value(serde_json::json!({
            "apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
            "metadata": {"name": "b", "labels": {"team": "a"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}",
                    "bucketbroker.io/rotate": "1"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {}
        }))
        .expect("bucket");
        trim(&mut bucket);
        assert_eq!(bucket.metadata.managed_fields, None);
        assert_eq!(bucket.metadata.labels, None);
        let annotations = bucket.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["bucketbroker.io/rotate"]);
        bucket.metadata.annotations = Some([("other".to_owned(), "x".to_owned())].into());
        trim(&mut bucket);
        assert_eq!(bucket.metadata.annotations, None);
    }

    /// Each consumer gets every change, however many (past the 1,024 that stalled kube's shared streams).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_shared_watch_delivers_every_change_to_every_consumer() {
        use futures::StreamExt;
        use k8s_openapi::api::core::v1::ConfigMap;
        let server = kube_memory_apiserver::ApiServer::start().await.expect("api server");
        let api = Api::<ConfigMap>::namespaced(server.client(), "default");
        let (watch, drive) = SharedWatch::start(api.clone(), 2);
        tokio::spawn(drive);
        let (first, second) = (watch.changes(), watch.changes());
        let count = |changes, n: usize| {
            tokio::time::timeout(Duration::from_secs(60), StreamExt::count(StreamExt::take(changes, n)))
        };
        let n = 1100;
        let reading = tokio::spawn(async move { tokio::join!(count(first, n), count(second, n)) });
        for i in 0..n {
            let map: ConfigMap =
                serde_json::from_value(serde_json::json!({"metadata": {"name": format!("m{i}")}}))
                    .expect("configmap");
            api.create(&Default::default(), &map).await.expect("created");
        }
        let (first, second) = reading.await.expect("readers");
        assert_eq!(first.ok(), Some(n), "the first consumer saw every change");
        assert_eq!(second.ok(), Some(n), "so did the second");
        assert_eq!(watch.store.state().len(), n);
    }

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

    #[tokio::test(start_paused = true)]
    async fn backoff_forgets_objects_that_stopped_failing_without_a_word() {
        let backoff = Backoff::default();
        for i in 0..100 {
            backoff.next(&format!("gone-{i}"));
        }
        assert_eq!(backoff.len(), 100);
        // One object keeps failing, every longest delay; the hundred others vanished with their failures.
        for _ in 0..3 {
            tokio::time::advance(Backoff::MAX).await;
            backoff.next("failing");
        }
        assert_eq!(backoff.len(), 1, "only the object still failing is remembered");
        assert_eq!(backoff.next("failing").as_secs(), 8, "and it keeps its count: a fourth failure");
    }
}
