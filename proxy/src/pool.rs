//! Endpoint pools: pingora-load-balancing glue.
//!
//! One [`Pool`] per Service port ([`PoolKey`]). Its endpoints come from our own
//! [`ServiceDiscovery`] ([`FedDiscovery`]), which the sync path feeds from outside: Pingora's
//! `Static` discovery cannot be changed after it is built. The request path selects a backend from
//! the pool's selector, which Pingora keeps behind an `ArcSwap`, so it never takes a lock. The
//! selector state (the round-robin counter) lives in the pool and is shared by every worker
//! thread: one pool is balanced as one.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use sluice_config::PoolKey;

/// A [`ServiceDiscovery`] whose backend set is replaced from outside with [`FedDiscovery::set`].
#[derive(Clone, Default)]
pub struct FedDiscovery {
    backends: Arc<ArcSwap<BTreeSet<Backend>>>,
}

impl FedDiscovery {
    /// Replaces the whole backend set; the pool picks it up on its next `update`.
    pub fn set(&self, addrs: &[SocketAddr]) {
        let set = addrs
            .iter()
            .map(|a| Backend {
                addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(*a),
                weight: 1,
                ext: Default::default(),
            })
            .collect();
        self.backends.store(Arc::new(set));
    }
}

#[async_trait]
impl ServiceDiscovery for FedDiscovery {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok(((**self.backends.load()).clone(), HashMap::new()))
    }
}

/// The endpoints of one Service port and the balancer over them.
pub struct Pool {
    key: PoolKey,
    discovery: FedDiscovery,
    balancer: LoadBalancer<RoundRobin>,
    /// The addresses last applied, to skip no-op updates.
    current: ArcSwap<Vec<SocketAddr>>,
}

impl Pool {
    /// An empty pool; call [`Pool::set_endpoints`] to fill it.
    pub fn new(key: PoolKey) -> Pool {
        let discovery = FedDiscovery::default();
        let balancer = LoadBalancer::from_backends(Backends::new(Box::new(discovery.clone())));
        Pool {
            key,
            discovery,
            balancer,
            current: ArcSwap::from_pointee(Vec::new()),
        }
    }

    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// Replaces the endpoints. Returns whether anything changed. Only this pool is touched; its
    /// established upstream connections stay in Pingora's connection pool. Callers must not run
    /// two updates of the same pool at once (the sync path applies snapshots one at a time).
    pub async fn set_endpoints(&self, addrs: &[SocketAddr]) -> bool {
        if self.current.load().as_slice() == addrs {
            return false;
        }
        self.discovery.set(addrs);
        // Our discovery never fails; an error here would mean a Pingora invariant broke, and the
        // pool then keeps its previous endpoints.
        if let Err(e) = self.balancer.update().await {
            tracing::error!(pool = %self.key, error = %e, "updating the pool failed");
            return false;
        }
        self.current.store(Arc::new(addrs.to_vec()));
        true
    }

    /// The endpoints now in use.
    pub fn endpoints(&self) -> Arc<Vec<SocketAddr>> {
        self.current.load_full()
    }

    pub fn is_empty(&self) -> bool {
        self.current.load().is_empty()
    }

    /// The next endpoint in round-robin order that `accept` takes, or `None`.
    pub fn select(&self, accept: impl Fn(&SocketAddr) -> bool) -> Option<SocketAddr> {
        // Round robin visits every backend within `len` steps when alone; other threads advance
        // the same counter, so allow twice that. The bound keeps the search finite.
        let bound = self.current.load().len() * 2 + 1;
        self.balancer
            .select_with(b"", bound, |b, healthy| {
                healthy && b.addr.as_inet().is_some_and(&accept)
            })
            .and_then(|b| b.addr.as_inet().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PoolKey {
        PoolKey {
            namespace: "ns".into(),
            service: "svc".into(),
            port: 80,
        }
    }

    #[tokio::test]
    async fn a_pool_rotates_over_its_endpoints_and_follows_updates() {
        let pool = Pool::new(key());
        assert_eq!(pool.select(|_| true), None);
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert!(pool.set_endpoints(&[a, b]).await);
        assert!(
            !pool.set_endpoints(&[a, b]).await,
            "an identical set is a no-op"
        );
        let picks: Vec<_> = (0..4).map(|_| pool.select(|_| true).unwrap()).collect();
        assert_eq!(picks.iter().filter(|p| **p == a).count(), 2, "{picks:?}");
        assert_eq!(pool.select(|x| *x != a), Some(b));
        assert!(pool.set_endpoints(&[b]).await);
        for _ in 0..3 {
            assert_eq!(pool.select(|_| true), Some(b));
        }
        assert_eq!(pool.select(|x| *x != b), None);
    }
}
