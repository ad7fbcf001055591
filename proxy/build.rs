//! Records the source revision for `sluice --version`, as `SLUICE_REVISION`:
//!
//! - `$SLUICE_REVISION` when set and not empty (a build from a tree without `.git`, such as a
//!   container build context: the build passes the revision in);
//! - else `git rev-parse --short=12 HEAD`, with `-dirty` when tracked files differ from it
//!   (untracked files do not count);
//! - else `unknown` (no git, or not a git checkout).
//!
//! Cargo reruns this script only when the revision can have changed: the checked-out commit
//! (`HEAD`, the branch it names, `packed-refs`), the index (a commit or `git add`), or the
//! sources that make up the binary (an edit makes the tree dirty). It never writes to the
//! repository (`--no-optional-locks`), so running it does not touch the index it watches.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SLUICE_REVISION");
    let revision = match std::env::var("SLUICE_REVISION") {
        Ok(r) if !r.trim().is_empty() => r.trim().to_string(),
        _ => git_revision().unwrap_or_else(|| "unknown".to_string()),
    };
    println!("cargo:rustc-env=SLUICE_REVISION={revision}");
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("--no-optional-locks")
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn git_revision() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    watch_git_state();
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty();
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}

/// Asks Cargo to rerun this script when the commit, the index or the binary's sources change.
/// Only existing paths are named: Cargo treats a missing one as always changed.
fn watch_git_state() {
    let mut paths = Vec::new();
    for name in ["HEAD", "index", "packed-refs"] {
        paths.extend(git(&["rev-parse", "--git-path", name]));
    }
    if let Some(branch) = git(&["symbolic-ref", "--quiet", "HEAD"]) {
        paths.extend(git(&["rev-parse", "--git-path", &branch]));
    }
    paths.extend(
        [
            "src",
            "../config/src",
            "../Cargo.toml",
            "../Cargo.lock",
            "../vendor/patched",
        ]
        .map(String::from),
    );
    for path in paths.iter().filter(|p| Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={path}");
    }
}
