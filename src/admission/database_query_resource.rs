//! Rules of DatabaseQueryResource.

use serde_json::Value;

use super::checks::{Checker, Defaults, Meta, parse_duration};
use super::field::FieldError;
use super::policy::Rule;
use super::sqlcheck;
use crate::api::DatabaseQueryResourceSpec;
use crate::query_template::{ObjectTemplate, StatusQuery, qualified_kind};

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
    check_poll_interval(checker, &spec.poll_interval, &limits.min_poll_interval);

    let engine = spec.database.engine;
    if let Err(problem) = sqlcheck::check_read_only(&spec.query, engine) {
        checker.report(
            Rule::Query,
            FieldError::invalid("spec.query", spec.query.as_str(), problem),
        );
    }
    if let Some(status_query) = &spec.status_update_query_template
        && let Err(problem) = StatusQuery::compile(status_query, engine)
    {
        checker.report(
            Rule::Template,
            FieldError::invalid(
                "spec.statusUpdateQueryTemplate",
                short(status_query),
                format!("does not compile: {problem}"),
            ),
        );
    }

    let template = match ObjectTemplate::compile(&spec.template) {
        Ok(template) => Some(template),
        Err(problem) => {
            checker.report(
                Rule::Template,
                FieldError::invalid(
                    "spec.template",
                    short(&spec.template),
                    format!("does not compile: {problem}"),
                ),
            );
            None
        }
    };
    if let Some(template) = &template {
        check_rendered_kind(checker, template, &limits.allowed_query_resource_kinds);
    }
    if !limits.cross_namespace_allowed {
        let namespace = template.as_ref().and_then(ObjectTemplate::static_namespace);
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

fn check_poll_interval(checker: &mut Checker<'_>, interval: &str, minimum: &str) {
    match parse_duration(interval) {
        None => checker.report(
            Rule::PollInterval,
            FieldError::invalid(
                "spec.pollInterval",
                interval,
                "must be a duration such as \"30s\", \"5m\" or \"1h30m\"",
            ),
        ),
        Some(seconds) => {
            if parse_duration(minimum).is_some_and(|min| seconds < min) {
                checker.report(
                    Rule::PollInterval,
                    FieldError::invalid(
                        "spec.pollInterval",
                        interval,
                        format!(
                            "must be at least {minimum} (the AdmissionPolicy's limits.minPollInterval)"
                        ),
                    ),
                );
            }
        }
    }
}

/// The kind the template renders, where `apiVersion` and `kind` are written literally; the
/// reconciler checks every rendered object again.
fn check_rendered_kind(checker: &mut Checker<'_>, template: &ObjectTemplate, allowed: &[String]) {
    let (Some(api_version), Some(kind)) = (template.static_api_version(), template.static_kind())
    else {
        return;
    };
    let qualified = qualified_kind(api_version, kind);
    if !allowed.contains(&qualified) {
        checker.report(
            Rule::AllowedKinds,
            FieldError::not_supported("spec.template", format!("kind: {qualified}"), allowed),
        );
    }
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
