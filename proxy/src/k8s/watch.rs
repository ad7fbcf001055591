//! One kube-rs watcher per kind (per kind and namespace for namespaced kinds when
//! `source.kubernetes.namespaces` lists some), feeding the [`Store`].
//!
//! Each watcher is polled past its errors with [`WatchBackoff`]: exponential from
//! [`WATCH_BACKOFF_MIN`] up to [`WATCH_BACKOFF_MAX`], so an API server that fails or goes away
//! costs one retry per watcher every few seconds at most, never a tight relist loop, and a
//! change made during an outage is served within a few seconds of the API server returning
//! (kube-rs's default backoff grows to 30 s: after a 20 s outage a change could wait that long).
//! A 410 Expired makes the watcher relist; the relist is swapped in whole at its end
//! ([`Store::relist_done`]). While the API server is unreachable nothing changes in the store,
//! so the last good snapshot keeps serving.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use sluice_config::model::ObjectRef;

use super::store::{Entry, IngressMeta, Kind, LbAddress, Store};
use crate::metrics::Metrics;
use crate::objects::{
    class_input, ingress_input, node_input, secret_input, service_input, slice_input,
    SERVICE_NAME_LABEL,
};
use crate::tls::SecretData;

/// The only Secrets watched: those that can hold a serving certificate. Other types (service
/// account tokens, passwords) are never listed, so they never sit in sluice's memory; a client CA
/// is read from `ca.crt` of a Secret of this type.
pub const SECRET_FIELD_SELECTOR: &str = "type=kubernetes.io/tls";

/// Translates a TLS Secret, keeping only the bytes of its TLS keys.
pub fn secret_entry(s: &Secret) -> Entry {
    Entry::Secret(
        Arc::new(secret_input(s)),
        Arc::new(SecretData::from_secret(s)),
    )
}

/// Translates a Secret that basic auth reads, keeping every key's bytes.
pub fn auth_secret_entry(s: &Secret) -> Entry {
    Entry::Secret(
        Arc::new(secret_input(s)),
        Arc::new(SecretData::with_every_key(s)),
    )
}

/// The key of an object.
fn key_of<K: Resource>(o: &K) -> ObjectRef {
    let m = o.meta();
    ObjectRef::new(
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

/// Load-balancer addresses from (ip, hostname) pairs, sorted; an IP wins over a hostname.
fn lb_addresses<'a>(
    pairs: impl Iterator<Item = (Option<&'a String>, Option<&'a String>)>,
) -> Vec<LbAddress> {
    let mut out: Vec<LbAddress> = pairs
        .filter_map(|(ip, hostname)| match (ip, hostname) {
            (Some(ip), _) if !ip.is_empty() => Some(LbAddress::Ip(ip.clone())),
            (_, Some(h)) if !h.is_empty() => Some(LbAddress::Hostname(h.clone())),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Translates an Ingress, keeping its identity and current status.
pub fn ingress_entry(i: &Ingress) -> Entry {
    let meta = IngressMeta {
        uid: i.metadata.uid.clone(),
        resource_version: i.metadata.resource_version.clone(),
        status: lb_addresses(
            i.status
                .iter()
                .flat_map(|s| s.load_balancer.iter())
                .flat_map(|lb| lb.ingress.iter().flatten())
                .map(|a| (a.ip.as_ref(), a.hostname.as_ref())),
        ),
    };
    Entry::Ingress(Arc::new(ingress_input(i)), meta)
}

/// Translates a Service, keeping its load-balancer status (for `status.publish_service`).
pub fn service_entry(s: &Service) -> Entry {
    let lb = lb_addresses(
        s.status
            .iter()
            .flat_map(|st| st.load_balancer.iter())
            .flat_map(|lb| lb.ingress.iter().flatten())
            .map(|a| (a.ip.as_ref(), a.hostname.as_ref())),
    );
    Entry::Service(Arc::new(service_input(s)), lb)
}

/// The first wait after a watch fails (client-go's reflector starts at the same).
pub const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(800);
/// The longest wait between two attempts to watch again, before jitter.
pub const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(3);

/// The watchers' backoff: the wait doubles from [`WATCH_BACKOFF_MIN`] at each failure in a row,
/// capped at [`WATCH_BACKOFF_MAX`]; each wait is drawn from the upper half of that value
/// (equal jitter), so replicas that lost the API server together do not return in step. The
/// watch stream resets it at its first event after a failure.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: WATCH_BACKOFF_MIN,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let ceiling = self.next;
        self.next = (self.next * 2).min(WATCH_BACKOFF_MAX);
        Some(ceiling.mul_f64(0.5 + 0.5 * crate::pool::random_unit()))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        *self = WatchBackoff::default();
    }
}

/// Runs one watcher, of `kind` in `namespace` (`None`: all namespaces, or a cluster-scoped
/// kind), until the task is aborted.
pub async fn run<K>(
    api: Api<K>,
    config: watcher::Config,
    (kind, namespace): (Kind, Option<String>),
    translate: fn(&K) -> Entry,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut stream = watcher::watcher(api, config)
        .backoff(WatchBackoff::default())
        .boxed();
    let scope = (kind, namespace);
    let mut last_error: Option<(String, Instant)> = None;
    // The stream ends only if kube-rs gives up for good, which its watcher never does; the
    // loop is bounded by the task's life.
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::Apply(o)) => store.apply(kind, key_of(&o), translate(&o)),
            Ok(Event::Delete(o)) => store.delete(kind, &key_of(&o)),
            Ok(Event::Init) => store.relist_begin(&scope),
            Ok(Event::InitApply(o)) => store.relist_add(&scope, key_of(&o), translate(&o)),
            Ok(Event::InitDone) => {
                store.relist_done(&scope);
                if last_error.take().is_some() {
                    tracing::info!(kind = kind.as_str(), "watch recovered");
                }
                tracing::debug!(kind = kind.as_str(), "list complete");
            }
            Err(e) => {
                metrics
                    .watch_restarts
                    .with_label_values(&[kind.as_str()])
                    .inc();
                // Say it once per distinct error per minute: the backoff already paces retries.
                let text = e.to_string();
                let repeat = last_error
                    .as_ref()
                    .is_some_and(|(t, at)| t == &text && at.elapsed() < Duration::from_secs(60));
                if !repeat {
                    tracing::warn!(kind = kind.as_str(), error = %text, "watch failed; retrying with backoff");
                    last_error = Some((text, Instant::now()));
                }
            }
        }
    }
}

/// Starts the watchers on `client`: for Ingresses, Services, EndpointSlices and TLS Secrets,
/// one per namespace of `namespaces`, or one over all namespaces when it is empty; one each for
/// IngressClasses and Nodes, which are cluster-scoped (Nodes are watched whole even when
/// namespaces are listed, as `instance` targets of their Services may be on any Node).
pub fn spawn_all(
    client: &kube::Client,
    namespaces: &[String],
    store: &Arc<Store>,
    metrics: &Arc<Metrics>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let base = watcher::Config::default();
    let mut tasks = Vec::new();
    let mut namespaced =
        |kind: Kind, spawn: &dyn Fn(Option<String>) -> tokio::task::JoinHandle<()>| {
            store.watching(kind, namespaces);
            match namespaces {
                [] => tasks.push(spawn(None)),
                some => tasks.extend(some.iter().map(|ns| spawn(Some(ns.clone())))),
            }
        };
    fn api<K>(client: &kube::Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    namespaced(Kind::Ingress, &|ns| {
        tokio::spawn(run(
            api::<Ingress>(client, &ns),
            base.clone(),
            (Kind::Ingress, ns),
            ingress_entry,
            store.clone(),
            metrics.clone(),
        ))
    });
    namespaced(Kind::Service, &|ns| {
        tokio::spawn(run(
            api::<Service>(client, &ns),
            base.clone(),
            (Kind::Service, ns),
            service_entry,
            store.clone(),
            metrics.clone(),
        ))
    });
    namespaced(Kind::EndpointSlice, &|ns| {
        tokio::spawn(run(
            api::<EndpointSlice>(client, &ns),
            base.clone().labels(SERVICE_NAME_LABEL),
            (Kind::EndpointSlice, ns),
            |s| Entry::Slice(Arc::new(slice_input(s))),
            store.clone(),
            metrics.clone(),
        ))
    });
    namespaced(Kind::Secret, &|ns| {
        tokio::spawn(run(
            api::<Secret>(client, &ns),
            base.clone().fields(SECRET_FIELD_SELECTOR),
            (Kind::Secret, ns),
            secret_entry,
            store.clone(),
            metrics.clone(),
        ))
    });
    tasks.push(tokio::spawn(run(
        Api::<IngressClass>::all(client.clone()),
        base.clone(),
        (Kind::IngressClass, None),
        |c| Entry::Class(Arc::new(class_input(c))),
        store.clone(),
        metrics.clone(),
    )));
    tasks.push(tokio::spawn(run(
        Api::<Node>::all(client.clone()),
        base,
        (Kind::Node, None),
        |n| Entry::Node(Arc::new(node_input(n))),
        store.clone(),
        metrics.clone(),
    )));
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[test]
    fn the_watch_backoff_doubles_up_to_a_few_seconds_and_starts_again_after_a_reset() {
        let mut b = WatchBackoff::default();
        let waits: Vec<Duration> = b.by_ref().take(12).collect();
        for (i, w) in waits.iter().enumerate() {
            let ceiling = (WATCH_BACKOFF_MIN * 2u32.pow(i.min(8) as u32)).min(WATCH_BACKOFF_MAX);
            assert!(*w <= ceiling && *w >= ceiling / 2, "wait {i}: {w:?}");
        }
        // However long the outage, no wait exceeds the cap.
        assert!(b.by_ref().take(1000).all(|w| w <= WATCH_BACKOFF_MAX));
        b.reset();
        assert!(b.next().is_some_and(|w| w <= WATCH_BACKOFF_MIN));
    }
}
