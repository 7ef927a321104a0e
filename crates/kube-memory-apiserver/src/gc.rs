//! Garbage collection: ownerReferences (background, foreground, orphan) and namespace
//! termination.
//!
//! Simplification: the real collector is asynchronous; here it runs to a fixed point inside
//! the request that made it necessary, under the store lock, so tests need no polling. The
//! observable sequence of watch events is the same as the real one's, only faster.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::store::{ObjKey, Propagation, State, is_deleting, meta_mut};
use super::types::StorageKey;

struct Info {
    key: StorageKey,
    okey: ObjKey,
    uid: String,
    deleting: bool,
    foreground: bool,
    owners: Vec<(String, bool)>,
}

enum Action {
    Delete(StorageKey, ObjKey),
    DropOwners(StorageKey, ObjKey, Vec<String>),
    FinishForeground(StorageKey, ObjKey),
    FinishNamespace(ObjKey),
}

impl State {
    pub(super) fn collect_garbage(&mut self) {
        // Each pass makes progress or stops; the bound only guards against a bug looping.
        for _ in 0..10_000 {
            let actions = self.plan();
            if actions.is_empty() {
                return;
            }
            for a in actions {
                self.act(a);
            }
        }
        tracing::warn!("garbage collector did not settle");
    }

    fn snapshot(&self) -> Vec<Info> {
        let mut out = Vec::new();
        for (key, objs) in &self.objects {
            for (okey, o) in objs {
                let fins = o.pointer("/metadata/finalizers").and_then(Value::as_array);
                out.push(Info {
                    key: key.clone(),
                    okey: okey.clone(),
                    uid: o.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string(),
                    deleting: is_deleting(o),
                    foreground: fins.is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion")),
                    owners: o
                        .pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .map(|refs| {
                            refs.iter()
                                .filter_map(|r| {
                                    let uid = r.get("uid")?.as_str()?.to_string();
                                    let block =
                                        r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true);
                                    Some((uid, block))
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
        }
        out
    }

    fn plan(&self) -> Vec<Action> {
        let infos = self.snapshot();
        let by_uid: HashMap<&str, &Info> = infos.iter().map(|i| (i.uid.as_str(), i)).collect();
        let mut actions = Vec::new();
        for ns in infos.iter().filter(|i| i.deleting && i.key.0.is_empty() && i.key.1 == "namespaces") {
            let content: Vec<&Info> =
                infos.iter().filter(|i| i.okey.0 == ns.okey.1 && !i.okey.0.is_empty()).collect();
            if content.is_empty() {
                actions.push(Action::FinishNamespace(ns.okey.clone()));
            }
            for i in content.into_iter().filter(|i| !i.deleting) {
                actions.push(Action::Delete(i.key.clone(), i.okey.clone()));
            }
        }
        for i in infos.iter().filter(|i| !i.owners.is_empty() && !i.deleting) {
            let absent: Vec<String> = i
                .owners
                .iter()
                .filter(|(u, _)| !by_uid.contains_key(u.as_str()))
                .map(|(u, _)| u.clone())
                .collect();
            let owner_in_foreground = i
                .owners
                .iter()
                .any(|(u, _)| by_uid.get(u.as_str()).is_some_and(|o| o.deleting && o.foreground));
            if absent.len() == i.owners.len() || owner_in_foreground {
                actions.push(Action::Delete(i.key.clone(), i.okey.clone()));
            } else if !absent.is_empty() {
                actions.push(Action::DropOwners(i.key.clone(), i.okey.clone(), absent));
            }
        }
        for o in infos.iter().filter(|i| i.deleting && i.foreground) {
            let blocked = infos.iter().any(|d| d.owners.iter().any(|(u, block)| *block && *u == o.uid));
            if !blocked {
                actions.push(Action::FinishForeground(o.key.clone(), o.okey.clone()));
            }
        }
        actions
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Delete(key, okey) => {
                if let Some(rt) = self.registry.by_storage(&key) {
                    let _ = self.delete_at(&rt, &okey, Propagation::Background, None);
                } else {
                    self.remove(&key, &okey);
                }
            }
            Action::DropOwners(key, okey, uids) => {
                self.system_edit(&key, &okey, |o| {
                    if let Some(Value::Array(refs)) = meta_mut(o).get_mut("ownerReferences") {
                        refs.retain(|r| {
                            r.get("uid").and_then(Value::as_str).is_none_or(|u| !uids.iter().any(|x| x == u))
                        });
                    }
                });
            }
            Action::FinishForeground(key, okey) => {
                self.system_edit(&key, &okey, |o| {
                    if let Some(Value::Array(f)) = meta_mut(o).get_mut("finalizers") {
                        f.retain(|x| x != "foregroundDeletion");
                    }
                });
            }
            Action::FinishNamespace(okey) => {
                let key = (String::new(), "namespaces".to_string());
                self.remove(&key, &okey);
            }
        }
    }

    /// A write by the server itself; removes the object if that empties its finalizers.
    fn system_edit(&mut self, key: &StorageKey, okey: &ObjKey, edit: impl FnOnce(&mut Value)) {
        let Some(old) = self.object(key, okey).cloned() else {
            return;
        };
        let mut new = old.clone();
        edit(&mut new);
        if new == old {
            return;
        }
        let done = is_deleting(&new)
            && new.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty);
        self.store_modified(key, okey, old, &mut new);
        if done {
            self.remove(key, okey);
        }
    }

    /// `propagationPolicy: Orphan`: dependents lose their reference to the owner.
    pub(super) fn orphan_dependents(&mut self, owner_uid: &str) {
        let targets: Vec<(StorageKey, ObjKey)> = self
            .objects
            .iter()
            .flat_map(|(k, objs)| objs.iter().map(move |(ok, o)| (k, ok, o)))
            .filter(|(_, _, o)| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| refs.iter().any(|r| r.get("uid") == Some(&json!(owner_uid))))
            })
            .map(|(k, ok, _)| (k.clone(), ok.clone()))
            .collect();
        for (key, okey) in targets {
            self.system_edit(&key, &okey, |o| {
                let m = meta_mut(o);
                if let Some(Value::Array(refs)) = m.get_mut("ownerReferences") {
                    refs.retain(|r| r.get("uid") != Some(&json!(owner_uid)));
                    if refs.is_empty() {
                        m.remove("ownerReferences");
                    }
                }
            });
        }
    }
}
