//! What a source has seen, already translated into model inputs: the one store both sources
//! fill (the API server's watchers, and the folder of manifests file by file).
//!
//! This plays the role of kube-rs's reflector store, but keeps only what routing and status
//! need: each object is translated when its event arrives (managedFields, specs of no interest
//! and the rest of the bulk are never cached). A relist (`Init` .. `InitDone`) is buffered and
//! swapped in whole at `InitDone`, so objects absent from the relist disappear at once and a
//! half-finished relist is never published.
//!
//! The store also records what changed since the publisher last asked ([`Store::take_changes`]):
//! a change to EndpointSlices or Nodes alone moves no route, so the publisher only brings the
//! affected pools up to date ([`crate::state::State::publish_store`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use std::sync::Arc;

use sluice_config::build::{pool_endpoints, rule_hosts};
use sluice_config::hostmap::{parse_rule_host, HostKey};
use sluice_config::model::{
    EndpointSliceInput, IngressClassInput, IngressInput, InputRefs, NodeInput, ObjectRef,
    SecretInput, ServiceInput,
};
use sluice_config::rules::basic_auth::secret_of;
use sluice_config::rules::FROM_TO_WWW_REDIRECT;
use sluice_config::{PoolKey, TargetType};
use tokio::sync::Notify;

use crate::tls::{SecretData, SecretMaterial};

/// An address in `status.loadBalancer.ingress`: an IP or a hostname.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LbAddress {
    Ip(String),
    Hostname(String),
}

/// Facts about an Ingress that its status and Events need.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IngressMeta {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// `status.loadBalancer.ingress` as last observed.
    pub status: Vec<LbAddress>,
}

/// One translated object. The model input is shared (`Arc`): a build borrows it from a copy of
/// the pointers taken under the store's lock ([`Store::shared`]), so no object is copied.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Ingress(Arc<IngressInput>, IngressMeta),
    Class(Arc<IngressClassInput>),
    Service(Arc<ServiceInput>, Vec<LbAddress>),
    Slice(Arc<EndpointSliceInput>),
    /// A `kubernetes.io/tls` Secret: its keys, and the bytes of the TLS ones.
    Secret(Arc<SecretInput>, Arc<SecretData>),
    /// A Node: its addresses, conditions and labels (its images, capacity and the rest are
    /// dropped at ingest).
    Node(Arc<NodeInput>),
}

impl Entry {
    /// Whether both give snapshot building the same input: an Ingress's status and
    /// resourceVersion do not count.
    fn same_input(&self, other: &Entry) -> bool {
        match (self, other) {
            (Entry::Ingress(a, _), Entry::Ingress(b, _)) => a == b,
            (a, b) => a == b,
        }
    }
}

/// The model inputs a store holds at one moment, shared with it.
#[derive(Debug, Clone, Default)]
pub struct SharedInputs {
    pub ingresses: Vec<Arc<IngressInput>>,
    pub classes: Vec<Arc<IngressClassInput>>,
    pub services: Vec<Arc<ServiceInput>>,
    pub slices: Vec<Arc<EndpointSliceInput>>,
    pub secrets: Vec<Arc<SecretInput>>,
    pub nodes: Vec<Arc<NodeInput>>,
}

impl SharedInputs {
    /// The inputs borrowed, as snapshot building reads them.
    pub fn refs(&self) -> InputRefs<'_> {
        InputRefs {
            ingresses: self.ingresses.iter().map(|a| &**a).collect(),
            ..self.refs_without_ingresses()
        }
    }

    /// [`SharedInputs::refs`] with no Ingress, for a caller that chooses them.
    pub fn refs_without_ingresses(&self) -> InputRefs<'_> {
        InputRefs {
            ingresses: Vec::new(),
            classes: self.classes.iter().map(|a| &**a).collect(),
            services: self.services.iter().map(|a| &**a).collect(),
            slices: self.slices.iter().map(|a| &**a).collect(),
            secrets: self.secrets.iter().map(|a| &**a).collect(),
            nodes: self.nodes.iter().map(|a| &**a).collect(),
        }
    }
}

/// The kinds watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Ingress,
    IngressClass,
    Service,
    EndpointSlice,
    Secret,
    Node,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Ingress,
        Kind::IngressClass,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::Node,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::Node => "Node",
        }
    }
}

/// What one watcher covers: a kind, in one namespace or (`None`) in all of them.
pub type Scope = (Kind, Option<String>);

#[derive(Default)]
struct Inner {
    objects: BTreeMap<Kind, BTreeMap<ObjectRef, Entry>>,
    /// Relists in progress, by watcher.
    relists: BTreeMap<Scope, BTreeMap<ObjectRef, Entry>>,
    /// Watchers whose first complete list has arrived.
    listed: BTreeSet<Scope>,
    /// The watchers each kind has, when [`Store::watching`] named them; a kind not named here
    /// has one watcher over all namespaces.
    watchers: BTreeMap<Kind, BTreeSet<Option<String>>>,
    /// Bumped on every change.
    generation: u64,
    /// What changed since the last [`Store::take_changes`].
    changes: Changes,
    /// The Secrets that basic auth reads, each fetched by name by its own watcher
    /// ([`crate::k8s::auth_secrets`]): kept apart from the TLS Secrets, whose relists replace
    /// their kind whole.
    auth_secrets: BTreeMap<ObjectRef, Arc<SecretData>>,
    /// The EndpointSlices of each Service, by (namespace, Service).
    /// (A hash map of small sorted vectors: with one slice per Service, as most have, a B-tree
    /// set per Service would hold a whole node for one key.)
    slices_by_service: HashMap<(String, String), Vec<ObjectRef>>,
    /// The Ingresses naming each host, in a rule or in `spec.tls`, by [`host_index_keys`]: an
    /// edit finds the Ingresses of the hosts it touches without reading every Ingress. Keyed by
    /// a hash of the host (8 bytes instead of the name; a collision only adds an Ingress the
    /// caller's own check of its hosts drops) and holding the inputs the store holds.
    ingresses_by_host: HashMap<u64, Vec<Arc<IngressInput>>>,
    /// The Ingresses with `sluice.dev/from-to-www-redirect`, whose rules reach a second host.
    www_ingresses: BTreeSet<ObjectRef>,
    /// The Ingresses asking for basic auth with a Secret (whose Secrets are watched).
    auth_ingresses: BTreeSet<ObjectRef>,
}

/// The index key of a host as written (`a.example`, `*.example`, `""` for none).
fn host_key(host: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    host.hash(&mut h);
    h.finish()
}

/// The keys an Ingress is indexed under: each valid host of its rules and of its `spec.tls`
/// entries, as written (`a.example`, `*.example`), and `""` for a rule without a host.
pub fn host_index_keys(ingress: &IngressInput) -> BTreeSet<u64> {
    let tls = ingress
        .tls
        .iter()
        .flat_map(|t| &t.hosts)
        .filter_map(|h| parse_rule_host(Some(h)).ok());
    rule_hosts(ingress)
        .chain(tls)
        .map(|k| match k {
            HostKey::Exact(name) => host_key(name),
            HostKey::Wildcard(suffix) => host_key(&format!("*.{suffix}")),
            HostKey::Any => host_key(""),
        })
        .collect()
}

/// What changed in a store since the publisher last looked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Every kind with an object added, changed or deleted (or relisted).
    pub kinds: BTreeSet<Kind>,
    /// The Services, as (namespace, name), whose EndpointSlices changed.
    pub services: BTreeSet<(String, String)>,
    /// EndpointSlices were relisted: any Service's endpoints may have changed.
    pub all_slices: bool,
    /// Each Ingress added, changed or deleted one by one: the input at the last publish and the
    /// input now (`None`: absent). A relist of Ingresses is not itemised: see `all_ingresses`.
    pub ingresses: BTreeMap<ObjectRef, IngressChange>,
    /// Ingresses were relisted: any of them may have changed.
    pub all_ingresses: bool,
}

/// One Ingress's input before and after a change (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressChange {
    pub before: Option<Arc<IngressInput>>,
    pub after: Option<Arc<IngressInput>>,
}

impl Changes {
    /// Only EndpointSlices or Nodes changed: endpoints move, no route does.
    pub fn endpoints_only(&self) -> bool {
        !self.kinds.is_empty()
            && self
                .kinds
                .iter()
                .all(|k| matches!(k, Kind::EndpointSlice | Kind::Node))
    }
}

/// The Service an EndpointSlice entry belongs to.
fn slice_service(key: &ObjectRef, entry: &Entry) -> Option<(String, String)> {
    match entry {
        Entry::Slice(s) => Some((key.namespace.clone(), s.service.clone())),
        _ => None,
    }
}

impl Inner {
    /// The inputs of the Ingresses `keys`, in key order.
    fn ingresses_of(&self, keys: BTreeSet<&ObjectRef>) -> Vec<Arc<IngressInput>> {
        let Some(all) = self.objects.get(&Kind::Ingress) else {
            return Vec::new();
        };
        keys.into_iter()
            .filter_map(|k| match all.get(k) {
                Some(Entry::Ingress(input, _)) => Some(input.clone()),
                _ => None,
            })
            .collect()
    }

    /// Records a change of `key` from `old` to `new` (either may be absent).
    fn record(&mut self, kind: Kind, key: &ObjectRef, old: Option<&Entry>, new: Option<&Entry>) {
        self.changes.kinds.insert(kind);
        if kind == Kind::Ingress {
            let input = |e: Option<&Entry>| match e {
                Some(Entry::Ingress(i, _)) => Some(i.clone()),
                _ => None,
            };
            let after = input(new);
            self.index_ingress(key, input(old).as_ref(), after.as_ref());
            // Several changes between two publishes: the input the last publish saw stays.
            self.changes
                .ingresses
                .entry(key.clone())
                .or_insert_with(|| IngressChange {
                    before: input(old),
                    after: None,
                })
                .after = after;
        }
        for (service, add) in [
            (old.and_then(|e| slice_service(key, e)), false),
            (new.and_then(|e| slice_service(key, e)), true),
        ] {
            let Some(service) = service else { continue };
            let keys = self.slices_by_service.entry(service.clone()).or_default();
            match (keys.binary_search(key), add) {
                (Err(at), true) => keys.insert(at, key.clone()),
                (Ok(at), false) => {
                    keys.remove(at);
                }
                _ => {}
            }
            if keys.is_empty() {
                self.slices_by_service.remove(&service);
            }
            self.changes.services.insert(service);
        }
    }

    /// Moves `key` in the host index from what `old` names to what `new` names.
    fn index_ingress(
        &mut self,
        key: &ObjectRef,
        old: Option<&Arc<IngressInput>>,
        new: Option<&Arc<IngressInput>>,
    ) {
        if let Some(old) = old {
            for host in host_index_keys(old) {
                if let Some(inputs) = self.ingresses_by_host.get_mut(&host) {
                    inputs.retain(|i| !Arc::ptr_eq(i, old));
                    if inputs.is_empty() {
                        self.ingresses_by_host.remove(&host);
                    }
                }
            }
        }
        if let Some(new) = new {
            for host in host_index_keys(new) {
                self.ingresses_by_host
                    .entry(host)
                    .or_default()
                    .push(new.clone());
            }
        }
        if new.is_some_and(|i| i.annotations.contains_key(FROM_TO_WWW_REDIRECT)) {
            self.www_ingresses.insert(key.clone());
        } else {
            self.www_ingresses.remove(key);
        }
        if new.is_some_and(|i| secret_of(&i.namespace, &i.annotations).is_some()) {
            self.auth_ingresses.insert(key.clone());
        } else {
            self.auth_ingresses.remove(key);
        }
    }

    /// Rebuilds the host index of Ingresses after a relist.
    fn reindex_ingresses(&mut self) {
        self.ingresses_by_host.clear();
        self.www_ingresses.clear();
        self.auth_ingresses.clear();
        let ingresses: Vec<(ObjectRef, Arc<IngressInput>)> = self
            .objects
            .get(&Kind::Ingress)
            .into_iter()
            .flatten()
            .filter_map(|(k, e)| match e {
                Entry::Ingress(i, _) => Some((k.clone(), i.clone())),
                _ => None,
            })
            .collect();
        for (key, input) in &ingresses {
            self.index_ingress(key, None, Some(input));
        }
    }

    /// Rebuilds the Service index of EndpointSlices after a relist.
    fn reindex_slices(&mut self) {
        self.slices_by_service.clear();
        if let Some(slices) = self.objects.get(&Kind::EndpointSlice) {
            for (key, entry) in slices {
                // Keys come in order: each Service's list stays sorted.
                if let Some(service) = slice_service(key, entry) {
                    self.slices_by_service
                        .entry(service)
                        .or_default()
                        .push(key.clone());
                }
            }
        }
    }
}

/// The translated objects of every watched kind, shared by the watchers and the publisher.
#[derive(Default)]
pub struct Store {
    inner: Mutex<Inner>,
    changed: Notify,
}

impl Store {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A poisoned lock means a watcher panicked mid-update; the maps are still consistent
        // (every update is a single insert/remove/swap), so keep serving them.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    fn touch(&self, inner: &mut Inner) {
        inner.generation += 1;
        self.changed.notify_one();
    }

    /// An object was added or changed. An object whose translation did not change (a kubelet
    /// heartbeat, an image list update, a resync, a manifest file rewritten with other objects
    /// changed) is not a change: it costs nothing. An Ingress whose status alone changed is kept
    /// and wakes the publisher, with nothing to rebuild (its status writer reads it).
    pub fn apply(&self, kind: Kind, key: ObjectRef, entry: Entry) {
        self.with(|i| {
            let objects = i.objects.entry(kind).or_default();
            match objects.get(&key) {
                Some(old) if *old == entry => return,
                Some(old) if old.same_input(&entry) => {
                    // The input stays the one indexed and shared (only status facts changed).
                    let entry = match (old, entry) {
                        (Entry::Ingress(input, _), Entry::Ingress(_, meta)) => {
                            Entry::Ingress(input.clone(), meta)
                        }
                        (_, entry) => entry,
                    };
                    objects.insert(key, entry);
                    self.touch(i);
                    return;
                }
                _ => {}
            }
            let old = objects.insert(key.clone(), entry.clone());
            i.record(kind, &key, old.as_ref(), Some(&entry));
            self.touch(i);
        });
    }

    /// An object was deleted.
    pub fn delete(&self, kind: Kind, key: &ObjectRef) {
        self.with(|i| {
            if let Some(old) = i.objects.entry(kind).or_default().remove(key) {
                i.record(kind, key, Some(&old), None);
                self.touch(i);
            }
        });
    }

    /// Says which watchers `kind` has: one per namespace in `namespaces`, or one over all
    /// namespaces when it is empty. Readiness waits for a complete list from each.
    pub fn watching(&self, kind: Kind, namespaces: &[String]) {
        let scopes = match namespaces {
            [] => BTreeSet::from([None]),
            some => some.iter().cloned().map(Some).collect(),
        };
        self.with(|i| {
            i.watchers.insert(kind, scopes);
        });
    }

    /// A relist by the watcher of `scope` starts.
    pub fn relist_begin(&self, scope: &Scope) {
        self.with(|i| {
            i.relists.insert(scope.clone(), BTreeMap::new());
        });
    }

    /// An object of the relist in progress.
    pub fn relist_add(&self, scope: &Scope, key: ObjectRef, entry: Entry) {
        self.with(|i| {
            i.relists
                .entry(scope.clone())
                .or_default()
                .insert(key, entry);
        });
    }

    /// The relist of `scope` is complete: it replaces everything known of its kind in its
    /// namespace (or in all of them), and nothing another watcher of the kind reported.
    pub fn relist_done(&self, scope: &Scope) {
        self.with(|i| {
            let fresh = i.relists.remove(scope).unwrap_or_default();
            let (kind, namespace) = scope;
            let objects = i.objects.entry(*kind).or_default();
            match namespace {
                None => *objects = fresh,
                Some(ns) => {
                    objects.retain(|k, _| &k.namespace != ns);
                    objects.extend(fresh);
                }
            }
            i.listed.insert(scope.clone());
            i.changes.kinds.insert(*kind);
            if *kind == Kind::EndpointSlice {
                i.changes.all_slices = true;
                i.reindex_slices();
            }
            if *kind == Kind::Ingress {
                i.changes.all_ingresses = true;
                i.reindex_ingresses();
            }
            self.touch(i);
        });
    }

    /// Whether every watcher of every kind has listed completely at least once.
    pub fn all_listed(&self) -> bool {
        self.with(|i| {
            Kind::ALL.iter().all(|k| match i.watchers.get(k) {
                Some(scopes) => scopes.iter().all(|ns| i.listed.contains(&(*k, ns.clone()))),
                None => i.listed.contains(&(*k, None)),
            })
        })
    }

    /// Waits for the next change (changes before the call count once).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    pub fn generation(&self) -> u64 {
        self.with(|i| i.generation)
    }

    /// What changed since the last call (everything, before the first).
    pub fn take_changes(&self) -> Changes {
        self.with(|i| std::mem::take(&mut i.changes))
    }

    /// The endpoint addresses of each of `pools` from what is known now (see
    /// [`sluice_config::build::pool_endpoints`]), in order, under one lock; the Nodes are
    /// gathered once for all of them.
    pub fn pool_endpoints(&self, pools: &[&PoolKey]) -> Vec<Vec<std::net::SocketAddr>> {
        self.with(|i| {
            let nodes: Vec<&NodeInput> = if pools.iter().any(|k| k.target_type != TargetType::Ip) {
                i.objects
                    .get(&Kind::Node)
                    .into_iter()
                    .flat_map(|m| m.values())
                    .filter_map(|e| match e {
                        Entry::Node(n) => Some(&**n),
                        _ => None,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            pools
                .iter()
                .map(|key| {
                    let service = match i
                        .objects
                        .get(&Kind::Service)
                        .and_then(|m| m.get(&ObjectRef::new(&key.namespace, &key.service)))
                    {
                        Some(Entry::Service(s, _)) => Some(&**s),
                        _ => None,
                    };
                    let slices: Vec<&EndpointSliceInput> = i
                        .slices_by_service
                        .get(&(key.namespace.clone(), key.service.clone()))
                        .into_iter()
                        .flatten()
                        .filter_map(|k| match i.objects.get(&Kind::EndpointSlice)?.get(k)? {
                            Entry::Slice(s) => Some(&**s),
                            _ => None,
                        })
                        .collect();
                    pool_endpoints(key, service, &slices, &nodes)
                })
                .collect()
        })
    }

    /// The model inputs of everything known now, shared: the lock is held only to copy
    /// pointers, so watchers are not held up by a build.
    pub fn shared(&self) -> SharedInputs {
        self.with(|i| {
            let mut out = SharedInputs::default();
            for entry in i.objects.values().flat_map(|m| m.values()) {
                match entry {
                    Entry::Ingress(input, _) => out.ingresses.push(input.clone()),
                    Entry::Class(c) => out.classes.push(c.clone()),
                    Entry::Service(s, _) => out.services.push(s.clone()),
                    Entry::Slice(s) => out.slices.push(s.clone()),
                    Entry::Secret(s, _) => out.secrets.push(s.clone()),
                    Entry::Node(n) => out.nodes.push(n.clone()),
                }
            }
            out
        })
    }

    /// The model inputs besides Ingresses that a partial build needs: every IngressClass and
    /// Node, and of the Services and EndpointSlices only those of the Services in `services` (as
    /// (namespace, name)), found by key rather than by a walk over all of them.
    pub fn shared_for(&self, services: &BTreeSet<(String, String)>) -> SharedInputs {
        self.with(|i| {
            let mut out = SharedInputs::default();
            let values = |kind: Kind| i.objects.get(&kind).into_iter().flat_map(|m| m.values());
            for entry in values(Kind::IngressClass).chain(values(Kind::Node)) {
                match entry {
                    Entry::Class(c) => out.classes.push(c.clone()),
                    Entry::Node(n) => out.nodes.push(n.clone()),
                    _ => {}
                }
            }
            let (services_of, slices_of) = (
                i.objects.get(&Kind::Service),
                i.objects.get(&Kind::EndpointSlice),
            );
            for (namespace, name) in services {
                let key = ObjectRef::new(namespace, name);
                if let Some(Entry::Service(s, _)) = services_of.and_then(|m| m.get(&key)) {
                    out.services.push(s.clone());
                }
                let slices = i
                    .slices_by_service
                    .get(&(namespace.clone(), name.clone()))
                    .into_iter()
                    .flatten();
                for key in slices {
                    if let Some(Entry::Slice(s)) = slices_of.and_then(|m| m.get(key)) {
                        out.slices.push(s.clone());
                    }
                }
            }
            out
        })
    }

    /// The Ingresses indexed under any of `hosts` (see [`host_index_keys`]), each once.
    pub fn ingresses_naming<'a>(
        &self,
        hosts: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Arc<IngressInput>> {
        self.with(|i| {
            let mut found: Vec<Arc<IngressInput>> = hosts
                .into_iter()
                .filter_map(|h| i.ingresses_by_host.get(&host_key(h)))
                .flatten()
                .cloned()
                .collect();
            found.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            found.dedup_by(|a, b| Arc::ptr_eq(a, b));
            found
        })
    }

    /// The Ingresses with `sluice.dev/from-to-www-redirect`.
    pub fn www_ingresses(&self) -> Vec<Arc<IngressInput>> {
        self.with(|i| i.ingresses_of(i.www_ingresses.iter().collect()))
    }

    /// The Ingresses asking for basic auth with a Secret (see
    /// [`sluice_config::rules::basic_auth::secret_of`]).
    pub fn auth_ingresses(&self) -> Vec<Arc<IngressInput>> {
        self.with(|i| i.ingresses_of(i.auth_ingresses.iter().collect()))
    }

    /// The material of every Secret known now: the TLS Secrets, and the Secrets basic auth
    /// reads (which win for a Secret that is both: theirs has every key).
    pub fn secret_material(&self) -> SecretMaterial {
        self.with(|i| {
            let mut out: SecretMaterial = i
                .objects
                .get(&Kind::Secret)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, e)| match e {
                            Entry::Secret(_, data) => Some((k.clone(), data.clone())),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.extend(i.auth_secrets.iter().map(|(k, d)| (k.clone(), d.clone())));
            out
        })
    }

    /// A Secret that basic auth reads was fetched (`Some`) or found absent (`None`). A change
    /// is a change of Secrets: the next publish builds everything.
    pub fn set_auth_secret(&self, key: ObjectRef, data: Option<Arc<SecretData>>) {
        self.with(|i| {
            let old = match data {
                Some(data) => i
                    .auth_secrets
                    .insert(key, data.clone())
                    .filter(|o| *o == data),
                None => match i.auth_secrets.remove(&key) {
                    Some(_) => None,
                    None => return,
                },
            };
            if old.is_none() {
                i.changes.kinds.insert(Kind::Secret);
                self.touch(i);
            }
        });
    }

    /// Wakes the publisher without a change (a watcher it waits for has listed).
    pub fn wake(&self) {
        self.with(|i| self.touch(i));
    }

    /// Forgets the Secrets basic auth no longer reads (not in `keep`).
    pub fn retain_auth_secrets(&self, keep: &BTreeSet<ObjectRef>) {
        self.with(|i| {
            let before = i.auth_secrets.len();
            i.auth_secrets.retain(|k, _| keep.contains(k));
            if i.auth_secrets.len() != before {
                i.changes.kinds.insert(Kind::Secret);
                self.touch(i);
            }
        });
    }

    /// The uid of one Ingress, if it is known.
    pub fn ingress_uid(&self, key: &ObjectRef) -> Option<String> {
        self.with(|i| match i.objects.get(&Kind::Ingress)?.get(key)? {
            Entry::Ingress(_, meta) => meta.uid.clone(),
            _ => None,
        })
    }

    /// Calls `f` with every Ingress and its status facts, in key order, under the store's lock:
    /// nothing is copied.
    pub fn scan_ingress_meta<T>(
        &self,
        f: impl for<'m> FnOnce(&mut dyn Iterator<Item = (&'m ObjectRef, &'m IngressMeta)>) -> T,
    ) -> T {
        self.with(|i| {
            let mut metas = i
                .objects
                .get(&Kind::Ingress)
                .into_iter()
                .flatten()
                .filter_map(|(k, e)| match e {
                    Entry::Ingress(_, meta) => Some((k, meta)),
                    _ => None,
                });
            f(&mut metas)
        })
    }

    /// The resourceVersion of an Ingress, if it is known and has one.
    pub fn ingress_resource_version(&self, key: &ObjectRef) -> Option<String> {
        self.with(|i| match i.objects.get(&Kind::Ingress)?.get(key)? {
            Entry::Ingress(_, meta) => meta.resource_version.clone(),
            _ => None,
        })
    }

    /// The load-balancer addresses of a Service, if it is known.
    pub fn service_lb(&self, key: &ObjectRef) -> Option<Vec<LbAddress>> {
        self.with(|i| match i.objects.get(&Kind::Service)?.get(key)? {
            Entry::Service(_, lb) => Some(lb.clone()),
            _ => None,
        })
    }

    /// Number of objects known, by kind.
    pub fn counts(&self) -> BTreeMap<Kind, usize> {
        self.with(|i| i.objects.iter().map(|(k, m)| (*k, m.len())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str) -> Entry {
        Entry::Class(Arc::new(IngressClassInput {
            name: name.into(),
            controller: "c".into(),
            is_default: false,
        }))
    }

    fn key(name: &str) -> ObjectRef {
        ObjectRef::new("", name)
    }

    #[test]
    fn a_relist_replaces_the_kind_whole_at_init_done() {
        let store = Store::default();
        let all = (Kind::IngressClass, None);
        store.relist_begin(&all);
        store.relist_add(&all, key("a"), class("a"));
        store.relist_add(&all, key("b"), class("b"));
        assert!(store.shared().classes.is_empty(), "nothing before InitDone");
        store.relist_done(&all);
        assert_eq!(store.shared().classes.len(), 2);

        store.apply(Kind::IngressClass, key("c"), class("c"));
        // A relist that no longer contains `a` and `c`: both disappear at InitDone, not before.
        store.relist_begin(&all);
        store.relist_add(&all, key("b"), class("b"));
        assert_eq!(store.shared().classes.len(), 3);
        store.relist_done(&all);
        let names: Vec<_> = store
            .shared()
            .classes
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(names, vec!["b"]);
    }

    #[test]
    fn readiness_needs_a_complete_list_of_every_kind() {
        let store = Store::default();
        for (n, kind) in Kind::ALL.iter().enumerate() {
            assert!(!store.all_listed(), "ready after {n} kinds");
            store.relist_begin(&(*kind, None));
            store.relist_done(&(*kind, None));
        }
        assert!(store.all_listed());
    }

    fn service(ns: &str, name: &str) -> Entry {
        Entry::Service(
            Arc::new(ServiceInput {
                namespace: ns.into(),
                name: name.into(),
                ..Default::default()
            }),
            Vec::new(),
        )
    }

    #[test]
    fn watchers_of_one_kind_in_several_namespaces_each_replace_only_their_namespace() {
        let store = Store::default();
        let namespaces = ["team-a".to_string(), "team-b".to_string()];
        for kind in Kind::ALL {
            let scoped = matches!(kind, Kind::Service);
            store.watching(kind, if scoped { &namespaces } else { &[] });
            if !scoped {
                store.relist_begin(&(kind, None));
                store.relist_done(&(kind, None));
            }
        }
        let (a, b) = (
            (Kind::Service, Some("team-a".to_string())),
            (Kind::Service, Some("team-b".to_string())),
        );
        store.relist_begin(&a);
        store.relist_add(&a, ObjectRef::new("team-a", "x"), service("team-a", "x"));
        store.relist_done(&a);
        assert!(!store.all_listed(), "ready before team-b was listed");
        store.relist_begin(&b);
        store.relist_add(&b, ObjectRef::new("team-b", "y"), service("team-b", "y"));
        store.relist_done(&b);
        assert!(store.all_listed());
        // team-a relists without x: team-b's y stays.
        store.relist_begin(&a);
        store.relist_done(&a);
        let names: Vec<_> = store
            .shared()
            .services
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(names, vec!["y"]);
    }

    #[test]
    fn a_node_update_that_changes_nothing_sluice_reads_is_not_a_change() {
        let store = Store::default();
        let node = |ready: bool| {
            Entry::Node(Arc::new(NodeInput {
                name: "n1".into(),
                internal_ips: vec!["10.0.0.1".into()],
                ready,
                ..Default::default()
            }))
        };
        store.apply(Kind::Node, key("n1"), node(true));
        let g = store.generation();
        store.apply(Kind::Node, key("n1"), node(true));
        assert_eq!(store.generation(), g, "a heartbeat rebuilt the snapshot");
        store.apply(Kind::Node, key("n1"), node(false));
        assert_eq!(store.generation(), g + 1);
        assert!(!store.shared().nodes[0].ready);
    }

    #[test]
    fn auth_secrets_join_the_material_and_only_a_real_change_of_them_rebuilds() {
        let store = Store::default();
        let users = ObjectRef::new("shop", "users");
        let data = |auth: &[u8]| {
            Arc::new(SecretData {
                keys: Some(Arc::new(BTreeMap::from([("auth".into(), Arc::from(auth))]))),
                ..Default::default()
            })
        };
        store.set_auth_secret(users.clone(), Some(data(b"bob:x")));
        assert_eq!(store.take_changes().kinds, BTreeSet::from([Kind::Secret]));
        assert_eq!(store.secret_material()[&users], data(b"bob:x"));
        let g = store.generation();
        store.set_auth_secret(users.clone(), Some(data(b"bob:x")));
        store.set_auth_secret(ObjectRef::new("shop", "never-seen"), None);
        assert_eq!(
            store.generation(),
            g,
            "the same Secret again woke the publisher"
        );
        store.set_auth_secret(users.clone(), Some(data(b"bob:y")));
        assert_eq!(store.generation(), g + 1);
        // No longer named: forgotten, and that is a change.
        store.retain_auth_secrets(&BTreeSet::new());
        assert!(store.secret_material().is_empty());
        assert_eq!(store.generation(), g + 2);
        assert_eq!(store.take_changes().kinds, BTreeSet::from([Kind::Secret]));
    }

    #[test]
    fn deleting_an_unknown_object_is_not_a_change() {
        let store = Store::default();
        let g = store.generation();
        store.delete(Kind::Service, &key("nope"));
        assert_eq!(store.generation(), g);
        store.apply(Kind::IngressClass, key("a"), class("a"));
        store.delete(Kind::IngressClass, &key("a"));
        assert_eq!(store.generation(), g + 2);
    }

    #[test]
    fn the_ingresses_of_a_host_are_found_through_edits_deletes_and_relists() {
        use sluice_config::fixtures::{backend, ingress};
        let store = Store::default();
        let put = |name: &str, b: sluice_config::fixtures::IngressBuilder| {
            let entry = Entry::Ingress(Arc::new(b.build()), IngressMeta::default());
            store.apply(Kind::Ingress, ObjectRef::new("default", name), entry);
        };
        let names = |hosts: &[&str]| -> Vec<String> {
            store
                .ingresses_naming(hosts.iter().copied())
                .iter()
                .map(|i| i.name.clone())
                .collect()
        };
        // Ingress `name` with rules for `hosts` (`None`: no host), each with one path.
        let web = |name: &str, hosts: &[Option<&str>]| {
            hosts.iter().fold(ingress("default", name), |b, h| {
                b.rule(*h).path("/", "Prefix", backend("web", 80))
            })
        };
        put("a", web("a", &[Some("a.test"), Some("*.test")]));
        put(
            "b",
            web("b", &[Some("b.test")]).tls(&["a.test"], Some("cert")),
        );
        put(
            "c",
            web("c", &[None]).annotation(FROM_TO_WWW_REDIRECT, "true"),
        );
        assert_eq!(names(&["a.test"]), ["a", "b"]);
        assert_eq!(names(&["*.test", ""]), ["a", "c"]);
        assert_eq!(names(&["B.test", "nothing.test"]), Vec::<String>::new());
        // An edit moves the Ingress to its new hosts; a delete removes it.
        put("a", web("a", &[Some("d.test")]));
        assert_eq!(names(&["a.test", "*.test"]), ["b"]);
        assert_eq!(names(&["d.test"]), ["a"]);
        store.delete(Kind::Ingress, &ObjectRef::new("default", "b"));
        assert_eq!(names(&["a.test", "b.test"]), Vec::<String>::new());
        let www: Vec<String> = store
            .www_ingresses()
            .iter()
            .map(|i| i.name.clone())
            .collect();
        assert_eq!(www, ["c"]);
        // A relist replaces the index with what it listed.
        let all = (Kind::Ingress, None);
        store.relist_begin(&all);
        let entry = Entry::Ingress(
            Arc::new(web("e", &[Some("e.test")]).build()),
            IngressMeta::default(),
        );
        store.relist_add(&all, ObjectRef::new("default", "e"), entry);
        store.relist_done(&all);
        assert_eq!(names(&["d.test", ""]), Vec::<String>::new());
        assert_eq!(names(&["e.test"]), ["e"]);
        assert!(store.www_ingresses().is_empty());
    }

    #[test]
    fn an_unchanged_object_is_no_change_and_an_ingress_status_alone_changes_no_kind() {
        let store = Store::default();
        let ingress = |status: Vec<LbAddress>| {
            Entry::Ingress(
                Arc::new(IngressInput {
                    namespace: "default".into(),
                    name: "web".into(),
                    ..Default::default()
                }),
                IngressMeta {
                    status,
                    ..Default::default()
                },
            )
        };
        let key = ObjectRef::new("default", "web");
        store.apply(Kind::Ingress, key.clone(), ingress(vec![]));
        assert_eq!(store.take_changes().kinds, BTreeSet::from([Kind::Ingress]));
        let g = store.generation();

        store.apply(Kind::Ingress, key.clone(), ingress(vec![]));
        assert_eq!(
            store.generation(),
            g,
            "the same object again woke the publisher"
        );

        let lb = vec![LbAddress::Ip("10.0.0.1".into())];
        store.apply(Kind::Ingress, key.clone(), ingress(lb.clone()));
        assert_eq!(
            store.generation(),
            g + 1,
            "a status change reaches the status writer"
        );
        assert!(
            store.take_changes().kinds.is_empty(),
            "a status change rebuilt routes"
        );
        let status = store.scan_ingress_meta(|metas| {
            let mut metas = metas;
            Iterator::find(&mut metas, |(k, _)| **k == key).map(|(_, m)| m.status.clone())
        });
        assert_eq!(status, Some(lb));
    }
}
