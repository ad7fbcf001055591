//! Caps on open client connections, applied the moment a connection is accepted.
//!
//! Each listening service admits its connections through a [`Limits`] (a Pingora
//! `ConnectionGate`), before any TLS handshake or read:
//!
//! 1. past the process cap (`server.max_connections`) the connection is closed at once;
//! 2. past the per-client cap (`server.max_connections_per_client`, counted on the address the
//!    connection comes from) likewise;
//! 3. otherwise it holds a [`Permit`] for its whole life, handshake included, and the counts
//!    go down when the connection closes.
//!
//! Open connections are never touched by the caps: only new ones are refused. The proxy
//! listeners share one `Limits`; the admin listener has its own, so `/healthz` and `/readyz`
//! keep answering whatever the proxy listeners suffer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora_core::services::listening::ConnectionGate;
use prometheus::IntCounterVec;

/// The connection caps of one or more listening services, and their open connections.
pub struct Limits {
    /// Open connections, handshakes included.
    open: AtomicUsize,
    max: usize,
    per_client: Option<usize>,
    /// Open connections per client address; only kept when there is a per-client cap.
    clients: Mutex<HashMap<IpAddr, usize>>,
    /// Refused connections by the cap that refused them (`process`, `client`).
    refused: Option<IntCounterVec>,
}

impl Limits {
    /// Caps at `max` open connections, and at `per_client` per client address when set.
    pub fn new(max: usize, per_client: Option<usize>, refused: Option<IntCounterVec>) -> Limits {
        Limits {
            open: AtomicUsize::new(0),
            max,
            per_client,
            clients: Mutex::new(HashMap::new()),
            refused,
        }
    }

    /// Connections open now (handshakes included).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Waits until no connection is open or `deadline` passes; true when none is open.
    pub async fn wait_closed(&self, deadline: Instant) -> bool {
        // A short poll: this runs once, during the drain after SIGTERM.
        while self.open() > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(20))).await;
        }
        true
    }

    fn refuse(&self, limit: &str) -> Option<Box<dyn Send + Sync>> {
        if let Some(c) = &self.refused {
            c.with_label_values(&[limit]).inc();
        }
        None
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The map stays consistent whatever panicked while it was held: every change is one
        // insert or remove.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The Pingora side of shared [`Limits`]: admits connections against them.
pub struct Gate(pub Arc<Limits>);

impl ConnectionGate for Gate {
    fn admit(&self, peer: Option<&SocketAddr>) -> Option<Box<dyn Send + Sync>> {
        let limits = &self.0;
        if limits.open.fetch_add(1, Ordering::AcqRel) >= limits.max {
            limits.open.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(peer = ?peer, max = limits.max, "connection refused: process cap");
            return limits.refuse("process");
        }
        let mut permit = Permit {
            limits: limits.clone(),
            client: None,
        };
        if let (Some(cap), Some(peer)) = (limits.per_client, peer) {
            let ip = peer.ip();
            let mut clients = limits.clients();
            let n = clients.entry(ip).or_insert(0);
            if *n >= cap {
                drop(clients);
                tracing::debug!(peer = %peer, cap, "connection refused: per-client cap");
                // Dropping the permit gives the process slot back.
                drop(permit);
                return limits.refuse("client");
            }
            *n += 1;
            permit.client = Some(ip);
        }
        Some(Box::new(permit))
    }
}

/// One open connection's place in its [`Limits`]; dropped when the connection closes.
struct Permit {
    limits: Arc<Limits>,
    client: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(ip) = self.client {
            let mut clients = self.limits.clients();
            if let Some(n) = clients.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    clients.remove(&ip);
                }
            }
        }
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The soft limit on open files of this process, when the platform tells it.
pub fn file_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _hard)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_process_cap_refuses_new_connections_and_frees_a_slot_on_close() {
        let limits = Gate(Arc::new(Limits::new(2, None, None)));
        let a = limits.admit(Some(&addr("127.0.0.1:1"))).unwrap();
        let _b = limits.admit(Some(&addr("127.0.0.2:1"))).unwrap();
        assert!(limits.admit(Some(&addr("127.0.0.3:1"))).is_none());
        assert_eq!(limits.0.open(), 2);
        drop(a);
        assert_eq!(limits.0.open(), 1);
        assert!(limits.admit(Some(&addr("127.0.0.3:1"))).is_some());
    }

    #[test]
    fn one_client_cannot_use_up_the_process_cap() {
        let limits = Gate(Arc::new(Limits::new(10, Some(2), None)));
        let first = limits.admit(Some(&addr("127.0.0.1:1"))).unwrap();
        let _second = limits.admit(Some(&addr("127.0.0.1:2"))).unwrap();
        // The same address on another port is the same client.
        assert!(limits.admit(Some(&addr("127.0.0.1:3"))).is_none());
        // Another client still gets in, and the refused one did not keep a process slot.
        let _other = limits.admit(Some(&addr("127.0.0.9:1"))).unwrap();
        assert_eq!(limits.0.open(), 3);
        drop(first);
        assert!(limits.admit(Some(&addr("127.0.0.1:4"))).is_some());
    }
}
