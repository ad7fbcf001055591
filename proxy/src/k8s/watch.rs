//! One kube-rs watcher per kind, feeding the [`Store`].
//!
//! Each watcher is polled past its errors with kube-rs's default backoff (exponential, capped),
//! so an API server that fails or goes away costs a retry every few seconds at most, never a
//! tight relist loop. A 410 Expired makes the watcher relist; the relist is swapped in whole at
//! its end ([`Store::relist_done`]). While the API server is unreachable nothing changes in the
//! store, so the last good snapshot keeps serving.

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
        secret_input(s),
        std::sync::Arc::new(SecretData::from_secret(s)),
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
    Entry::Ingress(Box::new(ingress_input(i)), meta)
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
    Entry::Service(service_input(s), lb)
}

/// Runs one watcher until the task is aborted.
pub async fn run<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    translate: fn(&K) -> Entry,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut last_error: Option<(String, Instant)> = None;
    // The stream ends only if kube-rs gives up for good, which its watcher never does; the
    // loop is bounded by the task's life.
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::Apply(o)) => store.apply(kind, key_of(&o), translate(&o)),
            Ok(Event::Delete(o)) => store.delete(kind, &key_of(&o)),
            Ok(Event::Init) => store.relist_begin(kind),
            Ok(Event::InitApply(o)) => store.relist_add(kind, key_of(&o), translate(&o)),
            Ok(Event::InitDone) => {
                store.relist_done(kind);
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

/// Starts a watcher for every kind on `client`, scoped to `namespace` when set.
pub fn spawn_all(
    client: &kube::Client,
    namespace: Option<&str>,
    store: &Arc<Store>,
    metrics: &Arc<Metrics>,
) -> Vec<tokio::task::JoinHandle<()>> {
    fn api<K>(client: &kube::Client, ns: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let base = watcher::Config::default();
    vec![
        tokio::spawn(run(
            api::<Ingress>(client, namespace),
            base.clone(),
            Kind::Ingress,
            ingress_entry,
            store.clone(),
            metrics.clone(),
        )),
        tokio::spawn(run(
            Api::<IngressClass>::all(client.clone()),
            base.clone(),
            Kind::IngressClass,
            |c| Entry::Class(class_input(c)),
            store.clone(),
            metrics.clone(),
        )),
        tokio::spawn(run(
            api::<Service>(client, namespace),
            base.clone(),
            Kind::Service,
            service_entry,
            store.clone(),
            metrics.clone(),
        )),
        tokio::spawn(run(
            api::<EndpointSlice>(client, namespace),
            base.clone().labels(SERVICE_NAME_LABEL),
            Kind::EndpointSlice,
            |s| Entry::Slice(slice_input(s)),
            store.clone(),
            metrics.clone(),
        )),
        tokio::spawn(run(
            api::<Secret>(client, namespace),
            base.clone().fields(SECRET_FIELD_SELECTOR),
            Kind::Secret,
            secret_entry,
            store.clone(),
            metrics.clone(),
        )),
        // Nodes are cluster-scoped: watched whole even when one namespace is, as `instance`
        // targets of that namespace's Services may be on any Node.
        tokio::spawn(run(
            Api::<Node>::all(client.clone()),
            base,
            Kind::Node,
            |n| Entry::Node(node_input(n)),
            store.clone(),
            metrics.clone(),
        )),
    ]
}
