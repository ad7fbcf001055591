//! External authentication (`sluice.dev/auth-url`) over real sockets: a real auth server on
//! loopback decides, sluice passes its answer on, and fails closed when it cannot ask.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::rules::{one_ingress, one_ingress_with};
use crate::support::*;

/// What the auth server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: BTreeMap<String, Vec<String>>,
    body_bytes: usize,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<String> {
        self.headers.get(name).cloned().unwrap_or_default()
    }
}

/// A loopback auth server. It answers with the status the checked request names in
/// `x-want-status` (else 200); a 2xx carries `X-Auth-User: alice` and
/// `X-Auth-Email: alice@example.test`, a 401 `WWW-Authenticate: Bearer realm="test"`; every
/// answer has a small body. It records each request and counts connections.
struct AuthServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AuthServer {
    async fn start() -> AuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (s, c, d) = (seen.clone(), connections.clone(), delay_ms.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (s, d) = (s.clone(), d.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (s, d) = (s.clone(), d.clone());
                        async move { Ok::<_, hyper::Error>(decide(req, &s, &d).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        AuthServer {
            addr,
            seen,
            connections,
            delay_ms,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn asked(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn decide(
    req: Request<Incoming>,
    seen: &Mutex<Vec<Seen>>,
    delay: &AtomicU64,
) -> Response<Full<Bytes>> {
    let headers = header_lists(req.headers());
    let status: u16 = headers
        .get("x-want-status")
        .and_then(|v| v[0].parse().ok())
        .unwrap_or(200);
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let body_bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(usize::MAX);
    seen.lock().unwrap().push(Seen {
        method,
        uri,
        headers,
        body_bytes,
    });
    let ms = delay.load(Ordering::SeqCst);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut resp = Response::builder().status(status);
    match status {
        200..=299 => {
            resp = resp
                .header("x-auth-user", "alice")
                .header("x-auth-email", "alice@example.test")
                .header("x-auth-secret", "not for the upstream")
                .header("set-cookie", "_session=refreshed; Path=/; HttpOnly");
        }
        401 => resp = resp.header("www-authenticate", "Bearer realm=\"test\""),
        _ => {}
    }
    resp.body(Full::new(Bytes::from_static(b"auth says so\n")))
        .unwrap()
}

/// Backend `web` behind Ingress `rules` on host `r.test`, annotated.
async fn guarded(annotations: &[(&str, &str)]) -> (Backend, Sluice) {
    one_ingress(&[("/", "Prefix", "web")], annotations).await
}

/// A request to `r.test` with these headers.
fn checked(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "r.test")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    for (name, value) in headers {
        req.headers_mut().append(
            hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    req
}

/// The subrequests of Ingress `default/{ingress}` with `outcome` the metrics text counts.
fn subrequests(text: &str, ingress: &str, outcome: &str) -> Option<f64> {
    let series = format!(
        "sluice_auth_request_duration_seconds_count{{ingress=\"{ingress}\",namespace=\"default\",outcome=\"{outcome}\"}}"
    );
    sample(text, &series)
}

async fn send(s: &Sluice, req: Request<Full<Bytes>>) -> Reply {
    H1::connect(s.addr).await.send(req).await.unwrap()
}

#[tokio::test]
async fn an_allowed_request_reaches_the_backend_with_the_auth_answers_headers_only() {
    let auth = AuthServer::start().await;
    let (web, s) = guarded(&[
        ("sluice.dev/auth-url", &auth.url("/verify?scope=app")),
        (
            "sluice.dev/auth-response-headers",
            "X-Auth-User, X-Auth-Email",
        ),
    ])
    .await;
    let req = checked(
        "POST",
        "/orders?id=7",
        &[
            ("cookie", "session=abc"),
            ("x-auth-user", "mallory"),
            ("x-original-url", "http://spoofed.test/"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
        "the body stays with the backend",
    );
    let r = send(&s, req).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The auth service's values replace the client's, and only the names listed are copied.
    assert_eq!(r.upstream_header("x-auth-user"), ["alice"]);
    assert_eq!(r.upstream_header("x-auth-email"), ["alice@example.test"]);
    assert!(r.upstream_header("x-auth-secret").is_empty());
    // The session cookie the auth service refreshed reaches the client, not the upstream.
    assert_eq!(
        r.headers["set-cookie"],
        "_session=refreshed; Path=/; HttpOnly"
    );
    assert!(r.upstream_header("set-cookie").is_empty());
    assert_eq!(r.json()["method"], "POST");
    let seen = auth.seen();
    assert_eq!(seen.len(), 1);
    let asked = &seen[0];
    assert_eq!(
        (asked.method.as_str(), asked.uri.as_str()),
        ("GET", "/verify?scope=app")
    );
    assert_eq!(
        asked.header("x-original-url"),
        ["http://r.test/orders?id=7"]
    );
    assert_eq!(asked.header("x-original-method"), ["POST"]);
    assert_eq!(asked.header("x-auth-request-redirect"), ["/orders?id=7"]);
    assert_eq!(asked.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(asked.header("x-real-ip"), ["127.0.0.1"]);
    assert_eq!(asked.header("host"), [auth.addr.to_string()]);
    assert_eq!(asked.header("cookie"), ["session=abc"]);
    assert_eq!(asked.header("x-auth-user"), ["mallory"]);
    // No body, and no header that would announce one.
    assert_eq!(asked.body_bytes, 0);
    assert!(asked.header("content-length").is_empty(), "{asked:?}");
    assert!(asked.header("transfer-encoding").is_empty(), "{asked:?}");
    assert_eq!(web.hits(), 1);
    // The check's time is in the access log and in the metrics.
    let log = s.access_log.clone();
    let line = eventually(STEP, "the access-log line", || {
        let lines = log.lines();
        async move { lines.into_iter().next() }
    })
    .await;
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(line["auth_duration_s"].as_f64().is_some(), "{line}");
    let text = scrape(&s).await;
    assert_eq!(subrequests(&text, "rules", "allowed"), Some(1.0), "{text}");
}

#[tokio::test]
async fn only_the_named_request_headers_are_sent_to_the_auth_service() {
    let auth = AuthServer::start().await;
    let (_web, s) = guarded(&[
        ("sluice.dev/auth-url", &auth.url("/verify")),
        (
            "sluice.dev/auth-request-headers",
            "Authorization, X-Real-IP",
        ),
    ])
    .await;
    let req = checked(
        "GET",
        "/",
        &[
            ("authorization", "Bearer t"),
            ("cookie", "a=b"),
            ("x-real-ip", "203.0.113.9"),
        ],
        "",
    );
    assert_eq!(
        send(&s, req).await.status,
        503,
        "X-Real-IP is sluice's own: the route fails closed"
    );
    let (_web, s) = guarded(&[
        ("sluice.dev/auth-url", &auth.url("/verify")),
        ("sluice.dev/auth-request-headers", "Authorization"),
    ])
    .await;
    let req = checked(
        "GET",
        "/",
        &[("authorization", "Bearer t"), ("cookie", "a=b")],
        "",
    );
    assert_eq!(send(&s, req).await.status, 200);
    let asked = auth.seen().pop().unwrap();
    assert_eq!(asked.header("authorization"), ["Bearer t"]);
    assert!(asked.header("cookie").is_empty(), "{asked:?}");
    assert_eq!(asked.header("x-original-method"), ["GET"]);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_auth_service_sees_the_real_client_and_scheme() {
    let auth = AuthServer::start().await;
    let settings = settings_with_server("trusted_proxies = [\"127.0.0.0/8\"]");
    let url = auth.url("/verify");
    let annotations = [("sluice.dev/auth-url", url.as_str())];
    let (_web, s) = one_ingress_with(&settings, &[("/", "Prefix", "web")], &annotations).await;
    let req = checked(
        "GET",
        "/p",
        &[
            ("x-forwarded-for", "203.0.113.7, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
        ],
        "",
    );
    assert_eq!(send(&s, req).await.status, 200);
    let asked = auth.seen().pop().unwrap();
    // The first untrusted address from the right, alone: the auth service is not handed the
    // client's list to misread.
    assert_eq!(asked.header("x-forwarded-for"), ["10.1.1.1"]);
    assert_eq!(asked.header("x-real-ip"), ["10.1.1.1"]);
    assert_eq!(asked.header("x-forwarded-proto"), ["https"]);
    assert_eq!(asked.header("x-original-url"), ["https://r.test/p"]);
}

#[tokio::test]
async fn an_http2_request_is_checked_with_its_authority_and_its_cookies_in_one_field() {
    let auth = AuthServer::start().await;
    let (web, s) = guarded(&[("sluice.dev/auth-url", &auth.url("/verify"))]).await;
    let req = Request::builder()
        .uri("http://r.test/h2?q=1")
        .header("cookie", "a=1")
        .header("cookie", "session=abc")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send_h2c(s.addr, req).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let asked = auth.seen().pop().unwrap();
    assert_eq!(asked.header("x-original-url"), ["http://r.test/h2?q=1"]);
    // Split over two fields, the cookies would reach many HTTP/1.1 servers as the first only.
    assert_eq!(asked.header("cookie"), ["a=1; session=abc"]);
    let r = send_h2c(s.addr, checked("GET", "/", &[("x-want-status", "401")], "")).await;
    assert_eq!(r.status, 401);
    assert_eq!(web.hits(), 1);
}

#[tokio::test]
async fn a_401_passes_to_the_client_with_its_challenge_and_a_403_as_is() {
    let auth = AuthServer::start().await;
    let (web, s) = guarded(&[("sluice.dev/auth-url", &auth.url("/verify"))]).await;
    let r = send(&s, checked("GET", "/a", &[("x-want-status", "401")], "")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"test\"");
    let r = send(&s, checked("GET", "/a", &[("x-want-status", "403")], "")).await;
    assert_eq!(r.status, 403);
    assert!(r.headers.get("www-authenticate").is_none());
    assert_eq!(web.hits(), 0);
    let text = scrape(&s).await;
    for outcome in ["unauthorized", "forbidden"] {
        assert_eq!(subrequests(&text, "rules", outcome), Some(1.0), "{outcome}");
    }
}

#[tokio::test]
async fn a_401_with_a_signin_url_redirects_there_with_the_original_url() {
    let auth = AuthServer::start().await;
    let (web, s) = guarded(&[
        ("sluice.dev/auth-url", &auth.url("/verify")),
        (
            "sluice.dev/auth-signin",
            "https://login.example.test/start?app=1",
        ),
    ])
    .await;
    let r = send(
        &s,
        checked("GET", "/deep/page?x=1&y=2", &[("x-want-status", "401")], ""),
    )
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.headers["location"],
        "https://login.example.test/start?app=1&rd=http%3A%2F%2Fr.test%2Fdeep%2Fpage%3Fx%3D1%26y%3D2"
    );
    // An allowed request is not redirected.
    assert_eq!(
        send(&s, checked("GET", "/deep/page", &[], "")).await.status,
        200
    );
    assert_eq!(web.hits(), 1);
}

#[tokio::test]
async fn an_auth_service_that_fails_answers_late_or_cannot_be_reached_fails_closed_with_500() {
    let auth = AuthServer::start().await;
    let dead = dead_addr().await;
    let web = Backend::start("web").await;
    let route = |name: &str, host: &str, annotations: &[(&str, &str)]| {
        annotate(
            &ingress("default", name, Some(host), &[("/", "Prefix", "web")]),
            annotations,
        )
    };
    let manifests = [
        service_with("default", "web", &[web.addr]),
        route(
            "slow",
            "slow.test",
            &[
                ("sluice.dev/auth-url", &auth.url("/verify")),
                ("sluice.dev/auth-timeout", "200ms"),
            ],
        ),
        route(
            "refused",
            "refused.test",
            &[("sluice.dev/auth-url", &format!("http://{dead}/verify"))],
        ),
        route(
            "odd",
            "odd.test",
            &[("sluice.dev/auth-url", &auth.url("/verify"))],
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    // Statuses that decide nothing fail closed as well.
    for status in ["500", "302", "404"] {
        let mut req = checked("GET", "/", &[("x-want-status", status)], "");
        req.headers_mut()
            .insert("host", "odd.test".parse().unwrap());
        assert_eq!(send(&s, req).await.status, 500, "auth answered {status}");
    }
    assert_eq!(s.get("refused.test", "/").await.status, 500);
    auth.delay_ms.store(2_000, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let r = s.get("slow.test", "/").await;
    assert_eq!(r.status, 500);
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(web.hits(), 0);
    let text = scrape(&s).await;
    let count = |ingress, outcome| subrequests(&text, ingress, outcome);
    assert_eq!(count("slow", "timeout"), Some(1.0), "{text}");
    assert_eq!(count("refused", "failed"), Some(1.0), "{text}");
    assert_eq!(count("odd", "failed"), Some(3.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_each_checked_once() {
    let auth = AuthServer::start().await;
    let (web, s) = guarded(&[("sluice.dev/auth-url", &auth.url("/verify"))]).await;
    let addr = s.addr;
    let requests = (0..40).map(|i| async move {
        let path = format!("/r{i}");
        let req = checked("GET", &path, &[], "");
        H1::connect(addr).await.send(req).await.map(|r| r.status)
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| s == &Ok(200)), "{statuses:?}");
    let mut asked: Vec<String> = auth
        .seen()
        .iter()
        .flat_map(|seen| seen.header("x-original-url"))
        .collect();
    asked.sort();
    asked.dedup();
    // Each request was asked about once, under its own URL.
    assert_eq!((asked.len(), auth.asked(), web.hits()), (40, 40, 40));
    assert!(auth.connections.load(Ordering::SeqCst) <= 40);
}

#[tokio::test]
async fn subrequests_reuse_their_keepalive_connections() {
    let auth = AuthServer::start().await;
    let (web, s) = guarded(&[("sluice.dev/auth-url", &auth.url("/verify"))]).await;
    for _ in 0..5 {
        assert_eq!(send(&s, checked("GET", "/", &[], "")).await.status, 200);
    }
    assert_eq!(auth.asked(), 5);
    assert_eq!(auth.connections.load(Ordering::SeqCst), 1);
    assert_eq!(web.hits(), 5);
}

/// A loopback auth server that answers the first request of each connection with 200 and
/// keepalive, and closes the connection on the second without answering: what an auth service
/// that closed an idle connection looks like to the client that reuses it. Counts connections.
async fn one_answer_per_connection() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>)
{
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                for answered in [false, true] {
                    if !read_head(&mut stream).await || answered {
                        return;
                    }
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, connections, task)
}

#[tokio::test]
async fn a_pooled_connection_the_auth_service_closed_is_retried_on_a_new_one() {
    let (addr, connections, task) = one_answer_per_connection().await;
    let url = format!("http://{addr}/verify");
    let (web, s) = guarded(&[("sluice.dev/auth-url", &url)]).await;
    for i in 0..3 {
        let r = send(&s, checked("GET", "/", &[], "")).await;
        // Without the retry, every request after the first would answer 500.
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3);
    assert_eq!(web.hits(), 3);
    task.abort();
}

#[tokio::test]
async fn cached_answers_spare_the_auth_service_until_they_expire() {
    let auth = AuthServer::start().await;
    let (web, s) = guarded(&[
        ("sluice.dev/auth-url", &auth.url("/verify")),
        ("sluice.dev/auth-cache-duration", "200 401 400ms"),
        ("sluice.dev/auth-cache-key", "$http_authorization"),
        ("sluice.dev/auth-response-headers", "X-Auth-User"),
    ])
    .await;
    let as_user = |token: &'static str, status: &'static str| {
        checked(
            "GET",
            "/",
            &[("authorization", token), ("x-want-status", status)],
            "",
        )
    };
    let r = send(&s, as_user("Bearer a", "200")).await;
    assert_eq!((r.status, auth.asked()), (200, 1));
    // The same credential: answered from the cache, the copied headers included; the status
    // the auth service would now give is not asked for.
    let r = send(&s, as_user("Bearer a", "401")).await;
    assert_eq!((r.status, auth.asked()), (200, 1));
    assert_eq!(r.upstream_header("x-auth-user"), ["alice"]);
    // A cookie is one client's: never replayed from the cache.
    assert!(r.headers.get("set-cookie").is_none());
    // Another credential is asked for, and its 401 kept too.
    assert_eq!(send(&s, as_user("Bearer b", "401")).await.status, 401);
    assert_eq!(send(&s, as_user("Bearer b", "200")).await.status, 401);
    assert_eq!(auth.asked(), 2);
    // A request without the key's header is never cached.
    for _ in 0..2 {
        assert_eq!(send(&s, checked("GET", "/", &[], "")).await.status, 200);
    }
    assert_eq!(auth.asked(), 4);
    assert_eq!(web.hits(), 4);
    let hits = sample(&scrape(&s).await, "sluice_auth_cache_hits_total");
    assert_eq!(hits, Some(2.0));
    // Once the answer expires, the auth service is asked again.
    let addr = s.addr;
    eventually(STEP, "the cached 401 to expire", || async move {
        let r = H1::connect(addr)
            .await
            .send(as_user("Bearer b", "200"))
            .await
            .unwrap();
        (r.status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_cached_answer_serves_only_the_host_it_was_given_for() {
    let auth = AuthServer::start().await;
    let web = Backend::start("web").await;
    let url = auth.url("/verify");
    let cached = [
        ("sluice.dev/auth-url", url.as_str()),
        ("sluice.dev/auth-cache-duration", "200 1m"),
        ("sluice.dev/auth-cache-key", "$http_authorization"),
    ];
    let route = |name: &str, host: &str| {
        annotate(
            &ingress("default", name, Some(host), &[("/", "Prefix", "web")]),
            &cached,
        )
    };
    let manifests = [
        service_with("default", "web", &[web.addr]),
        route("one", "one.test"),
        route("two", "two.test"),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let to = |host: &str, status: &str| {
        let mut req = checked(
            "GET",
            "/",
            &[("authorization", "Bearer a"), ("x-want-status", status)],
            "",
        );
        req.headers_mut().insert("host", host.parse().unwrap());
        req
    };
    assert_eq!(send(&s, to("one.test", "200")).await.status, 200);
    assert_eq!(send(&s, to("one.test", "403")).await.status, 200);
    assert_eq!(auth.asked(), 1);
    // The same credential on another host is asked for: the auth service may decide by host.
    assert_eq!(send(&s, to("two.test", "403")).await.status, 403);
    assert_eq!(auth.asked(), 2);
    assert_eq!(web.hits(), 2);
}

async fn an_in_cluster_auth_service_is_reached_through_its_endpoints() {
    let auth = AuthServer::start().await;
    let web = Backend::start("web").await;
    let route = |name: &str, host: &str, url: &str| {
        annotate(
            &ingress("shop", name, Some(host), &[("/", "Prefix", "web")]),
            &[("sluice.dev/auth-url", url)],
        )
    };
    let manifests = [
        service_with("shop", "web", &[web.addr]),
        // The auth Service lives in its own namespace; its port 80 maps to the endpoint's.
        service_with("security", "oauth", &[auth.addr]),
        route(
            "by-service",
            "r.test",
            "http://oauth.security.svc.cluster.local/verify",
        ),
        route(
            "missing",
            "missing.test",
            "http://nothing.security.svc/verify",
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let r = send(&s, checked("GET", "/x", &[], "")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let asked = auth.seen().pop().unwrap();
    assert_eq!(asked.header("host"), ["oauth.security.svc.cluster.local"]);
    assert_eq!(asked.header("x-original-url"), ["http://r.test/x"]);
    // A Service that does not exist is reported, and its routes answer 503, never unguarded.
    assert_eq!(s.get("missing.test", "/").await.status, 503);
    assert_eq!(web.hits(), 1);
    let finding = s.finding_of("missing");
    assert!(finding.message.contains("auth-url"), "{}", finding.message);
}

crate::through_both_sources!(an_in_cluster_auth_service_is_reached_through_its_endpoints);

#[tokio::test]
async fn invalid_auth_annotations_fail_the_route_closed_and_are_reported() {
    let auth = AuthServer::start().await;
    let (web, s) = guarded(&[
        ("sluice.dev/auth-url", &auth.url("/verify")),
        ("sluice.dev/auth-cache-duration", "500 30s"),
        ("sluice.dev/auth-cache-key", "$cookie_session"),
    ])
    .await;
    assert_eq!(s.get("r.test", "/").await.status, 503);
    let (web2, s2) = guarded(&[("sluice.dev/auth-url", "ftp://auth.test/")]).await;
    assert_eq!(s2.get("r.test", "/").await.status, 503);
    // Neither the auth service nor the backend heard of those requests.
    assert_eq!((auth.asked(), web.hits(), web2.hits()), (0, 0, 0));
    let finding = s.finding_of("rules");
    assert_eq!(finding.reason.as_str(), "InvalidAnnotation");
    assert!(
        finding.message.contains("auth-cache-duration"),
        "{}",
        finding.message
    );
}
