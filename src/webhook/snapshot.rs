//! Where the engine's snapshot of referenced objects comes from.
//!
//! Offline (`--no-kube`): the `--policy` and `--context` manifests, read once. In a cluster:
//! reflectors (see `live`), which swap a new snapshot in whenever what they watch changes.
//! Either way handlers read the current snapshot with one atomic load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;

use super::engine::Snapshot;

/// The snapshot the handlers use right now.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("{path}: document {index} is not a Kubernetes object (no kind)")]
    NotAnObject { path: PathBuf, index: usize },
}

/// Every object in the (multi-document YAML or JSON) manifests, in order.
pub fn read_manifests(paths: &[PathBuf]) -> Result<Vec<serde_json::Value>, SnapshotError> {
    let mut objects = Vec::new();
    for path in paths {
        read_manifest(path, &mut objects)?;
    }
    Ok(objects)
}

fn read_manifest(path: &Path, objects: &mut Vec<serde_json::Value>) -> Result<(), SnapshotError> {
    let text = std::fs::read_to_string(path).map_err(|source| SnapshotError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value =
            serde_json::Value::deserialize(document).map_err(|source| SnapshotError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        match value {
            serde_json::Value::Null => {} // an empty document, e.g. after a trailing `---`
            serde_json::Value::Object(ref map)
                if map.get("kind").is_some_and(|k| k.is_string()) =>
            {
                // A `kind: List` holds its objects in `items`.
                if map.get("kind").and_then(|k| k.as_str()) == Some("List") {
                    if let Some(items) = map.get("items").and_then(|i| i.as_array()) {
                        objects.extend(items.iter().cloned());
                    }
                } else {
                    objects.push(value);
                }
            }
            _ => {
                return Err(SnapshotError::NotAnObject {
                    path: path.to_path_buf(),
                    index,
                });
            }
        }
    }
    Ok(())
}

/// The `--no-kube` snapshot: the policy and context manifests, where a missing reference is
/// a warning rather than an error (the snapshot is not the cluster's).
pub fn offline(
    policy: Option<&Path>,
    context: &[PathBuf],
    operator_namespace: &str,
) -> Result<Snapshot, SnapshotError> {
    let mut paths: Vec<PathBuf> = policy.map(Path::to_path_buf).into_iter().collect();
    paths.extend(context.iter().cloned());
    let objects = read_manifests(&paths)?;
    Ok(Snapshot::from_objects(objects, operator_namespace, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_multi_document_yaml_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("context.yaml");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\n\
             apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n",
        )
        .unwrap();
        let objects = read_manifests(std::slice::from_ref(&path)).unwrap();
        let names: Vec<_> = objects
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);

        std::fs::write(&path, "- just a list\n").unwrap();
        assert!(matches!(
            read_manifests(&[path]),
            Err(SnapshotError::NotAnObject { index: 0, .. })
        ));
    }
}
