//! The scale bench's helper (`wrk/scale.sh` drives it): makes the large cluster, serves it from
//! the in-repo fake API server, and makes timed changes to it.
//!
//! ```text
//! scale-cluster generate  --out DIR --apps N --backend-ports P1,P2,...
//! scale-cluster apiserver --manifests DIR --kubeconfig FILE [--max-secs S]
//! scale-cluster changes   --kind endpoint|ingress --apps N --first I --count K
//!                         --backend-ports ... --proxy ADDR (--dir DIR | --api ADDR) [--pid PID]
//! ```
//!
//! - `generate` writes YAML files of `--apps-per-file` apps each (see `sluice_benches::scale`),
//!   so that a change rewrites one small file.
//! - `apiserver` loads every manifest of DIR into the fake API server of the integration tests
//!   (`proxy/tests/it/support/fake_apiserver.rs`: the real list/watch wire protocol with
//!   bookmarks), writes a kubeconfig pointing at it once it is loaded (the readiness signal), and
//!   serves until killed or `--max-secs` pass.
//! - `changes` makes K changes to apps `I..I+K`, one after the other: each is written (the
//!   app's file re-rendered with the changed object and replaced atomically, or a merge PATCH to
//!   the API server, as a controller's write) and then
//!   probed through the proxy until a request is served by it. It prints one line of
//!   `key=value` figures: the changes' time to the first request served by them (p50, p99,
//!   max), and with `--pid` the proxy's CPU ticks (utime+stime from `/proc/PID/stat`) from the
//!   first write to `--settle-ms` after the last change was seen, and the largest VmRSS sampled.
//!
//! Every address is loopback (the proxy's and API server's are checked); every wait is bounded
//! (`--timeout-ms` per change, `--max-secs` for the server).

#[path = "../../../proxy/tests/it/support/fake_apiserver.rs"]
mod fake_apiserver;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;
use sluice_benches::scale;

#[derive(Parser, Debug)]
#[command(
    name = "scale-cluster",
    about = "The scale bench's cluster, API server and changes"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Writes the cluster's manifests, one file per object.
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// How many apps (Ingress + Service + EndpointSlice each).
        #[arg(long)]
        apps: usize,
        /// The backend ports the endpoints point at (loopback), comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        backend_ports: Vec<u16>,
        /// Apps per file.
        #[arg(long, default_value_t = 25)]
        apps_per_file: usize,
    },
    /// Serves a folder of manifests from the fake API server.
    Apiserver {
        #[arg(long)]
        manifests: PathBuf,
        /// Written once every object is loaded: a kubeconfig for the server.
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Stops after this long whatever happens (seconds).
        #[arg(long, default_value_t = 3600)]
        max_secs: u64,
    },
    /// Makes timed changes and reports what they cost.
    Changes(Changes),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum ChangeKind {
    /// One endpoint of the app's EndpointSlice moves to another address.
    Endpoint,
    /// The app's Ingress gets a fourth path, to another app's Service.
    Ingress,
}

#[derive(clap::Args, Debug)]
struct Changes {
    #[arg(long, value_enum)]
    kind: ChangeKind,
    /// The cluster's size, as generated.
    #[arg(long)]
    apps: usize,
    /// The first app changed; apps `first..first+count` must not have been changed before.
    #[arg(long)]
    first: usize,
    #[arg(long)]
    count: usize,
    #[arg(long, value_delimiter = ',', required = true)]
    backend_ports: Vec<u16>,
    /// The proxy's HTTP listener.
    #[arg(long)]
    proxy: SocketAddr,
    /// The files source's folder: changes replace files there.
    #[arg(long, conflicts_with = "api", required_unless_present = "api")]
    dir: Option<PathBuf>,
    /// Apps per file in that folder, as generated.
    #[arg(long, default_value_t = 25)]
    apps_per_file: usize,
    /// The fake API server: changes are merge PATCHes to it.
    #[arg(long)]
    api: Option<SocketAddr>,
    /// The proxy's process, for its CPU time and memory.
    #[arg(long)]
    pid: Option<u32>,
    /// Pause between probes of a change not yet served (milliseconds).
    #[arg(long, default_value_t = 10)]
    probe_interval_ms: u64,
    /// Start a change every this many milliseconds; 0: each as soon as the previous is served.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// After the last change is served, wait this long before reading the CPU time, so work
    /// that follows the swap is counted (milliseconds).
    #[arg(long, default_value_t = 500)]
    settle_ms: u64,
    /// The longest one change may take to be served (milliseconds).
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Generate {
            out,
            apps,
            backend_ports,
            apps_per_file,
        } => generate(&out, apps, apps_per_file, &backend_ports),
        Command::Apiserver {
            manifests,
            kubeconfig,
            max_secs,
        } => apiserver(&manifests, &kubeconfig, Duration::from_secs(max_secs)),
        Command::Changes(c) => changes(&c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale-cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, String>;

/// Writes `text` to `path` through a temporary name the files source ignores, then renames it:
/// the source never reads a half-written file.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn generate(out: &Path, apps: usize, per_file: usize, ports: &[u16]) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    write_atomically(&out.join("class.yaml"), &scale::to_yaml(&scale::class()))?;
    let (mut bytes, mut files) = (0, 1);
    let per_file = per_file.max(1);
    for first in (0..apps).step_by(per_file) {
        let objects: Vec<Value> = (first..apps.min(first + per_file))
            .flat_map(|i| scale::app(i, apps, ports))
            .collect();
        let text = scale::to_yaml_documents(&objects);
        bytes += text.len();
        files += 1;
        write_atomically(&out.join(scale::file_name(first, per_file)), &text)?;
    }
    println!("apps={apps} files={files} bytes={bytes}");
    Ok(())
}

fn apiserver(manifests: &Path, kubeconfig: &Path, max: Duration) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("a runtime: {e}"))?;
    runtime.block_on(async {
        let api = fake_apiserver::FakeApiServer::start_with(fake_apiserver::Options {
            // Room for every change of a run, so no watch is sent back to relist.
            history_limit: 20_000,
            ..Default::default()
        })
        .await;
        let mut files: Vec<PathBuf> = std::fs::read_dir(manifests)
            .map_err(|e| format!("{}: {e}", manifests.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        let mut objects = 0;
        for path in files {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            for doc in docs.into_iter().filter(|d| !d.is_null()) {
                api.apply(doc);
                objects += 1;
            }
        }
        write_atomically(kubeconfig, &api.kubeconfig_yaml())?;
        println!("objects={objects} addr={}", api.addr());
        tokio::time::sleep(max).await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Changes

/// One HTTP/1.1 keepalive connection, reopened when the peer closes it.
struct Conn {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Result<Conn> {
        if !addr.ip().is_loopback() {
            return Err(format!("{addr} is not a loopback address"));
        }
        Ok(Conn { addr, stream: None })
    }

    /// Sends one request (its head without the final blank line, then `body`); returns the
    /// status and body. Retries once on a fresh connection when a kept one fails.
    fn request(&mut self, head: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let reused = self.stream.is_some();
        match self.try_request(head, body) {
            Ok(r) => Ok(r),
            Err(_) if reused => {
                self.stream = None;
                self.try_request(head, body)
            }
            Err(e) => Err(e),
        }
        .inspect_err(|_| self.stream = None)
    }

    fn try_request(&mut self, head: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let io = |e: std::io::Error| format!("{}: {e}", self.addr);
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).map_err(io)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(io)?;
            s.set_nodelay(true).map_err(io)?;
            self.stream = Some(BufReader::new(s));
        }
        let Some(reader) = self.stream.as_mut() else {
            return Err("no connection".to_string());
        };
        let mut out = format!("{head}\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        out.extend_from_slice(body);
        reader.get_mut().write_all(&out).map_err(io)?;
        let mut line = String::new();
        reader.read_line(&mut line).map_err(io)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{}: bad status line {line:?}", self.addr))?;
        let (mut length, mut close) = (0usize, false);
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(io)? == 0 {
                return Err(format!("{}: connection closed in a head", self.addr));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (name, value) = l.split_once(':').unwrap_or((l, ""));
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(|_| format!("bad length {value:?}"))?;
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(format!("{}: chunked answers are not expected", self.addr));
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).map_err(io)?;
        if close {
            self.stream = None;
        }
        Ok((status, body))
    }
}

/// Where changes are written.
enum Sink {
    Files { dir: PathBuf, per_file: usize },
    Api(Conn),
}

/// A change ready to be written: the file's new text, or the PATCH's path and body.
enum Prepared {
    File(PathBuf, String),
    Patch(String, Vec<u8>),
}

impl Sink {
    /// Everything before the write itself (reading and re-rendering the file), so that the
    /// time to traffic starts at the write.
    fn prepare(&self, app: usize, object: &Value) -> Result<Prepared> {
        match self {
            Sink::Files { dir, per_file } => {
                let path = dir.join(scale::file_name(app, *per_file));
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let mut docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let doc = docs
                    .iter_mut()
                    .find(|d| scale::same_object(d, object))
                    .ok_or_else(|| format!("{}: app {app} is not there", path.display()))?;
                *doc = object.clone();
                Ok(Prepared::File(path, scale::to_yaml_documents(&docs)))
            }
            Sink::Api(_) => {
                let path = scale::api_path(object).ok_or("an object without an API path")?;
                let body = serde_json::to_vec(object).map_err(|e| e.to_string())?;
                Ok(Prepared::Patch(path, body))
            }
        }
    }

    fn write(&mut self, change: Prepared) -> Result<()> {
        match (self, change) {
            (_, Prepared::File(path, text)) => write_atomically(&path, &text),
            (Sink::Api(conn), Prepared::Patch(path, body)) => {
                let head = format!(
                    "PATCH {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/merge-patch+json",
                    conn.addr
                );
                match conn.request(&head, &body)? {
                    (200, _) => Ok(()),
                    (code, body) => Err(format!(
                        "PATCH {path}: {code} {}",
                        String::from_utf8_lossy(&body)
                    )),
                }
            }
            (Sink::Files { .. }, Prepared::Patch(..)) => Err("a PATCH to a folder".to_string()),
        }
    }
}

/// utime+stime of a process (all its threads) in clock ticks.
fn proc_cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (field(11), field(12)) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => Err(format!("/proc/{pid}/stat: no utime/stime in {stat:?}")),
    }
}

fn proc_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `p`-th percentile (nearest rank) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What a change writes, the path of the request that shows it, and what that request's answer
/// (the backend's `address:port`) is once the change is served.
fn change(c: &Changes, app: usize) -> (Value, &'static str, Served) {
    match c.kind {
        ChangeKind::Endpoint => (
            scale::slice(app, &c.backend_ports, true),
            "/",
            Served::Address(scale::MOVED_ADDRESS.to_string()),
        ),
        ChangeKind::Ingress => {
            let target = scale::edit_target(app, c.apps);
            (
                scale::ingress(app, c.apps, true),
                "/edit/probe",
                Served::Port(scale::port(target, &c.backend_ports)),
            )
        }
    }
}

/// How a backend's answer (`address:port`) shows a change is served.
enum Served {
    /// Answered from this address (the endpoint moved there).
    Address(String),
    /// Answered on this port (another app's Service).
    Port(u16),
}

impl Served {
    fn by(&self, body: &[u8]) -> bool {
        let text = String::from_utf8_lossy(body);
        let Some((address, port)) = text.trim_end().rsplit_once(':') else {
            return false;
        };
        match self {
            Served::Address(a) => address == a,
            Served::Port(p) => port.parse() == Ok(*p),
        }
    }
}

fn changes(c: &Changes) -> Result<()> {
    if c.first == 0
        || c.first + c.count > c.apps
        || c.backend_ports.len() < 2
        || c.apps <= scale::NAMESPACES
    {
        return Err(format!(
            "apps {}..{} must lie within 1..{} (app 0 carries the load), with more than {} \
             apps and two or more backend ports",
            c.first,
            c.first + c.count,
            c.apps,
            scale::NAMESPACES
        ));
    }
    let mut sink = match (&c.dir, c.api) {
        (Some(dir), _) => Sink::Files {
            dir: dir.clone(),
            per_file: c.apps_per_file.max(1),
        },
        (None, Some(api)) => Sink::Api(Conn::new(api)?),
        (None, None) => return Err("--dir or --api is required".to_string()),
    };
    let mut proxy = Conn::new(c.proxy)?;
    let timeout = Duration::from_millis(c.timeout_ms);
    let probe_pause = Duration::from_millis(c.probe_interval_ms);
    let mut latencies = Vec::with_capacity(c.count);
    let mut rss_max = 0;
    let sample_rss = |rss_max: &mut u64| {
        if let Some(kb) = c.pid.and_then(proc_rss_kb) {
            *rss_max = (*rss_max).max(kb);
        }
    };
    let ticks_before = c.pid.map(proc_cpu_ticks).transpose()?;
    let start = Instant::now();
    for k in 0..c.count {
        if c.interval_ms > 0 {
            let slot = start + Duration::from_millis(c.interval_ms * k as u64);
            std::thread::sleep(slot.saturating_duration_since(Instant::now()));
        }
        let app = c.first + k;
        let (object, path, expected) = change(c, app);
        let head = format!("GET {path} HTTP/1.1\r\nHost: {}", scale::host(app));
        let prepared = sink.prepare(app, &object)?;
        let written = Instant::now();
        sink.write(prepared)?;
        // Served once one of a few requests in a row (round-robin over 3 endpoints) is
        // answered from where the change leads.
        'probe: loop {
            for _ in 0..3 {
                let (status, body) = proxy.request(&head, b"")?;
                if status == 200 && expected.by(&body) {
                    break 'probe;
                }
            }
            sample_rss(&mut rss_max);
            if written.elapsed() > timeout {
                return Err(format!(
                    "change {k} (app {app}) not served within {} ms",
                    c.timeout_ms
                ));
            }
            std::thread::sleep(probe_pause);
        }
        latencies.push(written.elapsed().as_secs_f64() * 1000.0);
        sample_rss(&mut rss_max);
    }
    std::thread::sleep(Duration::from_millis(c.settle_ms));
    sample_rss(&mut rss_max);
    let elapsed = start.elapsed();
    latencies.sort_by(f64::total_cmp);
    let mut line = format!(
        "count={} elapsed_ms={:.0} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        c.count,
        elapsed.as_secs_f64() * 1000.0,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0),
    );
    if let (Some(pid), Some(before)) = (c.pid, ticks_before) {
        let ticks = proc_cpu_ticks(pid)? - before;
        line += &format!(" cpu_ticks={ticks} rss_max_kb={rss_max}");
    }
    println!("{line}");
    Ok(())
}
