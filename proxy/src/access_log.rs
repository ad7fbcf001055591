//! The access log: one line per request, JSON or combined, written off the request path.
//!
//! Requests hand their line to a bounded queue; one thread writes the queue to stdout through a
//! buffer, flushing whenever the queue runs dry. When the writer falls behind, lines are dropped
//! and counted (`sluice_access_log_dropped_total`) rather than slowing requests down.

use std::fmt::Write as _;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use prometheus::IntCounter;

use crate::text::{push_int, push_ip, push_seconds, push_socket_addr, push_time};
use sluice_config::settings::AccessLogFormat;

/// Lines waiting to be written before new ones are dropped.
const QUEUE_LINES: usize = 16 * 1024;

/// How long the writer waits after writing a batch before it looks for more, in milliseconds.
/// While it waits, a request queues its line without waking it (no futex wake, no context switch
/// per line), so under load one wake-up writes a whole batch; an idle writer blocks on the queue
/// and the first line after a pause is written at once. A line is written at most this much
/// later than it was queued, and the queue holds far more than a batch period's lines.
const BATCH_MS: u64 = 10;

/// Everything one access-log line says.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// Written as RFC 3339, UTC.
    pub time: Timestamp,
    pub client: Option<IpAddr>,
    pub method: &'a str,
    pub host: &'a str,
    /// Path and query as received.
    pub path: &'a str,
    pub protocol: &'a str,
    /// 0 when no response was sent.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: usize,
    pub duration: Duration,
    /// `None` when the request was not proxied.
    pub upstream_duration: Option<Duration>,
    /// The route's external auth check (`sluice.dev/auth-url`); `None` without one.
    pub auth_duration: Option<Duration>,
    pub namespace: &'a str,
    pub ingress: &'a str,
    pub service: &'a str,
    pub upstream: Option<SocketAddr>,
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
    let mut line = String::with_capacity(320);
    format_into(&mut line, r, format);
    line
}

/// Appends a record's line (without the newline) to `out`. The fields are written straight into
/// the buffer: no intermediate JSON value, no string per field.
pub fn format_into(out: &mut String, r: &Record<'_>, format: AccessLogFormat) {
    match format {
        AccessLogFormat::Json => write_json(out, r),
        AccessLogFormat::Combined => write_combined(out, r),
    }
}

fn write_json(out: &mut String, r: &Record<'_>) {
    let text = |out: &mut String, key: &str, value: &str| {
        out.push_str(key);
        json_string(out, value);
    };
    out.push_str("{\"time\":\"");
    push_time(out, r.time);
    out.push_str("\",\"client\":\"");
    if let Some(ip) = r.client {
        push_ip(out, ip);
    }
    out.push('"');
    text(out, ",\"method\":", r.method);
    text(out, ",\"host\":", r.host);
    text(out, ",\"path\":", r.path);
    text(out, ",\"protocol\":", r.protocol);
    out.push_str(",\"status\":");
    push_int(out, r.status);
    out.push_str(",\"bytes\":");
    push_int(out, r.bytes);
    out.push_str(",\"duration_s\":");
    push_seconds(out, r.duration, 6);
    out.push_str(",\"upstream_duration_s\":");
    match r.upstream_duration {
        Some(d) => push_seconds(out, d, 6),
        None => out.push_str("null"),
    }
    if let Some(d) = r.auth_duration {
        out.push_str(",\"auth_duration_s\":");
        push_seconds(out, d, 6);
    }
    text(out, ",\"namespace\":", r.namespace);
    text(out, ",\"ingress\":", r.ingress);
    text(out, ",\"service\":", r.service);
    match r.upstream {
        Some(a) => {
            out.push_str(",\"upstream\":\"");
            push_socket_addr(out, a);
            out.push('"');
        }
        None => out.push_str(",\"upstream\":null"),
    }
    text(out, ",\"request_id\":", r.request_id);
    text(out, ",\"referer\":", r.referer);
    text(out, ",\"user_agent\":", r.user_agent);
    out.push('}');
}

/// A JSON string literal of `s`: quotes, backslashes and control characters escaped.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut rest = s;
    // A byte scan: every byte to escape is ASCII, and no byte of a multi-byte character is.
    while let Some(i) = rest
        .bytes()
        .position(|b| b == b'"' || b == b'\\' || b < b' ')
    {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i];
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                let _ = write!(out, "\\u{:04x}", c);
            }
        }
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// `s` with `"` and `\\` escaped by a backslash, as nginx escapes its log variables.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
}

/// nginx's combined format, then the fields it lacks, as ingress-nginx's default does (times
/// in seconds with milliseconds, truncated, as nginx writes `$request_time`).
fn write_combined(out: &mut String, r: &Record<'_>) {
    let quoted = |out: &mut String, s: &str| {
        out.push('"');
        push_escaped(out, s);
        out.push('"');
    };
    match r.client {
        Some(ip) => push_ip(out, ip),
        None => out.push('-'),
    }
    out.push_str(" - - [");
    push_time(out, r.time);
    out.push_str("] \"");
    push_escaped(out, r.method);
    out.push(' ');
    push_escaped(out, r.path);
    out.push(' ');
    push_escaped(out, r.protocol);
    out.push_str("\" ");
    push_int(out, r.status);
    out.push(' ');
    push_int(out, r.bytes);
    out.push(' ');
    quoted(out, dash(r.referer));
    out.push(' ');
    quoted(out, dash(r.user_agent));
    out.push(' ');
    push_seconds(out, r.duration, 3);
    out.push(' ');
    match r.upstream_duration {
        Some(d) => push_seconds(out, d, 3),
        None => out.push('-'),
    }
    out.push(' ');
    match r.upstream {
        Some(a) => push_socket_addr(out, a),
        None => out.push('-'),
    }
    out.push(' ');
    for (i, label) in [r.namespace, r.ingress, r.service].into_iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(dash(label));
    }
    out.push(' ');
    out.push_str(dash(r.request_id));
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
        std::thread::sleep(Duration::from_millis(BATCH_MS));
    }
}

/// A shared handle, or none when the access log is off.
pub type MaybeAccessLog = Option<Arc<AccessLog>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record<'static> {
        Record {
            time: "2026-01-02T03:04:05Z".parse().unwrap(),
            client: Some([127, 0, 0, 1].into()),
            method: "GET",
            host: "a.test",
            path: "/x?q=\"1\"",
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 12,
            duration: Duration::from_micros(12_300),
            upstream_duration: Some(Duration::from_millis(10)),
            auth_duration: None,
            namespace: "shop",
            ingress: "web",
            service: "api",
            upstream: Some(([10, 0, 0, 1], 8080).into()),
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
    fn a_json_line_escapes_quotes_backslashes_and_control_characters() {
        let mut r = record();
        r.user_agent = "a \"quoted\" \\ agent\twith\u{1}controls";
        r.client = None;
        r.upstream = None;
        r.upstream_duration = None;
        let line = format(&r, AccessLogFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["user_agent"], r.user_agent);
        assert_eq!(v["client"], "");
        assert!(v["upstream"].is_null());
        assert!(v["upstream_duration_s"].is_null());
        assert_eq!(v["duration_s"], 0.0123);
        assert_eq!(v["time"], "2026-01-02T03:04:05.000000Z");
    }

    #[test]
    fn a_combined_line_escapes_quotes_and_dashes_empty_fields() {
        let line = format(&record(), AccessLogFormat::Combined);
        assert_eq!(
            line,
            "127.0.0.1 - - [2026-01-02T03:04:05.000000Z] \"GET /x?q=\\\"1\\\" HTTP/1.1\" 200 12 \"-\" \"curl/8\" 0.012 0.010 10.0.0.1:8080 shop/web/api abc"
        );
    }
}
