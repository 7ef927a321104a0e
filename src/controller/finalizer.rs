//! The finalizer step of every reconcile: kube's `finalizer` helper, with one difference. kube's patches
//! name the object only, so a pass working from a cache that still holds a deleted object could remove
//! (or add) the finalizer of a newer object of the same name, which would then be deleted without its
//! cleanup. Here every finalizer patch also tests the object's uid, and a patch that no longer fits the
//! object (404, or a failed test: 422) is not an error: the next pass sees the object as it is.
//!
//! The finalizer is added in the same pass as the object's first provisioning: the pass goes on with the
//! object as the patch returned it, and the version the patch wrote is recorded as this controller's own,
//! so that its watch event starts no second pass.
//!
//! No finalizer is a guarantee on its own: kube-apiserver deletes an object at once when the object it
//! read first had no finalizers, even if one was added while its DELETE was under way. A pass may then
//! have made AWS objects for it; the orphan sweeper removes them (`crate::sweeper`).

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Error as FinalizerError, Event};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Error;
use super::context::trim;
use super::memo::Memo;

/// How soon the object is looked at again after a finalizer patch found it changed (deleted, re-created
/// under the same name, or its finalizers edited): its own watch event normally comes first.
const RECHECK: Duration = Duration::from_secs(1);

/// Runs `reconcile` with `Apply` while the object carries `name` and is not being deleted, with `Cleanup`
/// once it is being deleted (and then removes `name`), and first adds `name` to an object without it (then
/// `Apply` gets the object as the patch left it, whose version `memo` records as written by us).
pub async fn finalized<K, F, Fut>(
    api: &Api<K>,
    memo: &Memo,
    name: &str,
    obj: Arc<K>,
    reconcile: F,
) -> Result<Action, FinalizerError<Error>>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    F: FnOnce(Event<K>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    let object_name = obj.meta().name.clone().ok_or(FinalizerError::UnnamedObject)?;
    let uid = obj.uid().ok_or(FinalizerError::ApplyFailed(Error::Incomplete("uid")))?;
    let finalizers = obj.finalizers().to_vec();
    let position = finalizers.iter().position(|f| f == name);
    let deleting = obj.meta().deletion_timestamp.is_some();
    match (position, deleting) {
        (Some(_), false) => reconcile(Event::Apply(obj)).await.map_err(FinalizerError::ApplyFailed),
        (Some(index), true) => {
            let action = reconcile(Event::Cleanup(obj)).await.map_err(FinalizerError::CleanupFailed)?;
            let path = format!("/metadata/finalizers/{index}");
            let patch = json!([
                {"op": "test", "path": "/metadata/uid", "value": uid},
                {"op": "test", "path": path, "value": name},
                {"op": "remove", "path": path},
            ]);
            match send(api, &object_name, patch).await {
                Ok(_) => Ok(action),
                Err(Changed) => Ok(Action::requeue(RECHECK)),
                Err(Failed(err)) => Err(FinalizerError::RemoveFinalizer(err)),
            }
        }
        (None, false) => {
            let uid_test = json!({"op": "test", "path": "/metadata/uid", "value": uid});
            let patch = if finalizers.is_empty() {
                json!([
                    uid_test,
                    {"op": "test", "path": "/metadata/finalizers", "value": Value::Null},
                    {"op": "add", "path": "/metadata/finalizers", "value": [name]},
                ])
            } else {
                json!([
                    uid_test,
                    {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
                    {"op": "add", "path": "/metadata/finalizers/-", "value": name},
                ])
            };
            match send(api, &object_name, patch).await {
                Ok(mut patched) => {
                    memo.wrote(&uid, patched.meta().resource_version.as_deref());
                    // As the cache would hold it: what a pass reads, and no more.
                    trim(&mut patched);
                    reconcile(Event::Apply(Arc::new(patched))).await.map_err(FinalizerError::ApplyFailed)
                }
                Err(Changed) => Ok(Action::requeue(RECHECK)),
                Err(Failed(err)) => Err(FinalizerError::AddFinalizer(err)),
            }
        }
        // Being deleted without our finalizer: nothing of ours is left to clean up.
        (None, true) => Ok(Action::await_change()),
    }
}

/// Why a finalizer patch was not applied.
enum Refused {
    /// The object is gone, or is not the one read (another uid, other finalizers): a JSON patch test
    /// failed, which the API server answers with 422 (or 404 when the name is free).
    Changed,
    Failed(kube::Error),
}
use Refused::{Changed, Failed};

/// Sends a finalizer patch; returns the object as patched.
async fn send<K>(api: &Api<K>, name: &str, operations: Value) -> Result<K, Refused>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let operations: json_patch::Patch =
        serde_json::from_value(operations).map_err(|e| Failed(kube::Error::SerdeError(e)))?;
    match api.patch(name, &PatchParams::default(), &Patch::<()>::Json(operations)).await {
        Ok(patched) => Ok(patched),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 422 => Err(Changed),
        Err(err) => Err(Failed(err)),
    }
}
