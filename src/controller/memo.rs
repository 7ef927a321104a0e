//! What the controller knows it has done: the memory that makes the work event-driven and cheap.
//!
//! - The resourceVersions of its own writes (objects and Secrets): their watch events start no pass.
//! - Per object, when its last pass settled it, what it saw of the object and of its Bucket then, and when
//!   the object is next due: a reconcile with nothing new before that costs no AWS call and no write.
//! - Which objects a related change (a Secret edited, a Bucket that changed) made dirty.
//! - Which reconciles are urgent (new work) and which are background (periodic verification), and how
//!   many of the latter may run at once.
//!
//! Nothing here is authority: it decides *when* a pass runs and *how urgent* it is, never what is granted,
//! adopted or deleted (those come from the uid and AWS). It is lost on restart, which costs one
//! verification per object, paced as background work.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Resource;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::aws::Priority;
use crate::aws::iam::User;
use crate::desired::conditions::{is_true, types};

/// How many resourceVersions of one object are remembered as ours: a pass writes it at most four times
/// (the finalizer, a status, the status after a CRD was fixed) and settles the version it read.
const KNOWN_VERSIONS: usize = 5;

/// A resourceVersion as remembered: its hash (8 bytes a version instead of a string).
type Version = u64;

fn version(rv: &str) -> Version {
    let mut hasher = DefaultHasher::new();
    rv.hash(&mut hasher);
    hasher.finish() | 1
}

/// What a reconcile should do, decided before it does anything.
#[derive(Debug, PartialEq)]
pub enum Class {
    /// Nothing changed since the last pass settled the object, and it is not due: come back then.
    Settled(Duration),
    /// New work: a create, a spec change, a deletion, a Secret edited, a Bucket that became ready.
    Urgent,
    /// A periodic verification (or the first one after a restart) of an object that looks converged.
    Background,
}

impl Class {
    pub fn priority(&self) -> Priority {
        match self {
            Class::Background => Priority::Background,
            _ => Priority::Urgent,
        }
    }
}

/// What a pass that ended well records.
pub struct Settled {
    /// The object converged (Ready): its next pass is a background verification, not new work.
    pub converged: bool,
    /// When the object is next due.
    pub after: Duration,
    /// The IAM user as the pass left it: a background verification reads it from here, not from AWS.
    pub user: Option<RememberedUser>,
}

/// An IAM user as remembered: its ARN, boundary, and the tags that are not the ones derived from its
/// owner (usually none: a rotation's records, the attachments'), so that a few bytes stand for it.
#[derive(Clone, Debug, PartialEq)]
pub struct RememberedUser {
    arn: Box<str>,
    boundary: Option<Box<str>>,
    other_tags: Vec<(String, String)>,
}

impl RememberedUser {
    /// `user` as remembered, if it carries every tag of `derived` (as every user this controller made
    /// does); one that lacks one is not remembered, so that [`Self::user`] is exactly what AWS holds.
    pub fn of(user: &User, derived: &[(String, String)]) -> Option<Self> {
        derived.iter().all(|tag| user.tags.contains(tag)).then(|| RememberedUser {
            arn: user.arn.as_str().into(),
            boundary: user.permissions_boundary.as_deref().map(Into::into),
            other_tags: user.tags.iter().filter(|tag| !derived.contains(tag)).cloned().collect(),
        })
    }

    /// The user again, `derived` being the same tags as given to [`Self::of`].
    pub fn user(&self, derived: &[(String, String)]) -> User {
        let mut tags = derived.to_vec();
        tags.extend(self.other_tags.iter().cloned());
        User {
            arn: self.arn.to_string(),
            tags,
            permissions_boundary: self.boundary.as_deref().map(Into::into),
        }
    }
}

#[derive(Default)]
struct Entry {
    /// resourceVersions this controller wrote, or read in a pass that settled: their events are echoes.
    known: [Version; KNOWN_VERSIONS],
    /// Related changes seen since the last pass started, judged when the next reconcile starts (by then
    /// the pass that may have made them has recorded its writes).
    touches: Vec<Touch>,
    /// How many of `touches` the running pass started after (it accounts for them).
    pass_touches: usize,
    /// What the last pass read of the object's Bucket ([`bucket_view`]), recorded as soon as it read it.
    bucket: Option<u64>,
    /// The status the last pass left ([`status_hash`]): written, or found already so.
    status: Option<u64>,
    /// How many passes in a row ended waiting for someone else's change ([`Memo::wait_longer`]).
    waits: u8,
    /// Found to need a pass at once before any pass settled it ([`Memo::mark_urgent`]).
    urgent: bool,
    /// Boxed: most of the table is entries, and an entry without it stays small.
    settled: Option<Box<SettledEntry>>,
}

/// An object's uid as a key: a Kubernetes uid is a UUID, 16 bytes (anything else, hashed to as many).
type Uid = u128;

fn key(uid: &str) -> Uid {
    let hex: String = uid.chars().filter(|c| *c != '-').collect();
    match u128::from_str_radix(&hex, 16) {
        Ok(value) if hex.len() == 32 => value,
        _ => {
            let half = |salt: u8| {
                let mut hasher = DefaultHasher::new();
                (salt, uid).hash(&mut hasher);
                hasher.finish()
            };
            (u128::from(half(1)) << 64) | u128::from(half(2))
        }
    }
}

impl Entry {
    /// Whether `touch` is a change from what this object's passes wrote or read: a Secret version this
    /// controller did not write, or a Bucket that no longer looks as the last pass read it.
    fn changed_by(&self, touch: &Touch, secrets: Option<&HashMap<String, String>>) -> bool {
        match touch {
            Touch::Secret { key, resource_version } => {
                secrets.and_then(|s| s.get(key)) != Some(resource_version)
            }
            Touch::Bucket(view) => self.bucket != Some(*view),
            // Nothing of a class is remembered: any change someone made to it may matter.
            Touch::Class(_) => true,
            // Nor of a ServiceAccount: its (re-)creation or annotation may matter to a keyless binding.
            Touch::ServiceAccount(_) => true,
            // Only made when the count differs from the Bucket's status.
            Touch::Bindings(_) => true,
        }
    }
}

/// A related change.
#[derive(Clone, Debug, PartialEq)]
pub enum Touch {
    /// A Secret listing the object changed: it matters unless this controller wrote that version.
    Secret { key: String, resource_version: String },
    /// The object's Bucket changed: it matters if it no longer looks as the last pass saw it.
    Bucket(u64),
    /// The BucketClass of the object (or of its Bucket) changed, to this resourceVersion.
    Class(String),
    /// The ServiceAccount of a keyless binding changed, to this resourceVersion.
    ServiceAccount(String),
    /// A Bucket's bindings and service keys came or went: this many name it now, not what its status says.
    Bindings(i32),
}

/// The longest an object waiting for someone else's change goes without a pass ([`Memo::wait_longer`]).
pub const LONGEST_WAIT: Duration = Duration::from_secs(600);

/// At most this many touches are kept per object; past that, the object is simply dirty.
const MAX_TOUCHES: usize = 8;

struct SettledEntry {
    fingerprint: u64,
    converged: bool,
    due: Instant,
    user: Option<RememberedUser>,
}

/// The memory of one controller process, shared by every controller.
pub struct Memo {
    objects: Mutex<HashMap<Uid, Entry>>,
    /// `namespace/name` of each Secret this controller wrote, with the resourceVersion it wrote.
    secrets: Mutex<HashMap<String, String>>,
    /// Admission of background passes: at most half the concurrency, so that new work always finds a slot.
    background: Arc<Semaphore>,
    /// Objects whose background pass was put off for lack of a slot.
    deferred: Mutex<HashSet<Uid>>,
    /// Objects with a pass under way, and the wake-up of whoever waits for one to end ([`Memo::after_pass`]).
    running: Mutex<HashSet<Uid>>,
    pass_ended: Notify,
}

/// Marks a pass of one object as under way until dropped (also when the pass is stopped or cancelled).
pub struct Running<'a> {
    memo: &'a Memo,
    uid: Uid,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut running) = self.memo.running.lock() {
            running.remove(&self.uid);
        }
        self.memo.pass_ended.notify_waiters();
    }
}

impl Memo {
    pub fn new(concurrency: u16) -> Self {
        Memo {
            objects: Mutex::default(),
            secrets: Mutex::default(),
            background: Arc::new(Semaphore::new(usize::from(concurrency / 2).max(1))),
            deferred: Mutex::default(),
            running: Mutex::default(),
            pass_ended: Notify::new(),
        }
    }

    /// Marks a pass of the object with `uid` as under way, until the returned guard is dropped. The related
    /// changes recorded so far are the pass's: it reads what they touched from now on (a change that came
    /// while the pass waited for its turn, after [`Self::classify`], needs no pass of its own).
    pub fn running(&self, uid: &str) -> Running<'_> {
        if let Ok(mut objects) = self.objects.lock()
            && let Some(entry) = objects.get_mut(&key(uid))
        {
            entry.pass_touches = entry.touches.len();
        }
        let uid = key(uid);
        if let Ok(mut running) = self.running.lock() {
            running.insert(uid);
        }
        Running { memo: self, uid }
    }

    /// Waits until no pass of any of `uids` is under way. A watch event of an object whose pass is running
    /// may be the echo of a write whose response the pass has not recorded yet: judged after the pass, it is
    /// known for what it is (an own write starts no pass; anything else still does, only later).
    pub async fn after_pass(&self, uids: &[&str]) {
        let uids: Vec<Uid> = uids.iter().map(|uid| key(uid)).collect();
        loop {
            let ended = self.pass_ended.notified();
            let mut ended = std::pin::pin!(ended);
            ended.as_mut().enable();
            let busy = self.running.lock().is_ok_and(|running| uids.iter().any(|uid| running.contains(uid)));
            if !busy {
                return;
            }
            ended.await;
        }
    }

    fn with<T>(&self, uid: &str, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        let mut objects = self.objects.lock().ok()?;
        Some(f(objects.entry(key(uid)).or_default()))
    }

    /// Records a resourceVersion of the object with `uid` that this controller wrote.
    pub fn wrote(&self, uid: &str, resource_version: Option<&str>) {
        let Some(rv) = resource_version else { return };
        self.with(uid, |entry| remember(&mut entry.known, version(rv)));
    }

    /// Whether this version of an object is one this controller wrote or already settled.
    pub fn is_echo<K: Resource>(&self, obj: &K) -> bool {
        let (Some(uid), Some(rv)) = (obj.meta().uid.as_deref(), obj.meta().resource_version.as_deref())
        else {
            return false;
        };
        let Ok(objects) = self.objects.lock() else { return false };
        objects.get(&key(uid)).is_some_and(|e| e.known.contains(&version(rv)))
    }

    /// Decides what a reconcile of `obj` is ([`Class`]), and marks the start of its pass. `status` is the
    /// [`status_hash`] of the object's status as it reads.
    pub fn classify<K: Resource>(&self, obj: &K, status: u64, looks_converged: bool) -> Class {
        let meta = obj.meta();
        let (Some(uid), Some(rv)) = (meta.uid.as_deref(), meta.resource_version.as_deref()) else {
            return Class::Urgent;
        };
        if meta.deletion_timestamp.is_some() {
            return Class::Urgent;
        }
        let fingerprint = fingerprint(obj);
        let now = Instant::now();
        let Ok(mut objects) = self.objects.lock() else { return Class::Urgent };
        let secrets = self.secrets.lock().ok();
        let entry = objects.entry(key(uid)).or_default();
        entry.pass_touches = entry.touches.len();
        // A version this controller wrote or settled, or one whose status is still as the last pass left it
        // (a new version with only labels or others' annotations changed); a status changed by someone else
        // is restored at once.
        let unchanged = entry.known.contains(&version(rv)) || entry.status == Some(status);
        let settled = entry.settled.as_ref();
        let dirty = entry.touches.len() >= MAX_TOUCHES
            || entry.touches.iter().any(|touch| entry.changed_by(touch, secrets.as_deref()));
        let class = match settled {
            _ if entry.urgent => Class::Urgent,
            Some(s) if s.fingerprint == fingerprint && !dirty && unchanged => {
                if now < s.due {
                    Class::Settled(s.due - now)
                } else if s.converged {
                    Class::Background
                } else {
                    Class::Urgent
                }
            }
            // Nothing known of it (a new object, or the first pass after a restart).
            None if looks_converged => Class::Background,
            _ => Class::Urgent,
        };
        if class == Class::Urgent
            && let Some(settled) = entry.settled.as_mut()
        {
            // Something changed: the pass reads everything from AWS again.
            settled.user = None;
        }
        class
    }

    /// Records the pass that just ended well for `obj` (as it read it).
    pub fn settle<K: Resource>(&self, obj: &K, settled: Settled) {
        let meta = obj.meta();
        let Some(uid) = meta.uid.as_deref() else { return };
        let fingerprint = fingerprint(obj);
        self.with(uid, |entry| {
            if let Some(rv) = meta.resource_version.as_deref() {
                remember(&mut entry.known, version(rv));
            }
            let accounted = entry.pass_touches.min(entry.touches.len());
            entry.touches.drain(..accounted);
            entry.pass_touches = 0;
            entry.urgent = false;
            if settled.converged {
                entry.waits = 0;
            }
            entry.settled = Some(Box::new(SettledEntry {
                fingerprint,
                converged: settled.converged,
                due: Instant::now() + settled.after,
                user: settled.user,
            }));
        });
    }

    /// How long the object with `uid` waits before its next pass, when this one ended waiting for someone
    /// else's change (a Bucket, a ServiceAccount, a foreign Secret out of the way): `first` the first time,
    /// twice as long each time in a row, at most [`LONGEST_WAIT`]. A converged pass starts it over.
    pub fn wait_longer(&self, uid: &str, first: Duration) -> Duration {
        let waits = self
            .with(uid, |entry| {
                entry.waits = entry.waits.saturating_add(1);
                entry.waits
            })
            .unwrap_or(1);
        first.saturating_mul(2u32.saturating_pow(u32::from(waits - 1).min(16))).min(LONGEST_WAIT)
    }

    /// Records the status a pass left on the object with `uid` ([`status_hash`]), written or found so.
    pub fn status_is(&self, uid: &str, status: u64) {
        self.with(uid, |entry| entry.status = Some(status));
    }

    /// Forgets what the last pass settled (it failed): the next one starts from AWS again.
    pub fn unsettle(&self, uid: &str) {
        self.with(uid, |entry| entry.settled = None);
    }

    /// Forgets the object (deleted).
    pub fn forget(&self, uid: &str) {
        if let Ok(mut objects) = self.objects.lock() {
            objects.remove(&key(uid));
        }
        if let Ok(mut deferred) = self.deferred.lock() {
            deferred.remove(&key(uid));
        }
    }

    /// Records a related change to the object, and says whether it may matter (then the caller wakes the
    /// object). An object never reconciled in this process is only woken: its first pass reads everything.
    /// One whose pass is running or failed keeps the change, judged when its next reconcile starts.
    pub fn touch(&self, uid: &str, touch: Touch) -> bool {
        let Ok(mut objects) = self.objects.lock() else { return true };
        let Some(entry) = objects.get_mut(&key(uid)) else { return true };
        // A Bucket change before the running first pass has read the Bucket is kept too: it matters unless
        // the pass then reads the Bucket as it is now (so a Bucket that became ready meanwhile wakes it).
        let matters = entry.changed_by(&touch, self.secrets.lock().ok().as_deref());
        if matters && entry.touches.len() < MAX_TOUCHES && !entry.touches.contains(&touch) {
            entry.touches.push(touch);
        }
        matters
    }

    /// Marks the object as needing a pass at once, even if it looks converged and this process has not
    /// reconciled it yet (after a restart or a relist, its Secret was found missing or taken over): its next
    /// reconcile is urgent, whatever else it would be, until a pass settles it.
    pub fn mark_urgent(&self, uid: &str) {
        self.with(uid, |entry| entry.urgent = true);
    }

    /// Records what a pass just read of the object's Bucket: a later change to it is judged against this.
    pub fn saw_bucket(&self, uid: &str, view: u64) {
        self.with(uid, |entry| entry.bucket = Some(view));
    }

    /// The IAM user as the last settled pass left it.
    pub fn user(&self, uid: &str) -> Option<RememberedUser> {
        let objects = self.objects.lock().ok()?;
        objects.get(&key(uid))?.settled.as_ref()?.user.clone()
    }

    /// Records a Secret this controller wrote.
    pub fn wrote_secret(&self, namespace: &str, name: &str, resource_version: Option<&str>) {
        if let (Ok(mut secrets), Some(rv)) = (self.secrets.lock(), resource_version) {
            secrets.insert(format!("{namespace}/{name}"), rv.to_owned());
        }
    }

    /// Forgets a Secret this controller deleted.
    pub fn forget_secret(&self, namespace: &str, name: &str) {
        if let Ok(mut secrets) = self.secrets.lock() {
            secrets.remove(&format!("{namespace}/{name}"));
        }
    }

    /// Whether this controller wrote the Secret `namespace/name` (any version) and has not forgotten it.
    pub fn knows_secret(&self, namespace: &str, name: &str) -> bool {
        self.secrets.lock().is_ok_and(|secrets| secrets.contains_key(&format!("{namespace}/{name}")))
    }

    /// Whether this version of a Secret is one this controller wrote.
    pub fn is_own_secret(&self, namespace: &str, name: &str, resource_version: Option<&str>) -> bool {
        let Ok(secrets) = self.secrets.lock() else { return false };
        resource_version.is_some()
            && secrets.get(&format!("{namespace}/{name}")).map(String::as_str) == resource_version
    }

    /// A slot for a background pass, if one is free (the caller then puts the pass off,
    /// [`Self::defer_background`]).
    pub fn admit_background(&self, uid: &str) -> Option<OwnedSemaphorePermit> {
        let permit = self.background.clone().try_acquire_owned().ok()?;
        if let Ok(mut deferred) = self.deferred.lock() {
            deferred.remove(&key(uid));
        }
        Some(permit)
    }

    /// How long to put off a background pass that found no free slot: the more passes are waiting, the
    /// longer, spread by the uid so that they come back one by one.
    pub fn defer_background(&self, uid: &str) -> Duration {
        let Ok(mut deferred) = self.deferred.lock() else { return Duration::from_secs(1) };
        deferred.insert(key(uid));
        let spread = Duration::from_millis(20).saturating_mul(deferred.len() as u32);
        let share = (crate::desired::names::stable_hash(uid) % 1000) as f64 / 1000.0;
        Duration::from_secs(1) + spread.min(Duration::from_secs(300)).mul_f64(0.5 + share)
    }
}

/// Adds `version` to `known`, dropping the oldest (versions are never 0: an empty slot is).
fn remember(known: &mut [Version; KNOWN_VERSIONS], version: Version) {
    if known.contains(&version) {
        return;
    }
    known.rotate_left(1);
    known[KNOWN_VERSIONS - 1] = version;
}

/// What of an object a pass depends on: its spec (the generation), deletion, the finalizers and the
/// controller's own annotations (`bucketbroker.io/...`: the rotation request). A change to any of these,
/// even in a version this controller wrote (a status write returns the object with changes made
/// meanwhile), needs a pass; a change to anything else (labels, other annotations) needs none.
fn fingerprint<K: Resource>(obj: &K) -> u64 {
    let meta = obj.meta();
    let mut hasher = DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.deletion_timestamp.is_some().hash(&mut hasher);
    meta.finalizers.hash(&mut hasher);
    if let Some(annotations) = &meta.annotations {
        for (key, value) in annotations.iter().filter(|(k, _)| k.starts_with(super::context::OWN_ANNOTATIONS))
        {
            (key, value).hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// A status, as [`Memo::classify`] compares it with the one the last pass left.
pub fn status_hash<S: serde::Serialize>(status: Option<&S>) -> u64 {
    let mut hasher = DefaultHasher::new();
    status.and_then(|s| serde_json::to_vec(s).ok()).hash(&mut hasher);
    hasher.finish()
}

/// What a binding depends on in its Bucket: which one it is, whether it is ready or going, and where the
/// AWS bucket is. A Bucket event that changes none of these wakes no binding.
pub fn bucket_view(bucket: Option<&crate::api::Bucket>) -> u64 {
    let mut hasher = DefaultHasher::new();
    if let Some(bucket) = bucket {
        bucket.metadata.uid.hash(&mut hasher);
        bucket.metadata.deletion_timestamp.is_some().hash(&mut hasher);
        let status = bucket.status.as_ref();
        status.is_some_and(|s| is_true(&s.conditions, types::READY)).hash(&mut hasher);
        status.and_then(|s| s.bucket_name.as_deref()).hash(&mut hasher);
        status.and_then(|s| s.region.as_deref()).hash(&mut hasher);
        bucket.spec.region.hash(&mut hasher);
    }
    hasher.finish()
}

/// Whether an object's status says it converged at its current generation (a hint, used only to
/// schedule: such an object's first pass after a restart is background work).
pub fn looks_converged(
    meta: &kube::api::ObjectMeta,
    observed_generation: Option<i64>,
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> bool {
    meta.deletion_timestamp.is_none()
        && observed_generation == meta.generation
        && is_true(conditions, types::READY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Bucket;

    fn bucket(uid: &str, rv: &str, generation: i64) -> Bucket {
        let mut bucket: Bucket = serde_json::from_value(serde_json::json!({
            "apiVersion": "bucketbroker.io/v1alpha1", "kind": "Bucket",
            "metadata": {"name": "b", "namespace": "n", "uid": uid, "resourceVersion": rv, "generation": generation},
            "spec": {}
        }))
        .expect("bucket");
        bucket.metadata.finalizers = Some(vec!["f".to_owned()]);
        bucket
    }

    fn settled(after: u64) -> Settled {
        Settled { converged: true, after: Duration::from_secs(after), user: None }
    }

    #[tokio::test(start_paused = true)]
    async fn an_own_write_is_an_echo_and_a_settled_object_waits_for_its_due_time() {
        let memo = Memo::new(4);
        let first = bucket("u", "1", 1);
        assert_eq!(memo.classify(&first, 0, false), Class::Urgent, "a new object");
        memo.wrote("u", Some("2"));
        memo.settle(&first, settled(60));
        let echo = bucket("u", "2", 1);
        assert!(memo.is_echo(&echo));
        assert!(matches!(memo.classify(&echo, 0, true), Class::Settled(d) if d == Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(memo.classify(&echo, 0, true), Class::Background, "due: a periodic verification");
    }

    #[tokio::test(start_paused = true)]
    async fn changes_by_others_are_urgent() {
        let memo = Memo::new(4);
        let first = bucket("u", "1", 1);
        memo.classify(&first, 0, false);
        memo.settle(&first, settled(60));
        assert_eq!(memo.classify(&bucket("u", "3", 1), 5, true), Class::Urgent, "a version not ours");
        memo.status_is("u", 5);
        memo.settle(&first, settled(60));
        let mut labelled = bucket("u", "4", 1);
        labelled.metadata.labels = Some([("team".to_owned(), "a".to_owned())].into());
        labelled.metadata.annotations = Some([("example.com/note".to_owned(), "x".to_owned())].into());
        assert!(
            matches!(memo.classify(&labelled, 5, true), Class::Settled(_)),
            "labels and others' annotations, the status as the pass left it: no pass"
        );
        assert_eq!(memo.classify(&labelled, 6, true), Class::Urgent, "a status changed by someone else");
        let mut annotated = bucket("u", "1", 1);
        annotated.metadata.annotations =
            Some([(crate::desired::rotation::ROTATE_ANNOTATION.to_owned(), "now".to_owned())].into());
        assert_eq!(
            memo.classify(&annotated, 0, true),
            Class::Urgent,
            "a rotation asked in a version we wrote"
        );
        assert_eq!(memo.classify(&bucket("u", "1", 2), 0, true), Class::Urgent, "a spec change");
        memo.saw_bucket("u", 3);
        assert!(!memo.touch("u", Touch::Bucket(3)), "a Bucket as the pass saw it");
        assert!(memo.touch("u", Touch::Bucket(7)), "a Bucket that looks different");
        assert_eq!(memo.classify(&first, 0, true), Class::Urgent, "a related change");
        memo.settle(&first, settled(60));
        assert!(matches!(memo.classify(&first, 0, true), Class::Settled(_)), "settled again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_related_change_during_a_pass_is_not_lost() {
        let memo = Memo::new(4);
        let first = bucket("u", "1", 1);
        memo.classify(&first, 0, false);
        memo.settle(&first, settled(60));
        memo.classify(&first, 0, false);
        let edit = Touch::Secret { key: "n/s".to_owned(), resource_version: "5".to_owned() };
        assert!(memo.touch("u", edit), "a Secret version not ours");
        memo.settle(&first, settled(60));
        assert_eq!(memo.classify(&first, 0, true), Class::Urgent, "the edit came during the pass: not lost");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_while_the_pass_waits_for_its_turn_is_the_pass_s() {
        let memo = Memo::new(4);
        let first = bucket("u", "1", 1);
        assert_eq!(memo.classify(&first, 0, false), Class::Urgent);
        // A binding of the Bucket arrives while the Bucket's pass waits for a slot: the pass counts it.
        assert!(memo.touch("u", Touch::Bindings(1)));
        let running = memo.running("u");
        assert!(memo.touch("u", Touch::Bindings(2)), "one more, during the pass");
        drop(running);
        memo.settle(&first, settled(60));
        assert_eq!(memo.classify(&first, 0, true), Class::Urgent, "the one during the pass is not lost");
        let running = memo.running("u");
        drop(running);
        memo.settle(&first, settled(60));
        assert!(matches!(memo.classify(&first, 0, true), Class::Settled(_)), "nothing after the pass began");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_during_the_first_pass_is_not_lost() {
        let memo = Memo::new(4);
        let first = bucket("u", "1", 1);
        assert_eq!(memo.classify(&first, 0, false), Class::Urgent);
        assert!(memo.touch("u", Touch::Secret { key: "n/s".to_owned(), resource_version: String::new() }));
        memo.settle(&first, settled(60));
        assert_eq!(memo.classify(&first, 0, true), Class::Urgent, "the Secret deleted meanwhile");
        assert!(memo.touch("v", Touch::Bucket(1)), "never reconciled here: woken, nothing recorded");
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_that_changes_before_the_first_pass_reads_it_wakes_the_object() {
        let memo = Memo::new(4);
        let first = bucket("u", "1", 1);
        assert_eq!(memo.classify(&first, 0, false), Class::Urgent);
        // The Bucket becomes ready (view 2) after the pass started, before it read the Bucket, and the pass
        // still reads it not ready (view 1): it settles waiting for it.
        assert!(memo.touch("u", Touch::Bucket(2)), "a Bucket change before the pass read it");
        memo.saw_bucket("u", 1);
        memo.settle(&first, settled(60));
        assert_eq!(memo.classify(&first, 0, false), Class::Urgent, "the change is not lost");
        // Had the pass read the Bucket as it now is, nothing would be left to do.
        let second = bucket("w", "1", 1);
        memo.classify(&second, 0, false);
        assert!(memo.touch("w", Touch::Bucket(2)));
        memo.saw_bucket("w", 2);
        memo.settle(&second, settled(60));
        assert!(matches!(memo.classify(&second, 0, false), Class::Settled(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_object_marked_urgent_is_not_background_work_until_a_pass_settles_it() {
        let memo = Memo::new(4);
        let converged = bucket("u", "1", 1);
        memo.mark_urgent("u");
        assert_eq!(memo.classify(&converged, 0, true), Class::Urgent, "not yet reconciled here");
        assert_eq!(memo.classify(&converged, 0, true), Class::Urgent, "until a pass settles it");
        memo.settle(&converged, settled(60));
        assert!(matches!(memo.classify(&converged, 0, true), Class::Settled(_)));
        assert_eq!(memo.classify(&bucket("v", "1", 1), 0, true), Class::Background, "not marked");
    }

    #[test]
    fn an_own_secret_write_seen_before_it_was_recorded_is_an_echo() {
        let memo = Memo::new(4);
        let first = bucket("u", "1", 1);
        memo.classify(&first, 0, false);
        memo.settle(&first, settled(60));
        memo.classify(&first, 0, false);
        let echo = Touch::Secret { key: "n/s".to_owned(), resource_version: "5".to_owned() };
        assert!(memo.touch("u", echo), "not known yet when its event came");
        memo.wrote_secret("n", "s", Some("5"));
        memo.settle(&first, settled(60));
        assert!(matches!(memo.classify(&first, 0, true), Class::Settled(_)));
        assert!(!memo.touch("u", Touch::Secret { key: "n/s".to_owned(), resource_version: "5".to_owned() }));
    }

    #[test]
    fn after_a_restart_converged_objects_are_background_work() {
        let memo = Memo::new(4);
        assert_eq!(memo.classify(&bucket("a", "1", 1), 0, true), Class::Background);
        assert_eq!(memo.classify(&bucket("b", "1", 1), 0, false), Class::Urgent);
        let mut deleting = bucket("c", "1", 1);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(memo.classify(&deleting, 0, true), Class::Urgent);
    }

    #[test]
    fn background_passes_take_at_most_half_the_slots_and_the_rest_wait_longer_the_more_there_are() {
        let memo = Memo::new(4);
        let held: Vec<_> = ["a", "b"].iter().map(|u| memo.admit_background(u).expect("a slot")).collect();
        assert!(memo.admit_background("c").is_none(), "no slot");
        let first = memo.defer_background("c");
        for i in 0..100 {
            if memo.admit_background(&format!("w{i}")).is_none() {
                memo.defer_background(&format!("w{i}"));
            }
        }
        let later = memo.defer_background("c");
        assert!(later > first, "{later:?} after {first:?}");
        drop(held);
        assert!(memo.admit_background("c").is_some());
    }

    #[test]
    fn waiting_on_others_backs_off_to_ten_minutes_and_starts_over_once_converged() {
        let memo = Memo::new(4);
        let first = bucket("u", "1", 1);
        memo.classify(&first, 0, false);
        let waits: Vec<u64> =
            (0..7).map(|_| memo.wait_longer("u", Duration::from_secs(30)).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(memo.wait_longer("v", Duration::from_secs(30)).as_secs(), 30, "per object");
        memo.settle(&first, settled(60));
        assert_eq!(memo.wait_longer("u", Duration::from_secs(30)).as_secs(), 30, "converged: from the start");
    }

    #[test]
    fn a_remembered_user_is_the_user_again() {
        let derived = vec![("uid".to_owned(), "u".to_owned()), ("cluster".to_owned(), "c".to_owned())];
        let mut tags = derived.clone();
        tags.push(("retiring".to_owned(), "AKIA:5".to_owned()));
        let user = User {
            arn: "arn:aws:iam::1:user/x".to_owned(),
            tags,
            permissions_boundary: Some("b".to_owned()),
        };
        let remembered = RememberedUser::of(&user, &derived).expect("carries every derived tag");
        assert_eq!(remembered.other_tags.len(), 1, "only what cannot be derived is kept");
        assert_eq!(remembered.user(&derived), user);
        let foreign = User { tags: derived[..1].to_vec(), ..user };
        assert_eq!(
            RememberedUser::of(&foreign, &derived),
            None,
            "a user lacking a derived tag is read again"
        );
    }

    #[test]
    fn uids_are_keyed_exactly() {
        assert_eq!(key("0b6c3d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d"), 0x0b6c3d4e5f604a1b8c2d3e4f5a6b7c8d);
        assert_ne!(key("not-a-uuid"), key("not-a-uuid-either"));
        assert_eq!(key("not-a-uuid"), key("not-a-uuid"));
    }

    #[test]
    fn own_secret_writes_are_recognised_by_version() {
        let memo = Memo::new(4);
        memo.wrote_secret("n", "s", Some("7"));
        assert!(memo.is_own_secret("n", "s", Some("7")));
        assert!(!memo.is_own_secret("n", "s", Some("8")));
        assert!(!memo.is_own_secret("n", "t", Some("7")));
        memo.forget_secret("n", "s");
        assert!(!memo.is_own_secret("n", "s", Some("7")));
    }
}
