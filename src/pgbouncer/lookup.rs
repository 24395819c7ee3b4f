//! The lookup function behind `auth_query` (pure SQL text): a `SECURITY DEFINER` function with
//! a fixed `search_path` that returns the SCRAM verifier of a login role — never of a
//! superuser, a replication role, a predefined `pg_*` role, the connector's administrator or the
//! lookup role itself — and the statements that install, check and remove it.
//!
//! The filter follows Crunchy PGO's `internal/pgbouncer/postgres.go`. PgBouncer runs
//! `auth_query` in the database the client asked for; before 1.19 there is no `auth_dbname`,
//! so the function is installed in every pooled database (PgBouncer 1.19 and later could use
//! one database for all; dbward installs it per database on every version, which works on both).

use super::config::AuthQuery;
use crate::sql::quote::{pg_ident, pg_literal};

/// The schema holding the function, owned by the connector's administrator.
pub const SCHEMA: &str = "dbward_pgbouncer";
/// The function's name.
pub const FUNCTION: &str = "get_auth";
/// The function's fixed `search_path` (`pg_temp` last, so no temporary object can shadow a
/// catalog).
pub const SEARCH_PATH: &str = "search_path=pg_catalog, pg_temp";

/// PgBouncer's `auth_query`.
pub fn auth_query() -> AuthQuery {
    AuthQuery(format!(
        "SELECT username, password FROM {SCHEMA}.{FUNCTION}($1)"
    ))
}

/// The function's body (what `pg_proc.prosrc` holds once installed). `lookup_role` and
/// `connector_user` are never returned.
pub fn function_body(lookup_role: &str, connector_user: &str) -> String {
    format!(
        "\nSELECT a.rolname::text, a.rolpassword::text\n  \
         FROM pg_catalog.pg_authid a\n \
         WHERE a.rolname = $1::name\n   \
         AND a.rolcanlogin\n   \
         AND NOT a.rolsuper\n   \
         AND NOT a.rolreplication\n   \
         AND a.rolname::text NOT LIKE 'pg\\_%'\n   \
         AND a.rolname <> {}::name\n   \
         AND a.rolname <> {}::name\n   \
         AND (a.rolvaliduntil IS NULL OR a.rolvaliduntil >= pg_catalog.now())\n",
        pg_literal(lookup_role),
        pg_literal(connector_user)
    )
}

/// The statements that install (or repair) the function in one database, to run in one
/// transaction there: the schema and function only the administrator owns, usable only by
/// `lookup_role`, and `CONNECT` on the database for it.
pub fn install_statements(database: &str, lookup_role: &str, connector_user: &str) -> Vec<String> {
    let schema = pg_ident(SCHEMA);
    let role = pg_ident(lookup_role);
    let function = format!("{schema}.{}(text)", pg_ident(FUNCTION));
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
        format!("REVOKE ALL ON SCHEMA {schema} FROM PUBLIC"),
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        format!(
            "CREATE OR REPLACE FUNCTION {function} \
             RETURNS TABLE(username text, password text) \
             LANGUAGE sql STABLE SECURITY DEFINER \
             SET search_path = pg_catalog, pg_temp \
             AS {}",
            dollar_quoted(&function_body(lookup_role, connector_user))
        ),
        format!("REVOKE ALL ON FUNCTION {function} FROM PUBLIC"),
        format!("GRANT EXECUTE ON FUNCTION {function} TO {role}"),
        format!("GRANT CONNECT ON DATABASE {} TO {role}", pg_ident(database)),
    ]
}

/// The statement that removes the function and its schema from one database.
pub fn uninstall_statement() -> String {
    format!("DROP SCHEMA IF EXISTS {} CASCADE", pg_ident(SCHEMA))
}

/// The query that reads the function's state in the current database, with the lookup role
/// as `$1`: schema owner, whether the current user owns it, the function's body, security
/// definer flag, settings, whether PUBLIC may execute it, whether the lookup role may use the
/// schema, execute the function and connect to the database.
pub const OBSERVE_QUERY: &str = "\
SELECT pg_catalog.pg_get_userbyid(n.nspowner)::text,
       n.nspowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user),
       p.prosrc,
       COALESCE(p.prosecdef, false),
       COALESCE(p.proconfig, '{}'::text[]),
       p.oid IS NOT NULL AND (p.proacl IS NULL OR EXISTS (
           SELECT 1 FROM pg_catalog.aclexplode(p.proacl) x
            WHERE x.grantee = 0 AND x.privilege_type = 'EXECUTE')),
       p.oid IS NOT NULL AND p.proowner = n.nspowner,
       pg_catalog.has_schema_privilege($1::text, n.oid, 'USAGE'),
       p.oid IS NOT NULL AND pg_catalog.has_function_privilege($1::text, p.oid, 'EXECUTE'),
       pg_catalog.has_database_privilege($1::text, pg_catalog.current_database(), 'CONNECT'),
       n.nspacl IS NULL OR EXISTS (
           SELECT 1 FROM pg_catalog.aclexplode(n.nspacl) x WHERE x.grantee = 0)
  FROM pg_catalog.pg_namespace n
  LEFT JOIN pg_catalog.pg_proc p
         ON p.pronamespace = n.oid AND p.proname = 'get_auth'
        AND p.proargtypes = '25'::pg_catalog.oidvector
 WHERE n.nspname = 'dbward_pgbouncer'";

/// `body` as a dollar-quoted literal whose tag does not occur in it.
fn dollar_quoted(body: &str) -> String {
    let mut tag = String::from("dbward");
    while body.contains(&format!("${tag}$")) {
        tag.push('_');
    }
    format!("${tag}${body}${tag}$")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_excludes_privileged_and_own_roles() {
        let body = function_body("dbward_pgbouncer_svc", "admin");
        for clause in [
            "a.rolcanlogin",
            "NOT a.rolsuper",
            "NOT a.rolreplication",
            "NOT LIKE 'pg\\_%'",
            "a.rolname <> 'dbward_pgbouncer_svc'::name",
            "a.rolname <> 'admin'::name",
            "rolvaliduntil",
        ] {
            assert!(body.contains(clause), "{clause} missing from {body}");
        }
    }

    #[test]
    fn install_is_locked_down_and_quoted() {
        let statements = install_statements("orders", "look'up", "admin");
        let all = statements.join(";\n");
        assert!(all.contains("SECURITY DEFINER"));
        assert!(all.contains("SET search_path = pg_catalog, pg_temp"));
        assert!(all.contains(
            "REVOKE ALL ON FUNCTION \"dbward_pgbouncer\".\"get_auth\"(text) FROM PUBLIC"
        ));
        assert!(all.contains("REVOKE ALL ON SCHEMA \"dbward_pgbouncer\" FROM PUBLIC"));
        assert!(all.contains("TO \"look'up\""));
        assert!(all.contains("'look''up'::name"));
        assert!(all.contains("GRANT CONNECT ON DATABASE \"orders\""));
        assert_eq!(
            auth_query().as_str(),
            "SELECT username, password FROM dbward_pgbouncer.get_auth($1)"
        );
        // SEARCH_PATH is what pg_proc.proconfig shows for the SET clause above.
        assert_eq!(SEARCH_PATH, "search_path=pg_catalog, pg_temp");
    }

    #[test]
    fn dollar_quotes_never_close_early() {
        assert_eq!(dollar_quoted("x"), "$dbward$x$dbward$");
        assert_eq!(dollar_quoted("$dbward$"), "$dbward_$$dbward$$dbward_$");
    }
}
