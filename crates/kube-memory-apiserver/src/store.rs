//! The object store and the write pipeline.
//!
//! Data model: objects are kept as `serde_json::Value` in
//! `(group, plural) -> (namespace, name) -> object` (namespace `""` for cluster-scoped
//! kinds), so every version of a resource shares storage and there is no conversion (the
//! `apiVersion` is rewritten to the one asked for). One global counter provides
//! `resourceVersion`s; each change is appended to a bounded history (replayed to watches
//! that resume from an older version) and broadcast to the open watches. All of it sits
//! behind one mutex, taken once per request and never across an await.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::apply;
use super::error::{ApiError, Cause};
use super::rules;
use super::schema;
use super::selector::Selectors;
use super::types::{Registry, ResourceType, StorageKey, crd_status, parse_crd};

/// `(namespace, name)`; namespace is empty for cluster-scoped objects.
pub(super) type ObjKey = (String, String);

/// One change, as recorded in the history and sent to watches.
#[derive(Debug)]
pub(super) struct WatchEvent {
    pub rv: u64,
    pub key: StorageKey,
    pub namespace: String,
    pub kind: &'static str,
    /// The previous state for MODIFIED, so a selector watch can tell "stopped matching".
    pub old: Option<Value>,
    pub object: Value,
}

/// Who a write is attributed to in `managedFields`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mgr<'a> {
    /// A non-apply write by this manager.
    Update(&'a str),
    /// Server-side apply already computed the entries.
    Keep,
    /// The server's own writes (garbage collector): managedFields untouched.
    System,
}

/// How dependents are handled on delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// The supported patch content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

/// What a list or watch is scoped to.
pub(super) struct Scope<'a> {
    pub rt: &'a ResourceType,
    pub namespace: Option<&'a str>,
    pub selectors: &'a Selectors,
}

/// Per-request write options from the query string.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct WriteOptions {
    /// `dryRun=All`: validate and answer as usual, keep and announce nothing.
    pub dry_run: bool,
    /// `fieldValidation=Strict`: unknown fields of a custom resource are an error, not pruned.
    pub strict: bool,
}

pub(super) struct State {
    pub registry: Registry,
    pub(super) objects: BTreeMap<StorageKey, BTreeMap<ObjKey, Value>>,
    pub rv: u64,
    pub history: VecDeque<Arc<WatchEvent>>,
    history_cap: usize,
    /// Watches resuming from a version below this have missed evicted events (410).
    pub history_floor: u64,
    pub tx: broadcast::Sender<Arc<WatchEvent>>,
    seed: RandomState,
    counter: u64,
    /// The options of the write in progress (see [`State::write`]).
    write: WriteOptions,
}

fn meta_str<'a>(o: &'a Value, field: &str) -> Option<&'a str> {
    o.get("metadata")?.get(field)?.as_str()
}

pub(super) fn meta_mut(o: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !o.is_object() {
        *o = json!({});
    }
    let Value::Object(root) = o else { unreachable!("made an object above") };
    let meta = root.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    match meta {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

fn finalizers(o: &Value) -> Vec<String> {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

pub(super) fn is_deleting(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

impl State {
    pub fn new(history_cap: usize) -> State {
        let (tx, _) = broadcast::channel(16_384);
        let mut st = State {
            registry: Registry::with_builtins(),
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            history_floor: 0,
            tx,
            seed: RandomState::new(),
            counter: 0,
            write: WriteOptions::default(),
        };
        for ns in ["default", "kube-system", "kube-public"] {
            if let Some(rt) = st.registry.lookup("", "v1", "namespaces") {
                let body = json!({"metadata": {"name": ns}});
                // Creating a fresh namespace in an empty store cannot fail.
                let _ = st.create(&rt, None, body, Mgr::System);
            }
        }
        st
    }

    fn random(&mut self) -> u64 {
        self.counter += 1;
        let mut h = self.seed.build_hasher();
        h.write_u64(self.counter);
        h.finish()
    }

    fn uid(&mut self) -> String {
        let a = self.random();
        let b = self.random();
        let x = format!("{a:016x}{b:016x}");
        format!(
            "{}-{}-4{}-{}{}-{}",
            &x[0..8],
            &x[8..12],
            &x[13..16],
            ["8", "9", "a", "b"][(b % 4) as usize],
            &x[17..20],
            &x[20..32]
        )
    }

    fn suffix(&mut self) -> String {
        const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut r = self.random();
        (0..5)
            .map(|_| {
                let c = ALPHA[(r % ALPHA.len() as u64) as usize];
                r /= ALPHA.len() as u64;
                char::from(c)
            })
            .collect()
    }

    /// Runs one write with its request options. A dry run goes through the whole pipeline
    /// (defaulting, validation, admission, garbage collection) on the real store, then puts the
    /// store back as it was; nothing reaches the history or a watch.
    pub fn write<T>(
        &mut self,
        options: WriteOptions,
        f: impl FnOnce(&mut State) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        self.write = options;
        let out = if options.dry_run {
            let (objects, rv, registry) = (self.objects.clone(), self.rv, self.registry.clone());
            let out = f(self);
            (self.objects, self.rv, self.registry) = (objects, rv, registry);
            out
        } else {
            f(self)
        };
        self.write = WriteOptions::default();
        out
    }

    /// Announces a stored change; an Event's change is also made, and announced, in its other API.
    fn emit(&mut self, key: &StorageKey, kind: &'static str, old: Option<Value>, obj: &Value) {
        if self.write.dry_run {
            return;
        }
        self.announce(key, kind, old, obj);
        let Some((other, mirrored)) = super::events::mirror(key, obj) else {
            return;
        };
        let okey = (
            meta_str(obj, "namespace").unwrap_or_default().to_string(),
            meta_str(obj, "name").unwrap_or_default().to_string(),
        );
        if kind == "DELETED" {
            if self.objects.get_mut(&other).and_then(|m| m.remove(&okey)).is_some() {
                self.announce(&other, "DELETED", None, &mirrored);
            }
        } else {
            let previous = self.objects.entry(other.clone()).or_default().insert(okey, mirrored.clone());
            let kind = if previous.is_some() { "MODIFIED" } else { "ADDED" };
            self.announce(&other, kind, previous, &mirrored);
        }
    }

    fn announce(&mut self, key: &StorageKey, kind: &'static str, old: Option<Value>, obj: &Value) {
        let ev = Arc::new(WatchEvent {
            rv: self.rv,
            key: key.clone(),
            namespace: meta_str(obj, "namespace").unwrap_or_default().to_string(),
            kind,
            old,
            object: obj.clone(),
        });
        self.history.push_back(ev.clone());
        while self.history.len() > self.history_cap {
            if let Some(e) = self.history.pop_front() {
                self.history_floor = e.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(ev);
    }

    fn bump(&mut self, obj: &mut Value) {
        self.rv += 1;
        meta_mut(obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
    }

    pub fn object(&self, key: &StorageKey, okey: &ObjKey) -> Option<&Value> {
        self.objects.get(key)?.get(okey)
    }

    fn okey(rt: &ResourceType, ns: Option<&str>, name: &str) -> ObjKey {
        let ns = if rt.namespaced { ns.unwrap_or_default() } else { "" };
        (ns.to_string(), name.to_string())
    }

    /// Sets kind/apiVersion to the version the client asked for.
    pub fn present(rt: &ResourceType, mut obj: Value) -> Value {
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        obj
    }

    pub fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.object(&rt.storage_key(), &Self::okey(rt, ns, name))
            .cloned()
            .map(|o| Self::present(rt, o))
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
    }

    /// Objects in scope, optionally after a continue key; used by list and initial watch.
    pub fn matching<'a>(&'a self, scope: &'a Scope<'a>) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .get(&scope.rt.storage_key())
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(move |((ns, _), _)| scope.namespace.is_none_or(|want| ns == want))
            .filter(move |(_, o)| scope.selectors.matches(o))
            .map(|(_, o)| o)
    }

    pub fn list(&self, scope: &Scope, limit: Option<usize>, cont: Option<&str>) -> Result<Value, ApiError> {
        let after: Option<ObjKey> = match cont {
            Some(c) if !c.is_empty() => {
                let raw = unhex(c).ok_or_else(|| {
                    ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
                })?;
                let (ns, name) =
                    raw.split_once('\0').ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
                Some((ns.to_string(), name.to_string()))
            }
            _ => None,
        };
        let all: Vec<&Value> = self
            .matching(scope)
            .filter(|o| {
                after.as_ref().is_none_or(|(ans, aname)| {
                    let k = (
                        meta_str(o, "namespace").unwrap_or_default(),
                        meta_str(o, "name").unwrap_or_default(),
                    );
                    k > (ans.as_str(), aname.as_str())
                })
            })
            .collect();
        let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let page: Vec<Value> =
            all.iter().take(limit).map(|o| Self::present(scope.rt, (*o).clone())).collect();
        let mut meta = json!({ "resourceVersion": self.rv.to_string() });
        if all.len() > page.len()
            && let Some(last) = page.last()
        {
            let token = format!(
                "{}\0{}",
                meta_str(last, "namespace").unwrap_or_default(),
                meta_str(last, "name").unwrap_or_default()
            );
            meta["continue"] = json!(hex(&token));
            meta["remainingItemCount"] = json!(all.len() - page.len());
        }
        Ok(json!({
            "kind": scope.rt.list_kind,
            "apiVersion": scope.rt.api_version(),
            "metadata": meta,
            "items": page,
        }))
    }

    fn check_namespace(&self, ns: &str) -> Result<(), ApiError> {
        let nskey = (String::new(), "namespaces".to_string());
        match self.object(&nskey, &(String::new(), ns.to_string())) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(n) if is_deleting(n) => {
                let mut e = ApiError::forbidden(format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ));
                e.details = Some(json!({"name": ns, "kind": "namespaces"}));
                Err(e)
            }
            Some(_) => Ok(()),
        }
    }

    /// Kind-specific changes the real registry strategies make on every write.
    fn normalize(rt: &ResourceType, obj: &mut Value) {
        if rt.is_secret() {
            if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
                if !obj.get("data").is_some_and(Value::is_object) {
                    obj["data"] = json!({});
                }
                for (k, v) in sd {
                    let text = v.as_str().unwrap_or_default();
                    obj["data"][k] = json!(base64(text.as_bytes()));
                }
            }
            if obj.get("type").is_none_or(Value::is_null) {
                obj["type"] = json!("Opaque");
            }
        }
        if rt.is_namespace() {
            let fins = obj.pointer("/spec/finalizers").cloned();
            if fins.is_none() && !is_deleting(obj) {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            if obj.pointer("/status/phase").is_none() {
                obj["status"] = json!({"phase": "Active"});
            }
        }
    }

    /// Schema, CEL rules and the kind's own checks; `old` is the stored object on an update.
    fn validate(
        &self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
        name: &str,
    ) -> Result<(), ApiError> {
        if let Some(schema) = &rt.schema {
            let processed = schema::process(schema, obj);
            if self.write.strict && !processed.pruned.is_empty() {
                let fields: Vec<String> =
                    processed.pruned.iter().map(|p| format!("unknown field \"{p}\"")).collect();
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                    fields.join(", "),
                    kind = rt.kind,
                    version = rt.version,
                )));
            }
            let mut causes = processed.causes;
            // As upstream: CEL rules run unless a schema error makes the object unfit for them (a wrong
            // type, a missing field, a value outside the enum, a string or list over its limit); then a
            // cause says that some rules were not checked.
            if schema::blocks_rules(&causes) {
                if rules::has_rules(schema) {
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        "<nil>",
                        "Invalid value: \"null\": some validation rules were not checked because the object was \
                         invalid; correct the existing errors to complete validation",
                    ));
                }
            } else {
                causes.extend(rules::cel(schema, obj, old));
            }
            if !causes.is_empty() {
                return Err(ApiError::invalid(&rt.group, &rt.kind, name, causes));
            }
        }
        if let Some(old) = old {
            let causes = rules::builtin_update(rt, old, obj);
            if !causes.is_empty() {
                return Err(ApiError::invalid(&rt.group, &rt.kind, name, causes));
            }
        }
        if rt.is_crd()
            && let Err(causes) = parse_crd(obj)
        {
            return Err(ApiError::invalid(&rt.group, &rt.kind, name, causes));
        }
        Ok(())
    }

    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        mut body: Value,
        mgr: Mgr,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request("the body of the request was in an unknown format"));
        }
        let ns = if rt.namespaced {
            let want = ns.unwrap_or("default");
            if let Some(given) = meta_str(&body, "namespace")
                && !given.is_empty()
                && given != want
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            self.check_namespace(want)?;
            Some(want.to_string())
        } else {
            None
        };
        let mut name = meta_str(&body, "name").unwrap_or_default().to_string();
        if name.is_empty() {
            match meta_str(&body, "generateName").filter(|g| !g.is_empty()) {
                Some(g) => {
                    let g = g.to_string();
                    name = format!("{g}{}", self.suffix());
                }
                None => {
                    return Err(ApiError::invalid(
                        &rt.group,
                        &rt.kind,
                        "",
                        vec![Cause::new(
                            "FieldValueRequired",
                            "metadata.name",
                            "Required value: name or generateName is required",
                        )],
                    ));
                }
            }
        }
        if !valid_name(&name) {
            return Err(ApiError::invalid(
                &rt.group,
                &rt.kind,
                &name,
                vec![Cause::new(
                    "FieldValueInvalid",
                    "metadata.name",
                    if name.len() > 253 {
                        format!("Invalid value: \"{name}\": must be no more than 253 characters")
                    } else {
                        format!(
                            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                        )
                    },
                )],
            ));
        }
        let key = rt.storage_key();
        let okey = (ns.clone().unwrap_or_default(), name.clone());
        if self.object(&key, &okey).is_some() {
            return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
        }
        let uid = self.uid();
        let now = apply::now();
        {
            let m = meta_mut(&mut body);
            m.insert("name".into(), json!(name));
            match &ns {
                Some(ns) => m.insert("namespace".into(), json!(ns)),
                None => m.remove("namespace"),
            };
            m.insert("uid".into(), json!(uid));
            m.insert("creationTimestamp".into(), json!(now));
            for f in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
                m.remove(f);
            }
            if rt.generation {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        if rt.status_subresource
            && !rt.is_namespace()
            && let Some(m) = body.as_object_mut()
        {
            m.remove("status");
        }
        body = Self::present(rt, body);
        Self::normalize(rt, &mut body);
        self.validate(rt, &mut body, None, &name)?;
        if rt.is_crd() {
            body["status"] = crd_status(&body, &now);
        }
        if let Mgr::Update(m) = mgr {
            apply::record_update(rt, None, &mut body, m, None);
        }
        self.bump(&mut body);
        if rt.is_crd() {
            self.registry.register_crd(&body);
        }
        self.objects.entry(key.clone()).or_default().insert(okey, body.clone());
        self.emit(&key, "ADDED", None, &body);
        Ok(body)
    }

    /// The common tail of update, patch and apply.
    pub fn commit(
        &mut self,
        rt: &ResourceType,
        okey: &ObjKey,
        old: Value,
        desired: Value,
        sub: Option<&str>,
        mgr: Mgr,
    ) -> Result<Value, ApiError> {
        let name = okey.1.as_str();
        if !desired.is_object() {
            return Err(ApiError::bad_request("the body of the request was in an unknown format"));
        }
        let old_rv = meta_str(&old, "resourceVersion").unwrap_or_default().to_string();
        if let Some(rv) = meta_str(&desired, "resourceVersion")
            && !rv.is_empty()
            && rv != old_rv
        {
            return Err(ApiError::stale(&rt.group, &rt.plural, name));
        }
        if let Some(n) = meta_str(&desired, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let mut new = match sub {
            Some("status") => {
                let mut n = old.clone();
                match desired.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                if let Some(mf) = desired.pointer("/metadata/managedFields") {
                    meta_mut(&mut n).insert("managedFields".into(), mf.clone());
                }
                n
            }
            _ => {
                let mut n = desired;
                if rt.status_subresource {
                    match old.get("status") {
                        Some(s) => n["status"] = s.clone(),
                        None => {
                            if let Some(m) = n.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                n
            }
        };
        {
            let old_meta = old.get("metadata").cloned().unwrap_or_default();
            let m = meta_mut(&mut new);
            for f in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
            m.insert("resourceVersion".into(), json!(old_rv));
            if matches!(mgr, Mgr::System) {
                match old_meta.get("managedFields") {
                    Some(v) => m.insert("managedFields".into(), v.clone()),
                    None => m.remove("managedFields"),
                };
            }
        }
        if is_deleting(&old) {
            let before = finalizers(&old);
            let added: Vec<String> = finalizers(&new).into_iter().filter(|f| !before.contains(f)).collect();
            if !added.is_empty() {
                let list: Vec<String> = added.iter().map(|f| format!("{f:?}")).collect();
                return Err(ApiError::invalid(
                    &rt.group,
                    &rt.kind,
                    name,
                    vec![Cause::new(
                        "FieldValueForbidden",
                        "metadata.finalizers",
                        format!(
                            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            list.join(", ")
                        ),
                    )],
                ));
            }
        }
        new = Self::present(rt, new);
        Self::normalize(rt, &mut new);
        self.validate(rt, &mut new, Some(&old), name)?;
        if let Mgr::Update(m) = mgr {
            apply::record_update(rt, Some(&old), &mut new, m, sub);
        }
        if rt.generation {
            let strip = |o: &Value| {
                let mut o = o.clone();
                if let Some(m) = o.as_object_mut() {
                    m.remove("metadata");
                    m.remove("apiVersion");
                    m.remove("kind");
                    if rt.status_subresource {
                        m.remove("status");
                    }
                }
                o
            };
            if strip(&old) != strip(&new) {
                let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
                meta_mut(&mut new).insert("generation".into(), json!(g + 1));
            }
        }
        // The apiVersion of the request may differ from the stored one; that is no change.
        let same = {
            let mut a = old.clone();
            a["apiVersion"] = new["apiVersion"].clone();
            a == new
        };
        if same {
            return Ok(Self::present(rt, old));
        }
        self.bump(&mut new);
        let key = rt.storage_key();
        if let Some(m) = self.objects.get_mut(&key) {
            m.insert(okey.clone(), new.clone());
        }
        if rt.is_crd() {
            self.registry.register_crd(&new);
        }
        self.emit(&key, "MODIFIED", Some(old), &new);
        if is_deleting(&new) && finalizers(&new).is_empty() {
            self.remove(&key, okey);
        }
        Ok(new)
    }

    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        body: Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let okey = Self::okey(rt, ns, name);
        let old = self
            .object(&rt.storage_key(), &okey)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        if !rt.unconditional_update && meta_str(&body, "resourceVersion").is_none_or(str::is_empty) {
            return Err(ApiError::invalid(
                &rt.group,
                &rt.kind,
                name,
                vec![Cause::new(
                    "FieldValueInvalid",
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                )],
            ));
        }
        let out = self.commit(rt, &okey, old, body, sub, Mgr::Update(manager));
        self.collect_garbage();
        out
    }

    /// Returns the object and whether it was created (server-side apply of a new object).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        kind: PatchKind,
        body: &[u8],
        manager: Option<&str>,
        force: bool,
    ) -> Result<(Value, bool), ApiError> {
        let okey = Self::okey(rt, ns, name);
        let current = self.object(&rt.storage_key(), &okey).cloned();
        let not_found = || ApiError::not_found(&rt.group, &rt.plural, name);
        let result = match kind {
            PatchKind::Json => {
                let ops: json_patch::Patch = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON Patch: {e}")))?;
                let old = current.ok_or_else(not_found)?;
                let mut doc = old.clone();
                json_patch_apply(&mut doc, &ops).map_err(|e| {
                    let mut err = ApiError::new(
                        422,
                        "Invalid",
                        format!("the server rejected our request due to an error in our request: {e}"),
                    );
                    err.details = Some(json!({"name": name, "kind": rt.plural}));
                    err
                })?;
                self.commit(rt, &okey, old, doc, sub, Mgr::Update(manager.unwrap_or("unknown")))
                    .map(|o| (o, false))
            }
            PatchKind::Merge | PatchKind::Strategic => {
                let p: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
                if !p.is_object() {
                    return Err(ApiError::bad_request("merge patch must be a JSON object"));
                }
                let old = current.ok_or_else(not_found)?;
                let mut doc = old.clone();
                if kind == PatchKind::Strategic {
                    strategic_merge(&mut doc, &p);
                } else {
                    json_patch::merge(&mut doc, &p);
                }
                self.commit(rt, &okey, old, doc, sub, Mgr::Update(manager.unwrap_or("unknown")))
                    .map(|o| (o, false))
            }
            PatchKind::Apply => {
                let Some(manager) = manager.filter(|m| !m.is_empty()) else {
                    return Err(ApiError::bad_request(
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    ));
                };
                let text = std::str::from_utf8(body)
                    .map_err(|_| ApiError::bad_request("apply patch is not UTF-8"))?;
                let applied: Value = match serde_json::from_str(text) {
                    Ok(v) => v,
                    Err(_) => serde_saphyr::from_str(text)
                        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
                };
                if !applied.is_object() {
                    return Err(ApiError::bad_request("apply patch must be an object"));
                }
                if let Some(n) = meta_str(&applied, "name")
                    && n != name
                {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )));
                }
                match current {
                    None if sub.is_some() => Err(not_found()),
                    None => {
                        let mut obj = apply::apply(rt, None, &applied, manager, None, force)?;
                        meta_mut(&mut obj).insert("name".into(), json!(name));
                        meta_mut(&mut obj).remove("resourceVersion");
                        self.create(rt, ns, obj, Mgr::Keep).map(|o| (o, true))
                    }
                    Some(old) => {
                        let obj = apply::apply(rt, Some(&old), &applied, manager, sub, force)?;
                        self.commit(rt, &okey, old, obj, sub, Mgr::Keep).map(|o| (o, false))
                    }
                }
            }
        };
        self.collect_garbage();
        result
    }

    /// DELETE on one object. `preconditions` is `DeleteOptions.preconditions`.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        options: &Value,
    ) -> Result<Value, ApiError> {
        let okey = Self::okey(rt, ns, name);
        let policy = match options.get("propagationPolicy").and_then(Value::as_str) {
            Some("Foreground") => Propagation::Foreground,
            Some("Orphan") => Propagation::Orphan,
            Some("Background") | None => {
                if options.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
                    Propagation::Orphan
                } else {
                    Propagation::Background
                }
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "DeleteOptions.propagationPolicy: Unsupported value: \"{other}\""
                )));
            }
        };
        let out = self.delete_at(rt, &okey, policy, options.get("preconditions"));
        self.collect_garbage();
        out.map(|o| Self::present(rt, o))
    }

    pub fn delete_at(
        &mut self,
        rt: &ResourceType,
        okey: &ObjKey,
        policy: Propagation,
        preconditions: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let key = rt.storage_key();
        let name = okey.1.as_str();
        let mut obj = self
            .object(&key, okey)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        if let Some(p) = preconditions {
            for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                if let Some(want) = p.get(field).and_then(Value::as_str) {
                    let have = meta_str(&obj, field).unwrap_or_default();
                    if want != have {
                        return Err(ApiError::conflict(
                            &rt.group,
                            &rt.plural,
                            name,
                            &format!(
                                "Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}"
                            ),
                        ));
                    }
                }
            }
        }
        if is_deleting(&obj) {
            return Ok(obj);
        }
        let old = obj.clone();
        let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
        if rt.is_namespace() {
            let now = apply::now();
            meta_mut(&mut obj).insert("deletionTimestamp".into(), json!(now));
            meta_mut(&mut obj).insert("deletionGracePeriodSeconds".into(), json!(0));
            obj["status"] = json!({"phase": "Terminating"});
            self.store_modified(&key, okey, old, &mut obj);
            return Ok(obj);
        }
        if policy == Propagation::Orphan {
            self.orphan_dependents(&uid);
        }
        let mut fins = finalizers(&obj);
        if policy == Propagation::Foreground && !fins.iter().any(|f| f == "foregroundDeletion") {
            fins.push("foregroundDeletion".into());
            meta_mut(&mut obj).insert("finalizers".into(), json!(fins));
        }
        if fins.is_empty() {
            return Ok(self.remove(&key, okey).unwrap_or(obj));
        }
        let now = apply::now();
        meta_mut(&mut obj).insert("deletionTimestamp".into(), json!(now));
        meta_mut(&mut obj).insert("deletionGracePeriodSeconds".into(), json!(0));
        // As the real apiserver does: the start of a graceful deletion changes what controllers must do.
        if let Some(generation) =
            obj.pointer("/metadata/generation").and_then(Value::as_i64).filter(|g| *g > 0)
        {
            meta_mut(&mut obj).insert("generation".into(), json!(generation + 1));
        }
        self.store_modified(&key, okey, old, &mut obj);
        Ok(obj)
    }

    /// Stores a server-side modification (no validation, no managedFields change).
    pub(super) fn store_modified(&mut self, key: &StorageKey, okey: &ObjKey, old: Value, obj: &mut Value) {
        self.bump(obj);
        if let Some(m) = self.objects.get_mut(key) {
            m.insert(okey.clone(), obj.clone());
        }
        self.emit(key, "MODIFIED", Some(old), obj);
    }

    /// Removes an object for good (DELETED event); removing a CRD takes its objects along.
    pub(super) fn remove(&mut self, key: &StorageKey, okey: &ObjKey) -> Option<Value> {
        let mut obj = self.objects.get_mut(key)?.remove(okey)?;
        self.bump(&mut obj);
        self.emit(key, "DELETED", None, &obj);
        let is_crd = key.0 == "apiextensions.k8s.io" && key.1 == "customresourcedefinitions";
        if is_crd
            && let (Some(g), Some(p)) = (
                obj.pointer("/spec/group").and_then(Value::as_str),
                obj.pointer("/spec/names/plural").and_then(Value::as_str),
            )
        {
            let ckey = (g.to_string(), p.to_string());
            let gone = self.objects.remove(&ckey).unwrap_or_default();
            for (_, mut o) in gone {
                self.bump(&mut o);
                self.emit(&ckey, "DELETED", None, &o);
            }
            self.registry.unregister(g, p);
        }
        Some(obj)
    }

    pub fn delete_collection(&mut self, scope: &Scope, options: &Value) -> Result<Value, ApiError> {
        let keys: Vec<ObjKey> = self
            .matching(scope)
            .map(|o| {
                (
                    meta_str(o, "namespace").unwrap_or_default().to_string(),
                    meta_str(o, "name").unwrap_or_default().to_string(),
                )
            })
            .collect();
        let mut items = Vec::new();
        for (ns, name) in keys {
            let ns = (!ns.is_empty()).then_some(ns);
            items.push(self.delete(scope.rt, ns.as_deref(), &name, options)?);
        }
        Ok(json!({
            "kind": scope.rt.list_kind,
            "apiVersion": scope.rt.api_version(),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        }))
    }
}

/// RFC 6902 with the apiserver's reading of `test`: a missing path equals `null`.
/// kube's finalizer helper relies on that to assert "no finalizers yet".
fn json_patch_apply(doc: &mut Value, ops: &json_patch::Patch) -> Result<(), String> {
    for (i, op) in ops.0.iter().enumerate() {
        if let json_patch::PatchOperation::Test(t) = op
            && t.value.is_null()
        {
            let found = doc.pointer(t.path.as_str()).unwrap_or(&Value::Null);
            if !found.is_null() {
                return Err(format!("operation '/{i}' failed at path '{}': value did not match", t.path));
            }
            continue;
        }
        json_patch::patch(doc, std::slice::from_ref(op))
            .map_err(|e| format!("operation '/{i}' failed at path '{}': {}", e.path, e.kind))?;
    }
    Ok(())
}

/// A strategic merge patch, for what a map holds: maps merge key by key and `null` deletes a key;
/// the directives `$patch: replace` (the map becomes the patch's), `$patch: delete` (the map goes)
/// and `$retainKeys` (only the listed keys stay) apply. Lists are replaced whole, as in a merge
/// patch: built-in kinds carry no patch-merge keys here.
fn strategic_merge(doc: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *doc = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = Value::Object(p.clone());
        strip_directives(&mut replaced);
        *doc = replaced;
        return;
    }
    if !doc.is_object() {
        *doc = json!({});
    }
    let Value::Object(d) = doc else { unreachable!("made an object above") };
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        d.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k.as_str())));
    }
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        let deleted = v.is_null() || v.get("$patch").and_then(Value::as_str) == Some("delete");
        if deleted {
            d.remove(k);
        } else if v.is_object() {
            strategic_merge(d.entry(k.clone()).or_insert(Value::Null), v);
        } else {
            let mut v = v.clone();
            strip_directives(&mut v);
            d.insert(k.clone(), v);
        }
    }
}

/// Strategic-merge directives would otherwise end up stored as fields.
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            for c in m.values_mut() {
                strip_directives(c);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_hex() {
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"hi!"), "aGkh");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(unhex(&hex("ns\0name")).as_deref(), Some("ns\0name"));
    }
}
