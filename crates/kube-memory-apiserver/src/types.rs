//! The resource-type registry: which `(group, version, plural)` are served, their scope and
//! subresources, and (for custom resources) the structural schema from the CRD.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::error::Cause;

/// Everything the server needs to know to serve one resource at one version.
#[derive(Debug, Clone)]
pub(super) struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub short_names: Vec<String>,
    /// Groups of resources `kubectl get <category>` lists together (custom resources only).
    pub categories: Vec<String>,
    pub namespaced: bool,
    pub status_subresource: bool,
    /// Real Kubernetes only keeps `metadata.generation` for some kinds (custom resources,
    /// CRDs, workloads); Secrets, ConfigMaps, Namespaces and Leases have none.
    pub generation: bool,
    /// Whether PUT may omit `metadata.resourceVersion` (true for most core kinds, false for
    /// custom resources and CRDs, as in the real strategies).
    pub unconditional_update: bool,
    /// `openAPIV3Schema` of this version, for custom resources only.
    pub schema: Option<Value>,
    /// `additionalPrinterColumns` of this version, for custom resources only: the columns of
    /// the `Table` that `kubectl get` asks for.
    pub printer_columns: Vec<Value>,
}

/// Where all versions of one resource are stored: `(group, plural)`.
pub(super) type StorageKey = (String, String);

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    pub fn storage_key(&self) -> StorageKey {
        (self.group.clone(), self.plural.clone())
    }

    pub fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.plural == "namespaces"
    }

    pub fn is_crd(&self) -> bool {
        self.group == "apiextensions.k8s.io" && self.plural == "customresourcedefinitions"
    }

    pub fn is_secret(&self) -> bool {
        self.group.is_empty() && self.plural == "secrets"
    }

    pub fn is_configmap(&self) -> bool {
        self.group.is_empty() && self.plural == "configmaps"
    }

    fn discovery_entries(&self) -> Vec<Value> {
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut out = vec![main];
        if self.status_subresource {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        out
    }
}

fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    status: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        short_names: Vec::new(),
        categories: Vec::new(),
        namespaced,
        status_subresource: status,
        generation: false,
        unconditional_update: true,
        schema: None,
        printer_columns: Vec::new(),
    }
}

/// Served resource types keyed by `(group, version, plural)`.
#[derive(Debug, Clone)]
pub(super) struct Registry {
    types: BTreeMap<(String, String, String), Arc<ResourceType>>,
}

impl Registry {
    pub fn with_builtins() -> Registry {
        let mut crd = builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            true,
        );
        crd.generation = true;
        crd.unconditional_update = false;
        crd.short_names = vec!["crd".into(), "crds".into()];
        let mut ns = builtin("", "v1", "namespaces", "Namespace", false, true);
        ns.short_names = vec!["ns".into()];
        let mut cm = builtin("", "v1", "configmaps", "ConfigMap", true, false);
        cm.short_names = vec!["cm".into()];
        let mut ev = builtin("", "v1", "events", "Event", true, false);
        ev.short_names = vec!["ev".into()];
        // Workloads are stored, never run: there is no scheduler or kubelet.
        let mut sa = builtin("", "v1", "serviceaccounts", "ServiceAccount", true, false);
        sa.short_names = vec!["sa".into()];
        let mut deploy = builtin("apps", "v1", "deployments", "Deployment", true, true);
        deploy.short_names = vec!["deploy".into()];
        deploy.generation = true;
        let all = vec![
            ns,
            builtin("", "v1", "secrets", "Secret", true, false),
            cm,
            sa,
            ev,
            builtin("events.k8s.io", "v1", "events", "Event", true, false),
            builtin("coordination.k8s.io", "v1", "leases", "Lease", true, false),
            deploy,
            crd,
        ];
        let mut r = Registry { types: BTreeMap::new() };
        for t in all {
            r.insert(t);
        }
        r
    }

    fn insert(&mut self, t: ResourceType) {
        self.types.insert((t.group.clone(), t.version.clone(), t.plural.clone()), Arc::new(t));
    }

    /// Every served resource type, in `(group, version, plural)` order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types.get(&(group.to_string(), version.to_string(), plural.to_string())).cloned()
    }

    /// Any served version of a stored resource (used by the garbage collector, which works
    /// on storage and not on a request's version).
    pub fn by_storage(&self, key: &StorageKey) -> Option<Arc<ResourceType>> {
        self.types.values().find(|t| t.group == key.0 && t.plural == key.1).cloned()
    }

    pub fn unregister(&mut self, group: &str, plural: &str) {
        self.types.retain(|k, _| !(k.0 == group && k.2 == plural));
    }

    /// Registers (or re-registers) the types a CRD declares; returns the CRD's storage key.
    pub fn register_crd(&mut self, crd: &Value) -> Option<StorageKey> {
        let parsed = parse_crd(crd).ok()?;
        let key = parsed.first().map(|t| t.storage_key())?;
        self.unregister(&key.0, &key.1);
        for t in parsed {
            self.insert(t);
        }
        Some(key)
    }

    /// `/apis` body.
    pub fn group_list(&self) -> Value {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.types.values() {
            if t.group.is_empty() {
                continue;
            }
            let vs = groups.entry(t.group.clone()).or_default();
            if !vs.contains(&t.version) {
                vs.push(t.version.clone());
            }
        }
        let groups: Vec<Value> = groups.into_iter().map(|(g, vs)| group_json(&g, &vs)).collect();
        json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
    }

    /// `/apis/{group}` body.
    pub fn group(&self, group: &str) -> Option<Value> {
        let mut vs: Vec<String> = Vec::new();
        for t in self.types.values().filter(|t| t.group == group) {
            if !vs.contains(&t.version) {
                vs.push(t.version.clone());
            }
        }
        if vs.is_empty() || group.is_empty() {
            return None;
        }
        let mut g = group_json(group, &vs);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        Some(g)
    }

    /// `/api/v1` or `/apis/{group}/{version}` body.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        let resources: Vec<Value> = self
            .types
            .values()
            .filter(|t| t.group == group && t.version == version)
            .flat_map(|t| t.discovery_entries())
            .collect();
        if resources.is_empty() {
            return None;
        }
        let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }))
    }
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> =
        versions.iter().map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v })).collect();
    json!({
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Validates a CRD the way the apiextensions server does for the parts a controller relies
/// on, and derives the served types from it.
pub(super) fn parse_crd(crd: &Value) -> Result<Vec<ResourceType>, Vec<Cause>> {
    let mut causes = Vec::new();
    let group = s(crd, &["spec", "group"]).unwrap_or_default().to_string();
    let plural = s(crd, &["spec", "names", "plural"]).unwrap_or_default().to_string();
    let kind = s(crd, &["spec", "names", "kind"]).unwrap_or_default().to_string();
    let name = s(crd, &["metadata", "name"]).unwrap_or_default();
    if group.is_empty() {
        causes.push(Cause::new("FieldValueRequired", "spec.group", "Required value"));
    }
    if plural.is_empty() {
        causes.push(Cause::new("FieldValueRequired", "spec.names.plural", "Required value"));
    }
    if kind.is_empty() {
        causes.push(Cause::new("FieldValueRequired", "spec.names.kind", "Required value"));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let scope = s(crd, &["spec", "scope"]).unwrap_or_default();
    if scope != "Namespaced" && scope != "Cluster" {
        causes.push(Cause::new(
            "FieldValueNotSupported",
            "spec.scope",
            format!("Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""),
        ));
    }
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array).cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.versions",
            "Required value: must have exactly one version marked as storage version",
        ));
    }
    if !causes.is_empty() {
        return Err(causes);
    }
    let singular =
        s(crd, &["spec", "names", "singular"]).map(str::to_string).unwrap_or_else(|| kind.to_lowercase());
    let list_kind =
        s(crd, &["spec", "names", "listKind"]).map(str::to_string).unwrap_or_else(|| format!("{kind}List"));
    let strings = |pointer: &str| -> Vec<String> {
        crd.pointer(pointer)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let short_names = strings("/spec/names/shortNames");
    let categories = strings("/spec/names/categories");
    let mut out = Vec::new();
    for v in versions {
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let Some(vname) = v.get("name").and_then(Value::as_str) else {
            continue;
        };
        out.push(ResourceType {
            group: group.clone(),
            version: vname.to_string(),
            plural: plural.clone(),
            singular: singular.clone(),
            kind: kind.clone(),
            list_kind: list_kind.clone(),
            short_names: short_names.clone(),
            categories: categories.clone(),
            namespaced: scope == "Namespaced",
            status_subresource: v.pointer("/subresources/status").is_some(),
            generation: true,
            unconditional_update: false,
            schema: v.pointer("/schema/openAPIV3Schema").cloned(),
            printer_columns: v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The status the apiextensions controllers would write once names are accepted.
pub(super) fn crd_status(crd: &Value, now: &str) -> Value {
    let storage: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    let cond = |t: &str, reason: &str, msg: &str| {
        json!({
            "type": t, "status": "True", "lastTransitionTime": now,
            "reason": reason, "message": msg,
        })
    };
    json!({
        "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": storage,
    })
}
