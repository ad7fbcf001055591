//! What an operator sees: metrics after known traffic, access-log lines, request ids.

use crate::support::*;

#[tokio::test]
async fn metrics_count_known_traffic_by_route_and_status_class() {
    let a = Backend::start("a").await;
    let manifests = [
        service_with("shop", "api", &[a.addr]),
        ingress("shop", "web", Some("shop.test"), &[("/", "Prefix", "api")]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    for _ in 0..3 {
        assert_eq!(s.get("shop.test", "/x").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(s.get("nowhere.test", "/").await.status, 404);
    }
    // Requests are counted as they finish, just after their responses are sent.
    let text = eventually(STEP, "the counts of five requests", || async {
        let text = scrape(&s).await;
        let ok = sample(&text, "sluice_requests_total{ingress=\"web\",method=\"GET\",namespace=\"shop\",service=\"api\",status_class=\"2xx\"}");
        let missing = sample(&text, "sluice_requests_total{ingress=\"\",method=\"GET\",namespace=\"\",service=\"\",status_class=\"4xx\"}");
        (ok == Some(3.0) && missing == Some(2.0)).then_some(text)
    })
    .await;
    assert_eq!(
        sample(&text, "sluice_request_duration_seconds_count{ingress=\"web\",namespace=\"shop\",service=\"api\"}"),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "sluice_upstream_duration_seconds_count{ingress=\"web\",namespace=\"shop\",service=\"api\"}"),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "sluice_pool_endpoints{namespace=\"shop\",port=\"80\",service=\"api\",state=\"ready\"}"
        ),
        Some(1.0)
    );
    assert!(sample(&text, "sluice_last_sync_timestamp_seconds").unwrap_or(0.0) > 1.0e9);
    // Every client above has closed its connection (scrapes go to the admin listener)...
    let admin = s.admin;
    let open = |want: f64| async move {
        let text = get(admin, "admin", "/metrics").await.body;
        (sample(&text, "sluice_downstream_connections_open") == Some(want)).then_some(())
    };
    eventually(STEP, "no open connection", || open(0.0)).await;
    // ...and an idle keepalive connection counts while it is open.
    let mut conn = H1::connect(s.addr).await;
    assert_eq!(conn.get("shop.test", "/").await.unwrap().status, 200);
    eventually(STEP, "one open connection", || open(1.0)).await;
    drop(conn);
    eventually(STEP, "the connection to close", || open(0.0)).await;
    // No raw path, host or client address becomes a label.
    for leak in ["/x", "nowhere.test", "127.0.0.1"] {
        assert!(!text.contains(leak), "{leak} leaked into the metrics");
    }
}

#[tokio::test]
async fn connect_errors_and_retries_are_counted() {
    let a = Backend::start("a").await;
    let dead = dead_addr().await;
    let manifests = [
        service("default", "web"),
        slice("default", "web", &[(dead, Some(true))]),
        slice("default", "web", &[(a.addr, Some(true))]),
        ingress("default", "web", None, &[("/", "Prefix", "web")]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    for _ in 0..4 {
        assert_eq!(s.get("x", "/").await.status, 200);
    }
    let text = eventually(STEP, "four counted requests", || async {
        let text = scrape(&s).await;
        let n = sample(&text, "sluice_requests_total{ingress=\"web\",method=\"GET\",namespace=\"default\",service=\"web\",status_class=\"2xx\"}");
        (n == Some(4.0)).then_some(text)
    })
    .await;
    let labels = "{ingress=\"web\",namespace=\"default\",service=\"web\"}";
    // Some requests try the dead endpoint first (how many depends on the balancer's rotation);
    // each such failed connect was retried on the live one.
    let errors = sample(
        &text,
        &format!("sluice_upstream_connect_errors_total{labels}"),
    )
    .unwrap();
    let retries = sample(&text, &format!("sluice_upstream_retries_total{labels}")).unwrap();
    assert!((1.0..=4.0).contains(&errors), "{text}");
    assert_eq!(errors, retries, "{text}");
    assert_eq!(a.hits(), 4);
}

#[tokio::test]
async fn every_request_gets_one_parseable_access_log_line() {
    let a = Backend::start("a").await;
    let manifests = [
        service_with("shop", "api", &[a.addr]),
        ingress("shop", "web", Some("shop.test"), &[("/", "Prefix", "api")]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let ok = s.get("shop.test", "/items?page=2").await;
    assert_eq!(ok.status, 200);
    assert_eq!(s.get("nowhere.test", "/").await.status, 404);
    let log = s.access_log.clone();
    let lines = eventually(STEP, "two access-log lines", || {
        let lines = log.lines();
        async move { (lines.len() >= 2).then_some(lines) }
    })
    .await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let entries: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let hit = entries.iter().find(|e| e["status"] == 200).unwrap();
    assert_eq!(hit["method"], "GET");
    assert_eq!(hit["host"], "shop.test");
    assert_eq!(hit["path"], "/items?page=2");
    assert_eq!(hit["namespace"], "shop");
    assert_eq!(hit["ingress"], "web");
    assert_eq!(hit["service"], "api");
    assert_eq!(hit["upstream"], a.addr.to_string());
    assert_eq!(hit["client"], "127.0.0.1");
    assert!(hit["duration_s"].as_f64().unwrap() >= hit["upstream_duration_s"].as_f64().unwrap());
    // The id in the log is the one the backend received.
    assert_eq!(
        hit["request_id"].as_str().unwrap(),
        ok.upstream_header("x-request-id")[0]
    );
    assert_eq!(hit["request_id"].as_str().unwrap().len(), 32);
    let miss = entries.iter().find(|e| e["status"] == 404).unwrap();
    assert!(miss["upstream"].is_null());
    assert!(miss["upstream_duration_s"].is_null());
}

#[tokio::test]
async fn a_request_id_is_kept_only_from_trusted_proxies() {
    let a = Backend::start("a").await;
    let manifests = [
        service_with("default", "svc-a", &[a.addr]),
        ingress("default", "one", None, &[("/", "Prefix", "svc-a")]),
    ]
    .concat();
    let with_id = || {
        let mut req = request("x", "/");
        req.headers_mut()
            .insert("x-request-id", "trace-42".parse().unwrap());
        req
    };
    // Loopback is a trusted proxy here: its id is passed upstream unchanged.
    let trusting = test_settings("").replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.0/8\"]\n",
    );
    let s = Sluice::start_with(&manifests, &trusting).await;
    let r = H1::connect(s.addr).await.send(with_id()).await.unwrap();
    assert_eq!(r.upstream_header("x-request-id"), vec!["trace-42"]);
    let other = s.get("x", "/").await.upstream_header("x-request-id");
    assert_eq!(other.len(), 1);
    assert_ne!(other[0], "trace-42");
    // By default no peer is trusted: a client cannot choose the id logs correlate by.
    // (Trusting every peer again, as before `server.trusted_proxies`, makes this fail.)
    let s = Sluice::start(&manifests).await;
    let r = H1::connect(s.addr).await.send(with_id()).await.unwrap();
    let id = r.upstream_header("x-request-id");
    assert_eq!(id.len(), 1);
    assert_ne!(id[0], "trace-42");
    assert_eq!(id[0].len(), 32);
}

#[tokio::test]
async fn the_access_log_can_be_combined_or_off() {
    let a = Backend::start("a").await;
    let manifests = [
        service_with("default", "svc-a", &[a.addr]),
        ingress("default", "one", None, &[("/", "Prefix", "svc-a")]),
    ]
    .concat();
    let combined = Sluice::start_with(
        &manifests,
        &(test_settings("") + "[access_log]\nformat = \"combined\"\n"),
    )
    .await;
    assert_eq!(combined.get("x", "/c").await.status, 200);
    let log = combined.access_log.clone();
    let line = eventually(STEP, "a combined line", || {
        let lines = log.lines();
        async move { lines.first().cloned() }
    })
    .await;
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains("\"GET /c HTTP/1.1\" 200 "), "{line}");
    assert!(line.contains(" default/one/svc-a "), "{line}");

    let off = Sluice::start_with(
        &manifests,
        &(test_settings("") + "[access_log]\nenabled = false\n"),
    )
    .await;
    assert_eq!(off.get("x", "/").await.status, 200);
    // The metrics scrape is a second request through another listener; by then a line for the
    // first would have been queued.
    scrape(&off).await;
    assert!(off.access_log.lines().is_empty());
}
