//! Self-checks of the fake API server: the real kube-rs client, watcher, reflector, event
//! recorder and Lease calls against it. Every test runs under a timeout, so a missing event
//! or a hang fails instead of blocking the run.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::events::{Event as Note, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::{reflector, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use crate::support::fake_apiserver::{FakeApiServer, Options};

/// A generous bound for one test; the fake answers in milliseconds.
const LIMIT: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out: {what}"),
    }
}

fn ingress(ns: &str, name: &str, host: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
           "spec": {"rules": [{"host": host}]}})
}

fn host(i: &Ingress) -> String {
    let rules = i.spec.as_ref().and_then(|s| s.rules.as_ref());
    rules
        .and_then(|r| r.first())
        .and_then(|r| r.host.clone())
        .unwrap_or_default()
}

type Events = Pin<Box<dyn Stream<Item = Result<Event<Ingress>, watcher::Error>> + Send>>;

fn ingress_watcher(client: Client) -> Events {
    watcher(Api::<Ingress>::all(client), watcher::Config::default()).boxed()
}

/// The next watcher event, skipping errors (a 410 shows as one before the relist).
async fn next(events: &mut Events) -> Event<Ingress> {
    loop {
        match within("a watcher event", events.next()).await {
            Some(Ok(event)) => return event,
            Some(Err(_)) => continue,
            None => panic!("the watcher stream ended"),
        }
    }
}

/// Drives a watcher (with kube's default backoff, as a controller would) in a task, so its
/// watch stays open while the test does other things; each event comes out described.
fn spawn_watcher(client: Client) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut events = watcher(Api::<Ingress>::all(client), watcher::Config::default())
        .default_backoff()
        .boxed();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let Ok(event) = event {
                if tx.send(describe(&event)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

async fn recv(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    within("a watcher event", rx.recv())
        .await
        .expect("the watcher task ended")
}

/// A compact description of an event, e.g. `InitApply web`.
fn describe(event: &Event<Ingress>) -> String {
    match event {
        Event::Init => "Init".into(),
        Event::InitApply(i) => format!("InitApply {}", i.name_any()),
        Event::InitDone => "InitDone".into(),
        Event::Apply(i) => format!("Apply {}", i.name_any()),
        Event::Delete(i) => format!("Delete {}", i.name_any()),
    }
}

/// The events up to and including the next `InitDone`.
async fn until_init_done(events: &mut Events) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..100 {
        let event = describe(&next(events).await);
        let done = event == "InitDone";
        seen.push(event);
        if done {
            return seen;
        }
    }
    panic!("no InitDone in {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_version_work_with_the_kube_client() {
    let api = FakeApiServer::start().await;
    let client = api.client();
    let version = within("version", client.apiserver_version()).await.unwrap();
    assert_eq!(version.minor, "33");
    let discovery = within("discovery", kube::Discovery::new(client).run())
        .await
        .unwrap();
    let groups: Vec<String> = discovery.groups().map(|g| g.name().to_string()).collect();
    for group in [
        "",
        "networking.k8s.io",
        "discovery.k8s.io",
        "coordination.k8s.io",
        "events.k8s.io",
    ] {
        assert!(
            groups.iter().any(|g| g == group),
            "{group} missing from {groups:?}"
        );
    }
    let networking = discovery.get("networking.k8s.io").unwrap();
    let kinds: Vec<String> = networking
        .recommended_resources()
        .into_iter()
        .map(|(r, _)| r.kind)
        .collect();
    assert!(
        kinds.contains(&"Ingress".to_string()) && kinds.contains(&"IngressClass".to_string()),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_get_create_and_errors() {
    let api = FakeApiServer::start().await;
    api.apply(ingress("default", "web", "web.test"));
    api.apply(ingress("other", "shop", "shop.test"));
    let all = Api::<Ingress>::all(api.client());
    let list = within("list", all.list(&ListParams::default()))
        .await
        .unwrap();
    assert_eq!(
        list.items.iter().map(|i| i.name_any()).collect::<Vec<_>>(),
        ["web", "shop"]
    );
    assert_eq!(
        list.metadata.resource_version.as_deref(),
        Some(api.resource_version().to_string().as_str())
    );
    assert_eq!(api.list_count("ingresses"), 1);

    let default = Api::<Ingress>::namespaced(api.client(), "default");
    let web = within("get", default.get("web")).await.unwrap();
    assert_eq!(host(&web), "web.test");
    assert!(web.metadata.uid.is_some() && web.metadata.creation_timestamp.is_some());
    assert!(within("get_opt", default.get_opt("nope"))
        .await
        .unwrap()
        .is_none());

    let again: Ingress = serde_json::from_value(ingress("default", "web", "x.test")).unwrap();
    match within("create", default.create(&PostParams::default(), &again)).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("{other:?}"),
    }
    let fresh: Ingress = serde_json::from_value(ingress("default", "new", "new.test")).unwrap();
    let made = within("create", default.create(&PostParams::default(), &fresh))
        .await
        .unwrap();
    assert_eq!(made.metadata.generation, Some(1));
    assert!(api
        .get("networking.k8s.io/v1", "Ingress", "default", "new")
        .is_some());

    let bad = ListParams::default().labels("a in (b");
    match within("bad selector", all.list(&bad)).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 400),
        other => panic!("{other:?}"),
    }
    let nothing = within("delete", default.delete("nope", &DeleteParams::default())).await;
    assert!(matches!(nothing, Err(kube::Error::Api(s)) if s.code == 404 && s.reason == "NotFound"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_filter_lists() {
    let api = FakeApiServer::start().await;
    for (name, kind) in [("a", "kubernetes.io/tls"), ("b", "Opaque")] {
        api.apply(json!({"apiVersion": "v1", "kind": "Secret", "type": kind,
                         "metadata": {"name": name, "namespace": "default", "labels": {"tier": name}}}));
    }
    let secrets = Api::<Secret>::all(api.client());
    let names = |l: kube::core::ObjectList<Secret>| {
        l.items.iter().map(|s| s.name_any()).collect::<Vec<_>>()
    };
    let tls = ListParams::default().fields("type=kubernetes.io/tls");
    assert_eq!(
        names(within("fields", secrets.list(&tls)).await.unwrap()),
        ["a"]
    );
    let by_name = ListParams::default().fields("metadata.name=b,metadata.namespace=default");
    assert_eq!(
        names(within("fields", secrets.list(&by_name)).await.unwrap()),
        ["b"]
    );
    let cases = [
        ("tier=a", vec!["a"]),
        ("tier!=a", vec!["b"]),
        ("tier", vec!["a", "b"]),
        ("!tier", vec![]),
        ("tier in (a,b),tier notin (b)", vec!["a"]),
    ];
    for (selector, want) in cases {
        let got = names(
            within(
                "labels",
                secrets.list(&ListParams::default().labels(selector)),
            )
            .await
            .unwrap(),
        );
        assert_eq!(got, want, "{selector}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_with_limit_and_continue() {
    let api = FakeApiServer::start().await;
    for name in ["a", "b", "c"] {
        api.apply(ingress("default", name, "h.test"));
    }
    let ingresses = Api::<Ingress>::all(api.client());
    let mut params = ListParams::default().limit(1);
    let (mut names, mut versions) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let page = within("page", ingresses.list(&params)).await.unwrap();
        assert!(page.items.len() <= 1);
        names.extend(page.items.iter().map(|i| i.name_any()));
        versions.push(page.metadata.resource_version.clone());
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(names, ["a", "b", "c"]);
    assert!(versions.windows(2).all(|w| w[0] == w[1]), "{versions:?}");

    // A token from before a compaction is expired.
    let first = within("page", ingresses.list(&ListParams::default().limit(1)))
        .await
        .unwrap();
    api.compact();
    let stale = ListParams::default()
        .limit(1)
        .continue_token(first.metadata.continue_.as_deref().unwrap());
    assert!(
        matches!(within("stale", ingresses.list(&stale)).await, Err(kube::Error::Api(s)) if s.code == 410)
    );

    // The watcher pages too.
    let config = watcher::Config::default().page_size(1);
    let mut events = watcher(Api::<Ingress>::all(api.client()), config).boxed();
    let seen = until_init_done(&mut events).await;
    assert_eq!(
        seen,
        [
            "Init",
            "InitApply a",
            "InitApply b",
            "InitApply c",
            "InitDone"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_sees_adds_modifications_and_deletes() {
    let api = FakeApiServer::start().await;
    api.apply(ingress("default", "web", "web.test"));
    let mut events = ingress_watcher(api.client());
    assert_eq!(
        until_init_done(&mut events).await,
        ["Init", "InitApply web", "InitDone"]
    );

    api.apply(ingress("default", "shop", "shop.test"));
    assert_eq!(describe(&next(&mut events).await), "Apply shop");
    api.apply(ingress("default", "web", "www.test"));
    match next(&mut events).await {
        Event::Apply(i) => assert_eq!(
            (i.name_any(), host(&i)),
            ("web".to_string(), "www.test".to_string())
        ),
        other => panic!("{}", describe(&other)),
    }
    api.delete("networking.k8s.io/v1", "Ingress", "default", "shop");
    assert_eq!(describe(&next(&mut events).await), "Delete shop");
    assert_eq!(
        (api.list_count("ingresses"), api.watch_count("ingresses")),
        (1, 1)
    );
    assert_eq!(api.open_watches("ingresses"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_watch_resumes_without_a_relist() {
    let api = FakeApiServer::start().await;
    api.apply(ingress("default", "web", "web.test"));
    let mut events = ingress_watcher(api.client());
    until_init_done(&mut events).await;
    // A watcher watches only when polled: an event proves its watch is open.
    api.apply(ingress("default", "first", "first.test"));
    assert_eq!(describe(&next(&mut events).await), "Apply first");
    assert_eq!(api.open_watches("ingresses"), 1);
    api.drop_watches();
    assert!(
        api.wait_until(LIMIT, |a| a.open_watches("ingresses") == 0)
            .await
    );
    // Changes made while the client is away come back from the history.
    api.apply(ingress("default", "late", "late.test"));
    assert_eq!(describe(&next(&mut events).await), "Apply late");
    assert_eq!(
        (api.watch_count("ingresses"), api.list_count("ingresses")),
        (2, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_forces_a_relist_that_omits_deleted_objects() {
    let api = FakeApiServer::start().await;
    api.apply(ingress("default", "web", "web.test"));
    api.apply(ingress("default", "gone", "gone.test"));
    let mut events = spawn_watcher(api.client());
    for want in ["Init", "InitApply gone", "InitApply web", "InitDone"] {
        assert_eq!(recv(&mut events).await, want);
    }
    assert!(
        api.wait_until(LIMIT, |a| a.open_watches("ingresses") == 1)
            .await
    );

    // A compaction alone leaves a caught-up watch alone.
    api.compact();
    api.apply(ingress("default", "more", "more.test"));
    assert_eq!(recv(&mut events).await, "Apply more");
    assert_eq!(api.list_count("ingresses"), 1);

    // Compacted and dropped: the re-watch gets 410 and the relist misses the silent delete.
    api.compact();
    api.drop_watches();
    api.delete_silently("networking.k8s.io/v1", "Ingress", "default", "gone");
    for want in ["Init", "InitApply more", "InitApply web", "InitDone"] {
        assert_eq!(recv(&mut events).await, want);
    }
    assert_eq!(api.list_count("ingresses"), 2);
    // And it goes on watching from the new list.
    api.apply(ingress("default", "next", "next.test"));
    assert_eq!(recv(&mut events).await, "Apply next");
    assert_eq!(api.list_count("ingresses"), 2, "no relist loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_watches_get_410_bookmarks_and_timeouts() {
    let options = Options {
        bookmark_interval: Duration::from_millis(100),
        ..Options::default()
    };
    let api = FakeApiServer::start_with(options).await;
    api.apply(ingress("default", "web", "web.test"));
    let ingresses = Api::<Ingress>::namespaced(api.client(), "default");

    // Too old: one ERROR event with a 410 Expired Status, then the end.
    api.compact();
    let stream = within("watch", ingresses.watch(&WatchParams::default(), "1"))
        .await
        .unwrap();
    let got: Vec<_> = within("expired", stream.collect::<Vec<_>>()).await;
    match got.as_slice() {
        [Ok(WatchEvent::Error(s))] => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("{other:?}"),
    }

    // From "0": the current objects, then bookmarks; timeoutSeconds ends it.
    let params = WatchParams::default().timeout(1);
    let stream = within("watch", ingresses.watch(&params, "0"))
        .await
        .unwrap();
    let got: Vec<_> = within("until the timeout", stream.collect::<Vec<_>>()).await;
    assert!(matches!(got.first(), Some(Ok(WatchEvent::Added(i))) if i.name_any() == "web"));
    let current = api.resource_version().to_string();
    let bookmarks = got.iter().filter(
        |e| matches!(e, Ok(WatchEvent::Bookmark(b)) if b.metadata.resource_version == current),
    );
    assert!(bookmarks.count() >= 3, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_watch_sees_objects_leave_and_enter() {
    let api = FakeApiServer::start().await;
    api.apply(ingress("default", "web", "web.test"));
    let config = watcher::Config::default().labels("app=web");
    let mut events = watcher(Api::<Ingress>::all(api.client()), config).boxed();
    assert_eq!(
        until_init_done(&mut events).await,
        ["Init", "InitApply web", "InitDone"]
    );
    let mut moved = ingress("default", "web", "web.test");
    moved["metadata"]["labels"]["app"] = json!("other");
    api.apply(moved);
    assert_eq!(describe(&next(&mut events).await), "Delete web");
    api.apply(ingress("default", "web", "web.test"));
    assert_eq!(describe(&next(&mut events).await), "Apply web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_lists_end_their_initial_events_with_a_bookmark() {
    let api = FakeApiServer::start().await;
    api.apply(ingress("default", "web", "web.test"));
    let config = watcher::Config::default().streaming_lists();
    let mut events = watcher(Api::<Ingress>::all(api.client()), config).boxed();
    assert_eq!(
        until_init_done(&mut events).await,
        ["Init", "InitApply web", "InitDone"]
    );
    assert_eq!(api.list_count("ingresses"), 0);
    api.apply(ingress("default", "shop", "shop.test"));
    assert_eq!(describe(&next(&mut events).await), "Apply shop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_patches_change_only_the_status() {
    let api = FakeApiServer::start().await;
    api.apply(ingress("default", "web", "web.test"));
    let ingresses = Api::<Ingress>::namespaced(api.client(), "default");
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}},
                        "spec": {"rules": [{"host": "ignored.test"}]}});
    let patched = within(
        "patch_status",
        ingresses.patch_status("web", &PatchParams::default(), &Patch::Merge(&status)),
    )
    .await
    .unwrap();
    assert_eq!(host(&patched), "web.test");
    let stored = api
        .get("networking.k8s.io/v1", "Ingress", "default", "web")
        .unwrap();
    assert_eq!(
        stored["status"]["loadBalancer"]["ingress"][0]["ip"],
        "192.0.2.10"
    );

    // The same patch again is a no-op: same resourceVersion.
    let again = within(
        "patch_status",
        ingresses.patch_status("web", &PatchParams::default(), &Patch::Merge(&status)),
    )
    .await
    .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        patched.metadata.resource_version
    );

    // The main resource keeps the status; a spec change bumps the generation.
    let spec = json!({"spec": {"rules": [{"host": "new.test"}]}, "status": null});
    let main = within(
        "patch",
        ingresses.patch("web", &PatchParams::default(), &Patch::Merge(&spec)),
    )
    .await
    .unwrap();
    assert_eq!(
        (host(&main), main.metadata.generation),
        ("new.test".to_string(), Some(2))
    );
    assert!(main.status.is_some());

    // Server-side apply creates, then merges.
    let apply = PatchParams::apply("selftest");
    let body = ingress("default", "applied", "a.test");
    let made = within(
        "apply",
        ingresses.patch("applied", &apply, &Patch::Apply(&body)),
    )
    .await
    .unwrap();
    assert_eq!(host(&made), "a.test");

    let writes = api.writes();
    let status_writes: Vec<_> = writes
        .iter()
        .filter(|w| w.method == "PATCH" && w.path.ends_with("/status"))
        .collect();
    assert_eq!(status_writes.len(), 2);
    assert_eq!(
        status_writes[0].path,
        "/apis/networking.k8s.io/v1/namespaces/default/ingresses/web/status"
    );
    assert_eq!(
        status_writes[0].content_type,
        "application/merge-patch+json"
    );
    assert_eq!(status_writes[0].body, status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflector_follows_the_store() {
    let api = FakeApiServer::start().await;
    api.apply(ingress("default", "web", "web.test"));
    let (reader, writer) = reflector::store::<Ingress>();
    let mut applied = reflector(
        writer,
        watcher(
            Api::<Ingress>::all(api.client()),
            watcher::Config::default(),
        ),
    )
    .applied_objects()
    .boxed();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(object)) = applied.next().await {
            if tx.send(object.name_any()).is_err() {
                return;
            }
        }
    });
    within("ready", reader.wait_until_ready()).await.unwrap();
    assert_eq!(reader.state().len(), 1);
    assert_eq!(within("the first object", rx.recv()).await.unwrap(), "web");
    api.apply(ingress("kube-system", "sys", "sys.test"));
    assert_eq!(within("the second object", rx.recv()).await.unwrap(), "sys");
    let mut names: Vec<String> = reader.state().iter().map(|i| i.name_any()).collect();
    names.sort();
    assert_eq!(names, ["sys", "web"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_created_and_replaced_with_conflict_checks() {
    let api = FakeApiServer::start().await;
    let leases = Api::<Lease>::namespaced(api.client(), "sluice");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "one", "leaseDurationSeconds": 2}}))
    .unwrap();
    let made = within("create", leases.create(&PostParams::default(), &lease))
        .await
        .unwrap();
    match within(
        "create again",
        leases.create(&PostParams::default(), &lease),
    )
    .await
    {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("{other:?}"),
    }

    let mut renewed = made.clone();
    renewed.spec.as_mut().unwrap().holder_identity = Some("two".into());
    let replaced = within(
        "replace",
        leases.replace("leader", &PostParams::default(), &renewed),
    )
    .await
    .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        made.metadata.resource_version
    );
    assert_eq!(replaced.metadata.uid, made.metadata.uid);

    // `renewed` still carries the old resourceVersion: a lost race.
    match within(
        "stale replace",
        leases.replace("leader", &PostParams::default(), &renewed),
    )
    .await
    {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("{other:?}"),
    }
    let stored = api
        .get("coordination.k8s.io/v1", "Lease", "sluice", "leader")
        .unwrap();
    assert_eq!(stored["spec"]["holderIdentity"], "two");
    let methods: Vec<(String, u16)> = api
        .writes()
        .iter()
        .map(|w| (w.method.clone(), w.code))
        .collect();
    let want = [("POST", 201), ("POST", 409), ("PUT", 200), ("PUT", 409)];
    assert_eq!(methods, want.map(|(m, c)| (m.to_string(), c))); // Only the create and the first replace succeeded, and they were Lease writes.
    assert_eq!(api.write_count("leases"), 2);
    assert_eq!(api.write_count("ingresses"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_recorder_creates_then_patches_events() {
    let api = FakeApiServer::start().await;
    let reporter = Reporter {
        controller: "sluice".into(),
        instance: Some("one".into()),
    };
    let recorder = Recorder::new(api.client(), reporter);
    let reference = ObjectReference {
        api_version: Some("networking.k8s.io/v1".into()),
        kind: Some("Ingress".into()),
        name: Some("web".into()),
        namespace: Some("default".into()),
        ..ObjectReference::default()
    };
    let note = Note {
        type_: EventType::Warning,
        reason: "MissingService".into(),
        note: Some("no such service".into()),
        action: "Route".into(),
        secondary: None,
    };
    within("publish", recorder.publish(&note, &reference))
        .await
        .unwrap();
    within("publish again", recorder.publish(&note, &reference))
        .await
        .unwrap();
    let events = api.list("Event");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0]["type"].as_str(), events[0]["reason"].as_str()),
        (Some("Warning"), Some("MissingService"))
    );
    assert_eq!(events[0]["regarding"]["name"], "web");
    assert_eq!(events[0]["series"]["count"], 2);
    let writes: Vec<(String, String)> = api
        .writes()
        .iter()
        .map(|w| (w.method.clone(), w.path.clone()))
        .collect();
    let path = "/apis/events.k8s.io/v1/namespaces/default/events";
    assert_eq!(writes[0], ("POST".to_string(), path.to_string()));
    assert_eq!(writes[1].0, "PATCH");
    assert!(
        writes[1].1.starts_with(&format!("{path}/web.")),
        "{writes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailability_refuses_connections_and_ends_watches_on_the_same_port() {
    let api = FakeApiServer::start().await;
    api.apply(ingress("default", "web", "web.test"));
    let client = api.client();
    let ingresses = Api::<Ingress>::all(client.clone());
    let mut events = spawn_watcher(client);
    for want in ["Init", "InitApply web", "InitDone"] {
        assert_eq!(recv(&mut events).await, want);
    }
    assert!(
        api.wait_until(LIMIT, |a| a.open_watches("ingresses") == 1)
            .await
    );

    api.set_available(false);
    assert!(!api.is_available());
    assert!(
        api.wait_until(LIMIT, |a| a.open_watches("ingresses") == 0)
            .await
    );
    assert!(
        tokio::net::TcpStream::connect(api.addr()).await.is_err(),
        "connections are refused"
    );
    assert!(
        within("list while away", ingresses.list(&ListParams::default()))
            .await
            .is_err()
    );
    api.apply(ingress("default", "meanwhile", "m.test"));

    api.set_available(true);
    let list = within("list when back", ingresses.list(&ListParams::default()))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 2);
    // The watcher comes back by itself, from its old resourceVersion, and sees the change.
    assert_eq!(recv(&mut events).await, "Apply meanwhile");
    assert_eq!(
        api.list_count("ingresses"),
        2,
        "one by the watcher, one by the test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_points_kube_at_the_fake() {
    let api = FakeApiServer::start().await;
    api.apply(ingress("default", "web", "web.test"));
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&api.kubeconfig_yaml()).unwrap();
    let options = kube::config::KubeConfigOptions::default();
    let config = within(
        "config",
        kube::Config::from_custom_kubeconfig(kubeconfig, &options),
    )
    .await
    .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = Client::try_from(config).unwrap();
    let ingresses = Api::<Ingress>::default_namespaced(client);
    let list = within("list", ingresses.list(&ListParams::default()))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scoped_kinds_and_bad_requests() {
    let api = FakeApiServer::start().await;
    api.apply(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                     "metadata": {"name": "sluice", "namespace": "ignored"},
                     "spec": {"controller": "sluice.dev/ingress-controller"}}),
    );
    let class = api
        .get("networking.k8s.io/v1", "IngressClass", "", "sluice")
        .unwrap();
    assert!(class["metadata"].get("namespace").is_none());
    let classes = Api::<k8s_openapi::api::networking::v1::IngressClass>::all(api.client());
    let list = within("list", classes.list(&ListParams::default()))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);

    // Raw requests: a body that is not JSON, an unknown path, an unsupported patch type.
    let client = api.client();
    let send = |method: &str, path: &str, content_type: &str, body: &str| {
        let request = http_request(method, path, content_type, body);
        let client = client.clone();
        async move { client.request::<Value>(request).await }
    };
    let not_json = send(
        "POST",
        "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
        "application/json",
        "{",
    );
    assert!(
        matches!(within("not json", not_json).await, Err(kube::Error::Api(s)) if s.code == 400)
    );
    let nowhere = send("GET", "/apis/nowhere.example/v1/things", "", "");
    assert!(matches!(within("no route", nowhere).await, Err(kube::Error::Api(s)) if s.code == 404));
    let json_patch = send(
        "PATCH",
        "/apis/networking.k8s.io/v1/ingressclasses/sluice",
        "application/json-patch+json",
        "[]",
    );
    assert!(
        matches!(within("json patch", json_patch).await, Err(kube::Error::Api(s)) if s.code == 415)
    );
}

fn http_request(
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> hyper::Request<Vec<u8>> {
    let mut builder = hyper::Request::builder().method(method).uri(path);
    if !content_type.is_empty() {
        builder = builder.header("content-type", content_type);
    }
    builder.body(body.as_bytes().to_vec()).unwrap()
}
