//! The access log: one line per request, JSON or combined, written off the request path.
//!
//! Requests hand their line to a bounded queue; one thread writes the queue to stdout through a
//! buffer, flushing whenever the queue runs dry. When the writer falls behind, lines are dropped
//! and counted (`sluice_access_log_dropped_total`) rather than slowing requests down.

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use prometheus::IntCounter;
use sluice_config::settings::AccessLogFormat;

/// Lines waiting to be written before new ones are dropped.
const QUEUE_LINES: usize = 16 * 1024;

/// Everything one access-log line says.
#[derive(Debug, Clone, Default)]
pub struct Record<'a> {
    /// RFC 3339, UTC.
    pub time: String,
    pub client: String,
    pub method: &'a str,
    pub host: &'a str,
    /// Path and query as received.
    pub path: &'a str,
    pub protocol: &'a str,
    /// 0 when no response was sent.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: usize,
    pub duration_s: f64,
    /// `None` when the request was not proxied.
    pub upstream_duration_s: Option<f64>,
    pub namespace: &'a str,
    pub ingress: &'a str,
    pub service: &'a str,
    pub upstream: Option<String>,
    pub request_id: &'a str,
    pub referer: &'a str,
    pub user_agent: &'a str,
}

fn dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// Formats a record as one line (without the newline).
pub fn format(r: &Record<'_>, format: AccessLogFormat) -> String {
    match format {
        AccessLogFormat::Json => serde_json::json!({
            "time": r.time,
            "client": r.client,
            "method": r.method,
            "host": r.host,
            "path": r.path,
            "protocol": r.protocol,
            "status": r.status,
            "bytes": r.bytes,
            "duration_s": r.duration_s,
            "upstream_duration_s": r.upstream_duration_s,
            "namespace": r.namespace,
            "ingress": r.ingress,
            "service": r.service,
            "upstream": r.upstream,
            "request_id": r.request_id,
            "referer": r.referer,
            "user_agent": r.user_agent,
        })
        .to_string(),
        // nginx's combined format, then the fields it lacks, as ingress-nginx's default does.
        AccessLogFormat::Combined => {
            let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
            let upstream_time = r
                .upstream_duration_s
                .map(|d| format!("{d:.3}"))
                .unwrap_or_else(|| "-".to_string());
            format!(
                "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" {:.3} {} {} {}/{}/{} {}",
                dash(&r.client),
                r.time,
                esc(r.method),
                esc(r.path),
                esc(r.protocol),
                r.status,
                r.bytes,
                esc(dash(r.referer)),
                esc(dash(r.user_agent)),
                r.duration_s,
                upstream_time,
                dash(r.upstream.as_deref().unwrap_or("")),
                dash(r.namespace),
                dash(r.ingress),
                dash(r.service),
                dash(r.request_id),
            )
        }
    }
}

/// Where request lines go.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<String>,
    format: AccessLogFormat,
    dropped: IntCounter,
}

impl AccessLog {
    /// Starts the writer thread over `out` (stdout in the binary).
    pub fn start(
        format: AccessLogFormat,
        dropped: IntCounter,
        out: Box<dyn Write + Send>,
    ) -> std::io::Result<AccessLog> {
        let (tx, rx) = sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("sluice-access-log".into())
            .spawn(move || write_lines(rx, out))?;
        Ok(AccessLog {
            tx,
            format,
            dropped,
        })
    }

    /// Queues one line; drops it (and counts) when the writer is behind.
    pub fn log(&self, record: &Record<'_>) {
        match self.tx.try_send(format(record, self.format)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

fn write_lines(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    // Ends when every sender is gone (the proxy stopped).
    while let Ok(line) = rx.recv() {
        let mut ok = writeln!(out, "{line}").is_ok();
        while let Ok(line) = rx.try_recv() {
            ok &= writeln!(out, "{line}").is_ok();
        }
        ok &= out.flush().is_ok();
        if !ok {
            // stdout is gone; keep draining so senders never block, and stop writing.
            while rx.recv().is_ok() {}
            return;
        }
    }
}

/// A shared handle, or none when the access log is off.
pub type MaybeAccessLog = Option<Arc<AccessLog>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record<'static> {
        Record {
            time: "2026-01-02T03:04:05Z".into(),
            client: "127.0.0.1".into(),
            method: "GET",
            host: "a.test",
            path: "/x?q=\"1\"",
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 12,
            duration_s: 0.0123,
            upstream_duration_s: Some(0.01),
            namespace: "shop",
            ingress: "web",
            service: "api",
            upstream: Some("10.0.0.1:8080".into()),
            request_id: "abc",
            referer: "",
            user_agent: "curl/8",
        }
    }

    #[test]
    fn a_json_line_carries_every_field() {
        let line = format(&record(), AccessLogFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["path"], "/x?q=\"1\"");
        assert_eq!(v["upstream"], "10.0.0.1:8080");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["namespace"], "shop");
    }

    #[test]
    fn a_combined_line_escapes_quotes_and_dashes_empty_fields() {
        let line = format(&record(), AccessLogFormat::Combined);
        assert_eq!(
            line,
            "127.0.0.1 - - [2026-01-02T03:04:05Z] \"GET /x?q=\\\"1\\\" HTTP/1.1\" 200 12 \"-\" \"curl/8\" 0.012 0.010 10.0.0.1:8080 shop/web/api abc"
        );
    }
}
