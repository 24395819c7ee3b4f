//! Reading manifests from files, directories and standard input: multi-document YAML or JSON,
//! `kind: List`, with errors that name the file, document and line — and never a panic on
//! garbage.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// Largest document accepted: the API server's request limit.
pub const MAX_DOCUMENT_BYTES: usize = 3 * 1024 * 1024;

/// Where a document came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub file: String,
    /// 1-based document number in the file.
    pub document: usize,
    /// 1-based line of the document's first line.
    pub line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: document {} (line {})",
            self.file, self.document, self.line
        )
    }
}

/// One object read from the inputs.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub source: Source,
    pub object: Value,
}

impl Manifest {
    pub fn kind(&self) -> &str {
        self.object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Whether it is one of dbward's kinds (API group `dbward.dev`).
    pub fn is_dbward(&self) -> bool {
        self.api_version()
            .strip_prefix(crate::api::GROUP)
            .is_some_and(|rest| rest.starts_with('/'))
    }

    pub fn api_version(&self) -> &str {
        self.object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The namespace as `kubectl apply` would use it: `default` when a namespaced object has none.
    pub fn namespace(&self) -> &str {
        let namespaced = crate::api::kind_info(self.kind()).is_none_or(|k| k.namespaced);
        match self
            .object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
        {
            _ if !namespaced => "",
            Some(ns) if !ns.is_empty() => ns,
            _ => "default",
        }
    }
}

/// Why an input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not UTF-8 text (is it a binary file?)")]
    NotText { path: String },
    #[error(
        "{at}: {size} bytes is larger than the {MAX_DOCUMENT_BYTES} bytes the API server accepts"
    )]
    TooLarge { at: Source, size: usize },
    #[error("{at}: not valid YAML or JSON: {message}")]
    Syntax { at: Source, message: String },
    #[error("{at}: {message}")]
    Shape { at: Source, message: String },
}

/// Read every document under `paths` (`-` is standard input). Returns what could be read and an
/// error for everything that could not.
pub fn read_paths(paths: &[PathBuf]) -> (Vec<Manifest>, Vec<ReadError>) {
    let mut manifests = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            match std::io::stdin().read_to_end(&mut bytes) {
                Ok(_) => read_bytes("<stdin>", &bytes, &mut manifests, &mut errors),
                Err(source) => errors.push(ReadError::Io {
                    path: "<stdin>".into(),
                    source,
                }),
            }
            continue;
        }
        match files_under(path) {
            Ok(files) => {
                for file in files {
                    let name = file.display().to_string();
                    match std::fs::read(&file) {
                        Ok(bytes) => read_bytes(&name, &bytes, &mut manifests, &mut errors),
                        Err(source) => errors.push(ReadError::Io { path: name, source }),
                    }
                }
            }
            Err(source) => errors.push(ReadError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }
    (manifests, errors)
}

/// A file itself, or a directory's `*.yaml`, `*.yml` and `*.json` files, recursively, sorted.
fn files_under(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !std::fs::metadata(path)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            files.extend(files_under(&entry)?);
        } else if entry
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            files.push(entry);
        }
    }
    Ok(files)
}

/// Parse one file's bytes.
pub fn read_bytes(
    file: &str,
    bytes: &[u8],
    manifests: &mut Vec<Manifest>,
    errors: &mut Vec<ReadError>,
) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        errors.push(ReadError::NotText {
            path: file.to_string(),
        });
        return;
    };
    for (i, (line, chunk)) in split_documents(text).into_iter().enumerate() {
        let source = Source {
            file: file.to_string(),
            document: i + 1,
            line,
        };
        if chunk.len() > MAX_DOCUMENT_BYTES {
            errors.push(ReadError::TooLarge {
                at: source,
                size: chunk.len(),
            });
            continue;
        }
        match parse_document(chunk) {
            Ok(None) => {}
            Ok(Some(value)) => push_objects(source, value, manifests, errors),
            Err(e) => {
                let (message, at) = match e.location() {
                    Some(loc) => (e.to_string(), line + loc.line() - 1),
                    None => (e.to_string(), line),
                };
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or(&message)
                    .to_string();
                errors.push(ReadError::Syntax {
                    at: Source { line: at, ..source },
                    message,
                });
            }
        }
    }
}

fn parse_document(chunk: &str) -> Result<Option<Value>, serde_yaml::Error> {
    let value = Value::deserialize(serde_yaml::Deserializer::from_str(chunk))?;
    Ok((!value.is_null()).then_some(value))
}

/// An object, or a `List`'s items, each with a `kind`.
fn push_objects(
    source: Source,
    value: Value,
    manifests: &mut Vec<Manifest>,
    errors: &mut Vec<ReadError>,
) {
    let Value::Object(map) = &value else {
        errors.push(ReadError::Shape {
            at: source,
            message: "a manifest must be a mapping with apiVersion, kind and metadata".into(),
        });
        return;
    };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind.is_empty() {
        errors.push(ReadError::Shape {
            at: source,
            message: "no kind: every manifest needs apiVersion and kind".into(),
        });
        return;
    }
    if kind == "List" || kind.ends_with("List") && map.get("items").is_some_and(Value::is_array) {
        for item in map
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            push_objects(source.clone(), item.clone(), manifests, errors);
        }
        return;
    }
    if map
        .get("apiVersion")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errors.push(ReadError::Shape {
            at: source,
            message: format!("{kind} has no apiVersion"),
        });
        return;
    }
    manifests.push(Manifest {
        source,
        object: value,
    });
}

/// Split a YAML stream at its document markers, keeping each document's first line number.
/// Splitting before parsing lets an oversized document be refused without parsing it. YAML
/// forbids `---` and `...` at the start of a line inside any scalar, so a marker at column 0
/// always separates documents; what follows `---` on its line (`--- {kind: …}`, `--- |`) is the
/// next document's first line.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        let starts = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        if starts || bare == "..." || bare.starts_with("... ") {
            documents.push((start_line, &text[start..offset]));
            if starts && bare.len() > 3 {
                // The rest of the marker's line, after its separating blanks, begins the new
                // document.
                let rest = &line[3..];
                start = offset + 3 + (rest.len() - rest.trim_start_matches([' ', '\t']).len());
                start_line = i + 1;
            } else {
                start = offset + line.len();
                start_line = i + 2;
            }
        }
        offset += line.len();
    }
    documents.push((start_line, &text[start..]));
    documents.retain(|(_, d)| !d.trim().is_empty());
    documents
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Vec<Manifest>, Vec<ReadError>) {
        let (mut m, mut e) = (Vec::new(), Vec::new());
        read_bytes("t.yaml", text.as_bytes(), &mut m, &mut e);
        (m, e)
    }

    #[test]
    fn documents_lists_and_errors() {
        let (m, e) = read(
            "a: [\n---\nkind: X\napiVersion: v1\n---\n# only a comment\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: A}\n- {apiVersion: v1, kind: B}\n---\nfoo: 1\n",
        );
        assert_eq!(
            m.iter().map(Manifest::kind).collect::<Vec<_>>(),
            ["X", "A", "B"]
        );
        let messages: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].starts_with("t.yaml: document 1 (line"),
            "{messages:?}"
        );
        assert!(messages[1].contains("no kind"), "{messages:?}");
    }

    #[test]
    fn a_document_may_start_on_its_marker_line() {
        let (m, e) = read(
            "--- {apiVersion: dbward.dev/v1alpha1, kind: Database, metadata: {name: a}, spec: {project: \"b!\"}}\n--- # a comment\napiVersion: v1\nkind: B\n---\tkind: C\n  # nothing\n... \n",
        );
        let kinds: Vec<&str> = m.iter().map(Manifest::kind).collect();
        assert_eq!(kinds, ["Database", "B"]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].to_string().contains("C has no apiVersion"), "{e:?}");
        assert_eq!(m[0].source.line, 1);
        assert_eq!(m[1].source.line, 2);
    }

    #[test]
    fn garbage_and_huge_documents_are_errors() {
        let (mut m, mut e) = (Vec::new(), Vec::new());
        read_bytes("bin", &[0xff, 0xfe, 0x00, 0x81], &mut m, &mut e);
        assert!(matches!(e[0], ReadError::NotText { .. }));
        let huge = format!(
            "apiVersion: v1\nkind: ConfigMap\ndata:\n  x: \"{}\"\n",
            "a".repeat(10 * 1024 * 1024)
        );
        let (_, e) = read(&huge);
        assert!(matches!(e[0], ReadError::TooLarge { .. }));
    }
}
