//! The live state the request path reads, and the one way it changes.
//!
//! Every request loads one immutable [`Live`] with a single atomic read and keeps it for its whole
//! life. The sync path publishes what a source's [`Store`] holds ([`State::publish_store`]), on
//! a blocking thread so the request workers never build anything:
//!
//! - when only EndpointSlices or Nodes changed, the pools of the Services (or Nodes) concerned get
//!   their new endpoints in place and nothing else is touched: routes hold their pool by `Arc`,
//!   so no new [`Live`] is needed;
//! - when only Ingresses changed, and none of them (before or after the change) has a default
//!   backend, `spec.tls` or a wildcard rule, only the hosts their rules name are built again,
//!   from every Ingress that names those hosts; the other hosts, the default backend and TLS are
//!   shared with the previous state ([`State::publish_ingress_edits`] says why that is exact);
//! - otherwise a snapshot is built from the whole store, its certificate store is built (parsing
//!   only Secrets that changed), pools are created, updated and dropped as routes come and go,
//!   every rule is resolved to its [`Route`], and the new [`Live`] is swapped in whole. A route
//!   that resolves as before is the same `Arc`, and a host whose routes are all unchanged shares
//!   its entry with the previous state, so two coexisting states hold one copy of what did not
//!   change.
//!
//! A request never sees half an update, and no update waits for requests.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use sluice_config::build::{build_hosts, is_served, rule_hosts, served_oldest_first};
use sluice_config::canary::is_canary;
use sluice_config::health::{service_health_check, HealthCheck, HealthCheckOverrides};
use sluice_config::hostmap::{parse_rule_host, HostKey, HostName};
use sluice_config::model::{BackendInput, IngressInput, InputRefs, Inputs, ObjectRef};
use sluice_config::ownership::Ownership;
use sluice_config::rules::basic_auth::AUTH_TYPE;
use sluice_config::rules::{self, www_counterpart, FROM_TO_WWW_REDIRECT};
use sluice_config::tls::TlsPolicy;
use sluice_config::{
    build_refs, BuildDefaults, ClassPolicy, Ejection, Finding, PoolKey, RouteEntry, RouteTable,
    Snapshot, Target, TargetType,
};

use crate::limiter::Limiters;
use crate::metrics::{Metrics, RouteMetrics};
use crate::pool::Pool;
use crate::route::{canary_route, compile, Filter, Route};
use crate::store::{Changes, Kind, SharedInputs, Store};
use crate::tls::{SecretMaterial, TlsStore, TlsStoreBuilder};

/// One published version of everything the request path needs.
pub struct Live {
    /// Where each host and path leads: the resolved routes.
    pub routes: RouteTable<Arc<Route>>,
    /// Names with TLS and their client authentication, as the snapshot decided them.
    pub tls_policy: Arc<TlsPolicy>,
    /// The certificates and client-auth settings handshakes read, built from the same inputs as
    /// `tls_policy`.
    pub tls: Arc<TlsStore>,
    /// Every pool a route uses, once each.
    pub pools: Arc<HashMap<PoolKey, Arc<Pool>>>,
    /// Everything the snapshot did not serve as written, sorted.
    pub skipped: Arc<[Finding]>,
    /// Hosts redirected to another (`sluice.dev/from-to-www-redirect`): from, to.
    pub host_redirects: Arc<HashMap<String, String>>,
}

/// Shared between the sync path (writer) and every request (readers).
pub struct State {
    live: ArcSwap<Live>,
    metrics: Arc<Metrics>,
    policy: ClassPolicy,
    /// The settings' defaults for snapshot building (`upstream.target_type`).
    defaults: BuildDefaults,
    /// How the pools eject failing endpoints.
    ejection: Ejection,
    /// Serialises writers: pools must not be updated by two publishes at once. Publishes run on
    /// a blocking thread, never on the request workers, so this is a plain mutex.
    writer: std::sync::Mutex<Writer>,
    ready: AtomicBool,
    /// The active health check of Services that set none (`[upstream.health_check]`).
    health_defaults: HealthCheck,
    /// Signalled after each publish, for the health checker to follow pools and endpoints.
    published: tokio::sync::Notify,
    /// A [`return_freed_memory`] is scheduled.
    memory_return_pending: AtomicBool,
}

/// How long after a publish the allocator is given its chance to return what the publish (and
/// the reads before it) freed: past mimalloc's purge delay of one second.
const RETURN_MEMORY_AFTER: std::time::Duration = std::time::Duration::from_millis(1500);

/// Allocates and frees one block large enough to take a page of its own.
///
/// mimalloc gives freed memory back to the OS ("purges" it) one second after it was freed, but
/// only when some thread later frees a page: nothing runs on a timer. A process that goes quiet
/// after a large publish (the first list of a large cluster, then no traffic and no change)
/// frees no page, and what the list and the build freed stays resident for good (13-28 MiB at
/// 10 000 Ingresses: benches/README.md). Freeing this block after the delay is such a page
/// free, and costs one allocation.
pub fn return_freed_memory() {
    drop(std::hint::black_box(Vec::<u8>::with_capacity(8 << 20)));
}

/// What changed with a publish, for the Kubernetes source's Events and status.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Rules skipped now that were not skipped by the previous publish.
    pub newly_skipped: Vec<Finding>,
    /// Every rule skipped now.
    pub skipped: BTreeSet<Finding>,
    /// Every Ingress served now (shared: a report is cheap to keep and to copy).
    pub served: Arc<BTreeSet<ObjectRef>>,
    /// Ingresses served now that were not served by the previous publish.
    pub newly_served: Vec<ObjectRef>,
}

struct Writer {
    pools: HashMap<PoolKey, Arc<Pool>>,
    reported: BTreeSet<Finding>,
    served: Arc<BTreeSet<ObjectRef>>,
    tls: TlsStoreBuilder,
    /// The metrics of every route now served, by (namespace, Ingress, Service): kept across
    /// publishes, retired when their route goes.
    route_metrics: HashMap<[String; 3], Arc<RouteMetrics>>,
    /// The pools of each Service, by (namespace, Service), for endpoint-only updates.
    pools_by_service: HashMap<(String, String), Vec<Arc<Pool>>>,
    /// What the last snapshot served and found, for publishes that change neither.
    last_report: ApplyReport,
    /// The limiters of Ingresses with `sluice.dev/limit-*`, kept while routes use them.
    limiters: Limiters,
}

impl State {
    /// A state serving nothing yet; `tls` builds the certificate store at each publish (before
    /// the first, every name gets its fallback certificate).
    pub fn new(
        policy: ClassPolicy,
        ejection: Ejection,
        metrics: Arc<Metrics>,
        tls: TlsStoreBuilder,
    ) -> State {
        let live = Live {
            routes: RouteTable::default(),
            tls_policy: Arc::default(),
            tls: Arc::new(tls.initial()),
            pools: Arc::default(),
            skipped: Arc::new([]),
            host_redirects: Arc::default(),
        };
        State {
            live: ArcSwap::from_pointee(live),
            metrics,
            policy,
            defaults: BuildDefaults::default(),
            ejection,
            writer: std::sync::Mutex::new(Writer {
                pools: HashMap::new(),
                reported: BTreeSet::new(),
                served: Arc::default(),
                tls,
                route_metrics: HashMap::new(),
                pools_by_service: HashMap::new(),
                last_report: ApplyReport::default(),
                limiters: Limiters::default(),
            }),
            ready: AtomicBool::new(false),
            memory_return_pending: AtomicBool::new(false),
            health_defaults: HealthCheck::default(),
            published: tokio::sync::Notify::new(),
        }
    }

    /// Builds snapshots with `defaults` instead of the built-in ones.
    pub fn with_defaults(mut self, defaults: BuildDefaults) -> State {
        self.defaults = defaults;
        self
    }

    /// This state with `defaults` as the active health check of Services whose annotations set
    /// none (by default there is none).
    pub fn with_health_check_defaults(mut self, defaults: HealthCheck) -> State {
        self.health_defaults = defaults;
        self
    }

    /// Completes after the next publish (or at once if one happened since the last wait).
    pub async fn published(&self) {
        self.published.notified().await
    }

    /// The current live state. Cheap: one atomic load, no lock.
    pub fn live(&self) -> arc_swap::Guard<Arc<Live>> {
        self.live.load()
    }

    /// The current live state, owned (for holding across awaits).
    pub fn live_full(&self) -> Arc<Live> {
        self.live.load_full()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Which Ingresses this state serves.
    pub fn class_policy(&self) -> &ClassPolicy {
        &self.policy
    }

    /// Whether a first snapshot has been published (what `/readyz` reports).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Brings `sluice_pool_endpoints` up to date with ejections (which begin and end between
    /// publishes); called before metrics are rendered.
    pub fn refresh_pool_gauges(&self) {
        let live = self.live.load();
        for pool in live.pools.values() {
            set_pool_gauges(&self.metrics, pool);
        }
    }

    /// Publishes what `store` holds, on a blocking thread (never on the request workers). When
    /// only EndpointSlices or Nodes changed since the last publish, only the affected pools are
    /// brought up to date and no route is rebuilt: that returns `None`, as nothing a report says
    /// can have changed. Otherwise a snapshot is built from the whole store and made live.
    pub async fn publish_store(self: &Arc<Self>, store: &Arc<Store>) -> Option<ApplyReport> {
        let (state, store) = (self.clone(), store.clone());
        let published =
            tokio::task::spawn_blocking(move || state.publish_store_blocking(&store)).await;
        self.schedule_memory_return();
        match published {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(error = %e, "the publish task failed; the last snapshot keeps serving");
                None
            }
        }
    }

    /// Runs [`return_freed_memory`] once [`RETURN_MEMORY_AFTER`] has passed, unless that is
    /// already scheduled (a burst of publishes schedules one).
    fn schedule_memory_return(self: &Arc<Self>) {
        if self.memory_return_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let state = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RETURN_MEMORY_AFTER).await;
            state.memory_return_pending.store(false, Ordering::Release);
            return_freed_memory();
        });
    }

    /// [`State::publish_store`] on the calling thread.
    pub fn publish_store_blocking(&self, store: &Store) -> Option<ApplyReport> {
        let changes = store.take_changes();
        if self.is_ready() && changes.kinds.is_empty() {
            // Only what no route reads changed (an Ingress's status): the last report stands.
            return Some(self.lock_writer().last_report.clone());
        }
        if self.is_ready() && changes.endpoints_only() {
            self.update_endpoints(store, &changes);
            return None;
        }
        if self.is_ready() {
            if let Some(report) = self.publish_ingress_edits(store, &changes) {
                return Some(report);
            }
        }
        let shared = store.shared();
        Some(self.publish_refs(&shared.refs(), &store.secret_material()))
    }

    /// Builds a snapshot from model inputs and Secret material, and makes it live (on the
    /// calling thread: callers on the runtime use [`State::publish_store`]).
    pub fn publish_inputs(&self, inputs: &Inputs, material: &SecretMaterial) -> ApplyReport {
        self.publish_refs(&inputs.refs(), material)
    }

    /// [`State::publish_inputs`] for borrowed inputs.
    pub fn publish_refs(&self, inputs: &InputRefs<'_>, material: &SecretMaterial) -> ApplyReport {
        let started = Instant::now();
        let snapshot = build_refs(inputs, &self.policy, &self.defaults);
        let built = started.elapsed();
        let report = self.apply(snapshot, material);
        self.metrics.publishes.with_label_values(&["full"]).inc();
        self.metrics
            .snapshot_build
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            build_us = built.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "published a snapshot"
        );
        report
    }

    /// Brings the pools whose endpoints `changes` may have moved up to date from `store`: the
    /// `ip` pools of the Services whose EndpointSlices changed, and every `instance` pool when
    /// Nodes changed. Routes, their pools and the live state stay as they are (a pool's
    /// endpoints change in place), so the cost is that of the pools touched.
    fn update_endpoints(&self, store: &Store, changes: &Changes) {
        let started = Instant::now();
        let writer = self.lock_writer();
        let nodes = changes.kinds.contains(&Kind::Node);
        let mut pools: Vec<&Arc<Pool>> = Vec::new();
        if changes.all_slices || nodes {
            pools.extend(
                writer
                    .pools
                    .values()
                    .filter(|p| match &p.key().target_type {
                        TargetType::Ip => changes.all_slices,
                        TargetType::Instance(_) => nodes,
                    }),
            );
        } else {
            for (namespace, service) in &changes.services {
                let Some(of_service) = writer
                    .pools_by_service
                    .get(&(namespace.clone(), service.clone()))
                else {
                    continue;
                };
                pools.extend(
                    of_service
                        .iter()
                        .filter(|p| p.key().target_type == TargetType::Ip),
                );
            }
        }
        let keys: Vec<&PoolKey> = pools.iter().map(|p| p.key()).collect();
        let mut changed = 0;
        for (pool, addrs) in pools.iter().zip(store.pool_endpoints(&keys)) {
            let key = pool.key();
            if pool.set_endpoints(&addrs) {
                changed += 1;
                tracing::info!(pool = %key, target_type = %key.target_type, endpoints = addrs.len(), "pool endpoints changed");
            }
            set_pool_gauges(&self.metrics, pool);
        }
        if changed > 0 {
            self.published.notify_one();
        }
        self.metrics.last_sync.set(unix_now());
        self.metrics
            .publishes
            .with_label_values(&["endpoints"])
            .inc();
        tracing::debug!(
            pools = pools.len(),
            changed,
            total_us = started.elapsed().as_micros() as u64,
            "updated endpoints only"
        );
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        // A panic mid-publish leaves the writer's maps whole (each update is one insert or
        // swap); the next publish rebuilds everything from the store anyway.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `snapshot` live: builds its certificate store (parsing only Secrets that changed),
    /// updates the pools whose endpoints changed, creates and drops pools as routes come and go,
    /// then swaps the new state in whole.
    pub fn apply(&self, mut snapshot: Snapshot, material: &SecretMaterial) -> ApplyReport {
        let mut writer = self.lock_writer();
        let tls = finish(&mut snapshot, &mut writer.tls, material);
        // Whether pools came or went: only then are the shared pool tables rebuilt.
        let mut pools_changed =
            self.ensure_pools(&mut writer, &snapshot.endpoints, &snapshot.health_checks);
        let metrics = &self.metrics;
        writer.pools.retain(|key, _| {
            let keep = snapshot.endpoints.contains_key(key);
            if !keep {
                pools_changed = true;
                remove_pool_gauges(metrics, key);
            }
            keep
        });
        // Pool gauges are brought up to date when metrics are rendered (`refresh_pool_gauges`).
        let kept = std::mem::take(&mut writer.route_metrics);
        let (route_metrics, now) = route_metrics(&snapshot, &self.metrics, &kept);
        retire_route_metrics(kept, &now);
        writer.route_metrics = now;
        let previous = self.live.load_full();
        let routes = resolve_routes(
            &snapshot,
            &route_metrics,
            &self.metrics,
            &writer,
            &previous.routes,
        );
        tracing::info!(
            ingresses = snapshot.ingresses.len(),
            hosts = snapshot.routes.host_count(),
            pools = snapshot.endpoints.len(),
            skipped = snapshot.skipped.len(),
            "routes updated"
        );
        let served: Arc<BTreeSet<ObjectRef>> = Arc::new(
            snapshot
                .ingresses
                .iter()
                .map(|i| i.object.clone())
                .collect(),
        );
        self.swap_in(
            &mut writer,
            Live {
                routes,
                tls_policy: Arc::new(snapshot.tls),
                tls: Arc::new(tls),
                pools: previous.pools.clone(),
                skipped: snapshot.skipped.into(),
                host_redirects: Arc::new(snapshot.host_redirects.into_iter().collect()),
            },
            pools_changed,
            served,
        )
    }

    /// Publishes Ingress changes by building only the hosts they touch, when nothing they
    /// change reaches past those hosts; `None` when a whole build is needed instead.
    ///
    /// What crosses hosts, and so takes a whole build: the default backend (`spec.defaultBackend`
    /// of the oldest Ingress with one), `spec.tls` (certificates and client authentication,
    /// which follow host ownership and the wildcard one label up), wildcard rules (which own the
    /// names below them that only `spec.tls` lists), a change of owner of a touched host, a
    /// relist, and basic auth (its Secret's users are filled in when a whole snapshot is
    /// applied). Everything else a rule depends on is decided per host: which Ingress serves a
    /// contested path (the oldest, among the Ingresses with a rule for the host), and whether a
    /// namespace may route on it. So the hosts the changed Ingresses name, before and after the
    /// change, are built again from every Ingress that names them; the other hosts, the default
    /// backend and TLS stay as they are, shared with the previous state.
    fn publish_ingress_edits(&self, store: &Store, changes: &Changes) -> Option<ApplyReport> {
        if changes.all_ingresses || changes.kinds.iter().any(|k| *k != Kind::Ingress) {
            return None;
        }
        let started = Instant::now();
        let edited: Vec<&IngressInput> = changes
            .ingresses
            .values()
            .flat_map(|c| [c.before.as_deref(), c.after.as_deref()])
            .flatten()
            .collect();
        if edited
            .iter()
            .any(|i| i.default_backend.is_some() || !i.tls.is_empty())
        {
            return None;
        }
        let mut hosts: BTreeSet<HostName> = BTreeSet::new();
        for key in edited.iter().flat_map(|i| rule_hosts(i)) {
            if matches!(key, HostKey::Wildcard(_)) {
                return None;
            }
            hosts.insert(key.into());
        }
        // The hosts as names, and the wildcards one label up (their rules can decide a touched
        // host's owner), looked up without allocating: every Ingress is checked.
        let exact: HashSet<&str> = hosts
            .iter()
            .filter_map(|h| match h {
                HostName::Exact(name) => Some(&**name),
                _ => None,
            })
            .collect();
        let parents: HashSet<&str> = exact
            .iter()
            .filter_map(|name| name.split_once('.').map(|(_, suffix)| suffix))
            .collect();
        let any = hosts.contains(&HostName::Any);
        let names = |i: &IngressInput| {
            rule_hosts(i).any(|k| match k {
                HostKey::Exact(h) => exact.contains(h),
                HostKey::Wildcard(s) => parents.contains(s),
                HostKey::Any => any,
            }) || i
                .tls
                .iter()
                .flat_map(|t| &t.hosts)
                .filter_map(|h| parse_rule_host(Some(h)).ok())
                .any(|k| matches!(k, HostKey::Exact(h) if exact.contains(h)))
        };
        // `from-to-www-redirect` sends a host's www counterpart (or the name without www) to
        // it when no rule names the counterpart: a touched host, or its counterpart, named by
        // an Ingress asking for that takes a whole build.
        let counterparts: HashSet<String> =
            exact.iter().filter_map(|h| www_counterpart(h)).collect();
        let www = |i: &IngressInput| {
            i.annotations.contains_key(FROM_TO_WWW_REDIRECT)
                && rule_hosts(i).any(|k| {
                    matches!(k, HostKey::Exact(h) if exact.contains(h) || counterparts.contains(h))
                })
        };
        if edited
            .iter()
            .any(|i| i.annotations.contains_key(FROM_TO_WWW_REDIRECT))
            || store.www_ingresses().iter().any(|i| www(i))
        {
            return None;
        }
        // Only the Ingresses indexed under a touched host, or under a wildcard one label up,
        // can name one.
        let wildcards: Vec<String> = parents.iter().map(|p| format!("*.{p}")).collect();
        let indexed = exact
            .iter()
            .copied()
            .chain(wildcards.iter().map(String::as_str))
            .chain(any.then_some(""));
        let ingresses = store.ingresses_naming(indexed);
        let unchanged: Vec<&IngressInput> = ingresses
            .iter()
            .map(|i| &**i)
            .filter(|i| names(i) && !changes.ingresses.contains_key(&i.object_ref()))
            .collect();
        let side = |after: bool| -> Vec<&IngressInput> {
            let changed = changes.ingresses.values().filter_map(|c| {
                if after {
                    c.after.as_deref()
                } else {
                    c.before.as_deref()
                }
            });
            unchanged.iter().copied().chain(changed).collect()
        };
        let (before, after) = (side(false), side(true));
        // Basic auth reads its Secret when a whole snapshot is applied.
        if before
            .iter()
            .chain(&after)
            .any(|i| i.annotations.contains_key(AUTH_TYPE))
        {
            return None;
        }
        // Only the Services (and their slices) these Ingresses name: in their rules, and as
        // the target of their mirror or their auth URL.
        let wanted: BTreeSet<(String, String)> = before
            .iter()
            .chain(&after)
            .flat_map(|i| {
                let rules =
                    i.rules
                        .iter()
                        .flat_map(|r| &r.paths)
                        .filter_map(|p| match &p.backend {
                            BackendInput::Service { name, .. } => Some(name.clone()),
                            BackendInput::Unsupported(_) => None,
                        });
                // The auth Service may live in another namespace.
                let others = rules::filters(&i.annotations)
                    .0
                    .into_iter()
                    .filter_map(|f| match f {
                        rules::Filter::Mirror { service, .. } => {
                            Some((i.namespace.clone(), service))
                        }
                        rules::Filter::ExtAuth(a) => a.service.map(|s| (s.namespace, s.name)),
                        _ => None,
                    });
                rules
                    .map(|name| (i.namespace.clone(), name))
                    .chain(others)
                    .collect::<Vec<_>>()
            })
            .collect();
        let shared = store.shared_for(&wanted);
        // A Service's bad health-check annotations are reported once per Ingress that reaches
        // it, by whichever of its rules resolves first: built alone, the touched hosts could
        // drop a finding that a rule on another host still gives. Those take a whole build.
        if shared
            .services
            .iter()
            .any(|s| !service_health_check(&s.annotations).1.is_empty())
        {
            return None;
        }
        let (before, after) = (
            scoped_inputs(&shared, before),
            scoped_inputs(&shared, after),
        );
        let owners = |inputs: &InputRefs<'_>| {
            let mut served = served_oldest_first(inputs, &self.policy);
            // Canaries own nothing.
            served.retain(|i| !is_canary(i));
            let ownership = Ownership::compute(&served, &self.defaults.host_owners);
            hosts
                .iter()
                .map(|h| h.key().text().and_then(|t| ownership.owner(&t).cloned()))
                .collect::<Vec<_>>()
        };
        // A host's owner decides its TLS policy (and names itself in the findings that policy
        // reports); a change of owner of a host with TLS takes a whole build. Without TLS on
        // these hosts, the owner decides only which namespaces' rules the host serves, which
        // the partial build decides again.
        let lists_tls = |i: &&IngressInput| {
            i.tls.iter().any(|t| {
                if t.hosts.is_empty() {
                    rule_hosts(i).any(|k| hosts.contains(&HostName::from(k)))
                } else {
                    t.hosts
                        .iter()
                        .filter_map(|h| parse_rule_host(Some(h)).ok())
                        .any(|k| hosts.contains(&HostName::from(k)))
                }
            })
        };
        let with_tls = before
            .ingresses
            .iter()
            .chain(&after.ingresses)
            .any(lists_tls);
        if with_tls && owners(&before) != owners(&after) {
            return None;
        }
        let old = build_hosts(&before, &self.policy, &self.defaults, &hosts);
        let new = build_hosts(&after, &self.policy, &self.defaults, &hosts);
        let built = started.elapsed();
        let previous = self.live.load_full();
        // The findings of the touched hosts (and of the Ingresses built) are replaced; the
        // others stand. A finding the old build has that the previous state lacks means the
        // previous state was not built from these inputs: build everything then.
        let mut count: BTreeMap<&Finding, i64> = BTreeMap::new();
        for f in previous.skipped.iter().chain(&new.skipped) {
            *count.entry(f).or_default() += 1;
        }
        for f in &old.skipped {
            *count.entry(f).or_default() -= 1;
        }
        if count.values().any(|n| *n < 0) {
            tracing::debug!("the previous state does not match the store; building everything");
            return None;
        }
        // In order: the map is sorted.
        let findings: Vec<Finding> = count
            .into_iter()
            .flat_map(|(f, n)| std::iter::repeat_n(f, n as usize))
            .cloned()
            .collect();

        let mut writer = self.lock_writer();
        let mut pools_changed = self.ensure_pools(&mut writer, &new.endpoints, &new.health_checks);
        let (route_metrics, now) = route_metrics(&new, &self.metrics, &writer.route_metrics);
        writer.route_metrics.extend(now);
        let partial = resolve_routes(
            &new,
            &route_metrics,
            &self.metrics,
            &writer,
            &previous.routes,
        );
        let mut table = previous.routes.host_map().clone();
        for host in &hosts {
            table.remove(&host.key());
        }
        for (key, routes) in partial.host_map().iter() {
            table.insert(&key, routes.clone());
        }
        let routes = RouteTable::from_parts(table, previous.routes.default_backend().cloned());

        // Routes, metrics and pools that no host leads to any more go. Only a route that was on
        // a rebuilt host and is not on it now can be gone; when there is none, nothing is.
        let kept: HashSet<*const Route> = partial
            .host_map()
            .iter()
            .flat_map(|(_, h)| h.iter().map(|(_, _, r)| Arc::as_ptr(r)))
            .collect();
        let gone: Vec<&Arc<Route>> = hosts
            .iter()
            .filter_map(|h| previous.routes.host_map().get_key(&h.key()))
            .flat_map(|old| old.iter().map(|(_, _, r)| r))
            .filter(|r| !kept.contains(&Arc::as_ptr(r)))
            .collect();
        if !gone.is_empty() {
            pools_changed |= self.drop_unused(&mut writer, &routes, &gone);
        }
        let mut served = writer.served.clone();
        for (key, change) in &changes.ingresses {
            let serves = change
                .after
                .as_deref()
                .is_some_and(|i| is_served(i, &after.classes, &self.policy));
            // The set is copied only when an Ingress starts or stops being served.
            if serves != served.contains(key) {
                let set = Arc::make_mut(&mut served);
                if serves {
                    set.insert(key.clone());
                } else {
                    set.remove(key);
                }
            }
        }
        tracing::info!(
            ingresses = changes.ingresses.len(),
            hosts = hosts.len(),
            skipped = findings.len(),
            "routes of the edited hosts updated"
        );
        let report = self.swap_in(
            &mut writer,
            Live {
                routes,
                tls_policy: previous.tls_policy.clone(),
                tls: previous.tls.clone(),
                pools: previous.pools.clone(),
                skipped: findings.into(),
                host_redirects: previous.host_redirects.clone(),
            },
            pools_changed,
            served,
        );
        self.metrics
            .snapshot_build
            .observe(started.elapsed().as_secs_f64());
        self.metrics.publishes.with_label_values(&["hosts"]).inc();
        tracing::debug!(
            build_us = built.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "published the edited hosts"
        );
        Some(report)
    }

    /// Retires the metrics and drops the pools of the `gone` routes that no route of `routes`
    /// has any more; returns whether a pool was dropped. Only the gone routes' own metrics and
    /// pools are candidates (a handful), so the walk over `routes` compares pointers with a
    /// short list and ends once every candidate is found still in use.
    fn drop_unused(
        &self,
        writer: &mut Writer,
        routes: &RouteTable<Arc<Route>>,
        gone: &[&Arc<Route>],
    ) -> bool {
        /// Calls `f` with each metrics handle and each pool `route` uses.
        fn uses(route: &Route, f: &mut impl FnMut(Use)) {
            let canary = route.canary.as_ref();
            f(Use::Metrics(Arc::as_ptr(&route.metrics)));
            if let Some(c) = canary {
                f(Use::Metrics(Arc::as_ptr(&c.metrics)));
            }
            let pools = route
                .pool
                .iter()
                .chain(canary.and_then(|c| c.pool.as_ref()))
                .chain(route.filters.iter().filter_map(|f| match f {
                    Filter::Mirror(pool) => Some(pool),
                    Filter::ExtAuth(check) => check.pool(),
                    _ => None,
                }));
            for pool in pools {
                f(Use::Pool(Arc::as_ptr(pool)));
            }
        }
        enum Use {
            Metrics(*const RouteMetrics),
            Pool(*const Pool),
        }
        let (mut metrics, mut pools) = (Vec::new(), Vec::new());
        for route in gone {
            uses(route, &mut |u| match u {
                Use::Metrics(m) => metrics.push(m),
                Use::Pool(p) => pools.push(p),
            });
        }
        metrics.sort_unstable();
        metrics.dedup();
        pools.sort_unstable();
        pools.dedup();
        let every_route = routes
            .host_map()
            .iter()
            .flat_map(|(_, h)| h.iter().map(|(_, _, r)| r))
            .chain(routes.default_backend());
        for route in every_route {
            if metrics.is_empty() && pools.is_empty() {
                break;
            }
            uses(route, &mut |u| match u {
                Use::Metrics(m) => metrics.retain(|x| *x != m),
                Use::Pool(p) => pools.retain(|x| *x != p),
            });
        }
        if !metrics.is_empty() {
            writer.route_metrics.retain(|labels, m| {
                // Empty labels are also those of unrouted requests, whose series always stay.
                let keep =
                    !metrics.contains(&Arc::as_ptr(m)) || labels.iter().all(|l| l.is_empty());
                if !keep {
                    m.retire();
                }
                keep
            });
        }
        let metrics = &self.metrics;
        let mut dropped = false;
        if !pools.is_empty() {
            writer.pools.retain(|key, pool| {
                let keep = !pools.contains(&Arc::as_ptr(pool));
                if !keep {
                    dropped = true;
                    remove_pool_gauges(metrics, key);
                }
                keep
            });
        }
        dropped
    }

    /// Creates the pools of `endpoints` that do not exist yet and brings every one of them up to
    /// date (endpoints, health check); returns whether a pool was created.
    fn ensure_pools(
        &self,
        writer: &mut Writer,
        endpoints: &BTreeMap<PoolKey, Vec<SocketAddr>>,
        health_checks: &BTreeMap<PoolKey, HealthCheckOverrides>,
    ) -> bool {
        let mut created = false;
        for (key, addrs) in endpoints {
            let pool = match writer.pools.get(key) {
                Some(pool) => pool.clone(),
                None => {
                    created = true;
                    let pool = Arc::new(Pool::new(key.clone(), self.ejection));
                    writer.pools.insert(key.clone(), pool.clone());
                    pool
                }
            };
            if pool.set_endpoints(addrs) {
                tracing::info!(pool = %key, target_type = %key.target_type, endpoints = addrs.len(), "pool endpoints changed");
            }
            let overrides = health_checks.get(key);
            let check = self
                .health_defaults
                .with(overrides.unwrap_or(&HealthCheckOverrides::default()));
            if pool.set_health_check(Some(check.clone())) {
                tracing::info!(
                    pool = %key,
                    kind = check.kind.name(),
                    interval_ms = check.interval.as_millis() as u64,
                    "pool health check changed"
                );
            }
        }
        created
    }

    /// Swaps `live` in (with fresh pool tables when `pools_changed`, else the previous ones it
    /// carries), counts and logs its findings, and reports what is new against the last publish.
    fn swap_in(
        &self,
        writer: &mut Writer,
        mut live: Live,
        pools_changed: bool,
        served: Arc<BTreeSet<ObjectRef>>,
    ) -> ApplyReport {
        self.metrics.rules_skipped.reset();
        for s in live.skipped.iter() {
            self.metrics
                .rules_skipped
                .with_label_values(&[s.reason.as_str()])
                .inc();
        }
        let now: BTreeSet<Finding> = live.skipped.iter().cloned().collect();
        let newly_skipped: Vec<Finding> = now.difference(&writer.reported).cloned().collect();
        for s in &newly_skipped {
            tracing::warn!(ingress = %s.ingress, reason = s.reason.as_str(), "{}", s.message);
        }
        writer.reported = now.clone();
        let newly_served = if Arc::ptr_eq(&served, &writer.served) {
            Vec::new()
        } else {
            served.difference(&writer.served).cloned().collect()
        };
        writer.served = served.clone();
        if pools_changed {
            let mut by_service: HashMap<(String, String), Vec<Arc<Pool>>> = HashMap::new();
            for (key, pool) in &writer.pools {
                by_service
                    .entry((key.namespace.clone(), key.service.clone()))
                    .or_default()
                    .push(pool.clone());
            }
            writer.pools_by_service = by_service;
            live.pools = Arc::new(writer.pools.clone());
        }
        self.live.store(Arc::new(live));
        self.ready.store(true, Ordering::Release);
        self.published.notify_one();
        self.metrics.last_sync.set(unix_now());
        // A later publish that changes nothing routing reads says the same, with nothing new.
        writer.last_report = ApplyReport {
            newly_skipped: Vec::new(),
            skipped: now.clone(),
            served: served.clone(),
            newly_served: Vec::new(),
        };
        ApplyReport {
            newly_skipped,
            skipped: now,
            served,
            newly_served,
        }
    }
}

/// The inputs of a partial build: `ingresses`, and the rest of what `shared` holds (for a
/// partial build, [`Store::shared_for`] its Services).
fn scoped_inputs<'a>(shared: &'a SharedInputs, ingresses: Vec<&'a IngressInput>) -> InputRefs<'a> {
    InputRefs {
        ingresses,
        ..shared.refs_without_ingresses()
    }
}

/// What a publish does to a built snapshot with the Secret material before it goes live: builds
/// the certificate store of its TLS policy ([`certificates`]) and fills in the users of its
/// basic-auth rules; what either refuses joins the snapshot's findings. Publishing and `sluice
/// check` both run it, so the check reports what the proxy would serve.
pub fn finish(
    snapshot: &mut Snapshot,
    builder: &mut TlsStoreBuilder,
    material: &SecretMaterial,
) -> TlsStore {
    let tls = certificates(snapshot, builder, material);
    crate::auth::basic::resolve_secrets(snapshot, material);
    tls
}

/// Builds the certificate store of `snapshot`'s TLS policy from `material` (parsing only Secrets
/// that changed since `builder` last built) and adds what it refuses to the snapshot's findings.
fn certificates(
    snapshot: &mut Snapshot,
    builder: &mut TlsStoreBuilder,
    material: &SecretMaterial,
) -> TlsStore {
    let built = builder.build(&snapshot.tls, material);
    if !built.skipped.is_empty() {
        snapshot.skipped.extend(built.skipped);
        snapshot.skipped.sort();
    }
    built.store
}

/// The time now as Unix seconds.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Sets `sluice_pool_endpoints` of one pool: `ready` endpoints in rotation, `ejected` ones out
/// by passive ejection, `unhealthy` ones failing their active health checks.
fn set_pool_gauges(metrics: &Metrics, pool: &Pool) {
    let key = pool.key();
    let port = port_label(key);
    let c = pool.counts();
    for (state, n) in [
        ("ready", c.ready),
        ("ejected", c.ejected),
        ("unhealthy", c.unhealthy),
    ] {
        metrics
            .pool_endpoints
            .with_label_values(&[key.namespace.as_str(), &key.service, &port, state])
            .set(n as i64);
    }
}

/// Takes a pool's `sluice_pool_endpoints` series out of the registry: the pool is gone.
fn remove_pool_gauges(metrics: &Metrics, key: &PoolKey) {
    let port = port_label(key);
    for state in ["ready", "ejected", "unhealthy"] {
        let _ = metrics.pool_endpoints.remove_label_values(&[
            &key.namespace,
            &key.service,
            &port,
            state,
        ]);
    }
}

/// The `port` label of a pool's gauges: the Service port, followed for `instance` pools by
/// `/instance` and any node-label filter (`80/instance pool=edge`), so that an `ip` and an
/// `instance` pool of one Service port never share a series.
fn port_label(key: &PoolKey) -> String {
    match &key.target_type {
        sluice_config::TargetType::Ip => key.port.to_string(),
        sluice_config::TargetType::Instance(sel) if sel.is_empty() => {
            format!("{}/instance", key.port)
        }
        sluice_config::TargetType::Instance(sel) => format!("{}/instance {sel}", key.port),
    }
}

/// The [`RouteMetrics`] of each distinct (Ingress, target) of the snapshot's routes, and the
/// same by labels. Routes whose labels `kept` already has keep their metrics.
#[allow(clippy::type_complexity)]
fn route_metrics(
    snapshot: &Snapshot,
    metrics: &Arc<Metrics>,
    kept: &HashMap<[String; 3], Arc<RouteMetrics>>,
) -> (
    HashMap<(usize, usize), Arc<RouteMetrics>>,
    HashMap<[String; 3], Arc<RouteMetrics>>,
) {
    let mut out = HashMap::new();
    let mut now: HashMap<[String; 3], Arc<RouteMetrics>> = HashMap::new();
    let entries = snapshot
        .routes
        .host_map()
        .iter()
        .flat_map(|(_, h)| h.iter().map(|(_, _, e)| *e))
        .chain(snapshot.routes.default_backend().copied())
        .chain(snapshot.canaries.iter().map(|c| RouteEntry {
            target: c.target,
            ingress: c.ingress,
            canary: None,
        }));
    for e in entries {
        if out.contains_key(&(e.ingress, e.target)) {
            continue;
        }
        let ingress = snapshot.ingresses.get(e.ingress).map(|i| &i.object);
        let service = match snapshot.targets.get(e.target) {
            Some(Target::Pool(k)) => k.service.as_str(),
            _ => "",
        };
        let labels = [
            ingress.map(|i| i.namespace.clone()).unwrap_or_default(),
            ingress.map(|i| i.name.clone()).unwrap_or_default(),
            service.to_string(),
        ];
        let route = match now.get(&labels).or_else(|| kept.get(&labels)) {
            Some(r) => r.clone(),
            None => {
                let [ns, ing, svc] = &labels;
                Arc::new(metrics.route(ns, ing, svc))
            }
        };
        now.insert(labels, route.clone());
        out.insert((e.ingress, e.target), route);
    }
    (out, now)
}

/// Retires the metrics of `kept` that `now` does not have: their routes are gone, and their
/// series leave the registry.
fn retire_route_metrics(
    kept: HashMap<[String; 3], Arc<RouteMetrics>>,
    now: &HashMap<[String; 3], Arc<RouteMetrics>>,
) {
    for (labels, route) in kept {
        // Empty labels are also those of unrouted requests, whose series always stay.
        let unrouted = labels.iter().all(|l| l.is_empty());
        if !now.contains_key(&labels) && !unrouted {
            route.retire();
        }
    }
}

/// The snapshot's route table with every entry resolved to its [`Route`]. A rule that
/// resolves to what the same rule (host, path, kind) of `previous` leads to keeps that route's
/// `Arc`, and a host whose rules all do shares its entry with `previous`, so two coexisting live
/// states hold one copy of what did not change. One entry of the snapshot is one route, however
/// many hosts lead to it.
fn resolve_routes(
    snapshot: &Snapshot,
    metrics: &HashMap<(usize, usize), Arc<RouteMetrics>>,
    registry: &Arc<Metrics>,
    writer: &Writer,
    previous: &RouteTable<Arc<Route>>,
) -> RouteTable<Arc<Route>> {
    let mut by_entry: HashMap<RouteEntry, Arc<Route>> = HashMap::new();
    let mut resolve = |e: &RouteEntry, old: Option<&Arc<Route>>| -> Arc<Route> {
        if let Some(r) = by_entry.get(e) {
            return r.clone();
        }
        let ingress = snapshot.ingresses.get(e.ingress);
        let object = ingress
            .map(|i| i.object.clone())
            .unwrap_or_else(|| ObjectRef::new("", ""));
        let (pool, service) = match snapshot.targets.get(e.target) {
            Some(Target::Pool(key)) => (writer.pools.get(key).cloned(), key.service.as_str()),
            _ => (None, ""),
        };
        // Every entry has its metrics (`route_metrics` walks the same table); a new handle
        // would only be a fallback.
        let route_metrics = metrics
            .get(&(e.ingress, e.target))
            .cloned()
            .unwrap_or_else(|| Arc::new(registry.route(&object.namespace, &object.name, service)));
        let canary = e
            .canary
            .and_then(|c| snapshot.canaries.get(c))
            .and_then(|c| canary_route(snapshot, c, &writer.pools, metrics));
        let candidate = Route {
            ingress: object,
            pool,
            policy: snapshot.policy(e).cloned().unwrap_or_default(),
            ssl_redirect: ingress.is_none_or(|i| i.ssl_redirect),
            metrics: route_metrics,
            filters: ingress.map_or_else(
                || Box::new([]) as Box<[_]>,
                |i| compile(&i.filters, &writer.pools, (&writer.limiters, &i.object)),
            ),
            canary,
        };
        let route = match old {
            Some(old) if old.same_as(&candidate) => old.clone(),
            _ => Arc::new(candidate),
        };
        by_entry.insert(*e, route.clone());
        route
    };
    let hosts = snapshot.routes.host_map().map(|key, host| {
        let old = previous.host_map().get_key(&key);
        let mut same = old.is_some_and(|o| o.len() == host.len());
        for (path, kind, e) in host.iter() {
            let was = old.and_then(|o| o.get(path, kind));
            let now = resolve(e, was);
            same &= was.is_some_and(|w| Arc::ptr_eq(w, &now));
        }
        match old {
            Some(old) if same => old.clone(),
            // Every entry is resolved above: this only assembles the host.
            _ => Arc::new(host.map(|e| resolve(e, None))),
        }
    });
    let default_backend = snapshot
        .routes
        .default_backend()
        .map(|e| resolve(e, previous.default_backend()));
    RouteTable::from_parts(hosts, default_backend)
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
