//! Rules of ServiceUser, and the role-flag rules PostgresCluster shares.

use std::collections::BTreeSet;

use serde_json::Value;

use super::checks::{
    Checker, Defaults, Meta, check_binding, check_secret_target, check_sql_name,
    default_secret_target, is_setting_name,
};
use super::field::{FieldError, index, key};
use super::policy::Rule;
use super::tenancy::Reserved;
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
    let reserved = Reserved::of(checker, service);

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
    reserved.check(checker, "spec.username", &username);

    let superuser_allowed = checker.policy().limits.superuser_allowed;
    check_flags(
        checker,
        "spec.flags",
        &spec.flags,
        engine,
        superuser_allowed,
        "limits.superuserAllowed",
    );
    check_server_wide_flags(checker, &spec.flags, engine);

    let allowed_in_roles = checker.policy().limits.allowed_in_roles.clone();

    let mut seen = BTreeSet::new();
    for (i, role) in spec.in_roles.iter().enumerate() {
        let field = index("spec.inRoles", i);
        check_sql_name(
            checker,
            &field,
            role,
            engine.map_or(63, Engine::max_role_name),
        );
        reserved.check_in_role(checker, &field, role, &allowed_in_roles);
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

    let allowed_parameters = &checker.policy().limits.allowed_parameters;
    for (name, value) in &spec.parameters {
        let field = key("spec.parameters", name);
        if !is_setting_name(name) {
            checker.report(
                Rule::Names,
                FieldError::invalid(
                    &field,
                    name.as_str(),
                    "must be a PostgreSQL setting name such as \"statement_timeout\"",
                ),
            );
        } else if !allowed_parameters.contains(name) {
            checker.report(
                Rule::Parameters,
                FieldError::not_supported(&field, name.as_str(), allowed_parameters),
            );
        }
        if value.contains(['\0', '\n', '\r']) {
            checker.structural(FieldError::invalid(
                &field,
                value.as_str(),
                "must be one line without NUL characters",
            ));
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
        reserved.check(checker, &field, &privilege.database);
        if !databases.insert(&privilege.database) {
            checker.report(
                Rule::Names,
                FieldError::duplicate(&field, privilege.database.as_str()),
            );
        }
        if let Some(service) = service
            && let Some(shared) = service
                .spec
                .shared_databases
                .iter()
                .find(|d| d.name == privilege.database)
            && privilege.level > shared.max_level
        {
            checker.report(
                Rule::SharedDatabases,
                FieldError::forbidden(
                    format!("{}.level", index("spec.privileges", i)),
                    format!(
                        "database {:?} is shared by DatabaseService {:?} up to {}",
                        privilege.database,
                        spec.binding.service_name,
                        shared.max_level.as_str()
                    ),
                ),
            );
        }
    }
}

/// Flags whose reach is the whole shared server, not the tenant's own objects: refused on
/// shared services unless the AdmissionPolicy's `limits.serverWideFlagsAllowed`. (A team's own
/// PostgresCluster is not shared; its users are not checked here.)
fn check_server_wide_flags(checker: &mut Checker<'_>, flags: &[RoleFlag], engine: Option<Engine>) {
    if checker.policy().limits.server_wide_flags_allowed {
        return;
    }
    for (i, flag) in flags.iter().enumerate() {
        let reach = match (flag, engine) {
            // PostgreSQL-only: check_flags refuses it on MySQL, once.
            (RoleFlag::Replication, Some(Engine::Mysql)) => continue,
            (RoleFlag::Replication, _) => "it can stream every tenant's data",
            (RoleFlag::Createrole, Some(Engine::Mysql)) => {
                "on MySQL it is the global CREATE USER privilege, which can drop and rename every account"
            }
            (RoleFlag::Createrole, _) => {
                "it can alter every non-superuser role (PostgreSQL before 16) and create roles outside dbward"
            }
            (RoleFlag::Createdb, Some(Engine::Mysql)) => {
                "on MySQL it is the global CREATE privilege, which creates tables in every tenant's database"
            }
            _ => continue,
        };
        checker.report(
            Rule::ServerWideFlags,
            FieldError::forbidden(
                index("spec.flags", i),
                format!(
                    "{} is not allowed on shared services by the AdmissionPolicy (limits.serverWideFlagsAllowed is false): {reach}",
                    flag.as_str()
                ),
            ),
        );
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
