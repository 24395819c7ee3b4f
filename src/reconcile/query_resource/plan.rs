//! Pure: one poll's rows → what to apply, what is unchanged, what failed and what to prune.
//!
//! Rows are rendered ([`render_rows`]), the API server's discovery places each child
//! ([`Scope`]), and [`plan`] compares the desired children with the children observed by the
//! CR's UID label: a child whose `dbward.dev/query-hash` annotation matches is left alone (zero
//! writes), an object of the same name that is not this CR's is a per-row conflict, and prune
//! is held back whenever it could delete what a failed row or an empty result only hid.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::database_query_resource::{FailedRow, MAX_FAILED_ROWS};
use crate::query_template::object::{
    Child, ChildRules, ObjectTemplate, check_child, qualified_kind,
};
use crate::sql::query::Row;

use super::{HASH_ANNOTATION, UID_LABEL};
use crate::api::database_query_resource::MANAGED_BY_LABEL;

/// Where a row failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The template did not render for this row.
    Render,
    /// The rendered object broke a rule (kind, namespace, forbidden metadata, scope).
    Rules,
    /// An object of that name exists and is not this CR's.
    Conflict,
    /// The API server refused the object.
    Apply,
    /// The status update query failed.
    StatusUpdate,
}

impl Phase {
    /// As the status spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Render => "Render",
            Phase::Rules => "Rules",
            Phase::Conflict => "Conflict",
            Phase::Apply => "Apply",
            Phase::StatusUpdate => "StatusUpdate",
        }
    }
}

/// A child's identity: qualified kind (`ConfigMap`, `apps/Deployment`), namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChildKey {
    /// `group/Kind`, or `Kind` in the core group.
    pub kind: String,
    /// `None` for a cluster-scoped kind.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ChildKey {
    /// `namespace/name`, or `name`.
    pub fn display(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// A failed row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFailure {
    /// Position in the result.
    pub row: usize,
    /// The child it would be, when its name was known.
    pub key: Option<ChildKey>,
    /// Where it failed.
    pub phase: Phase,
    /// Why.
    pub message: String,
}

/// A row rendered and checked, before discovery placed it.
pub type Rendered = Result<Child, RowFailure>;

/// Renders every row; a failure is that row's alone.
pub fn render_rows(
    rows: &[Row],
    template: &ObjectTemplate,
    metadata: &Value,
    rules: &ChildRules<'_>,
) -> Vec<Rendered> {
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let object = template
                .render(row, metadata)
                .map_err(|message| RowFailure {
                    row: i,
                    key: None,
                    phase: Phase::Render,
                    message,
                })?;
            check_child(object, rules).map_err(|e| RowFailure {
                row: i,
                key: e.name.map(|name| ChildKey {
                    kind: String::new(),
                    namespace: None,
                    name,
                }),
                phase: Phase::Rules,
                message: e.message,
            })
        })
        .collect()
}

/// How the API server serves a kind (discovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Namespaced.
    Namespaced,
    /// Cluster-scoped.
    Cluster,
    /// Not served; the message says so.
    Unknown(String),
}

/// The CR the children belong to.
#[derive(Debug, Clone)]
pub struct Owner {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID (the children's label).
    pub uid: String,
    /// Set an owner reference where one can be (same namespace).
    pub owned: bool,
}

/// A child as it will be applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Position of its row.
    pub row: usize,
    /// Identity.
    pub key: ChildKey,
    /// `apiVersion` as rendered.
    pub api_version: String,
    /// The object, with dbward's labels, owner and hash annotation.
    pub object: Value,
    /// The hash the annotation carries.
    pub hash: String,
    /// Applied although unchanged (a full pass repairing drift).
    pub refresh: bool,
}

/// The rendered rows placed by discovery, with dbward's labels, owner reference and hash;
/// two rows rendering the same child make the later one fail.
pub fn place(
    rendered: Vec<Rendered>,
    scope: impl Fn(&str, &str) -> Scope,
    owner: &Owner,
) -> (Vec<Desired>, Vec<RowFailure>) {
    let mut desired: Vec<Desired> = Vec::new();
    let mut failures = Vec::new();
    let mut seen: BTreeMap<ChildKey, usize> = BTreeMap::new();
    for (row, result) in rendered.into_iter().enumerate() {
        let child = match result {
            Ok(child) => child,
            Err(failure) => {
                failures.push(failure);
                continue;
            }
        };
        let kind = qualified_kind(&child.api_version, &child.kind);
        let fail = |namespace: Option<String>, message: String| RowFailure {
            row,
            key: Some(ChildKey {
                kind: kind.clone(),
                namespace,
                name: child.name.clone(),
            }),
            phase: Phase::Rules,
            message,
        };
        let namespace = match scope(&child.api_version, &child.kind) {
            Scope::Unknown(message) => {
                failures.push(fail(child.namespace.clone(), message));
                continue;
            }
            Scope::Namespaced => Some(
                child
                    .namespace
                    .clone()
                    .unwrap_or_else(|| owner.namespace.clone()),
            ),
            Scope::Cluster if child.namespace.is_some() => {
                failures.push(fail(
                    None,
                    format!("metadata.namespace: {kind} is cluster-scoped; remove the namespace"),
                ));
                continue;
            }
            Scope::Cluster => None,
        };
        let key = ChildKey {
            kind: kind.clone(),
            namespace,
            name: child.name.clone(),
        };
        if let Some(first) = seen.get(&key) {
            failures.push(RowFailure {
                row,
                key: Some(key.clone()),
                phase: Phase::Rules,
                message: format!(
                    "renders {kind} {} as row {first} does; each row must render its own object",
                    key.display()
                ),
            });
            continue;
        }
        seen.insert(key.clone(), row);
        let (object, hash) = finish(child.object, &key, owner);
        desired.push(Desired {
            row,
            key,
            api_version: child.api_version,
            object,
            hash,
            refresh: false,
        });
    }
    (desired, failures)
}

/// The object with dbward's labels, its namespace, the owner reference (same namespace only:
/// Kubernetes has no cross-namespace or namespaced-to-cluster owners) and the hash of all that.
fn finish(mut object: Value, key: &ChildKey, owner: &Owner) -> (Value, String) {
    let metadata = &mut object["metadata"];
    if let Some(ns) = &key.namespace {
        metadata["namespace"] = json!(ns);
    }
    metadata["labels"][UID_LABEL] = json!(owner.uid);
    if owner.name.len() <= 63 {
        metadata["labels"][MANAGED_BY_LABEL] = json!(owner.name);
    }
    if owner.owned
        && !owner.uid.is_empty()
        && key.namespace.as_deref() == Some(owner.namespace.as_str())
    {
        metadata["ownerReferences"] = json!([{
            "apiVersion": "dbward.dev/v1alpha1",
            "kind": "DatabaseQueryResource",
            "name": owner.name,
            "uid": owner.uid,
            "controller": true,
            "blockOwnerDeletion": false,
        }]);
    }
    let hash = hash_of(&object);
    object["metadata"]["annotations"][HASH_ANNOTATION] = json!(hash);
    (object, hash)
}

/// SHA-256 of the object's JSON (keys sorted), hex.
pub fn hash_of(object: &Value) -> String {
    let bytes = serde_json::to_vec(object).unwrap_or_default();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What is on the API server.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// This CR's children (its UID label), with the hash they carry.
    pub ours: BTreeMap<ChildKey, Option<String>>,
    /// Objects that exist under a name a row wants but are not this CR's.
    pub foreign: BTreeSet<ChildKey>,
}

/// Prune settings.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// `spec.prune`.
    pub prune: bool,
    /// `spec.allowEmptyPrune`.
    pub allow_empty: bool,
    /// The AdmissionPolicy's `limits.maxQueryPrunes`.
    pub max: usize,
}

/// What one poll does.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Children to apply: new or changed.
    pub apply: Vec<Desired>,
    /// Children already as rendered, applied again on a full pass (drift repair).
    pub refresh: Vec<Desired>,
    /// Children already as rendered (those refreshed included).
    pub unchanged: usize,
    /// Failed rows, in row order.
    pub failures: Vec<RowFailure>,
    /// Children to delete.
    pub prune: Vec<ChildKey>,
    /// Why pruning was held back (all of it, or the part past the limit).
    pub prune_held: Option<String>,
}

/// Compares the desired children with what is observed.
pub fn plan(
    rows: usize,
    desired: Vec<Desired>,
    mut failures: Vec<RowFailure>,
    observed: &Observed,
    full_pass: bool,
    options: PruneOptions,
) -> Plan {
    let mut out = Plan::default();
    let mut wanted: BTreeSet<ChildKey> = BTreeSet::new();
    for d in desired {
        wanted.insert(d.key.clone());
        match observed.ours.get(&d.key) {
            Some(Some(hash)) if *hash == d.hash => {
                out.unchanged += 1;
                if full_pass {
                    out.refresh.push(Desired { refresh: true, ..d });
                }
            }
            Some(_) => out.apply.push(d),
            None if observed.foreign.contains(&d.key) => failures.push(RowFailure {
                row: d.row,
                message: format!(
                    "{} {} exists and is not this DatabaseQueryResource's (no {UID_LABEL} label with its UID); it is left alone: rename the row's object or delete the other one",
                    d.key.kind,
                    d.key.display()
                ),
                key: Some(d.key),
                phase: Phase::Conflict,
            }),
            None => out.apply.push(d),
        }
    }
    failures.sort_by_key(|f| f.row);
    // A failed row keeps its object: what it would have rendered is not known to be gone.
    // (By name: a row refused by the rules may not have been placed in a namespace.)
    let kept: BTreeSet<&str> = failures
        .iter()
        .filter_map(|f| f.key.as_ref())
        .map(|k| k.name.as_str())
        .collect();
    let candidates: Vec<ChildKey> = observed
        .ours
        .keys()
        .filter(|k| !wanted.contains(k) && !kept.contains(k.name.as_str()))
        .cloned()
        .collect();
    let blind = failures.iter().find(|f| f.key.is_none());
    out.prune_held = if !options.prune || candidates.is_empty() {
        None
    } else if let Some(f) = blind {
        Some(format!(
            "{} child(ren) not pruned: row {} failed before its object's name was known, so any of them may still be wanted",
            candidates.len(),
            f.row
        ))
    } else if rows == 0 && !options.allow_empty {
        Some(format!(
            "{} child(ren) not pruned: the query returned no rows (set spec.allowEmptyPrune to prune on an empty result)",
            candidates.len()
        ))
    } else if candidates.len() > options.max {
        Some(format!(
            "{} of {} child(ren) to prune wait for the next poll (the AdmissionPolicy's limits.maxQueryPrunes is {})",
            candidates.len() - options.max,
            candidates.len(),
            options.max
        ))
    } else {
        None
    };
    if options.prune && blind.is_none() && (rows > 0 || options.allow_empty) {
        out.prune = candidates.into_iter().take(options.max).collect();
    }
    out.failures = failures;
    out
}

/// The failed rows as the status lists them: the first [`MAX_FAILED_ROWS`].
pub fn failed_rows(failures: &[RowFailure]) -> Vec<FailedRow> {
    failures
        .iter()
        .take(MAX_FAILED_ROWS)
        .map(|f| FailedRow {
            row: u32::try_from(f.row).unwrap_or(u32::MAX),
            key: f.key.as_ref().map(ChildKey::display),
            phase: f.phase.as_str().to_owned(),
            message: short(&f.message),
        })
        .collect()
}

/// A message cut to 300 characters (at a character boundary).
fn short(message: &str) -> String {
    if message.chars().count() <= 300 {
        return message.to_owned();
    }
    let mut cut: String = message.chars().take(299).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
