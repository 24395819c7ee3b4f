//! Rules of DatabaseQueryResource.

use serde_json::Value;

use super::checks::{Checker, Defaults, Meta, parse_duration};
use super::field::FieldError;
use super::policy::Rule;
use super::{sqlcheck, templates};
use crate::api::DatabaseQueryResourceSpec;

pub(crate) fn default(defaults: &mut Defaults) {
    defaults.fill("/spec/prune", Value::Bool(true));
    defaults.fill("/spec/owned", Value::Bool(true));
}

pub(crate) fn validate(
    checker: &mut Checker<'_>,
    meta: &Meta,
    object: &Value,
    old: Option<&Value>,
) {
    let Some((spec, _)) = checker.spec::<DatabaseQueryResourceSpec>(object, old) else {
        return;
    };
    let limits = checker.policy().limits.clone();

    match parse_duration(&spec.poll_interval) {
        None => checker.report(
            Rule::PollInterval,
            FieldError::invalid(
                "spec.pollInterval",
                spec.poll_interval.as_str(),
                "must be a duration such as \"30s\", \"5m\" or \"1h30m\"",
            ),
        ),
        Some(seconds) => {
            if parse_duration(&limits.min_poll_interval).is_some_and(|min| seconds < min) {
                checker.report(
                    Rule::PollInterval,
                    FieldError::invalid(
                        "spec.pollInterval",
                        spec.poll_interval.as_str(),
                        format!(
                            "must be at least {} (the AdmissionPolicy's limits.minPollInterval)",
                            limits.min_poll_interval
                        ),
                    ),
                );
            }
        }
    }

    let engine = spec.database.engine;
    if let Err(problem) = sqlcheck::check_read_only(&spec.query, engine) {
        checker.report(
            Rule::Query,
            FieldError::invalid("spec.query", spec.query.as_str(), problem),
        );
    }

    if let Err(problem) = templates::compile(&templates::resource_environment(), &spec.template) {
        checker.report(
            Rule::Template,
            FieldError::invalid(
                "spec.template",
                short(&spec.template),
                format!("does not compile: {problem}"),
            ),
        );
    }
    if let Some(status_query) = &spec.status_update_query_template {
        let field = "spec.statusUpdateQueryTemplate";
        if let Err(problem) =
            templates::compile(&templates::status_query_environment(engine), status_query)
        {
            checker.report(
                Rule::Template,
                FieldError::invalid(
                    field,
                    short(status_query),
                    format!("does not compile: {problem}"),
                ),
            );
        } else if quoted_interpolation(status_query) {
            checker.report(
                Rule::Template,
                FieldError::invalid(field, short(status_query), "every {{ … }} is already emitted as a quoted SQL literal; remove the quotes around it"),
            );
        }
    }

    // What the template renders, where that is written literally.
    let (api_version, kind, namespace) = static_header(&spec.template);
    if let Some(kind) = kind {
        let group = api_version
            .as_deref()
            .and_then(|v| v.rsplit_once('/'))
            .map(|(g, _)| g)
            .unwrap_or("");
        let qualified = if group.is_empty() {
            kind.clone()
        } else {
            format!("{group}/{kind}")
        };
        if !limits.allowed_query_resource_kinds.contains(&qualified) {
            checker.report(
                Rule::AllowedKinds,
                FieldError::not_supported(
                    "spec.template",
                    format!("kind: {qualified}"),
                    &limits.allowed_query_resource_kinds,
                ),
            );
        }
    }
    if !limits.cross_namespace_allowed {
        if let Some(namespace) = namespace.filter(|ns| *ns != meta.namespace) {
            checker.report(
                Rule::CrossNamespace,
                FieldError::forbidden(
                    "spec.template",
                    format!("renders objects in namespace {namespace:?}; only {:?} is allowed (the AdmissionPolicy's limits.crossNamespaceAllowed is false)", meta.namespace),
                ),
            );
        }
        let secret_namespace = spec.database.connection_secret_ref.namespace.as_deref();
        if let Some(ns) = secret_namespace.filter(|ns| *ns != meta.namespace) {
            checker.report(
                Rule::CrossNamespace,
                FieldError::forbidden(
                    "spec.database.connectionSecretRef.namespace",
                    format!("reads a Secret in namespace {ns:?}; only {:?} is allowed (the AdmissionPolicy's limits.crossNamespaceAllowed is false)", meta.namespace),
                ),
            );
        }
    }
}

/// The top-level `apiVersion`, `kind` and `metadata.namespace` of a template, where they are
/// written without interpolation.
fn static_header(template: &str) -> (Option<String>, Option<String>, Option<String>) {
    let (mut api_version, mut kind, mut namespace) = (None, None, None);
    let mut in_metadata = false;
    for line in template.lines() {
        let literal = |value: &str| {
            let value = value.trim().trim_matches(['"', '\'']);
            (!value.is_empty() && !value.contains("{{") && !value.contains("{%"))
                .then(|| value.to_string())
        };
        if let Some(v) = line.strip_prefix("apiVersion:") {
            api_version = literal(v);
        } else if let Some(v) = line.strip_prefix("kind:") {
            kind = literal(v);
        } else if line.starts_with("metadata:") {
            in_metadata = true;
            continue;
        } else if in_metadata && line.starts_with(char::is_whitespace) {
            if let Some(v) = line.trim_start().strip_prefix("namespace:")
                && line.len() - line.trim_start().len() <= 2
            {
                namespace = literal(v);
            }
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            in_metadata = false;
        }
    }
    (api_version, kind, namespace)
}

/// `'{{ x }}'`: a quote right around an interpolation.
fn quoted_interpolation(template: &str) -> bool {
    template.contains("'{{")
        || template.contains("}}'")
        || template.contains("\"{{")
        || template.contains("}}\"")
}

/// Long values are cut in messages.
fn short(s: &str) -> String {
    let first_line = s.lines().next().unwrap_or_default();
    if first_line.len() > 60 || s.lines().count() > 1 {
        let cut: String = first_line.chars().take(60).collect();
        format!("{cut}…")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::static_header;

    #[test]
    fn header_is_read_only_where_literal() {
        let (api, kind, ns) = static_header(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ row.name }}\n  namespace: other\n  labels:\n    namespace: x\n",
        );
        assert_eq!(
            (api.as_deref(), kind.as_deref(), ns.as_deref()),
            (Some("apps/v1"), Some("Deployment"), Some("other"))
        );
        let (_, kind, ns) = static_header(
            "kind: {{ row.kind }}\nmetadata:\n  namespace: {{ metadata.namespace }}\n",
        );
        assert_eq!((kind, ns), (None, None));
    }
}
