//! Tenant isolation at admission (pure): the names no object may manage on a shared server, and
//! the checks of the fields that name roles and databases. Admission cannot see which namespace
//! owns a role or database on the server; the reconcilers check that against the ownership
//! markers. What admission can refuse on its own — the server's own names, dbward's catalog, the
//! connector's user, `pg_*` roles the admin did not allow — it refuses here.

use super::checks::Checker;
use super::field::FieldError;
use super::policy::Rule;
use crate::api::{DatabaseService, Engine};

/// Roles and databases of PostgreSQL itself (besides every `pg_*` name).
pub const POSTGRES_RESERVED_NAMES: [&str; 3] = ["postgres", "template0", "template1"];
/// The prefix PostgreSQL reserves for its predefined roles (`pg_read_all_stats`, …); databases
/// with it are refused too.
pub const POSTGRES_RESERVED_PREFIX: &str = "pg_";
/// Accounts and schemas of MySQL and MariaDB themselves.
pub const MYSQL_RESERVED_NAMES: [&str; 9] = [
    "root",
    "mysql",
    "sys",
    "information_schema",
    "performance_schema",
    "mariadb.sys",
    "mysql.sys",
    "mysql.session",
    "mysql.infoschema",
];
/// dbward's own catalog database (`sql::ownership::MYSQL_CATALOG`), reserved on both engines.
pub const CATALOG_NAME: &str = "_dbward";
/// The prefix of the poolers' own roles (`reconcile::pooler`: the lookup role of each service,
/// the admin-console user), reserved on PostgreSQL so no tenant can take one first.
pub const POOLER_RESERVED_PREFIX: &str = "dbward_pgbouncer";

/// Whether `name` is one of the names dbward never manages on `engine`: the server's own roles
/// and databases (`postgres`, `pg_*`, `template0/1`; `root`, `mysql`, `sys`, …), dbward's
/// catalog `_dbward` and, on PostgreSQL, the poolers' roles `dbward_pgbouncer*`. Case-insensitive. The connector's user is reserved as well, but only the
/// caller knows it (see [`reserved_for_service`]).
pub fn reserved_name(engine: Engine, name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    if lower == CATALOG_NAME {
        return true;
    }
    match engine {
        Engine::Postgres => {
            lower.starts_with(POSTGRES_RESERVED_PREFIX)
                || lower.starts_with(POOLER_RESERVED_PREFIX)
                || POSTGRES_RESERVED_NAMES.contains(&lower.as_str())
        }
        Engine::Mysql => MYSQL_RESERVED_NAMES.contains(&lower.as_str()),
    }
}

/// [`reserved_name`] on `engine`, or, with `connector_user` (the `user` of the service's
/// connector Secret), that name too.
pub fn reserved_for_service(engine: Engine, connector_user: Option<&str>, name: &str) -> bool {
    reserved_name(engine, name) || connector_user.is_some_and(|u| u.eq_ignore_ascii_case(name))
}

/// What the checks know about the service an object is on. Without the service (offline, or
/// not yet created), the names of both engines are refused.
pub(crate) struct Reserved<'a> {
    engine: Option<Engine>,
    service: Option<&'a str>,
    connector_user: Option<&'a str>,
}

const WHY: &str =
    "the server's own roles and databases and the connector's user cannot be managed by dbward";

impl<'a> Reserved<'a> {
    pub fn of(checker: &Checker<'a>, service: Option<&'a DatabaseService>) -> Reserved<'a> {
        Reserved {
            engine: service.map(|s| s.spec.engine),
            service: service.and_then(|s| s.metadata.name.as_deref()),
            connector_user: service.and_then(|s| checker.snapshot.connector_user(s)),
        }
    }

    /// For a team's own PostgresCluster: PostgreSQL's names, no connector.
    pub fn postgres() -> Reserved<'static> {
        Reserved {
            engine: Some(Engine::Postgres),
            service: None,
            connector_user: None,
        }
    }

    /// Why `name` is reserved, or `None`.
    fn reason(&self, name: &str) -> Option<String> {
        let (engines, reserved) = match self.engine {
            Some(Engine::Postgres) => ("PostgreSQL", reserved_name(Engine::Postgres, name)),
            Some(Engine::Mysql) => ("MySQL", reserved_name(Engine::Mysql, name)),
            None => (
                "PostgreSQL and MySQL",
                reserved_name(Engine::Postgres, name) || reserved_name(Engine::Mysql, name),
            ),
        };
        if reserved {
            return Some(format!("is reserved on {engines} services ({WHY})"));
        }
        let service = self.service.unwrap_or_default();
        self.connector_user
            .filter(|user| user.eq_ignore_ascii_case(name))
            .map(|_| {
                format!(
                    "is reserved on DatabaseService {service:?}: its connector Secret's user ({WHY})"
                )
            })
    }

    /// Report `name` in `field` when it is reserved.
    pub fn check(&self, checker: &mut Checker<'_>, field: &str, name: &str) {
        if let Some(reason) = self.reason(name) {
            checker.report(
                Rule::ReservedNames,
                FieldError::invalid(field, name, reason),
            );
        }
    }

    /// A role to be a member of: as [`Reserved::check`], except that a `pg_*` role the
    /// AdmissionPolicy's `limits.allowedInRoles` lists is allowed (that is how an admin grants
    /// `pg_read_all_stats`). Other reserved roles stay refused even when listed.
    pub fn check_in_role(
        &self,
        checker: &mut Checker<'_>,
        field: &str,
        role: &str,
        allowed_in_roles: &[String],
    ) {
        let Some(reason) = self.reason(role) else {
            return;
        };
        let predefined = role
            .to_ascii_lowercase()
            .starts_with(POSTGRES_RESERVED_PREFIX)
            && self.engine != Some(Engine::Mysql);
        if predefined && allowed_in_roles.iter().any(|r| r == role) && !self.is_other(role) {
            return;
        }
        let reason = if predefined {
            format!(
                "{reason}; an admin can allow a predefined role by listing it in the AdmissionPolicy's limits.allowedInRoles"
            )
        } else {
            reason
        };
        checker.report(
            Rule::ReservedNames,
            FieldError::invalid(field, role, reason),
        );
    }

    /// Reserved for a reason other than the `pg_` prefix (the connector's user, the catalog).
    fn is_other(&self, role: &str) -> bool {
        role.eq_ignore_ascii_case(CATALOG_NAME)
            || self
                .connector_user
                .is_some_and(|u| u.eq_ignore_ascii_case(role))
    }
}

/// Why a name in the AdmissionPolicy cannot be allowed or adopted whatever the service: a
/// reserved name other than a `pg_*` predefined role (when `predefined_ok`).
pub(crate) fn reserved_anywhere(name: &str, predefined_ok: bool) -> bool {
    let predefined = name
        .to_ascii_lowercase()
        .starts_with(POSTGRES_RESERVED_PREFIX);
    if predefined && predefined_ok {
        return false;
    }
    reserved_name(Engine::Postgres, name) || reserved_name(Engine::Mysql, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_is_dbwards() {
        assert_eq!(CATALOG_NAME, crate::sql::ownership::MYSQL_CATALOG);
    }

    #[test]
    fn reserved_names_per_engine() {
        for name in [
            "postgres",
            "Postgres",
            "pg_read_server_files",
            "PG_X",
            "template0",
            "template1",
            "_dbward",
            "dbward_pgbouncer_my_pg",
            "dbward_pgbouncer_admin",
        ] {
            assert!(reserved_name(Engine::Postgres, name), "{name}");
        }
        for name in [
            "root",
            "mysql",
            "sys",
            "information_schema",
            "performance_schema",
            "mariadb.sys",
            "mysql.sys",
            "mysql.session",
            "mysql.infoschema",
            "_dbward",
            "ROOT",
        ] {
            assert!(reserved_name(Engine::Mysql, name), "{name}");
        }
        assert!(!reserved_name(Engine::Postgres, "root"));
        assert!(!reserved_name(Engine::Mysql, "postgres"));
        assert!(!reserved_name(Engine::Mysql, "pg_app"));
        assert!(!reserved_name(Engine::Postgres, "app_pg_"));
        assert!(reserved_for_service(
            Engine::Postgres,
            Some("admin"),
            "admin"
        ));
        assert!(!reserved_for_service(
            Engine::Postgres,
            Some("admin"),
            "app"
        ));
    }
}
