//! What the backend receives: forwarding headers added, the client's Host kept, hop-by-hop
//! headers removed.

use crate::support::*;

async fn one_backend() -> (Backend, Sluice) {
    let a = Backend::start("a").await;
    let manifests = [
        service_with("default", "svc-a", &[a.addr]),
        ingress("default", "one", None, &[("/", "Prefix", "svc-a")]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    (a, s)
}

#[tokio::test]
async fn forwarding_headers_describe_the_client_and_the_original_request() {
    let (_a, s) = one_backend().await;
    let r = s.get("App.Test:8443", "/x").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("host"), vec!["App.Test:8443"]);
    assert_eq!(r.upstream_header("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(r.upstream_header("x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(r.upstream_header("x-forwarded-proto"), vec!["http"]);
    assert_eq!(r.upstream_header("x-forwarded-host"), vec!["App.Test:8443"]);
    assert_eq!(
        r.upstream_header("x-forwarded-port"),
        vec![s.addr.port().to_string()]
    );
}

#[tokio::test]
async fn an_existing_forwarded_for_is_appended_to_and_spoofed_values_are_replaced() {
    let (_a, s) = one_backend().await;
    let mut req = request("x", "/");
    let h = req.headers_mut();
    h.insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
    h.insert("x-real-ip", "198.51.100.1".parse().unwrap());
    h.insert("x-forwarded-proto", "https".parse().unwrap());
    h.insert("x-forwarded-port", "1".parse().unwrap());
    let r = H1::connect(s.addr).await.send(req).await.unwrap();
    assert_eq!(
        r.upstream_header("x-forwarded-for"),
        vec!["203.0.113.7, 127.0.0.1"]
    );
    assert_eq!(r.upstream_header("x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(r.upstream_header("x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        r.upstream_header("x-forwarded-port"),
        vec![s.addr.port().to_string()]
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (_a, s) = one_backend().await;
    let mut req = request("x", "/");
    let h = req.headers_mut();
    h.insert("connection", "keep-alive, x-hop".parse().unwrap());
    h.insert("x-hop", "1".parse().unwrap());
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert("proxy-connection", "keep-alive".parse().unwrap());
    h.insert("te", "trailers".parse().unwrap());
    h.insert("x-end-to-end", "kept".parse().unwrap());
    let r = H1::connect(s.addr).await.send(req).await.unwrap();
    assert_eq!(r.status, 200);
    for hop in ["x-hop", "keep-alive", "proxy-connection", "te"] {
        assert!(
            r.upstream_header(hop).is_empty(),
            "{hop} was forwarded: {}",
            r.body
        );
    }
    assert_eq!(r.upstream_header("x-end-to-end"), vec!["kept"]);
}
