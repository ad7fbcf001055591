//! Starting, running and stopping sluice: listeners, services and the drain on shutdown.
//!
//! Pingora's `Server` owns signal handling, daemonising and its own runtimes, and after SIGTERM
//! it sleeps for the whole grace period whatever is in flight. Sluice instead runs Pingora's
//! services itself on one tokio runtime: the proxy and admin listeners are Pingora listening
//! services (`start_service`), the source is a Pingora `BackgroundService`. That lets sluice
//!
//! - bind its listeners itself (port 0 works and the bound address is known, which tests need),
//!   handing the sockets to Pingora through the same descriptor table Pingora uses for upgrades
//!   (plain HTTP and HTTPS alike: an HTTPS listener is the same proxy service with TLS settings);
//! - stop as soon as the last in-flight request finishes, bounded by the grace period;
//! - cap open client connections at accept ([`crate::connections`]) and bound every phase of
//!   a client connection (see "Client connections" below);
//! - run in-process in tests, started and stopped like any other value.
//!
//! # Client connections
//!
//! From accept to close, a client connection on a proxy listener is bounded at every step:
//!
//! 1. accept: past `server.max_connections` (or the client's `server.max_connections_per_client`)
//!    it is closed at once;
//! 2. PROXY protocol header (with `server.proxy_protocol`) and TLS handshake:
//!    `server.client_header_timeout_secs` for both;
//! 3. first request head, plain-text HTTP/2 detection and HTTP/2 handshake included:
//!    `server.client_header_timeout_secs` in all, counted from the end of the TLS handshake;
//!    a head over `server.max_request_header_bytes` gets 431 before more than twice that much
//!    is buffered;
//! 4. every write of a response: `server.client_send_timeout_secs` to make progress;
//! 5. between requests: `server.keepalive_timeout_secs` idle (HTTP/1.1 waiting for the next
//!    request's first byte, HTTP/2 with no stream open; then closed without a GOAWAY, as
//!    Pingora drops an idle HTTP/2 connection), then `server.client_header_timeout_secs` for
//!    that head; an HTTP/1.1 connection serves `server.keepalive_requests` requests, the last
//!    with `Connection: close`; an HTTP/2 connection gets a graceful GOAWAY once that many
//!    streams were opened on it (they all finish; the client opens a new connection). An idle
//!    plain HTTP/1.1 connection waits for its next request before any request state is
//!    allocated for it (about 4 KiB per idle connection in all, benches/README.md).
//!
//! Steps 1 to 3, the idle wait and the HTTP/2 request limit of step 5 need what Pingora 0.9 lacks; it comes from the patch
//! series in `vendor/`.
//!
//! # Drain
//!
//! After SIGTERM the listeners stop accepting at once. For `server.drain_secs` (or until no
//! client connection is left), requests arriving on connections already open are still
//! served, with `Connection: close` (HTTP/2: GOAWAY, then the connection ends when its streams
//! do); then the connections still idle are closed and in-flight requests get what is left of
//! the grace period.

use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora_core::apps::{HttpServerOptions, ServerApp};
use pingora_core::listeners::{
    L4BufferSettings, ListenerConfig, PreTlsCallback, DEFAULT_L4_WRITE_BUFFER_SIZE,
};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{Fds, ListenFds, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use pingora_core::services::listening::ConnectionGate;
use pingora_core::services::Service as _;
use sluice_config::settings::{DefaultCertificate, SourceSettings};
use sluice_config::{ClassPolicy, Settings};
use tokio::sync::watch;

use crate::access_log::AccessLog;
use crate::admin::Admin;
use crate::connections::{Gate, Limits};
use crate::files::FilesSource;
use crate::k8s::{KubeOptions, KubeSource};
use crate::metrics::{Metrics, MetricsError};
use crate::proxy_protocol::ProxyProtocol;
use crate::router::{InFlight, Router, RouterOptions};
use crate::state::State;
use crate::tls::certs::{CertError, CertFileError, ServingCert};
use crate::tls::TlsStoreBuilder;

/// Why sluice could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] MetricsError),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The default certificate files (`tls.default_certificate_file`, `tls.default_key_file`).
    #[error("TLS: {0}")]
    DefaultCertificate(#[from] CertFileError),
    /// The certificate generated for names no Secret covers.
    #[error("TLS: {0}")]
    GeneratedCertificate(#[from] CertError),
}

/// A running sluice. Dropping it does not stop it; call [`Running::shutdown`] then
/// [`Running::wait`].
pub struct Running {
    /// The bound plain-HTTP listener addresses, in the order of `server.http_listen`.
    pub http_addrs: Vec<SocketAddr>,
    /// The bound HTTPS listener addresses, in the order of `tls.https_listen`.
    pub https_addrs: Vec<SocketAddr>,
    /// The bound admin listener address.
    pub admin_addr: SocketAddr,
    /// The live state (for tests and the check command).
    pub state: Arc<State>,
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl Running {
    /// Starts a graceful shutdown, as SIGTERM does: listeners close, idle connections close,
    /// in-flight requests finish within the grace period.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until sluice has stopped.
    pub fn wait(self) {
        if self.thread.join().is_err() {
            tracing::error!("the sluice runtime thread panicked");
        }
    }

    /// A handle that can start a shutdown from elsewhere (a signal handler).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    // Pingora's listener registers the socket with the runtime, which needs it non-blocking.
    listener
        .set_nonblocking(true)
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok(listener)
}

/// Open connections on the admin listener; it has its own cap, so the proxy listeners can
/// never starve `/healthz` of descriptors.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Wraps the proxy application to count open downstream connections and to hold the drain
/// window open at shutdown.
///
/// The gauge counts connections inside `process_new` (after their TLS handshake).
struct CountConnections<A> {
    inner: Arc<A>,
    open: prometheus::IntGauge,
    /// The proxy listeners' connection caps, whose count tells when the drain may end early.
    limits: Arc<Limits>,
    drain: Duration,
}

#[async_trait::async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for CountConnections<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: pingora_core::protocols::Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<pingora_core::protocols::Stream> {
        self.open.inc();
        let reused = self.inner.process_new(session, shutdown).await;
        self.open.dec();
        reused
    }

    /// Runs when the listeners have stopped accepting. Pingora's cleanup wakes every
    /// keepalive connection waiting for a request and drops it, losing a request written onto
    /// it at that moment; so wait the drain window first, during which such requests are
    /// served with `Connection: close`.
    async fn cleanup(&self) {
        let deadline = Instant::now() + self.drain;
        if !self.limits.wait_closed(deadline).await {
            tracing::info!(
                open = self.limits.open(),
                "drain window over: closing idle client connections"
            );
        }
        self.inner.cleanup().await;
    }
}

/// Binds every listener, then starts sluice on its own runtime thread, with the access log (when
/// enabled) on stdout.
pub fn start(settings: Settings) -> Result<Running, StartError> {
    start_with(settings, Box::new(std::io::stdout()))
}

/// As [`start`], with the access log written to `access_log_out`.
pub fn start_with(
    settings: Settings,
    access_log_out: Box<dyn std::io::Write + Send>,
) -> Result<Running, StartError> {
    let http: Vec<std::net::TcpListener> = settings
        .http_listen
        .iter()
        .map(|a| bind(*a))
        .collect::<Result<_, _>>()?;
    let https: Vec<std::net::TcpListener> = settings
        .tls
        .https_listen
        .iter()
        .map(|a| bind(*a))
        .collect::<Result<_, _>>()?;
    let admin = bind(settings.admin_listen)?;
    let local = |l: &std::net::TcpListener, addr: SocketAddr| {
        l.local_addr()
            .map_err(|source| StartError::Bind { addr, source })
    };
    let http_addrs = http
        .iter()
        .zip(&settings.http_listen)
        .map(|(l, a)| local(l, *a))
        .collect::<Result<Vec<_>, _>>()?;
    let https_addrs = https
        .iter()
        .zip(&settings.tls.https_listen)
        .map(|(l, a)| local(l, *a))
        .collect::<Result<Vec<_>, _>>()?;
    let admin_addr = local(&admin, settings.admin_listen)?;
    let tls = tls_builder(&settings, !https_addrs.is_empty())?;

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = settings.worker_threads_or(cores);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("sluice-worker")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;

    let metrics = Arc::new(Metrics::new()?);
    let state = Arc::new(
        State::new(
            ClassPolicy::from(&settings),
            settings.ejection,
            metrics,
            tls,
        )
        .with_defaults(sluice_config::BuildDefaults::from(&settings))
        .with_health_check_defaults(settings.health_check.clone()),
    );
    let (stop, stop_rx) = watch::channel(false);

    // The descriptor table through which Pingora's listeners take our bound sockets.
    let fds: ListenFds = Arc::new(<ListenFds as std::ops::Deref>::Target::new(Fds::new()));
    {
        let mut table = fds.lock();
        for (l, a) in http.into_iter().zip(&http_addrs) {
            table.add(a.to_string(), l.into_raw_fd());
        }
        for (l, a) in https.into_iter().zip(&https_addrs) {
            table.add(a.to_string(), l.into_raw_fd());
        }
        table.add(admin_addr.to_string(), admin.into_raw_fd());
    }

    let source: Box<dyn BackgroundService + Send + Sync> = match &settings.source {
        SourceSettings::Files {
            directory,
            poll_interval,
        } => Box::new(FilesSource::new(
            directory.clone(),
            *poll_interval,
            state.clone(),
        )),
        SourceSettings::Kubernetes(k) => Box::new(KubeSource::new(
            KubeOptions {
                kubernetes: k.clone(),
                leader_election: settings.leader_election.clone(),
                status: settings.status.clone(),
                controller_name: settings.controller_name.clone(),
            },
            state.clone(),
        )),
    };

    let thread_state = state.clone();
    let addrs = Addrs {
        http: http_addrs.clone(),
        https: https_addrs.clone(),
        admin: admin_addr,
    };
    let thread = std::thread::Builder::new()
        .name("sluice-main".to_string())
        .spawn(move || {
            runtime.block_on(run(
                settings,
                thread_state,
                source,
                fds,
                addrs,
                stop_rx,
                threads,
                access_log_out,
            ));
            // Tasks still running (connections past the grace period) end with the runtime.
            runtime.shutdown_timeout(Duration::from_millis(100));
        })
        .map_err(StartError::Runtime)?;

    Ok(Running {
        http_addrs,
        https_addrs,
        admin_addr,
        state,
        stop,
        thread,
    })
}

/// The certificate store builder: the default certificate from files, else a generated one (said
/// in the log when HTTPS is on), and the default Secret to prefer when it is usable.
fn tls_builder(settings: &Settings, https: bool) -> Result<TlsStoreBuilder, StartError> {
    let generated = || -> Result<_, StartError> { Ok(Arc::new(ServingCert::self_signed()?)) };
    Ok(match &settings.tls.default_certificate {
        DefaultCertificate::Files { certificate, key } => {
            let cert = ServingCert::from_files(certificate, key)?;
            TlsStoreBuilder::new(Arc::new(cert), None)
        }
        DefaultCertificate::Secret(secret) => {
            TlsStoreBuilder::new(generated()?, Some(secret.clone()))
        }
        DefaultCertificate::SelfSigned => {
            if https {
                tracing::info!(
                    "no default certificate is configured: names without a Secret get a generated self-signed one"
                );
            }
            TlsStoreBuilder::new(generated()?, None)
        }
    })
}

/// The client-connection options of a listening service (the proxy's with h2c, the admin
/// listener's without); see "Client connections" at the top.
fn client_options(settings: &Settings, h2c: bool) -> HttpServerOptions {
    let mut options = HttpServerOptions::default();
    options.h2c = h2c;
    // Pingora counts reuses: a connection with n reuses left serves n + 1 requests.
    options.keepalive_request_limit = Some(settings.keepalive_requests.saturating_sub(1));
    // HTTP/2 counts streams: the one that reaches the limit is served, then a graceful GOAWAY.
    options.h2_request_limit = Some(settings.keepalive_requests);
    options.keepalive_timeout = Some(settings.keepalive_timeout);
    options.h2_idle_timeout = Some(settings.keepalive_timeout);
    options.request_header_timeout = Some(settings.client_header_timeout);
    options.max_request_header_bytes = Some(settings.max_request_header_bytes);
    // An idle keepalive connection then holds its socket, not a parked request's state.
    options.idle_wait_outside_session = true;
    options
}

/// The bound addresses of every listener.
struct Addrs {
    http: Vec<SocketAddr>,
    https: Vec<SocketAddr>,
    admin: SocketAddr,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    settings: Settings,
    state: Arc<State>,
    source: Box<dyn BackgroundService + Send + Sync>,
    fds: ListenFds,
    addrs: Addrs,
    mut stop: watch::Receiver<bool>,
    threads: usize,
    access_log_out: Box<dyn std::io::Write + Send>,
) {
    let mut conf = ServerConf {
        threads,
        upstream_keepalive_pool_size: settings.keepalive_pool_size,
        ..ServerConf::default()
    };
    conf.grace_period_seconds = Some(settings.shutdown_grace_period.as_secs());
    let conf = Arc::new(conf);

    let (shutdown_tx, shutdown_rx): (watch::Sender<bool>, ShutdownWatch) = watch::channel(false);
    let in_flight = Arc::new(InFlight::new(state.metrics().requests_in_flight.clone()));
    let access_log = settings.access_log.and_then(|format| {
        AccessLog::start(
            format,
            state.metrics().access_log_dropped.clone(),
            access_log_out,
        )
        .map_err(|e| tracing::error!(error = %e, "cannot start the access log; it is off"))
        .ok()
    });

    let mut router_options = RouterOptions::from(&settings);
    if settings.tls.redirect_port == 0 {
        router_options.redirect_port = addrs.https.first().map(|a| a.port()).unwrap_or(443);
    }
    let router = Router::new(state.clone(), router_options, in_flight.clone(), access_log);
    let mut app = pingora_proxy::http_proxy(&conf, router);
    app.server_options = Some(client_options(&settings, true));
    let file_limit = crate::connections::file_limit();
    let max_connections = settings.max_connections_or(file_limit.unwrap_or(1024));
    tracing::info!(
        max_connections,
        per_client = settings.max_connections_per_client,
        file_limit,
        "client connection caps"
    );
    let limits = Arc::new(Limits::new(
        max_connections,
        settings.max_connections_per_client,
        Some(state.metrics().downstream_connections_refused.clone()),
    ));
    let mut proxy = pingora_core::services::listening::Service::new(
        "sluice-http".to_string(),
        CountConnections {
            inner: Arc::new(app),
            open: state.metrics().downstream_connections.clone(),
            limits: limits.clone(),
            drain: settings.drain,
        },
    );
    proxy.set_connection_gate(Arc::new(Gate(limits)) as Arc<dyn ConnectionGate>);
    proxy.set_handshake_timeout(settings.client_header_timeout);
    for a in &addrs.http {
        // No read buffer in front of plain sockets: Pingora's default keeps 64 KiB per
        // connection, idle or not, while the HTTP/1.1 parser reads into its own buffer anyway.
        // TLS listeners keep it (OpenSSL reads records through it).
        let buffers = L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE);
        proxy.add_listener(ListenerConfig::tcp(a.to_string()).l4_buffer(buffers));
    }
    for a in &addrs.https {
        match crate::tls::listener::settings(state.clone()) {
            Ok(tls) => proxy.add_tls_with_settings(&a.to_string(), None, tls),
            Err(e) => {
                tracing::error!(addr = %a, error = %e, "cannot set up TLS; this listener is off")
            }
        }
    }

    if let Some(trusted) = &settings.proxy_protocol {
        // Runs on every proxy listener, plain and TLS, within the handshake timeout above.
        let callback = ProxyProtocol::new(
            trusted.clone(),
            state.metrics().proxy_protocol_refused.clone(),
        );
        proxy
            .endpoints()
            .set_pre_tls_callback(Arc::new(callback) as PreTlsCallback);
    }

    let mut admin_app =
        pingora_core::apps::http_app::HttpServer::new_app(Admin::new(state.clone()));
    admin_app.server_options = Some(client_options(&settings, false));
    let mut admin =
        pingora_core::services::listening::Service::new("sluice-admin".to_string(), admin_app);
    admin.set_connection_gate(Arc::new(Gate(Arc::new(Limits::new(
        ADMIN_MAX_CONNECTIONS,
        None,
        None,
    )))) as Arc<dyn ConnectionGate>);
    admin.set_handshake_timeout(settings.client_header_timeout);
    admin.add_tcp(&addrs.admin.to_string());

    let source_task = {
        let shutdown = shutdown_rx.clone();
        tokio::spawn(async move { source.start(shutdown).await })
    };
    // Active health checks: every probe task belongs to this one, which ends with the server.
    let health_task = {
        let (state, shutdown) = (state.clone(), shutdown_rx.clone());
        tokio::spawn(crate::health::run(state, shutdown))
    };
    let proxy_task = {
        let (fds, shutdown) = (fds.clone(), shutdown_rx.clone());
        tokio::spawn(async move { proxy.start_service(Some(fds), shutdown, 1).await })
    };
    let admin_task = {
        let shutdown = shutdown_rx.clone();
        tokio::spawn(async move { admin.start_service(Some(fds), shutdown, 1).await })
    };
    tracing::info!(http = ?addrs.http, https = ?addrs.https, admin = %addrs.admin, "sluice is listening");

    // Wait for the stop signal (SIGTERM in the binary, `Running::shutdown` in tests).
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            break;
        }
    }

    let grace = settings.shutdown_grace_period;
    let started = Instant::now();
    tracing::info!(
        in_flight = in_flight.get(),
        grace_secs = grace.as_secs(),
        "shutting down: no new connections; finishing requests in flight"
    );
    // Listeners stop accepting; keepalive connections waiting for a request close; connections
    // with a request in flight close after its response.
    let _ = shutdown_tx.send(true);
    // The proxy service ends after its drain window (see `CountConnections::cleanup`).
    let _ = proxy_task.await;
    let _ = admin_task.await;
    let drained = tokio::time::timeout(
        grace.saturating_sub(started.elapsed()),
        in_flight.wait_idle(),
    )
    .await
    .is_ok();
    source_task.abort();
    health_task.abort();
    let _ = health_task.await;
    if drained {
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "all requests finished; exiting"
        );
    } else {
        tracing::warn!(
            in_flight = in_flight.get(),
            "grace period over with requests still in flight; exiting"
        );
    }
}
