//! MySQL and MariaDB over `mysql_async`.
//!
//! Accounts dbward manages are `'name'@'%'`. The mapping of PostgreSQL's vocabulary:
//! - flags: see [`super::plan::Attribute`] (login ↔ account lock; createdb, createrole,
//!   replication, superuser ↔ global privileges; inherit has no equivalent; bypassrls is
//!   refused);
//! - memberships (`inRoles`): MariaDB roles (`GRANT role TO user`; MySQL 8: `'role'@'%'`),
//!   which a session activates with `SET ROLE` (dbward does not set default roles);
//! - per-role parameters: not supported ([`Error::Unsupported`]);
//! - database owner: not supported; the `owner` privilege level grants `ALL PRIVILEGES`;
//! - collation: `lc_collate` is the default collation and `lc_ctype` the character set of a
//!   new database;
//! - passwords: stored as `mysql_native_password` hashes computed client-side
//!   (`IDENTIFIED WITH mysql_native_password AS '*…'`); an account created without a password
//!   gets a hash no password matches.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::prelude::{FromValue, Queryable};
use mysql_async::{Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, SslOpts};

use super::connector::{ConnectionInfo, SslMode};
use super::password::{mysql_native_hash, mysql_verify};
use super::plan::{
    Attribute, DatabaseState, MYSQL_DATABASE_ALL, PasswordState, Privilege, PrivilegeKind,
    PrivilegeMap, PrivilegeObject, RoleState, SqlAction, normalize_attributes,
};
use super::quote::{
    MYSQL_ACCOUNT_HOST, check_mysql_database, check_mysql_grant_database, check_mysql_user,
    mysql_account, mysql_grant_database, mysql_ident, mysql_literal, mysql_unescape_grant_database,
};
use super::{DriverError, Engine, Error, ServerInfo};

/// Connections open at once, per server.
pub const MAX_CONNECTIONS: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The hash given to accounts created without a password: no password hashes to it.
const NO_PASSWORD_HASH: &str = "*0000000000000000000000000000000000000000";

/// A MySQL or MariaDB server administered through its connector's credentials.
pub struct MyServer {
    host: String,
    port: u16,
    pool: Pool,
    mariadb: OnceLock<bool>,
    writes: AtomicU64,
}

impl MyServer {
    /// Prepares the server; no I/O.
    pub fn new(info: &ConnectionInfo) -> Result<Self, Error> {
        let constraints = PoolConstraints::new(0, MAX_CONNECTIONS)
            .unwrap_or_else(|| PoolConstraints::new(0, 1).unwrap_or_default());
        let pool_opts = PoolOpts::new()
            .with_constraints(constraints)
            .with_inactive_connection_ttl(Duration::from_secs(60));
        // Quoting in `quote` relies on backslash escapes being on.
        let init = vec![
            "SET SESSION sql_mode = TRIM(BOTH ',' FROM REPLACE(CONCAT(',', @@sql_mode, ','), \
             ',NO_BACKSLASH_ESCAPES,', ','))"
                .to_owned(),
        ];
        let mut opts = OptsBuilder::default()
            .ip_or_hostname(info.host.clone())
            .tcp_port(info.port)
            .user(Some(info.user.clone()))
            .pass(Some(info.password.clone()))
            .prefer_socket(false)
            .init(init)
            .pool_opts(pool_opts);
        let mode = info.ssl_mode()?;
        if mode != SslMode::Disable {
            // mysql_async builds its rustls config from the process-wide provider.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut ssl = SslOpts::default();
            if let Some(ca) = &info.ca_cert {
                ssl = ssl
                    .with_root_certs(vec![ca.as_bytes().to_vec().into()])
                    .with_disable_built_in_roots(true);
            }
            match (mode, &info.ca_cert) {
                (SslMode::Require, None) => {
                    ssl = ssl
                        .with_danger_accept_invalid_certs(true)
                        .with_danger_skip_domain_validation(true);
                }
                (SslMode::Require | SslMode::VerifyCa, _) => {
                    ssl = ssl.with_danger_skip_domain_validation(true);
                }
                _ => {}
            }
            opts = opts.ssl_opts(ssl);
        }
        Ok(MyServer {
            host: info.host.clone(),
            port: info.port,
            pool: Pool::new(opts),
            mariadb: OnceLock::new(),
            writes: AtomicU64::new(0),
        })
    }

    /// Statements executed that changed something.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn unreachable(&self, source: DriverError) -> Error {
        Error::Unreachable {
            engine: Engine::Mysql,
            host: self.host.clone(),
            port: self.port,
            source,
        }
    }

    fn classify(&self, e: mysql_async::Error, other: impl FnOnce(DriverError) -> Error) -> Error {
        match &e {
            mysql_async::Error::Server(s) if s.code == 1045 || s.code == 1044 => {
                Error::ConnectRejected {
                    engine: Engine::Mysql,
                    host: self.host.clone(),
                    port: self.port,
                    source: Box::new(e),
                }
            }
            _ if is_connection_error(&e) => self.unreachable(Box::new(e)),
            _ => other(Box::new(e)),
        }
    }

    async fn conn(&self) -> Result<Conn, Error> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.pool.get_conn()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.classify(e, |source| Error::Observe {
                what: "connection".into(),
                source,
            })),
            Err(elapsed) => Err(self.unreachable(Box::new(elapsed))),
        }
    }

    /// Runs a read-only text query, retrying once when a pooled connection turns out broken.
    async fn read(&self, what: &str, sql: &str) -> Result<Vec<Row>, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut conn = self.conn().await?;
            match conn.query::<Row, _>(sql).await {
                Ok(rows) => return Ok(rows),
                Err(e) if attempt == 1 && is_connection_error(&e) => continue,
                Err(e) => {
                    return Err(self.classify(e, |source| Error::Observe {
                        what: what.to_owned(),
                        source,
                    }));
                }
            }
        }
    }

    async fn is_mariadb(&self) -> Result<bool, Error> {
        if let Some(&m) = self.mariadb.get() {
            return Ok(m);
        }
        let version = self.probe().await?.version;
        let mariadb = version.contains("MariaDB");
        Ok(*self.mariadb.get_or_init(|| mariadb))
    }

    /// Probes the server.
    pub async fn probe(&self) -> Result<ServerInfo, Error> {
        let rows = self.read("server version", "SELECT VERSION()").await?;
        let version = match rows.first() {
            Some(row) => col::<String>(row, 0, "server version")?,
            None => String::new(),
        };
        Ok(ServerInfo { version })
    }

    /// Observes databases by name.
    pub async fn observe_databases(
        &self,
        names: &[&str],
    ) -> Result<BTreeMap<String, DatabaseState>, Error> {
        for name in names {
            check_mysql_database(name)?;
        }
        let wanted: BTreeSet<&str> = names.iter().copied().collect();
        let what = "databases";
        let rows = self
            .read(
                what,
                "SELECT SCHEMA_NAME, DEFAULT_COLLATION_NAME, DEFAULT_CHARACTER_SET_NAME \
                 FROM information_schema.SCHEMATA",
            )
            .await?;
        let mut out = BTreeMap::new();
        for row in rows {
            let name: String = col(&row, 0, what)?;
            if wanted.contains(name.as_str()) {
                out.insert(
                    name,
                    DatabaseState {
                        owner: None,
                        lc_collate: col(&row, 1, what)?,
                        lc_ctype: col(&row, 2, what)?,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Observes accounts `'name'@'%'`, checking candidate passwords against their stored
    /// `mysql_native_password` hash.
    pub async fn observe_roles(
        &self,
        roles: &[(&str, Option<&str>)],
    ) -> Result<BTreeMap<String, RoleState>, Error> {
        for (name, _) in roles {
            check_mysql_user("user", name)?;
        }
        let candidates: HashMap<&str, Option<&str>> = roles.iter().copied().collect();
        let mariadb = self.is_mariadb().await?;
        let what = "users";
        let (users_sql, members_sql) = if mariadb {
            (
                "SELECT u.User, u.plugin, u.authentication_string, u.Super_priv, u.Create_priv, \
                        u.Create_user_priv, u.Repl_slave_priv, \
                        COALESCE(JSON_VALUE(g.Priv, '$.account_locked'), 'false') \
                   FROM mysql.user u \
                   JOIN mysql.global_priv g ON g.Host = u.Host AND g.User = u.User \
                  WHERE u.Host = '%' AND u.is_role <> 'Y'",
                "SELECT User, Role FROM mysql.roles_mapping WHERE Host = '%'",
            )
        } else {
            (
                "SELECT User, plugin, authentication_string, Super_priv, Create_priv, \
                        Create_user_priv, Repl_slave_priv, account_locked \
                   FROM mysql.user WHERE Host = '%'",
                "SELECT TO_USER, FROM_USER FROM mysql.role_edges WHERE TO_HOST = '%'",
            )
        };
        let rows = self.read(what, users_sql).await?;
        let mut out = BTreeMap::new();
        for row in rows {
            let name: String = col(&row, 0, what)?;
            let Some(candidate) = candidates.get(name.as_str()) else {
                continue;
            };
            let plugin: String = col(&row, 1, what)?;
            let stored: String = col(&row, 2, what)?;
            let yes = |i: usize| -> Result<bool, Error> {
                let v: Option<String> = col(&row, i, what)?;
                Ok(matches!(
                    v.as_deref().map(str::to_ascii_lowercase).as_deref(),
                    Some("y" | "1" | "true")
                ))
            };
            let mut attributes = BTreeSet::new();
            for (i, attr) in [
                (3, Attribute::Superuser),
                (4, Attribute::Createdb),
                (5, Attribute::Createrole),
                (6, Attribute::Replication),
            ] {
                if yes(i)? {
                    attributes.insert(attr);
                }
            }
            if !yes(7)? {
                attributes.insert(Attribute::Login);
            }
            let password = match candidate {
                Some(candidate) => mysql_verify(&plugin, &stored, candidate),
                None => PasswordState::Unknown,
            };
            out.insert(
                name,
                RoleState {
                    attributes: normalize_attributes(Engine::Mysql, attributes),
                    in_roles: BTreeSet::new(),
                    parameters: BTreeMap::new(),
                    password,
                },
            );
        }
        for row in self.read("role memberships", members_sql).await? {
            let user: String = col(&row, 0, what)?;
            let role: String = col(&row, 1, what)?;
            if let Some(state) = out.get_mut(&user) {
                state.in_roles.insert(role);
            }
        }
        Ok(out)
    }

    /// Observes database-level privileges (`mysql.db`) of `roles`; a database in `databases`
    /// where a role holds nothing is reported with an empty set.
    pub async fn observe_privileges(
        &self,
        roles: &[&str],
        databases: &[&str],
    ) -> Result<PrivilegeMap, Error> {
        for role in roles {
            check_mysql_user("user", role)?;
        }
        for db in databases {
            check_mysql_database(db)?;
        }
        let what = "privileges";
        let wanted: BTreeSet<&str> = roles.iter().copied().collect();
        let rows = self
            .read(what, "SELECT * FROM mysql.db WHERE Host = '%'")
            .await?;
        let mut out: PrivilegeMap = BTreeMap::new();
        for row in rows {
            let columns: HashMap<String, usize> = row
                .columns_ref()
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name_str().into_owned(), i))
                .collect();
            let get = |name: &str| -> Result<Option<String>, Error> {
                match columns.get(name) {
                    Some(&i) => col(&row, i, what),
                    None => Ok(None),
                }
            };
            let Some(user) = get("User")? else { continue };
            if !wanted.contains(user.as_str()) {
                continue;
            }
            let Some(db) = get("Db")?
                .as_deref()
                .and_then(mysql_unescape_grant_database)
            else {
                continue;
            };
            let mut held = BTreeSet::new();
            for (kind, column) in MYSQL_DATABASE_ALL
                .iter()
                .copied()
                .chain([(PrivilegeKind::DeleteHistory, "Delete_history_priv")])
            {
                if get(column)?.as_deref() == Some("Y") {
                    held.insert(kind);
                }
            }
            let set = out.entry(user).or_default().entry(db).or_default();
            let all_held = MYSQL_DATABASE_ALL.iter().all(|(k, _)| held.contains(k));
            if all_held {
                // ALL PRIVILEGES covers every individual privilege.
                let p = Privilege::new(PrivilegeObject::Database, PrivilegeKind::All);
                set.all.insert(p);
                set.any.insert(p);
            } else {
                for kind in held {
                    let p = Privilege::new(PrivilegeObject::Database, kind);
                    set.all.insert(p);
                    set.any.insert(p);
                }
            }
        }
        for role in roles {
            for db in databases {
                out.entry((*role).to_owned())
                    .or_default()
                    .entry((*db).to_owned())
                    .or_default();
            }
        }
        Ok(out)
    }

    /// Refuses actions that have no meaning on MySQL, and bad names, before anything runs.
    fn check(actions: &[SqlAction]) -> Result<(), Error> {
        let unsupported = |what: String| Error::Unsupported {
            engine: Engine::Mysql,
            what,
        };
        for action in actions {
            match action {
                SqlAction::CreateDatabase { name, owner, .. } => {
                    check_mysql_database(name)?;
                    if owner.is_some() {
                        return Err(unsupported(format!(
                            "a database owner (database {name:?}); grant the owner privilege level instead"
                        )));
                    }
                }
                SqlAction::SetDatabaseOwner { name, .. } => {
                    return Err(unsupported(format!(
                        "a database owner (database {name:?}); grant the owner privilege level instead"
                    )));
                }
                SqlAction::DropDatabase { name } => check_mysql_database(name)?,
                SqlAction::CreateRole {
                    name, attributes, ..
                } => {
                    check_mysql_user("user", name)?;
                    if attributes.contains(&Attribute::Bypassrls) {
                        return Err(unsupported("the bypassrls flag".into()));
                    }
                }
                SqlAction::AlterRoleAttributes { name, to, .. } => {
                    check_mysql_user("user", name)?;
                    if to.contains(&Attribute::Bypassrls) {
                        return Err(unsupported("the bypassrls flag".into()));
                    }
                }
                SqlAction::SetPassword { name, .. } | SqlAction::DropRole { name } => {
                    check_mysql_user("user", name)?
                }
                SqlAction::GrantMembership { role, group }
                | SqlAction::RevokeMembership { role, group } => {
                    check_mysql_user("user", role)?;
                    check_mysql_user("role", group)?;
                }
                SqlAction::SetParameter { role, key, .. }
                | SqlAction::ResetParameter { role, key } => {
                    return Err(unsupported(format!(
                        "per-role parameters (parameter {key:?} of user {role:?})"
                    )));
                }
                SqlAction::GrantPrivileges {
                    role,
                    database,
                    privileges,
                }
                | SqlAction::RevokePrivileges {
                    role,
                    database,
                    privileges,
                } => {
                    check_mysql_user("user", role)?;
                    check_mysql_grant_database(database)?;
                    if privileges
                        .iter()
                        .any(|p| p.object != PrivilegeObject::Database)
                    {
                        return Err(unsupported(
                            "privileges on schemas or default privileges".into(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Executes actions in order (see [`super::Server::apply`]).
    pub async fn apply(&self, actions: &[SqlAction]) -> Result<(), Error> {
        Self::check(actions)?;
        let mariadb = self.is_mariadb().await?;
        let mut conn = self.conn().await?;
        for action in actions {
            match action {
                SqlAction::DropDatabase { name } => {
                    self.drop_database(&mut conn, name, action).await?
                }
                SqlAction::DropRole { name } => {
                    if self.observe_roles(&[(name, None)]).await?.is_empty() {
                        continue;
                    }
                    let sql = format!("DROP USER IF EXISTS {}", mysql_account(name));
                    self.execute(&mut conn, &sql, action).await?;
                }
                _ => {
                    for sql in render(action, mariadb) {
                        self.execute(&mut conn, &sql, action).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn execute(&self, conn: &mut Conn, sql: &str, action: &SqlAction) -> Result<(), Error> {
        conn.query_drop(sql).await.map_err(|e| {
            self.classify(e, |source| Error::Apply {
                action: action.to_string(),
                source,
            })
        })?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn drop_database(
        &self,
        conn: &mut Conn,
        name: &str,
        action: &SqlAction,
    ) -> Result<(), Error> {
        if self.observe_databases(&[name]).await?.is_empty() {
            return Ok(());
        }
        let count: Option<i64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE DB = ? AND ID <> CONNECTION_ID()",
                (name,),
            )
            .await
            .map_err(|e| {
                self.classify(e, |source| Error::Observe {
                    what: "connections".into(),
                    source,
                })
            })?;
        let connections = u64::try_from(count.unwrap_or(0)).unwrap_or(0);
        if connections > 0 {
            return Err(Error::DatabaseInUse {
                database: name.to_owned(),
                connections,
            });
        }
        let sql = format!("DROP DATABASE IF EXISTS {}", mysql_ident(name));
        self.execute(conn, &sql, action).await
    }

    /// The statements of `actions` as a script for the `mariadb`/`mysql` client.
    pub async fn render_script(&self, actions: &[SqlAction]) -> Result<String, Error> {
        Self::check(actions)?;
        let mariadb = self.is_mariadb().await?;
        let mut script = String::new();
        for action in actions {
            let statements = match action {
                SqlAction::DropDatabase { name } => {
                    vec![format!("DROP DATABASE IF EXISTS {}", mysql_ident(name))]
                }
                SqlAction::DropRole { name } => {
                    vec![format!("DROP USER IF EXISTS {}", mysql_account(name))]
                }
                _ => render(action, mariadb),
            };
            for sql in statements {
                script.push_str(&sql);
                script.push_str(";\n");
            }
        }
        Ok(script)
    }
}

/// Reads column `i` of a row.
fn col<T: FromValue>(row: &Row, i: usize, what: &str) -> Result<T, Error> {
    match row.get_opt::<T, usize>(i) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(Error::Observe {
            what: what.to_owned(),
            source: Box::new(e),
        }),
        None => Err(Error::Observe {
            what: what.to_owned(),
            source: format!("column {i} missing").into(),
        }),
    }
}

/// A broken or refused connection, as opposed to an SQL error.
fn is_connection_error(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        // Server shutting down; too many connections; lost connection.
        mysql_async::Error::Server(s) => matches!(s.code, 1040 | 1053 | 2006 | 2013 | 1927),
        _ => false,
    }
}

/// A global privilege standing for an attribute.
fn global_privilege(attr: Attribute) -> Option<&'static str> {
    match attr {
        Attribute::Createdb => Some("CREATE"),
        Attribute::Createrole => Some("CREATE USER"),
        Attribute::Replication => Some("REPLICATION SLAVE"),
        _ => None,
    }
}

fn role_ref(role: &str, mariadb: bool) -> String {
    if mariadb {
        mysql_ident(role)
    } else {
        format!(
            "{}@{}",
            mysql_literal(role),
            mysql_literal(MYSQL_ACCOUNT_HOST)
        )
    }
}

/// The statements of one action (drops are handled by the server, as they observe first).
fn render(action: &SqlAction, mariadb: bool) -> Vec<String> {
    match action {
        SqlAction::CreateDatabase {
            name,
            lc_collate,
            lc_ctype,
            ..
        } => {
            let mut sql = format!("CREATE DATABASE {}", mysql_ident(name));
            if let Some(charset) = lc_ctype {
                sql.push_str(&format!(" CHARACTER SET {}", mysql_literal(charset)));
            }
            if let Some(collation) = lc_collate {
                sql.push_str(&format!(" COLLATE {}", mysql_literal(collation)));
            }
            vec![sql]
        }
        SqlAction::CreateRole {
            name,
            attributes,
            password,
        } => {
            let account = mysql_account(name);
            let hash = password.as_ref().map_or_else(
                || NO_PASSWORD_HASH.to_owned(),
                |p| mysql_native_hash(p.expose()),
            );
            let lock = if attributes.contains(&Attribute::Login) {
                "UNLOCK"
            } else {
                "LOCK"
            };
            let mut out = vec![format!(
                "CREATE USER {account} IDENTIFIED WITH mysql_native_password AS {} ACCOUNT {lock}",
                mysql_literal(&hash)
            )];
            out.extend(grant_attributes(&account, &BTreeSet::new(), attributes));
            out
        }
        SqlAction::AlterRoleAttributes { name, from, to } => {
            let account = mysql_account(name);
            let mut out = Vec::new();
            if from.contains(&Attribute::Login) != to.contains(&Attribute::Login) {
                let lock = if to.contains(&Attribute::Login) {
                    "UNLOCK"
                } else {
                    "LOCK"
                };
                out.push(format!("ALTER USER {account} ACCOUNT {lock}"));
            }
            out.extend(grant_attributes(&account, from, to));
            out
        }
        SqlAction::SetPassword { name, password } => vec![format!(
            "ALTER USER {} IDENTIFIED WITH mysql_native_password AS {}",
            mysql_account(name),
            mysql_literal(&mysql_native_hash(password.expose()))
        )],
        SqlAction::GrantMembership { role, group } => vec![format!(
            "GRANT {} TO {}",
            role_ref(group, mariadb),
            mysql_account(role)
        )],
        SqlAction::RevokeMembership { role, group } => vec![format!(
            "REVOKE {} FROM {}",
            role_ref(group, mariadb),
            mysql_account(role)
        )],
        SqlAction::GrantPrivileges {
            role,
            database,
            privileges,
        } => vec![format!(
            "GRANT {} ON {}.* TO {}",
            privilege_list(privileges),
            mysql_grant_database(database),
            mysql_account(role)
        )],
        SqlAction::RevokePrivileges {
            role,
            database,
            privileges,
        } => vec![format!(
            "REVOKE {} ON {}.* FROM {}",
            privilege_list(privileges),
            mysql_grant_database(database),
            mysql_account(role)
        )],
        // Refused by `check`, or handled by the server.
        SqlAction::SetDatabaseOwner { .. }
        | SqlAction::SetParameter { .. }
        | SqlAction::ResetParameter { .. }
        | SqlAction::DropDatabase { .. }
        | SqlAction::DropRole { .. } => Vec::new(),
    }
}

fn privilege_list(privileges: &BTreeSet<Privilege>) -> String {
    if privileges.iter().any(|p| p.kind == PrivilegeKind::All) {
        return PrivilegeKind::All.keyword().to_owned();
    }
    privileges
        .iter()
        .map(|p| p.kind.keyword())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Global privileges moving an account from attributes `from` to `to`.
fn grant_attributes(
    account: &str,
    from: &BTreeSet<Attribute>,
    to: &BTreeSet<Attribute>,
) -> Vec<String> {
    let mut out = Vec::new();
    let was_super = from.contains(&Attribute::Superuser);
    let is_super = to.contains(&Attribute::Superuser);
    if is_super {
        if !was_super {
            out.push(format!(
                "GRANT ALL PRIVILEGES ON *.* TO {account} WITH GRANT OPTION"
            ));
        }
        return out;
    }
    let from = if was_super {
        // Revoking ALL PRIVILEGES also takes away what the other attributes stand for.
        out.push(format!("REVOKE ALL PRIVILEGES ON *.* FROM {account}"));
        out.push(format!("REVOKE GRANT OPTION ON *.* FROM {account}"));
        BTreeSet::new()
    } else {
        from.clone()
    };
    let revoke: Vec<&str> = from
        .difference(to)
        .filter_map(|&a| global_privilege(a))
        .collect();
    if !revoke.is_empty() {
        out.push(format!(
            "REVOKE {} ON *.* FROM {account}",
            revoke.join(", ")
        ));
    }
    let grant: Vec<&str> = to
        .difference(&from)
        .filter_map(|&a| global_privilege(a))
        .collect();
    if !grant.is_empty() {
        out.push(format!("GRANT {} ON *.* TO {account}", grant.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::plan::Password;

    #[test]
    fn renders_accounts_and_grants() {
        let create = SqlAction::CreateRole {
            name: "a`b'c".into(),
            attributes: BTreeSet::from([Attribute::Inherit, Attribute::Createdb]),
            password: Some(Password::new("password")),
        };
        assert_eq!(
            render(&create, true),
            vec![
                "CREATE USER 'a`b''c'@'%' IDENTIFIED WITH mysql_native_password AS \
                 '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19' ACCOUNT LOCK"
                    .to_string(),
                "GRANT CREATE ON *.* TO 'a`b''c'@'%'".to_string(),
            ]
        );
        let demote = SqlAction::AlterRoleAttributes {
            name: "u".into(),
            from: BTreeSet::from([
                Attribute::Superuser,
                Attribute::Createdb,
                Attribute::Createrole,
                Attribute::Replication,
                Attribute::Login,
            ]),
            to: BTreeSet::from([Attribute::Createdb, Attribute::Login]),
        };
        assert_eq!(
            render(&demote, true),
            vec![
                "REVOKE ALL PRIVILEGES ON *.* FROM 'u'@'%'",
                "REVOKE GRANT OPTION ON *.* FROM 'u'@'%'",
                "GRANT CREATE ON *.* TO 'u'@'%'",
            ]
        );
        let grant = SqlAction::GrantPrivileges {
            role: "u".into(),
            database: "my_db".into(),
            privileges: BTreeSet::from([
                Privilege::new(PrivilegeObject::Database, PrivilegeKind::Select),
                Privilege::new(PrivilegeObject::Database, PrivilegeKind::Insert),
            ]),
        };
        assert_eq!(
            render(&grant, true),
            vec![r"GRANT SELECT, INSERT ON `my\_db`.* TO 'u'@'%'"]
        );
        assert_eq!(
            render(
                &SqlAction::GrantMembership {
                    role: "u".into(),
                    group: "r`1".into()
                },
                true
            ),
            vec!["GRANT `r``1` TO 'u'@'%'"]
        );
    }
}
