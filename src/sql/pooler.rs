//! The server side of a pooler: the `auth_query` lookup function in each pooled database
//! (observed, installed or repaired, removed) and the databases where a lookup role still has
//! something. The lookup role itself is an ordinary role ([`super::RoleSpec`] with a marker).
//! PostgreSQL only.

use std::collections::BTreeSet;

use super::postgres::PgServer;
use super::quote::check_pg_name;
use super::{Engine, Error, Server};
use crate::pgbouncer::lookup;

/// What a database holds of the lookup function.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LookupState {
    /// The schema's owner, `None` when there is no schema.
    pub schema_owner: Option<String>,
    /// Whether the connector's administrator owns the schema (and so may replace it).
    pub schema_ours: bool,
    /// Whether everything is exactly as [`lookup::install_statements`] leaves it.
    pub intact: bool,
}

impl LookupState {
    /// Pure: what to do with one database's lookup function. `Err` names the schema's foreign
    /// owner: dbward never replaces a schema somebody else created under its name.
    pub fn needs_install(&self) -> Result<bool, String> {
        match &self.schema_owner {
            None => Ok(true),
            Some(owner) if !self.schema_ours => Err(owner.clone()),
            Some(_) => Ok(!self.intact),
        }
    }
}

fn pg(server: &Server) -> Result<&PgServer, Error> {
    match server {
        Server::Postgres(pg) => Ok(pg),
        Server::Mysql(_) => Err(Error::Unsupported {
            engine: Engine::Mysql,
            what: "a PgBouncer pooler".to_owned(),
        }),
    }
}

/// Reads the lookup function's state in `database` for `lookup_role` (with `connector_user`
/// excluded by its body).
pub async fn observe_lookup(
    server: &Server,
    database: &str,
    lookup_role: &str,
    connector_user: &str,
) -> Result<LookupState, Error> {
    check_pg_name("role", lookup_role)?;
    let pg = pg(server)?;
    let what = format!("the pooler's lookup function in database {database:?}");
    let rows = pg
        .query_in(database, &what, lookup::OBSERVE_QUERY, &[&lookup_role])
        .await?;
    let Some(row) = rows.first() else {
        return Ok(LookupState::default());
    };
    let e = |e| Error::Observe {
        what: what.clone(),
        source: Box::new(e),
    };
    let owner: String = row.try_get(0).map_err(e)?;
    let ours: bool = row.try_get(1).map_err(e)?;
    let body: Option<String> = row.try_get(2).map_err(e)?;
    let definer: bool = row.try_get(3).map_err(e)?;
    let config: Vec<String> = row.try_get(4).map_err(e)?;
    let public_execute: bool = row.try_get(5).map_err(e)?;
    let same_owner: bool = row.try_get(6).map_err(e)?;
    let usage: bool = row.try_get(7).map_err(e)?;
    let execute: bool = row.try_get(8).map_err(e)?;
    let connect: bool = row.try_get(9).map_err(e)?;
    let public_schema: bool = row.try_get(10).map_err(e)?;
    let intact = body.as_deref()
        == Some(lookup::function_body(lookup_role, connector_user).as_str())
        && definer
        && config == [lookup::SEARCH_PATH]
        && !public_execute
        && same_owner
        && usage
        && execute
        && connect
        && !public_schema;
    Ok(LookupState {
        schema_owner: Some(owner),
        schema_ours: ours,
        intact,
    })
}

/// Installs or repairs the lookup function in `database`, in one transaction.
pub async fn install_lookup(
    server: &Server,
    database: &str,
    lookup_role: &str,
    connector_user: &str,
) -> Result<(), Error> {
    check_pg_name("role", lookup_role)?;
    let pg = pg(server)?;
    let statements = lookup::install_statements(database, lookup_role, connector_user);
    pg.transaction_in(
        database,
        &format!("installing the pooler's lookup function in database {database:?}"),
        &statements,
    )
    .await
}

/// Removes the lookup function and its schema from `database` (when the administrator owns
/// the schema; a foreign schema of the same name is left alone). Not found is success.
pub async fn uninstall_lookup(server: &Server, database: &str) -> Result<bool, Error> {
    let pg = pg(server)?;
    let what = format!("the pooler's lookup schema in database {database:?}");
    let rows = pg
        .query_in(
            database,
            &what,
            "SELECT n.nspowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user) \
               FROM pg_catalog.pg_namespace n WHERE n.nspname = 'dbward_pgbouncer'",
            &[],
        )
        .await?;
    let ours = match rows.first() {
        None => return Ok(false),
        Some(row) => row.try_get::<_, bool>(0).map_err(|e| Error::Observe {
            what: what.clone(),
            source: Box::new(e),
        })?,
    };
    if !ours {
        return Ok(false);
    }
    pg.transaction_in(
        database,
        &format!("removing the pooler's lookup function from database {database:?}"),
        &[lookup::uninstall_statement()],
    )
    .await?;
    Ok(true)
}

/// The databases where `role` holds privileges or owns something (where a lookup function
/// granted to it may be), from `pg_shdepend`.
pub async fn databases_of_role(server: &Server, role: &str) -> Result<BTreeSet<String>, Error> {
    check_pg_name("role", role)?;
    let pg = pg(server)?;
    let rows = pg
        .query_in(
            super::postgres::MAINTENANCE_DATABASE,
            "the lookup role's databases",
            "SELECT DISTINCT d.datname::text FROM pg_catalog.pg_shdepend s \
               JOIN pg_catalog.pg_roles r ON s.refclassid = 'pg_catalog.pg_authid'::regclass \
                                         AND s.refobjid = r.oid \
               JOIN pg_catalog.pg_database d ON d.oid = s.dbid \
              WHERE r.rolname = $1::text::name",
            &[&role],
        )
        .await?;
    rows.iter()
        .map(|r| {
            r.try_get::<_, String>(0).map_err(|e| Error::Observe {
                what: "the lookup role's databases".to_owned(),
                source: Box::new(e),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_schema_is_never_replaced() {
        let none = LookupState::default();
        assert_eq!(none.needs_install(), Ok(true));
        let foreign = LookupState {
            schema_owner: Some("tenant".into()),
            schema_ours: false,
            intact: false,
        };
        assert_eq!(foreign.needs_install(), Err("tenant".into()));
        let broken = LookupState {
            schema_owner: Some("postgres".into()),
            schema_ours: true,
            intact: false,
        };
        assert_eq!(broken.needs_install(), Ok(true));
        let fine = LookupState {
            intact: true,
            ..broken
        };
        assert_eq!(fine.needs_install(), Ok(false));
    }
}
