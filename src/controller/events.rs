//! Events (events.k8s.io): one reason per kind of step, and a note that says what this step did to which
//! object, so that `kubectl describe` tells what happened.
//!
//! kube's `Recorder` counts every event of one reason and action on one object within minutes as one
//! series, which keeps the first event's note: a second rotation would show the first one's key ids.
//! This recorder counts an event as a repeat only when its note is the same too (a failure retried with
//! the same message, say); anything else is an event of its own.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Client, ResourceExt};
use tokio::sync::Mutex;

/// How long an event is remembered as one a repeat adds to (kube's and client-go's figure).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// How often the events older than the window are forgotten.
const PRUNE_EVERY: SignedDuration = SignedDuration::from_mins(1);

/// The reasons of the events that report a change (`Normal`). Failures use the `Ready` condition's reason.
pub mod reason {
    // IAM users, their policies and keys.
    pub const USER_CREATED: &str = "UserCreated";
    pub const USER_TAGGED: &str = "UserTagged";
    pub const BOUNDARY_SET: &str = "BoundarySet";
    pub const BOUNDARY_REMOVED: &str = "BoundaryRemoved";
    /// The first access policy of a user or a binding's policy on a role.
    pub const ACCESS_GRANTED: &str = "AccessGranted";
    /// An access policy rewritten: the spec changed (permissions, external access, the class), or AWS held
    /// something else.
    pub const POLICY_UPDATED: &str = "PolicyUpdated";
    pub const COMMON_POLICY_ATTACHED: &str = "CommonPolicyAttached";
    pub const COMMON_POLICY_DETACHED: &str = "CommonPolicyDetached";
    pub const KEY_ISSUED: &str = "KeyIssued";
    pub const KEY_ROTATED: &str = "KeyRotated";
    /// A rotation's old key deleted at the end of its overlap.
    pub const KEY_RETIRED: &str = "KeyRetired";
    /// A key no Secret holds (left by an interrupted pass, or of a lost Secret), deleted.
    pub const KEY_DELETED: &str = "KeyDeleted";
    // Keyless: the ServiceAccount's role.
    pub const ROLE_CREATED: &str = "RoleCreated";
    pub const ROLE_TRUST_RESTORED: &str = "RoleTrustRestored";
    pub const SERVICE_ACCOUNT_ANNOTATED: &str = "ServiceAccountAnnotated";
    /// The ServiceAccount's EKS Pod Identity association made, or pointed at its role again.
    pub const POD_IDENTITY_ASSOCIATED: &str = "PodIdentityAssociated";
    // Secrets.
    pub const SECRET_CREATED: &str = "SecretCreated";
    /// The Secret holds a new key (not a rotation's: that is `KeyRotated`).
    pub const SECRET_UPDATED: &str = "SecretUpdated";
    /// A Secret that was deleted, or edited by someone else, written back.
    pub const SECRET_RESTORED: &str = "SecretRestored";
    // Buckets.
    pub const BUCKET_CREATED: &str = "BucketCreated";
    pub const BUCKET_TAGGED: &str = "BucketTagged";
    pub const ENCRYPTION_UPDATED: &str = "EncryptionUpdated";
    pub const PUBLIC_ACCESS_UPDATED: &str = "PublicAccessUpdated";
    pub const OWNERSHIP_ENFORCED: &str = "OwnershipEnforced";
    pub const BUCKET_POLICY_UPDATED: &str = "BucketPolicyUpdated";
    pub const VERSIONING_ENABLED: &str = "VersioningEnabled";
    pub const VERSIONING_SUSPENDED: &str = "VersioningSuspended";
    pub const LIFECYCLE_UPDATED: &str = "LifecycleUpdated";
    pub const CORS_UPDATED: &str = "CORSUpdated";
    pub const CORS_REMOVED: &str = "CORSRemoved";
}

/// One step a pass took, as its event will say it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub reason: &'static str,
    /// A full sentence: what was done, to which object.
    pub note: String,
}

impl Change {
    pub fn new(reason: &'static str, note: impl Into<String>) -> Self {
        Change { reason, note: note.into() }
    }
}

/// What makes an event a repeat of an earlier one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    kind: String,
    name: String,
    warning: bool,
    reason: String,
    action: String,
    note: String,
}

/// Publishes events, counting exact repeats as a series.
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    recent: Mutex<Recent>,
}

/// The events of the last [`SERIES_WINDOW`], by what makes a repeat.
#[derive(Default)]
struct Recent {
    events: HashMap<Key, Published>,
    /// When the entries older than the window were last dropped (at most once a minute, not per event).
    pruned: Option<Timestamp>,
}

/// What a repeat needs of the event it adds to.
struct Published {
    name: String,
    count: i32,
    last_seen: Timestamp,
}

impl Recorder {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        let instance = instance.unwrap_or_else(|| controller.to_owned());
        Recorder { client, controller: controller.to_owned(), instance, recent: Mutex::default() }
    }

    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = Key {
            uid: regarding.uid.clone().unwrap_or_default(),
            kind: regarding.kind.clone().unwrap_or_default(),
            name: regarding.name.clone().unwrap_or_default(),
            warning: type_ == EventType::Warning,
            reason: reason.to_owned(),
            action: action.to_owned(),
            note: note.clone(),
        };
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let api = Api::<Event>::namespaced(self.client.clone(), &namespace);
        // The lock is held over the write: two repeats at once would otherwise both create.
        let mut recent = self.recent.lock().await;
        if recent.pruned.is_none_or(|at| at + PRUNE_EVERY <= now) {
            recent.events.retain(|_, e| e.last_seen + SERIES_WINDOW > now);
            recent.pruned = Some(now);
        }
        let earlier = recent.events.get(&key).filter(|e| e.last_seen + SERIES_WINDOW > now);
        let repeated = match earlier {
            Some(earlier) => {
                let count = earlier.count + 1;
                let series = EventSeries { count, last_observed_time: MicroTime(now) };
                let patch = serde_json::json!({ "series": series });
                let name = earlier.name.clone();
                match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => Some(Ok((name, count))),
                    // The earlier event is gone (expired by the API server): this one starts anew.
                    Err(kube::Error::Api(status)) if status.code == 404 => None,
                    Err(err) => Some(Err(err)),
                }
            }
            None => None,
        };
        let written = match repeated {
            Some(written) => written,
            None => {
                let event = Event {
                    action: Some(action.to_owned()),
                    reason: Some(reason.to_owned()),
                    event_time: Some(MicroTime(now)),
                    regarding: Some(regarding.clone()),
                    note: Some(note),
                    metadata: ObjectMeta {
                        namespace: Some(namespace.clone()),
                        name: Some(format!("{}.{:x}", key.name, now.as_nanosecond())),
                        ..Default::default()
                    },
                    reporting_controller: Some(self.controller.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    type_: Some(if key.warning { "Warning" } else { "Normal" }.to_owned()),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &event).await.map(|created| (created.name_any(), 1))
            }
        };
        match written {
            Ok((name, count)) => {
                recent.events.insert(key, Published { name, count, last_seen: now });
                Ok(())
            }
            // Whether it was written is not known: the next repeat starts anew.
            Err(err) => {
                recent.events.remove(&key);
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::{DeleteParams, ListParams};
    use kube_memory_apiserver::ApiServer;

    fn regarding() -> ObjectReference {
        ObjectReference {
            kind: Some("Bucket".to_owned()),
            name: Some("data".to_owned()),
            namespace: Some("default".to_owned()),
            uid: Some("uid-1".to_owned()),
            ..Default::default()
        }
    }

    async fn events(server: &ApiServer) -> Vec<Event> {
        let api = Api::<Event>::namespaced(server.client(), "default");
        let mut list = api.list(&ListParams::default()).await.expect("list").items;
        list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        list
    }

    /// An exact repeat adds to its event's series; a new note is an event of its own; a repeat of an event
    /// the API server no longer has (expired) starts anew, and is not lost.
    #[tokio::test]
    async fn exact_repeats_make_a_series_and_anything_else_an_event_of_its_own() {
        let server = ApiServer::start().await.expect("server");
        let recorder = Recorder::new(server.client(), "bucket-broker", None);
        let publish = async |note: &str| {
            recorder.publish(&regarding(), EventType::Warning, "AwsError", "Provision", note.to_owned()).await
        };
        publish("S3 is down").await.expect("first");
        publish("S3 is down").await.expect("repeat");
        publish("S3 is down").await.expect("repeat");
        publish("IAM is down").await.expect("another note");
        let listed = events(&server).await;
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(listed[0].note.as_deref(), Some("S3 is down"));
        assert_eq!(listed[0].series.as_ref().map(|s| s.count), Some(3));
        assert_eq!(listed[1].series, None);

        let api = Api::<Event>::namespaced(server.client(), "default");
        api.delete(&listed[0].name_any(), &DeleteParams::default()).await.expect("expired");
        publish("S3 is down").await.expect("a new event in place of the expired one");
        let listed = events(&server).await;
        let down: Vec<_> = listed.iter().filter(|e| e.note.as_deref() == Some("S3 is down")).collect();
        assert_eq!(down.len(), 1, "{listed:?}");
        assert_eq!(down[0].series, None, "a new series starts");
    }
}
