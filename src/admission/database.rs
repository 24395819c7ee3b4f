//! Rules of Database.

use serde_json::Value;

use super::checks::{Checker, Defaults, Meta, check_binding, check_sql_name};
use super::field::FieldError;
use super::policy::Rule;
use super::tenancy::Reserved;
use crate::api::database::MAX_DATABASE_NAME;
use crate::api::{DatabaseSpec, Engine};

pub(crate) fn default(defaults: &mut Defaults, meta: &Meta) {
    if !meta.name.is_empty() {
        defaults.fill("/spec/databaseName", Value::from(meta.name.as_str()));
    }
    defaults.fill("/spec/deletionPolicy", Value::from("Retain"));
}

pub(crate) fn validate(
    checker: &mut Checker<'_>,
    meta: &Meta,
    object: &Value,
    old: Option<&Value>,
) {
    let Some((spec, old_spec)) = checker.spec::<DatabaseSpec>(object, old) else {
        return;
    };
    let old_spec = old_spec.as_ref();
    let service = check_binding(checker, meta, &spec.binding, old_spec.map(|o| &o.binding));

    let database_name = spec
        .database_name
        .clone()
        .unwrap_or_else(|| meta.name.clone());
    checker.immutable(
        "spec.databaseName",
        &spec.database_name,
        old_spec.map(|o| &o.database_name),
    );
    check_sql_name(
        checker,
        "spec.databaseName",
        &database_name,
        MAX_DATABASE_NAME,
    );
    let reserved = Reserved::of(checker, service);
    reserved.check(checker, "spec.databaseName", &database_name);
    if let Some(service) = service
        && service
            .spec
            .shared_databases
            .iter()
            .any(|d| d.name == database_name)
    {
        checker.report(
            Rule::SharedDatabases,
            FieldError::forbidden(
                "spec.databaseName",
                format!(
                    "database {database_name:?} is one of DatabaseService {:?}'s sharedDatabases, which its admin maintains",
                    spec.binding.service_name
                ),
            ),
        );
    }
    checker.immutable(
        "spec.lcCollate",
        &spec.lc_collate,
        old_spec.map(|o| &o.lc_collate),
    );
    checker.immutable(
        "spec.lcCtype",
        &spec.lc_ctype,
        old_spec.map(|o| &o.lc_ctype),
    );
    if let Some(owner) = &spec.owner {
        let max = service.map_or(63, |s| s.spec.engine.max_role_name());
        check_sql_name(checker, "spec.owner", owner, max);
        reserved.check(checker, "spec.owner", owner);
    }
    for (field, value) in [
        ("spec.lcCollate", &spec.lc_collate),
        ("spec.lcCtype", &spec.lc_ctype),
    ] {
        if let Some(value) = value
            && (value.is_empty()
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b)))
        {
            checker.report(
                Rule::Names,
                FieldError::invalid(
                    field,
                    value.as_str(),
                    "must be a locale or collation name such as \"en_US.UTF-8\" or \"C\"",
                ),
            );
        }
    }
    if let Some(service) = service {
        if service.spec.engine == Engine::Mysql && spec.lc_ctype.is_some() {
            checker.report(
                Rule::EngineSupport,
                FieldError::forbidden(
                    "spec.lcCtype",
                    "MySQL has no LC_CTYPE; set the collation in spec.lcCollate",
                ),
            );
        }
        if service.spec.engine == Engine::Mysql && spec.owner.is_some() {
            checker.report(
                Rule::EngineSupport,
                FieldError::forbidden("spec.owner", "MySQL databases have no owner; grant a ServiceUser the owner privilege instead"),
            );
        }
    }
}
