//! Snapshot building: one pure function from Ingress-shaped inputs to routes and endpoint sets.
//!
//! [`build`] decides which Ingresses this controller serves (IngressClass rules), validates and
//! merges their rules oldest first (so a contested rule goes to the oldest Ingress), resolves each
//! backend to a Service port and the ready endpoint addresses behind it (pod addresses, or Node
//! addresses for `instance` targets, see [`crate::targets`]), computes the TLS policy
//! of every name in `spec.tls` ([`crate::tls`]), and reports every rule it skipped with the
//! reason. A bad rule degrades only itself.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::annotations::{upstream_policy, BackendProtocol, UpstreamPolicy};
use crate::canary::{is_canary, Canary};
use crate::finding::{Finding, Reason};
use crate::health::{service_health_check, HealthCheckOverrides};
use crate::hostmap::{HostKey, HostName};
use crate::model::{
    BackendInput, EndpointSliceInput, IngressClassInput, IngressInput, InputRefs, Inputs,
    NodeInput, ObjectRef, PortRef, ServiceInput,
};
use crate::ownership::{host_text, CrossNamespacePaths, HostOwners, Ownership};
use crate::routes::{parse_rule_host, MatchKind, RouteEntry, RouteTable, TargetId};
use crate::rules::Filter;
use crate::targets::TargetType;
use crate::tls::TlsPolicy;

/// The legacy annotation that names a class, honoured before `spec.ingressClassName`.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Which Ingresses this instance serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassPolicy {
    /// Our `spec.controller` value.
    pub controller: String,
    /// Our class name (used by the legacy annotation, and for `spec.ingressClassName` when no
    /// IngressClass object of that name exists, as in a folder of manifests).
    pub class_name: String,
    /// Serve class-less Ingresses even without a default IngressClass of ours.
    pub serve_classless: bool,
}

impl From<&crate::Settings> for ClassPolicy {
    fn from(s: &crate::Settings) -> Self {
        ClassPolicy {
            controller: s.controller_name.clone(),
            class_name: s.ingress_class.clone(),
            serve_classless: s.watch_ingress_without_class,
        }
    }
}

/// A pool of endpoints: one Service port in one namespace, reached one way.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolKey {
    pub namespace: String,
    pub service: String,
    /// The Service port number (`spec.ports[].port`) that the backend resolved to.
    pub port: i32,
    /// Pods or Nodes (and which Nodes): an `ip` and an `instance` route to one Service port
    /// have different endpoints, so they are different pools.
    pub target_type: TargetType,
}

/// Snapshot-wide defaults taken from the settings, which an Ingress's annotations may override.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildDefaults {
    /// `upstream.target_type`.
    pub target_type: TargetType,
    /// `controller.host_owners`.
    pub host_owners: HostOwners,
    /// `controller.cross_namespace_paths`.
    pub cross_namespace_paths: CrossNamespacePaths,
}

impl From<&crate::Settings> for BuildDefaults {
    fn from(s: &crate::Settings) -> Self {
        BuildDefaults {
            target_type: s.target_type.clone(),
            host_owners: s.host_owners.clone(),
            cross_namespace_paths: s.cross_namespace_paths,
        }
    }
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// Where a matched rule sends its requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The ready endpoints of a Service port.
    Pool(PoolKey),
    /// The backend could not be resolved: requests get 503, never a shorter path's backend.
    Unresolved { reason: String },
}

/// Facts about a served Ingress that requests and reports refer to by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedIngress {
    pub object: ObjectRef,
    pub annotations: BTreeMap<String, String>,
    /// Whether its routes redirect plain HTTP to https on hosts with TLS
    /// (`sluice.dev/ssl-redirect`).
    pub ssl_redirect: bool,
    /// The per-route rules of its policy annotations ([`crate::rules`]), carried by each of its
    /// routes.
    pub filters: Arc<[Filter]>,
}

/// An immutable description of everything the proxy should do, built whole and swapped whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub routes: RouteTable,
    /// Indexed by [`RouteEntry::target`].
    pub targets: Vec<Target>,
    /// How each target reaches its upstream (timeouts from the owning Ingress's annotations,
    /// the protocol from them or from the Service port's `appProtocol`);
    /// indexed like `targets`. Two Ingresses with different annotations on one Service port get
    /// two targets over the same pool.
    pub policies: Vec<UpstreamPolicy>,
    /// Indexed by [`RouteEntry::ingress`]; oldest first.
    pub ingresses: Vec<ServedIngress>,
    /// The ready endpoint addresses of every pool a route uses, sorted.
    pub endpoints: BTreeMap<PoolKey, Vec<SocketAddr>>,
    /// What the Service's annotations set about the active health checks of each pool, for
    /// pools whose Service sets any (the others follow the settings alone).
    pub health_checks: BTreeMap<PoolKey, HealthCheckOverrides>,
    /// Names with TLS: their certificate Secrets and client authentication.
    pub tls: TlsPolicy,
    /// Everything not served as written, sorted.
    pub skipped: Vec<Finding>,
    /// The canaries of rules, indexed by [`RouteEntry::canary`].
    pub canaries: Vec<Canary>,
    /// Hosts that `sluice.dev/from-to-www-redirect` sends to a rule host: (from, to).
    pub host_redirects: BTreeMap<String, String>,
}

impl Snapshot {
    /// The target a route entry leads to.
    pub fn target(&self, entry: &RouteEntry) -> Option<&Target> {
        self.targets.get(entry.target)
    }

    /// The upstream policy of a route entry's target.
    pub fn policy(&self, entry: &RouteEntry) -> Option<&UpstreamPolicy> {
        self.policies.get(entry.target)
    }
}

/// Whether `ingress` is ours under `policy`, given the cluster's IngressClasses.
pub fn is_served<C: Borrow<IngressClassInput>>(
    ingress: &IngressInput,
    classes: &[C],
    policy: &ClassPolicy,
) -> bool {
    let mut classes = classes.iter().map(Borrow::borrow);
    if let Some(legacy) = ingress.annotations.get(LEGACY_CLASS_ANNOTATION) {
        return legacy == &policy.class_name;
    }
    match &ingress.class_name {
        Some(name) => match classes.find(|c: &&IngressClassInput| &c.name == name) {
            Some(class) => class.controller == policy.controller,
            None => name == &policy.class_name,
        },
        None => {
            policy.serve_classless
                || classes.any(|c| c.is_default && c.controller == policy.controller)
        }
    }
}

/// Builds the snapshot for `inputs` with the built-in defaults (`ip` targets). Pure and
/// deterministic: the same inputs in any order give the same snapshot.
pub fn build(inputs: &Inputs, policy: &ClassPolicy) -> Snapshot {
    build_with(inputs, policy, &BuildDefaults::default())
}

/// Builds the snapshot for `inputs` with the settings' `defaults`.
pub fn build_with(inputs: &Inputs, policy: &ClassPolicy, defaults: &BuildDefaults) -> Snapshot {
    build_refs(&inputs.refs(), policy, defaults)
}

/// Builds the snapshot for borrowed inputs with the settings' `defaults`.
pub fn build_refs(
    inputs: &InputRefs<'_>,
    policy: &ClassPolicy,
    defaults: &BuildDefaults,
) -> Snapshot {
    build_scoped(inputs, policy, defaults, None)
}

/// Builds the routes of `hosts` alone, for a change that can move nothing else.
///
/// `inputs` must hold every Ingress with a rule for one of `hosts` (more do no harm: their
/// other rules are left out), so that conflicts, ownership and `cross_namespace_paths` come out
/// as a whole build decides them. The snapshot has no default backend and no TLS policy, and
/// its findings are those a whole build reports for the rules of these hosts plus the findings
/// each given Ingress has of its own (its annotations, its invalid rule hosts). A caller
/// replaces the hosts of a whole build's result with these, and only when the change cannot
/// move the default backend, the TLS policy or any host's owner
/// ([`crate::ownership::Ownership`]).
pub fn build_hosts(
    inputs: &InputRefs<'_>,
    policy: &ClassPolicy,
    defaults: &BuildDefaults,
    hosts: &BTreeSet<HostName>,
) -> Snapshot {
    build_scoped(inputs, policy, defaults, Some(hosts))
}

/// The Ingresses of `inputs` this instance serves, oldest first (Ingresses without a timestamp
/// after those with one; then by namespace and name): the order in which rules are merged.
pub fn served_oldest_first<'a>(
    inputs: &InputRefs<'a>,
    policy: &ClassPolicy,
) -> Vec<&'a IngressInput> {
    let mut served: Vec<&IngressInput> = inputs
        .ingresses
        .iter()
        .copied()
        .filter(|i| is_served(i, &inputs.classes, policy))
        .collect();
    served.sort_by(|a, b| {
        (a.created.is_none(), a.created, &a.namespace, &a.name).cmp(&(
            b.created.is_none(),
            b.created,
            &b.namespace,
            &b.name,
        ))
    });
    served
}

/// The valid hosts of an Ingress's rules.
pub fn rule_hosts(ingress: &IngressInput) -> impl Iterator<Item = HostKey<'_>> {
    ingress
        .rules
        .iter()
        .filter_map(|r| parse_rule_host(r.host.as_deref()).ok())
}

fn build_scoped(
    inputs: &InputRefs<'_>,
    policy: &ClassPolicy,
    defaults: &BuildDefaults,
    only: Option<&BTreeSet<HostName>>,
) -> Snapshot {
    let served = served_oldest_first(inputs, policy);

    // Canaries own nothing: no host, no TLS name, no redirect (see [`crate::canary`]).
    let primaries: Vec<&IngressInput> = served.iter().copied().filter(|i| !is_canary(i)).collect();
    let services: HashMap<(&str, &str), &ServiceInput> = inputs
        .services
        .iter()
        .map(|s| ((s.namespace.as_str(), s.name.as_str()), *s))
        .collect();
    let mut slices: HashMap<(&str, &str), Vec<&EndpointSliceInput>> = HashMap::new();
    for s in inputs.slices.iter().copied() {
        slices
            .entry((s.namespace.as_str(), s.service.as_str()))
            .or_default()
            .push(s);
    }

    let mut b = Builder {
        snapshot: Snapshot::default(),
        target_ids: HashMap::new(),
        policy: UpstreamPolicy::default(),
        target_type: TargetType::default(),
        defaults,
        services: &services,
        slices: &slices,
        nodes: &inputs.nodes,
        resolved: HashMap::new(),
        ownership: Ownership::compute(&primaries, &defaults.host_owners),
        health_reported: BTreeSet::new(),
        only,
    };

    let mut canaries = Vec::new();
    for (index, ingress) in served.iter().enumerate() {
        if is_canary(ingress) {
            // Added once every primary rule is in the table.
            canaries.push(index);
            b.snapshot.ingresses.push(ServedIngress {
                object: ingress.object_ref(),
                annotations: ingress.annotations.clone(),
                ssl_redirect: false,
                filters: Arc::new([]),
            });
            continue;
        }
        let ssl_redirect = crate::tls::ssl_redirect(ingress).unwrap_or_else(|message| {
            b.skip(ingress, Reason::InvalidAnnotation, message);
            true
        });
        let (mut filters, bad) = crate::rules::filters(&ingress.annotations);
        for bad in bad {
            b.skip(ingress, Reason::InvalidPolicy, bad.to_string());
        }
        b.resolve_mirrors(ingress, &mut filters);
        b.resolve_ext_auth(ingress, &mut filters);
        b.snapshot.ingresses.push(ServedIngress {
            object: ingress.object_ref(),
            annotations: ingress.annotations.clone(),
            ssl_redirect,
            filters: filters.into(),
        });
        b.add_ingress(index, ingress);
    }
    for index in canaries {
        b.add_canary(index, served[index]);
    }
    b.snapshot.routes.compile_regex_paths();
    // What crosses hosts is left to whole builds (see `build_hosts`).
    if only.is_none() {
        b.snapshot.host_redirects =
            crate::rules::www_redirects(&primaries, &b.snapshot.routes, &b.ownership);
        b.snapshot.tls = crate::tls::policy(
            &primaries,
            &inputs.secrets,
            &b.ownership,
            &mut b.snapshot.skipped,
        );
    }
    b.snapshot.skipped.sort();
    b.snapshot
}

mod canaries;
mod ext_auth;
mod mirrors;

/// Where in an Ingress a finding is, formatted only when one is reported.
#[derive(Debug, Clone, Copy)]
enum At {
    DefaultBackend,
    /// `spec.rules[rule].http.paths[path]`.
    Path(usize, usize),
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::DefaultBackend => f.write_str("defaultBackend"),
            At::Path(rule, path) => write!(f, "spec.rules[{rule}].http.paths[{path}]"),
        }
    }
}

struct Builder<'a> {
    snapshot: Snapshot,
    target_ids: HashMap<(Target, UpstreamPolicy), TargetId>,
    /// The policy of the Ingress being added.
    policy: UpstreamPolicy,
    /// The target type of the Ingress being added.
    target_type: TargetType,
    defaults: &'a BuildDefaults,
    services: &'a HashMap<(&'a str, &'a str), &'a ServiceInput>,
    slices: &'a HashMap<(&'a str, &'a str), Vec<&'a EndpointSliceInput>>,
    nodes: &'a [&'a NodeInput],
    /// The targets the backends of the Ingress being added resolved to.
    resolved: HashMap<BackendInput, TargetId>,
    /// The namespace that owns each host.
    ownership: Ownership,
    /// (Ingress, Service) pairs whose bad health-check annotations are already reported.
    health_reported: BTreeSet<(ObjectRef, ObjectRef)>,
    /// The hosts a partial build covers ([`build_hosts`]); `None` for a whole build.
    only: Option<&'a BTreeSet<HostName>>,
}

impl Builder<'_> {
    fn skip(&mut self, ingress: &IngressInput, reason: Reason, message: String) {
        self.snapshot.skipped.push(Finding {
            ingress: ingress.object_ref(),
            reason,
            message,
        });
    }

    fn add_ingress(&mut self, index: usize, ingress: &IngressInput) {
        self.resolved.clear();
        let use_regex = crate::rules::use_regex(ingress);
        let (policy, bad) = upstream_policy(&ingress.annotations);
        for b in bad {
            self.skip(ingress, Reason::InvalidAnnotation, b.to_string());
        }
        self.policy = policy;
        let (target_type, bad) =
            crate::targets::target_type(&ingress.annotations, &self.defaults.target_type);
        for b in bad {
            self.skip(ingress, Reason::InvalidAnnotation, b.to_string());
        }
        self.target_type = target_type;

        if let Some(backend) = ingress
            .default_backend
            .as_ref()
            .filter(|_| self.only.is_none())
        {
            let target = self.resolve(ingress, backend, At::DefaultBackend);
            if !self.snapshot.routes.set_default_backend(RouteEntry {
                target,
                ingress: index,
                canary: None,
            }) {
                self.skip(
                    ingress,
                    Reason::ConflictingRule,
                    "spec.defaultBackend: an older Ingress already sets the default backend"
                        .to_string(),
                );
            }
        }

        for (ri, rule) in ingress.rules.iter().enumerate() {
            let host_key = match parse_rule_host(rule.host.as_deref()) {
                Ok(k) => k,
                Err(msg) => {
                    self.skip(
                        ingress,
                        Reason::InvalidHost,
                        format!("spec.rules[{ri}]: {msg}"),
                    );
                    continue;
                }
            };
            if self
                .only
                .is_some_and(|only| !only.contains(&HostName::from(host_key)))
            {
                continue;
            }
            let host_name = rule.host.clone().unwrap_or_default();
            if self.defaults.cross_namespace_paths == CrossNamespacePaths::Deny {
                let owner = host_text(&host_key).and_then(|h| self.ownership.owner(&h));
                if let Some(owner) = owner.filter(|o| o.namespace != ingress.namespace) {
                    let message = format!(
                        "spec.rules[{ri}]: host `{host_name}` is owned by {owner} and \
                         controller.cross_namespace_paths is \"deny\"; its paths are not served"
                    );
                    self.skip(ingress, Reason::HostNotOwned, message);
                    continue;
                }
            }
            for (pi, p) in rule.paths.iter().enumerate() {
                let at = At::Path(ri, pi);
                let kind = match p.path_type.as_deref() {
                    Some("Exact") => MatchKind::Exact,
                    Some("ImplementationSpecific") if use_regex => MatchKind::Regex,
                    Some("Prefix") | Some("ImplementationSpecific") => MatchKind::Prefix,
                    Some(other) => {
                        self.skip(
                            ingress,
                            Reason::InvalidPathType,
                            format!("{at}: pathType `{other}` is not Exact, Prefix or ImplementationSpecific"),
                        );
                        continue;
                    }
                    None => {
                        self.skip(
                            ingress,
                            Reason::InvalidPathType,
                            format!("{at}: pathType is required"),
                        );
                        continue;
                    }
                };
                let path = match p.path.as_deref() {
                    Some(path) if path.starts_with('/') => path,
                    None | Some("") if p.path_type.as_deref() == Some("ImplementationSpecific") => {
                        "/"
                    }
                    Some(path) => {
                        self.skip(
                            ingress,
                            Reason::InvalidPath,
                            format!("{at}: path `{path}` does not start with `/`"),
                        );
                        continue;
                    }
                    None => {
                        self.skip(
                            ingress,
                            Reason::InvalidPath,
                            format!("{at}: path is required"),
                        );
                        continue;
                    }
                };
                // Requests are matched by their normalized path, so rules are too; a rule
                // written otherwise is reported, as it would never match as written. A regex
                // is matched against that path as written.
                let path = match crate::path::rule_path(path) {
                    _ if kind == MatchKind::Regex => {
                        let checked =
                            crate::rules::regex_path(&self.ownership, &host_key, ingress, path);
                        if let Err((reason, message)) = checked {
                            self.skip(ingress, reason, format!("{at}: {message}"));
                            continue;
                        }
                        std::borrow::Cow::Borrowed(path)
                    }
                    Ok(normal) if normal == path => normal,
                    Ok(normal) => {
                        self.skip(
                            ingress,
                            Reason::NormalizedPath,
                            format!(
                                "{at}: path `{path}` is served as `{normal}`, its normalized form"
                            ),
                        );
                        normal
                    }
                    Err(e) => {
                        self.skip(
                            ingress,
                            Reason::InvalidPath,
                            format!("{at}: path `{path}`: {e}"),
                        );
                        continue;
                    }
                };
                let path: &str = &path;
                let normalized = match kind {
                    MatchKind::Exact | MatchKind::Regex => path.to_string(),
                    MatchKind::Prefix => crate::routes::normalize_prefix(path).to_string(),
                };
                let older = self
                    .snapshot
                    .routes
                    .host_map()
                    .get_key(&host_key)
                    .and_then(|h| h.get(&normalized, kind))
                    .and_then(|e| self.snapshot.ingresses.get(e.ingress));
                if let Some(owner) = older.map(|i| &i.object) {
                    let message = format!(
                        "{at}: host `{host_name}` path `{path}` is already served by the older Ingress {owner}"
                    );
                    self.skip(ingress, Reason::ConflictingRule, message);
                    continue;
                }
                let target = self.resolve(ingress, &p.backend, at);
                let added = self.snapshot.routes.host_mut(host_key).insert(
                    path,
                    kind,
                    RouteEntry {
                        target,
                        ingress: index,
                        canary: None,
                    },
                );
                debug_assert!(added, "a rule already served is refused above");
            }
        }
    }

    /// Resolves a backend to a target id, reporting what cannot be resolved.
    fn resolve(&mut self, ingress: &IngressInput, backend: &BackendInput, at: At) -> TargetId {
        // The paths of one Ingress mostly share their backends: a backend resolved without a
        // finding resolves the same again (a finding names its path, so it is not cached).
        if let Some(id) = self.resolved.get(backend) {
            return *id;
        }
        let findings = self.snapshot.skipped.len();
        let id = self.resolve_uncached(ingress, backend, at);
        if self.snapshot.skipped.len() == findings {
            self.resolved.insert(backend.clone(), id);
        }
        id
    }

    fn resolve_uncached(
        &mut self,
        ingress: &IngressInput,
        backend: &BackendInput,
        at: At,
    ) -> TargetId {
        let mut policy = self.policy.clone();
        let target = match self.resolve_target(ingress, backend) {
            Ok(key) => {
                // The annotation decides; without it, the Service port's appProtocol.
                if policy.protocol.is_none() {
                    policy.protocol = self.app_protocol(ingress, &key, at);
                }
                self.add_health_check(ingress, &key);
                if !self.snapshot.endpoints.contains_key(&key) {
                    let eps = self.endpoints_of(&key);
                    self.snapshot.endpoints.insert(key.clone(), eps);
                }
                Target::Pool(key)
            }
            Err((reason, message)) => {
                let message = format!("{at}: {message}");
                self.skip(ingress, reason, message.clone());
                Target::Unresolved { reason: message }
            }
        };
        let key = (target, policy);
        if let Some(id) = self.target_ids.get(&key) {
            return *id;
        }
        let id = self.snapshot.targets.len();
        self.snapshot.targets.push(key.0.clone());
        self.snapshot.policies.push(key.1.clone());
        self.target_ids.insert(key, id);
        id
    }

    /// Records the health-check annotations of `key`'s Service and reports its bad ones on
    /// `ingress` (once per Ingress and Service), so they become Events where routes are.
    fn add_health_check(&mut self, ingress: &IngressInput, key: &PoolKey) {
        let Some(svc) = self
            .services
            .get(&(key.namespace.as_str(), key.service.as_str()))
        else {
            return;
        };
        if svc.annotations.is_empty() {
            return;
        }
        let (overrides, bad) = service_health_check(&svc.annotations);
        if !overrides.is_empty() {
            self.snapshot.health_checks.insert(key.clone(), overrides);
        }
        let service = ObjectRef::new(&key.namespace, &key.service);
        if bad.is_empty()
            || !self
                .health_reported
                .insert((ingress.object_ref(), service.clone()))
        {
            return;
        }
        for b in bad {
            self.skip(
                ingress,
                Reason::InvalidAnnotation,
                format!("Service {service}: {b}"),
            );
        }
    }

    fn resolve_target(
        &self,
        ingress: &IngressInput,
        backend: &BackendInput,
    ) -> Result<PoolKey, (Reason, String)> {
        self.resolve_target_in(&ingress.namespace, backend)
    }

    /// [`Self::resolve_target`] for a Service of `namespace`.
    fn resolve_target_in(
        &self,
        namespace: &str,
        backend: &BackendInput,
    ) -> Result<PoolKey, (Reason, String)> {
        let (name, port) = match backend {
            BackendInput::Service { name, port } => (name, port),
            BackendInput::Unsupported(what) => {
                return Err((
                    Reason::UnsupportedBackend,
                    format!("backend {what} is not supported"),
                ))
            }
        };
        let Some(svc) = self.services.get(&(namespace, name.as_str())) else {
            return Err((
                Reason::MissingService,
                format!("Service {}/{name} does not exist", namespace),
            ));
        };
        if svc.type_ == "ExternalName" {
            return Err((
                Reason::UnsupportedBackend,
                format!(
                    "Service {}/{name} is of type ExternalName, which has no endpoints",
                    namespace
                ),
            ));
        }
        let found = svc.ports.iter().find(|p| match port {
            PortRef::Number(n) => p.port == *n,
            PortRef::Name(s) => &p.name == s,
        });
        let Some(sp) = found else {
            return Err((
                Reason::MissingPort,
                format!("Service {}/{name} has no port {port}", namespace),
            ));
        };
        if matches!(self.target_type, TargetType::Instance(_)) && node_port(sp.node_port).is_none()
        {
            return Err((
                Reason::MissingNodePort,
                format!(
                    "Service {}/{name} port {port} has no nodePort (type {}); instance targets need a NodePort or LoadBalancer Service",
                    namespace, svc.type_
                ),
            ));
        }
        Ok(PoolKey {
            namespace: namespace.to_string(),
            service: name.clone(),
            port: sp.port,
            target_type: self.target_type.clone(),
        })
    }

    /// The protocol a pool's Service port names in `appProtocol`; an unknown value is reported
    /// and gives `None` (HTTP/1.1).
    fn app_protocol(
        &mut self,
        ingress: &IngressInput,
        key: &PoolKey,
        at: At,
    ) -> Option<BackendProtocol> {
        let value = self
            .services
            .get(&(key.namespace.as_str(), key.service.as_str()))?
            .ports
            .iter()
            .find(|p| p.port == key.port)?
            .app_protocol
            .clone()?;
        let protocol = BackendProtocol::from_app_protocol(&value);
        if protocol.is_none() {
            self.skip(
                ingress,
                Reason::UnknownAppProtocol,
                format!(
                    "{at}: Service {}/{} port {} has appProtocol `{value}`, which is not http, \
                     https, h2c, grpc, grpcs or kubernetes.io/h2c, ws, wss; HTTP/1.1 is used",
                    key.namespace, key.service, key.port
                ),
            );
        }
        protocol
    }

    /// The ready endpoint addresses of a pool ([`pool_endpoints`]).
    fn endpoints_of(&self, key: &PoolKey) -> Vec<SocketAddr> {
        let service = (key.namespace.as_str(), key.service.as_str());
        let slices = self
            .slices
            .get(&service)
            .map(Vec::as_slice)
            .unwrap_or_default();
        pool_endpoints(
            key,
            self.services.get(&service).copied(),
            slices,
            self.nodes,
        )
    }
}

/// The ready endpoint addresses of a pool, from its Service (`None`: it does not exist), the
/// EndpointSlices of that Service and the cluster's Nodes: for `ip` targets, the EndpointSlice
/// port with the same name as the Service port (as kube-proxy maps them), on every ready
/// endpoint address; for `instance` targets, the Service port's `nodePort` on every Node the
/// pool admits. Sorted. Snapshot building and the proxy's endpoint-only updates both use it,
/// so an endpoint change applied alone gives the endpoints a full rebuild would.
pub fn pool_endpoints<N: Borrow<NodeInput>>(
    key: &PoolKey,
    service: Option<&ServiceInput>,
    slices: &[&EndpointSliceInput],
    nodes: &[N],
) -> Vec<SocketAddr> {
    let Some(sp) = service.and_then(|svc| svc.ports.iter().find(|p| p.port == key.port)) else {
        return Vec::new();
    };
    if let TargetType::Instance(selector) = &key.target_type {
        return node_port(sp.node_port)
            .map(|port| crate::targets::node_targets(nodes, selector, port))
            .unwrap_or_default();
    }
    slice_endpoints(slices, &sp.name)
}

/// A `nodePort` that can be dialled (1..=65535).
fn node_port(port: Option<i32>) -> Option<u16> {
    port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0)
}

/// The ready, not terminating `address:port` pairs of a Service's slices for the Service port
/// named `port_name`.
pub fn slice_endpoints(slices: &[&EndpointSliceInput], port_name: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let Some(port) = slice
            .ports
            .iter()
            .find(|p| p.name == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in &slice.endpoints {
            // A terminating endpoint gets no new requests even while it still serves
            // (`serving: true`): its requests in flight finish on their own connections.
            if ep.ready == Some(false) || ep.terminating == Some(true) {
                continue;
            }
            for addr in &ep.addresses {
                if let Ok(ip) = addr.parse::<IpAddr>() {
                    out.push(SocketAddr::new(ip, port));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
