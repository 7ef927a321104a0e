//! Leader election on a `coordination.k8s.io` Lease, so that several replicas can run and only one
//! reconciles. The holder renews the Lease well within its duration; another replica takes it over once
//! it has expired, or at once when the holder releases it on a clean shutdown. Every write carries the
//! Lease's resourceVersion, so two replicas racing for it cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// Where the Lease is and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a Lease is valid without renewal.
    pub duration: Duration,
    /// How often the holder renews, and how often a standby tries to acquire.
    pub retry: Duration,
}

impl LeaseSettings {
    /// The defaults of client-go's leader election (15 s lease), with this pod's name and namespace.
    pub fn from_env() -> Self {
        let identity =
            std::env::var("POD_NAME").unwrap_or_else(|_| format!("bucket-broker-{}", std::process::id()));
        let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".to_owned());
        LeaseSettings {
            name: "bucket-broker".to_owned(),
            namespace,
            identity,
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        }
    }
}

/// A Lease operation failed for a reason other than losing a race.
#[derive(Debug, thiserror::Error)]
#[error("leader election request failed")]
pub struct LeaseError(#[source] pub kube::Error);

/// The Lease, held or wanted by one replica.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl Elector {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Elector { api: Api::namespaced(client, &settings.namespace), settings }
    }

    /// Takes the Lease if it is free, expired, or already ours. `Ok(false)`: another replica holds it.
    pub async fn try_acquire(&self) -> Result<bool, LeaseError> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await.map_err(LeaseError)? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.settings.name.clone()), ..Default::default() },
                spec: Some(self.spec(now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(err) => Err(LeaseError(err)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        if holder == Some(self.settings.identity.as_str()) {
            return self.renew().await;
        }
        let expired = match (spec.renew_time.as_ref(), spec.lease_duration_seconds) {
            (Some(renewed), Some(seconds)) => renewed.0 + SignedDuration::from_secs(i64::from(seconds)) < now,
            _ => true,
        };
        if holder.is_some() && !expired {
            return Ok(false);
        }
        lease.spec = Some(self.spec(now, spec.lease_transitions.unwrap_or(0) + 1));
        self.replace(&lease).await
    }

    /// Renews the Lease. `Ok(false)`: it is no longer ours.
    pub async fn renew(&self) -> Result<bool, LeaseError> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await.map_err(LeaseError)? else {
            return Ok(false);
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(false);
        }
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        self.replace(&lease).await
    }

    /// Gives the Lease up, so that a standby takes over at once instead of waiting for it to expire.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await.map_err(LeaseError)? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        lease.spec = Some(spec);
        self.replace(&lease).await.map(drop)
    }

    fn spec(&self, now: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.settings.duration.as_secs().try_into().unwrap_or(i32::MAX)),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Writes the Lease with its resourceVersion: a conflict means another replica wrote first.
    async fn replace(&self, lease: &Lease) -> Result<bool, LeaseError> {
        match self.api.replace(&self.settings.name, &PostParams::default(), lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(LeaseError(err)),
        }
    }
}
