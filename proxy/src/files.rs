//! The files source: a folder of Kubernetes YAML manifests, watched for changes.
//!
//! Every `*.yaml` and `*.yml` file directly in the folder is read (multi-document files too);
//! Ingress, IngressClass, Service, EndpointSlice, Secret and Node objects are kept, other kinds
//! are ignored. The folder is polled (every `source.files.poll_interval_ms`): a poll compares each
//! file's size and modification time, and only re-reads what changed. Polling rather than inotify
//! keeps working when the folder is a mounted ConfigMap, whose updates swap a symlink.
//!
//! A file that cannot be read or parsed is reported (once per change) and its last good objects
//! keep serving; the other files are unaffected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::objects::{parse_document, Object, Objects};
use crate::state::State;

/// What a file looked like when last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

/// The objects last read from one file.
struct FileObjects {
    stamp: Stamp,
    /// The last objects read without error (kept when a later version is malformed).
    objects: Vec<Object>,
}

/// Why a manifest file was not (fully) used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: cannot read: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML: {message}", path = .path.display())]
    Yaml { path: PathBuf, message: String },
    #[error("{path}: document {index}: {message}", path = .path.display())]
    Document {
        path: PathBuf,
        index: usize,
        message: String,
    },
}

/// Parses one manifest file's text. Returns the objects that parsed and the errors of the
/// documents that did not.
pub fn parse_manifests(
    path: &Path,
    text: &str,
) -> Result<(Vec<Object>, Vec<FileError>), FileError> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| FileError::Yaml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (index, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        match parse_document(doc) {
            Ok(Some(o)) => objects.push(o),
            Ok(None) => {}
            Err(message) => errors.push(FileError::Document {
                path: path.to_path_buf(),
                index: index + 1,
                message,
            }),
        }
    }
    Ok((objects, errors))
}

/// Reads a whole folder once, reporting nothing: for `sluice check` and tests.
pub fn read_folder(dir: &Path) -> Result<(Objects, Vec<FileError>), FileError> {
    let mut folder = Folder::default();
    folder.scan(dir)?;
    let errors = std::mem::take(&mut folder.errors);
    Ok((folder.objects(), errors))
}

/// The state of the watched folder between polls.
#[derive(Default)]
struct Folder {
    files: BTreeMap<PathBuf, FileObjects>,
    /// Errors found by the last scan.
    errors: Vec<FileError>,
}

fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

impl Folder {
    /// Re-reads changed files. Returns whether the set of objects may have changed.
    fn scan(&mut self, dir: &Path) -> Result<bool, FileError> {
        let read_dir = |source| FileError::Read {
            path: dir.to_path_buf(),
            source,
        };
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_dir)? {
            let path = entry.map_err(read_dir)?.path();
            // Follows symlinks, so a ConfigMap's `..data` links resolve to their files.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_file() && is_manifest(&path) {
                seen.push((
                    path,
                    Stamp {
                        len: meta.len(),
                        modified: meta.modified().ok(),
                    },
                ));
            }
        }
        let mut changed = false;
        let before = self.files.len();
        self.files.retain(|p, _| seen.iter().any(|(s, _)| s == p));
        changed |= self.files.len() != before;

        for (path, stamp) in seen {
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            changed = true;
            let parsed = std::fs::read_to_string(&path)
                .map_err(|source| FileError::Read {
                    path: path.clone(),
                    source,
                })
                .and_then(|text| parse_manifests(&path, &text));
            let previous = self.files.remove(&path);
            let objects = match parsed {
                Ok((objects, errors)) if errors.is_empty() => objects,
                Ok((objects, errors)) => {
                    self.errors.extend(errors);
                    // Keep the last good version of the file; on a first read, use what parsed.
                    match previous {
                        Some(p) => p.objects,
                        None => objects,
                    }
                }
                Err(e) => {
                    self.errors.push(e);
                    previous.map(|p| p.objects).unwrap_or_default()
                }
            };
            self.files.insert(path, FileObjects { stamp, objects });
        }
        Ok(changed)
    }

    fn objects(&self) -> Objects {
        let mut all = Objects::default();
        for f in self.files.values() {
            for o in &f.objects {
                all.insert(o.clone());
            }
        }
        all
    }
}

/// Watches a folder of manifests and publishes a snapshot whenever it changes.
pub struct FilesSource {
    dir: PathBuf,
    interval: Duration,
    state: Arc<State>,
}

impl FilesSource {
    pub fn new(dir: PathBuf, interval: Duration, state: Arc<State>) -> FilesSource {
        FilesSource {
            dir,
            interval,
            state,
        }
    }
}

#[async_trait]
impl BackgroundService for FilesSource {
    /// Polls the folder until shutdown; publishes after every change, and once at start even
    /// when the folder is empty or unreadable (so readiness reflects a completed first read).
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut folder = Some(Folder::default());
        let mut first = true;
        let mut last_error: Option<String> = None;
        loop {
            let dir = self.dir.clone();
            let Some(mut f) = folder.take() else { return };
            // File reads and YAML parsing block: keep them off the request workers.
            let joined = tokio::task::spawn_blocking(move || {
                let r = f.scan(&dir);
                (f, r)
            })
            .await;
            let Ok((mut f, result)) = joined else {
                tracing::error!("the manifest scan task failed");
                return;
            };
            for e in f.errors.drain(..) {
                tracing::error!(error = %e, "manifest ignored; the last good version keeps serving");
            }
            match result {
                Ok(changed) => {
                    last_error = None;
                    if changed || first {
                        let objects = f.objects();
                        self.state.publish(&objects).await;
                        let gauge = &self.state.metrics().watched_objects;
                        for (kind, n) in [
                            ("Ingress", objects.ingresses.len()),
                            ("IngressClass", objects.classes.len()),
                            ("Service", objects.services.len()),
                            ("EndpointSlice", objects.slices.len()),
                            ("Secret", objects.secrets.len()),
                            ("Node", objects.nodes.len()),
                        ] {
                            gauge.with_label_values(&[kind]).set(n as i64);
                        }
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_deref() != Some(&text) {
                        tracing::error!(error = %text, "cannot read the manifests folder");
                    }
                    last_error = Some(text);
                    if first {
                        self.state.publish(&f.objects()).await;
                    }
                }
            }
            first = false;
            folder = Some(f);
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_document_file_yields_each_known_object() {
        let text = "\
apiVersion: v1
kind: Service
metadata: {name: a, namespace: default}
spec: {ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
---
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: sluice}
spec: {controller: sluice.dev/ingress-controller}
";
        let (objects, errors) = parse_manifests(Path::new("x.yaml"), text).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        let kinds: Vec<_> = objects.iter().map(|o| o.kind()).collect();
        assert_eq!(kinds, vec!["Service", "IngressClass"]);
    }

    #[test]
    fn broken_yaml_is_an_error_naming_the_file() {
        let err = parse_manifests(Path::new("bad.yaml"), "kind: [unclosed\n").unwrap_err();
        assert!(
            err.to_string().starts_with("bad.yaml: not valid YAML"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_document_is_reported_with_its_index_and_the_rest_is_kept() {
        let text = "\
apiVersion: v1
kind: Service
metadata: {name: a}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: broken}
spec: {rules: 7}
";
        let (objects, errors) = parse_manifests(Path::new("m.yaml"), text).unwrap();
        assert_eq!(objects.len(), 1);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .starts_with("m.yaml: document 2: Ingress:"),
            "{}",
            errors[0]
        );
    }
}
