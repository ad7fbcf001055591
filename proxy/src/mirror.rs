//! Request mirroring (`sluice.dev/mirror-target`): a copy of each request of a route goes to one
//! endpoint of another Service, fire-and-forget.
//!
//! The copy is the request as sent upstream (the head after every filter, the body as read from
//! the client) and leaves when the request ends, so the mirror never delays the client: it is
//! written by its own task over a new HTTP/1.1 connection (`Connection: close`), its answer read
//! and discarded, the whole exchange bounded by [`MIRROR_TIMEOUT`]. At most
//! [`MAX_MIRRORS_IN_FLIGHT`] copies are in flight; beyond that, and for a body over
//! [`MAX_MIRROR_BODY_BYTES`], a pool without endpoints, or a failed exchange, the copy is
//! dropped and counted in `sluice_mirror_dropped_total{reason}`. Nothing a mirror does reaches
//! the client's response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora_http::RequestHeader;
use prometheus::IntCounterVec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::pool::{Pick, Pool};

/// Copies in flight at most, over every route; more are dropped (`full`).
pub const MAX_MIRRORS_IN_FLIGHT: usize = 256;
/// The time one copy may take, connect to last byte of the answer.
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest body copied, in bytes; a request with a longer body is not mirrored
/// (`too_large`).
pub const MAX_MIRROR_BODY_BYTES: usize = 1 << 20;

/// The mirrors of the proxy: the bound on copies in flight and the count of those dropped.
pub struct Mirrors {
    permits: Arc<Semaphore>,
    dropped: IntCounterVec,
}

/// One request's copy, gathered while the request is proxied.
pub struct Copy {
    pool: Arc<Pool>,
    head: Option<RequestHeader>,
    body: BytesMut,
    too_large: bool,
}

impl Copy {
    pub fn new(pool: Arc<Pool>) -> Copy {
        Copy {
            pool,
            head: None,
            body: BytesMut::new(),
            too_large: false,
        }
    }

    /// Keeps the first upstream request head (a retry sends the same).
    pub fn head(&mut self, head: &RequestHeader) {
        if self.head.is_none() {
            self.head = Some(head.clone());
        }
    }

    /// Adds a chunk of the request body.
    pub fn body(&mut self, chunk: &[u8]) {
        if self.body.len() + chunk.len() > MAX_MIRROR_BODY_BYTES {
            self.too_large = true;
            return;
        }
        self.body.extend_from_slice(chunk);
    }
}

impl Mirrors {
    pub fn new(dropped: IntCounterVec) -> Mirrors {
        Mirrors {
            permits: Arc::new(Semaphore::new(MAX_MIRRORS_IN_FLIGHT)),
            dropped,
        }
    }

    fn drop_one(&self, reason: &str) {
        self.dropped.with_label_values(&[reason]).inc();
    }

    /// Sends `copy` to one endpoint of its pool on a task of its own; returns at once.
    pub fn send(&self, copy: Copy) {
        let Some(head) = copy.head else {
            // The request never reached an upstream: there is nothing it sent to copy.
            return;
        };
        if copy.too_large {
            return self.drop_one("too_large");
        }
        let Some(endpoint) = copy.pool.pick(Pick::RoundRobin, |_| true) else {
            return self.drop_one("no_endpoint");
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return self.drop_one("full");
        };
        let addr = endpoint.addr();
        let wire = request_bytes(&head, &copy.body);
        let dropped = self.dropped.clone();
        tokio::spawn(async move {
            let done = tokio::time::timeout(MIRROR_TIMEOUT, exchange(addr, wire)).await;
            if !matches!(done, Ok(Ok(()))) {
                dropped.with_label_values(&["failed"]).inc();
            }
            drop(permit);
        });
    }
}

/// Headers not copied: the connection's own, and the framing, which the copy sets itself.
const NOT_COPIED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// The copy on the wire: request line, headers, `Content-Length`, `Connection: close`, body.
fn request_bytes(head: &RequestHeader, body: &[u8]) -> Bytes {
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = BytesMut::with_capacity(512 + body.len());
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &head.headers {
        if NOT_COPIED.contains(&name.as_str()) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut len = itoa::Buffer::new();
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(len.format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    out.extend_from_slice(body);
    out.freeze()
}

/// Writes the copy and reads the answer to its end, discarding it.
async fn exchange(addr: SocketAddr, wire: Bytes) -> std::io::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(&wire).await?;
    let mut sink = [0u8; 4096];
    let mut answered = false;
    loop {
        match stream.read(&mut sink).await? {
            0 if answered => return Ok(()),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => answered = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_framed_by_its_own_length_and_closes_its_connection() {
        let mut head = RequestHeader::build("POST", b"/a?b=1", None).unwrap();
        head.insert_header("host", "app.test").unwrap();
        head.insert_header("transfer-encoding", "chunked").unwrap();
        head.insert_header("x-a", "1").unwrap();
        let wire = request_bytes(&head, b"hello");
        assert_eq!(
            &wire[..],
            b"POST /a?b=1 HTTP/1.1\r\nhost: app.test\r\nx-a: 1\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
        );
    }
}
