//! Leader election with a `coordination.k8s.io/v1` Lease.
//!
//! Only the leader writes Ingress status and Events; every instance routes. The leader renews
//! the Lease every renew period; a follower takes the Lease over once its `renewTime` is older
//! than its `leaseDurationSeconds`, so another instance takes over within one lease duration
//! after the leader stops. Every write is a replace carrying the `resourceVersion` read, so two
//! candidates can never both win: the loser gets 409 Conflict. An instance that cannot renew
//! steps down when its own lease would have expired. On a clean shutdown the leader releases the
//! Lease so a successor need not wait.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::Api;
use sluice_config::settings::LeaderElection;
use tokio::sync::watch;

/// This instance's name in the Lease: from the settings, else `$POD_NAME`, else the host name
/// and process id.
pub fn identity(settings: &LeaderElection) -> String {
    if let Some(id) = &settings.identity {
        return id.clone();
    }
    if let Ok(pod) = std::env::var("POD_NAME") {
        if !pod.is_empty() {
            return pod;
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "sluice".to_string());
    format!("{host}-{}", std::process::id())
}

/// The namespace of the Lease: from the settings, else `$POD_NAMESPACE`, else `default`.
pub fn lease_namespace(settings: &LeaderElection) -> String {
    settings
        .lease_namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| "default".to_string())
}

/// What one round of the election decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Leading,
    Following,
    /// The API server could not be asked.
    Unknown,
}

/// Competes for the Lease until `shutdown`, publishing leadership on `leader`.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    renew: Duration,
}

impl Elector {
    pub fn new(client: kube::Client, settings: &LeaderElection, identity: String) -> Elector {
        Elector {
            api: Api::namespaced(client, &lease_namespace(settings)),
            name: settings.lease_name.clone(),
            identity,
            duration: settings.lease_duration,
            renew: settings.renew_period,
        }
    }

    fn lease_secs(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// One attempt to acquire or renew.
    async fn round(&self) -> Round {
        let now = Timestamp::now();
        let current = match self.api.get_opt(&self.name).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "reading the leader Lease failed");
                return Round::Unknown;
            }
        };
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.lease_secs()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Round::Leading,
                Err(kube::Error::Api(s)) if s.code == 409 => Round::Following,
                Err(e) => {
                    tracing::debug!(error = %e, "creating the leader Lease failed");
                    Round::Unknown
                }
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.identity;
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(MicroTime(renewed)), Some(secs)) => {
                now > *renewed + SignedDuration::from_secs(i64::from(secs))
            }
            _ => true,
        };
        if !mine && !holder.is_empty() && !expired {
            return Round::Following;
        }
        if !mine {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(self.lease_secs());
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Round::Leading,
            Err(kube::Error::Api(s)) if s.code == 409 => Round::Following,
            Err(e) => {
                tracing::debug!(error = %e, "renewing the leader Lease failed");
                Round::Unknown
            }
        }
    }

    /// Gives the Lease up (clean shutdown), so a successor need not wait for it to expire.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::debug!(error = %e, "releasing the leader Lease failed");
        }
    }

    /// Runs the election until `shutdown` turns true.
    pub async fn run(self, leader: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
        let mut last_renewed: Option<tokio::time::Instant> = None;
        loop {
            let round = tokio::select! {
                r = tokio::time::timeout(self.renew, self.round()) => r.unwrap_or(Round::Unknown),
                _ = shutdown.changed() => break,
            };
            let leading = match round {
                Round::Leading => {
                    last_renewed = Some(tokio::time::Instant::now());
                    true
                }
                Round::Following => false,
                // Keep leading only while our last renewal would still hold the Lease.
                Round::Unknown => last_renewed.is_some_and(|t| t.elapsed() < self.duration),
            };
            if !leading {
                last_renewed = None;
            }
            if *leader.borrow() != leading {
                tracing::info!(identity = %self.identity, leading, "leadership changed");
                let _ = leader.send(leading);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.renew) => {}
                _ = shutdown.changed() => break,
            }
        }
        if *leader.borrow() {
            let _ = leader.send(false);
            let _ = tokio::time::timeout(Duration::from_secs(2), self.release()).await;
        }
    }
}
