//! The Secrets basic auth reads, fetched by name: one watcher per Secret that a served
//! Ingress names in `sluice.dev/auth-secret` (with `sluice.dev/auth-type: basic`), in the
//! Ingress's namespace, with the field selector `metadata.name=<name>`.
//!
//! So only those Secrets enter sluice's memory, whatever their type: the cluster's other
//! Secrets are never listed (the TLS watcher lists only `kubernetes.io/tls` ones). A watch, not
//! a single GET, so that a changed or deleted Secret takes effect without a restart. A Secret
//! no served Ingress names any more has its watcher stopped and its bytes dropped.
//!
//! A publish waits for a new watcher's first list, up to [`AUTH_SECRET_LIST_WAIT`], so that an
//! Ingress that starts naming a Secret is not reported as missing it (and not answered 503)
//! while the Secret is on its way; past that wait (the API server refuses the list, say) the
//! route answers 503 and the Secret is reported missing until it arrives.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use sluice_config::build::is_served;
use sluice_config::model::ObjectRef;
use sluice_config::rules::basic_auth::secret_of;
use sluice_config::ClassPolicy;

use super::store::{Kind, Store};
use super::watch::WatchBackoff;
use crate::metrics::Metrics;
use crate::tls::SecretData;

/// The longest a publish waits for the first list of a Secret's new watcher.
pub const AUTH_SECRET_LIST_WAIT: Duration = Duration::from_secs(3);

struct Running {
    task: tokio::task::JoinHandle<()>,
    started: Instant,
    listed: Arc<AtomicBool>,
}

/// The watchers of the Secrets basic auth reads, by Secret.
pub struct AuthSecretWatchers {
    client: kube::Client,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    running: BTreeMap<ObjectRef, Running>,
}

impl AuthSecretWatchers {
    pub fn new(client: kube::Client, store: Arc<Store>, metrics: Arc<Metrics>) -> Self {
        AuthSecretWatchers {
            client,
            store,
            metrics,
            running: BTreeMap::new(),
        }
    }

    /// Watches exactly the Secrets that the store's served Ingresses (under `policy`) name
    /// for basic auth: new ones are started, the others stopped and forgotten.
    pub fn follow(&mut self, policy: &ClassPolicy) {
        let wanted = wanted(&self.store, policy);
        let gone: Vec<ObjectRef> = self
            .running
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(r) = self.running.remove(&key) {
                r.task.abort();
            }
        }
        self.store.retain_auth_secrets(&wanted);
        for key in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let listed = Arc::new(AtomicBool::new(false));
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &key.namespace);
            let task = tokio::spawn(run(
                api,
                key.clone(),
                self.store.clone(),
                listed.clone(),
                self.metrics.clone(),
            ));
            tracing::debug!(secret = %key, "watching an auth Secret");
            self.running.insert(
                key,
                Running {
                    task,
                    started: Instant::now(),
                    listed,
                },
            );
        }
    }

    /// While a new watcher has not listed its Secret and its wait is not over: when the wait
    /// ends. A publish waits until then (or until the list arrives, which wakes the store).
    pub fn waiting(&self) -> Option<Instant> {
        let now = Instant::now();
        self.running
            .values()
            .filter(|r| !r.listed.load(Ordering::Acquire))
            .map(|r| r.started + AUTH_SECRET_LIST_WAIT)
            .filter(|until| *until > now)
            .max()
    }
}

impl Drop for AuthSecretWatchers {
    fn drop(&mut self) {
        for r in self.running.values() {
            r.task.abort();
        }
    }
}

/// The auth Secrets the store's served Ingresses name (read from the store's index of the
/// Ingresses asking for basic auth: a change costs nothing more when there is none).
fn wanted(store: &Store, policy: &ClassPolicy) -> BTreeSet<ObjectRef> {
    let ingresses = store.auth_ingresses();
    let mut named = ingresses
        .iter()
        .filter_map(|i| Some((i, secret_of(&i.namespace, &i.annotations)?)))
        .peekable();
    if named.peek().is_none() {
        return BTreeSet::new();
    }
    let classes = store.shared_for(&BTreeSet::new()).classes;
    named
        .filter(|(i, _)| is_served(i, &classes, policy))
        .map(|(_, secret)| secret)
        .collect()
}

/// Watches one Secret by name until the task is aborted, keeping its bytes in the store (or
/// its absence: a list without it, or its deletion).
async fn run(
    api: Api<Secret>,
    key: ObjectRef,
    store: Arc<Store>,
    listed: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
    let mut stream = watcher::watcher(api, config)
        .backoff(WatchBackoff::default())
        .boxed();
    let mut seen = false;
    let mut last_error: Option<String> = None;
    let put = |s: &Secret| {
        store.set_auth_secret(key.clone(), Some(Arc::new(SecretData::with_every_key(s))));
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::Apply(s)) => put(&s),
            Ok(Event::InitApply(s)) => {
                seen = true;
                put(&s);
            }
            Ok(Event::Delete(_)) => store.set_auth_secret(key.clone(), None),
            Ok(Event::Init) => seen = false,
            Ok(Event::InitDone) => {
                if !seen {
                    store.set_auth_secret(key.clone(), None);
                }
                listed.store(true, Ordering::Release);
                last_error = None;
                // The publisher waits for this list: wake it even when nothing changed.
                store.wake();
            }
            Err(e) => {
                metrics
                    .watch_restarts
                    .with_label_values(&[Kind::Secret.as_str()])
                    .inc();
                let text = e.to_string();
                if last_error.as_ref() != Some(&text) {
                    tracing::warn!(secret = %key, error = %text, "auth Secret watch failed; retrying with backoff");
                    last_error = Some(text);
                }
            }
        }
    }
}
