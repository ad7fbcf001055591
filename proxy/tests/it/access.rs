//! Who may reach a route: the real client address behind trusted proxies, over real loopback
//! sockets.

use crate::support::*;
use crate::tls::{https, tls_ingress_in, tls_settings};

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
    let manifests = [
        service_with("default", "web", &[a.addr]),
        tls_ingress_in(
            "default",
            "secure",
            None,
            &[("secure.test", "web")],
            &[(&["secure.test"], None)],
            &[],
        ),
    ]
    .concat();
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
