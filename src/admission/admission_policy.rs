//! Rules of AdmissionPolicy itself: an admin's typo must not silently loosen the cluster.

use serde_json::Value;

use super::checks::{
    Checker, Meta, is_dns_label, is_service_name, is_setting_name, is_sql_name, parse_duration,
};
use super::field::{FieldError, index, key};
use super::policy::{Rule, rule_names};
use super::quantity;
use super::tenancy::{reserved_anywhere, reserved_for_service};
use crate::api::AdmissionPolicySpec;
use crate::api::admission_policy::POLICY_NAME;

pub(crate) fn validate(
    checker: &mut Checker<'_>,
    meta: &Meta,
    object: &Value,
    old: Option<&Value>,
) {
    if !meta.name.is_empty() && meta.name != POLICY_NAME {
        checker.structural(FieldError::invalid(
            "metadata.name",
            meta.name.as_str(),
            format!("dbward reads only the AdmissionPolicy named {POLICY_NAME:?}; this one would have no effect"),
        ));
    }
    let spec = match object.get("spec") {
        None => AdmissionPolicySpec::default(),
        Some(_) => match checker.spec::<AdmissionPolicySpec>(object, old) {
            Some((spec, _)) => spec,
            None => return,
        },
    };
    for name in spec.rules.keys() {
        if Rule::from_name(name).is_none() {
            checker.structural(FieldError::not_supported(
                key("spec.rules", name),
                name.as_str(),
                &rule_names(),
            ));
        }
    }
    let limits = &spec.limits;
    for (field, value) in [
        ("spec.limits.minCpu", &limits.min_cpu),
        ("spec.limits.minMemory", &limits.min_memory),
        ("spec.limits.minVolumeSize", &limits.min_volume_size),
    ] {
        if quantity::parse(value).is_none() {
            checker.structural(FieldError::invalid(
                field,
                value.as_str(),
                "must be a quantity such as \"250m\" or \"1Gi\"",
            ));
        }
    }
    if parse_duration(&limits.min_poll_interval).is_none() {
        checker.structural(FieldError::invalid(
            "spec.limits.minPollInterval",
            limits.min_poll_interval.as_str(),
            "must be a duration such as \"30s\"",
        ));
    }
    if limits.max_pool_size < 1 {
        checker.structural(FieldError::invalid(
            "spec.limits.maxPoolSize",
            limits.max_pool_size,
            "must be at least 1",
        ));
    }
    if limits.allowed_pool_modes.is_empty() {
        checker.structural(FieldError::required(
            "spec.limits.allowedPoolModes",
            "an empty list would refuse every ConnectionPool",
        ));
    }
    for (i, name) in limits.allowed_parameters.iter().enumerate() {
        if !is_setting_name(name) {
            checker.structural(FieldError::invalid(
                index("spec.limits.allowedParameters", i),
                name.as_str(),
                "must be a PostgreSQL setting name such as \"statement_timeout\"",
            ));
        }
    }
    for (i, role) in limits.allowed_in_roles.iter().enumerate() {
        let field = index("spec.limits.allowedInRoles", i);
        if !is_sql_name(role) || role.len() > 63 {
            checker.structural(FieldError::invalid(
                &field,
                role.as_str(),
                "must be a role name of at most 63 characters matching '^[a-zA-Z_][a-zA-Z0-9_-]*$'",
            ));
        } else if reserved_anywhere(role, true) {
            checker.structural(FieldError::invalid(
                &field,
                role.as_str(),
                "is a reserved role (the server's own or dbward's); only pg_* predefined roles and roles outside the reserved names can be allowed",
            ));
        }
    }
    check_adoptions(checker, &spec);
}

/// Each adoption names a service, a namespace and exactly one role or database that may be
/// adopted; never a reserved one.
fn check_adoptions(checker: &mut Checker<'_>, spec: &AdmissionPolicySpec) {
    for (i, adoption) in spec.adoptions.iter().enumerate() {
        let entry = index("spec.adoptions", i);
        if !is_service_name(&adoption.service_name) || adoption.service_name.len() > 63 {
            checker.structural(FieldError::invalid(
                format!("{entry}.serviceName"),
                adoption.service_name.as_str(),
                "must be a DatabaseService name: '^[a-z][-a-z0-9]+$', at most 63 characters",
            ));
        }
        if !is_dns_label(&adoption.namespace) {
            checker.structural(FieldError::invalid(
                format!("{entry}.namespace"),
                adoption.namespace.as_str(),
                "must be a namespace name: lower case alphanumeric characters or '-', starting and ending with an alphanumeric character, at most 63 characters",
            ));
        }
        let snapshot = checker.snapshot;
        let service = snapshot.services.get(&adoption.service_name);
        let connector_user = service.and_then(|s| snapshot.connector_user(s));
        let engine = service.map(|s| s.spec.engine);
        let names: Vec<(&str, &String)> =
            [("role", &adoption.role), ("database", &adoption.database)]
                .into_iter()
                .filter_map(|(what, name)| name.as_ref().map(|n| (what, n)))
                .collect();
        match names.as_slice() {
            [] => checker.structural(FieldError::required(
                &entry,
                "an adoption names exactly one of role and database",
            )),
            [_, _] => checker.structural(FieldError::forbidden(
                format!("{entry}.database"),
                "an adoption names exactly one of role and database; adopt the database in an entry of its own",
            )),
            _ => {}
        }
        for (what, name) in names {
            let field = format!("{entry}.{what}");
            if !is_sql_name(name) || name.len() > 64 {
                checker.structural(FieldError::invalid(
                    &field,
                    name.as_str(),
                    format!("must be a {what} name of at most 64 characters matching '^[a-zA-Z_][a-zA-Z0-9_-]*$'"),
                ));
            }
            let reserved = match engine {
                Some(engine) => reserved_for_service(engine, connector_user, name),
                None => reserved_anywhere(name, false),
            };
            if reserved {
                checker.structural(FieldError::invalid(
                    &field,
                    name.as_str(),
                    "is reserved (the server's own roles and databases, dbward's catalog and the connector's user cannot be adopted)",
                ));
            }
        }
    }
}
