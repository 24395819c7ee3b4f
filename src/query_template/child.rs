//! What a rendered object must satisfy before the reconciler applies it: the AdmissionPolicy's
//! kinds and namespaces, a valid name, and nothing that only the API server or dbward may set.

use serde_json::{Map, Value};

/// What a child must satisfy (the AdmissionPolicy's limits and the CR's namespace).
#[derive(Clone, Copy, Debug)]
pub struct ChildRules<'a> {
    /// The DatabaseQueryResource's namespace.
    pub namespace: &'a str,
    /// The AdmissionPolicy's `limits.allowedQueryResourceKinds` (`ConfigMap`, `apps/Deployment`).
    pub allowed_kinds: &'a [String],
    /// The AdmissionPolicy's `limits.crossNamespaceAllowed`.
    pub cross_namespace_allowed: bool,
}

/// A rendered object that passed the rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub api_version: String,
    pub kind: String,
    /// As the template wrote it; `None` when absent (the reconciler decides by discovery whether
    /// the kind is namespaced, and then uses the CR's namespace).
    pub namespace: Option<String>,
    pub name: String,
    /// The whole object, unchanged.
    pub object: Value,
}

/// Why a rendered object was refused; `name` when it was known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildError {
    pub name: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ChildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ChildError {}

/// Fields of `metadata` that the API server sets; a template that writes them is a mistake.
const SERVER_SET: [&str; 8] = [
    "uid",
    "resourceVersion",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "creationTimestamp",
    "generation",
    "selfLink",
];

/// "group/Kind" as the allow-list spells it ("ConfigMap", "apps/Deployment").
pub fn qualified_kind(api_version: &str, kind: &str) -> String {
    match api_version.rsplit_once('/') {
        Some((group, _)) if !group.is_empty() => format!("{group}/{kind}"),
        _ => kind.to_string(),
    }
}

/// `object` as a child under `rules`, or every reason it is refused.
pub fn check_child(object: Value, rules: &ChildRules) -> Result<Child, ChildError> {
    let Some(fields) = object.as_object() else {
        return Err(ChildError {
            name: None,
            message: "must be a mapping (an object with apiVersion, kind and metadata)".into(),
        });
    };
    let mut problems = Vec::new();
    let text = |field: &str, problems: &mut Vec<String>| match fields.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(other) => {
            problems.push(format!("{field} must be a non-empty string, found {other}"));
            None
        }
        None => {
            problems.push(format!("{field} is required"));
            None
        }
    };
    let api_version = text("apiVersion", &mut problems);
    let kind = text("kind", &mut problems);
    if let (Some(api_version), Some(kind)) = (&api_version, &kind) {
        let qualified = qualified_kind(api_version, kind);
        if !rules.allowed_kinds.contains(&qualified) {
            problems.push(format!(
                "kind {qualified} is not allowed; the AdmissionPolicy's \
                 limits.allowedQueryResourceKinds allows {}",
                list(rules.allowed_kinds)
            ));
        }
    }
    let (name, namespace) = match fields.get("metadata") {
        Some(Value::Object(metadata)) => check_metadata(metadata, rules, &mut problems),
        Some(other) => {
            problems.push(format!("metadata must be a mapping, found {other}"));
            (None, None)
        }
        None => {
            problems.push("metadata is required (with at least a name)".into());
            (None, None)
        }
    };
    match (api_version, kind, name.clone(), problems.is_empty()) {
        (Some(api_version), Some(kind), Some(name), true) => Ok(Child {
            api_version,
            kind,
            namespace,
            name,
            object,
        }),
        _ => Err(ChildError {
            name,
            message: problems.join("; "),
        }),
    }
}

/// The name and namespace of `metadata`, and what is wrong with it.
fn check_metadata(
    metadata: &Map<String, Value>,
    rules: &ChildRules,
    problems: &mut Vec<String>,
) -> (Option<String>, Option<String>) {
    let name = match metadata.get("name") {
        Some(Value::String(name)) => match dns_subdomain(name) {
            Ok(()) => Some(name.clone()),
            Err(why) => {
                problems.push(format!("metadata.name {name:?} {why}"));
                None
            }
        },
        Some(other) => {
            problems.push(format!("metadata.name must be a string, found {other}"));
            None
        }
        None => {
            problems.push("metadata.name is required".into());
            None
        }
    };
    let namespace = match metadata.get("namespace") {
        None => None,
        Some(Value::String(namespace)) => {
            check_namespace(namespace, rules, problems);
            Some(namespace.clone())
        }
        Some(other) => {
            problems.push(format!(
                "metadata.namespace must be a string, found {other}"
            ));
            None
        }
    };
    check_reserved_fields(metadata, problems);
    for field in ["labels", "annotations"] {
        check_string_map(metadata, field, problems);
    }
    (name, namespace)
}

fn check_namespace(namespace: &str, rules: &ChildRules, problems: &mut Vec<String>) {
    if namespace.len() > 63 || namespace.contains('.') || dns_subdomain(namespace).is_err() {
        problems.push(format!(
            "metadata.namespace {namespace:?} is not a namespace name (lowercase letters, digits \
             and '-', at most 63); omit it for the DatabaseQueryResource's own namespace"
        ));
    } else if namespace != rules.namespace && !rules.cross_namespace_allowed {
        problems.push(format!(
            "metadata.namespace {namespace:?} is not allowed: only {:?} (or no namespace) is, \
             because the AdmissionPolicy's limits.crossNamespaceAllowed is false",
            rules.namespace
        ));
    }
}

fn check_reserved_fields(metadata: &Map<String, Value>, problems: &mut Vec<String>) {
    if metadata.contains_key("ownerReferences") {
        problems.push(
            "metadata.ownerReferences must not be set: dbward sets the DatabaseQueryResource as \
             owner when spec.owned is true"
                .into(),
        );
    }
    if metadata.contains_key("finalizers") {
        problems.push(
            "metadata.finalizers must not be set: a child's deletion is up to dbward's prune and \
             the DatabaseQueryResource's own finalizer"
                .into(),
        );
    }
    if metadata.contains_key("generateName") {
        problems.push(
            "metadata.generateName must not be set: a child needs a fixed metadata.name, so a \
             row finds its object again on the next poll"
                .into(),
        );
    }
    for field in SERVER_SET {
        if metadata.contains_key(field) {
            problems.push(format!(
                "metadata.{field} must not be set: the API server sets it; a template writes \
                 only name, namespace, labels and annotations of metadata"
            ));
        }
    }
}

/// `labels` and `annotations`: string keys and values, none of them dbward's own.
fn check_string_map(metadata: &Map<String, Value>, field: &str, problems: &mut Vec<String>) {
    let Some(value) = metadata.get(field) else {
        return;
    };
    let Some(entries) = value.as_object() else {
        problems.push(format!(
            "metadata.{field} must be a mapping of strings, found {value}"
        ));
        return;
    };
    for (key, value) in entries {
        if dbward_key(key) {
            problems.push(format!(
                "metadata.{field}[{key}] must not be set: keys under dbward.dev/ are dbward's \
                 own (it labels every child itself); use a prefix of your own"
            ));
        }
        if !value.is_string() {
            problems.push(format!(
                "metadata.{field}[{key}] must be a string, found {value}; quote it in the \
                 template (\"{{{{ … }}}}\")"
            ));
        }
    }
}

/// `dbward.dev/x`, `postgresql.dbward.dev/x`.
fn dbward_key(key: &str) -> bool {
    key.split_once('/').is_some_and(|(prefix, _)| {
        let prefix = prefix.to_ascii_lowercase();
        prefix == "dbward.dev" || prefix.ends_with(".dbward.dev")
    })
}

/// A DNS-1123 subdomain, as Kubernetes requires of most names.
fn dns_subdomain(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be 1 to 253 characters long");
    }
    if crate::admission::is_dns_subdomain(name) {
        Ok(())
    } else {
        Err(
            "is not a valid name: lowercase letters, digits, '-' and '.', starting and ending \
             with a letter or digit (a DNS-1123 subdomain)",
        )
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "no kinds".into()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
#[path = "child_tests.rs"]
mod tests;
