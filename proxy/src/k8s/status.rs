//! What the leader writes back: Ingress status and Events.
//!
//! Status: every served Ingress gets `status.loadBalancer.ingress` set to the configured
//! addresses (`status.addresses`, or the load-balancer status of `status.publish_service`).
//! An Ingress is written only when its observed status differs from that, so relists, restarts
//! and leader changes write nothing. An Ingress no longer served has its status cleared, but only
//! when it still holds our addresses: a status written by another controller is never touched.
//!
//! Events (`events.k8s.io/v1`, through kube-rs's `Recorder`, which also folds repeats into a
//! series): a Warning on an Ingress for each rule skipped, with the reason; a Normal one when an
//! Ingress is first served. Each is raised once per instance while it stays true, so a relist
//! raises none; an instance that becomes leader announces what it has not announced itself.
//! Events are paced ([`super::events`]): one place in the queue per Ingress, what is written
//! worked out from the newest report when its turn comes, `status.events_per_second` at most,
//! and the oldest shed (counted in `sluice_events_dropped_total`) beyond
//! `status.events_max_pending`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Api;
use sluice_config::model::ObjectRef;
use sluice_config::settings::StatusSettings;
use sluice_config::Finding;

use super::events::{EventQueue, RateLimit, ShedReport};
use super::store::{IngressMeta, LbAddress, Store};
use crate::state::ApplyReport;

/// The addresses the settings ask for, or `None` when nothing is known to publish.
pub fn desired_addresses(settings: &StatusSettings, store: &Store) -> Option<Vec<LbAddress>> {
    if !settings.addresses.is_empty() {
        let mut out: Vec<LbAddress> = settings
            .addresses
            .iter()
            .map(|a| match a.parse::<IpAddr>() {
                Ok(_) => LbAddress::Ip(a.clone()),
                Err(_) => LbAddress::Hostname(a.clone()),
            })
            .collect();
        out.sort();
        out.dedup();
        return Some(out);
    }
    let (ns, name) = settings.publish_service.as_ref()?;
    store
        .service_lb(&ObjectRef::new(ns, name))
        .filter(|lb| !lb.is_empty())
}

/// The merge patch that sets (or, with an empty list, removes) the load-balancer addresses.
pub fn status_patch(addresses: &[LbAddress]) -> serde_json::Value {
    if addresses.is_empty() {
        return serde_json::json!({"status": {"loadBalancer": {"ingress": null}}});
    }
    let list: Vec<serde_json::Value> = addresses
        .iter()
        .map(|a| match a {
            LbAddress::Ip(ip) => serde_json::json!({"ip": ip}),
            LbAddress::Hostname(h) => serde_json::json!({"hostname": h}),
        })
        .collect();
    serde_json::json!({"status": {"loadBalancer": {"ingress": list}}})
}

/// The status writes needed now: (Ingress, addresses to write; empty means clear).
pub fn status_changes<'a>(
    served: &BTreeSet<ObjectRef>,
    desired: Option<&[LbAddress]>,
    ingresses: impl IntoIterator<Item = (&'a ObjectRef, &'a IngressMeta)>,
) -> Vec<(ObjectRef, Vec<LbAddress>)> {
    let Some(desired) = desired else {
        return Vec::new();
    };
    ingresses
        .into_iter()
        .filter_map(|(key, meta)| {
            if served.contains(key) {
                (meta.status != desired).then(|| (key.clone(), desired.to_vec()))
            } else {
                (!meta.status.is_empty() && meta.status == desired)
                    .then(|| (key.clone(), Vec::new()))
            }
        })
        .collect()
}

/// Writes status and Events for the leader.
pub struct StatusWriter {
    client: kube::Client,
    recorder: Recorder,
    settings: StatusSettings,
    /// (Ingress, resourceVersion) already written with this value: skip until the object changes.
    written: BTreeMap<ObjectRef, (Option<String>, Vec<LbAddress>)>,
    announced_skipped: BTreeSet<Finding>,
    announced_served: BTreeSet<ObjectRef>,
    /// The served set the last [`StatusWriter::update`] worked through.
    updated_served: Option<Arc<BTreeSet<ObjectRef>>>,
    /// The newest report: what a queued Ingress's Events are worked out from.
    latest: Arc<ApplyReport>,
    /// Ingresses with something not yet announced.
    queue: EventQueue,
    limit: RateLimit,
    shed: ShedReport,
    /// `sluice_events_dropped_total`.
    dropped: prometheus::IntCounter,
}

impl StatusWriter {
    pub fn new(
        client: kube::Client,
        settings: StatusSettings,
        controller: &str,
        instance: String,
        dropped: prometheus::IntCounter,
    ) -> Self {
        let reporter = Reporter {
            controller: controller.to_string(),
            instance: Some(instance),
        };
        StatusWriter {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            queue: EventQueue::new(settings.events_max_pending),
            limit: RateLimit::new(settings.events_per_second, Instant::now()),
            settings,
            written: BTreeMap::new(),
            announced_skipped: BTreeSet::new(),
            announced_served: BTreeSet::new(),
            updated_served: None,
            latest: Arc::new(ApplyReport::default()),
            shed: ShedReport::default(),
            dropped,
        }
    }

    /// Brings every Ingress's status in line with what is served now.
    pub async fn reconcile(&mut self, served: &BTreeSet<ObjectRef>, store: &Store) {
        let desired = desired_addresses(&self.settings, store);
        // Read in place under the store's lock: a report comes with every publish, and a copy
        // of every Ingress's facts for each would cost more than the publish.
        let changes = store
            .scan_ingress_meta(|ingresses| status_changes(served, desired.as_deref(), ingresses));
        for (key, addresses) in changes {
            let rv = store.ingress_resource_version(&key);
            if self.written.get(&key) == Some(&(rv.clone(), addresses.clone())) {
                continue; // already written; waiting for the watch to show it
            }
            let api: Api<Ingress> = Api::namespaced(self.client.clone(), &key.namespace);
            let patch = status_patch(&addresses);
            match api
                .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(ingress = %key, addresses = addresses.len(), "ingress status written");
                    self.written.insert(key, (rv, addresses));
                }
                Err(e) => {
                    tracing::warn!(ingress = %key, error = %e, "writing ingress status failed")
                }
            }
        }
    }

    /// The newest report: queues every Ingress with something not announced yet, and forgets
    /// what is no longer current, so a rule that is fixed and breaks again is announced again.
    pub fn update(&mut self, report: Arc<ApplyReport>) {
        self.announced_skipped
            .retain(|s| report.skipped.contains(s));
        // The served set is shared from report to report until an Ingress starts or stops
        // being served: the same set has nothing new to announce (what it had is queued).
        let same_served = self
            .updated_served
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &report.served));
        if !same_served {
            self.announced_served.retain(|o| report.served.contains(o));
        }
        let newly_served = (!same_served).then(|| report.served.difference(&self.announced_served));
        // Each Ingress once (several skipped rules and its being served make one place).
        let due: BTreeSet<&ObjectRef> = report
            .skipped
            .difference(&self.announced_skipped)
            .map(|s| &s.ingress)
            .chain(newly_served.into_iter().flatten())
            .collect();
        let mut shed = std::collections::HashSet::new();
        for key in due {
            shed.extend(self.queue.push(key));
        }
        if !shed.is_empty() {
            // What a shed Ingress had to say is dropped, not put off: counted as announced, so
            // the next report does not queue it again.
            let dropped_skips: Vec<Finding> = report
                .skipped
                .iter()
                .filter(|s| shed.contains(&s.ingress))
                .cloned()
                .collect();
            self.announced_skipped.extend(dropped_skips);
            self.announced_served
                .extend(shed.iter().filter(|o| report.served.contains(*o)).cloned());
        }
        self.updated_served = Some(report.served.clone());
        self.latest = report;
        let shed = shed.len();
        if shed > 0 {
            self.dropped.inc_by(shed as u64);
            if let Some(n) = self.shed.shed(shed, Instant::now()) {
                tracing::warn!(
                    dropped = n,
                    pending = self.queue.len(),
                    max_pending = self.settings.events_max_pending,
                    "Events fall behind: the oldest pending ones were dropped"
                );
            }
        }
    }

    /// Keeps the newest report without queuing anything (a follower's part): on gaining
    /// leadership, [`StatusWriter::reset`] announces from it.
    pub fn remember(&mut self, report: Arc<ApplyReport>) {
        self.latest = report;
    }

    /// Forgets what status was written (on gaining leadership everything is compared afresh)
    /// and queues whatever the newest report has that this instance has not announced itself.
    pub fn reset(&mut self) {
        self.written.clear();
        self.queue.clear();
        self.update(self.latest.clone());
    }

    /// When the next queued Ingress's Events may be written; `None` when none waits.
    pub fn next_write_at(&mut self) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        Some(self.limit.ready_at(Instant::now()))
    }

    /// Writes the Events of the Ingress at the front of the queue, as the newest report has
    /// them: a Warning per skipped rule not announced yet, a Normal one if it is newly served.
    /// Each Event spends one token of the rate limit, waiting for it if need be.
    pub async fn write_next(&mut self, store: &Store) {
        let Some(key) = self.queue.pop() else {
            return;
        };
        let latest = self.latest.clone();
        let skipped: Vec<&Finding> = latest
            .skipped
            .iter()
            .filter(|s| s.ingress == key && !self.announced_skipped.contains(*s))
            .collect();
        let served = latest.served.contains(&key) && !self.announced_served.contains(&key);
        if skipped.is_empty() && !served {
            return;
        }
        let reference = ingress_reference(&key, store);
        for s in skipped {
            self.wait_for_token().await;
            let ev = Event {
                type_: EventType::Warning,
                reason: s.reason.as_str().to_string(),
                note: Some(truncate(&s.message, 1000)),
                action: "Sync".to_string(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&ev, &reference).await {
                tracing::warn!(ingress = %key, error = %e, "publishing an Event failed");
            }
            self.announced_skipped.insert(s.clone());
        }
        if served {
            self.wait_for_token().await;
            let ev = Event {
                type_: EventType::Normal,
                reason: "Served".to_string(),
                note: Some("sluice serves this Ingress".to_string()),
                action: "Sync".to_string(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&ev, &reference).await {
                tracing::warn!(ingress = %key, error = %e, "publishing an Event failed");
            }
            self.announced_served.insert(key);
        }
    }

    async fn wait_for_token(&mut self) {
        // Bounded: the bucket refills at a rate of at least one token per second.
        while !self.limit.try_take(Instant::now()) {
            let at = self.limit.ready_at(Instant::now());
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

/// The reference an Event on Ingress `key` points at.
fn ingress_reference(key: &ObjectRef, store: &Store) -> ObjectReference {
    ObjectReference {
        api_version: Some("networking.k8s.io/v1".to_string()),
        kind: Some("Ingress".to_string()),
        namespace: Some(key.namespace.clone()),
        name: Some(key.name.clone()),
        uid: store.ingress_uid(key),
        ..Default::default()
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(status: &[&str]) -> IngressMeta {
        IngressMeta {
            status: status
                .iter()
                .map(|s| LbAddress::Ip(s.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_differing_statuses_are_written_and_only_ours_are_cleared() {
        let ours = vec![LbAddress::Ip("192.0.2.1".into())];
        let ingresses = BTreeMap::from([
            (ObjectRef::new("a", "served-stale"), meta(&[])),
            (ObjectRef::new("a", "served-current"), meta(&["192.0.2.1"])),
            (ObjectRef::new("a", "dropped-ours"), meta(&["192.0.2.1"])),
            (
                ObjectRef::new("a", "someone-elses"),
                meta(&["198.51.100.9"]),
            ),
        ]);
        let served = BTreeSet::from([
            ObjectRef::new("a", "served-stale"),
            ObjectRef::new("a", "served-current"),
        ]);
        let changes = status_changes(&served, Some(&ours), &ingresses);
        assert_eq!(
            changes,
            vec![
                (ObjectRef::new("a", "dropped-ours"), vec![]),
                (ObjectRef::new("a", "served-stale"), ours.clone()),
            ]
        );
        assert!(status_changes(&served, None, &ingresses).is_empty());
    }

    /// An Ingress with a skipped rule that is also served has two Events due but one place in
    /// the queue; a shed Ingress's Events are dropped for good, not queued again by the next
    /// report. (Pushing each due Event's Ingress separately makes the queue shed Ingresses it
    /// then holds, and this fail.)
    #[tokio::test]
    async fn an_ingress_waits_once_and_a_shed_one_is_not_queued_again() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let settings = StatusSettings {
            addresses: Vec::new(),
            publish_service: None,
            events_per_second: 1,
            events_max_pending: 2,
        };
        let dropped = prometheus::IntCounter::new("dropped", "dropped").unwrap();
        let mut w = StatusWriter::new(client, settings, "c", "i".into(), dropped.clone());
        let keys: Vec<ObjectRef> = (0..3)
            .map(|i| ObjectRef::new("a", format!("i{i}")))
            .collect();
        let report = ApplyReport {
            skipped: keys
                .iter()
                .map(|k| Finding {
                    ingress: k.clone(),
                    reason: sluice_config::Reason::MissingService,
                    message: "no".into(),
                })
                .collect(),
            served: Arc::new(keys.iter().cloned().collect()),
            ..Default::default()
        };
        w.update(Arc::new(report.clone()));
        assert_eq!((w.queue.len(), dropped.get()), (2, 1));
        w.update(Arc::new(report));
        assert_eq!((w.queue.len(), dropped.get()), (2, 1));
        assert_eq!(w.queue.pop(), Some(keys[1].clone()));
        assert_eq!(w.queue.pop(), Some(keys[2].clone()));
    }

    #[test]
    fn the_patch_sets_ips_and_hostnames_or_removes_the_list() {
        let p = status_patch(&[
            LbAddress::Ip("192.0.2.1".into()),
            LbAddress::Hostname("lb.test".into()),
        ]);
        assert_eq!(
            p,
            serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"hostname": "lb.test"}]}}})
        );
        assert_eq!(
            status_patch(&[]),
            serde_json::json!({"status": {"loadBalancer": {"ingress": null}}})
        );
    }
}
