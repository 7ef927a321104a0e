//! Events are one resource served through two APIs, as in kube-apiserver: `events.k8s.io/v1` (what
//! kube-rs's `Recorder` writes) and core `v1` (what `kubectl describe` reads, with a field selector on
//! `involvedObject`). Each write through one API is mirrored into the other's storage, converted field by
//! field as the real conversion does, with the same name, uid and resourceVersion.

use serde_json::{Map, Value};

use super::types::StorageKey;

/// `(new API field, core v1 field)`: the fields that differ in name; all others are the same.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn is_core(key: &StorageKey) -> bool {
    key.0.is_empty() && key.1 == "events"
}

fn is_events_v1(key: &StorageKey) -> bool {
    key.0 == "events.k8s.io" && key.1 == "events"
}

/// For an event stored under `key`: the other API's storage key and the object as that API shows it.
pub(super) fn mirror(key: &StorageKey, object: &Value) -> Option<(StorageKey, Value)> {
    if is_events_v1(key) {
        Some((("".to_owned(), "events".to_owned()), rename(object, false)))
    } else if is_core(key) {
        Some((("events.k8s.io".to_owned(), "events".to_owned()), rename(object, true)))
    } else {
        None
    }
}

/// Renames the fields of [`RENAMED`]: to core v1, or (`to_events_v1`) back.
fn rename(object: &Value, to_events_v1: bool) -> Value {
    let Some(fields) = object.as_object() else {
        return object.clone();
    };
    let mut out = Map::new();
    for (field, value) in fields {
        let renamed = RENAMED.iter().find_map(|(new, core)| match to_events_v1 {
            false if field == new => Some(*core),
            true if field == core => Some(*new),
            _ => None,
        });
        out.insert(renamed.unwrap_or(field).to_owned(), value.clone());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_are_renamed_both_ways() {
        let new = json!({
            "metadata": {"name": "e", "namespace": "ns", "uid": "u"},
            "regarding": {"kind": "Bucket", "name": "b"}, "note": "deleted", "reason": "Deleted",
            "reportingController": "bucket-broker", "deprecatedCount": 2, "type": "Normal",
        });
        let (key, core) = mirror(&("events.k8s.io".into(), "events".into()), &new).expect("an event");
        assert_eq!(key, ("".to_owned(), "events".to_owned()));
        assert_eq!(core["involvedObject"]["kind"], "Bucket");
        assert_eq!(core["message"], "deleted");
        assert_eq!(core["reportingComponent"], "bucket-broker");
        assert_eq!(core["count"], 2);
        assert_eq!(core["reason"], "Deleted");
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        let (_, back) = mirror(&key, &core).expect("an event");
        assert_eq!(back, new);
        assert!(mirror(&("".into(), "secrets".into()), &new).is_none());
    }
}
