//! The `sluice` binary: the config check and the SIGTERM drain, as an operator meets them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

fn repo_file(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// Runs `sluice check` on a settings file and a folder of manifests.
fn check_with_manifests(
    config: &std::path::Path,
    manifests: &std::path::Path,
) -> std::process::Output {
    Command::new(BIN)
        .args(["check", "--config"])
        .arg(config)
        .arg("--manifests")
        .arg(manifests)
        .output()
        .unwrap()
}

#[test]
fn check_accepts_the_shipped_config() {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(repo_file("config/sluice.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("sluice.toml: settings ok"), "{stdout}");
    // The shipped example's Ingress and its routes are listed.
    assert!(stdout.contains("Ingress default/demo"), "{stdout}");
    assert!(
        stdout.contains("route    demo.localhost / (Prefix) -> default/demo:80 (1 ready endpoint)"),
        "{stdout}"
    );
}

#[test]
fn version_names_the_crate_version_and_the_git_revision_it_was_built_from() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("sluice {} (revision ", env!("CARGO_PKG_VERSION"));
    let revision = stdout
        .trim_end()
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `{prefix}REV)`: {stdout:?}"));
    // A revision passed in through $SLUICE_REVISION is printed as given. Built from a git
    // checkout (the usual case for the tests), it is HEAD's, with `-dirty` when tracked files
    // differed from it; without git it says `unknown`.
    if let Ok(given) = std::env::var("SLUICE_REVISION") {
        assert_eq!(revision, given.trim(), "{stdout}");
        return;
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(head) => {
            let commit = revision.strip_suffix("-dirty").unwrap_or(revision);
            assert_eq!(commit, head, "{stdout}");
            let tree_dirty = !git(&["status", "--porcelain", "--untracked-files=no"])
                .unwrap()
                .is_empty();
            // Only a tree that was clean when built and is dirty now (an edit since) may
            // disagree; never a dirty build of a clean tree.
            if revision.ends_with("-dirty") {
                assert!(tree_dirty, "built dirty from a clean tree: {stdout}");
            }
        }
        None => assert_eq!(revision, "unknown", "{stdout}"),
    }
}

#[test]
fn check_names_the_file_line_and_key_of_an_unknown_setting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nworker_threads = 2\n\n[upstream]\nconect_timeout_ms = 5\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:5:"), "{err}");
    assert!(err.contains("upstream.conect_timeout_ms"), "{err}");
}

#[test]
fn check_reports_a_malformed_manifest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("manifests")).unwrap();
    std::fs::write(dir.path().join("manifests/broken.yaml"), "kind: [\n").unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, "").unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.yaml"));
}

/// Runs `sluice check` with `settings` as `sluice.toml` and `manifests` as `site.yaml` in `dir`.
pub(crate) fn check_folder(
    dir: &std::path::Path,
    manifests: &str,
    settings: &str,
) -> std::process::Output {
    std::fs::write(dir.join("site.yaml"), manifests).unwrap();
    let config = dir.join("sluice.toml");
    std::fs::write(&config, settings).unwrap();
    check_with_manifests(&config, dir)
}

#[test]
fn check_lists_skipped_rules_of_a_manifests_folder_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = [
        service("default", "web"),
        ingress(
            "default",
            "site",
            Some("site.test"),
            &[("/", "Prefix", "web"), ("/ghost", "Prefix", "ghost")],
        ),
    ]
    .concat();
    let out = check_folder(dir.path(), &manifests, "");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("route    site.test / (Prefix) -> default/web:80 (0 ready endpoints)"),
        "{stdout}"
    );
    assert!(stdout.contains("skipped  MissingService: spec.rules[0].http.paths[1]: Service default/ghost does not exist"), "{stdout}");
}

#[test]
fn check_reports_a_host_owned_by_another_namespace_on_the_foreign_ingress() {
    let dir = tempfile::tempdir().unwrap();
    let squat = ingress(
        "team-b",
        "squat",
        Some("app.team-a.test"),
        &[("/admin", "Prefix", "web")],
    )
    .replace(
        "  rules:\n",
        "  tls:\n  - hosts: [\"app.team-a.test\"]\n  rules:\n",
    );
    let manifests = [
        service("team-a", "web"),
        service("team-b", "web"),
        ingress(
            "team-a",
            "app",
            Some("app.team-a.test"),
            &[("/", "Prefix", "web")],
        ),
        squat,
    ]
    .concat();
    let settings = "[controller]\ncross_namespace_paths = \"deny\"\n\
                    [controller.host_owners]\n\"*.team-a.test\" = \"team-a\"\n";
    let out = check_folder(dir.path(), &manifests, settings);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let owner = "host `app.team-a.test` is owned by namespace team-a (controller.host_owners `*.team-a.test`)";
    for line in [
        format!("  skipped  HostNotOwned: spec.rules[0]: {owner} and controller.cross_namespace_paths is \"deny\"; its paths are not served\n"),
        format!("  skipped  HostNotOwned: spec.tls[0]: {owner}; this Ingress's certificate and client-auth annotations are ignored for it\n"),
    ] {
        let block = stdout.split("Ingress team-b/squat\n").nth(1).unwrap_or("");
        assert!(block.contains(&line), "{line}\n{stdout}");
    }
}

/// A default certificate file that is missing or unreadable fails the check (exit 2) naming
/// the setting, the settings file and the certificate file, instead of passing a config whose
/// start-up then fails; a readable matching pair passes.
#[test]
fn check_fails_when_the_default_certificate_or_key_file_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let issued = pki::Ca::root("check root").issue(&pki::Leaf::server("site.test", &["site.test"]));
    std::fs::write(dir.path().join("tls.crt"), issued.cert_pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), issued.key_pem()).unwrap();
    let config = dir.path().join("sluice.toml");
    let check = |crt: &str, key: &str| {
        std::fs::write(
            &config,
            format!(
                "[tls]
default_certificate_file = \"{crt}\"
default_key_file = \"{key}\"\n"
            ),
        )
        .unwrap();
        let out = check_with_manifests(&config, dir.path());
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check("missing.crt", "tls.key");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("sluice.toml"), "{err}");
    assert!(err.contains("tls.default_certificate_file"), "{err}");
    assert!(err.contains("missing.crt"), "{err}");
    let (code, err) = check("tls.crt", "gone.key");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("tls.default_key_file"), "{err}");
    assert!(err.contains("gone.key"), "{err}");
    // A key that is not the certificate's fails too, naming both settings.
    let (code, err) = check("tls.key", "tls.key");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("tls.default_certificate_file and tls.default_key_file"),
        "{err}"
    );
    let (code, err) = check("tls.crt", "tls.key");
    assert_eq!(code, Some(0), "{err}");
}

/// Starts the binary with JSON logs and returns it with its HTTP address.
fn spawn(dir: &std::path::Path) -> (Child, SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(dir.join("sluice.toml"))
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads the log to its end (so the child never blocks on a full pipe), reporting the
    // listening address as soon as it is logged.
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"] == "sluice is listening" {
                    let http = v["http"]
                        .as_str()
                        .unwrap_or_default()
                        .trim_matches(['[', ']'])
                        .to_string();
                    let _ = tx.send(http);
                }
            }
            lines.push(line);
        }
        lines
    });
    let addr = rx
        .recv_timeout(STEP)
        .expect("sluice did not log its listening address")
        .parse()
        .unwrap();
    (child, addr, reader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_then_exits_zero() {
    let slow = Backend::start("slow").await;
    slow.set_delay(Duration::from_millis(800));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("manifests")).unwrap();
    std::fs::write(
        dir.path().join("manifests/routes.yaml"),
        [
            service_with("default", "slow", &[slow.addr]),
            ingress("default", "slow", None, &[("/", "Prefix", "slow")]),
        ]
        .concat(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sluice.toml"),
        test_settings("") + "[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let (mut child, addr, reader) = spawn(dir.path());
    let ready = eventually(STEP, "a route", || async move {
        let mut c = H1::connect(addr).await;
        // Readiness: a 503/404 means the snapshot is not there yet; 200 takes 800 ms.
        c.get("x", "/").await.ok().filter(|r| r.status == 200)
    })
    .await;
    assert_eq!(ready.backend(), "slow");

    let mut conn = H1::connect(addr).await;
    let before = slow.arrivals.load(Ordering::SeqCst);
    let in_flight = tokio::spawn(async move { conn.get("x", "/").await });
    let arrivals = slow.arrivals.clone();
    eventually(STEP, "the request to reach the backend", || {
        let n = arrivals.load(Ordering::SeqCst);
        async move { (n > before).then_some(()) }
    })
    .await;

    let started = Instant::now();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());

    let reply = in_flight
        .await
        .unwrap()
        .expect("the request in flight failed");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), "slow");

    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .await
    .unwrap()
    .expect("sluice did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0));
    // It left as soon as the request finished, well before the 5 s grace period.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // New connections are refused once it has stopped.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let log = reader.join().unwrap().join("\n");
    assert!(log.contains("all requests finished"), "{log}");
}
