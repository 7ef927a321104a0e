//! Status writes: conditions stamped with the current time, and one server-side apply of the whole status,
//! skipped when nothing changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Error, MANAGER};
use crate::api::find_condition;
use crate::desired::conditions::{Observation, merge, reasons, types};

/// The conditions after `observations` at `generation`, stamped now.
pub fn conditions_after(
    current: &[Condition],
    observations: &[Observation],
    generation: Option<i64>,
) -> Vec<Condition> {
    merge(current, observations, generation, &Time(k8s_openapi::jiff::Timestamp::now()))
}

/// The Ready observation to write first after a successful pass. While Ready says the CRD is outdated,
/// success is held back for one write: only a write that stores every field shows the CRD was fixed
/// (then the caller reports success with a second write), and reporting Ready sooner would flip it on
/// every pass (each flip a write, each write a new pass). The second value says whether it was held.
pub fn ready_or_held(current: &[Condition], ready: Observation) -> (Observation, bool) {
    match find_condition(current, types::READY) {
        Some(c) if c.reason == reasons::CRD_OUTDATED && c.status == "False" => {
            (Observation::not_ready(reasons::CRD_OUTDATED, c.message.clone()), true)
        }
        _ => (ready, false),
    }
}

/// [`apply_status`], and what the memo must know of it: the version written is the controller's own (also
/// when a stale CRD dropped part of it: the write landed), and the status the pass left is `status`.
pub async fn write_status<K, S>(
    ctx: &super::Context,
    api: &Api<K>,
    obj: &K,
    current: Option<&S>,
    status: &S,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    let uid = obj.meta().uid.as_deref().unwrap_or_default();
    match apply_status(api, obj, current, status).await {
        Ok(written) => {
            ctx.memo.wrote(uid, written.as_deref());
            ctx.memo.status_is(uid, super::memo::status_hash(Some(status)));
            Ok(())
        }
        Err(Error::CrdOutdated { kind, fields, written }) => {
            ctx.memo.wrote(uid, written.as_deref());
            Err(Error::CrdOutdated { kind, fields, written })
        }
        Err(err) => Err(err),
    }
}

/// Writes `status` with server-side apply, unless it equals `current`; returns the resourceVersion written.
///
/// A field the API server drops (a CRD older than this controller prunes it) is an error, not a success:
/// otherwise the next reconcile would find the same difference and write again, forever.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    obj: &K,
    current: Option<&S>,
    status: &S,
) -> Result<Option<String>, Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(None);
    }
    let name = obj.meta().name.as_deref().unwrap_or_default();
    let sent = serde_json::to_value(status).map_err(|_| Error::Incomplete("serializable status"))?;
    let mut patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": sent,
    });
    let params = PatchParams::apply(MANAGER).force();
    let mut undeclared = Vec::new();
    let stored = loop {
        match api.patch_status(name, &params, &Patch::Apply(&patch)).await {
            // A real API server refuses a server-side apply of a field its CRD does not declare (a 500 that
            // names the first such field), where an update would prune it. Write what the CRD does declare,
            // so that the conditions still reach the user, and report the outdated CRD as when pruned.
            // Only the named field goes: the other fields of its object stay ours and are kept.
            Err(kube::Error::Api(refusal)) => match undeclared_field(&refusal.message) {
                Some(path) if !undeclared.contains(&path) => {
                    remove_path(&mut patch["status"], &path);
                    undeclared.push(path);
                }
                _ => return Err(kube::Error::Api(refusal).into()),
            },
            Err(err) => return Err(err.into()),
            Ok(stored) if !undeclared.is_empty() => {
                let fields = undeclared.iter().map(|p| format!("status.{}", p.join("."))).collect::<Vec<_>>();
                return Err(Error::CrdOutdated {
                    kind: K::kind(&()).into_owned(),
                    fields: fields.join(", "),
                    written: own_version(obj, &stored),
                });
            }
            Ok(stored) => break stored,
        }
    };
    let dropped = dropped_fields(&sent, &serde_json::to_value(&stored).unwrap_or_default()["status"]);
    if !dropped.is_empty() {
        return Err(Error::CrdOutdated {
            kind: K::kind(&()).into_owned(),
            fields: dropped.join(", "),
            written: own_version(obj, &stored),
        });
    }
    Ok(own_version(obj, &stored))
}

/// The resourceVersion a status write returned, if it may count as this controller's own write (its watch
/// event then starts no pass): only when the object is otherwise as the pass read it. An apply that
/// changes nothing is not a write: the API server answers with the object as it is, whose version may be
/// someone else's change the pass never saw (a deletion, a new spec, a rotation asked for), and taking it
/// for an echo would hide that change from the controller until the next resync.
fn own_version<K: Resource>(read: &K, stored: &K) -> Option<String> {
    let (read, now) = (read.meta(), stored.meta());
    fn own(meta: &kube::api::ObjectMeta) -> Vec<(&String, &String)> {
        let annotations = meta.annotations.iter().flatten();
        annotations.filter(|(key, _)| key.starts_with(super::context::OWN_ANNOTATIONS)).collect()
    }
    let unchanged = read.generation == now.generation
        && read.deletion_timestamp == now.deletion_timestamp
        && read.finalizers == now.finalizers
        && own(read) == own(now);
    unchanged.then(|| now.resource_version.clone()).flatten()
}

/// The path under `status` that an API server's refusal of a server-side apply names as not declared in
/// its schema: `failed to create typed patch object (…): .status.keyRotation.next: field not declared in
/// schema` is `["keyRotation", "next"]`. A path into a list ends at the list's field.
fn undeclared_field(message: &str) -> Option<Vec<String>> {
    let (before, _) = message.split_once(": field not declared in schema")?;
    let (_, path) = before.rsplit_once(".status.")?;
    let path: String =
        path.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.').collect();
    let path: Vec<String> = path.split('.').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    (!path.is_empty()).then_some(path)
}

/// Removes the field at `path` (object keys) from `value`, or nothing when the path is not there.
fn remove_path(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut current = value;
    for key in parents {
        match current.get_mut(key.as_str()) {
            Some(next) => current = next,
            None => return,
        }
    }
    if let Some(object) = current.as_object_mut() {
        object.remove(last.as_str());
    }
}

/// The top-level status fields that were sent but not stored.
fn dropped_fields(sent: &Value, stored: &Value) -> Vec<String> {
    let Some(sent) = sent.as_object() else { return Vec::new() };
    sent.iter()
        .filter(|(key, value)| !value.is_null() && stored.get(key.as_str()).is_none_or(Value::is_null))
        .map(|(key, _)| format!("status.{key}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binding as a pass reads it, at resourceVersion `rv`.
    fn binding(rv: &str, extra: serde_json::Value) -> crate::api::BucketBinding {
        let mut object = serde_json::json!({
            "apiVersion": "bucketbroker.io/v1alpha1", "kind": "BucketBinding",
            "metadata": {"name": "app", "namespace": "ns", "uid": "u", "resourceVersion": rv, "generation": 1,
                         "finalizers": ["bucketbindings.bucketbroker.io/finalizer"]},
            "spec": {"bucketRef": {"name": "data"}},
        });
        for (key, value) in extra.as_object().into_iter().flatten() {
            object["metadata"][key] = value.clone();
        }
        serde_json::from_value(object).expect("binding")
    }

    #[test]
    fn only_a_version_that_differs_from_the_read_by_status_alone_counts_as_our_write() {
        let read = binding("10", serde_json::json!({}));
        // Our write (or someone's change to labels or others' annotations, which no pass reads).
        let written =
            binding("11", serde_json::json!({"labels": {"team": "a"}, "annotations": {"note": "x"}}));
        assert_eq!(own_version(&read, &written), Some("11".to_owned()));
        // An apply that changed nothing answers with the object as it is now: a change the pass never saw.
        let deleted =
            binding("11", serde_json::json!({"deletionTimestamp": "2026-12-06T22:34:40Z", "generation": 2}));
        assert_eq!(own_version(&read, &deleted), None, "a deletion is never taken for an echo");
        let respecced = binding("11", serde_json::json!({"generation": 2}));
        assert_eq!(own_version(&read, &respecced), None, "nor a new spec");
        let rotate = binding("11", serde_json::json!({"annotations": {"bucketbroker.io/rotate": "now"}}));
        assert_eq!(own_version(&read, &rotate), None, "nor a rotation asked for");
        let unfinalized = binding("11", serde_json::json!({"finalizers": null}));
        assert_eq!(own_version(&read, &unfinalized), None, "nor a finalizer removed");
    }

    #[test]
    fn a_pruned_status_field_is_reported() {
        let sent = serde_json::json!({"bucketName": "b", "conditions": [], "publicUrl": null});
        assert!(dropped_fields(&sent, &sent).is_empty());
        let stored = serde_json::json!({"conditions": []});
        assert_eq!(dropped_fields(&sent, &stored), ["status.bucketName"]);
        assert_eq!(dropped_fields(&sent, &Value::Null), ["status.bucketName", "status.conditions"]);
    }

    #[test]
    fn the_undeclared_field_is_read_from_the_api_servers_refusal() {
        // As kube-apiserver 1.33 words it.
        let top = "failed to create typed patch object (/stale; bucketbroker.io/v1alpha1, Kind=Bucket): \
                   .status.bucketName: field not declared in schema";
        assert_eq!(undeclared_field(top), Some(vec!["bucketName".to_owned()]));
        let nested = "failed to create typed patch object (/app; bucketbroker.io/v1alpha1, \
                      Kind=BucketBinding): .status.keyRotation.next: field not declared in schema";
        assert_eq!(undeclared_field(nested), Some(vec!["keyRotation".to_owned(), "next".to_owned()]));
        let in_list = "failed to create typed patch object (/app; bucketbroker.io/v1alpha1, \
                       Kind=BucketBinding): .status.accessKeys[id=\"AKIA\"].state: field not declared in schema";
        assert_eq!(undeclared_field(in_list), Some(vec!["accessKeys".to_owned()]));
        // Several, if a server lists them all: the first is taken, the next refusal names the next.
        let several = "failed to create typed patch object (/app; bucketbroker.io/v1alpha1, Kind=Bucket): \
                       errors:\n  .status.arn: field not declared in schema\n  \
                       .status.region: field not declared in schema";
        assert_eq!(undeclared_field(several), Some(vec!["arn".to_owned()]));
        assert_eq!(undeclared_field("etcdserver: request timed out"), None);
        assert_eq!(undeclared_field(".spec.x: field not declared in schema"), None);
    }

    #[test]
    fn only_the_undeclared_field_is_removed() {
        let mut status = serde_json::json!({"keyRotation": {"last": "t1", "next": "t2"}, "userName": "u"});
        remove_path(&mut status, &["keyRotation".to_owned(), "next".to_owned()]);
        assert_eq!(status, serde_json::json!({"keyRotation": {"last": "t1"}, "userName": "u"}));
        remove_path(&mut status, &["missing".to_owned(), "x".to_owned()]);
        remove_path(&mut status, &["userName".to_owned()]);
        assert_eq!(status, serde_json::json!({"keyRotation": {"last": "t1"}}));
    }
}
