//! Leader election with a `coordination.k8s.io/v1` `Lease`, so of several replicas only
//! one acts (watches Freight, writes state, triggers builds).
//!
//! The protocol is client-go's `leaderelection` with a Lease lock: a candidate takes the
//! Lease when nobody holds it, when it holds it already, or when the holder's
//! `renewTime + leaseDurationSeconds` has passed; every write is a replace carrying the
//! `resourceVersion` read, so of two candidates racing for an expired Lease the API
//! server lets exactly one win (the other gets 409 Conflict and keeps waiting). The
//! leader renews every [`LeaseConfig::renew_every`]; when it has not renewed for
//! [`LeaseConfig::duration`] (the API server unreachable, another holder seen) it has lost
//! the lease and must stop acting — [`Elector::hold`] cancels its token, and the
//! controller exits so the Deployment restarts it as a candidate. A graceful stop
//! releases the Lease (empties `holderIdentity`), so a standby takes over at once
//! instead of after the lease duration.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Timing and identity of one candidate.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's name (`image-factory`).
    pub name: String,
    /// This candidate (the pod name); must differ between replicas.
    pub identity: String,
    /// How long a Lease is valid without renewal (client-go's default: 15 s).
    pub duration: Duration,
    /// How often the leader renews (default 5 s; less than `duration`).
    pub renew_every: Duration,
    /// How often a candidate tries again (default 2 s).
    pub retry_every: Duration,
}

impl LeaseConfig {
    /// Defaults for candidate `identity` of Lease `name`.
    pub fn new(name: &str, identity: &str) -> Self {
        Self {
            name: name.to_string(),
            identity: identity.to_string(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// Whether `identity` may take a Lease whose spec is `spec` at `now`: nobody holds it,
/// `identity` holds it, or the holder's lease has expired.
pub fn may_take(spec: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == identity {
        return true;
    }
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15).max(1));
    spec.renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .is_none_or(|t| t.0 + jiff::SignedDuration::from_secs(secs) < now)
}

/// One candidate for the Lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl Elector {
    /// A candidate writing Leases through `api` (the controller's namespace).
    pub fn new(api: Api<Lease>, config: LeaseConfig) -> Self {
        Self { api, config }
    }

    /// One attempt: takes or renews the Lease when [`may_take`] allows. `Ok(true)` when
    /// this candidate holds it afterwards.
    ///
    /// # Errors
    ///
    /// The API server's error, except a 409 Conflict (another candidate won the race),
    /// which is `Ok(false)`.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let secs = i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX);
        let current = self.api.get_opt(&self.config.name).await?;
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                if !may_take(&spec, &self.config.identity, now) {
                    return Ok(false);
                }
                let ours = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
                let transitions = spec.lease_transitions.unwrap_or(0);
                lease.spec = Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: if ours {
                        spec.acquire_time.clone()
                    } else {
                        Some(MicroTime(now))
                    },
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
                    ..spec
                });
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate holds the Lease (`true`) or `shutdown` (`false`).
    /// API errors are logged and retried.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> bool {
        let mut logged = false;
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    info!(lease = %self.config.name, identity = %self.config.identity, "leader");
                    return true;
                }
                Ok(false) if !logged => {
                    info!(lease = %self.config.name, identity = %self.config.identity, "another replica leads; standing by");
                    logged = true;
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(lease = %self.config.name, error = %e, "cannot read or write the Lease; retrying")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(self.config.retry_every) => {}
            }
        }
    }

    /// Renews the Lease until `shutdown` (then releases it); cancels `lost` and returns
    /// when it could not renew for the lease duration or another holder took it.
    pub async fn hold(&self, lost: &CancellationToken, shutdown: &CancellationToken) {
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.release().await;
                    return;
                }
                () = tokio::time::sleep(self.config.renew_every) => {}
            }
            match self.try_acquire().await {
                Ok(true) => last = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.config.name, "another replica took the Lease; stopping");
                    lost.cancel();
                    return;
                }
                Err(e) => warn!(lease = %self.config.name, error = %e, "cannot renew the Lease"),
            }
            if last.elapsed() >= self.config.duration {
                warn!(lease = %self.config.name, "Lease not renewed for its duration; stopping");
                lost.cancel();
                return;
            }
        }
    }

    /// Gives the Lease up (when held): `holderIdentity` emptied, so a standby takes
    /// it at its next try. Failures are logged: the Lease then expires on its own.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.config.name, "Lease released"),
            Err(e) => {
                warn!(lease = %self.config.name, error = %e, "cannot release the Lease; it expires on its own")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: &str, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(secs),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_taken_when_free_ours_or_expired() {
        let now: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        assert!(may_take(&LeaseSpec::default(), "a", now));
        assert!(may_take(
            &spec(Some(""), "2026-12-03T09:59:59Z", 15),
            "a",
            now
        ));
        assert!(may_take(
            &spec(Some("a"), "2026-12-03T09:59:59Z", 15),
            "a",
            now
        ));
        assert!(!may_take(
            &spec(Some("b"), "2026-12-03T09:59:50Z", 15),
            "a",
            now
        ));
        assert!(may_take(
            &spec(Some("b"), "2026-12-03T09:59:44Z", 15),
            "a",
            now
        ));
        // Without any time the holder cannot prove it is alive.
        let mut s = spec(Some("b"), "2026-12-03T09:59:59Z", 15);
        s.renew_time = None;
        assert!(may_take(&s, "a", now));
    }
}
