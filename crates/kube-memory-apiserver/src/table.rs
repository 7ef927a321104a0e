//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get` asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! Custom resources get their CRD's `additionalPrinterColumns` after `Name` (or `Name` and `Age`
//! when there are none), as the apiextensions server prints them; built-in kinds get `Name` and
//! `Created At`. Column JSONPaths support the subset CRDs use: `.a.b`, `.a[0]`, `.a[*].b` and
//! filters `.a[?(@.k=="v")].b`.

use serde_json::{Value, json};

use super::types::ResourceType;

/// Whether the `Accept` header asks for a v1 Table.
pub(super) fn wanted(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.first() == Some(&"application/json")
            && params.contains(&"as=Table")
            && params.contains(&"v=v1")
            && params.contains(&"g=meta.k8s.io")
    })
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically.";

/// The table of `objects`, `list_meta` being the list's metadata (or a get's version).
pub(super) fn table(rt: &ResourceType, objects: &[Value], list_meta: Value, include_object: &str) -> Value {
    let mut columns = vec![json!({
        "name": "Name", "type": "string", "format": "name", "description": NAME_DESCRIPTION, "priority": 0,
    })];
    let printer: Vec<Value> = if rt.schema.is_some() && rt.printer_columns.is_empty() {
        vec![json!({ "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" })]
    } else if rt.schema.is_none() && rt.printer_columns.is_empty() {
        vec![json!({ "name": "Created At", "type": "date", "jsonPath": ".metadata.creationTimestamp" })]
    } else {
        rt.printer_columns.clone()
    };
    for c in &printer {
        columns.push(json!({
            "name": c.get("name").cloned().unwrap_or_default(),
            "type": c.get("type").cloned().unwrap_or(json!("string")),
            "format": c.get("format").cloned().unwrap_or(json!("")),
            "description": c.get("description").cloned().unwrap_or(json!("")),
            "priority": c.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or_default()];
            for c in &printer {
                let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or_default();
                let found = eval(o, path).into_iter().next();
                let cell = match (found, c.get("type").and_then(Value::as_str)) {
                    (None | Some(Value::Null), _) => Value::Null,
                    (Some(Value::String(s)), Some("date")) => json!(age(&s)),
                    (Some(Value::String(s)), _) => json!(s),
                    (Some(v), Some("string")) => json!(v.to_string()),
                    (Some(v), _) => v.clone(),
                };
                cells.push(cell);
            }
            let object = match include_object {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or_default(),
                }),
            };
            json!({ "cells": cells, "object": object })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// A `date` cell as the apiserver prints it: the time since then, `5s`, `3m20s`, `4h`, `12d`.
fn age(timestamp: &str) -> String {
    let Ok(then) = timestamp.parse::<k8s_openapi::jiff::Timestamp>() else {
        return "<invalid>".into();
    };
    let secs = k8s_openapi::jiff::Timestamp::now().as_second() - then.as_second();
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match secs {
        ..-1 => "<invalid>".into(),
        -1..=0 => "0s".into(),
        1..120 => format!("{secs}s"),
        120..600 if secs % 60 != 0 => format!("{m}m{}s", secs % 60),
        120..10_800 => format!("{m}m"),
        10_800..28_800 if m % 60 != 0 => format!("{h}h{}m", m % 60),
        10_800..172_800 => format!("{h}h"),
        172_800..691_200 if h % 24 != 0 => format!("{d}d{}h", h % 24),
        691_200..63_072_000 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

/// Every value `path` selects in `v` (a JSONPath subset; `{.a.b}` braces are optional).
pub(super) fn eval(v: &Value, path: &str) -> Vec<Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}').trim();
    let mut current = vec![v.clone()];
    let mut rest = path.strip_prefix('$').unwrap_or(path);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            current = current.iter().filter_map(|c| c.get(key).cloned()).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = closing_bracket(r) else {
                return Vec::new();
            };
            let selector = &r[..end];
            current = current.iter().flat_map(|c| select(c, selector)).collect();
            rest = &r[end + 1..];
        } else {
            return Vec::new();
        }
    }
    current
}

/// The `]` closing a selector, skipping any inside quotes.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, ch) in s.char_indices() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(ch),
            (None, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

fn select(v: &Value, selector: &str) -> Vec<Value> {
    let Some(items) = v.as_array() else {
        return Vec::new();
    };
    if selector == "*" {
        return items.clone();
    }
    if let Ok(i) = selector.parse::<usize>() {
        return items.get(i).cloned().into_iter().collect();
    }
    let Some(filter) = selector.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) else {
        return Vec::new();
    };
    let Some((left, right)) = filter.split_once("==") else {
        return Vec::new();
    };
    let Some(field) = left.trim().strip_prefix('@') else {
        return Vec::new();
    };
    let want = right.trim().trim_matches(|c| c == '"' || c == '\'');
    items
        .iter()
        .filter(|item| {
            eval(item, field).first().is_some_and(|got| match got {
                Value::String(s) => s == want,
                other => serde_json::from_str::<Value>(want).ok().as_ref() == Some(other),
            })
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_subset() {
        let o = json!({"spec": {"a": {"b": 1}}, "status": {"conditions": [
            {"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(eval(&o, ".spec.a.b"), [json!(1)]);
        assert_eq!(eval(&o, "{.spec.a}"), [json!({"b": 1})]);
        assert_eq!(eval(&o, r#".status.conditions[?(@.type=="Ready")].status"#), [json!("True")]);
        assert_eq!(eval(&o, ".status.conditions[0].type"), [json!("Synced")]);
        assert_eq!(eval(&o, ".status.conditions[*].type"), [json!("Synced"), json!("Ready")]);
        assert!(eval(&o, ".spec.missing.x").is_empty());
        assert!(eval(&o, r#".status.conditions[?(@.type=="Gone")].status"#).is_empty());
    }

    #[test]
    fn date_cells_are_ages() {
        let ago = |secs: i64| {
            let t = k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(secs);
            age(&t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        };
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(200), "3m20s");
        assert_eq!(ago(4 * 3600), "4h");
        assert_eq!(ago(12 * 86_400), "12d");
        assert_eq!(age("yesterday"), "<invalid>");
    }

    #[test]
    fn accept_header() {
        assert!(wanted("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"));
        assert!(!wanted("application/json;as=Table;v=v1beta1;g=meta.k8s.io"));
        assert!(!wanted("application/json"));
    }
}
