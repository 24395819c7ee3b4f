//! Rules of DatabaseService.

use serde_json::Value;

use std::collections::BTreeSet;

use super::checks::{Checker, Defaults, Meta, check_project, check_sql_name, is_dns_subdomain};
use super::field::{FieldError, index};
use super::policy::Rule;
use super::snapshot::Snapshot;
use crate::api::database_service::{
    CONNECTOR_LABEL, CONNECTOR_LABEL_VALUE, CONNECTOR_REQUIRED_KEYS,
};
use crate::api::{DatabaseServiceSpec, Engine};

pub(crate) fn default(defaults: &mut Defaults, _meta: &Meta, snapshot: &Snapshot) {
    let namespace = if snapshot.operator_namespace.is_empty() {
        super::DEFAULT_OPERATOR_NAMESPACE
    } else {
        snapshot.operator_namespace.as_str()
    };
    if defaults
        .object
        .pointer("/spec/connectorSecretRef")
        .is_some_and(Value::is_object)
    {
        defaults.fill("/spec/connectorSecretRef/namespace", Value::from(namespace));
    }
}

pub(crate) fn validate(
    checker: &mut Checker<'_>,
    meta: &Meta,
    object: &Value,
    old: Option<&Value>,
) {
    let Some((spec, old_spec)) = checker.spec::<DatabaseServiceSpec>(object, old) else {
        return;
    };
    let old_spec = old_spec.as_ref();
    checker.immutable("spec.engine", &spec.engine, old_spec.map(|o| &o.engine));
    checker.immutable("spec.project", &spec.project, old_spec.map(|o| &o.project));
    check_project(checker, "spec.project", &spec.project);
    if meta.name.len() > 63 || !meta.name.is_empty() && !super::checks::is_service_name(&meta.name)
    {
        checker.report(
            Rule::Names,
            FieldError::invalid(
                "metadata.name",
                meta.name.as_str(),
                "a DatabaseService name is what serviceName refers to: it must match '^[a-z][-a-z0-9]+$' and have at most 63 characters",
            ),
        );
    }

    if let Some(allowed) = &spec.allowed_namespaces {
        for (i, name) in allowed.names.iter().enumerate() {
            if name != "*" && !is_dns_subdomain(name) {
                checker.report(
                    Rule::Names,
                    FieldError::invalid(
                        format!("spec.allowedNamespaces.names[{i}]"),
                        name.as_str(),
                        "must be a namespace name or \"*\"",
                    ),
                );
            }
        }
    }
    let mut shared = BTreeSet::new();
    for (i, database) in spec.shared_databases.iter().enumerate() {
        let field = format!("{}.name", index("spec.sharedDatabases", i));
        check_sql_name(
            checker,
            &field,
            &database.name,
            spec.engine.max_database_name(),
        );
        if super::tenancy::reserved_name(spec.engine, &database.name) {
            checker.report(
                Rule::ReservedNames,
                FieldError::invalid(
                    &field,
                    database.name.as_str(),
                    format!(
                        "is reserved on {} services: the server's own databases and dbward's catalog cannot be shared with tenants",
                        if spec.engine == Engine::Postgres { "PostgreSQL" } else { "MySQL" }
                    ),
                ),
            );
        }
        if !shared.insert(database.name.as_str()) {
            checker.report(
                Rule::Names,
                FieldError::duplicate(&field, database.name.as_str()),
            );
        }
    }

    if spec.pooler.is_some() && spec.engine == Engine::Mysql {
        checker.report(
            Rule::EngineSupport,
            FieldError::forbidden(
                "spec.pooler",
                "PgBouncer pools exist only for engine \"postgres\"",
            ),
        );
    }

    let secret_ref = &spec.connector_secret_ref;
    let namespace = secret_ref
        .namespace
        .clone()
        .unwrap_or_else(|| checker.snapshot.operator_namespace.clone());
    if namespace != checker.snapshot.operator_namespace {
        checker.report(
            Rule::ConnectorSecret,
            FieldError::invalid(
                "spec.connectorSecretRef.namespace",
                namespace.as_str(),
                format!("connector Secrets must be in dbward's namespace {:?}, the only one whose Secrets it reads", checker.snapshot.operator_namespace),
            ),
        );
        return;
    }
    let snapshot = checker.snapshot;
    let Some(secret) = snapshot
        .connector_secrets
        .get(&(namespace.clone(), secret_ref.name.clone()))
    else {
        checker.missing(
            Rule::ConnectorSecret,
            FieldError::not_found(
                "spec.connectorSecretRef.name",
                secret_ref.name.as_str(),
                &format!("no Secret in namespace {namespace:?} labelled {CONNECTOR_LABEL}={CONNECTOR_LABEL_VALUE} has this name"),
            ),
        );
        return;
    };
    for key in CONNECTOR_REQUIRED_KEYS {
        if !secret.keys.contains(key) {
            checker.report(
                Rule::ConnectorSecret,
                FieldError::invalid(
                    "spec.connectorSecretRef.name",
                    secret_ref.name.as_str(),
                    format!("the connector Secret has no key {key:?} (it needs endpoint, port, user and password)"),
                ),
            );
        }
    }
    let declared = secret.engine_type.as_deref().unwrap_or("");
    match Engine::from_connector_type(declared) {
        Some(engine) if engine == spec.engine => {}
        Some(engine) => checker.report(
            Rule::ConnectorSecret,
            FieldError::invalid(
                "spec.engine",
                spec.engine.as_str(),
                format!(
                    "the connector Secret {:?} says type {:?}{}, which is engine {:?}",
                    secret_ref.name,
                    declared,
                    if declared.is_empty() { " (blank means mysql)" } else { "" },
                    engine.as_str()
                ),
            ),
        ),
        None => checker.report(
            Rule::ConnectorSecret,
            FieldError::invalid(
                "spec.connectorSecretRef.name",
                secret_ref.name.as_str(),
                format!("the connector Secret's type is {declared:?}; supported types: \"mysql\" (or blank), \"postgres\""),
            ),
        ),
    }
}
