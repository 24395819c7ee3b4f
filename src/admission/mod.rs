//! The rule engine: a pure function of (request, snapshot) → verdict. The webhook, `dbward
//! validate`, `dbward reconcile --local` and the tests all call [`admit`].
//!
//! Each kind has a module with its defaults (which only fill what the user left out) and its
//! rules; this module routes by kind and turns rule failures into errors or warnings according to
//! the AdmissionPolicy.

mod checks;
pub(crate) use checks::is_dns_subdomain;
mod field;
pub mod policy;
pub mod quantity;
pub mod schema;
mod snapshot;
pub mod sqlcheck;
pub mod tenancy;

mod admission_policy;
mod connection_pool;
mod database;
mod database_claim;
mod database_ops_request;
mod database_query_resource;
mod database_service;
mod postgres_cluster;
mod service_user;

use serde_json::Value;

pub use field::{ErrorType, FieldError};
pub use policy::Rule;
pub use snapshot::{ConnectorSecret, DEFAULT_OPERATOR_NAMESPACE, Snapshot};
pub use tenancy::{reserved_for_service, reserved_name};

use checks::{Checker, Defaults, Meta};

/// What the engine reads of an object: these top-level fields, and of `metadata` only
/// [`METADATA_FIELDS`]. A caller that parses objects itself (the webhook) may skip the rest —
/// `status`, `managedFields`, kubectl's last-applied copy — and gets the same verdict; a test
/// holds the engine to that.
pub const OBJECT_FIELDS: [&str; 2] = ["metadata", "spec"];
/// The fields of `metadata` the engine reads (the request's name and namespace come first).
pub const METADATA_FIELDS: [&str; 2] = ["name", "namespace"];

/// The operation of an admission request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    /// As the AdmissionReview spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }

    /// From the AdmissionReview's spelling.
    pub fn parse(s: &str) -> Option<Operation> {
        match s {
            "CREATE" => Some(Operation::Create),
            "UPDATE" => Some(Operation::Update),
            "DELETE" => Some(Operation::Delete),
            "CONNECT" => Some(Operation::Connect),
            _ => None,
        }
    }
}

/// One admission request, as the engine sees it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub operation: Operation,
    /// The object's kind, e.g. `ConnectionPool`; kinds that are not dbward's are allowed.
    pub kind: &'a str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    /// The new object; `None` on DELETE.
    pub object: Option<&'a Value>,
    /// The stored object; on UPDATE and DELETE.
    pub old_object: Option<&'a Value>,
    /// `status` for a status-subresource update, which spec rules never deny.
    pub subresource: Option<&'a str>,
}

/// The engine's answer.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub allowed: bool,
    /// Every error, at once.
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
    /// The defaults as RFC 6902 operations; empty when there is nothing to fill.
    pub patch: json_patch::Patch,
}

impl Verdict {
    fn allow() -> Verdict {
        Verdict {
            allowed: true,
            ..Verdict::default()
        }
    }

    /// The message the API server would give: `ConnectionPool.dbward.dev "x" is invalid: …`.
    pub fn message(&self, kind: &str, name: &str) -> String {
        let errors: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        let body = match errors.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        format!("{kind}.{} \"{name}\" is invalid: {body}", crate::api::GROUP)
    }
}

/// What a caller needs from the engine: the mutating webhook only the defaults, the validating
/// webhook only the verdict; `dbward validate` and the tests both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Both,
    Defaults,
    Rules,
}

/// Decide one admission request: the defaults as a patch, and the verdict of every rule.
pub fn admit(request: &Request<'_>, snapshot: &Snapshot) -> Verdict {
    judge(request, snapshot, Purpose::Both)
}

/// What `/mutate` needs: the defaults as a patch, with no rule run (the validating webhook
/// judges the defaulted object). Always allowed.
pub fn admit_for_mutation(request: &Request<'_>, snapshot: &Snapshot) -> Verdict {
    judge(request, snapshot, Purpose::Defaults)
}

/// What `/validate` needs: the verdict on the defaulted object, without computing the patch.
pub fn admit_for_validation(request: &Request<'_>, snapshot: &Snapshot) -> Verdict {
    judge(request, snapshot, Purpose::Rules)
}

fn judge(request: &Request<'_>, snapshot: &Snapshot, purpose: Purpose) -> Verdict {
    if crate::api::kind_info(request.kind).is_none() {
        return Verdict::allow();
    }
    match request.operation {
        Operation::Connect => Verdict::allow(),
        Operation::Delete if purpose == Purpose::Defaults => Verdict::allow(),
        Operation::Delete => admit_delete(request, snapshot),
        Operation::Create | Operation::Update => {
            if request.subresource.is_some() {
                return Verdict::allow();
            }
            let Some(object) = request.object else {
                let mut verdict = Verdict::default();
                verdict.errors.push(FieldError::required(
                    "object",
                    "the request carries no object",
                ));
                return verdict;
            };
            if request.operation == Operation::Update
                && request
                    .old_object
                    .is_some_and(|old| bookkeeping_only(object, old))
            {
                return Verdict::allow();
            }
            admit_write(request, object, snapshot, purpose)
        }
    }
}

/// DELETE: only `terminationProtection` can refuse it.
fn admit_delete(request: &Request<'_>, snapshot: &Snapshot) -> Verdict {
    let mut checker = Checker::new(snapshot);
    if let Some(old) = request.old_object
        && old.pointer("/spec/terminationProtection") == Some(&Value::Bool(true))
    {
        checker.report(
            Rule::TerminationProtection,
            FieldError::forbidden(
                "spec.terminationProtection",
                format!(
                    "{} {:?} has terminationProtection set; set it to false before deleting",
                    request.kind, request.name
                ),
            ),
        );
    }
    checker.into_verdict(json_patch::Patch(Vec::new()))
}

/// An update that changes neither the spec nor the name (status, finalizers, labels,
/// managedFields, resourceVersion, …) is never denied for spec rules.
fn bookkeeping_only(object: &Value, old: &Value) -> bool {
    object.get("spec") == old.get("spec")
}

fn admit_write(
    request: &Request<'_>,
    object: &Value,
    snapshot: &Snapshot,
    purpose: Purpose,
) -> Verdict {
    let meta = Meta::of(request, object);
    let mut defaults = Defaults::new(object.clone());
    match request.kind {
        "DatabaseService" => database_service::default(&mut defaults, &meta, snapshot),
        "Database" => database::default(&mut defaults, &meta),
        "ServiceUser" => service_user::default(&mut defaults, &meta),
        "ConnectionPool" => connection_pool::default(&mut defaults, &meta),
        "DatabaseClaim" => database_claim::default(&mut defaults, &meta),
        "DatabaseQueryResource" => database_query_resource::default(&mut defaults),
        "DatabaseOpsRequest" => database_ops_request::default(&mut defaults),
        _ => {}
    }
    let patch = match purpose {
        Purpose::Rules => json_patch::Patch(Vec::new()),
        Purpose::Both | Purpose::Defaults => defaults.patch(),
    };
    if purpose == Purpose::Defaults {
        return Verdict {
            allowed: true,
            patch,
            ..Verdict::default()
        };
    }
    let defaulted = &defaults.object;

    let mut checker = Checker::new(snapshot);
    let old = request.old_object;
    match request.kind {
        "DatabaseService" => database_service::validate(&mut checker, &meta, defaulted, old),
        "Database" => database::validate(&mut checker, &meta, defaulted, old),
        "ServiceUser" => service_user::validate(&mut checker, &meta, defaulted, old),
        "ConnectionPool" => connection_pool::validate(&mut checker, &meta, defaulted, old),
        "DatabaseClaim" => database_claim::validate(&mut checker, &meta, defaulted, old),
        "PostgresCluster" => postgres_cluster::validate(&mut checker, &meta, defaulted, old),
        "DatabaseQueryResource" => {
            database_query_resource::validate(&mut checker, &meta, defaulted, old)
        }
        "DatabaseOpsRequest" => database_ops_request::validate(&mut checker, &meta, defaulted, old),
        "AdmissionPolicy" => admission_policy::validate(&mut checker, &meta, defaulted, old),
        _ => {}
    }
    checker.into_verdict(patch)
}
