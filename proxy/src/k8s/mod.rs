//! The Kubernetes source: the only place that talks to the API server.
//!
//! [`KubeSource`] is a Pingora `BackgroundService`. When started it builds a kube-rs client
//! (kubeconfig or in-cluster service account; a plain `http://` API server works too), then runs:
//!
//! - one watcher per kind ([`watch`]) feeding the translated-object [`store`] (Secrets: only
//!   those of type `kubernetes.io/tls`; Nodes, for `instance` targets, cluster-wide), and one
//!   per Secret that a served Ingress names for basic auth ([`auth_secrets`]);
//! - the publisher: after every change, once every kind has been listed completely, it publishes
//!   the store through the same path as the files source ([`State::publish_store`], on a
//!   blocking thread): a change to EndpointSlices or Nodes alone updates only the affected pools,
//!   anything else builds a snapshot. Changes that arrive while a publish runs are folded into
//!   the next one, so a burst (an endpoint churn of one Service, a relist) costs one publish;
//! - leader election ([`leader`]) and, for the leader only, Ingress status and Events
//!   ([`status`]), on their own task so API writes never delay routing updates. That task reads
//!   only the newest publish report (reports that arrive while it writes are folded into the
//!   next, never queued or dropped), and paces its Events ([`events`]).
//!
//! `/readyz` turns ready with the first publish, which waits for a complete list of every kind.

pub mod auth_secrets;
pub mod events;
pub mod leader;
pub mod status;
pub use crate::store;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kube::config::{KubeConfigOptions, Kubeconfig};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use sluice_config::settings::{KubernetesSettings, LeaderElection, StatusSettings};
use tokio::sync::watch as tokio_watch;

use crate::state::{ApplyReport, State};
use store::Store;

/// Builds a client from the settings: an explicit kubeconfig (and context), else
/// `$KUBECONFIG` / `~/.kube/config`, else the in-cluster service account.
pub async fn client(settings: &KubernetesSettings) -> Result<kube::Client, ClientError> {
    let options = KubeConfigOptions {
        context: settings.context.clone(),
        ..Default::default()
    };
    let config = match &settings.kubeconfig {
        Some(path) => {
            let file = |source| ClientError::KubeconfigFile {
                path: path.clone(),
                source,
            };
            let kc = Kubeconfig::read_from(path).map_err(file)?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(file)?
        }
        None if settings.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(ClientError::Kubeconfig)?,
        None => kube::Config::infer().await.map_err(ClientError::NoConfig)?,
    };
    kube::Client::try_from(config).map_err(ClientError::Client)
}

/// Why no Kubernetes client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("kubeconfig {path}: {source}", path = .path.display())]
    KubeconfigFile {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("no kubeconfig and not in a cluster: {0}")]
    NoConfig(#[source] kube::config::InferConfigError),
    #[error("kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// Everything the Kubernetes source needs from the settings.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    pub kubernetes: KubernetesSettings,
    pub leader_election: LeaderElection,
    pub status: StatusSettings,
    pub controller_name: String,
}

/// Watches the API server and keeps the live state in sync with it.
pub struct KubeSource {
    options: KubeOptions,
    state: Arc<State>,
    store: Arc<Store>,
}

impl KubeSource {
    pub fn new(options: KubeOptions, state: Arc<State>) -> KubeSource {
        KubeSource {
            options,
            state,
            store: Arc::new(Store::default()),
        }
    }

    /// The translated objects (for tests and metrics).
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Builds the client, retrying every few seconds while it cannot be built.
    async fn connect(&self, shutdown: &mut ShutdownWatch) -> Option<kube::Client> {
        let mut last = String::new();
        loop {
            match client(&self.options.kubernetes).await {
                Ok(c) => return Some(c),
                Err(e) => {
                    // Said once per distinct error, not at every retry.
                    let text = e.to_string();
                    if text != last {
                        tracing::error!(error = %text, "cannot build a Kubernetes client; retrying");
                        last = text;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = shutdown.changed() => return None,
            }
        }
    }
}

#[async_trait]
impl BackgroundService for KubeSource {
    /// Runs the watchers, the publisher and (for the leader) status and Events until shutdown.
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(client) = self.connect(&mut shutdown).await else {
            return;
        };
        let namespaces = &self.options.kubernetes.namespaces;
        let metrics = self.state.metrics().clone();
        let mut tasks = watch::spawn_all(&client, namespaces, &self.store, &metrics);

        let election = &self.options.leader_election;
        let identity = leader::identity(election);
        let (leader_tx, leader_rx) = tokio_watch::channel(!election.enabled);
        if election.enabled {
            let elector = leader::Elector::new(client.clone(), election, identity.clone());
            tasks.push(tokio::spawn(elector.run(leader_tx, shutdown.clone())));
        }
        let (report_tx, report_rx) = tokio_watch::channel(Arc::new(ApplyReport::default()));
        let writer = status::StatusWriter::new(
            client.clone(),
            self.options.status.clone(),
            &self.options.controller_name,
            identity,
            metrics.events_dropped.clone(),
        );
        tasks.push(tokio::spawn(write_back(
            writer,
            self.store.clone(),
            report_rx,
            leader_rx,
        )));

        let mut auth = auth_secrets::AuthSecretWatchers::new(
            client.clone(),
            self.store.clone(),
            metrics.clone(),
        );
        let mut published: Option<u64> = None;
        loop {
            let generation = self.store.generation();
            if self.store.all_listed() {
                auth.follow(self.state.class_policy());
            }
            let auth_wait = auth.waiting();
            if self.store.all_listed() && auth_wait.is_none() && published != Some(generation) {
                let report = self.state.publish_store(&self.store).await;
                published = Some(generation);
                for (kind, n) in self.store.counts() {
                    metrics
                        .watched_objects
                        .with_label_values(&[kind.as_str()])
                        .set(n as i64);
                }
                // Newest wins: a report the writer has not read yet is replaced. An
                // endpoint-only update changes nothing a report says, and sends none.
                if let Some(report) = report {
                    report_tx.send_replace(Arc::new(report));
                }
            }
            tokio::select! {
                _ = self.store.changed() => {}
                _ = sleep_until_some(auth_wait) => {}
                _ = shutdown.changed() => break,
            }
        }
        drop(auth);
        for t in tasks {
            t.abort();
        }
    }
}

/// The leader's loop: status after every report and on gaining leadership; Events queued by
/// every report and written one Ingress at a time as the rate limit allows, so a new report is
/// taken in between.
async fn write_back(
    mut writer: status::StatusWriter,
    store: Arc<Store>,
    mut reports: tokio_watch::Receiver<Arc<ApplyReport>>,
    mut leader: tokio_watch::Receiver<bool>,
) {
    let mut latest = Arc::new(ApplyReport::default());
    loop {
        let leading = *leader.borrow();
        let next_write = writer.next_write_at().filter(|_| leading);
        tokio::select! {
            changed = reports.changed() => {
                if changed.is_err() {
                    return;
                }
                latest = reports.borrow_and_update().clone();
                if leading {
                    writer.update(latest.clone());
                    writer.reconcile(&latest.served, &store).await;
                } else {
                    writer.remember(latest.clone());
                }
            }
            changed = leader.changed() => {
                if changed.is_err() {
                    return;
                }
                if *leader.borrow_and_update() {
                    writer.reset();
                    writer.reconcile(&latest.served, &store).await;
                }
            }
            _ = sleep_until_some(next_write) => writer.write_next(&store).await,
        }
    }
}

/// Sleeps until `at`; never completes for `None`.
async fn sleep_until_some(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
