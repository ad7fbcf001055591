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

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Api;
use sluice_config::model::ObjectRef;
use sluice_config::settings::StatusSettings;
use sluice_config::Skipped;

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
pub fn status_changes(
    served: &BTreeSet<ObjectRef>,
    desired: Option<&[LbAddress]>,
    ingresses: &BTreeMap<ObjectRef, IngressMeta>,
) -> Vec<(ObjectRef, Vec<LbAddress>)> {
    let Some(desired) = desired else {
        return Vec::new();
    };
    ingresses
        .iter()
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
    announced_skipped: BTreeSet<Skipped>,
    announced_served: BTreeSet<ObjectRef>,
}

impl StatusWriter {
    pub fn new(
        client: kube::Client,
        settings: StatusSettings,
        controller: &str,
        instance: String,
    ) -> Self {
        let reporter = Reporter {
            controller: controller.to_string(),
            instance: Some(instance),
        };
        StatusWriter {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            written: BTreeMap::new(),
            announced_skipped: BTreeSet::new(),
            announced_served: BTreeSet::new(),
        }
    }

    /// Brings every Ingress's status in line with what is served now.
    pub async fn reconcile(&mut self, served: &BTreeSet<ObjectRef>, store: &Store) {
        let desired = desired_addresses(&self.settings, store);
        let ingresses = store.ingress_meta();
        for (key, addresses) in status_changes(served, desired.as_deref(), &ingresses) {
            let rv = ingresses.get(&key).and_then(|m| m.resource_version.clone());
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

    /// Forgets what was written (on gaining leadership everything is compared afresh).
    pub fn reset(&mut self) {
        self.written.clear();
    }

    /// Raises a Warning for each skipped rule and a Normal Event for each served Ingress that
    /// this instance has not announced yet; forgets what is no longer current, so a rule that
    /// is fixed and breaks again is announced again.
    pub async fn announce(&mut self, report: &ApplyReport, store: &Store) {
        let skipped: Vec<Skipped> = report
            .skipped
            .difference(&self.announced_skipped)
            .cloned()
            .collect();
        let served: Vec<ObjectRef> = report
            .served
            .difference(&self.announced_served)
            .cloned()
            .collect();
        self.events(&skipped, &served, store).await;
        self.announced_skipped = report.skipped.clone();
        self.announced_served = report.served.clone();
    }

    /// Raises the given Events.
    async fn events(&self, skipped: &[Skipped], served: &[ObjectRef], store: &Store) {
        let ingresses = store.ingress_meta();
        let reference = |key: &ObjectRef| ObjectReference {
            api_version: Some("networking.k8s.io/v1".to_string()),
            kind: Some("Ingress".to_string()),
            namespace: Some(key.namespace.clone()),
            name: Some(key.name.clone()),
            uid: ingresses.get(key).and_then(|m| m.uid.clone()),
            ..Default::default()
        };
        for s in skipped {
            let ev = Event {
                type_: EventType::Warning,
                reason: s.reason.as_str().to_string(),
                note: Some(truncate(&s.message, 1000)),
                action: "Sync".to_string(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&ev, &reference(&s.ingress)).await {
                tracing::warn!(ingress = %s.ingress, error = %e, "publishing an Event failed");
            }
        }
        for key in served {
            let ev = Event {
                type_: EventType::Normal,
                reason: "Served".to_string(),
                note: Some("sluice serves this Ingress".to_string()),
                action: "Sync".to_string(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&ev, &reference(key)).await {
                tracing::warn!(ingress = %key, error = %e, "publishing an Event failed");
            }
        }
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
