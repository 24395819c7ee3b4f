//! What the per-kind rules share: the checker that applies the policy's modes, the parsed
//! metadata, and the checks of the fields every service-scoped kind has.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::field::{FieldError, child};
use super::policy::Rule;
use super::snapshot::Snapshot;
use super::{Request, Verdict};
use crate::api::admission_policy::RuleMode;
use crate::api::common::{MAX_REF_LENGTH, SecretTarget, ServiceBinding};
use crate::api::{AdmissionPolicySpec, DatabaseService};

/// Collects rule failures, as errors or warnings depending on each rule's mode.
pub(crate) struct Checker<'a> {
    pub snapshot: &'a Snapshot,
    errors: Vec<FieldError>,
    warnings: Vec<String>,
}

impl<'a> Checker<'a> {
    pub fn new(snapshot: &'a Snapshot) -> Self {
        Checker {
            snapshot,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn policy(&self) -> &'a AdmissionPolicySpec {
        &self.snapshot.policy
    }

    /// A failure of `rule`: an error, a warning or nothing, as the policy says.
    pub fn report(&mut self, rule: Rule, error: FieldError) {
        match rule.mode(&self.snapshot.policy) {
            RuleMode::Enforce => self.errors.push(error),
            RuleMode::Warn => self.warnings.push(error.to_string()),
            RuleMode::Off => {}
        }
    }

    /// A failure no policy can turn off: the object cannot be understood.
    pub fn structural(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    /// A reference the snapshot lacks: an error when the snapshot is the cluster's, a warning
    /// offline, where the cluster may well have it.
    pub fn missing(&mut self, rule: Rule, error: FieldError) {
        if self.snapshot.complete {
            self.report(rule, error);
        } else if rule.mode(&self.snapshot.policy) != RuleMode::Off {
            self.warnings.push(format!(
                "{error} (not among the inputs; the cluster may have it)"
            ));
        }
    }

    pub fn into_verdict(self, patch: json_patch::Patch) -> Verdict {
        Verdict {
            allowed: self.errors.is_empty(),
            errors: self.errors,
            warnings: self.warnings,
            patch,
        }
    }

    /// `new` must equal `old` when there is an old object.
    pub fn immutable<T: PartialEq + serde::Serialize>(
        &mut self,
        field: &str,
        new: &T,
        old: Option<&T>,
    ) {
        if let Some(old) = old
            && new != old
        {
            let value = serde_json::to_value(new).unwrap_or(Value::Null);
            self.report(
                Rule::Immutable,
                FieldError::invalid(field, value, "field is immutable"),
            );
        }
    }

    /// Parse the object's `spec` (and the old one's); a spec that does not parse is reported
    /// with the path of the offending field and nothing else is checked.
    pub fn spec<T: DeserializeOwned>(
        &mut self,
        object: &Value,
        old: Option<&Value>,
    ) -> Option<(T, Option<T>)> {
        let new = match parse_spec::<T>(object) {
            Ok(spec) => spec,
            Err(error) => {
                self.structural(error);
                return None;
            }
        };
        // An old object that no longer parses (written before a rule existed) has nothing to
        // compare against.
        let old = old.and_then(|o| parse_spec::<T>(o).ok());
        Some((new, old))
    }
}

/// The metadata the rules use.
pub(crate) struct Meta {
    pub name: String,
    pub namespace: String,
}

impl Meta {
    pub fn of(request: &Request<'_>, object: &Value) -> Meta {
        let from_object = |p: &str| {
            object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let name = if request.name.is_empty() {
            from_object("/metadata/name")
        } else {
            request.name.to_string()
        };
        let namespace = match request.namespace {
            Some(ns) if !ns.is_empty() => ns.to_string(),
            _ => from_object("/metadata/namespace"),
        };
        Meta { name, namespace }
    }
}

fn parse_spec<T: DeserializeOwned>(object: &Value) -> Result<T, FieldError> {
    let Some(spec) = object.get("spec") else {
        return Err(FieldError::required("spec", ""));
    };
    // Most specs parse; only a failure pays for tracking the path to the offending field.
    if let Ok(parsed) = T::deserialize(spec) {
        return Ok(parsed);
    }
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_string()
        } else {
            format!("spec.{path}")
        };
        serde_error(field, &e.into_inner().to_string(), spec)
    })
}

/// Turn serde's wording into the API server's.
fn serde_error(field: String, message: &str, spec: &Value) -> FieldError {
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((value, expected)) = rest.split_once("`, expected ")
    {
        let supported: Vec<&str> = expected
            .trim_start_matches("one of ")
            .split(", ")
            .map(|s| s.trim_matches('`'))
            .collect();
        return FieldError::not_supported(field, value, &supported);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or_default();
        return FieldError::required(child(&field, name), "");
    }
    let value = field
        .strip_prefix("spec.")
        .and_then(|p| spec.pointer(&format!("/{}", p.replace('.', "/"))))
        .cloned()
        .unwrap_or(Value::Null);
    FieldError::invalid(
        field,
        value,
        message.split(" at line ").next().unwrap_or(message),
    )
}

// ---- names -------------------------------------------------------------------------------

/// `^[a-zA-Z0-9_-]+$`
pub fn is_project(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `^[a-z][-a-z0-9]+$`
pub fn is_service_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && s.len() >= 2
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `^[a-zA-Z_][a-zA-Z0-9_-]*$`: database and role names on shared services.
pub fn is_sql_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A PostgreSQL setting name as a role may set it: `statement_timeout`, `auto_explain.log_min_duration`.
pub fn is_setting_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

/// A namespace name (RFC 1123 label).
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// A database or role name: the pattern, then the length.
pub(crate) fn check_sql_name(checker: &mut Checker<'_>, field: &str, value: &str, max: usize) {
    if !is_sql_name(value) {
        checker.report(
            Rule::Names,
            FieldError::invalid(
                field,
                value,
                "must start with a letter or '_' and contain only letters, digits, '_' and '-' (regex used for validation is '^[a-zA-Z_][a-zA-Z0-9_-]*$')",
            ),
        );
    } else if value.len() > max {
        checker.report(Rule::Names, FieldError::too_long(field, max));
    }
}

// ---- the fields of service-scoped kinds --------------------------------------------------

/// `project`, `serviceName` and the cross-object rules on the service; returns the service
/// when the snapshot has it.
pub(crate) fn check_binding<'s>(
    checker: &mut Checker<'s>,
    meta: &Meta,
    binding: &ServiceBinding,
    old: Option<&ServiceBinding>,
) -> Option<&'s DatabaseService> {
    checker.immutable("spec.project", &binding.project, old.map(|o| &o.project));
    checker.immutable(
        "spec.serviceName",
        &binding.service_name,
        old.map(|o| &o.service_name),
    );
    check_project(checker, "spec.project", &binding.project);
    let max = MAX_REF_LENGTH as usize;
    if !is_service_name(&binding.service_name) {
        checker.report(
            Rule::Names,
            FieldError::invalid(
                "spec.serviceName",
                binding.service_name.as_str(),
                "must start with a lowercase letter and contain only lowercase letters, digits and '-' (regex used for validation is '^[a-z][-a-z0-9]+$')",
            ),
        );
    } else if binding.service_name.len() > max {
        checker.report(Rule::Names, FieldError::too_long("spec.serviceName", max));
    }
    if let Some(r) = &binding.auth_secret_ref {
        // Kept in the schema so that Aiven manifests get this answer, not an unknown field.
        checker.report(
            Rule::AuthSecretRef,
            FieldError::forbidden(
                "spec.authSecretRef",
                "not supported: dbward administers a service only through its connector Secret",
            ),
        );
        if r.name.is_empty() {
            checker.structural(FieldError::required("spec.authSecretRef.name", ""));
        }
        if r.key.is_empty() {
            checker.structural(FieldError::required("spec.authSecretRef.key", ""));
        }
    }

    let snapshot = checker.snapshot;
    let Some(service) = snapshot.services.get(&binding.service_name) else {
        checker.missing(
            Rule::ServiceExists,
            FieldError::not_found(
                "spec.serviceName",
                binding.service_name.as_str(),
                "no DatabaseService has this name",
            ),
        );
        return None;
    };
    if service.spec.project != binding.project {
        checker.report(
            Rule::ProjectMatch,
            FieldError::invalid(
                "spec.project",
                binding.project.as_str(),
                format!(
                    "must equal the project of DatabaseService {:?}, which is {:?}",
                    binding.service_name, service.spec.project
                ),
            ),
        );
    }
    check_namespace_allowed(checker, meta, service);
    Some(service)
}

/// `^[a-zA-Z0-9_-]+$`, at most 63.
pub(crate) fn check_project(checker: &mut Checker<'_>, field: &str, project: &str) {
    if !is_project(project) {
        checker.report(
            Rule::Names,
            FieldError::invalid(
                field,
                project,
                "must contain only letters, digits, '_' and '-' (regex used for validation is '^[a-zA-Z0-9_-]+$')",
            ),
        );
    } else if project.len() > MAX_REF_LENGTH as usize {
        checker.report(
            Rule::Names,
            FieldError::too_long(field, MAX_REF_LENGTH as usize),
        );
    }
}

/// The object's namespace must be allowed by the service's `allowedNamespaces`.
fn check_namespace_allowed(checker: &mut Checker<'_>, meta: &Meta, service: &DatabaseService) {
    let snapshot = checker.snapshot;
    let service_name = service.metadata.name.as_deref().unwrap_or_default();
    let allowed = service.spec.allowed_namespaces.as_ref();
    let names = allowed.map(|a| a.names.as_slice()).unwrap_or_default();
    let selector = allowed.and_then(|a| a.selector.as_ref());
    if names.iter().any(|n| n == "*" || *n == meta.namespace) {
        return;
    }
    if names.is_empty() && selector.is_none() && meta.namespace == snapshot.operator_namespace {
        return;
    }
    if let Some(selector) = selector {
        match snapshot.namespaces.get(&meta.namespace) {
            Some(labels) if selector_matches(selector, labels) => return,
            Some(_) => {}
            None => {
                checker.missing(
                    Rule::NamespaceAllowed,
                    FieldError::forbidden(
                        "metadata.namespace",
                        format!("cannot tell whether namespace {:?} matches the allowedNamespaces.selector of DatabaseService {service_name:?}: its labels are unknown", meta.namespace),
                    ),
                );
                return;
            }
        }
    }
    let accepted = if names.is_empty() && selector.is_none() {
        format!(
            "only dbward's namespace {:?} may use it (spec.allowedNamespaces is empty)",
            snapshot.operator_namespace
        )
    } else {
        format!(
            "its spec.allowedNamespaces admits {}",
            describe_allowed(names, selector.is_some())
        )
    };
    checker.report(
        Rule::NamespaceAllowed,
        FieldError::forbidden(
            "metadata.namespace",
            format!(
                "namespace {:?} may not use DatabaseService {service_name:?}: {accepted}",
                meta.namespace
            ),
        ),
    );
}

fn describe_allowed(names: &[String], selector: bool) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !names.is_empty() {
        parts.push(format!(
            "the namespaces {}",
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if selector {
        parts.push("namespaces matching its selector".into());
    }
    parts.join(" and ")
}

/// Whether `labels` match a Kubernetes label selector.
pub fn selector_matches(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// Immutables of the connection Secret target.
pub(crate) fn check_secret_target(
    checker: &mut Checker<'_>,
    target: &SecretTarget,
    old: Option<&SecretTarget>,
) {
    let name = target
        .conn_info_secret_target
        .as_ref()
        .and_then(|t| t.name.as_ref());
    let old_name = old
        .and_then(|o| o.conn_info_secret_target.as_ref())
        .and_then(|t| t.name.as_ref());
    if let (Some(name), Some(old_name)) = (name, old_name) {
        checker.immutable("spec.connInfoSecretTarget.name", name, Some(old_name));
    }
    if let Some(name) = name
        && !is_dns_subdomain(name)
    {
        checker.report(
                Rule::Names,
                FieldError::invalid(
                    "spec.connInfoSecretTarget.name",
                    name.clone(),
                    "a Secret name must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                ),
            );
    }
    let disabled = target.conn_info_secret_target_disabled.unwrap_or(false);
    if let Some(old) = old {
        checker.immutable(
            "spec.connInfoSecretTargetDisabled",
            &disabled,
            Some(&old.conn_info_secret_target_disabled.unwrap_or(false)),
        );
    }
}

/// A Kubernetes object name (RFC 1123 subdomain).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

// ---- defaults ----------------------------------------------------------------------------

/// An object with its defaults filled in, remembering where they went: the patch is made from
/// the filled places instead of by diffing two trees.
pub(crate) struct Defaults {
    pub object: Value,
    /// JSON pointers of the members added (`false`) or set where they were null (`true`); a fill
    /// inside a member already recorded here is part of that member's value.
    filled: Vec<(String, bool)>,
}

impl Defaults {
    pub fn new(object: Value) -> Defaults {
        Defaults {
            object,
            filled: Vec::new(),
        }
    }

    /// Set `pointer` to `value` when it is absent or null; never overwrite what the user set.
    /// Missing objects on the way are created; a scalar where an object belongs is left for the
    /// rules to report.
    pub fn fill(&mut self, pointer: &str, value: Value) {
        let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
        let mut current = &mut self.object;
        let mut walked = 0; // bytes of `pointer` that lead to `current`
        for (i, part) in parts.iter().enumerate() {
            let Some(map) = current.as_object_mut() else {
                return;
            };
            walked += 1 + part.len();
            let last = i + 1 == parts.len();
            match map.get(*part) {
                Some(present) if !present.is_null() => {
                    if last {
                        return;
                    }
                    current = map.get_mut(*part).expect("present above");
                }
                absent_or_null => {
                    let replaced = absent_or_null.is_some();
                    // What goes here: the value, wrapped in the objects still missing below.
                    let built = parts[i + 1..].iter().rev().fold(value, |inner, key| {
                        Value::Object(serde_json::Map::from_iter([(key.to_string(), inner)]))
                    });
                    map.insert((*part).to_string(), built);
                    self.record(&pointer[..walked], replaced);
                    return;
                }
            }
        }
    }

    fn record(&mut self, pointer: &str, replaced: bool) {
        let inside_filled = self.filled.iter().any(|(outer, _)| {
            pointer
                .strip_prefix(outer.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        });
        if !inside_filled {
            self.filled.push((pointer.to_string(), replaced));
        }
    }

    /// The filled places as RFC 6902 operations, in the order they were filled.
    pub fn patch(&self) -> json_patch::Patch {
        use json_patch::jsonptr::PointerBuf;
        use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
        let operations = self
            .filled
            .iter()
            .filter_map(|(pointer, replaced)| {
                let value = self.object.pointer(pointer)?.clone();
                let path = PointerBuf::parse(pointer.as_str()).ok()?;
                Some(if *replaced {
                    PatchOperation::Replace(ReplaceOperation { path, value })
                } else {
                    PatchOperation::Add(AddOperation { path, value })
                })
            })
            .collect();
        json_patch::Patch(operations)
    }
}

/// Default the connection Secret's name (`metadata.name`) and key prefix (`KIND_`), unless the
/// Secret is disabled.
pub(crate) fn default_secret_target(defaults: &mut Defaults, meta: &Meta, prefix: &str) {
    if defaults
        .object
        .pointer("/spec/connInfoSecretTargetDisabled")
        == Some(&Value::Bool(true))
        || meta.name.is_empty()
    {
        return;
    }
    defaults.fill(
        "/spec/connInfoSecretTarget/name",
        Value::from(meta.name.as_str()),
    );
    defaults.fill("/spec/connInfoSecretTarget/prefix", Value::from(prefix));
}

// ---- durations ---------------------------------------------------------------------------

/// Seconds in a Go duration (`300ms`, `1.5h`, `2h45m`): [`crate::duration::seconds`].
pub use crate::duration::seconds as parse_duration;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fill_only_fills_what_is_missing_and_patches_exactly_that() {
        let original = json!({"spec": {"a": 1, "b": null, "s": "scalar"}});
        let mut d = Defaults::new(original.clone());
        d.fill("/spec/a", json!(2));
        d.fill("/spec/b", json!(3));
        d.fill("/spec/c/d", json!(4));
        d.fill("/spec/c/e", json!(5));
        d.fill("/spec/s/x", json!(6));
        d.fill("/status/x", json!(7));
        assert_eq!(
            d.object,
            json!({"spec": {"a": 1, "b": 3, "c": {"d": 4, "e": 5}, "s": "scalar"}, "status": {"x": 7}})
        );
        assert_eq!(
            serde_json::to_value(d.patch()).unwrap(),
            json!([
                {"op": "replace", "path": "/spec/b", "value": 3},
                {"op": "add", "path": "/spec/c", "value": {"d": 4, "e": 5}},
                {"op": "add", "path": "/status", "value": {"x": 7}},
            ])
        );
        let mut patched = original;
        json_patch::patch(&mut patched, &d.patch()).unwrap();
        assert_eq!(patched, d.object);
        assert!(Defaults::new(d.object.clone()).patch().0.is_empty());
    }

    #[test]
    fn names() {
        assert!(
            is_service_name("my-pg")
                && !is_service_name("a")
                && !is_service_name("My-pg")
                && !is_service_name("1pg")
        );
        assert!(is_project("aiven-project_1") && !is_project("a b") && !is_project(""));
        assert!(
            is_sql_name("_a-b1")
                && !is_sql_name("1a")
                && !is_sql_name("a\"b")
                && !is_sql_name("a;b")
        );
        assert!(
            is_dns_subdomain("my-pool.x") && !is_dns_subdomain("My") && !is_dns_subdomain("-a")
        );
    }
}
