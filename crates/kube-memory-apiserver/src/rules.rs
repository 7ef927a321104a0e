//! What the real registry strategies and the apiextensions server refuse on a write, beyond the
//! structural schema: immutable fields of built-in kinds and the CRDs' CEL rules
//! (`x-kubernetes-validations`, transition rules included).
//!
//! CEL is evaluated by kube's `cel` support (the `kube-cel` crate), the same evaluator kube-rs
//! users run client-side, so a rule behaves here as it does in their unit tests.

use serde_json::Value;

use super::error::Cause;
use super::schema::type_name;
use super::types::ResourceType;

const IMMUTABLE_WHEN_SET: &str = "Forbidden: field is immutable when `immutable` is set";

fn is_immutable(o: &Value) -> bool {
    o.get("immutable").and_then(Value::as_bool) == Some(true)
}

/// The update checks of the Secret and ConfigMap strategies (`ValidateSecretUpdate`,
/// `ValidateConfigMapUpdate`): a Secret's `type` never changes, and once `immutable: true` is set,
/// neither the flag nor the data may change. Metadata stays writable and deletion allowed.
pub(super) fn builtin_update(rt: &ResourceType, old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let (secret, configmap) = (rt.is_secret(), rt.is_configmap());
    if !secret && !configmap {
        return causes;
    }
    if secret && old.get("type") != new.get("type") {
        let t = new.get("type").and_then(Value::as_str).unwrap_or_default();
        causes.push(Cause::new(
            "FieldValueInvalid",
            "type",
            format!("Invalid value: \"{t}\": field is immutable"),
        ));
    }
    if is_immutable(old) {
        if !is_immutable(new) {
            causes.push(Cause::new("FieldValueForbidden", "immutable", IMMUTABLE_WHEN_SET));
        }
        let data_fields: &[&str] = if secret { &["data"] } else { &["data", "binaryData"] };
        for field in data_fields {
            let empty = |o: &Value| {
                o.get(*field).is_none_or(|d| d.is_null() || d.as_object().is_some_and(|m| m.is_empty()))
            };
            let same = old.get(*field) == new.get(*field) || (empty(old) && empty(new));
            if !same {
                causes.push(Cause::new("FieldValueForbidden", *field, IMMUTABLE_WHEN_SET));
            }
        }
    }
    causes
}

/// Whether the schema carries any CEL rule (`x-kubernetes-validations`), at any depth.
pub(super) fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map.contains_key("x-kubernetes-validations") || map.values().any(has_rules),
        Value::Array(items) => items.iter().any(has_rules),
        _ => false,
    }
}

/// The CEL rules of a custom resource's schema. `old` is the stored object on an update (transition
/// rules, those reading `oldSelf`, only run then).
pub(super) fn cel(schema: &Value, new: &Value, old: Option<&Value>) -> Vec<Cause> {
    let compiled = kube::core::cel::compile_schema(schema);
    let Err(errors) = kube::core::cel::validate_compiled(&compiled, new, old) else {
        return Vec::new();
    };
    errors
        .iter()
        .map(|e| {
            // The apiserver shows the schema type of the failing node as the "value".
            let value = pointer(new, &e.field_path).map_or("object", type_name);
            let (reason, message) = match e.reason.as_deref() {
                Some("FieldValueForbidden") => ("FieldValueForbidden", format!("Forbidden: {}", e.message)),
                Some("FieldValueRequired") => {
                    ("FieldValueRequired", format!("Required value: {}", e.message))
                }
                Some("FieldValueDuplicate") => {
                    ("FieldValueDuplicate", format!("Duplicate value: \"{value}\": {}", e.message))
                }
                _ => ("FieldValueInvalid", format!("Invalid value: \"{value}\": {}", e.message)),
            };
            Cause::new(reason, e.field_path.clone(), message)
        })
        .collect()
}

fn pointer<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').filter(|p| !p.is_empty()).try_fold(v, |cur, p| cur.get(p))
}
