//! Server-side apply and `metadata.managedFields` bookkeeping.
//!
//! Data model: a manager owns a set of *leaf paths*. A path is a list of elements: a field
//! name (`f:`), a list-map item key (`k:{...}`), or a set value (`v:...`). Scalars, atomic
//! lists and empty objects are leaves; a list-map item additionally owns itself (the `.`
//! marker of FieldsV1). The sets live only in `metadata.managedFields`, in the real FieldsV1
//! encoding, and are parsed back on every write, so there is no hidden state.
//!
//! Simplifications: no type-aware conflict detection between a leaf and its ancestors, and
//! `Update` ownership is computed from a plain before/after diff.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::error::{ApiError, Cause};
use super::schema::{ListType, Sch};
use super::types::ResourceType;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Pe {
    F(String),
    K(String),
    V(String),
}

pub(super) type Path = Vec<Pe>;
pub(super) type FieldSet = BTreeSet<Path>;

/// One `managedFields` entry.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl Entry {
    fn same_owner(&self, manager: &str, op: &str, sub: Option<&str>) -> bool {
        self.manager == manager && self.operation == op && self.subresource.as_deref() == sub
    }
}

fn pe_key(p: &Pe) -> String {
    match p {
        Pe::F(n) => format!("f:{n}"),
        Pe::K(k) => format!("k:{k}"),
        Pe::V(v) => format!("v:{v}"),
    }
}

#[derive(Default)]
struct Node {
    own: bool,
    children: BTreeMap<String, Node>,
}

fn encode(set: &FieldSet) -> Value {
    let mut root = Node::default();
    for p in set {
        let mut n = &mut root;
        for e in p {
            n = n.children.entry(pe_key(e)).or_default();
        }
        n.own = true;
    }
    fn to_json(n: &Node) -> Value {
        let mut m = Map::new();
        if n.own && !n.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &n.children {
            m.insert(k.clone(), to_json(c));
        }
        Value::Object(m)
    }
    to_json(&root)
}

fn decode(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn go(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() && !prefix.is_empty() {
            out.insert(prefix.clone());
            return;
        }
        for (k, c) in m {
            if k == "." {
                out.insert(prefix.clone());
                continue;
            }
            let e = if let Some(n) = k.strip_prefix("f:") {
                Pe::F(n.to_string())
            } else if let Some(n) = k.strip_prefix("k:") {
                Pe::K(canonical(n))
            } else if let Some(n) = k.strip_prefix("v:") {
                Pe::V(canonical(n))
            } else {
                continue;
            };
            prefix.push(e);
            go(c, prefix, out);
            prefix.pop();
        }
    }
    go(v, &mut Vec::new(), &mut out);
    out
}

fn canonical(json_text: &str) -> String {
    serde_json::from_str::<Value>(json_text).map(|v| v.to_string()).unwrap_or_else(|_| json_text.to_string())
}

pub(super) fn read_entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default();
                    Entry {
                        manager: s("manager").into(),
                        operation: s("operation").into(),
                        api_version: s("apiVersion").into(),
                        time: s("time").into(),
                        subresource: e.get("subresource").and_then(Value::as_str).map(str::to_string),
                        fields: e.get("fieldsV1").map(decode).unwrap_or_default(),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let arr: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode(&e.fields),
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if arr.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(arr));
        }
    }
}

const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The part of an object a manager can own through `sub` (the main resource or `status`).
pub(super) fn ownable(rt: &ResourceType, obj: &Value, sub: Option<&str>) -> Value {
    let mut out = Map::new();
    let Some(m) = obj.as_object() else {
        return Value::Object(out);
    };
    for (k, v) in m {
        let keep = match (sub, k.as_str()) {
            (_, "apiVersion" | "kind") => false,
            (Some("status"), "status") => true,
            (Some(_), _) => false,
            (None, "status") => !rt.status_subresource,
            (None, _) => true,
        };
        if !keep {
            continue;
        }
        if k == "metadata" {
            let mut meta = v.as_object().cloned().unwrap_or_default();
            for f in SERVER_METADATA {
                meta.remove(*f);
            }
            if !meta.is_empty() {
                out.insert(k.clone(), Value::Object(meta));
            }
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

fn item_key(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    Value::Object(m).to_string()
}

/// Leaf paths of `v` with their values (list-map items map to `true`, their own marker).
pub(super) fn leaves(v: &Value, sch: Sch, prefix: &mut Path, out: &mut BTreeMap<Path, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                prefix.push(Pe::F(k.clone()));
                leaves(c, sch.prop(k), prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) if !a.is_empty() => match sch.list_type() {
            ListType::Map(keys) => {
                for item in a {
                    prefix.push(Pe::K(item_key(item, &keys)));
                    out.insert(prefix.clone(), Value::Bool(true));
                    leaves(item, sch.items(), prefix, out);
                    prefix.pop();
                }
            }
            ListType::Set => {
                for item in a {
                    prefix.push(Pe::V(item.to_string()));
                    out.insert(prefix.clone(), item.clone());
                    prefix.pop();
                }
            }
            ListType::Atomic => {
                out.insert(prefix.clone(), v.clone());
            }
        },
        _ => {
            out.insert(prefix.clone(), v.clone());
        }
    }
}

fn leaf_map(v: &Value, sch: Sch) -> BTreeMap<Path, Value> {
    let mut out = BTreeMap::new();
    if v.as_object().is_some_and(|m| !m.is_empty()) {
        leaves(v, sch, &mut Vec::new(), &mut out);
    }
    out
}

fn matches_key(item: &Value, key: &str) -> bool {
    let Ok(Value::Object(k)) = serde_json::from_str::<Value>(key) else {
        return false;
    };
    k.iter().all(|(f, val)| item.get(f) == Some(val))
}

fn matches_value(item: &Value, v: &str) -> bool {
    serde_json::from_str::<Value>(v).is_ok_and(|x| &x == item)
}

fn value_at<'v>(v: &'v Value, path: &[Pe]) -> Option<&'v Value> {
    let mut cur = v;
    for e in path {
        cur = match (e, cur) {
            (Pe::F(n), Value::Object(m)) => m.get(n)?,
            (Pe::K(k), Value::Array(a)) => a.iter().find(|i| matches_key(i, k))?,
            (Pe::V(x), Value::Array(a)) => a.iter().find(|i| matches_value(i, x))?,
            _ => return None,
        };
    }
    Some(cur)
}

fn remove_at(v: &mut Value, path: &[Pe]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for e in parent {
        let next = match (e, cur) {
            (Pe::F(n), Value::Object(m)) => m.get_mut(n),
            (Pe::K(k), Value::Array(a)) => a.iter_mut().find(|i| matches_key(i, k)),
            (Pe::V(x), Value::Array(a)) => a.iter_mut().find(|i| matches_value(i, x)),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match (last, cur) {
        (Pe::F(n), Value::Object(m)) => {
            m.remove(n);
        }
        (Pe::K(k), Value::Array(a)) => a.retain(|i| !matches_key(i, k)),
        (Pe::V(x), Value::Array(a)) => a.retain(|i| !matches_value(i, x)),
        _ => {}
    }
}

/// Merges an applied configuration into a live object: maps recursively, list-maps by key,
/// sets by value, everything else replaced.
fn merge(live: &mut Value, applied: &Value, sch: Sch) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                match l.get_mut(k) {
                    Some(lv) => merge(lv, av, sch.prop(k)),
                    None => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => match sch.list_type() {
            ListType::Map(keys) => {
                for ai in a {
                    let key = item_key(ai, &keys);
                    match l.iter_mut().find(|li| item_key(li, &keys) == key) {
                        Some(li) => merge(li, ai, sch.items()),
                        None => l.push(ai.clone()),
                    }
                }
            }
            ListType::Set => {
                for ai in a {
                    if !l.contains(ai) {
                        l.push(ai.clone());
                    }
                }
            }
            ListType::Atomic => *l = a.clone(),
        },
        (l, a) => *l = a.clone(),
    }
}

pub(super) fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn path_text(p: &Path) -> String {
    p.iter()
        .map(|e| match e {
            Pe::F(n) => format!(".{n}"),
            Pe::K(k) => format!("[{k}]"),
            Pe::V(v) => format!("[={v}]"),
        })
        .collect()
}

fn set_entry(
    entries: &mut Vec<Entry>,
    manager: &str,
    op: &str,
    sub: Option<&str>,
    api_version: &str,
    fields: FieldSet,
) {
    match entries.iter_mut().find(|e| e.same_owner(manager, op, sub)) {
        Some(e) => {
            if e.fields != fields || e.api_version != api_version {
                e.time = now();
                e.fields = fields;
                e.api_version = api_version.to_string();
            }
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: op.to_string(),
            api_version: api_version.to_string(),
            time: now(),
            subresource: sub.map(str::to_string),
            fields,
        }),
    }
    entries.retain(|e| !e.fields.is_empty());
}

/// Computes the object resulting from `manager` applying `applied` to `live` (or to an
/// empty object when creating). Conflicts with other managers are 409 unless `force`.
/// A real API server types an applied object against the resource's schema before it merges anything: a
/// field the schema does not declare fails the whole request with a 500 that names the first such field
/// ("failed to create typed patch object"), where a create, update or merge patch would prune the field.
fn undeclared_fields(rt: &ResourceType, applied: &Value, name: &str) -> Result<(), ApiError> {
    let Some(schema) = rt.schema.as_ref() else { return Ok(()) };
    let undeclared = super::schema::process(schema, &mut applied.clone()).pruned;
    let Some(first) = undeclared.first() else { return Ok(()) };
    let namespace = applied.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    Err(ApiError::unexpected(format!(
        "failed to create typed patch object ({namespace}/{name}; {}, Kind={}): .{first}: field not declared in schema",
        rt.api_version(),
        rt.kind
    )))
}

pub(super) fn apply(
    rt: &ResourceType,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    sub: Option<&str>,
    force: bool,
) -> Result<Value, ApiError> {
    let name = applied.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    undeclared_fields(rt, applied, name)?;
    let sch = Sch::root(rt.schema.as_ref());
    let applied_own = ownable(rt, applied, sub);
    let applied_leaves = leaf_map(&applied_own, sch);
    let mut result = match live {
        Some(l) => l.clone(),
        None => json!({ "metadata": {} }),
    };
    let live_leaves = leaf_map(&ownable(rt, &result, sub), sch);
    let mut entries = read_entries(&result);

    let mut conflicts: Vec<(String, Path)> = Vec::new();
    for (p, av) in &applied_leaves {
        if matches!(p.last(), Some(Pe::K(_))) {
            continue;
        }
        let differs = live_leaves.get(p).is_some_and(|lv| lv != av);
        if !differs {
            continue;
        }
        for e in &entries {
            if !e.same_owner(manager, "Apply", sub) && e.fields.contains(p) {
                conflicts.push((e.manager.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let causes: Vec<Cause> = conflicts
            .iter()
            .map(|(m, p)| Cause::new("FieldManagerConflict", path_text(p), format!("conflict with \"{m}\"")))
            .collect();
        let lines: Vec<String> =
            conflicts.iter().map(|(m, p)| format!("conflict with \"{m}\": {}", path_text(p))).collect();
        // Upstream's apply conflicts are 409 Conflict whose message is the conflict list.
        let mut e = ApiError::conflict(&rt.group, &rt.plural, name, "");
        e.message = format!(
            "Apply failed with {} conflict{}: {}",
            conflicts.len(),
            if conflicts.len() == 1 { "" } else { "s" },
            lines.join(", ")
        );
        if let Some(d) = e.details.as_mut() {
            d["causes"] = Value::Array(
                causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect(),
            );
        }
        return Err(e);
    }
    for (_, p) in &conflicts {
        for e in entries.iter_mut() {
            if !e.same_owner(manager, "Apply", sub) {
                e.fields.remove(p);
            }
        }
    }

    let previous: FieldSet = entries
        .iter()
        .find(|e| e.same_owner(manager, "Apply", sub))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !e.same_owner(manager, "Apply", sub))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut dropped: Vec<&Path> = previous
        .iter()
        .filter(|p| !applied_leaves.contains_key(*p))
        .filter(|p| !others.iter().any(|o| o.starts_with(p)))
        .collect();
    // A dropped list-map item goes as a whole: removing its key fields first would make it
    // impossible to find.
    let whole_items: Vec<Path> =
        dropped.iter().filter(|p| matches!(p.last(), Some(Pe::K(_)))).map(|p| (*p).clone()).collect();
    dropped.retain(|p| !whole_items.iter().any(|w| p.len() > w.len() && p.starts_with(w)));
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove_at(&mut result, p);
        // Only leaves are tracked: a map the applier no longer sends, emptied by the removal, goes
        // too (upstream owns it as `f:parent` and removes it with its last field).
        for depth in (1..p.len()).rev() {
            let ancestor = &p[..depth];
            let emptied = matches!(ancestor.last(), Some(Pe::F(_)))
                && value_at(&result, ancestor).is_some_and(|v| v.as_object().is_some_and(|m| m.is_empty()))
                && value_at(&applied_own, ancestor).is_none();
            if !emptied {
                break;
            }
            remove_at(&mut result, ancestor);
        }
    }
    merge(&mut result, &applied_own, sch);

    let fields: FieldSet = applied_leaves.into_keys().collect();
    set_entry(&mut entries, manager, "Apply", sub, &rt.api_version(), fields);
    write_entries(&mut result, &entries);
    if let Some(rv) = applied.pointer("/metadata/resourceVersion") {
        result["metadata"]["resourceVersion"] = rv.clone();
    }
    Ok(result)
}

/// Records a non-apply write by `manager`: fields it changed move to it, fields it removed
/// leave every manager.
pub(super) fn record_update(
    rt: &ResourceType,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    sub: Option<&str>,
) {
    let sch = Sch::root(rt.schema.as_ref());
    let before = old.map(|o| leaf_map(&ownable(rt, o, sub), sch)).unwrap_or_default();
    let after = leaf_map(&ownable(rt, new, sub), sch);
    let changed: FieldSet =
        after.iter().filter(|(p, v)| before.get(*p) != Some(*v)).map(|(p, _)| p.clone()).collect();
    let removed: FieldSet = before.keys().filter(|p| !after.contains_key(*p)).cloned().collect();
    let mut entries = match new.pointer("/metadata/managedFields") {
        Some(_) => read_entries(new),
        None => old.map(read_entries).unwrap_or_default(),
    };
    if changed.is_empty() && removed.is_empty() {
        write_entries(new, &entries);
        return;
    }
    for e in entries.iter_mut() {
        e.fields.retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    let mut mine: FieldSet = entries
        .iter()
        .find(|e| e.same_owner(manager, "Update", sub))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    mine.extend(changed);
    set_entry(&mut entries, manager, "Update", sub, &rt.api_version(), mine);
    write_entries(new, &entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_v1_round_trip() {
        let mut set = FieldSet::new();
        set.insert(vec![Pe::F("spec".into()), Pe::F("size".into())]);
        let k = Pe::K(r#"{"type":"Ready"}"#.into());
        set.insert(vec![Pe::F("status".into()), Pe::F("conditions".into()), k.clone()]);
        set.insert(vec![Pe::F("status".into()), Pe::F("conditions".into()), k, Pe::F("type".into())]);
        let enc = encode(&set);
        assert_eq!(
            enc,
            json!({"f:spec": {"f:size": {}}, "f:status": {"f:conditions": {
                "k:{\"type\":\"Ready\"}": {".": {}, "f:type": {}}}}})
        );
        assert_eq!(decode(&enc), set);
    }
}
