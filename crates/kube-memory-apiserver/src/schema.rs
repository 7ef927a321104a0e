//! Structural-schema handling for custom resources: pruning, defaulting and validation
//! (in that order, as the apiextensions server does), plus the list-type lookups that
//! server-side apply needs.
//!
//! Supported keywords: `type`, `properties`, `additionalProperties`, `items`, `required`,
//! `enum`, `default`, `nullable`, `minimum`/`maximum`, `minLength`/`maxLength`,
//! `minItems`/`maxItems`, `pattern`, `format` (of strings: `date-time`, `date`, `uuid`,
//! `ipv4`, `ipv6`, `cidr`, `byte`; the numeric `int32`/`int64` are not checked, as upstream),
//! `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string`,
//! `x-kubernetes-embedded-resource`, `x-kubernetes-list-type`/`x-kubernetes-list-map-keys`.
//! Not supported: `oneOf`/`anyOf`/`allOf`/`not`. CEL rules (`x-kubernetes-validations`) are
//! in [`super::rules`].
//!
//! Messages are kube-apiserver's (1.33): `spec.region: Invalid value: "EU_WEST_2":
//! spec.region in body should match '^[a-z0-9-]+$'`, `Too long: may not be more than 32
//! bytes`, `Too many: 3: must have at most 2 items`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;

use serde_json::{Value, json};

use super::error::Cause;

/// How SSA treats a list.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// Schema for `metadata`, which CRD schemas never describe: SSA needs to know that
/// `finalizers` is a set and `ownerReferences` a map keyed by `uid`.
fn metadata_schema() -> &'static Value {
    static META: OnceLock<Value> = OnceLock::new();
    META.get_or_init(|| {
        json!({
            "type": "object",
            "properties": {
                "finalizers": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "ownerReferences": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["uid"],
                    "items": {"type": "object"}
                },
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}}
            }
        })
    })
}

/// A cursor into an optional schema, so walking data with no schema stays simple.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sch<'a> {
    node: Option<&'a Value>,
    root: bool,
}

impl<'a> Sch<'a> {
    pub fn root(schema: Option<&'a Value>) -> Self {
        Sch { node: schema, root: true }
    }

    pub fn prop(&self, name: &str) -> Sch<'a> {
        if self.root && name == "metadata" {
            return Sch { node: Some(metadata_schema()), root: false };
        }
        let node = self.node.and_then(|n| {
            n.get("properties")
                .and_then(|p| p.get(name))
                .or_else(|| n.get("additionalProperties").filter(|a| a.is_object()))
        });
        Sch { node, root: false }
    }

    pub fn items(&self) -> Sch<'a> {
        Sch { node: self.node.and_then(|n| n.get("items")), root: false }
    }

    pub fn list_type(&self) -> ListType {
        let Some(n) = self.node else {
            return ListType::Atomic;
        };
        match n.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(
                n.get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_string)).collect())
                    .unwrap_or_default(),
            ),
            _ => ListType::Atomic,
        }
    }
}

/// The JSON schema type name of a value, as the API server's messages say it.
pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(expected: &str, v: &Value) -> bool {
    match (expected, v) {
        ("object", Value::Object(_)) => true,
        ("array", Value::Array(_)) => true,
        ("string", Value::String(_)) => true,
        ("boolean", Value::Bool(_)) => true,
        ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn child_path(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_string() } else { format!("{path}.{name}") }
}

fn is_true(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

/// What [`process`] found: the causes of a 422 (empty when valid) and the paths of the unknown
/// fields it pruned (an error under `fieldValidation=Strict`).
#[derive(Debug, Default)]
pub(super) struct Processed {
    pub causes: Vec<Cause>,
    pub pruned: Vec<String>,
}

/// Prunes, defaults and validates a whole custom resource in place.
pub(super) fn process(schema: &Value, obj: &mut Value) -> Processed {
    let mut out = Processed::default();
    let Value::Object(map) = obj else {
        return out;
    };
    // apiVersion/kind/metadata belong to the apiserver, not to the CRD schema.
    let keep: Vec<(String, Value)> = ["apiVersion", "kind", "metadata"]
        .iter()
        .filter_map(|k| map.remove(*k).map(|v| (k.to_string(), v)))
        .collect();
    let mut rest = Value::Object(std::mem::take(map));
    walk(schema, &mut rest, "", &mut out);
    if let (Value::Object(m), Value::Object(r)) = (obj, rest) {
        *m = r;
        for (k, v) in keep {
            m.insert(k, v);
        }
    }
    out
}

fn walk(schema: &Value, v: &mut Value, path: &str, out: &mut Processed) {
    let causes = &mut out.causes;
    let int_or_string = is_true(schema, "x-kubernetes-int-or-string");
    if int_or_string {
        if !matches!(v, Value::String(_)) && !type_ok("integer", v) {
            causes.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: \"{}\": {path} in body must be of type int-or-string: \"{}\"",
                    type_name(v),
                    type_name(v)
                ),
            ));
            return;
        }
    } else if let Some(t) = schema.get("type").and_then(Value::as_str)
        && !type_ok(t, v)
    {
        causes.push(Cause::new(
            "FieldValueTypeInvalid",
            path,
            format!(
                "Invalid value: \"{}\": {path} in body must be of type {t}: \"{}\"",
                type_name(v),
                type_name(v)
            ),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        causes.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!("Unsupported value: {}: supported values: {}", v, list.join(", ")),
        ));
    }
    bounds(schema, v, path, causes);
    match v {
        Value::Object(map) => {
            let preserve = is_true(schema, "x-kubernetes-preserve-unknown-fields")
                || is_true(schema, "x-kubernetes-embedded-resource");
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            // Nulls in non-nullable fields are dropped before defaulting, as upstream does.
            map.retain(|k, val| {
                if !val.is_null() {
                    return true;
                }
                let s = props.and_then(|p| p.get(k)).or(additional.filter(|a| a.is_object()));
                s.is_some_and(|s| is_true(s, "nullable"))
            });
            if !preserve && additional.is_none_or(|a| !a.is_object() && a != &Value::Bool(true)) {
                map.retain(|k, _| {
                    let known = props.is_some_and(|p| p.contains_key(k));
                    if !known {
                        out.pruned.push(child_path(path, k));
                    }
                    known
                });
            }
            if let Some(props) = props {
                for (k, ps) in props {
                    if !map.contains_key(k)
                        && let Some(d) = ps.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                }
            }
            for (k, val) in map.iter_mut() {
                let s = props.and_then(|p| p.get(k)).or(additional.filter(|a| a.is_object()));
                if let Some(s) = s {
                    walk(s, val, &child_path(path, k), out);
                }
            }
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        out.causes.push(Cause::new(
                            "FieldValueRequired",
                            child_path(path, r),
                            "Required value",
                        ));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(s, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn bounds(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    let causes = std::cell::RefCell::new(causes);
    let too = |cause: Cause| causes.borrow_mut().push(cause);
    let invalid =
        |msg: String| too(Cause::new("FieldValueInvalid", path, format!("Invalid value: {v}: {msg}")));
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(m) = num("minimum")
                && x < m
            {
                invalid(format!("{path} in body should be greater than or equal to {m}"));
            }
            if let Some(m) = num("maximum")
                && x > m
            {
                invalid(format!("{path} in body should be less than or equal to {m}"));
            }
        }
        Value::String(s) => {
            // Lengths are counted in characters, as kube-openapi does (`utf8.RuneCountInString`), and
            // its string validator reports only the first failure of maxLength, minLength, pattern.
            let len = s.chars().count() as f64;
            if let Some(m) = num("maxLength")
                && len > m
            {
                too(Cause::new(
                    "FieldValueTooLong",
                    path,
                    format!("Too long: may not be more than {m} bytes"),
                ));
            } else if let Some(m) = num("minLength")
                && len < m
            {
                invalid(format!("{path} in body should be at least {m} chars long"));
            } else if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
                && !matches_pattern(pattern, s)
            {
                invalid(format!("{path} in body should match '{pattern}'"));
            }
            if let Some(format) = schema.get("format").and_then(Value::as_str)
                && !format_ok(format, s)
            {
                invalid(format!("{path} in body must be of type {format}: {v}"));
            }
        }
        Value::Array(a) => {
            let len = a.len();
            if let Some(m) = num("minItems")
                && (len as f64) < m
            {
                // The real server shows the list's length as the invalid value.
                too(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!("Invalid value: {len}: {path} in body should have at least {m} items"),
                ));
            }
            if let Some(m) = num("maxItems")
                && (len as f64) > m
            {
                too(Cause::new(
                    "FieldValueTooMany",
                    path,
                    format!("Too many: {len}: must have at most {m} items"),
                ));
            }
        }
        _ => {}
    }
}

/// Whether a schema error keeps the CEL rules from running, as upstream's `hasBlockingErr`.
pub(super) fn blocks_rules(causes: &[Cause]) -> bool {
    causes.iter().any(|c| {
        matches!(
            c.reason,
            "FieldValueTypeInvalid"
                | "FieldValueRequired"
                | "FieldValueNotSupported"
                | "FieldValueTooLong"
                | "FieldValueTooMany"
        )
    })
}

/// Whether `s` matches the schema's `pattern` (unanchored, as Go's RE2 `MatchString`; Rust's
/// `regex` has the same syntax and semantics). Compiled once per pattern. A pattern that does not
/// compile matches nothing: the real server refuses such a CRD, so no object of it is ever valid.
fn matches_pattern(pattern: &str, s: &str) -> bool {
    static COMPILED: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let mut compiled = COMPILED.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    compiled
        .entry(pattern.to_owned())
        .or_insert_with(|| Regex::new(pattern).ok())
        .as_ref()
        .is_some_and(|re| re.is_match(s))
}

/// The string formats kube-apiserver checks (its strfmt registry); unknown formats, and the
/// numeric `int32`/`int64`/`float`/`double`, accept anything, as there.
fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => {
            matches_pattern(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", s)
        }
        "date" => matches_pattern(r"^\d{4}-\d{2}-\d{2}$", s),
        "uuid" => {
            matches_pattern(r"^(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", s)
        }
        "byte" => matches_pattern(r"^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$", s),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            let bits = bits.parse::<u8>();
            match ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => bits.is_ok_and(|b| b <= 32),
                Ok(std::net::IpAddr::V6(_)) => bits.is_ok_and(|b| b <= 128),
                Err(_) => false,
            }
        }),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_default_validate() {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "string", "enum": ["small", "large"]},
                        "replicas": {"type": "integer", "default": 1},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                }
            }
        });
        let mut o = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"},
            "spec": {"size": "small", "junk": 1, "free": {"x": 1}}, "junk": 2});
        let processed = process(&schema, &mut o);
        assert!(processed.causes.is_empty());
        assert_eq!(processed.pruned, vec!["junk", "spec.junk"]);
        assert_eq!(o["spec"]["replicas"], json!(1));
        assert!(o["spec"].get("junk").is_none() && o.get("junk").is_none());
        assert_eq!(o["spec"]["free"]["x"], json!(1));
        assert_eq!(o["metadata"]["name"], json!("a"));

        let mut bad = json!({"spec": {"size": "huge", "replicas": "x"}});
        let causes = process(&schema, &mut bad).causes;
        let mut fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        fields.sort();
        assert_eq!(fields, vec!["spec.replicas", "spec.size"]);
        let mut missing = json!({"spec": {}});
        let causes = process(&schema, &mut missing).causes;
        assert_eq!(causes[0].field, "spec.size");
        assert_eq!(causes[0].reason, "FieldValueRequired");
    }

    /// The keywords a real API server enforces on every field, nested objects and arrays included,
    /// with its messages naming the field.
    #[test]
    fn pattern_format_lengths_and_items_name_the_field() {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "region": {"type": "string", "pattern": "^[a-z0-9-]+$", "maxLength": 8},
                        "ref": {"type": "object", "properties": {
                            "name": {"type": "string", "minLength": 1, "pattern": "^[a-z]+$"}
                        }},
                        "rules": {"type": "array", "maxItems": 2, "items": {"type": "object", "properties": {
                            "days": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 10},
                            "since": {"type": "string", "format": "date-time"}
                        }}}
                    }
                }
            }
        });
        let mut good = json!({"spec": {"region": "eu-west2", "ref": {"name": "abc"},
            "rules": [{"days": 1, "since": "2026-12-06T17:44:46Z"}, {"days": 10}]}});
        assert!(process(&schema, &mut good).causes.is_empty());

        let mut bad = json!({"spec": {"region": "EU_WEST2", "ref": {"name": "Bad_Name"},
            "rules": [{"days": 0}, {"days": 11, "since": "yesterday"}, {}]}});
        let causes = process(&schema, &mut bad).causes;
        let said: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        for expected in [
            r#"spec.region: Invalid value: "EU_WEST2": spec.region in body should match '^[a-z0-9-]+$'"#,
            r#"spec.ref.name: Invalid value: "Bad_Name": spec.ref.name in body should match '^[a-z]+$'"#,
            "spec.rules: Too many: 3: must have at most 2 items",
            "spec.rules[0].days: Invalid value: 0: spec.rules[0].days in body should be greater than or equal to 1",
            "spec.rules[1].days: Invalid value: 11: spec.rules[1].days in body should be less than or equal to 10",
            r#"spec.rules[1].since: Invalid value: "yesterday": spec.rules[1].since in body must be of type date-time: "yesterday""#,
        ] {
            assert!(said.iter().any(|s| s == expected), "missing {expected:?} in {said:#?}");
        }
        assert_eq!(said.len(), 6, "{said:#?}");
        let mut long = json!({"spec": {"region": "EU_WEST_2_AND_MORE"}});
        let causes = process(&schema, &mut long).causes;
        let said: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(
            said,
            vec!["spec.region: Too long: may not be more than 8 bytes"],
            "the first failure only"
        );
        assert!(blocks_rules(&causes), "too long keeps the CEL rules from running");

        let mut empty = json!({"spec": {"ref": {"name": ""}}});
        let causes = process(&schema, &mut empty).causes;
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["spec.ref.name"], "too short, and no more said: {causes:?}");
        assert!(causes[0].message.ends_with("should be at least 1 chars long"), "{causes:?}");
        assert!(!blocks_rules(&causes), "too short lets the CEL rules run");
    }

    #[test]
    fn string_formats() {
        for (format, good, bad) in [
            ("date-time", "2026-12-06T17:44:46.5+01:00", "2026-12-06"),
            ("date", "2026-12-06", "06/12/2026"),
            ("uuid", "0f8fad5b-d9cb-469f-a165-70867728950e", "0f8fad5b"),
            ("ipv4", "10.0.0.1", "10.0.0.256"),
            ("ipv6", "::1", "1.2.3.4"),
            ("cidr", "10.0.0.0/8", "10.0.0.0/33"),
            ("byte", "aGVsbG8=", "hello!"),
        ] {
            assert!(format_ok(format, good), "{format}: {good}");
            assert!(!format_ok(format, bad), "{format}: {bad}");
        }
        assert!(format_ok("int32", "anything"), "numeric formats are not checked on strings");
    }
}
