//! Rules of ConnectionPool.

use serde_json::Value;

use super::checks::{
    Checker, Defaults, Meta, check_binding, check_secret_target, check_sql_name,
    default_secret_target,
};
use super::field::FieldError;
use super::policy::Rule;
use super::tenancy::Reserved;
use crate::api::connection_pool::{DEFAULT_POOL_SIZE, SECRET_PREFIX};
use crate::api::database::MAX_DATABASE_NAME;
use crate::api::{ConnectionPoolSpec, Engine};

pub(crate) fn default(defaults: &mut Defaults, meta: &Meta) {
    default_secret_target(defaults, meta, SECRET_PREFIX);
    defaults.fill("/spec/poolMode", Value::from("transaction"));
    defaults.fill("/spec/poolSize", Value::from(DEFAULT_POOL_SIZE));
}

pub(crate) fn validate(
    checker: &mut Checker<'_>,
    meta: &Meta,
    object: &Value,
    old: Option<&Value>,
) {
    let Some((spec, old_spec)) = checker.spec::<ConnectionPoolSpec>(object, old) else {
        return;
    };
    let old_spec = old_spec.as_ref();
    let service = check_binding(checker, meta, &spec.binding, old_spec.map(|o| &o.binding));
    check_secret_target(checker, &spec.secret, old_spec.map(|o| &o.secret));

    check_sql_name(
        checker,
        "spec.databaseName",
        &spec.database_name,
        MAX_DATABASE_NAME,
    );
    let reserved = Reserved::of(checker, service);
    reserved.check(checker, "spec.databaseName", &spec.database_name);
    if let Some(username) = &spec.username {
        // A PostgreSQL role name stops at 63 bytes (NAMEDATALEN − 1); pools are PostgreSQL's.
        check_sql_name(checker, "spec.username", username, 63);
        reserved.check(checker, "spec.username", username);
    }
    // The pool's name is the database name clients give PgBouncer.
    if meta.name.len() > 63 {
        checker.report(Rule::Names, FieldError::too_long("metadata.name", 63));
    }

    let policy = checker.policy();
    if !policy.limits.allowed_pool_modes.contains(&spec.pool_mode) {
        let allowed: Vec<&str> = policy
            .limits
            .allowed_pool_modes
            .iter()
            .map(|m| m.as_str())
            .collect();
        checker.report(
            Rule::PoolMode,
            FieldError::not_supported("spec.poolMode", spec.pool_mode.as_str(), &allowed),
        );
    }
    let max = policy.limits.max_pool_size;
    if spec.pool_size < 1 || spec.pool_size > max {
        checker.report(
            Rule::PoolSize,
            FieldError::invalid(
                "spec.poolSize",
                spec.pool_size,
                format!("must be between 1 and {max} (the AdmissionPolicy's limits.maxPoolSize)"),
            ),
        );
    }
    if let Some(service) = service
        && service.spec.engine != Engine::Postgres
    {
        checker.report(
            Rule::EngineSupport,
            FieldError::invalid(
                "spec.serviceName",
                spec.binding.service_name.as_str(),
                format!(
                    "ConnectionPools need a postgres service; DatabaseService {:?} has engine {:?}",
                    spec.binding.service_name,
                    service.spec.engine.as_str()
                ),
            ),
        );
    }
}
