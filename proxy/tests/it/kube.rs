//! The Kubernetes source, end to end: the real kube-rs client inside sluice talks to the
//! in-repo fake API server over plain HTTP on loopback.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::fake_apiserver::FakeApiServer;
use crate::support::*;

pub(crate) fn class() -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
           "metadata": {"name": "sluice"},
           "spec": {"controller": "sluice.dev/ingress-controller"}})
}

pub(crate) fn service_obj(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"ports": [{"name": "http", "port": 80}]}})
}

pub(crate) fn slice_obj(ns: &str, service: &str, name: &str, backends: &[&Backend]) -> Value {
    // One slice holds one port list: all backends of a slice share the first one's port.
    let port = backends.first().map(|b| b.addr.port()).unwrap_or(1);
    let endpoints: Vec<Value> = backends
        .iter()
        .map(|b| json!({"addresses": [b.addr.ip().to_string()], "conditions": {"ready": true}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": name, "namespace": ns,
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4",
           "ports": [{"name": "http", "port": port}],
           "endpoints": endpoints})
}

pub(crate) fn ingress_obj(ns: &str, name: &str, host: &str, service: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"ingressClassName": "sluice",
                    "rules": [{"host": host, "http": {"paths": [
                        {"path": "/", "pathType": "Prefix",
                         "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}})
}

/// A sluice on the kubernetes source; `ready` says whether to wait for readiness.
pub(crate) async fn start_kube(api: &FakeApiServer, identity: &str, ready: bool) -> Sluice {
    let dir = tempfile::tempdir().unwrap();
    let text = kube_settings_text(&test_settings(""), dir.path(), api, identity);
    Sluice::start_in(dir, &text, ready).await
}

/// Every kind sluice watches, as `sluice_watch_restarts_total` labels them, and the resource
/// each is listed as.
pub(crate) const KINDS: [(&str, &str); 6] = [
    ("Ingress", "ingresses"),
    ("IngressClass", "ingressclasses"),
    ("Service", "services"),
    ("EndpointSlice", "endpointslices"),
    ("Secret", "secrets"),
    ("Node", "nodes"),
];

/// Failed attempts of sluice's `kind` watcher so far (`sluice_watch_restarts_total`): each is
/// one refused or broken attempt to reach the API server, retried after backoff.
pub(crate) fn watch_restarts(s: &Sluice, kind: &str) -> u64 {
    s.running.as_ref().map_or(0, |r| {
        r.state
            .metrics()
            .watch_restarts
            .with_label_values(&[kind])
            .get()
    })
}

/// Waits until sluice's `kind` watcher has failed `n` times in all (see [`watch_restarts`]).
pub(crate) async fn wait_for_watch_restarts(s: &Sluice, kind: &str, n: u64, limit: Duration) {
    eventually(limit, &format!("{n} failed {kind} watch attempts"), || {
        let done = watch_restarts(s, kind) >= n;
        async move { done.then_some(()) }
    })
    .await;
}

/// Waits until the leader has renewed its Lease `n` times more (each renewal is a successful
/// Lease write the fake API server counts): a quiet period measured in the leader's own
/// progress, one renew period (1 s in these tests) per renewal, not in wall-clock time.
pub(crate) async fn wait_for_lease_renewals(api: &FakeApiServer, n: usize) {
    let since = api.write_count("leases");
    let renewed = api
        .wait_until(STEP, |a| a.write_count("leases") >= since + n)
        .await;
    assert!(
        renewed,
        "the leader renewed its Lease {} times, not {n}",
        api.write_count("leases") - since
    );
}

/// An API server with a class, and one Ingress `web` on host `web.test` to Service `web`
/// whose endpoints are `backends`.
pub(crate) async fn cluster(backends: &[&Backend]) -> FakeApiServer {
    let api = FakeApiServer::start().await;
    api.apply(class());
    api.apply(service_obj("default", "web"));
    api.apply(slice_obj("default", "web", "web-1", backends));
    api.apply(ingress_obj("default", "web", "web.test", "web"));
    api
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_come_from_the_api_server_and_follow_its_changes() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let api = cluster(&[&a]).await;
    let s = start_kube(&api, "one", true).await;
    assert_eq!(s.get("web.test", "/").await.backend(), "a");

    // A new Ingress and Service appear; an endpoint change moves traffic.
    api.apply(service_obj("default", "other"));
    api.apply(slice_obj("default", "other", "other-1", &[&b]));
    api.apply(ingress_obj("default", "other", "other.test", "other"));
    s.wait_for_backend("other.test", "/", "b").await;
    api.apply(slice_obj("default", "web", "web-1", &[&b]));
    s.wait_for_backend("web.test", "/", "b").await;

    // A deleted Ingress takes its route away.
    api.delete("networking.k8s.io/v1", "Ingress", "default", "other");
    let addr = s.addr;
    eventually(STEP, "other.test to be gone", || async move {
        (get(addr, "other.test", "/").await.status == 404).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_a_complete_list_of_every_kind() {
    let a = Backend::start("a").await;
    let api = cluster(&[&a]).await;
    api.set_available(false);
    let s = start_kube(&api, "one", false).await;
    // Observed while the API server is away, until every watcher has been refused twice (its
    // first attempt and a retry after backoff): never ready.
    let (admin, s_ref) = (s.admin, &s);
    eventually(STEP, "every watcher to be refused twice", || async move {
        assert_eq!(get(admin, "admin", "/readyz").await.status, 503);
        KINDS
            .iter()
            .all(|(kind, _)| watch_restarts(s_ref, kind) >= 2)
            .then_some(())
    })
    .await;
    api.set_available(true);
    eventually(STEP, "readiness", || async move {
        (get(admin, "admin", "/readyz").await.status == 200).then_some(())
    })
    .await;
    assert_eq!(s.get("web.test", "/").await.backend(), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_snapshot_serves_through_an_outage_and_changes_made_meanwhile_arrive_after() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let api = cluster(&[&a]).await;
    let s = start_kube(&api, "one", true).await;
    let lists_before = api.list_count("ingresses");
    let failed = watch_restarts(&s, "EndpointSlice");

    api.set_available(false);
    for _ in 0..20 {
        assert_eq!(s.get("web.test", "/").await.backend(), "a");
    }
    // The watcher meets the outage (its first refused attempt) before the change is made, so
    // the change cannot slip out through a stream that is still closing.
    wait_for_watch_restarts(&s, "EndpointSlice", failed + 1, STEP).await;
    // Changes while sluice cannot see them: an outage of a while (two more refused attempts,
    // either of which would have brought the change), not a sync.
    api.apply(slice_obj("default", "web", "web-1", &[&b]));
    wait_for_watch_restarts(&s, "EndpointSlice", failed + 3, STEP).await;
    assert_eq!(s.get("web.test", "/").await.backend(), "a");
    // Backoff keeps reconnection attempts few.
    assert!(api.list_count("ingresses") <= lists_before + 1);

    api.set_available(true);
    s.wait_for_backend("web.test", "/", "b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_expired_relist_drops_objects_deleted_while_the_watch_was_gone() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let api = cluster(&[&a]).await;
    api.apply(service_obj("default", "gone"));
    api.apply(slice_obj("default", "gone", "gone-1", &[&b]));
    api.apply(ingress_obj("default", "gone", "gone.test", "gone"));
    let s = start_kube(&api, "one", true).await;
    s.wait_for_backend("gone.test", "/", "b").await;

    // Forget history and delete without a watch event, then end the watches: the re-watch from
    // the old resourceVersion gets 410, and only the relist that follows can notice.
    // (Deleting after dropping the watches would race the relist.)
    api.compact();
    api.delete_silently("networking.k8s.io/v1", "Ingress", "default", "gone");
    api.drop_watches();
    let addr = s.addr;
    eventually(STEP, "the relist to drop gone.test", || async move {
        (get(addr, "gone.test", "/").await.status == 404).then_some(())
    })
    .await;
    assert_eq!(s.get("web.test", "/").await.backend(), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_churn_under_concurrent_load_fails_no_request() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let api = cluster(&[&backends[0]]).await;
    let s = start_kube(&api, "one", true).await;
    let load = Load::start(s.addr, "web.test", 4);
    // Churn: every slice update moves the Service to another single endpoint (each backend has
    // its own port, so one slice holds one backend at a time), 30 times.
    for i in 0..30 {
        let next = &backends[(i + 1) % backends.len()];
        api.apply(slice_obj("default", "web", "web-1", &[next]));
        s.wait_for_backend("web.test", "/", &next.name).await;
    }
    let succeeded = load.ok();
    let failures = load.stop().await;
    assert_no_failed_request(&failures);
    assert!(succeeded > 100, "{succeeded}");
    assert!(backends.iter().all(|b| b.hits() > 0));
}

/// The status patches the fake API server received, as (ingress name, body).
fn status_writes(api: &FakeApiServer) -> Vec<(String, Value)> {
    api.writes()
        .into_iter()
        .filter(|w| {
            w.method == "PATCH" && w.path.ends_with("/status") && w.path.contains("/ingresses/")
        })
        .map(|w| {
            let name = w
                .path
                .trim_end_matches("/status")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string();
            (name, w.body.clone())
        })
        .collect()
}

fn lb_status(api: &FakeApiServer, name: &str) -> Value {
    api.get("networking.k8s.io/v1", "Ingress", "default", name)
        .map(|o| o["status"]["loadBalancer"]["ingress"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_instances_writes_status_once_and_the_other_takes_over_when_it_stops() {
    let a = Backend::start("a").await;
    let api = cluster(&[&a]).await;
    let first = start_kube(&api, "first", true).await;
    let second = start_kube(&api, "second", true).await;
    let want = json!([{"ip": "192.0.2.10"}, {"hostname": "lb.example.test"}]);
    let status_of_web = || lb_status(&api, "web");
    eventually(STEP, "the status of web", || {
        let got = status_of_web();
        let want = want.clone();
        async move { (got == want).then_some(()) }
    })
    .await;
    // A few renew periods pass (three Lease renewals): nobody writes the same value again.
    wait_for_lease_renewals(&api, 3).await;
    let writes = status_writes(&api);
    assert_eq!(writes.len(), 1, "{writes:?}");
    let holder = api
        .get("coordination.k8s.io/v1", "Lease", "sluice", "sluice-test")
        .map(|l| {
            l["spec"]["holderIdentity"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    assert!(holder == "first" || holder == "second", "{holder}");

    // Stop the leader; the other one takes over and writes the next Ingress's status.
    let (mut leader, follower, follower_id) = if holder == "first" {
        (first, second, "second")
    } else {
        (second, first, "first")
    };
    leader.stop().await;
    api.apply(service_obj("default", "late"));
    api.apply(ingress_obj("default", "late", "late.test", "late"));
    eventually(
        Duration::from_secs(10),
        "the new leader to write late's status",
        || {
            let got = lb_status(&api, "late");
            let want = want.clone();
            async move { (got == want).then_some(()) }
        },
    )
    .await;
    // The handover never cleared web's status.
    assert_eq!(lb_status(&api, "web"), want);
    assert!(status_writes(&api)
        .iter()
        .all(|(_, body)| !body.to_string().contains("null")));
    let holder = api
        .get("coordination.k8s.io/v1", "Lease", "sluice", "sluice-test")
        .map(|l| {
            l["spec"]["holderIdentity"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    assert_eq!(holder, follower_id);
    drop(follower);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_no_longer_served_has_its_status_cleared() {
    let a = Backend::start("a").await;
    let api = cluster(&[&a]).await;
    let s = start_kube(&api, "one", true).await;
    let want = json!([{"ip": "192.0.2.10"}, {"hostname": "lb.example.test"}]);
    eventually(STEP, "the status of web", || {
        let got = lb_status(&api, "web");
        let want = want.clone();
        async move { (got == want).then_some(()) }
    })
    .await;
    let mut moved = ingress_obj("default", "web", "web.test", "web");
    moved["spec"]["ingressClassName"] = json!("someone-else");
    moved["status"] = json!({"loadBalancer": {"ingress": want}});
    api.apply(moved);
    eventually(STEP, "the status of web to be cleared", || {
        let got = lb_status(&api, "web");
        async move { got.is_null().then_some(()) }
    })
    .await;
    drop(s);
}

/// The Events the fake API server holds for an Ingress, as (type, reason).
pub(crate) fn events_for(api: &FakeApiServer, name: &str) -> Vec<(String, String)> {
    api.list("Event")
        .into_iter()
        .filter(|e| e["regarding"]["name"] == name || e["involvedObject"]["name"] == name)
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_rules_raise_one_warning_event_and_a_relist_raises_none() {
    let a = Backend::start("a").await;
    let api = cluster(&[&a]).await;
    api.apply(ingress_obj(
        "default",
        "broken",
        "broken.test",
        "no-such-service",
    ));
    let s = start_kube(&api, "one", true).await;
    let events = eventually(STEP, "a warning event on broken", || {
        let ev = events_for(&api, "broken");
        async move { ev.iter().any(|(t, _)| t == "Warning").then_some(ev) }
    })
    .await;
    assert!(
        events.contains(&("Warning".to_string(), "MissingService".to_string())),
        "{events:?}"
    );
    eventually(STEP, "a normal event on web", || {
        let ev = events_for(&api, "web");
        async move {
            ev.iter()
                .any(|(t, r)| t == "Normal" && r == "Served")
                .then_some(())
        }
    })
    .await;
    // The fake server logs a write after storing it: count only once the log holds both
    // Events, so a write still on its way is not mistaken for one raised by the relist.
    let api_ref = &api;
    let before = eventually(STEP, "both events in the write log", || {
        let events: Vec<Value> = api_ref
            .writes()
            .into_iter()
            .filter(|w| w.path.contains("events"))
            .map(|w| w.body)
            .collect();
        let logged = |name: &str, type_: &str| {
            events
                .iter()
                .any(|b| b["regarding"]["name"] == name && b["type"] == type_)
        };
        let done = logged("broken", "Warning") && logged("web", "Normal");
        async move { done.then_some(events.len()) }
    })
    .await;
    // A renew period passes with the leader's tasks running (two Lease renewals).
    wait_for_lease_renewals(&api, 2).await;
    assert_eq!(
        api.writes()
            .iter()
            .filter(|w| w.path.contains("events"))
            .count(),
        before,
        "events kept coming before the relist"
    );

    // A relist of everything: nothing new to say, once every kind has been listed again and a
    // renew period has passed (two Lease renewals).
    let lists: Vec<usize> = KINDS.iter().map(|(_, p)| api.list_count(p)).collect();
    api.compact();
    api.drop_watches();
    let relisted = api
        .wait_until(STEP, |a| {
            KINDS
                .iter()
                .zip(&lists)
                .all(|((_, plural), n)| a.list_count(plural) > *n)
        })
        .await;
    assert!(relisted, "not every kind was listed again");
    wait_for_lease_renewals(&api, 2).await;
    let after = api
        .writes()
        .iter()
        .filter(|w| w.path.contains("events"))
        .count();
    assert_eq!(before, after, "a relist raised events");
    drop(s);
}

/// A `kubernetes.io/tls` (or other type) Secret object with `cert` and the key of `key`.
fn tls_secret_obj(
    name: &str,
    type_: &str,
    cert: &crate::support::pki::Issued,
    key: &crate::support::pki::Issued,
) -> Value {
    let b64 = |s: String| openssl::base64::encode_block(s.as_bytes());
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": "default"}, "type": type_,
           "data": {"tls.crt": b64(cert.cert_pem()), "tls.key": b64(key.key_pem())}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_secrets_are_watched_rotated_and_a_broken_one_raises_a_warning_event() {
    use crate::support::pki::*;
    let ca = Ca::root("test root");
    let first = ca.issue(&Leaf::server("first", &["web.test"]));
    let second = ca.issue(&Leaf::server("second", &["web.test"]));
    let stranger = ca.issue(&Leaf::server("stranger", &["web.test"]).key(Key::P256));
    let a = Backend::start("a").await;
    let api = cluster(&[&a]).await;
    api.apply(tls_secret_obj(
        "web-tls",
        "kubernetes.io/tls",
        &first,
        &first,
    ));
    // Of another type: never watched, so the Ingress naming it hears it does not exist.
    api.apply(tls_secret_obj("opaque-tls", "Opaque", &second, &second));
    let mut ingress = ingress_obj("default", "web", "web.test", "web");
    ingress["spec"]["tls"] = json!([
        {"hosts": ["web.test"], "secretName": "web-tls"},
        {"hosts": ["opaque.test"], "secretName": "opaque-tls"}
    ]);
    api.apply(ingress);
    let dir = tempfile::tempdir().unwrap();
    let text = kube_settings_text(&test_settings(""), dir.path(), &api, "one")
        + "[tls]\nhttps_listen = [\"127.0.0.1:0\"]\n";
    let s = Sluice::start_in(dir, &text, true).await;
    let addr = s.https.expect("an HTTPS listener");
    let cn = |name: &'static str| async move { served(addr, &ClientTls::sni(name)).await.cn };
    assert_eq!(cn("web.test").await, "first");
    assert_eq!(cn("opaque.test").await, "sluice default certificate");
    let (r, _) = https_get(addr, &ClientTls::sni("web.test"), "web.test", "/")
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // Rotated through the watch: the next handshake has it.
    api.apply(tls_secret_obj(
        "web-tls",
        "kubernetes.io/tls",
        &second,
        &second,
    ));
    eventually(STEP, "the rotated certificate", || async move {
        (cn("web.test").await == "second").then_some(())
    })
    .await;
    // A key that is not the certificate's: the default certificate, and a Warning Event.
    api.apply(tls_secret_obj(
        "web-tls",
        "kubernetes.io/tls",
        &first,
        &stranger,
    ));
    eventually(STEP, "the default certificate", || async move {
        (cn("web.test").await == "sluice default certificate").then_some(())
    })
    .await;
    eventually(STEP, "Warning Events for both Secrets", || {
        let ev = events_for(&api, "web");
        let warned = |reason: &str| ev.iter().any(|(t, r)| t == "Warning" && r == reason);
        let both = warned("InvalidSecret") && warned("MissingSecret");
        async move { both.then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_spec_tls_entry_for_an_owned_host_raises_a_warning_event_and_changes_nothing() {
    use crate::support::pki::*;
    let ca = Ca::root("test root");
    let owner = ca.issue(&Leaf::server("owner", &["web.test"]));
    // Stronger than the owner's: without ownership it would be chosen for web.test.
    let attacker = ca.issue(&Leaf::server("attacker", &["web.test"]).key(Key::P384));
    let a = Backend::start("a").await;
    let api = cluster(&[&a]).await;
    api.apply(tls_secret_obj(
        "web-tls",
        "kubernetes.io/tls",
        &owner,
        &owner,
    ));
    let mut web = ingress_obj("default", "web", "web.test", "web");
    web["spec"]["tls"] = json!([{"hosts": ["web.test"], "secretName": "web-tls"}]);
    api.apply(web);
    let mut secret = tls_secret_obj("squat-tls", "kubernetes.io/tls", &attacker, &attacker);
    secret["metadata"]["namespace"] = json!("tenant-b");
    api.apply(secret);
    api.apply(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "squat", "namespace": "tenant-b"},
        "spec": {"ingressClassName": "sluice",
                 "tls": [{"hosts": ["web.test"], "secretName": "squat-tls"}]}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let text = kube_settings_text(&test_settings(""), dir.path(), &api, "one")
        + "[tls]\nhttps_listen = [\"127.0.0.1:0\"]\n";
    let s = Sluice::start_in(dir, &text, true).await;
    eventually(
        STEP,
        "a HostNotOwned Warning Event on the foreign Ingress",
        || {
            let warned = events_for(&api, "squat")
                .iter()
                .any(|(t, r)| t == "Warning" && r == "HostNotOwned");
            async move { warned.then_some(()) }
        },
    )
    .await;
    let addr = s.https.expect("an HTTPS listener");
    assert_eq!(served(addr, &ClientTls::sni("web.test")).await.cn, "owner");
    assert!(events_for(&api, "web").iter().all(|(t, _)| t != "Warning"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_can_copy_the_load_balancer_of_a_published_service() {
    let a = Backend::start("a").await;
    let api = cluster(&[&a]).await;
    let dir = tempfile::tempdir().unwrap();
    let text = kube_settings_text(&test_settings(""), dir.path(), &api, "one").replace(
        "addresses = [\"192.0.2.10\", \"lb.example.test\"]",
        "publish_service = \"sluice/sluice\"",
    );
    let s = Sluice::start_in(dir, &text, true).await;
    // The published Service gets its load-balancer address; served Ingresses copy it.
    let mut lb = service_obj("sluice", "sluice");
    lb["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}});
    api.apply(lb);
    eventually(STEP, "web to get the published address", || {
        let got = lb_status(&api, "web");
        async move { (got == json!([{"ip": "203.0.113.5"}])).then_some(()) }
    })
    .await;
    drop(s);
}
