//! How requests spread over the endpoints of a Service: each balancing algorithm over real
//! loopback backends.
//!
//! Balancing does not depend on where the objects come from, so these run on the files source
//! only.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;

/// One Ingress for any host, `/` to `web`, with `annotations`.
fn web_ingress(annotations: &[(&str, &str)]) -> String {
    annotate(
        &ingress("default", "web", None, &[("/", "Prefix", "web")]),
        annotations,
    )
}

async fn start_four(annotations: &[(&str, &str)]) -> (Vec<Backend>, Sluice) {
    let mut backends = Vec::new();
    for name in ["a", "b", "c", "d"] {
        backends.push(Backend::start(name).await);
    }
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let manifests = [
        service_with("default", "web", &addrs),
        web_ingress(annotations),
    ]
    .concat();
    (backends, Sluice::start(&manifests).await)
}

/// Sends `total` requests from `workers` concurrent keepalive connections.
async fn load(s: &Sluice, workers: usize, total: usize) {
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            let mut conn = H1::connect(addr).await;
            for _ in 0..total / workers {
                let r = conn.get("x", "/").await.unwrap();
                assert_eq!(r.status, 200, "{}", r.body);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_evenly_over_four_endpoints() {
    let (backends, s) = start_four(&[("sluice.dev/load-balance", "round-robin")]).await;
    load(&s, 4, 400).await;
    for b in &backends {
        // Even within 5% of the fair share of 100.
        assert!((95..=105).contains(&b.hits()), "{}: {}", b.name, b.hits());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_steers_away_from_a_slow_endpoint() {
    let (backends, s) = start_four(&[("sluice.dev/load-balance", "least-request")]).await;
    backends[0].set_delay(Duration::from_millis(800));
    load(&s, 4, 120).await;
    let slow = backends[0]
        .arrivals
        .load(std::sync::atomic::Ordering::SeqCst);
    // Round robin would send it 30 (a quarter); the slow endpoint keeps a request in flight for
    // longer, so the power of two choices prefers the others. (Switching the annotation to
    // round-robin makes this fail.) The margin allows for a loaded machine, where the fast
    // endpoints' requests are in flight for longer too and more picks are ties.
    assert!(slow <= 20, "the slow endpoint got {slow} of 120");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ewma_steers_away_from_a_slow_endpoint_even_one_request_at_a_time() {
    let (backends, s) = start_four(&[("sluice.dev/load-balance", "ewma")]).await;
    backends[0].set_delay(Duration::from_millis(100));
    // One request at a time: nothing is ever in flight when an endpoint is picked, so only
    // latency tells the slow endpoint apart. (Switching the annotation to least-request, which
    // then sends it a quarter, makes this fail.)
    load(&s, 1, 60).await;
    let slow = backends[0]
        .arrivals
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(slow <= 3, "the slow endpoint got {slow} of 60");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistent_hash_keeps_its_keys_when_an_unrelated_endpoint_goes() {
    let (backends, s) = start_four(&[("sluice.dev/hash-by", "$http_x_user")]).await;
    let mut conn = H1::connect(s.addr).await;
    let mut owner = BTreeMap::new();
    for user in 0..40 {
        let mut req = request("x", "/");
        req.headers_mut()
            .insert("x-user", format!("user-{user}").parse().unwrap());
        let first = conn.send(req).await.unwrap().backend();
        // The same key goes to the same endpoint.
        for _ in 0..3 {
            let mut req = request("x", "/");
            req.headers_mut()
                .insert("x-user", format!("user-{user}").parse().unwrap());
            assert_eq!(conn.send(req).await.unwrap().backend(), first);
        }
        owner.insert(user, first);
    }
    assert!(
        owner.values().any(|b| b == "d") && owner.values().any(|b| b != "d"),
        "{owner:?}"
    );
    // Endpoint d goes.
    let addrs: Vec<_> = backends[..3].iter().map(|b| b.addr).collect();
    s.write_manifest(
        "routes.yaml",
        &[
            service_with("default", "web", &addrs),
            web_ingress(&[("sluice.dev/hash-by", "$http_x_user")]),
        ]
        .concat(),
    );
    let moved = *owner.iter().find(|(_, b)| *b == "d").unwrap().0;
    let addr = s.addr;
    eventually(STEP, "endpoint d to leave the pool", || async move {
        let mut req = request("x", "/");
        req.headers_mut()
            .insert("x-user", format!("user-{moved}").parse().unwrap());
        let r = H1::connect(addr).await.send(req).await.unwrap();
        (r.backend() != "d").then_some(())
    })
    .await;
    for (user, was) in &owner {
        let mut req = request("x", "/");
        req.headers_mut()
            .insert("x-user", format!("user-{user}").parse().unwrap());
        let now = conn.send(req).await.unwrap().backend();
        if was != "d" {
            assert_eq!(&now, was, "user-{user} moved although its endpoint stayed");
        }
    }
    // A request without the key is still answered.
    assert_eq!(conn.get("x", "/").await.unwrap().status, 200);
}

/// A GET for `/` that sends `cookie` when given.
fn with_cookie(cookie: Option<&str>) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = request("x", "/");
    if let Some(c) = cookie {
        req.headers_mut().insert("cookie", c.parse().unwrap());
    }
    req
}

/// The `name=value` part of the response's Set-Cookie, if any.
fn set_cookie(r: &Reply) -> Option<String> {
    r.headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_affinity_cookie_sticks_to_its_endpoint_while_it_stays_ready() {
    let annotations = [
        ("sluice.dev/affinity", "cookie"),
        ("sluice.dev/session-cookie-name", "route"),
        ("sluice.dev/session-cookie-max-age", "1h"),
    ];
    let (backends, s) = start_four(&annotations).await;
    let mut conn = H1::connect(s.addr).await;
    let first = conn.send(with_cookie(None)).await.unwrap();
    let full = first.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(full.starts_with("route="), "{full}");
    assert!(
        full.contains("Max-Age=3600") && full.contains("HttpOnly"),
        "{full}"
    );
    let cookie = set_cookie(&first).unwrap();
    let home = first.backend();
    // Round robin alone would visit every endpoint in these 12 requests; the cookie holds.
    for _ in 0..12 {
        let r = conn.send(with_cookie(Some(&cookie))).await.unwrap();
        assert_eq!(r.backend(), home);
        assert_eq!(set_cookie(&r), None, "a valid cookie is not set again");
    }
    // Other cookies in the same header do not get in the way.
    let r = conn
        .send(with_cookie(Some(&format!("theme=dark; {cookie}; x=1"))))
        .await
        .unwrap();
    assert_eq!(r.backend(), home);

    // The home endpoint stops being ready: the client moves, and gets a new cookie.
    let others: Vec<_> = backends.iter().filter(|b| b.name != home).collect();
    let home_addr = backends.iter().find(|b| b.name == home).unwrap().addr;
    let mut manifests = service("default", "web");
    manifests.push_str(&slice("default", "web", &[(home_addr, Some(false))]));
    for b in &others {
        manifests.push_str(&slice("default", "web", &[(b.addr, Some(true))]));
    }
    manifests.push_str(&web_ingress(&annotations));
    s.write_manifest("routes.yaml", &manifests);
    let addr = s.addr;
    let moved = eventually(STEP, "the home endpoint to leave the pool", || {
        let cookie = cookie.clone();
        let home = home.clone();
        async move {
            let r = H1::connect(addr)
                .await
                .send(with_cookie(Some(&cookie)))
                .await
                .unwrap();
            (r.backend() != home).then_some(r)
        }
    })
    .await;
    let new_cookie = set_cookie(&moved).expect("a new cookie for the new endpoint");
    assert_ne!(new_cookie, cookie);
    for _ in 0..6 {
        let r = conn.send(with_cookie(Some(&new_cookie))).await.unwrap();
        assert_eq!(r.backend(), moved.backend());
    }
    // A cookie that names nothing is replaced, and the request is still served.
    let r = conn.send(with_cookie(Some("route=zzz"))).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(set_cookie(&r).is_some());
}

/// The value of `sluice_pool_endpoints` for web's `state`.
async fn pool_gauge(s: &Sluice, state: &str) -> i64 {
    let text = get(s.admin, "admin", "/metrics").await.body;
    let series = format!(
        "sluice_pool_endpoints{{namespace=\"default\",port=\"80\",service=\"web\",state=\"{state}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_5xx_is_ejected_and_comes_back_when_it_recovers() {
    let (backends, s) = {
        let mut backends = Vec::new();
        for name in ["a", "b", "c"] {
            backends.push(Backend::start(name).await);
        }
        let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
        let manifests = [service_with("default", "web", &addrs), web_ingress(&[])].concat();
        let settings = test_settings(
            "eject_consecutive_failures = 3\neject_base_ms = 1000\neject_max_ms = 1000",
        );
        (backends, Sluice::start_with(&manifests, &settings).await)
    };
    backends[1].set_status(503);
    let mut conn = H1::connect(s.addr).await;
    let mut errors = 0;
    for _ in 0..30 {
        if conn.get("x", "/").await.unwrap().status != 200 {
            errors += 1;
        }
    }
    // Three 503s in a row eject b; the other 27 requests go to a and c. (With
    // eject_consecutive_failures = 0, b keeps a third of the requests and this fails.)
    assert_eq!(errors, 3);
    assert_eq!(
        backends[1]
            .arrivals
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    assert_eq!(pool_gauge(&s, "ejected").await, 1);
    assert_eq!(pool_gauge(&s, "ready").await, 2);

    // b recovers; once its ejection is over it gets requests again.
    backends[1].set_status(200);
    let addr = s.addr;
    let b_hits = backends[1].hits.clone();
    let before = backends[1].hits();
    eventually(STEP, "b to come back", || {
        let b_hits = b_hits.clone();
        async move {
            assert_eq!(get(addr, "x", "/").await.status, 200);
            (b_hits.load(std::sync::atomic::Ordering::SeqCst) > before).then_some(())
        }
    })
    .await;
    assert_eq!(pool_gauge(&s, "ejected").await, 0);
    assert_eq!(pool_gauge(&s, "ready").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_endpoint_is_never_ejected() {
    let a = Backend::start("a").await;
    a.set_status(500);
    let manifests = [service_with("default", "web", &[a.addr]), web_ingress(&[])].concat();
    let settings = test_settings(
        "eject_consecutive_failures = 1\neject_base_ms = 60000\neject_max_ms = 60000",
    );
    let s = Sluice::start_with(&manifests, &settings).await;
    for _ in 0..5 {
        // The backend's own 500 reaches the client: not a 502 or 503 from sluice.
        let r = s.get("x", "/").await;
        assert_eq!(r.status, 500);
        assert_eq!(r.backend(), "a");
    }
    assert_eq!(a.hits(), 5);
    assert_eq!(pool_gauge(&s, "ejected").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_refusing_connections_is_ejected_and_stops_costing_retries() {
    let a = Backend::start("a").await;
    let dead = dead_addr().await;
    let manifests = [
        service("default", "web"),
        slice("default", "web", &[(dead, Some(true))]),
        slice("default", "web", &[(a.addr, Some(true))]),
        web_ingress(&[]),
    ]
    .concat();
    let settings = test_settings(
        "eject_consecutive_failures = 2\neject_base_ms = 60000\neject_max_ms = 60000",
    );
    let s = Sluice::start_with(&manifests, &settings).await;
    for _ in 0..20 {
        assert_eq!(s.get("x", "/").await.status, 200);
    }
    assert_eq!(pool_gauge(&s, "ejected").await, 1);
    // Two failed connects ejected the dead endpoint; no request tried it afterwards. (With
    // eject_consecutive_failures = 0 every other request pays a failed connect: 10.)
    let text = get(s.admin, "admin", "/metrics").await.body;
    let errors = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "sluice_upstream_connect_errors_total{ingress=\"web\",namespace=\"default\",service=\"web\"} ",
            )
        })
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(errors, Some(2.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_default_algorithm_applies_to_routes_whose_ingress_names_none() {
    let mut backends = Vec::new();
    for name in ["a", "b", "c", "d"] {
        backends.push(Backend::start(name).await);
    }
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let manifests = [service_with("default", "web", &addrs), web_ingress(&[])].concat();
    let s = Sluice::start_with(&manifests, &test_settings("load_balance = \"ewma\"")).await;
    backends[0].set_delay(Duration::from_millis(100));
    load(&s, 1, 60).await;
    let slow = backends[0]
        .arrivals
        .load(std::sync::atomic::Ordering::SeqCst);
    // Round robin, the built-in default, would send it 15.
    assert!(slow <= 3, "the slow endpoint got {slow} of 60");
}
