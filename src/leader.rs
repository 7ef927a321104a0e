//! Leader election on a `coordination.k8s.io` Lease, with client-go's semantics, so that several replicas
//! can run and at most one acts at any time:
//!
//! - A standby judges the holder's Lease expired by its own monotonic clock: `leaseDurationSeconds` after
//!   it last *saw the Lease change*, never from the `renewTime` another replica's clock wrote. Clock skew
//!   between nodes cannot make two leaders.
//! - Every write carries the resourceVersion read, so two replicas racing for the Lease cannot both win.
//! - The holder counts its leadership as valid for `renew_deadline` (shorter than the lease) from the
//!   moment it *sent* its last successful renew, which is before any standby can have seen that renew.
//!   Every request is bounded by that deadline (kube's client sets no read timeout), so a hung renew or
//!   an unreachable API server ends leadership before another replica may take over.
//! - A standby waits for the longer of its own lease duration and the holder's (a holder configured with a
//!   longer lease is never judged by a standby's shorter one).
//! - Every AWS write passes a fence ([`crate::aws::Fence`]) held open only until the holder's leadership is
//!   valid: a leader that has lost the Lease without knowing it (a hung renew, a paused process) sends no
//!   write after its renew deadline, even from a reconcile still in flight.
//! - Leadership ending is reported at once ([`Elector::keep`] returns), and the caller drops what it was
//!   running: in-flight reconciles are cancelled, not drained.
//!
//! Why not `kube-lease-manager` (0.13, which supports kube 5): it judges expiry as `renewTime +
//! leaseDurationSeconds` against the local wall clock (the skew problem above), sets no deadline on its
//! requests, keeps reporting leadership while its renews fail (errors are retried silently), and renews
//! with unconditional patches, which the RBAC here does not grant. Each is a way for two replicas to act
//! at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;

/// Where the Lease is, who this replica is, and the timing of the election.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a standby waits, after it last saw the Lease change, before taking it over.
    pub duration: Duration,
    /// How long the holder acts after sending its last successful renew; shorter than `duration`, so
    /// that it stops before a standby may take over (the difference absorbs scheduling delays).
    pub renew_deadline: Duration,
    /// How often the holder renews, and how often a standby tries to acquire.
    pub retry: Duration,
}

impl LeaseSettings {
    /// client-go's defaults (15 s lease, 10 s renew deadline, 2 s retry), with this pod's name and namespace,
    /// for the Lease `name`.
    pub fn from_env(name: &str) -> Self {
        // Without POD_NAME every container would be pid 1: add the start time so replicas never share an
        // identity (two "holders" of one Lease would both lead).
        let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
            let started = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            format!("bucket-broker-{}-{started}", std::process::id())
        });
        let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".to_owned());
        LeaseSettings {
            name: name.to_owned(),
            namespace,
            identity,
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// A Lease request failed for a reason other than losing a race.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("leader election request failed")]
    Kube(#[source] kube::Error),
    #[error("leader election request got no answer in time")]
    Timeout,
}

/// Why leadership ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// Another replica holds the Lease.
    TakenOver,
    /// No renew succeeded within the renew deadline: another replica may lead by now.
    Unconfirmed,
}

/// The Lease as this replica last saw it change, and when, by the local monotonic clock.
#[derive(Clone, Debug)]
struct Observed {
    spec: LeaseSpec,
    at: Instant,
}

/// The Lease, held or wanted by one replica.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    observed: Option<Observed>,
    fence: Option<crate::aws::Fence>,
}

impl Elector {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Elector { api: Api::namespaced(client, &settings.namespace), settings, observed: None, fence: None }
    }

    /// Holds `fence` open exactly while this replica's leadership is valid: closed from now until the
    /// Lease is acquired, then until each renew's deadline.
    pub fn fencing(mut self, fence: crate::aws::Fence) -> Self {
        fence.hold_until(Instant::now());
        self.fence = Some(fence);
        self
    }

    fn valid_until(&self, until: Instant) {
        if let Some(fence) = &self.fence {
            fence.hold_until(until);
        }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// Waits until this replica holds the Lease, or `stop` resolves (`None`). Returns until when the
    /// leadership is valid without another renew.
    pub async fn acquire(&mut self, stop: impl Future<Output = ()>) -> Option<Instant> {
        tokio::pin!(stop);
        loop {
            let sent = Instant::now();
            let deadline = sent + self.settings.renew_deadline;
            tokio::select! {
                _ = &mut stop => return None,
                result = self.try_acquire_or_renew(deadline) => match result {
                    Ok(true) => {
                        self.valid_until(deadline);
                        return Some(deadline);
                    }
                    Ok(false) => {}
                    Err(err) => tracing::warn!(error = %err, "Failed to acquire the leader Lease"),
                },
            }
            tokio::select! {
                _ = &mut stop => return None,
                _ = tokio::time::sleep(self.settings.retry) => {}
            }
        }
    }

    /// Renews the Lease every `retry` until leadership is lost or cannot be confirmed before
    /// `valid_until`; returns at once when either happens, at the latest at the deadline.
    pub async fn keep(&mut self, mut valid_until: Instant) -> Lost {
        loop {
            tokio::time::sleep_until((Instant::now() + self.settings.retry).min(valid_until)).await;
            let sent = Instant::now();
            if sent >= valid_until {
                tracing::warn!("Could not renew the leader Lease in time");
                return Lost::Unconfirmed;
            }
            match self.try_acquire_or_renew(valid_until).await {
                Ok(true) => {
                    valid_until = sent + self.settings.renew_deadline;
                    self.valid_until(valid_until);
                }
                Ok(false) => return Lost::TakenOver,
                Err(err) => tracing::warn!(error = %err, "Failed to renew the leader Lease"),
            }
        }
    }

    /// One attempt, answered by `deadline` at the latest: `Ok(true)` when this replica holds the Lease
    /// afterwards (acquired or renewed), `Ok(false)` when another replica does.
    pub async fn try_acquire_or_renew(&mut self, deadline: Instant) -> Result<bool, LeaseError> {
        let current =
            bounded(deadline, self.api.get_opt(&self.settings.name)).await?.map_err(LeaseError::Kube)?;
        // Observed when the answer arrived (as client-go does): dating it from before a slow GET would
        // let a standby count the holder's lease down from too early.
        let now = Instant::now();
        let Some(mut lease) = current else {
            let spec = self.spec(None);
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.settings.name.clone()), ..Default::default() },
                spec: Some(spec.clone()),
            };
            return match bounded(deadline, self.api.create(&PostParams::default(), &lease)).await? {
                Ok(_) => {
                    self.observed = Some(Observed { spec, at: now });
                    Ok(true)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(err) => Err(LeaseError::Kube(err)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        self.observe(&spec, now);
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let ours = holder == Some(self.settings.identity.as_str());
        if !ours && holder.is_some() && !self.expired(now) {
            return Ok(false);
        }
        let desired = self.spec(Some(&spec));
        lease.spec = Some(desired.clone());
        match bounded(deadline, self.api.replace(&self.settings.name, &PostParams::default(), &lease)).await?
        {
            Ok(_) => {
                self.observed = Some(Observed { spec: desired, at: now });
                Ok(true)
            }
            // Another replica wrote first: it holds the Lease, or will be judged at the next attempt.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(LeaseError::Kube(err)),
        }
    }

    /// Gives the Lease up, so that a standby takes over at once instead of waiting for it to expire.
    /// Only after this replica stopped acting.
    pub async fn release(&mut self) -> Result<(), LeaseError> {
        let deadline = Instant::now() + self.settings.renew_deadline;
        let current = bounded(deadline, self.api.get_opt(&self.settings.name)).await?;
        let Some(mut lease) = current.map_err(LeaseError::Kube)? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_duration_seconds = Some(1);
        lease.spec = Some(spec);
        match bounded(deadline, self.api.replace(&self.settings.name, &PostParams::default(), &lease)).await?
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(err) => Err(LeaseError::Kube(err)),
        }
    }

    /// Records when the Lease was last seen to change.
    fn observe(&mut self, spec: &LeaseSpec, now: Instant) {
        if self.observed.as_ref().is_none_or(|o| o.spec != *spec) {
            self.observed = Some(Observed { spec: spec.clone(), at: now });
        }
    }

    /// Whether the Lease as last observed has gone unchanged for its whole duration: the longer of the
    /// holder's (as it wrote it) and this replica's own.
    fn expired(&self, now: Instant) -> bool {
        let Some(observed) = &self.observed else { return true };
        let seconds = observed.spec.lease_duration_seconds.map(|s| u64::try_from(s).unwrap_or(0));
        let duration =
            seconds.map_or(self.settings.duration, Duration::from_secs).max(self.settings.duration);
        observed.at + duration <= now
    }

    /// The Lease spec that makes this replica the holder: a renew keeps the acquire time and the count of
    /// transitions, a takeover starts both anew.
    fn spec(&self, current: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let ours =
            current.is_some_and(|c| c.holder_identity.as_deref() == Some(self.settings.identity.as_str()));
        let transitions = current.and_then(|c| c.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.settings.duration.as_secs().try_into().unwrap_or(i32::MAX)),
            acquire_time: if ours { current.and_then(|c| c.acquire_time.clone()) } else { Some(now.clone()) },
            renew_time: Some(now),
            lease_transitions: Some(if ours || current.is_none() { transitions } else { transitions + 1 }),
            ..current.cloned().unwrap_or_default()
        }
    }
}

/// `request`, or [`LeaseError::Timeout`] when it has not answered by `deadline`.
async fn bounded<T>(deadline: Instant, request: impl Future<Output = T>) -> Result<T, LeaseError> {
    tokio::time::timeout_at(deadline, request).await.map_err(|_| LeaseError::Timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elector() -> Elector {
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("url"));
        let client = Client::try_from(config).expect("client");
        let settings = LeaseSettings {
            name: "bucket-broker".to_owned(),
            namespace: "default".to_owned(),
            identity: "me".to_owned(),
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        };
        Elector::new(client, settings)
    }

    fn held_by(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn expiry_follows_the_local_clock_from_the_last_change_seen() {
        let mut elector = elector();
        let start = Instant::now();
        // The holder's clock is an hour behind: its renewTime looks long expired, yet it renews.
        let an_hour_ago = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(3600);
        elector.observe(&held_by("other", an_hour_ago), start);
        assert!(!elector.expired(start + Duration::from_secs(14)), "a renewTime in the past is not expiry");
        let renewed = an_hour_ago + k8s_openapi::jiff::SignedDuration::from_secs(10);
        elector.observe(&held_by("other", renewed), start + Duration::from_secs(10));
        assert!(!elector.expired(start + Duration::from_secs(24)), "each change seen restarts the clock");
        assert!(elector.expired(start + Duration::from_secs(25)), "unchanged for the whole duration");

        // The holder's clock is an hour ahead: a renewTime in the future does not extend the Lease.
        let mut elector = super::tests::elector();
        let ahead = Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(3600);
        elector.observe(&held_by("other", ahead), start);
        elector.observe(&held_by("other", ahead), start + Duration::from_secs(10));
        assert!(elector.expired(start + Duration::from_secs(15)), "seeing the same Lease again is no renew");
    }

    #[tokio::test]
    async fn a_standby_waits_for_the_longer_of_its_own_and_the_holders_lease_duration() {
        let start = Instant::now();
        let mut elector = elector();
        // The holder wrote a 5 s lease; this standby's own is 15 s: it waits 15 s.
        let mut short = held_by("other", Timestamp::now());
        short.lease_duration_seconds = Some(5);
        elector.observe(&short, start);
        assert!(!elector.expired(start + Duration::from_secs(14)), "the standby's own 15 s hold");
        assert!(elector.expired(start + Duration::from_secs(15)));
        // The holder wrote a 60 s lease: it is judged by that.
        let mut elector = super::tests::elector();
        let mut long = held_by("other", Timestamp::now());
        long.lease_duration_seconds = Some(60);
        elector.observe(&long, start);
        assert!(!elector.expired(start + Duration::from_secs(59)), "the holder's 60 s hold");
        assert!(elector.expired(start + Duration::from_secs(60)));
        // Unreadable (negative) durations fall back to the standby's own.
        let mut elector = super::tests::elector();
        let mut broken = held_by("other", Timestamp::now());
        broken.lease_duration_seconds = Some(-1);
        elector.observe(&broken, start);
        assert!(!elector.expired(start + Duration::from_secs(14)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_fence_is_closed_until_the_lease_is_held_and_follows_each_renew() {
        let fence = crate::aws::Fence::default();
        assert!(fence.allows_writes(), "open without leader election");
        let elector = elector().fencing(fence.clone());
        assert!(!fence.allows_writes(), "closed while standing by");
        elector.valid_until(Instant::now() + Duration::from_secs(10));
        assert!(fence.allows_writes(), "open while the leadership is valid");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!fence.allows_writes(), "closed at the renew deadline, renewed or not");
    }

    #[tokio::test]
    async fn a_renew_keeps_the_acquire_time_and_a_takeover_counts_a_transition() {
        let elector = elector();
        let mut theirs = held_by("other", Timestamp::now());
        theirs.lease_transitions = Some(3);
        let taken = elector.spec(Some(&theirs));
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.lease_transitions, Some(4));
        let renewed = elector.spec(Some(&taken));
        assert_eq!(renewed.lease_transitions, Some(4));
        assert_eq!(renewed.acquire_time, taken.acquire_time);
        assert_eq!(elector.spec(None).lease_transitions, Some(0));
    }
}
