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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::prelude::{FromValue, Queryable};
use mysql_async::{Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, SslOpts, Value};

use super::connector::{ConnectionInfo, SslMode};
use super::ownership::{MYSQL_CATALOG, OwnerMarker};
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

/// dbward's catalog of owners, in [`MYSQL_CATALOG`]: one row per role or database dbward
/// created (or adopted), written before the object is created and deleted after it is dropped.
/// Names are binary because account and database names compare byte for byte.
const CATALOG_TABLE_DDL: &str = "CREATE TABLE IF NOT EXISTS `_dbward`.`owners` (\
     object_type ENUM('role', 'database') NOT NULL, \
     name VARBINARY(256) NOT NULL, \
     namespace TEXT NOT NULL, \
     kind TEXT NOT NULL, \
     object_name TEXT NOT NULL, \
     uid TEXT NULL, \
     PRIMARY KEY (object_type, name)\
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";
const CATALOG_DATABASE_DDL: &str =
    "CREATE DATABASE IF NOT EXISTS `_dbward` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin";
const OWNER_UPSERT: &str = "INSERT INTO `_dbward`.`owners` \
     (object_type, name, namespace, kind, object_name, uid) VALUES (?, ?, ?, ?, ?, ?) \
     ON DUPLICATE KEY UPDATE namespace = VALUES(namespace), kind = VALUES(kind), \
     object_name = VALUES(object_name), uid = VALUES(uid)";
const OWNER_DELETE: &str = "DELETE FROM `_dbward`.`owners` WHERE object_type = ? AND name = ?";

/// What a catalog row describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectType {
    Role,
    Database,
}

impl ObjectType {
    fn as_str(self) -> &'static str {
        match self {
            ObjectType::Role => "role",
            ObjectType::Database => "database",
        }
    }
}

/// Runs `$body` (which uses `$conn`) on a pooled connection, once more on another when the
/// first turns out broken.
macro_rules! retry_once {
    ($self:ident, $conn:ident => $body:expr) => {{
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut $conn = $self.conn().await?;
            match $body {
                Err(Error::Unreachable { .. }) if attempt == 1 => continue,
                other => break other,
            }
        }
    }};
}

/// A MySQL or MariaDB server administered through its connector's credentials.
pub struct MyServer {
    host: String,
    port: u16,
    /// Connections over TLS (every mode but `disable`).
    tls_pool: Option<Pool>,
    /// Plain connections (`disable`, and `prefer` when the server offers no TLS).
    plain_pool: Option<Pool>,
    /// `prefer`: the server offered no TLS, so connections go to `plain_pool` directly.
    no_tls_offered: AtomicBool,
    /// Whether the last connection checked out is TLS.
    last_tls: AtomicBool,
    mariadb: OnceLock<bool>,
    /// `_dbward.owners` is known to exist.
    catalog: AtomicBool,
    writes: AtomicU64,
}

impl MyServer {
    /// Prepares the server; no I/O.
    pub fn new(info: &ConnectionInfo) -> Result<Self, Error> {
        let mode = info.ssl_mode()?;
        let opts = |ssl: Option<SslOpts>| {
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
            OptsBuilder::default()
                .ip_or_hostname(info.host.clone())
                .tcp_port(info.port)
                .user(Some(info.user.clone()))
                .pass(Some(info.password.clone()))
                .prefer_socket(false)
                .init(init)
                .pool_opts(pool_opts)
                .ssl_opts(ssl)
        };
        let tls_pool =
            ssl_opts(mode, info.ca_cert.as_deref()).map(|ssl| Pool::new(opts(Some(ssl))));
        let plain_pool =
            matches!(mode, SslMode::Disable | SslMode::Prefer).then(|| Pool::new(opts(None)));
        Ok(MyServer {
            host: info.host.clone(),
            port: info.port,
            tls_pool,
            plain_pool,
            no_tls_offered: AtomicBool::new(false),
            last_tls: AtomicBool::new(false),
            mariadb: OnceLock::new(),
            catalog: AtomicBool::new(false),
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
            // 1045 access denied, 1044 to a database; 1698 is MariaDB's access denied when its
            // authentication plugin exchange ends without a password check (seen for an
            // unknown user under load): the same refusal of the login.
            mysql_async::Error::Server(s) if matches!(s.code, 1044 | 1045 | 1698) => {
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

    fn apply_err(&self, action: &SqlAction) -> impl FnOnce(mysql_async::Error) -> Error + '_ {
        let action = action.to_string();
        move |e| self.classify(e, |source| Error::Apply { action, source })
    }

    async fn checkout(&self, pool: &Pool) -> Result<Conn, Result<mysql_async::Error, Error>> {
        match tokio::time::timeout(CONNECT_TIMEOUT, pool.get_conn()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(Ok(e)),
            Err(elapsed) => Err(Err(self.unreachable(Box::new(elapsed)))),
        }
    }

    /// A pooled connection: over TLS unless `sslmode` is `disable`, or is `prefer` (or absent)
    /// and the server offers no TLS (as libpq does: unverified TLS first, then plain).
    async fn conn(&self) -> Result<Conn, Error> {
        let connect_err = |e: mysql_async::Error| {
            self.classify(e, |source| Error::Observe {
                what: "connection".into(),
                source,
            })
        };
        if let Some(pool) = &self.tls_pool
            && !(self.plain_pool.is_some() && self.no_tls_offered.load(Ordering::Relaxed))
        {
            match self.checkout(pool).await {
                Ok(conn) => {
                    self.last_tls.store(true, Ordering::Relaxed);
                    return Ok(conn);
                }
                Err(Ok(mysql_async::Error::Driver(
                    mysql_async::DriverError::NoClientSslFlagFromServer,
                ))) if self.plain_pool.is_some() => {
                    self.no_tls_offered.store(true, Ordering::Relaxed);
                }
                Err(Ok(e)) => return Err(connect_err(e)),
                Err(Err(e)) => return Err(e),
            }
        }
        let pool = self
            .plain_pool
            .as_ref()
            .expect("a plain pool whenever TLS is not required");
        match self.checkout(pool).await {
            Ok(conn) => {
                self.last_tls.store(false, Ordering::Relaxed);
                Ok(conn)
            }
            Err(Ok(e)) => Err(connect_err(e)),
            Err(Err(e)) => Err(e),
        }
    }

    /// Runs a read-only text query on `conn`.
    async fn read_on(&self, conn: &mut Conn, what: &str, sql: &str) -> Result<Vec<Row>, Error> {
        conn.query::<Row, _>(sql).await.map_err(|e| {
            self.classify(e, |source| Error::Observe {
                what: what.to_owned(),
                source,
            })
        })
    }

    /// Runs a read-only prepared query with bound `params` on `conn`.
    async fn read_params_on(
        &self,
        conn: &mut Conn,
        what: &str,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Vec<Row>, Error> {
        conn.exec::<Row, _, _>(sql, params).await.map_err(|e| {
            self.classify(e, |source| Error::Observe {
                what: what.to_owned(),
                source,
            })
        })
    }

    async fn version_on(&self, conn: &mut Conn) -> Result<String, Error> {
        let rows = self
            .read_on(conn, "server version", "SELECT VERSION()")
            .await?;
        match rows.first() {
            Some(row) => col::<String>(row, 0, "server version"),
            None => Ok(String::new()),
        }
    }

    async fn is_mariadb_on(&self, conn: &mut Conn) -> Result<bool, Error> {
        if let Some(&m) = self.mariadb.get() {
            return Ok(m);
        }
        let mariadb = self.version_on(conn).await?.contains("MariaDB");
        Ok(*self.mariadb.get_or_init(|| mariadb))
    }

    /// Probes the server.
    pub async fn probe(&self) -> Result<ServerInfo, Error> {
        let version = retry_once!(self, conn => self.version_on(&mut conn).await)?;
        Ok(ServerInfo {
            version,
            tls: self.last_tls.load(Ordering::Relaxed),
        })
    }

    /// Observes databases by name, with their markers.
    pub async fn observe_databases(
        &self,
        names: &[&str],
    ) -> Result<BTreeMap<String, DatabaseState>, Error> {
        for name in names {
            check_mysql_database(name)?;
        }
        retry_once!(self, conn => self.observe_databases_on(&mut conn, names).await)
    }

    async fn observe_databases_on(
        &self,
        conn: &mut Conn,
        names: &[&str],
    ) -> Result<BTreeMap<String, DatabaseState>, Error> {
        let wanted: BTreeSet<&str> = names.iter().copied().collect();
        let what = "databases";
        // One lookup per name: an equality on SCHEMA_NAME lets the server open only that
        // database's directory, where an IN list (or no WHERE) reads every schema's.
        let mut rows = Vec::new();
        for name in &wanted {
            rows.extend(
                self.read_params_on(
                    conn,
                    what,
                    "SELECT SCHEMA_NAME, DEFAULT_COLLATION_NAME, DEFAULT_CHARACTER_SET_NAME \
                     FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                    vec![Value::from(*name)],
                )
                .await?,
            );
        }
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
                        marker: None,
                    },
                );
            }
        }
        let found: Vec<&str> = out.keys().map(String::as_str).collect();
        let mut markers = self.owners_on(conn, ObjectType::Database, &found).await?;
        for (name, state) in &mut out {
            state.marker = markers.remove(name);
        }
        Ok(out)
    }

    /// The catalog's markers of `names` (one query); none when the catalog does not exist yet.
    async fn owners_on(
        &self,
        conn: &mut Conn,
        object_type: ObjectType,
        names: &[&str],
    ) -> Result<HashMap<String, OwnerMarker>, Error> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "SELECT name, namespace, kind, object_name, uid FROM `_dbward`.`owners` \
             WHERE object_type = ? AND name IN ({})",
            placeholders(names.len())
        );
        let mut params = vec![Value::from(object_type.as_str())];
        params.extend(names.iter().map(|n| Value::from(n.as_bytes())));
        type OwnerRow = (Vec<u8>, String, String, String, Option<String>);
        let rows: Vec<OwnerRow> = match conn.exec(sql, params).await {
            Ok(rows) => rows,
            Err(e) if is_missing_catalog(&e) => return Ok(HashMap::new()),
            Err(e) => {
                return Err(self.classify(e, |source| Error::Observe {
                    what: "ownership markers".into(),
                    source,
                }));
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|(name, namespace, kind, object_name, uid)| {
                let marker = OwnerMarker {
                    namespace,
                    kind,
                    name: object_name,
                    uid,
                };
                let complete = !marker.namespace.is_empty()
                    && !marker.kind.is_empty()
                    && !marker.name.is_empty();
                let name = String::from_utf8(name).ok()?;
                complete.then_some((name, marker))
            })
            .collect())
    }

    /// Creates `_dbward.owners` unless this server already knows it exists; the statements
    /// count as writes only when something was missing.
    async fn ensure_catalog(&self, conn: &mut Conn, action: &SqlAction) -> Result<(), Error> {
        if self.catalog.load(Ordering::Relaxed) {
            return Ok(());
        }
        let found: Option<(i64, i64)> = conn
            .exec_first(
                "SELECT (SELECT COUNT(*) FROM information_schema.SCHEMATA \
                          WHERE SCHEMA_NAME = ?), \
                        (SELECT COUNT(*) FROM information_schema.TABLES \
                          WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'owners')",
                (MYSQL_CATALOG, MYSQL_CATALOG),
            )
            .await
            .map_err(|e| {
                self.classify(e, |source| Error::Observe {
                    what: "ownership catalog".into(),
                    source,
                })
            })?;
        let (schema, table) = found.unwrap_or((0, 0));
        if schema == 0 {
            self.execute(conn, CATALOG_DATABASE_DDL, action).await?;
        }
        if table == 0 {
            self.execute(conn, CATALOG_TABLE_DDL, action).await?;
        }
        self.catalog.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The catalog row of `name`, if any.
    async fn owner_on(
        &self,
        conn: &mut Conn,
        object_type: ObjectType,
        name: &str,
    ) -> Result<Option<OwnerMarker>, Error> {
        Ok(self
            .owners_on(conn, object_type, &[name])
            .await?
            .remove(name))
    }

    /// Writes (inserts or replaces) the catalog row of `name`; a write when it changed.
    async fn write_owner(
        &self,
        conn: &mut Conn,
        object_type: ObjectType,
        name: &str,
        marker: &OwnerMarker,
        action: &SqlAction,
    ) -> Result<(), Error> {
        self.ensure_catalog(conn, action).await?;
        let params = (
            object_type.as_str(),
            name.as_bytes(),
            marker.namespace.as_str(),
            marker.kind.as_str(),
            marker.name.as_str(),
            marker.uid.as_deref(),
        );
        let result = conn.exec_drop(OWNER_UPSERT, params).await;
        let result = match result {
            // Dropped behind our back: create it again, once.
            Err(e) if is_missing_catalog(&e) => {
                self.catalog.store(false, Ordering::Relaxed);
                self.ensure_catalog(conn, action).await?;
                conn.exec_drop(OWNER_UPSERT, params).await
            }
            other => other,
        };
        result.map_err(self.apply_err(action))?;
        if conn.affected_rows() > 0 {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Deletes the catalog row of `name`; not found (or no catalog) is success.
    async fn forget_owner(
        &self,
        conn: &mut Conn,
        object_type: ObjectType,
        name: &str,
        action: &SqlAction,
    ) -> Result<(), Error> {
        match conn
            .exec_drop(OWNER_DELETE, (object_type.as_str(), name.as_bytes()))
            .await
        {
            Ok(()) => {
                if conn.affected_rows() > 0 {
                    self.writes.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(e) if is_missing_catalog(&e) => Ok(()),
            Err(e) => Err(self.apply_err(action)(e)),
        }
    }

    /// Creates a role or database with its marker: the catalog row first (a crash in between
    /// leaves a marker for a missing name, which the next reconcile creates), then the object.
    /// When the creation itself fails (the name was taken meanwhile), the row is put back as
    /// it was, so that an object created by somebody else is not marked as ours.
    async fn create_marked(
        &self,
        conn: &mut Conn,
        object_type: ObjectType,
        name: &str,
        marker: &OwnerMarker,
        statements: &[String],
        action: &SqlAction,
    ) -> Result<(), Error> {
        self.ensure_catalog(conn, action).await?;
        let prior = self.owner_on(conn, object_type, name).await?;
        self.write_owner(conn, object_type, name, marker, action)
            .await?;
        let mut statements = statements.iter();
        if let Some(create) = statements.next()
            && let Err(e) = self.execute(conn, create, action).await
        {
            let restored = match &prior {
                Some(prior) => {
                    self.write_owner(conn, object_type, name, prior, action)
                        .await
                }
                None => self.forget_owner(conn, object_type, name, action).await,
            };
            // The creation's error is the one to report; a failed restore is only logged.
            if let Err(restore) = restored {
                tracing::warn!(
                    object_type = object_type.as_str(),
                    name,
                    error = %restore,
                    "could not restore the ownership catalog row after a failed creation"
                );
            }
            return Err(e);
        }
        for sql in statements {
            self.execute(conn, sql, action).await?;
        }
        Ok(())
    }

    /// Observes accounts `'name'@'%'`, checking candidate passwords against their stored
    /// `mysql_native_password` hash, with their markers.
    pub async fn observe_roles(
        &self,
        roles: &[(&str, Option<&str>)],
    ) -> Result<BTreeMap<String, RoleState>, Error> {
        for (name, _) in roles {
            check_mysql_user("user", name)?;
        }
        retry_once!(self, conn => self.observe_roles_on(&mut conn, roles).await)
    }

    async fn observe_roles_on(
        &self,
        conn: &mut Conn,
        roles: &[(&str, Option<&str>)],
    ) -> Result<BTreeMap<String, RoleState>, Error> {
        let candidates: HashMap<&str, Option<&str>> = roles.iter().copied().collect();
        if candidates.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mariadb = self.is_mariadb_on(conn).await?;
        let what = "users";
        // Only the accounts asked about, by primary key (Host, User).
        let placeholders = placeholders(candidates.len());
        let (users_sql, members_sql) = if mariadb {
            (
                format!(
                    "SELECT u.User, u.plugin, u.authentication_string, u.Super_priv, \
                            u.Create_priv, u.Create_user_priv, u.Repl_slave_priv, \
                            COALESCE(JSON_VALUE(g.Priv, '$.account_locked'), 'false') \
                       FROM mysql.user u \
                       JOIN mysql.global_priv g ON g.Host = u.Host AND g.User = u.User \
                      WHERE u.Host = '%' AND u.User IN ({placeholders}) AND u.is_role <> 'Y'"
                ),
                format!(
                    "SELECT User, Role FROM mysql.roles_mapping \
                      WHERE Host = '%' AND User IN ({placeholders})"
                ),
            )
        } else {
            (
                format!(
                    "SELECT User, plugin, authentication_string, Super_priv, Create_priv, \
                            Create_user_priv, Repl_slave_priv, account_locked \
                       FROM mysql.user WHERE Host = '%' AND User IN ({placeholders})"
                ),
                format!(
                    "SELECT TO_USER, FROM_USER FROM mysql.role_edges \
                      WHERE TO_HOST = '%' AND TO_USER IN ({placeholders})"
                ),
            )
        };
        let names: Vec<Value> = candidates.keys().map(|n| Value::from(*n)).collect();
        let rows = self
            .read_params_on(conn, what, &users_sql, names.clone())
            .await?;
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
                    marker: None,
                },
            );
        }
        for row in self
            .read_params_on(conn, "role memberships", &members_sql, names)
            .await?
        {
            let user: String = col(&row, 0, what)?;
            let role: String = col(&row, 1, what)?;
            if let Some(state) = out.get_mut(&user) {
                state.in_roles.insert(role);
            }
        }
        let found: Vec<&str> = out.keys().map(String::as_str).collect();
        let mut markers = self.owners_on(conn, ObjectType::Role, &found).await?;
        for (name, state) in &mut out {
            state.marker = markers.remove(name);
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
        let rows = if wanted.is_empty() {
            Vec::new()
        } else {
            // Only the rows of the accounts asked about (mysql.db's key is Host, Db, User).
            let sql = format!(
                "SELECT * FROM mysql.db WHERE Host = '%' AND User IN ({})",
                placeholders(wanted.len())
            );
            let names: Vec<Value> = wanted.iter().map(|n| Value::from(*n)).collect();
            retry_once!(self, conn => {
                self.read_params_on(&mut conn, what, &sql, names.clone()).await
            })?
        };
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
                SqlAction::DropDatabase { name } | SqlAction::MarkDatabase { name, .. } => {
                    check_mysql_database(name)?
                }
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
                SqlAction::SetPassword { name, .. }
                | SqlAction::DropRole { name }
                | SqlAction::MarkRole { name, .. } => check_mysql_user("user", name)?,
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

    /// Executes actions in order (see [`super::Server::apply`]). Everything runs on one pooled
    /// connection, observations included: holding one while waiting for another would stall
    /// concurrent applies on a full pool.
    pub async fn apply(&self, actions: &[SqlAction]) -> Result<(), Error> {
        Self::check(actions)?;
        if actions.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mariadb = self.is_mariadb_on(&mut conn).await?;
        for action in actions {
            match action {
                SqlAction::DropDatabase { name } => {
                    self.drop_database(&mut conn, name, action).await?;
                    self.forget_owner(&mut conn, ObjectType::Database, name, action)
                        .await?;
                }
                SqlAction::DropRole { name } => {
                    if !self
                        .observe_roles_on(&mut conn, &[(name, None)])
                        .await?
                        .is_empty()
                    {
                        let sql = format!("DROP USER IF EXISTS {}", mysql_account(name));
                        self.execute(&mut conn, &sql, action).await?;
                    }
                    self.forget_owner(&mut conn, ObjectType::Role, name, action)
                        .await?;
                }
                SqlAction::CreateRole {
                    name,
                    marker: Some(marker),
                    ..
                } => {
                    let statements = render(action, mariadb);
                    self.create_marked(
                        &mut conn,
                        ObjectType::Role,
                        name,
                        marker,
                        &statements,
                        action,
                    )
                    .await?;
                }
                SqlAction::CreateDatabase {
                    name,
                    marker: Some(marker),
                    ..
                } => {
                    let statements = render(action, mariadb);
                    self.create_marked(
                        &mut conn,
                        ObjectType::Database,
                        name,
                        marker,
                        &statements,
                        action,
                    )
                    .await?;
                }
                SqlAction::MarkRole { name, marker } => {
                    self.write_owner(&mut conn, ObjectType::Role, name, marker, action)
                        .await?;
                }
                SqlAction::MarkDatabase { name, marker } => {
                    self.write_owner(&mut conn, ObjectType::Database, name, marker, action)
                        .await?;
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
        conn.query_drop(sql).await.map_err(self.apply_err(action))?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn drop_database(
        &self,
        conn: &mut Conn,
        name: &str,
        action: &SqlAction,
    ) -> Result<(), Error> {
        if self.observe_databases_on(conn, &[name]).await?.is_empty() {
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

    /// The statements of `actions` as a script for the `mariadb`/`mysql` client, catalog
    /// statements included (values as quoted literals).
    pub async fn render_script(&self, actions: &[SqlAction]) -> Result<String, Error> {
        Self::check(actions)?;
        let mariadb = match self.mariadb.get() {
            Some(&m) => m,
            None => {
                let mut conn = self.conn().await?;
                self.is_mariadb_on(&mut conn).await?
            }
        };
        let mut script = String::new();
        let mut catalog = false;
        for action in actions {
            let mut statements = Vec::new();
            let marked = match action {
                SqlAction::CreateRole {
                    name,
                    marker: Some(m),
                    ..
                }
                | SqlAction::MarkRole { name, marker: m } => Some((ObjectType::Role, name, m)),
                SqlAction::CreateDatabase {
                    name,
                    marker: Some(m),
                    ..
                }
                | SqlAction::MarkDatabase { name, marker: m } => {
                    Some((ObjectType::Database, name, m))
                }
                _ => None,
            };
            if let Some((object_type, name, marker)) = marked {
                if !catalog {
                    statements.push(CATALOG_DATABASE_DDL.to_owned());
                    statements.push(CATALOG_TABLE_DDL.to_owned());
                    catalog = true;
                }
                statements.push(owner_upsert_literal(object_type, name, marker));
            }
            match action {
                SqlAction::DropDatabase { name } => {
                    statements.push(format!("DROP DATABASE IF EXISTS {}", mysql_ident(name)));
                    statements.push(owner_delete_literal(ObjectType::Database, name));
                }
                SqlAction::DropRole { name } => {
                    statements.push(format!("DROP USER IF EXISTS {}", mysql_account(name)));
                    statements.push(owner_delete_literal(ObjectType::Role, name));
                }
                _ => statements.extend(render(action, mariadb)),
            }
            for sql in statements {
                script.push_str(&sql);
                script.push_str(";\n");
            }
        }
        Ok(script)
    }
}

/// [`OWNER_UPSERT`] with quoted literals, for scripts.
/// `?, ?, …`: `n` placeholders for an `IN` list.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn owner_upsert_literal(object_type: ObjectType, name: &str, marker: &OwnerMarker) -> String {
    format!(
        "INSERT INTO `_dbward`.`owners` (object_type, name, namespace, kind, object_name, uid) \
         VALUES ({}, BINARY {}, {}, {}, {}, {}) \
         ON DUPLICATE KEY UPDATE namespace = VALUES(namespace), kind = VALUES(kind), \
         object_name = VALUES(object_name), uid = VALUES(uid)",
        mysql_literal(object_type.as_str()),
        mysql_literal(name),
        mysql_literal(&marker.namespace),
        mysql_literal(&marker.kind),
        mysql_literal(&marker.name),
        marker
            .uid
            .as_deref()
            .map_or_else(|| "NULL".to_owned(), mysql_literal),
    )
}

/// [`OWNER_DELETE`] with quoted literals, for scripts.
fn owner_delete_literal(object_type: ObjectType, name: &str) -> String {
    format!(
        "DELETE FROM `_dbward`.`owners` WHERE object_type = {} AND name = BINARY {}",
        mysql_literal(object_type.as_str()),
        mysql_literal(name)
    )
}

/// The catalog does not exist (yet): unknown database or table.
fn is_missing_catalog(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1049 || s.code == 1146)
}

/// The TLS options of `mode`, `None` for plain TCP. `prefer` encrypts without checking the
/// certificate, as libpq does.
pub(crate) fn ssl_opts(mode: SslMode, ca_cert: Option<&str>) -> Option<SslOpts> {
    if mode == SslMode::Disable {
        return None;
    }
    // mysql_async builds its rustls config from the process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut ssl = SslOpts::default();
    if let Some(ca) = ca_cert
        && mode != SslMode::Prefer
    {
        ssl = ssl
            .with_root_certs(vec![ca.as_bytes().to_vec().into()])
            .with_disable_built_in_roots(true);
    }
    match (mode, ca_cert) {
        (SslMode::Prefer, _) | (SslMode::Require, None) => {
            ssl = ssl
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true);
        }
        (SslMode::Require | SslMode::VerifyCa, _) => {
            ssl = ssl.with_danger_skip_domain_validation(true);
        }
        _ => {}
    }
    Some(ssl)
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
            ..
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
        | SqlAction::DropRole { .. }
        | SqlAction::MarkRole { .. }
        | SqlAction::MarkDatabase { .. } => Vec::new(),
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
            marker: None,
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

    #[test]
    fn catalog_statements_quote_every_value() {
        let marker = OwnerMarker::new("ns'x", "Kind", "a\\b\n", None);
        assert_eq!(
            owner_upsert_literal(ObjectType::Role, "u'1", &marker),
            "INSERT INTO `_dbward`.`owners` (object_type, name, namespace, kind, object_name, uid) \
             VALUES ('role', BINARY 'u''1', 'ns''x', 'Kind', 'a\\\\b\\n', NULL) \
             ON DUPLICATE KEY UPDATE namespace = VALUES(namespace), kind = VALUES(kind), \
             object_name = VALUES(object_name), uid = VALUES(uid)"
        );
        assert_eq!(
            owner_delete_literal(ObjectType::Database, "d`b"),
            "DELETE FROM `_dbward`.`owners` WHERE object_type = 'database' AND name = BINARY 'd`b'"
        );
        // Marks write no server statement of their own: the catalog does.
        let mark = SqlAction::MarkRole {
            name: "u".into(),
            marker,
        };
        assert!(render(&mark, true).is_empty());
    }
}
