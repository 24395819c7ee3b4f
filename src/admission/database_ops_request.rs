//! Rules of DatabaseOpsRequest.

use serde_json::Value;

use super::checks::{Checker, Defaults, Meta, parse_duration};
use super::field::FieldError;
use super::policy::Rule;
use crate::api::database_ops_request::OpsType;
use crate::api::{DatabaseOpsRequestSpec, Engine};

const SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];
const CLIENT_AUTH_MODES: [&str; 3] = ["md5", "scram", "cert"];

pub(crate) fn default(defaults: &mut Defaults) {
    defaults.fill("/spec/apply", Value::from("IfReady"));
}

pub(crate) fn validate(
    checker: &mut Checker<'_>,
    meta: &Meta,
    object: &Value,
    old: Option<&Value>,
) {
    if let Some(old) = old
        && object.get("spec") != old.get("spec")
    {
        checker.report(
            Rule::Immutable,
            FieldError::forbidden(
                "spec",
                "a DatabaseOpsRequest cannot be changed once created; create a new one",
            ),
        );
    }
    let Some((spec, _)) = checker.spec::<DatabaseOpsRequestSpec>(object, old) else {
        return;
    };

    if let Some(timeout) = &spec.timeout
        && parse_duration(timeout).is_none_or(|s| s <= 0.0)
    {
        checker.report(
            Rule::OpsRequest,
            FieldError::invalid(
                "spec.timeout",
                timeout.as_str(),
                "must be a positive duration such as \"5m\"",
            ),
        );
    }
    match spec.op_type {
        OpsType::RotateCredentials => {
            if spec.user_ref.is_none() {
                checker.report(
                    Rule::OpsRequest,
                    FieldError::required(
                        "spec.userRef",
                        "RotateCredentials names the ServiceUser to rotate",
                    ),
                );
            }
            for (present, field) in [
                (spec.tls.is_some(), "spec.tls"),
                (spec.service_ref.is_some(), "spec.serviceRef"),
            ] {
                if present {
                    checker.report(
                        Rule::OpsRequest,
                        FieldError::forbidden(field, "only for type ReconfigureTLS"),
                    );
                }
            }
        }
        OpsType::ReconfigureTLS => {
            admin_action(checker, meta);
            if spec.user_ref.is_some() {
                checker.report(
                    Rule::OpsRequest,
                    FieldError::forbidden("spec.userRef", "only for type RotateCredentials"),
                );
            }
            match &spec.service_ref {
                None => checker.report(
                    Rule::OpsRequest,
                    FieldError::required(
                        "spec.serviceRef",
                        "ReconfigureTLS names the DatabaseService whose pooler changes",
                    ),
                ),
                Some(service_ref) => {
                    let snapshot = checker.snapshot;
                    match snapshot.services.get(&service_ref.name) {
                        None => checker.missing(
                            Rule::ServiceExists,
                            FieldError::not_found("spec.serviceRef.name", service_ref.name.as_str(), "no DatabaseService has this name"),
                        ),
                        Some(service) if service.spec.engine != Engine::Postgres => checker.report(
                            Rule::EngineSupport,
                            FieldError::invalid(
                                "spec.serviceRef.name",
                                service_ref.name.as_str(),
                                "ReconfigureTLS changes a PgBouncer pooler, which only postgres services have",
                            ),
                        ),
                        Some(_) => {}
                    }
                }
            }
            match &spec.tls {
                None => checker.report(
                    Rule::OpsRequest,
                    FieldError::required(
                        "spec.tls",
                        "what to change: issuerRef, rotateCertificates or remove",
                    ),
                ),
                Some(tls) => {
                    let remove = tls.remove.unwrap_or(false);
                    let rotate = tls.rotate_certificates.unwrap_or(false);
                    if remove
                        && (rotate
                            || tls.issuer_ref.is_some()
                            || tls.ssl_mode.is_some()
                            || tls.client_auth_mode.is_some())
                    {
                        checker.report(
                            Rule::OpsRequest,
                            FieldError::forbidden(
                                "spec.tls.remove",
                                "removing TLS cannot be combined with other TLS changes",
                            ),
                        );
                    }
                    if let Some(issuer) = &tls.issuer_ref
                        && issuer.api_group != "cert-manager.io"
                    {
                        checker.report(
                            Rule::OpsRequest,
                            FieldError::not_supported(
                                "spec.tls.issuerRef.apiGroup",
                                issuer.api_group.as_str(),
                                &["cert-manager.io"],
                            ),
                        );
                    }
                    if let Some(mode) = &tls.ssl_mode
                        && !SSL_MODES.contains(&mode.as_str())
                    {
                        checker.report(
                            Rule::OpsRequest,
                            FieldError::not_supported(
                                "spec.tls.sslMode",
                                mode.as_str(),
                                &SSL_MODES,
                            ),
                        );
                    }
                    if let Some(mode) = &tls.client_auth_mode {
                        if !CLIENT_AUTH_MODES.contains(&mode.as_str()) {
                            checker.report(
                                Rule::OpsRequest,
                                FieldError::not_supported(
                                    "spec.tls.clientAuthMode",
                                    mode.as_str(),
                                    &CLIENT_AUTH_MODES,
                                ),
                            );
                        }
                        if mode == "cert"
                            && matches!(
                                tls.ssl_mode.as_deref(),
                                None | Some("disable" | "allow" | "prefer")
                            )
                        {
                            checker.report(
                                Rule::OpsRequest,
                                FieldError::invalid("spec.tls.clientAuthMode", "cert", "client certificates need sslMode require, verify-ca or verify-full"),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// `admin-actions`: a service's pooler serves every tenant of the service, so reconfiguring its
/// TLS is for dbward's namespace and the namespaces the policy names.
fn admin_action(checker: &mut Checker<'_>, meta: &Meta) {
    let snapshot = checker.snapshot;
    let operator_namespace = snapshot.operator_namespace.as_str();
    let allowed = &checker.policy().limits.pooler_tls_namespaces;
    if meta.namespace == operator_namespace || allowed.contains(&meta.namespace) {
        return;
    }
    let message = format!(
        "ReconfigureTLS changes the pooler every tenant of the DatabaseService shares; it is accepted only from dbward's namespace {operator_namespace:?}{}",
        if allowed.is_empty() {
            " (an admin can allow more namespaces in the AdmissionPolicy's spec.limits.poolerTlsNamespaces)".to_owned()
        } else {
            format!(" or one of spec.limits.poolerTlsNamespaces {allowed:?}")
        }
    );
    checker.report(
        Rule::AdminActions,
        FieldError::forbidden("metadata.namespace", &message),
    );
}
