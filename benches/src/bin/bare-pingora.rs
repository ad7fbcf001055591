//! The minimal Pingora reverse proxy: the framework's ceiling that sluice is measured against.
//!
//! No routing, no request or response filters: every request goes to the next upstream of a
//! round-robin `LoadBalancer`, over Pingora's upstream keepalive pool. It runs under Pingora's own
//! `Server` (`run_forever`), as a plain Pingora application would.
//!
//! ```text
//! bare-pingora --listen 127.0.0.1:8090 --threads 1 127.0.0.1:9101 127.0.0.1:9102
//! ```
//!
//! `--timeouts` sets the same per-peer connect/read/write timeouts sluice sets (2 s, 60 s, 60 s),
//! to measure what they cost on their own; `--forwarding-headers` adds the headers sluice adds to
//! every request. SIGINT stops it at once, SIGTERM gracefully.
//!
//! Built with `--features mimalloc` it runs on sluice's allocator: the baseline that tells what
//! the allocator gives from what sluice's own code costs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use pingora::http::RequestHeader;
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::{Error, ErrorType, Result};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "bare-pingora",
    about = "A minimal round-robin Pingora reverse proxy (baseline for sluice)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Worker threads of the proxy service.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Idle upstream connections kept for reuse (sluice's default: 512).
    #[arg(long, default_value_t = 512)]
    keepalive_pool_size: usize,
    /// Set sluice's per-peer connect/read/write timeouts too.
    #[arg(long)]
    timeouts: bool,
    /// Add the headers sluice adds to every proxied request (a generated `X-Request-Id`,
    /// `X-Forwarded-For`/`-Proto`/`-Host`/`-Port`, `X-Real-IP`), the simplest way: the ceiling
    /// of a proxy that does the same header work, without routing or balancing.
    #[arg(long)]
    forwarding_headers: bool,
    /// Upstream addresses, round-robined.
    #[arg(required = true)]
    upstreams: Vec<SocketAddr>,
}

struct Bare {
    upstreams: Arc<LoadBalancer<RoundRobin>>,
    timeouts: bool,
    forwarding_headers: bool,
    next_id: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let Some(addr) = self
            .upstreams
            .select(b"", 256)
            .and_then(|b| b.addr.as_inet().copied())
        else {
            return Error::e_explain(ErrorType::HTTPStatus(503), "no upstream");
        };
        let mut peer = HttpPeer::new(addr, false, String::new());
        // Like sluice: idle upstream connections are kept for 60 s.
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        if self.timeouts {
            peer.options.connection_timeout = Some(Duration::from_secs(2));
            peer.options.read_timeout = Some(Duration::from_secs(60));
            peer.options.write_timeout = Some(Duration::from_secs(60));
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        if !self.forwarding_headers {
            return Ok(());
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        upstream.insert_header("x-request-id", format!("{:016x}{id:016x}", 0x5eed_u64))?;
        let ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        upstream.insert_header("x-forwarded-for", ip.as_str())?;
        upstream.insert_header("x-real-ip", ip)?;
        upstream.insert_header("x-forwarded-proto", "http")?;
        if let Some(host) = session.req_header().headers.get("host").cloned() {
            upstream.insert_header("x-forwarded-host", host)?;
        }
        if let Some(port) = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port())
        {
            upstream.insert_header("x-forwarded-port", port.to_string())?;
        }
        Ok(())
    }
}

fn main() {
    let args = Args::parse();
    let upstreams = match LoadBalancer::<RoundRobin>::try_from_iter(args.upstreams.iter().copied())
    {
        Ok(lb) => Arc::new(lb),
        Err(e) => {
            eprintln!("bare-pingora: bad upstreams: {e}");
            std::process::exit(2);
        }
    };
    let conf = ServerConf {
        threads: args.threads.max(1),
        upstream_keepalive_pool_size: args.keepalive_pool_size,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Bare {
            upstreams,
            timeouts: args.timeouts,
            forwarding_headers: args.forwarding_headers,
            next_id: std::sync::atomic::AtomicU64::new(0),
        },
        "bare-pingora",
    );
    proxy.add_tcp(&args.listen.to_string());
    server.add_service(proxy);
    eprintln!(
        "bare-pingora: listening on {} with {} thread(s), upstreams {:?}",
        args.listen, args.threads, args.upstreams
    );
    server.run_forever();
}
