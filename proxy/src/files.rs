//! The files source: a folder of Kubernetes YAML manifests, watched for changes.
//!
//! Every `*.yaml` and `*.yml` file directly in the folder is read (multi-document files too);
//! Ingress, IngressClass, Service, EndpointSlice, Secret and Node objects are kept, other kinds
//! are ignored. The folder is polled (every `source.files.poll_interval_ms`): a poll compares each
//! file's size and modification time, and only re-reads what changed. Polling rather than inotify
//! keeps working when the folder is a mounted ConfigMap, whose updates swap a symlink.
//!
//! Objects are translated when their file is read, into the same [`Store`] the Kubernetes
//! source fills, and only the objects of changed files are written to it; the store then tells
//! the publisher what changed ([`State::publish_store`]), so an EndpointSlice edited in one file
//! updates that Service's pools and nothing else.
//!
//! A file that cannot be read or parsed is reported (once per change) and its last good objects
//! keep serving; the other files are unaffected.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::k8s::watch::{auth_secret_entry, ingress_entry, service_entry};
use crate::objects::{class_input, node_input, parse_document, slice_input, Object};
use crate::state::State;
use crate::store::{Entry, Kind, Store};
use sluice_config::model::ObjectRef;

/// What a file looked like when last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

/// The objects last read from one file, translated.
struct FileObjects {
    stamp: Stamp,
    /// The last objects read without error (kept when a later version is malformed).
    entries: Vec<(Kind, ObjectRef, Entry)>,
}

/// An object's kind in the store and its translation: the same as the watchers make of it.
fn entry_of(object: Object) -> (Kind, ObjectRef, Entry) {
    let key = object.key();
    let (kind, entry) = match object {
        Object::Ingress(o) => (Kind::Ingress, ingress_entry(&o)),
        Object::IngressClass(o) => (Kind::IngressClass, Entry::Class(Arc::new(class_input(&o)))),
        Object::Service(o) => (Kind::Service, service_entry(&o)),
        Object::EndpointSlice(o) => (Kind::EndpointSlice, Entry::Slice(Arc::new(slice_input(&o)))),
        // Every key: the folder's Secrets are on disk anyway, and basic auth reads the ones
        // its Ingresses name ([`crate::auth::basic`]).
        Object::Secret(o) => (Kind::Secret, auth_secret_entry(&o)),
        Object::Node(o) => (Kind::Node, Entry::Node(Arc::new(node_input(&o)))),
    };
    (kind, key, entry)
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

/// Reads a whole folder once into a store, reporting nothing: for `sluice check` and tests.
pub fn read_folder(dir: &Path) -> Result<(Store, Vec<FileError>), FileError> {
    let mut folder = Folder::default();
    let store = Store::default();
    let touched = folder.scan(dir)?;
    folder.sync(&store, &touched);
    let errors = std::mem::take(&mut folder.errors);
    Ok((store, errors))
}

/// The state of the watched folder between polls.
#[derive(Default)]
struct Folder {
    files: BTreeMap<PathBuf, FileObjects>,
    /// The files that define each object; where several do, the last in path order wins.
    defined_in: HashMap<(Kind, ObjectRef), BTreeSet<PathBuf>>,
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
    /// Re-reads and re-translates the files that changed (by size and modification time), and
    /// forgets those that are gone. Returns the objects they defined before or define now:
    /// empty when nothing changed.
    fn scan(&mut self, dir: &Path) -> Result<BTreeSet<(Kind, ObjectRef)>, FileError> {
        let read_dir = |source| FileError::Read {
            path: dir.to_path_buf(),
            source,
        };
        let mut seen = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(read_dir)? {
            let path = entry.map_err(read_dir)?.path();
            // Follows symlinks, so a ConfigMap's `..data` links resolve to their files.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_file() && is_manifest(&path) {
                let stamp = Stamp {
                    len: meta.len(),
                    modified: meta.modified().ok(),
                };
                seen.insert(path, stamp);
            }
        }
        let mut touched = BTreeSet::new();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !seen.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            if let Some(old) = self.files.remove(&path) {
                self.forget(&path, &old, &mut touched);
            }
        }
        for (path, stamp) in seen {
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            let parsed = std::fs::read_to_string(&path)
                .map_err(|source| FileError::Read {
                    path: path.clone(),
                    source,
                })
                .and_then(|text| parse_manifests(&path, &text));
            let previous = self.files.remove(&path);
            let entries = match (parsed, previous) {
                (Ok((_, errors)), Some(previous)) if !errors.is_empty() => {
                    // Keep the last good version of the file.
                    self.errors.extend(errors);
                    previous.entries
                }
                (Ok((objects, errors)), previous) => {
                    // On a first read, what parsed is used even if some documents did not.
                    self.errors.extend(errors);
                    if let Some(p) = &previous {
                        self.forget(&path, p, &mut touched);
                    }
                    objects.into_iter().map(entry_of).collect()
                }
                (Err(e), previous) => {
                    self.errors.push(e);
                    previous.map(|p| p.entries).unwrap_or_default()
                }
            };
            for (kind, key, _) in &entries {
                let id = (*kind, key.clone());
                self.defined_in
                    .entry(id.clone())
                    .or_default()
                    .insert(path.clone());
                touched.insert(id);
            }
            self.files.insert(path, FileObjects { stamp, entries });
        }
        Ok(touched)
    }

    /// Drops what `file` (read from `path`) defined from the index, noting its objects.
    fn forget(
        &mut self,
        path: &Path,
        file: &FileObjects,
        touched: &mut BTreeSet<(Kind, ObjectRef)>,
    ) {
        for (kind, key, _) in &file.entries {
            let id = (*kind, key.clone());
            if let Some(paths) = self.defined_in.get_mut(&id) {
                paths.remove(path);
                if paths.is_empty() {
                    self.defined_in.remove(&id);
                }
            }
            touched.insert(id);
        }
    }

    /// Brings `store` up to date for the objects in `touched`: each gets the translation of the
    /// last file (in path order) that defines it, or is deleted when none does.
    fn sync(&self, store: &Store, touched: &BTreeSet<(Kind, ObjectRef)>) {
        for (kind, key) in touched {
            let entry = self
                .defined_in
                .get(&(*kind, key.clone()))
                .and_then(|paths| paths.last())
                .and_then(|path| self.files.get(path))
                .and_then(|f| {
                    f.entries
                        .iter()
                        .rev()
                        .find(|(k, r, _)| k == kind && r == key)
                });
            match entry {
                Some((_, _, entry)) => store.apply(*kind, key.clone(), entry.clone()),
                None => store.delete(*kind, key),
            }
        }
    }
}

/// Watches a folder of manifests and publishes a snapshot whenever it changes.
pub struct FilesSource {
    dir: PathBuf,
    interval: Duration,
    state: Arc<State>,
    store: Arc<Store>,
}

impl FilesSource {
    pub fn new(dir: PathBuf, interval: Duration, state: Arc<State>) -> FilesSource {
        FilesSource {
            dir,
            interval,
            state,
            store: Arc::new(Store::default()),
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
            let store = self.store.clone();
            let Some(mut f) = folder.take() else { return };
            // File reads, YAML parsing and translation block: keep them off the request workers.
            let joined = tokio::task::spawn_blocking(move || {
                let r = f.scan(&dir);
                if let Ok(touched) = &r {
                    f.sync(&store, touched);
                }
                (f, r.map(|touched| !touched.is_empty()))
            })
            .await;
            let Ok((mut f, result)) = joined else {
                tracing::error!("the manifest scan task failed");
                return;
            };
            for e in f.errors.drain(..) {
                tracing::error!(error = %e, "manifest ignored; the last good version keeps serving");
            }
            let publish = match result {
                Ok(changed) => {
                    last_error = None;
                    changed || first
                }
                Err(e) => {
                    let text = e.to_string();
                    if last_error.as_deref() != Some(&text) {
                        tracing::error!(error = %text, "cannot read the manifests folder");
                    }
                    last_error = Some(text);
                    first
                }
            };
            if publish {
                self.state.publish_store(&self.store).await;
                let gauge = &self.state.metrics().watched_objects;
                let counts = self.store.counts();
                for kind in Kind::ALL {
                    let n = counts.get(&kind).copied().unwrap_or(0);
                    gauge.with_label_values(&[kind.as_str()]).set(n as i64);
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
