//! Active health checks over real loopback backends: endpoints leave rotation after failing
//! their probes and come back after passing (over plain HTTP and over TLS), pools fail open,
//! unchecked Services are never probed, and bad annotations are reported while the defaults
//! apply.
//!
//! Probing does not depend on where the objects come from, so these run on the files source,
//! except the report of a bad annotation, which becomes a Warning Event on the kubernetes one.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use openssl::ssl::{select_next_proto, AlpnError, NameType, Ssl, SslAcceptor, SslMethod};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::support::pki::*;
use crate::support::*;

/// A loopback backend that tells health probes (by their `User-Agent`) from traffic: probes
/// are counted and answered with a status the test sets; traffic gets 200 and a JSON body
/// naming the backend, as [`Backend`]'s does. Plain HTTP/1.1, or ([`Probed::start_tls`])
/// HTTP/1.1 over TLS only.
struct Probed {
    addr: SocketAddr,
    /// Probe requests received.
    probes: Arc<AtomicUsize>,
    /// Traffic requests received.
    hits: Arc<AtomicUsize>,
    /// The status probes get.
    health: Arc<AtomicU16>,
    /// The request target and `Host` of the last probe.
    last_probe: Arc<Mutex<Option<(String, String)>>>,
    /// The SNI of the last probe's connection; `None` over plain HTTP or without SNI.
    probe_sni: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Probed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection a [`Probed`] serves: plain TCP or TLS over it.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// A TLS server context with a certificate for `backend.test` from a CA no one trusts (probes,
/// like the upstream connection, do not verify it) that accepts only ALPN `http/1.1`.
fn h1_tls_acceptor() -> SslAcceptor {
    let ca = Ca::root("health check test CA");
    let leaf = ca.issue(&Leaf::server("backend.test", &["backend.test"]));
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate(&leaf.cert).unwrap();
    b.set_private_key(&leaf.key).unwrap();
    b.set_alpn_select_callback(|_, offered| {
        select_next_proto(b"\x08http/1.1", offered).ok_or(AlpnError::ALERT_FATAL)
    });
    b.build()
}

impl Probed {
    async fn start(name: &str) -> Probed {
        Probed::start_speaking(name, None).await
    }

    /// A backend that speaks only TLS: a connection that does not complete a handshake (a
    /// plain HTTP request, say) is closed without an answer.
    async fn start_tls(name: &str) -> Probed {
        Probed::start_speaking(name, Some(Arc::new(h1_tls_acceptor()))).await
    }

    async fn start_speaking(name: &str, tls: Option<Arc<SslAcceptor>>) -> Probed {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let probes = Arc::new(AtomicUsize::new(0));
        let hits = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(AtomicU16::new(200));
        let last_probe = Arc::new(Mutex::new(None));
        let probe_sni = Arc::new(Mutex::new(None));
        let (n, p, h, st, last, last_sni) = (
            name.to_string(),
            probes.clone(),
            hits.clone(),
            health.clone(),
            last_probe.clone(),
            probe_sni.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (n, p, h, st, last, last_sni) = (
                    n.clone(),
                    p.clone(),
                    h.clone(),
                    st.clone(),
                    last.clone(),
                    last_sni.clone(),
                );
                let tls = tls.clone();
                tokio::spawn(async move {
                    let (conn, sni): (Box<dyn Conn>, Option<String>) = match tls {
                        None => (Box::new(stream), None),
                        Some(acceptor) => {
                            let ssl = Ssl::new(acceptor.context()).unwrap();
                            let mut tls = tokio_openssl::SslStream::new(ssl, stream).unwrap();
                            if Pin::new(&mut tls).accept().await.is_err() {
                                return;
                            }
                            let sni = tls
                                .ssl()
                                .servername(NameType::HOST_NAME)
                                .map(str::to_string);
                            (Box::new(tls), sni)
                        }
                    };
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let is_probe = req
                            .headers()
                            .get("user-agent")
                            .is_some_and(|v| v == "sluice-health-check");
                        let (status, body) = if is_probe {
                            p.fetch_add(1, Ordering::SeqCst);
                            let host = req
                                .headers()
                                .get("host")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            *last.lock().unwrap() = Some((req.uri().to_string(), host));
                            *last_sni.lock().unwrap() = sni.clone();
                            (st.load(Ordering::SeqCst), String::new())
                        } else {
                            h.fetch_add(1, Ordering::SeqCst);
                            (200, serde_json::json!({ "backend": n }).to_string())
                        };
                        async move {
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(conn), svc)
                        .await;
                });
            }
        });
        Probed {
            addr,
            probes,
            hits,
            health,
            last_probe,
            probe_sni,
            task,
        }
    }

    fn probes(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Makes later probes get `status`.
    fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }

    /// Closes the listening port: new connections are refused; open ones keep serving.
    fn close_port(&self) {
        self.task.abort();
    }
}

/// A Service `name` (port `http` 80) with `annotations`, and one slice per backend.
fn service_annotated(name: &str, annotations: &[(&str, &str)], backends: &[&Probed]) -> String {
    let list: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("\"{k}\": \"{v}\""))
        .collect();
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default, \
         annotations: {{{}}}}}\nspec:\n  ports:\n  - {{name: http, port: 80}}\n---\n",
        list.join(", ")
    );
    for b in backends {
        out.push_str(&slice("default", name, &[(b.addr, Some(true))]));
    }
    out
}

/// Fast HTTP checks on `/healthz`: every 100 ms, out after 2 failures, back after 2 passes.
const HTTP_CHECK: &[(&str, &str)] = &[
    ("sluice.dev/health-check", "http"),
    ("sluice.dev/health-check-path", "/healthz"),
    ("sluice.dev/health-check-interval", "100ms"),
    ("sluice.dev/health-check-timeout", "500ms"),
    ("sluice.dev/health-check-healthy-threshold", "2"),
    ("sluice.dev/health-check-unhealthy-threshold", "2"),
];

/// The manifests of Service `web` with `annotations` over `backends`, routed for host `x`.
fn web(annotations: &[(&str, &str)], backends: &[&Probed]) -> String {
    [
        service_annotated("web", annotations, backends),
        ingress("default", "web", Some("x"), &[("/", "Prefix", "web")]),
    ]
    .concat()
}

/// HTTPS checks, otherwise as [`HTTP_CHECK`].
const HTTPS_CHECK: &[(&str, &str)] = &[
    ("sluice.dev/health-check", "https"),
    ("sluice.dev/health-check-path", "/healthz"),
    ("sluice.dev/health-check-interval", "100ms"),
    ("sluice.dev/health-check-timeout", "500ms"),
    ("sluice.dev/health-check-healthy-threshold", "2"),
    ("sluice.dev/health-check-unhealthy-threshold", "2"),
];

/// As [`web`], with the Ingress sending requests over TLS (`sluice.dev/backend-protocol:
/// HTTPS`), for backends from [`Probed::start_tls`].
fn web_tls(annotations: &[(&str, &str)], backends: &[&Probed]) -> String {
    let ing = ingress("default", "web", Some("x"), &[("/", "Prefix", "web")]);
    [
        service_annotated("web", annotations, backends),
        annotate(&ing, &[("sluice.dev/backend-protocol", "HTTPS")]),
    ]
    .concat()
}

/// `sluice_pool_endpoints` of `default/web:80` in `state`.
async fn endpoints_in_state(s: &Sluice, state: &str) -> Option<i64> {
    let text = get(s.admin, "admin", "/metrics").await.body;
    text.lines()
        .find(|l| {
            l.starts_with("sluice_pool_endpoints{")
                && l.contains("service=\"web\"")
                && l.contains(&format!("state=\"{state}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until `backend` gets no traffic while `requests` more requests all succeed.
async fn wait_until_out_of_rotation(s: &Sluice, backend: &Probed, requests: usize) {
    let addr = s.addr;
    eventually(STEP, "the endpoint to leave rotation", || async move {
        let before = backend.hits();
        let mut conn = H1::connect(addr).await;
        for _ in 0..requests {
            let r = conn.get("x", "/").await.unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
        }
        (backend.hits() == before).then_some(())
    })
    .await;
}

/// With `a` and `b` behind Service `web`, checked: `b` is probed on `/healthz` with the
/// Service's in-cluster name as its host (and, over TLS, as its SNI: `sni`), leaves rotation
/// once it fails, and returns once it passes, while `a` serves every request.
async fn failing_endpoint_leaves_rotation_and_returns(
    s: &Sluice,
    a: &Probed,
    b: &Probed,
    sni: Option<&str>,
) {
    eventually(STEP, "both endpoints probed", || async move {
        (a.probes() > 0 && b.probes() > 0).then_some(())
    })
    .await;
    assert_eq!(
        b.last_probe.lock().unwrap().clone(),
        Some(("/healthz".to_string(), "web.default.svc".to_string()))
    );
    assert_eq!(b.probe_sni.lock().unwrap().as_deref(), sni);
    let load = Load::start(s.addr, "x", 4);
    load.wait_for_more(50).await;

    b.set_health(500);
    wait_until_out_of_rotation(s, b, 40).await;
    assert_eq!(endpoints_in_state(s, "unhealthy").await, Some(1));
    assert_eq!(endpoints_in_state(s, "ready").await, Some(1));
    // Out of rotation for good, not by chance: a's share is everything from now on.
    let before = b.hits();
    load.wait_for_more(200).await;
    assert_eq!(b.hits(), before, "an unhealthy endpoint got traffic");

    b.set_health(200);
    let hits = b.hits.clone();
    eventually(STEP, "b back in rotation", || {
        let now = hits.load(Ordering::SeqCst);
        async move { (now > before).then_some(()) }
    })
    .await;
    let failures = load.stop().await;
    assert_no_failed_request(&failures);
    assert_eq!(endpoints_in_state(s, "unhealthy").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_its_http_check_leaves_rotation_and_returns_once_it_passes() {
    let (a, b) = (&Probed::start("a").await, &Probed::start("b").await);
    let s = &Sluice::start(&web(HTTP_CHECK, &[a, b])).await;
    failing_endpoint_leaves_rotation_and_returns(s, a, b, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_endpoint_failing_its_https_check_leaves_rotation_and_returns_once_it_passes() {
    let (a, b) = (&Probed::start_tls("a").await, &Probed::start_tls("b").await);
    let s = &Sluice::start(&web_tls(HTTPS_CHECK, &[a, b])).await;
    // The probe's TLS handshake names the Service and accepts a certificate no one trusts
    // (verifying it, or probing without TLS, fails this test: no probe reaches the backend).
    failing_endpoint_leaves_rotation_and_returns(s, a, b, Some("web.default.svc")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_check_finds_an_endpoint_that_speaks_only_tls_unhealthy() {
    let a = &Probed::start_tls("a").await;
    let s = &Sluice::start(&web_tls(HTTP_CHECK, &[a])).await;
    // Traffic reaches it over TLS, but the plain probe never gets an answer: this is what
    // `https` checks are for.
    eventually(STEP, "the endpoint unhealthy", || async move {
        (endpoints_in_state(s, "unhealthy").await == Some(1)).then_some(())
    })
    .await;
    assert_eq!(a.probes(), 0, "a plain probe got an HTTP answer over TLS");
    // The pool fails open: its one endpoint still serves.
    assert_eq!(s.get("x", "/").await.backend(), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_check_takes_out_an_endpoint_whose_port_closes() {
    let (a, b) = (&Probed::start("a").await, &Probed::start("b").await);
    let check = [
        ("sluice.dev/health-check", "tcp"),
        ("sluice.dev/health-check-interval", "100ms"),
        ("sluice.dev/health-check-unhealthy-threshold", "2"),
    ];
    // Passive ejection off: only the health check can take b out.
    let s = &Sluice::start_with(
        &web(&check, &[a, b]),
        &test_settings("eject_consecutive_failures = 0"),
    )
    .await;
    s.wait_for_backend_named("b").await;
    assert_eq!(b.probes(), 0, "a TCP check sends no HTTP request");
    b.close_port();
    wait_until_out_of_rotation(s, b, 20).await;
    assert_eq!(endpoints_in_state(s, "unhealthy").await, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_endpoint_is_unhealthy_they_all_still_serve() {
    let (a, b) = (&Probed::start("a").await, &Probed::start("b").await);
    let s = &Sluice::start(&web(HTTP_CHECK, &[a, b])).await;
    a.set_health(503);
    b.set_health(503);
    eventually(STEP, "both endpoints unhealthy", || async move {
        (endpoints_in_state(s, "unhealthy").await == Some(2)).then_some(())
    })
    .await;
    let (ha, hb) = (a.hits(), b.hits());
    let mut conn = H1::connect(s.addr).await;
    for _ in 0..20 {
        let r = conn.get("x", "/").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Fail open: both keep serving, round robin between them.
    assert_eq!((a.hits() - ha, b.hits() - hb), (10, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_checks_gets_no_probes_and_one_that_drops_them_is_no_longer_probed() {
    let (a, b) = (&Probed::start("a").await, &Probed::start("b").await);
    let (other, plain) = (&Probed::start("other").await, &Probed::start("plain").await);
    let manifests = |web_check: &[(&str, &str)]| {
        [
            web(web_check, &[a, b]),
            service_annotated("other", HTTP_CHECK, &[other]),
            service_annotated("plain", &[], &[plain]),
            ingress("default", "other", Some("o"), &[("/", "Prefix", "other")]),
            ingress("default", "plain", Some("p"), &[("/", "Prefix", "plain")]),
        ]
        .concat()
    };
    let s = &Sluice::start(&manifests(HTTP_CHECK)).await;
    // Checks run meanwhile (other is probed every 100 ms), yet plain is never probed.
    eventually(STEP, "ten probes of other", || async move {
        (other.probes() >= 10).then_some(())
    })
    .await;
    assert_eq!(plain.probes(), 0, "a Service without checks was probed");
    assert_eq!(get(s.addr, "p", "/").await.backend(), "plain");

    // b fails its check, then web drops the annotation: b returns and is probed no more.
    b.set_health(500);
    wait_until_out_of_rotation(s, b, 10).await;
    s.write_manifest("routes.yaml", &manifests(&[]));
    let before = b.hits();
    let hits = b.hits.clone();
    eventually(STEP, "b back in rotation without checks", || {
        let addr = s.addr;
        let hits = hits.clone();
        async move {
            get(addr, "x", "/").await;
            (hits.load(Ordering::SeqCst) > before).then_some(())
        }
    })
    .await;
    let (probes_a, probes_b) = (a.probes(), b.probes());
    let seen = other.probes();
    eventually(STEP, "five more probes of other", || async move {
        (other.probes() >= seen + 5).then_some(())
    })
    .await;
    // At most one probe was already in flight when the checks stopped.
    assert!(a.probes() <= probes_a + 1 && b.probes() <= probes_b + 1);
    assert_eq!(plain.probes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_leaves_the_pool_is_no_longer_probed() {
    let (a, b) = (&Probed::start("a").await, &Probed::start("b").await);
    let s = &Sluice::start(&web(HTTP_CHECK, &[a, b])).await;
    eventually(STEP, "both endpoints probed", || async move {
        (a.probes() > 0 && b.probes() > 0).then_some(())
    })
    .await;
    s.write_manifest("routes.yaml", &web(HTTP_CHECK, &[a]));
    eventually(STEP, "b to leave the pool", || async move {
        let state = s.running.as_ref().unwrap().state.clone();
        let live = state.live_full();
        let pool = live.pools.values().next()?;
        (pool.endpoints() == vec![a.addr]).then_some(())
    })
    .await;
    let gone = b.probes();
    // a is still probed every 100 ms: time enough for b's task to have stopped.
    let seen = a.probes();
    eventually(STEP, "five more probes of a", || async move {
        (a.probes() >= seen + 5).then_some(())
    })
    .await;
    assert!(
        b.probes() <= gone + 1,
        "b was probed after it left the pool"
    );
}

async fn a_bad_health_check_annotation_is_reported_and_the_default_used() {
    let (a, b) = (&Probed::start("a").await, &Probed::start("b").await);
    let mut check = HTTP_CHECK.to_vec();
    check.retain(|(k, _)| *k != "sluice.dev/health-check-unhealthy-threshold");
    check.push(("sluice.dev/health-check-unhealthy-threshold", "many"));
    let s = &Sluice::start(&web(&check, &[a, b])).await;
    let skipped: Vec<_> = s
        .skipped()
        .iter()
        .map(|k| (k.ingress.name.clone(), k.reason.as_str(), k.message.clone()))
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].0, "web");
    assert_eq!(skipped[0].1, "InvalidAnnotation");
    assert!(
        skipped[0]
            .2
            .contains("sluice.dev/health-check-unhealthy-threshold"),
        "{skipped:?}"
    );
    // The check runs with the default threshold (3) in place of the bad value.
    let live = s.running.as_ref().unwrap().state.live_full();
    let check = live.pools.values().next().unwrap().health_check();
    assert_eq!(check.map(|c| c.unhealthy_threshold), Some(3));
    b.set_health(500);
    wait_until_out_of_rotation(s, b, 10).await;
    if let Some(api) = &s.api {
        eventually(STEP, "a Warning Event on web", || async move {
            api.list("Event")
                .iter()
                .any(|e| {
                    (e["regarding"]["name"] == "web" || e["involvedObject"]["name"] == "web")
                        && e["type"] == "Warning"
                        && e["reason"] == "InvalidAnnotation"
                })
                .then_some(())
        })
        .await;
    }
}

crate::through_both_sources!(a_bad_health_check_annotation_is_reported_and_the_default_used);

impl Sluice {
    /// Waits until a request for host `x` is answered by `name`.
    async fn wait_for_backend_named(&self, name: &str) {
        self.wait_for_backend("x", "/", name).await;
    }
}
