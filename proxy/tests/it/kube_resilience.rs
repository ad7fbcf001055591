//! The Kubernetes source under strain: Ingress churn against the Event writer, and an API
//! server that goes away and comes back.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::kube::{
    class, cluster, events_for, ingress_obj, service_obj, slice_obj, start_kube,
    wait_for_watch_restarts, watch_restarts,
};
use crate::support::fake_apiserver::FakeApiServer;
use crate::support::*;

/// Event writes the fake API server has answered.
fn event_posts(api: &FakeApiServer) -> usize {
    api.writes()
        .iter()
        .filter(|w| w.method == "POST" && w.path.contains("/events"))
        .count()
}

/// The names, starting with `prefix`, of Ingresses that have at least one Event.
fn ingresses_with_events(api: &FakeApiServer, prefix: &str) -> BTreeSet<String> {
    api.list("Event")
        .into_iter()
        .filter_map(|e| e["regarding"]["name"].as_str().map(str::to_string))
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// 40 broken Ingresses appear at once with room for 10 waiting and 5 Events per second: the
/// writer keeps its pace (not 40 Events at once), sheds the oldest and counts them (every
/// Ingress ends either with its Events written or counted as dropped), and an Ingress fixed
/// while it waited gets no Warning about its old state (newest wins). (Writing every Event of a
/// report at once, as before, makes the pace check fail.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_ingress_churn_events_are_paced_coalesced_and_shed_oldest_first() {
    let a = Backend::start("a").await;
    let api = cluster(&[&a]).await;
    let dir = tempfile::tempdir().unwrap();
    let text = kube_settings_text(&test_settings(""), dir.path(), &api, "one")
        + "events_per_second = 5\nevents_max_pending = 10\n";
    let s = Sluice::start_in(dir, &text, true).await;
    eventually(STEP, "the leader's first Event", || {
        let ev = events_for(&api, "web");
        async move { (!ev.is_empty()).then_some(()) }
    })
    .await;
    let before = event_posts(&api);
    let started = Instant::now();
    for i in 0..40 {
        api.apply(ingress_obj(
            "preview",
            &format!("broken-{i:02}"),
            &format!("b{i}.test"),
            "no-such-service",
        ));
    }
    // One more, broken while it waits behind the others, then fixed before its turn.
    api.apply(ingress_obj("preview", "flip", "flip.test", "flip"));
    eventually(STEP, "flip published as broken", || {
        let broken = s.skipped().iter().any(|k| k.ingress.name == "flip");
        async move { broken.then_some(()) }
    })
    .await;
    api.apply(service_obj("preview", "flip"));
    eventually(STEP, "flip published as fixed", || {
        let broken = s.skipped().iter().any(|k| k.ingress.name == "flip");
        async move { (!broken).then_some(()) }
    })
    .await;
    // The pace: one second's worth at once, then 5 per second (and a little slack).
    let window = Duration::from_secs(1);
    if let Some(rest) = window.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let early = event_posts(&api) - before;
    let allowed = 5 + (5.0 * started.elapsed().as_secs_f64()).ceil() as usize + 1;
    assert!(
        early <= allowed,
        "{early} Events within {:?}",
        started.elapsed()
    );
    // Every broken Ingress ends with its Events written or counted as dropped.
    let api_ref = &api;
    let s_ref = &s;
    let deadline = Instant::now() + STEP;
    let (written, dropped) = loop {
        let written = ingresses_with_events(api_ref, "broken-").len();
        let dropped = sample(&scrape(s_ref).await, "sluice_events_dropped_total").unwrap_or(0.0);
        if written + dropped as usize == 40 {
            break (written, dropped);
        }
        assert!(
            Instant::now() < deadline,
            "{written} broken Ingresses with Events, {dropped} dropped, {} posts",
            event_posts(api_ref) - before
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(dropped >= 20.0, "{written} written, {dropped} dropped");
    // flip waited behind them; when its turn comes it gets its Normal Event (served), never the
    // Warning about the Service it no longer lacks (checked until then and once after).
    eventually(STEP, "flip's turn", || {
        let events = events_for(api_ref, "flip");
        assert!(!events.iter().any(|(t, _)| t == "Warning"), "{events:?}");
        async move { events.iter().any(|(t, _)| t == "Normal").then_some(()) }
    })
    .await;
    let events = events_for(&api, "flip");
    assert!(!events.iter().any(|(t, _)| t == "Warning"), "{events:?}");
}

/// A change made while the API server is away is served within a few seconds of its return,
/// however long it was away: the watchers' backoff is capped at 3 s. The outage lasts until the
/// watcher has been refused five times after the change, its backoff at the cap by then.
/// (kube-rs's default backoff, which grows to 30 s, would be waiting up to ~25 s by then.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_during_an_api_server_outage_is_served_within_seconds_of_its_return() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let api = cluster(&[&a]).await;
    let s = start_kube(&api, "one", true).await;
    api.set_available(false);
    // Every watch has ended before the change is made, so only a new watch can bring it.
    let closed = api
        .wait_until(STEP, |a| a.open_watches("endpointslices") == 0)
        .await;
    assert!(closed, "the watches did not end");
    // The server counts a watch closed when it ends the stream; the connection task may still
    // flush a last event. The watcher's first refused retry proves it has seen the stream end
    // and now meets the outage, so nothing applied from here on can reach it.
    let met = watch_restarts(&s, "EndpointSlice") + 1;
    wait_for_watch_restarts(&s, "EndpointSlice", met, STEP).await;
    api.apply(slice_obj("default", "web", "web-1", &[&b]));
    // A long outage: five more refused attempts, by which the backoff has grown to its cap
    // (waits of up to 0.8, 1.6, 3, 3 and 3 s; kube-rs's default would reach 25 s). The last
    // good snapshot serves throughout, checked at every failed attempt.
    let s_ref = &s;
    let mut seen = met;
    eventually(
        Duration::from_secs(20),
        "five more refused attempts",
        || {
            let failed = watch_restarts(s_ref, "EndpointSlice");
            let check = failed > seen;
            seen = failed;
            async move {
                if check {
                    assert_eq!(s_ref.get("web.test", "/").await.backend(), "a");
                }
                (failed >= met + 5).then_some(())
            }
        },
    )
    .await;
    assert_eq!(s.get("web.test", "/").await.backend(), "a");
    api.set_available(true);
    let back = Instant::now();
    s.wait_for_backend("web.test", "/", "b").await;
    assert!(
        back.elapsed() < Duration::from_secs(5),
        "the change was served {:?} after the API server returned",
        back.elapsed()
    );
}

/// With `source.kubernetes.namespaces` listed, sluice watches those namespaces only (one watcher
/// each, as a namespace-scoped Role allows): their Ingresses are served and follow changes, an
/// Ingress elsewhere is not, and readiness waited for every listed namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_namespaces_listed_only_their_ingresses_are_served() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let api = FakeApiServer::start().await;
    api.apply(class());
    for (ns, backend) in [("team-a", &a), ("team-b", &b), ("other", &c)] {
        api.apply(service_obj(ns, "web"));
        api.apply(slice_obj(ns, "web", "web-1", &[backend]));
        api.apply(ingress_obj(ns, "web", &format!("{ns}.test"), "web"));
    }
    let dir = tempfile::tempdir().unwrap();
    let text = kube_settings_text(&test_settings(""), dir.path(), &api, "one").replace(
        "[source.kubernetes]\n",
        "[source.kubernetes]\nnamespaces = [\"team-a\", \"team-b\"]\n",
    );
    let s = Sluice::start_in(dir, &text, true).await;
    assert_eq!(s.get("team-a.test", "/").await.backend(), "a");
    assert_eq!(s.get("team-b.test", "/").await.backend(), "b");
    assert_eq!(s.get("other.test", "/").await.status, 404);
    api.apply(ingress_obj("team-b", "more", "more.test", "web"));
    s.wait_for_backend("more.test", "/", "b").await;
    api.apply(ingress_obj("other", "more", "elsewhere.test", "web"));
    // Served names are checked after a change that is served, never by waiting for absence.
    api.apply(ingress_obj("team-a", "more", "more-a.test", "web"));
    s.wait_for_backend("more-a.test", "/", "a").await;
    assert_eq!(s.get("elsewhere.test", "/").await.status, 404);
}
