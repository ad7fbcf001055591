//! Who may reach a route: the real client address behind trusted proxies, over real loopback
//! sockets.

use crate::support::*;
use crate::tls::{https, secure_test_host, tls_settings};

/// A request to host `x` with these headers.
fn request_with(
    headers: &[(&'static str, &str)],
) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = request("x", "/");
    for (name, value) in headers {
        req.headers_mut().append(*name, value.parse().unwrap());
    }
    req
}

async fn one_route(settings: &str) -> (Backend, Sluice) {
    let a = Backend::start("a").await;
    let manifests = [
        service_with("default", "svc-a", &[a.addr]),
        ingress("default", "one", None, &[("/", "Prefix", "svc-a")]),
    ]
    .concat();
    let s = Sluice::start_with(&manifests, settings).await;
    (a, s)
}

#[tokio::test]
async fn behind_trusted_proxies_the_client_is_the_first_untrusted_address_from_the_right() {
    let settings = settings_with_server("trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]");
    let (_a, s) = one_route(&settings).await;
    let req = request_with(&[
        ("x-forwarded-for", "198.51.100.1, 203.0.113.7"),
        ("x-forwarded-for", "10.1.1.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "shop.example"),
        ("x-forwarded-port", "443"),
    ]);
    let r = H1::connect(s.addr).await.send(req).await.unwrap();
    assert_eq!(r.status, 200);
    // 10.1.1.1 is a trusted hop; 203.0.113.7 is the first address no trusted proxy is.
    assert_eq!(r.upstream_header("x-real-ip"), ["203.0.113.7"]);
    // The list goes on, with the trusted peer's own address appended.
    assert_eq!(
        r.upstream_header("x-forwarded-for"),
        ["198.51.100.1, 203.0.113.7, 10.1.1.1, 127.0.0.1"]
    );
    // What the proxy in front saw of the client's connection is passed on.
    assert_eq!(r.upstream_header("x-forwarded-proto"), ["https"]);
    assert_eq!(r.upstream_header("x-forwarded-host"), ["shop.example"]);
    assert_eq!(r.upstream_header("x-forwarded-port"), ["443"]);
    // A chain of trusted hops only: the leftmost address is the client.
    let req = request_with(&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]);
    let r = H1::connect(s.addr).await.send(req).await.unwrap();
    assert_eq!(r.upstream_header("x-real-ip"), ["10.9.9.9"]);
    // The access log names the real client.
    let log = s.access_log.clone();
    let clients = eventually(STEP, "two access-log lines", || {
        let lines = log.lines();
        async move { (lines.len() >= 2).then_some(lines) }
    })
    .await
    .iter()
    .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["client"].clone())
    .collect::<Vec<_>>();
    assert_eq!(clients, ["203.0.113.7", "10.9.9.9"]);
}

#[tokio::test]
async fn an_untrusted_peers_forwarding_headers_are_replaced_not_believed() {
    // Some proxies are trusted, but not loopback: the test client is an ordinary client.
    let settings = settings_with_server("trusted_proxies = [\"10.0.0.0/8\"]");
    let (_a, s) = one_route(&settings).await;
    let req = request_with(&[
        ("x-forwarded-for", "203.0.113.7, 10.1.1.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "spoofed.example"),
        ("x-forwarded-port", "1"),
    ]);
    let r = H1::connect(s.addr).await.send(req).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-real-ip"), ["127.0.0.1"]);
    assert_eq!(r.upstream_header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(r.upstream_header("x-forwarded-proto"), ["http"]);
    assert_eq!(r.upstream_header("x-forwarded-host"), ["x"]);
    assert_eq!(
        r.upstream_header("x-forwarded-port"),
        [s.addr.port().to_string()]
    );
}

#[tokio::test]
async fn a_forwarded_https_stops_the_https_redirect_only_from_a_trusted_peer() {
    let a = Backend::start("a").await;
    let manifests = secure_test_host(&a);
    let behind_lb = |s: &Sluice| {
        let addr = s.addr;
        async move {
            let mut req = request("secure.test", "/a");
            req.headers_mut()
                .insert("x-forwarded-proto", "https".parse().unwrap());
            H1::connect(addr).await.send(req).await.unwrap()
        }
    };
    // A TLS-terminating load balancer on loopback, trusted: its plain request is served.
    let trusting = tls_settings("").replacen(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
        1,
    );
    let s = Sluice::start_with(&manifests, &trusting).await;
    let r = behind_lb(&s).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-forwarded-proto"), ["https"]);
    // Its plain-HTTP clients are still redirected.
    assert_eq!(s.get("secure.test", "/a").await.status, 308);
    // From an untrusted peer the header is not believed: 308 to https as before.
    let s = Sluice::start_with(&manifests, &tls_settings("")).await;
    let r = behind_lb(&s).await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.headers["location"],
        format!("https://secure.test:{}/a", https(&s).port())
    );
    assert_eq!(a.hits(), 1);
}

/// One Ingress per (host, annotations) to one backend.
pub(crate) fn guarded_routes(backend: &Backend, routes: &[(&str, &[(&str, &str)])]) -> String {
    let mut out = service_with("default", "svc-a", &[backend.addr]);
    for (i, (host, annotations)) in routes.iter().enumerate() {
        let ing = ingress(
            "default",
            &format!("r{i}"),
            Some(host),
            &[("/", "Prefix", "svc-a")],
        );
        out.push_str(&annotate(&ing, annotations));
    }
    out
}

/// The status of a request to `host` from the client `from` names (through a trusted proxy on
/// loopback), or from the connection's own address when `None`.
async fn status_from(s: &Sluice, host: &str, from: Option<&str>) -> u16 {
    let mut req = request(host, "/");
    if let Some(ip) = from {
        req.headers_mut()
            .insert("x-forwarded-for", ip.parse().unwrap());
    }
    H1::connect(s.addr).await.send(req).await.unwrap().status
}

#[tokio::test]
async fn source_ranges_admit_and_refuse_ipv4_clients_deny_first() {
    let a = Backend::start("a").await;
    let manifests = guarded_routes(
        &a,
        &[
            ("open.test", &[]),
            (
                "loopback.test",
                &[(
                    "sluice.dev/allowlist-source-range",
                    "10.0.0.0/8, 127.0.0.0/8",
                )],
            ),
            (
                "elsewhere.test",
                &[("sluice.dev/allowlist-source-range", "10.0.0.0/8, ::1")],
            ),
            (
                "denied.test",
                &[("sluice.dev/denylist-source-range", "127.0.0.1")],
            ),
            (
                "both.test",
                &[
                    ("sluice.dev/allowlist-source-range", "127.0.0.0/8"),
                    ("sluice.dev/denylist-source-range", "127.0.0.1/32"),
                ],
            ),
            (
                "broken.test",
                &[("sluice.dev/allowlist-source-range", "127.0.0.1/8")],
            ),
        ],
    );
    let s = Sluice::start(&manifests).await;
    for (host, want) in [
        ("open.test", 200),
        ("loopback.test", 200),
        ("elsewhere.test", 403),
        ("denied.test", 403),
        ("both.test", 403),
        // A range with bits after its prefix fails closed.
        ("broken.test", 503),
    ] {
        assert_eq!(status_from(&s, host, None).await, want, "{host}");
    }
    // Only the two admitted requests reached the backend.
    assert_eq!(a.hits(), 2);
    let r = s.get("denied.test", "/").await;
    assert!(r.body.contains("403 Forbidden"), "{}", r.body);
    let finding = s
        .skipped()
        .into_iter()
        .find(|f| f.message.contains("allowlist-source-range"))
        .expect("the bad range is reported");
    assert!(
        finding.message.contains("127.0.0.1/8"),
        "{}",
        finding.message
    );
}

#[tokio::test]
async fn source_ranges_apply_to_the_real_client_address_ipv6_included() {
    let a = Backend::start("a").await;
    let manifests = guarded_routes(
        &a,
        &[
            (
                "v6only.test",
                &[("sluice.dev/allowlist-source-range", "::1")],
            ),
            (
                "nov6.test",
                &[("sluice.dev/denylist-source-range", "::1/128")],
            ),
        ],
    );
    // Loopback stands for a trusted proxy that names the client in X-Forwarded-For.
    let settings = settings_with_server("trusted_proxies = [\"127.0.0.0/8\"]");
    let s = Sluice::start_with(&manifests, &settings).await;
    for (host, from, want) in [
        ("v6only.test", Some("::1"), 200),
        ("v6only.test", Some("127.0.0.2"), 403),
        // The proxy itself, with no client named: its own address, outside the list.
        ("v6only.test", None, 403),
        ("nov6.test", Some("::1"), 403),
        ("nov6.test", Some("127.0.0.2"), 200),
    ] {
        assert_eq!(status_from(&s, host, from).await, want, "{host} {from:?}");
    }
    assert_eq!(a.hits(), 2);
}

#[tokio::test]
async fn the_global_denylist_refuses_its_clients_on_every_route() {
    let a = Backend::start("a").await;
    let manifests = guarded_routes(
        &a,
        &[
            ("open.test", &[]),
            (
                "allowed.test",
                &[("sluice.dev/allowlist-source-range", "::1, 127.0.0.0/8")],
            ),
        ],
    );
    let settings = settings_with_server("trusted_proxies = [\"127.0.0.1\"]")
        + "[access]\ndenylist_source_range = [\"::1\", \"127.0.0.2\"]\n";
    let s = Sluice::start_with(&manifests, &settings).await;
    for (host, from, want) in [
        ("open.test", Some("::1"), 403),
        ("allowed.test", Some("::1"), 403),
        ("allowed.test", Some("127.0.0.2"), 403),
        // Even where no route matches: the client is refused first.
        ("nowhere.test", Some("::1"), 403),
        ("open.test", Some("127.0.0.3"), 200),
        ("allowed.test", None, 200),
    ] {
        assert_eq!(status_from(&s, host, from).await, want, "{host} {from:?}");
    }
    assert_eq!(a.hits(), 2);
}
