//! Target types: whether a route dials its Service's pods or its cluster's Nodes.
//!
//! As the AWS Load Balancer Controller has it, a route's targets are of one of two types:
//!
//! - `ip` (the default): the ready addresses of the Service's EndpointSlices, on the
//!   EndpointSlice port (the pods themselves);
//! - `instance`: `InternalIP:nodePort` of the backend Service port, on every Node that is Ready
//!   (condition `Ready` is `True`) and schedulable (`spec.unschedulable` is not true), and
//!   optionally only on Nodes carrying given labels. kube-proxy on each Node forwards the
//!   NodePort to a pod. This suits clusters where the proxy cannot reach pod addresses, or
//!   where traffic must enter through chosen Nodes.
//!
//! | annotation | value | default |
//! |---|---|---|
//! | `sluice.dev/target-type` | `ip` or `instance` | `upstream.target_type` |
//! | `sluice.dev/target-node-labels` | `key=value[,key=value...]`: every label must match | every Node |
//!
//! A bad value is reported (`InvalidAnnotation`) and the default is used; a node-label filter on
//! a route whose target type is `ip` is reported as unused. A Node with several `InternalIP`
//! addresses (dual stack) is one target, at its first one, so balancing stays per Node. A Node
//! without an `InternalIP` is never a target.
//!
//! The target type is part of the pool's identity ([`crate::PoolKey`]): an `ip` route and an
//! `instance` route to the same Service port (or two `instance` routes with different label
//! filters) have two pools, each with its own endpoints and balancing state.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::annotations::{parse_annotation, AnnotationError, BadAnnotation};
use crate::model::NodeInput;

/// The target type of an Ingress's routes: `ip` or `instance`.
pub const TARGET_TYPE: &str = "sluice.dev/target-type";
/// The labels a Node must carry to be an `instance` target: `key=value,key=value`.
pub const TARGET_NODE_LABELS: &str = "sluice.dev/target-node-labels";

/// What a route dials.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetType {
    /// The ready addresses of the Service's EndpointSlices.
    #[default]
    Ip,
    /// `InternalIP:nodePort` of every ready, schedulable Node the selector admits.
    Instance(NodeSelector),
}

impl TargetType {
    /// The name used in settings and annotations.
    pub fn name(&self) -> &'static str {
        match self {
            TargetType::Ip => "ip",
            TargetType::Instance(_) => "instance",
        }
    }

    /// `ip` or `instance` (with no label filter), as in `upstream.target_type`.
    pub fn parse(text: &str) -> Option<TargetType> {
        match text.trim() {
            "ip" => Some(TargetType::Ip),
            "instance" => Some(TargetType::Instance(NodeSelector::default())),
            _ => None,
        }
    }
}

impl std::fmt::Display for TargetType {
    /// `ip`, `instance`, or `instance pool=edge,zone=a`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetType::Instance(sel) if !sel.is_empty() => write!(f, "instance {sel}"),
            t => f.write_str(t.name()),
        }
    }
}

/// Why a `sluice.dev/target-node-labels` value is not a selector; each message follows the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeSelectorError {
    #[error("names no label; write key=value[,key=value...]")]
    Empty,
    #[error("has `{0}`, which is not key=value")]
    NotKeyValue(String),
    #[error("has `{0}`, which is not a label key")]
    Key(String),
    #[error("has `{0}`, which is not a label value")]
    Value(String),
    #[error("asks for label `{key}` to be both `{old}` and `{new}`")]
    Conflict {
        key: String,
        old: String,
        new: String,
    },
}

/// The labels a Node must all carry (equality only), sorted by key. Empty admits every Node.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeSelector(BTreeMap<String, String>);

impl NodeSelector {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a Node with `labels` is admitted.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Parses `key=value[,key=value...]`; keys and values follow Kubernetes label syntax.
    /// Whitespace around items is ignored.
    pub fn parse(text: &str) -> Result<NodeSelector, NodeSelectorError> {
        let mut labels = BTreeMap::new();
        if text.trim().is_empty() {
            return Err(NodeSelectorError::Empty);
        }
        for item in text.split(',') {
            let item = item.trim();
            let Some((key, value)) = item.split_once('=') else {
                return Err(NodeSelectorError::NotKeyValue(item.to_string()));
            };
            let (key, value) = (key.trim(), value.trim());
            if !is_label_key(key) {
                return Err(NodeSelectorError::Key(key.to_string()));
            }
            if !is_label_value(value) {
                return Err(NodeSelectorError::Value(value.to_string()));
            }
            if let Some(old) = labels.insert(key.to_string(), value.to_string()) {
                if old != value {
                    return Err(NodeSelectorError::Conflict {
                        key: key.to_string(),
                        old,
                        new: value.to_string(),
                    });
                }
            }
        }
        Ok(NodeSelector(labels))
    }
}

impl std::fmt::Display for NodeSelector {
    /// `key=value,key=value`, sorted by key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// A label name or value part: at most 63 characters, alphanumerics with `-`, `_` and `.`
/// inside.
fn is_label_name(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| alnum(b) || b"-_.".contains(&b))
        && s.bytes().next().is_some_and(alnum)
        && s.bytes().last().is_some_and(alnum)
}

/// `[prefix/]name`, the prefix a DNS subdomain.
fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => {
            prefix.len() <= 253
                && prefix.split('.').all(crate::routes::is_dns_label)
                && is_label_name(name)
        }
        None => is_label_name(s),
    }
}

/// A label value may be empty.
fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

/// The target type an Ingress's annotations choose, given the settings' default, and every
/// annotation not used.
pub fn target_type(
    annotations: &BTreeMap<String, String>,
    default: &TargetType,
) -> (TargetType, Vec<BadAnnotation>) {
    let mut bad = Vec::new();
    let chosen = parse_annotation(annotations, &mut bad, TARGET_TYPE, |v| {
        TargetType::parse(v).ok_or(AnnotationError::NotATargetType)
    })
    .unwrap_or_else(|| default.clone());
    let Some(value) = annotations.get(TARGET_NODE_LABELS) else {
        return (chosen, bad);
    };
    let chosen = match chosen {
        TargetType::Ip => {
            bad.push(BadAnnotation {
                key: TARGET_NODE_LABELS,
                value: value.clone(),
                error: AnnotationError::NodeLabelsUnused,
            });
            TargetType::Ip
        }
        TargetType::Instance(default_selector) => match NodeSelector::parse(value) {
            Ok(sel) => TargetType::Instance(sel),
            Err(e) => {
                bad.push(BadAnnotation {
                    key: TARGET_NODE_LABELS,
                    value: value.clone(),
                    error: e.into(),
                });
                TargetType::Instance(default_selector)
            }
        },
    };
    (chosen, bad)
}

/// The `instance` targets of a NodePort: the first `InternalIP` of every Node that is ready,
/// schedulable and admitted by `selector`, with `node_port`; sorted.
pub fn node_targets<N: std::borrow::Borrow<NodeInput>>(
    nodes: &[N],
    selector: &NodeSelector,
    node_port: u16,
) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = nodes
        .iter()
        .map(|n| n.borrow())
        .filter(|n| n.ready && !n.unschedulable && selector.matches(&n.labels))
        .filter_map(|n| {
            n.internal_ips
                .iter()
                .find_map(|a| a.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, node_port))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
