//! Rules of ServiceUser, and the role-flag rules PostgresCluster shares.

use std::collections::BTreeSet;

use serde_json::Value;

use super::checks::{
    Checker, Defaults, Meta, check_binding, check_secret_target, check_sql_name,
    default_secret_target,
};
use super::field::{FieldError, index, key};
use super::policy::Rule;
use crate::api::service_user::SECRET_PREFIX;
use crate::api::{Engine, RoleFlag, ServiceUserSpec};

pub(crate) fn default(defaults: &mut Defaults, meta: &Meta) {
    if !meta.name.is_empty() {
        defaults.fill("/spec/username", Value::from(meta.name.as_str()));
    }
    default_secret_target(defaults, meta, SECRET_PREFIX);
}

pub(crate) fn validate(
    checker: &mut Checker<'_>,
    meta: &Meta,
    object: &Value,
    old: Option<&Value>,
) {
    let Some((spec, old_spec)) = checker.spec::<ServiceUserSpec>(object, old) else {
        return;
    };
    let old_spec = old_spec.as_ref();
    let service = check_binding(checker, meta, &spec.binding, old_spec.map(|o| &o.binding));
    check_secret_target(checker, &spec.secret, old_spec.map(|o| &o.secret));
    let engine = service.map(|s| s.spec.engine);

    let username = spec.username.clone().unwrap_or_else(|| meta.name.clone());
    checker.immutable(
        "spec.username",
        &spec.username,
        old_spec.map(|o| &o.username),
    );
    check_sql_name(
        checker,
        "spec.username",
        &username,
        engine.map_or(63, Engine::max_role_name),
    );

    let superuser_allowed = checker.policy().limits.superuser_allowed;
    check_flags(
        checker,
        "spec.flags",
        &spec.flags,
        engine,
        superuser_allowed,
        "limits.superuserAllowed",
    );

    let mut seen = BTreeSet::new();
    for (i, role) in spec.in_roles.iter().enumerate() {
        let field = index("spec.inRoles", i);
        check_sql_name(
            checker,
            &field,
            role,
            engine.map_or(63, Engine::max_role_name),
        );
        if !seen.insert(role) {
            checker.report(Rule::Names, FieldError::duplicate(&field, role.as_str()));
        }
        if *role == username {
            checker.report(
                Rule::RoleFlags,
                FieldError::invalid(&field, role.as_str(), "a role cannot be a member of itself"),
            );
        }
    }

    for name in spec.parameters.keys() {
        let valid = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
        if !valid {
            checker.report(
                Rule::Names,
                FieldError::invalid(
                    key("spec.parameters", name),
                    name.as_str(),
                    "must be a PostgreSQL setting name such as \"statement_timeout\"",
                ),
            );
        }
    }
    if engine == Some(Engine::Mysql) && !spec.parameters.is_empty() {
        checker.report(
            Rule::EngineSupport,
            FieldError::forbidden(
                "spec.parameters",
                "per-role settings exist only on PostgreSQL",
            ),
        );
    }

    let mut databases = BTreeSet::new();
    for (i, privilege) in spec.privileges.iter().enumerate() {
        let field = format!("{}.database", index("spec.privileges", i));
        check_sql_name(
            checker,
            &field,
            &privilege.database,
            engine.map_or(63, Engine::max_database_name),
        );
        if !databases.insert(&privilege.database) {
            checker.report(
                Rule::Names,
                FieldError::duplicate(&field, privilege.database.as_str()),
            );
        }
    }
}

/// The flag rules: no duplicates, not `login` with `nologin`, `superuser` only when allowed,
/// PostgreSQL-only flags not on MySQL.
pub(crate) fn check_flags(
    checker: &mut Checker<'_>,
    field: &str,
    flags: &[RoleFlag],
    engine: Option<Engine>,
    superuser_allowed: bool,
    policy_field: &str,
) {
    let mut seen = BTreeSet::new();
    for (i, flag) in flags.iter().enumerate() {
        if !seen.insert(*flag) {
            checker.report(
                Rule::RoleFlags,
                FieldError::duplicate(index(field, i), flag.as_str()),
            );
        }
    }
    if seen.contains(&RoleFlag::Login) && seen.contains(&RoleFlag::Nologin) {
        checker.report(
            Rule::RoleFlags,
            FieldError::invalid(
                field,
                serde_json::to_value(flags).unwrap_or_default(),
                "login and nologin are mutually exclusive",
            ),
        );
    }
    if let Some(i) = flags.iter().position(|f| *f == RoleFlag::Superuser)
        && !superuser_allowed
    {
        checker.report(
            Rule::Superuser,
            FieldError::forbidden(
                index(field, i),
                format!(
                    "superuser is not allowed by the AdmissionPolicy ({policy_field} is false)"
                ),
            ),
        );
    }
    if engine == Some(Engine::Mysql) {
        for (i, flag) in flags.iter().enumerate().filter(|(_, f)| f.postgres_only()) {
            checker.report(
                Rule::EngineSupport,
                FieldError::not_supported(
                    index(field, i),
                    flag.as_str(),
                    &RoleFlag::ALL
                        .iter()
                        .filter(|f| !f.postgres_only())
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>(),
                ),
            );
        }
    }
}
