//! Active health checks: probing every endpoint of every pool whose Service asks for it.
//!
//! [`run`] is one background task for the whole server. After each publish it compares the
//! live pools with the probe tasks it owns: an endpoint of a checked pool gets one task, which
//! probes it every `interval` (the first probe after a random part of the interval, and each
//! later one within ±10 % of it, so endpoints are not probed in lockstep) and records each
//! result on the endpoint ([`crate::pool::Endpoint::record_probe`]). An endpoint that leaves its
//! pool, a pool that goes or whose checks are turned off, or a changed check stops its tasks at
//! the next publish; every task is owned by one `JoinSet` and ends with the server. There is at
//! most one task per (pool, endpoint).
//!
//! The probes are pingora-load-balancing's `HttpHealthCheck` and `TcpHealthCheck`, one per
//! pool (one connector each), each probe on a new connection. Its background loop is not used:
//! it drops errors, while sluice logs every health change with the pool, the endpoint and the
//! last failure.
//!
//! - **HTTP**: `GET path` to the endpoint's address (or the check port), with
//!   `Host: <service>.<namespace>.svc` (the Service's in-cluster name: the same for every
//!   endpoint, and what the pod answers to inside the cluster) and `User-Agent:
//!   sluice-health-check`. A status within the success codes, with the response head within
//!   the timeout, passes.
//! - **HTTPS**: the same request over TLS, as sluice speaks to an `HTTPS` upstream
//!   ([`crate::router::set_protocol`]): ALPN `http/1.1`, the certificate not verified (pods serve
//!   self-signed or cluster-internal certificates), and the SNI the probe's host, so an endpoint
//!   serving several names presents the Service's. Endpoints that speak only TLS need it: a
//!   plain probe fails on every one of them, and the pool would fail open unnoticed.
//! - **TCP**: a connection opened within the timeout passes.
//!
//! Both HTTP kinds speak HTTP/1.1, as Pingora's `HttpHealthCheck` does: endpoints that speak
//! only HTTP/2 (`GRPC`, `H2C`, `GRPCS` routes) are checked with `tcp`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use pingora::lb::health_check::{HealthCheck as Probe, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora_core::server::ShutdownWatch;
use pingora_error::{Error, ErrorType};
use pingora_http::RequestHeader;
use sluice_config::annotations::BackendProtocol;
use sluice_config::health::{CheckKind, HealthCheck, USER_AGENT};
use sluice_config::PoolKey;
use tokio::task::{AbortHandle, JoinSet};

use crate::pool::{random_unit, Endpoint, Pool};
use crate::state::State;

/// Runs the health checks of every pool until `shutdown` says stop.
pub async fn run(state: Arc<State>, mut shutdown: ShutdownWatch) {
    let mut checker = Checker::default();
    loop {
        checker.reconcile(&state);
        tokio::select! {
            _ = state.published() => {}
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    checker.tasks.shutdown().await;
}

/// The probe tasks and the probers they share.
#[derive(Default)]
struct Checker {
    tasks: JoinSet<()>,
    probes: HashMap<(PoolKey, SocketAddr), Running>,
    probers: HashMap<PoolKey, (Arc<HealthCheck>, Arc<Prober>)>,
}

/// One endpoint's probe task, and what it was started for.
struct Running {
    endpoint: Arc<Endpoint>,
    check: Arc<HealthCheck>,
    abort: AbortHandle,
}

impl Checker {
    /// Starts a task for every endpoint of every checked pool that has none, and stops those
    /// whose endpoint, pool or check is gone.
    fn reconcile(&mut self, state: &State) {
        while self.tasks.try_join_next().is_some() {}
        let live = state.live_full();
        let mut wanted = HashSet::new();
        for pool in live.pools.values() {
            let Some(check) = pool.health_check() else {
                continue;
            };
            let Some(prober) = self.prober(pool.key(), &check) else {
                continue;
            };
            for e in pool.endpoint_list().iter() {
                let id = (pool.key().clone(), e.addr());
                wanted.insert(id.clone());
                if let Some(r) = self.probes.get(&id) {
                    if Arc::ptr_eq(&r.endpoint, e) && Arc::ptr_eq(&r.check, &check) {
                        continue;
                    }
                    r.abort.abort();
                }
                let abort = self.tasks.spawn(probe_loop(
                    pool.clone(),
                    e.clone(),
                    check.clone(),
                    prober.clone(),
                ));
                self.probes.insert(
                    id,
                    Running {
                        endpoint: e.clone(),
                        check: check.clone(),
                        abort,
                    },
                );
            }
        }
        self.probes.retain(|id, r| {
            let keep = wanted.contains(id);
            if !keep {
                r.abort.abort();
            }
            keep
        });
        self.probers.retain(|key, _| live.pools.contains_key(key));
    }

    /// The prober of a pool for `check`, made once per check.
    fn prober(&mut self, key: &PoolKey, check: &Arc<HealthCheck>) -> Option<Arc<Prober>> {
        if let Some((c, p)) = self.probers.get(key) {
            if Arc::ptr_eq(c, check) {
                return Some(p.clone());
            }
        }
        match Prober::new(key, check) {
            Ok(p) => {
                let p = Arc::new(p);
                self.probers.insert(key.clone(), (check.clone(), p.clone()));
                Some(p)
            }
            Err(e) => {
                // Unreachable with a validated path; the endpoints stay in rotation.
                tracing::error!(pool = %key, error = %e, "cannot build the health check; endpoints are not probed");
                self.probers.remove(key);
                None
            }
        }
    }
}

/// Probes one endpoint forever (until aborted), recording each result and logging changes.
async fn probe_loop(
    pool: Arc<Pool>,
    endpoint: Arc<Endpoint>,
    check: Arc<HealthCheck>,
    prober: Arc<Prober>,
) {
    tokio::time::sleep(check.interval.mul_f64(random_unit())).await;
    loop {
        let result = prober.probe(endpoint.addr(), &check).await;
        let pass = result.is_ok();
        let failures = endpoint.probe_failures() + u32::from(!pass);
        match endpoint.record_probe(pass, check.healthy_threshold, check.unhealthy_threshold) {
            Some(false) => {
                tracing::warn!(
                    pool = %pool.key(),
                    endpoint = %endpoint.addr(),
                    check = check.kind.name(),
                    failures,
                    error = result.as_ref().err().map(String::as_str).unwrap_or(""),
                    "endpoint failed its health check: out of rotation"
                );
                if !pool.any_healthy() {
                    tracing::warn!(
                        pool = %pool.key(),
                        "every endpoint of the pool is unhealthy: all of them serve (fail open)"
                    );
                }
            }
            Some(true) => tracing::info!(
                pool = %pool.key(),
                endpoint = %endpoint.addr(),
                check = check.kind.name(),
                "endpoint passed its health check: back in rotation"
            ),
            None => {
                if let Err(e) = &result {
                    tracing::debug!(pool = %pool.key(), endpoint = %endpoint.addr(), error = %e, "health probe failed");
                }
            }
        }
        tokio::time::sleep(check.interval.mul_f64(0.9 + 0.2 * random_unit())).await;
    }
}

/// The probe of one pool.
enum Prober {
    Http(Box<HttpHealthCheck>),
    Tcp(Box<TcpHealthCheck>),
}

impl Prober {
    fn new(key: &PoolKey, check: &HealthCheck) -> Result<Prober, String> {
        Ok(match check.kind {
            CheckKind::Http | CheckKind::Https => {
                let host = format!("{}.{}.svc", key.service, key.namespace);
                let tls = check.kind == CheckKind::Https;
                // With TLS, the host is also the SNI.
                let mut hc = HttpHealthCheck::new(&host, tls);
                if tls {
                    crate::router::set_protocol(
                        &mut hc.peer_template.options,
                        BackendProtocol::Https,
                        false,
                    );
                }
                let mut req = RequestHeader::build("GET", check.path.as_bytes(), None)
                    .map_err(|e| e.to_string())?;
                req.insert_header("Host", host).map_err(|e| e.to_string())?;
                req.insert_header("User-Agent", USER_AGENT)
                    .map_err(|e| e.to_string())?;
                hc.req = req;
                let o = &mut hc.peer_template.options;
                o.connection_timeout = Some(check.timeout);
                o.total_connection_timeout = Some(check.timeout);
                o.read_timeout = Some(check.timeout);
                o.write_timeout = Some(check.timeout);
                let codes = check.success_codes.clone();
                hc.validator = Some(Box::new(move |resp| {
                    let status = resp.status.as_u16();
                    if codes.contains(status) {
                        Ok(())
                    } else {
                        Error::e_explain(
                            ErrorType::CustomCode("status not in the success codes", status),
                            format!("status {status}"),
                        )
                    }
                }));
                Prober::Http(Box::new(hc))
            }
            CheckKind::Tcp => {
                let mut tc = TcpHealthCheck::new();
                tc.peer_template.options.connection_timeout = Some(check.timeout);
                tc.peer_template.options.total_connection_timeout = Some(check.timeout);
                Prober::Tcp(tc)
            }
            CheckKind::None => return Err("no check to run".to_string()),
        })
    }

    /// One probe of `addr` (on the check port, when one is set), bounded by the timeout.
    async fn probe(&self, addr: SocketAddr, check: &HealthCheck) -> Result<(), String> {
        let target = SocketAddr::new(addr.ip(), check.port.unwrap_or(addr.port()));
        let backend = Backend {
            addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(target),
            weight: 1,
            ext: Default::default(),
        };
        let probe = async {
            match self {
                Prober::Http(p) => p.check(&backend).await,
                Prober::Tcp(p) => p.check(&backend).await,
            }
        };
        match tokio::time::timeout(check.timeout, probe).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", check.timeout.as_millis())),
        }
    }
}
