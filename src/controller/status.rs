//! Status writes: conditions stamped with the current time, and one server-side apply of the whole status,
//! skipped when nothing changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::MANAGER;
use crate::desired::conditions::{Observation, merge};

/// The conditions after `observations` at `generation`, stamped now.
pub fn conditions_after(
    current: &[Condition],
    observations: &[Observation],
    generation: Option<i64>,
) -> Vec<Condition> {
    merge(current, observations, generation, &Time(k8s_openapi::jiff::Timestamp::now()))
}

/// Writes `status` with server-side apply, unless it equals `current`.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    obj: &K,
    current: Option<&S>,
    status: &S,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let name = obj.meta().name.as_deref().unwrap_or_default();
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(true)
}
