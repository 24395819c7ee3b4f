//! PostgreSQL over `tokio-postgres`.
//!
//! Connections go to the maintenance database `postgres`, or to a managed database for what
//! lives inside it (schema, table and default privileges; `REASSIGN`/`DROP OWNED`). A small pool
//! keeps a few idle connections across databases and never opens more than
//! [`MAX_CONNECTIONS`] at once; a closed connection is dropped at checkout, so a restarted
//! server is picked up by the next call.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::connector::{ConnectionInfo, SslMode, rustls_client_config};
use super::ownership::OwnerMarker;
use super::password::{pg_scram_verifier, pg_verify};
use super::plan::{
    Attribute, DatabaseState, PasswordState, Privilege, PrivilegeKind, PrivilegeMap,
    PrivilegeObject, PrivilegeSet, RoleState, SqlAction,
};
use super::quote::{check_parameter_name, check_pg_name, pg_ident, pg_literal};
use super::{DriverError, Engine, Error, ServerInfo};

/// The database administrative connections go to.
pub const MAINTENANCE_DATABASE: &str = "postgres";
/// Connections open at once, per server.
pub const MAX_CONNECTIONS: usize = 4;
/// Idle connections kept, across databases.
pub const MAX_IDLE: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A PostgreSQL server administered through its connector's credentials.
pub struct PgServer {
    host: String,
    port: u16,
    user: String,
    password: String,
    tls: Option<MakeRustlsConnect>,
    /// `sslmode` `prefer` (or absent): TLS when the server offers it, else plain.
    prefer: bool,
    /// Whether the last connection opened uses TLS.
    last_tls: AtomicBool,
    idle: Mutex<VecDeque<(String, Client)>>,
    permits: Semaphore,
    writes: AtomicU64,
}

/// A pooled connection to one database; returned to the pool on drop unless closed.
struct Conn<'a> {
    server: &'a PgServer,
    database: String,
    client: Option<Client>,
    reused: bool,
    _permit: SemaphorePermit<'a>,
}

impl Conn<'_> {
    fn client(&self) -> &Client {
        // Invariant: `client` is only taken in `drop` and `discard`, which the owner calls last.
        self.client
            .as_ref()
            .expect("connection present until dropped")
    }

    /// Closes the connection instead of returning it to the pool (its session state is unknown).
    fn discard(&mut self) {
        self.client = None;
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && !client.is_closed()
        {
            self.server
                .put_idle(std::mem::take(&mut self.database), client);
        }
    }
}

/// A TLS connector that records whether the handshake ran, i.e. whether the server accepted TLS
/// (with `sslmode=prefer` it may decline, and the connection goes on in plain TCP).
#[derive(Clone)]
struct RecordingTls {
    inner: MakeRustlsConnect,
    used: Arc<AtomicBool>,
}

impl MakeTlsConnect<Socket> for RecordingTls {
    type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
    type TlsConnect = RecordingConnect<<MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect>;
    type Error = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        Ok(RecordingConnect {
            inner: MakeTlsConnect::<Socket>::make_tls_connect(&mut self.inner, domain)?,
            used: self.used.clone(),
        })
    }
}

struct RecordingConnect<T> {
    inner: T,
    used: Arc<AtomicBool>,
}

impl<S, T> TlsConnect<S> for RecordingConnect<T>
where
    T: TlsConnect<S>,
    T::Future: Unpin,
{
    type Stream = T::Stream;
    type Error = T::Error;
    type Future = RecordingFuture<T::Future>;

    fn connect(self, stream: S) -> Self::Future {
        RecordingFuture {
            inner: self.inner.connect(stream),
            used: self.used,
        }
    }
}

struct RecordingFuture<F> {
    inner: F,
    used: Arc<AtomicBool>,
}

impl<F, T, E> Future for RecordingFuture<F>
where
    F: Future<Output = Result<T, E>> + Unpin,
{
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = ready!(Pin::new(&mut self.inner).poll(cx));
        if out.is_ok() {
            self.used.store(true, Ordering::Relaxed);
        }
        Poll::Ready(out)
    }
}

/// Privileges found for (role, database).
type RolePrivileges = (String, String, PrivilegeSet);

/// One statement and the database it must run in (`None`: the maintenance database).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    database: Option<String>,
    sql: String,
}

impl PgServer {
    /// Prepares the server; no I/O.
    pub fn new(info: &ConnectionInfo) -> Result<Self, Error> {
        let mode = info.ssl_mode()?;
        let tls = rustls_client_config(mode, info.ca_cert.as_deref())?.map(MakeRustlsConnect::new);
        Ok(PgServer {
            host: info.host.clone(),
            port: info.port,
            user: info.user.clone(),
            password: info.password.clone(),
            tls,
            prefer: mode == SslMode::Prefer,
            last_tls: AtomicBool::new(false),
            idle: Mutex::new(VecDeque::new()),
            permits: Semaphore::new(MAX_CONNECTIONS),
            writes: AtomicU64::new(0),
        })
    }

    /// Statements executed that changed something.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn unreachable(&self, source: DriverError) -> Error {
        Error::Unreachable {
            engine: Engine::Postgres,
            host: self.host.clone(),
            port: self.port,
            source,
        }
    }

    /// Maps a driver error: a broken or refused connection is [`Error::Unreachable`],
    /// anything else goes through `other`.
    fn classify(
        &self,
        e: tokio_postgres::Error,
        other: impl FnOnce(DriverError) -> Error,
    ) -> Error {
        if is_connection_error(&e) {
            self.unreachable(Box::new(e))
        } else {
            other(Box::new(e))
        }
    }

    fn put_idle(&self, database: String, client: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.push_back((database, client));
        while idle.len() > MAX_IDLE {
            idle.pop_front();
        }
    }

    fn take_idle(&self, database: &str) -> Option<Client> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|(_, c)| !c.is_closed());
        let pos = idle.iter().rposition(|(d, _)| d == database)?;
        idle.remove(pos).map(|(_, c)| c)
    }

    /// Closes our idle connections to `database`; returns how many there were.
    fn evict_idle(&self, database: &str) -> usize {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let before = idle.len();
        idle.retain(|(d, _)| d != database);
        before - idle.len()
    }

    async fn connect(&self, database: &str) -> Result<Client, Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(database)
            .application_name("dbward")
            .connect_timeout(CONNECT_TIMEOUT);
        let rejected = |e: tokio_postgres::Error| {
            if e.as_db_error().is_some() && !is_connection_error(&e) {
                Error::ConnectRejected {
                    engine: Engine::Postgres,
                    host: self.host.clone(),
                    port: self.port,
                    source: Box::new(e),
                }
            } else {
                self.unreachable(Box::new(e))
            }
        };
        let (client, tls) = match &self.tls {
            Some(tls) => {
                // `prefer` falls back to plain TCP only when the server declines TLS.
                config.ssl_mode(if self.prefer {
                    tokio_postgres::config::SslMode::Prefer
                } else {
                    tokio_postgres::config::SslMode::Require
                });
                let used = Arc::new(AtomicBool::new(false));
                let tls = RecordingTls {
                    inner: tls.clone(),
                    used: used.clone(),
                };
                let (client, connection) = config.connect(tls).await.map_err(rejected)?;
                tokio::spawn(connection);
                (client, used.load(Ordering::Relaxed))
            }
            None => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                let (client, connection) = config.connect(NoTls).await.map_err(rejected)?;
                tokio::spawn(connection);
                (client, false)
            }
        };
        self.last_tls.store(tls, Ordering::Relaxed);
        Ok(client)
    }

    async fn conn(&self, database: &str) -> Result<Conn<'_>, Error> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| self.unreachable(Box::new(e)))?;
        let (client, reused) = match self.take_idle(database) {
            Some(client) => (client, true),
            None => (self.connect(database).await?, false),
        };
        Ok(Conn {
            server: self,
            database: database.to_owned(),
            client: Some(client),
            reused,
            _permit: permit,
        })
    }

    /// Runs a read-only query, retrying once on a fresh connection when a pooled one turns
    /// out to be broken.
    async fn read(
        &self,
        database: &str,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let conn = self.conn(database).await?;
            match conn.client().query(sql, params).await {
                Ok(rows) => return Ok(rows),
                Err(e) => {
                    let retry = conn.reused && attempt == 1 && is_connection_error(&e);
                    if !retry {
                        return Err(self.classify(e, |source| Error::Observe {
                            what: what.to_owned(),
                            source,
                        }));
                    }
                }
            }
        }
    }

    /// A read-only query in `database`, for verbs kept in other modules (`sql::pooler`).
    pub(crate) async fn query_in(
        &self,
        database: &str,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        check_pg_name("database", database)?;
        self.read(database, what, sql, params).await
    }

    /// Runs `statements` in one transaction in `database` (rolled back on failure); each
    /// counts as a write once committed. `what` names the change in errors.
    pub(crate) async fn transaction_in(
        &self,
        database: &str,
        what: &str,
        statements: &[String],
    ) -> Result<(), Error> {
        check_pg_name("database", database)?;
        let mut conn = self.conn(database).await?;
        self.transaction(&mut conn, statements, what).await
    }

    /// Probes the server.
    pub async fn probe(&self) -> Result<ServerInfo, Error> {
        let rows = self
            .read(
                MAINTENANCE_DATABASE,
                "server version",
                "SELECT current_setting('server_version')",
                &[],
            )
            .await?;
        let version = rows
            .first()
            .map(|r| r.try_get::<_, String>(0))
            .transpose()
            .map_err(|e| observe_err("server version", e))?
            .unwrap_or_default();
        Ok(ServerInfo {
            version,
            tls: self.last_tls.load(Ordering::Relaxed),
        })
    }

    /// Observes databases by name.
    pub async fn observe_databases(
        &self,
        names: &[&str],
    ) -> Result<BTreeMap<String, DatabaseState>, Error> {
        for name in names {
            check_pg_name("database", name)?;
        }
        let rows = self
            .read(
                MAINTENANCE_DATABASE,
                "databases",
                "SELECT datname::text, pg_catalog.pg_get_userbyid(datdba)::text, \
                 datcollate::text, datctype::text, \
                 pg_catalog.shobj_description(oid, 'pg_database') \
                 FROM pg_catalog.pg_database WHERE datname = ANY($1::text[]::name[])",
                &[&names],
            )
            .await?;
        let mut out = BTreeMap::new();
        for row in rows {
            let get = |i| {
                row.try_get::<_, String>(i)
                    .map_err(|e| observe_err("databases", e))
            };
            let comment: Option<String> =
                row.try_get(4).map_err(|e| observe_err("databases", e))?;
            out.insert(
                get(0)?,
                DatabaseState {
                    owner: Some(get(1)?),
                    lc_collate: get(2)?,
                    lc_ctype: get(3)?,
                    marker: comment.as_deref().and_then(OwnerMarker::decode),
                },
            );
        }
        Ok(out)
    }

    /// Observes roles, checking candidate passwords against `pg_authid` (readable by
    /// superusers; otherwise the password state is [`PasswordState::Unknown`]).
    pub async fn observe_roles(
        &self,
        roles: &[(&str, Option<&str>)],
    ) -> Result<BTreeMap<String, RoleState>, Error> {
        const COLUMNS: &str = "r.rolname::text, r.rolsuper, r.rolinherit, r.rolcanlogin, \
            r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls, \
            ARRAY(SELECT g.rolname::text FROM pg_catalog.pg_auth_members m \
                  JOIN pg_catalog.pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid), \
            COALESCE((SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s \
                      WHERE s.setrole = r.oid AND s.setdatabase = 0), '{}'::text[]), \
            pg_catalog.shobj_description(r.oid, 'pg_authid')";
        for (name, _) in roles {
            check_pg_name("role", name)?;
        }
        let names: Vec<&str> = roles.iter().map(|(n, _)| *n).collect();
        let with_passwords = format!(
            "SELECT {COLUMNS}, a.rolpassword FROM pg_catalog.pg_roles r \
             LEFT JOIN pg_catalog.pg_authid a ON a.oid = r.oid \
             WHERE r.rolname = ANY($1::text[]::name[])"
        );
        let (rows, readable) = match self
            .read(MAINTENANCE_DATABASE, "roles", &with_passwords, &[&names])
            .await
        {
            Ok(rows) => (rows, true),
            Err(Error::Observe { source, .. }) if is_permission_denied(&*source) => {
                let without = format!(
                    "SELECT {COLUMNS}, NULL::text FROM pg_catalog.pg_roles r \
                     WHERE r.rolname = ANY($1::text[]::name[])"
                );
                let rows = self
                    .read(MAINTENANCE_DATABASE, "roles", &without, &[&names])
                    .await?;
                (rows, false)
            }
            Err(e) => return Err(e),
        };
        let candidates: HashMap<&str, Option<&str>> = roles.iter().copied().collect();
        let mut out = BTreeMap::new();
        let mut checks = Vec::new();
        for row in rows {
            let e = |e| observe_err("roles", e);
            let name: String = row.try_get(0).map_err(e)?;
            let flags = [
                (1, Attribute::Superuser),
                (2, Attribute::Inherit),
                (3, Attribute::Login),
                (4, Attribute::Createrole),
                (5, Attribute::Createdb),
                (6, Attribute::Replication),
                (7, Attribute::Bypassrls),
            ];
            let mut attributes = BTreeSet::new();
            for (i, attr) in flags {
                if row.try_get::<_, bool>(i).map_err(e)? {
                    attributes.insert(attr);
                }
            }
            let in_roles: Vec<String> = row.try_get(8).map_err(e)?;
            let settings: Vec<String> = row.try_get(9).map_err(e)?;
            let comment: Option<String> = row.try_get(10).map_err(e)?;
            let stored: Option<String> = row.try_get(11).map_err(e)?;
            let parameters = settings
                .iter()
                .filter_map(|s| s.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            // Checked below, in bulk; Unknown stays when there is nothing to check against.
            if let Some(candidate) = candidates.get(name.as_str()).copied().flatten()
                && readable
            {
                checks.push((name.clone(), stored, candidate.to_owned()));
            }
            let password = PasswordState::Unknown;
            out.insert(
                name,
                RoleState {
                    attributes,
                    in_roles: in_roles.into_iter().collect(),
                    parameters,
                    password,
                    marker: comment.as_deref().and_then(OwnerMarker::decode),
                },
            );
        }
        for (name, state) in verify_passwords(checks).await {
            if let Some(role) = out.get_mut(&name) {
                role.password = state;
            }
        }
        Ok(out)
    }

    /// Observes privileges of `roles` in every database where they hold any (found through
    /// `pg_shdepend` and `pg_database.datacl`) and in `databases`.
    pub async fn observe_privileges(
        &self,
        roles: &[&str],
        databases: &[&str],
    ) -> Result<PrivilegeMap, Error> {
        for role in roles {
            check_pg_name("role", role)?;
        }
        for db in databases {
            check_pg_name("database", db)?;
        }
        let what = "privileges";
        // Where the roles hold anything: objects inside a database (`pg_shdepend.dbid`), and
        // grants on a database itself (shared dependencies of `pg_database` entries). Both
        // are index lookups on the roles asked about, whatever else the server holds.
        let rows = self
            .read(
                MAINTENANCE_DATABASE,
                what,
                "SELECT r.rolname::text, d.datname::text, NULL::text \
                   FROM pg_catalog.pg_roles r \
                   JOIN pg_catalog.pg_shdepend s \
                     ON s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = r.oid \
                   JOIN pg_catalog.pg_database d ON d.oid = s.dbid \
                  WHERE r.rolname = ANY($1::text[]::name[]) \
                 UNION ALL \
                 SELECT r.rolname::text, d.datname::text, a.privilege_type \
                   FROM pg_catalog.pg_roles r \
                   JOIN pg_catalog.pg_shdepend s \
                     ON s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = r.oid \
                    AND s.classid = 'pg_catalog.pg_database'::regclass AND s.deptype = 'a' \
                   JOIN pg_catalog.pg_database d ON d.oid = s.objid \
                  CROSS JOIN LATERAL unnest(d.datacl) item \
              CROSS JOIN LATERAL pg_catalog.aclexplode(ARRAY[item]) a \
                  WHERE r.rolname = ANY($1::text[]::name[]) AND a.grantee = r.oid \
                    AND a.grantee <> d.datdba",
                &[&roles],
            )
            .await?;
        let mut held = Vec::new();
        let mut names: BTreeSet<&str> = databases.iter().copied().collect();
        for row in &rows {
            let role: String = row.try_get(0).map_err(|e| observe_err(what, e))?;
            let db: String = row.try_get(1).map_err(|e| observe_err(what, e))?;
            let privilege: Option<String> = row.try_get(2).map_err(|e| observe_err(what, e))?;
            held.push((role, db, privilege));
        }
        names.extend(held.iter().map(|(_, db, _)| db.as_str()));
        let names: Vec<&str> = names.into_iter().collect();
        let dbs = self
            .read(
                MAINTENANCE_DATABASE,
                what,
                "SELECT datname::text, pg_catalog.pg_get_userbyid(datdba)::text \
                 FROM pg_catalog.pg_database \
                 WHERE datallowconn AND datname = ANY($1::text[]::name[])",
                &[&names],
            )
            .await?;
        let mut owners: BTreeMap<String, String> = BTreeMap::new();
        for row in dbs {
            owners.insert(
                row.try_get(0).map_err(|e| observe_err(what, e))?,
                row.try_get(1).map_err(|e| observe_err(what, e))?,
            );
        }
        let existing: Vec<String> = self
            .read(
                MAINTENANCE_DATABASE,
                what,
                "SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname = ANY($1::text[]::name[])",
                &[&roles],
            )
            .await?
            .iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<Result<_, _>>()
            .map_err(|e| observe_err(what, e))?;
        let mut out: PrivilegeMap = BTreeMap::new();
        // Databases to look into, with the roles to look for there.
        let mut visit: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for db in databases {
            if owners.contains_key(*db) {
                visit
                    .entry((*db).to_owned())
                    .or_default()
                    .extend(existing.iter().cloned());
            }
        }
        for (role, db, privilege) in held {
            if !owners.contains_key(&db) {
                continue;
            }
            visit.entry(db.clone()).or_default().insert(role.clone());
            if let Some(kind) = privilege.as_deref().and_then(PrivilegeKind::from_pg) {
                let set = out.entry(role).or_default().entry(db).or_default();
                let p = Privilege::new(PrivilegeObject::Database, kind);
                set.all.insert(p);
                set.any.insert(p);
            }
        }
        // A database's owner holds the database-level, public-schema and default privileges
        // implicitly.
        for (db, roles_here) in &visit {
            for role in roles_here {
                let set = out
                    .entry(role.clone())
                    .or_default()
                    .entry(db.clone())
                    .or_default();
                if owners.get(db) == Some(role) {
                    set.all.extend(implicit_owner_privileges());
                }
            }
        }
        // Owned items: a closure over borrowed ones makes this future's `Send` unprovable in
        // generic callers (the controllers spawn it).
        let results: Vec<Result<Vec<RolePrivileges>, Error>> =
            stream::iter(visit.clone())
                .map(|(db, roles_here)| async move {
                    self.observe_privileges_in(&db, &roles_here).await
                })
                .buffer_unordered(MAX_CONNECTIONS)
                .collect()
                .await;
        for result in results {
            for (role, db, found) in result? {
                let set = out.entry(role).or_default().entry(db).or_default();
                set.all.extend(found.all);
                set.any.extend(found.any);
            }
        }
        Ok(out)
    }

    /// Privileges inside one database: on schema `public`, on all its tables and sequences,
    /// and default privileges of the database's owner there.
    async fn observe_privileges_in(
        &self,
        database: &str,
        roles: &BTreeSet<String>,
    ) -> Result<Vec<RolePrivileges>, Error> {
        const RELKINDS: &str = "('r', 'p', 'v', 'm', 'f', 'S')";
        // ACLs are exploded one item at a time (`unnest`, then `aclexplode` of a one-item
        // array): `aclexplode` of a whole ACL detoasts it again for every row it returns, so
        // on a schema granted to thousands of roles one role's lookup cost grew with the
        // square of the ACL's length (35 ms at 1,500 roles, against 3.6 ms this way).
        let sql = format!(
            "SELECT r.rolname::text, 'schema', a.privilege_type, 1::bigint \
               FROM pg_catalog.pg_namespace n \
              CROSS JOIN LATERAL unnest(n.nspacl) item \
              CROSS JOIN LATERAL pg_catalog.aclexplode(ARRAY[item]) a \
               JOIN pg_catalog.pg_roles r ON r.oid = a.grantee \
              WHERE n.nspname = 'public' AND r.rolname = ANY($1::text[]::name[]) \
                AND a.grantee <> n.nspowner \
             UNION ALL \
             SELECT r.rolname::text, CASE WHEN c.relkind = 'S' THEN 'sequences' ELSE 'tables' END, \
                    a.privilege_type, count(*) \
               FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public' \
              CROSS JOIN LATERAL unnest(c.relacl) item \
              CROSS JOIN LATERAL pg_catalog.aclexplode(ARRAY[item]) a \
               JOIN pg_catalog.pg_roles r ON r.oid = a.grantee \
              WHERE c.relkind IN {RELKINDS} AND r.rolname = ANY($1::text[]::name[]) \
                AND a.grantee <> c.relowner \
              GROUP BY 1, 2, 3 \
             UNION ALL \
             SELECT r.rolname::text, CASE WHEN c.relkind = 'S' THEN 'sequences' ELSE 'tables' END, \
                    '#total', count(*) \
               FROM pg_catalog.pg_roles r \
              CROSS JOIN pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public' \
              WHERE c.relkind IN {RELKINDS} AND r.rolname = ANY($1::text[]::name[]) \
                AND c.relowner <> r.oid \
              GROUP BY 1, 2 \
             UNION ALL \
             SELECT r.rolname::text, \
                    CASE d.defaclobjtype WHEN 'S' THEN 'default_sequences' ELSE 'default_tables' END, \
                    a.privilege_type, 1 \
               FROM pg_catalog.pg_default_acl d \
               JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace AND n.nspname = 'public' \
              CROSS JOIN LATERAL unnest(d.defaclacl) item \
              CROSS JOIN LATERAL pg_catalog.aclexplode(ARRAY[item]) a \
               JOIN pg_catalog.pg_roles r ON r.oid = a.grantee \
              WHERE d.defaclobjtype IN ('r', 'S') AND r.rolname = ANY($1::text[]::name[]) \
                AND a.grantee <> d.defaclrole \
                AND d.defaclrole = (SELECT datdba FROM pg_catalog.pg_database \
                                     WHERE datname = current_database())"
        );
        let names: Vec<&str> = roles.iter().map(String::as_str).collect();
        let what = format!("privileges in database {database:?}");
        let rows = self.read(database, &what, &sql, &[&names]).await?;
        // role → class → (privilege → count), and totals per class.
        let mut counts: BTreeMap<String, BTreeMap<String, BTreeMap<String, i64>>> = BTreeMap::new();
        for row in rows {
            let role: String = row.try_get(0).map_err(|e| observe_err(&what, e))?;
            let class: String = row.try_get(1).map_err(|e| observe_err(&what, e))?;
            let privilege: String = row.try_get(2).map_err(|e| observe_err(&what, e))?;
            let count: i64 = row.try_get(3).map_err(|e| observe_err(&what, e))?;
            *counts
                .entry(role)
                .or_default()
                .entry(class)
                .or_default()
                .entry(privilege)
                .or_default() += count;
        }
        let mut out = Vec::new();
        for role in roles {
            let mut set = PrivilegeSet::default();
            let classes = counts.remove(role).unwrap_or_default();
            for (class, object, kinds) in [
                ("schema", PrivilegeObject::PublicSchema, &SCHEMA_KINDS[..]),
                ("tables", PrivilegeObject::AllTables, &TABLE_KINDS[..]),
                (
                    "sequences",
                    PrivilegeObject::AllSequences,
                    &SEQUENCE_KINDS[..],
                ),
                (
                    "default_tables",
                    PrivilegeObject::DefaultTables,
                    &TABLE_KINDS[..],
                ),
                (
                    "default_sequences",
                    PrivilegeObject::DefaultSequences,
                    &SEQUENCE_KINDS[..],
                ),
            ] {
                let empty = BTreeMap::new();
                let found = classes.get(class).unwrap_or(&empty);
                let many = matches!(
                    object,
                    PrivilegeObject::AllTables | PrivilegeObject::AllSequences
                );
                let total = found.get("#total").copied().unwrap_or(0);
                for &kind in kinds {
                    let count = found.get(kind.keyword()).copied().unwrap_or(0);
                    let p = Privilege::new(object, kind);
                    if count > 0 {
                        set.any.insert(p);
                    }
                    // "All tables" holds vacuously when there are none.
                    if (many && count >= total) || (!many && count > 0) {
                        set.all.insert(p);
                    }
                }
            }
            out.push((role.clone(), database.to_owned(), set));
        }
        Ok(out)
    }

    /// The owner of each database named, for `ALTER DEFAULT PRIVILEGES FOR ROLE`.
    async fn database_owners(
        &self,
        actions: &[SqlAction],
    ) -> Result<BTreeMap<String, String>, Error> {
        let mut names: Vec<&str> = actions
            .iter()
            .filter_map(|a| match a {
                SqlAction::GrantPrivileges { database, .. }
                | SqlAction::RevokePrivileges { database, .. } => Some(database.as_str()),
                _ => None,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        Ok(self
            .observe_databases(&names)
            .await?
            .into_iter()
            .filter_map(|(name, state)| state.owner.map(|o| (name, o)))
            .collect())
    }

    /// Checks every name of every action before anything is executed.
    fn check(actions: &[SqlAction]) -> Result<(), Error> {
        for action in actions {
            match action {
                SqlAction::CreateDatabase { name, owner, .. } => {
                    check_pg_name("database", name)?;
                    if let Some(owner) = owner {
                        check_pg_name("role", owner)?;
                    }
                }
                SqlAction::SetDatabaseOwner { name, owner } => {
                    check_pg_name("database", name)?;
                    check_pg_name("role", owner)?;
                }
                SqlAction::DropDatabase { name } | SqlAction::MarkDatabase { name, .. } => {
                    check_pg_name("database", name)?
                }
                SqlAction::CreateRole { name, .. }
                | SqlAction::MarkRole { name, .. }
                | SqlAction::AlterRoleAttributes { name, .. }
                | SqlAction::SetPassword { name, .. }
                | SqlAction::DropRole { name } => check_pg_name("role", name)?,
                SqlAction::GrantMembership { role, group }
                | SqlAction::RevokeMembership { role, group } => {
                    check_pg_name("role", role)?;
                    check_pg_name("role", group)?;
                }
                SqlAction::SetParameter { role, key, .. }
                | SqlAction::ResetParameter { role, key } => {
                    check_pg_name("role", role)?;
                    check_parameter_name(key)?;
                }
                SqlAction::GrantPrivileges { role, database, .. }
                | SqlAction::RevokePrivileges { role, database, .. } => {
                    check_pg_name("role", role)?;
                    check_pg_name("database", database)?;
                }
            }
        }
        Ok(())
    }

    /// Executes actions in order (see [`super::Server::apply`]).
    pub async fn apply(&self, actions: &[SqlAction]) -> Result<(), Error> {
        Self::check(actions)?;
        let owners = self.database_owners(actions).await?;
        let mut current: Option<Conn<'_>> = None;
        for action in actions {
            match action {
                SqlAction::DropDatabase { name } => {
                    current = None;
                    self.drop_database(name, action).await?;
                }
                SqlAction::DropRole { name } => {
                    current = None;
                    self.drop_role(name, action).await?;
                }
                SqlAction::CreateRole {
                    marker: Some(_), ..
                } => {
                    // The role and its marker in one transaction: never one without the other.
                    let statements: Vec<String> = render(action, &owners)?
                        .into_iter()
                        .map(|s| s.sql)
                        .collect();
                    let conn = self.conn_at(&mut current, MAINTENANCE_DATABASE).await?;
                    self.transaction(conn, &statements, &action.to_string())
                        .await?;
                }
                SqlAction::CreateDatabase {
                    name,
                    marker: Some(_),
                    ..
                } => {
                    // CREATE DATABASE cannot run in a transaction: comment right after, and
                    // drop the new (empty) database again when that fails.
                    let statements = render(action, &owners)?;
                    let conn = self.conn_at(&mut current, MAINTENANCE_DATABASE).await?;
                    let (create, comment) = match statements.as_slice() {
                        [create, comment] => (&create.sql, &comment.sql),
                        _ => unreachable!("CREATE DATABASE and COMMENT"),
                    };
                    self.execute(conn, create, action).await?;
                    if let Err(e) = self.execute(conn, comment, action).await {
                        let undo = format!("DROP DATABASE IF EXISTS {}", pg_ident(name));
                        if conn.client().batch_execute(&undo).await.is_ok() {
                            self.writes.fetch_add(1, Ordering::Relaxed);
                        }
                        return Err(e);
                    }
                }
                _ => {
                    for statement in render(action, &owners)? {
                        let database = statement
                            .database
                            .as_deref()
                            .unwrap_or(MAINTENANCE_DATABASE);
                        let conn = self.conn_at(&mut current, database).await?;
                        self.execute(conn, &statement.sql, action).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The connection `current` holds when it is to `database`, else a new one (the previous
    /// one, and its permit, released first).
    async fn conn_at<'s, 'c>(
        &'s self,
        current: &'c mut Option<Conn<'s>>,
        database: &str,
    ) -> Result<&'c mut Conn<'s>, Error> {
        if current.as_ref().map(|c| c.database.as_str()) != Some(database) {
            drop(current.take());
            *current = Some(self.conn(database).await?);
        }
        Ok(current.as_mut().expect("just connected"))
    }

    /// Runs `statements` in one transaction on `conn`; rolls back on failure (and discards the
    /// connection when even that fails). Each statement counts as a write once committed.
    /// `what` names the change in errors.
    async fn transaction(
        &self,
        conn: &mut Conn<'_>,
        statements: &[String],
        what: &str,
    ) -> Result<(), Error> {
        let mut batch = String::from("BEGIN");
        for sql in statements {
            batch.push_str(";\n");
            batch.push_str(sql);
        }
        batch.push_str(";\nCOMMIT");
        if let Err(e) = conn.client().batch_execute(&batch).await {
            if conn.client().batch_execute("ROLLBACK").await.is_err() {
                conn.discard();
            }
            return Err(self.classify(e, |source| Error::Apply {
                action: what.to_owned(),
                source,
            }));
        }
        self.writes
            .fetch_add(statements.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn execute(&self, conn: &Conn<'_>, sql: &str, action: &SqlAction) -> Result<(), Error> {
        conn.client().batch_execute(sql).await.map_err(|e| {
            self.classify(e, |source| Error::Apply {
                action: action.to_string(),
                source,
            })
        })?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn drop_database(&self, name: &str, action: &SqlAction) -> Result<(), Error> {
        if self.observe_databases(&[name]).await?.is_empty() {
            return Ok(());
        }
        // Our own idle connections to it must not count, nor block the drop; their backends
        // exit shortly after the connections close.
        let evicted = self.evict_idle(name);
        let mut connections = self.connections_to(name).await?;
        for _ in 0..if evicted > 0 { 40 } else { 0 } {
            if connections == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            connections = self.connections_to(name).await?;
        }
        if connections > 0 {
            return Err(Error::DatabaseInUse {
                database: name.to_owned(),
                connections,
            });
        }
        let conn = self.conn(MAINTENANCE_DATABASE).await?;
        let sql = format!("DROP DATABASE IF EXISTS {}", pg_ident(name));
        match conn.client().batch_execute(&sql).await {
            Ok(()) => {
                self.writes.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                drop(conn);
                Err(Error::DatabaseInUse {
                    database: name.to_owned(),
                    connections: self.connections_to(name).await?.max(1),
                })
            }
            Err(e) => Err(self.classify(e, |source| Error::Apply {
                action: action.to_string(),
                source,
            })),
        }
    }

    async fn connections_to(&self, name: &str) -> Result<u64, Error> {
        let rows = self
            .read(
                MAINTENANCE_DATABASE,
                "connections",
                "SELECT count(*) FROM pg_catalog.pg_stat_activity \
                 WHERE datname::text = $1 AND pid <> pg_catalog.pg_backend_pid()",
                &[&name],
            )
            .await?;
        let count: i64 = rows
            .first()
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| observe_err("connections", e))?
            .unwrap_or(0);
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Drops a role safely: in every database where it owns objects or holds privileges,
    /// `REASSIGN OWNED BY role TO CURRENT_USER` (the connector's administrator keeps the data)
    /// then `DROP OWNED BY role` (which, after the reassignment, only revokes its privileges);
    /// then `DROP ROLE`. Databases it owns are reassigned to the administrator as well.
    async fn drop_role(&self, name: &str, action: &SqlAction) -> Result<(), Error> {
        let rows = self
            .read(
                MAINTENANCE_DATABASE,
                "role dependencies",
                "SELECT DISTINCT COALESCE(d.datname::text, '') \
                   FROM pg_catalog.pg_roles r \
                   JOIN pg_catalog.pg_shdepend s \
                     ON s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = r.oid \
                   LEFT JOIN pg_catalog.pg_database d ON d.oid = s.dbid \
                  WHERE r.rolname = $1::text::name \
                 UNION ALL SELECT '#exists' FROM pg_catalog.pg_roles WHERE rolname = $1::text::name",
                &[&name],
            )
            .await?;
        let mut exists = false;
        let mut databases = BTreeSet::new();
        for row in rows {
            let db: String = row
                .try_get(0)
                .map_err(|e| observe_err("role dependencies", e))?;
            match db.as_str() {
                "#exists" => exists = true,
                // Shared dependencies (databases it owns, grants on databases).
                "" => {
                    databases.insert(MAINTENANCE_DATABASE.to_owned());
                }
                _ => {
                    databases.insert(db);
                }
            }
        }
        if !exists {
            return Ok(());
        }
        let role = pg_ident(name);
        for db in &databases {
            let conn = self.conn(db).await?;
            self.execute(
                &conn,
                &format!("REASSIGN OWNED BY {role} TO CURRENT_USER"),
                action,
            )
            .await?;
            self.execute(&conn, &format!("DROP OWNED BY {role}"), action)
                .await?;
        }
        let conn = self.conn(MAINTENANCE_DATABASE).await?;
        self.execute(&conn, &format!("DROP ROLE IF EXISTS {role}"), action)
            .await
    }

    /// The statements of `actions` as a `psql -f` script (with `\connect` between databases).
    pub async fn render_script(&self, actions: &[SqlAction]) -> Result<String, Error> {
        Self::check(actions)?;
        let owners = self.database_owners(actions).await?;
        let mut script = String::new();
        let mut current = MAINTENANCE_DATABASE.to_owned();
        for action in actions {
            let statements = match action {
                SqlAction::DropDatabase { name } => vec![Statement {
                    database: None,
                    sql: format!("DROP DATABASE IF EXISTS {}", pg_ident(name)),
                }],
                SqlAction::DropRole { name } => vec![Statement {
                    database: None,
                    sql: format!("DROP ROLE IF EXISTS {}", pg_ident(name)),
                }],
                // The script keeps a role and its marker in one transaction, as `apply` does.
                SqlAction::CreateRole {
                    marker: Some(_), ..
                } => {
                    let admin = |sql: &str| Statement {
                        database: None,
                        sql: sql.to_owned(),
                    };
                    let mut out = vec![admin("BEGIN")];
                    out.extend(render(action, &owners)?);
                    out.push(admin("COMMIT"));
                    out
                }
                _ => render(action, &owners)?,
            };
            for statement in statements {
                let db = statement
                    .database
                    .unwrap_or_else(|| MAINTENANCE_DATABASE.to_owned());
                if db != current {
                    script.push_str(&format!("\\connect {}\n", psql_meta_quote(&db)));
                    current = db;
                }
                script.push_str(&statement.sql);
                script.push_str(";\n");
            }
        }
        Ok(script)
    }
}

const SCHEMA_KINDS: [PrivilegeKind; 2] = [PrivilegeKind::Usage, PrivilegeKind::Create];
const TABLE_KINDS: [PrivilegeKind; 7] = [
    PrivilegeKind::Select,
    PrivilegeKind::Insert,
    PrivilegeKind::Update,
    PrivilegeKind::Delete,
    PrivilegeKind::Truncate,
    PrivilegeKind::References,
    PrivilegeKind::Trigger,
];
const SEQUENCE_KINDS: [PrivilegeKind; 3] = [
    PrivilegeKind::Select,
    PrivilegeKind::Usage,
    PrivilegeKind::Update,
];

fn implicit_owner_privileges() -> Vec<Privilege> {
    let mut out = Vec::new();
    for kind in [
        PrivilegeKind::Connect,
        PrivilegeKind::Create,
        PrivilegeKind::Temporary,
    ] {
        out.push(Privilege::new(PrivilegeObject::Database, kind));
    }
    for kind in SCHEMA_KINDS {
        out.push(Privilege::new(PrivilegeObject::PublicSchema, kind));
    }
    for kind in TABLE_KINDS {
        out.push(Privilege::new(PrivilegeObject::DefaultTables, kind));
    }
    for kind in SEQUENCE_KINDS {
        out.push(Privilege::new(PrivilegeObject::DefaultSequences, kind));
    }
    out
}

/// Quotes an argument of a psql meta-command (`\connect 'it''s'`).
fn psql_meta_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn observe_err(what: &str, e: tokio_postgres::Error) -> Error {
    Error::Observe {
        what: what.to_owned(),
        source: Box::new(e),
    }
}

/// A broken, refused or shut-down connection, as opposed to an SQL error.
fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::CONNECTION_FAILURE,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code),
        // No SQLSTATE: I/O, TLS, timeout or protocol trouble.
        None => true,
    }
}

fn is_permission_denied(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code())
        == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
}

/// Verifies candidate passwords off the async threads (each check is a PBKDF2 of the stored
/// iteration count), split over two blocking tasks when there are many.
async fn verify_passwords(
    checks: Vec<(String, Option<String>, String)>,
) -> Vec<(String, PasswordState)> {
    let verify = |chunk: Vec<(String, Option<String>, String)>| {
        chunk
            .into_iter()
            .map(|(name, stored, candidate)| {
                let state = pg_verify(stored.as_deref(), &candidate);
                (name, state)
            })
            .collect::<Vec<_>>()
    };
    if checks.len() < 8 {
        return verify(checks);
    }
    let mut checks = checks;
    let second = checks.split_off(checks.len() / 2);
    let (a, b) = tokio::join!(
        tokio::task::spawn_blocking(move || verify(checks)),
        tokio::task::spawn_blocking(move || verify(second)),
    );
    // A panicked verification leaves those roles' passwords Unknown (and so re-set).
    a.unwrap_or_default()
        .into_iter()
        .chain(b.unwrap_or_default())
        .collect()
}

/// The statements of one action (drops are handled by the server, as they observe first).
fn render(action: &SqlAction, owners: &BTreeMap<String, String>) -> Result<Vec<Statement>, Error> {
    let admin = |sql: String| Statement {
        database: None,
        sql,
    };
    Ok(match action {
        SqlAction::CreateDatabase {
            name,
            owner,
            lc_collate,
            lc_ctype,
            marker,
        } => {
            let mut sql = format!("CREATE DATABASE {}", pg_ident(name));
            if let Some(owner) = owner {
                sql.push_str(&format!(" OWNER {}", pg_ident(owner)));
            }
            if lc_collate.is_some() || lc_ctype.is_some() {
                sql.push_str(" TEMPLATE template0");
            }
            if let Some(c) = lc_collate {
                sql.push_str(&format!(" LC_COLLATE {}", pg_literal(c)));
            }
            if let Some(c) = lc_ctype {
                sql.push_str(&format!(" LC_CTYPE {}", pg_literal(c)));
            }
            let mut out = vec![admin(sql)];
            out.extend(
                marker
                    .as_ref()
                    .map(|m| admin(comment_on("DATABASE", name, m))),
            );
            out
        }
        SqlAction::MarkDatabase { name, marker } => {
            vec![admin(comment_on("DATABASE", name, marker))]
        }
        SqlAction::MarkRole { name, marker } => vec![admin(comment_on("ROLE", name, marker))],
        SqlAction::SetDatabaseOwner { name, owner } => vec![admin(format!(
            "ALTER DATABASE {} OWNER TO {}",
            pg_ident(name),
            pg_ident(owner)
        ))],
        SqlAction::CreateRole {
            name,
            attributes,
            password,
            marker,
        } => {
            let mut sql = format!("CREATE ROLE {} WITH", pg_ident(name));
            for attr in Attribute::ALL {
                sql.push(' ');
                sql.push_str(if attributes.contains(&attr) {
                    attr.pg_keyword()
                } else {
                    attr.pg_negated_keyword()
                });
            }
            if let Some(password) = password {
                let verifier = pg_scram_verifier(password.expose());
                sql.push_str(&format!(" PASSWORD {}", pg_literal(&verifier)));
            }
            let mut out = vec![admin(sql)];
            out.extend(marker.as_ref().map(|m| admin(comment_on("ROLE", name, m))));
            out
        }
        SqlAction::AlterRoleAttributes { name, from, to } => {
            let mut sql = format!("ALTER ROLE {} WITH", pg_ident(name));
            for attr in to.difference(from) {
                sql.push(' ');
                sql.push_str(attr.pg_keyword());
            }
            for attr in from.difference(to) {
                sql.push(' ');
                sql.push_str(attr.pg_negated_keyword());
            }
            if from == to {
                Vec::new()
            } else {
                vec![admin(sql)]
            }
        }
        SqlAction::SetPassword { name, password } => {
            let verifier = pg_scram_verifier(password.expose());
            vec![admin(format!(
                "ALTER ROLE {} PASSWORD {}",
                pg_ident(name),
                pg_literal(&verifier)
            ))]
        }
        SqlAction::GrantMembership { role, group } => vec![admin(format!(
            "GRANT {} TO {}",
            pg_ident(group),
            pg_ident(role)
        ))],
        SqlAction::RevokeMembership { role, group } => vec![admin(format!(
            "REVOKE {} FROM {}",
            pg_ident(group),
            pg_ident(role)
        ))],
        SqlAction::SetParameter { role, key, value } => vec![admin(format!(
            "ALTER ROLE {} SET {} = {}",
            pg_ident(role),
            parameter_ident(key),
            pg_literal(value)
        ))],
        SqlAction::ResetParameter { role, key } => vec![admin(format!(
            "ALTER ROLE {} RESET {}",
            pg_ident(role),
            parameter_ident(key)
        ))],
        SqlAction::GrantPrivileges {
            role,
            database,
            privileges,
        } => render_privileges(true, role, database, privileges, owners)?,
        SqlAction::RevokePrivileges {
            role,
            database,
            privileges,
        } => render_privileges(false, role, database, privileges, owners)?,
        SqlAction::DropDatabase { .. } | SqlAction::DropRole { .. } => Vec::new(),
    })
}

/// `COMMENT ON ROLE|DATABASE name IS '<marker>'`: the marker is a quoted literal (DDL takes no
/// parameters).
fn comment_on(what: &str, name: &str, marker: &OwnerMarker) -> String {
    format!(
        "COMMENT ON {what} {} IS {}",
        pg_ident(name),
        pg_literal(&marker.encode())
    )
}

/// `myapp.setting` → `"myapp"."setting"`.
fn parameter_ident(key: &str) -> String {
    key.split('.').map(pg_ident).collect::<Vec<_>>().join(".")
}

fn render_privileges(
    grant: bool,
    role: &str,
    database: &str,
    privileges: &BTreeSet<Privilege>,
    owners: &BTreeMap<String, String>,
) -> Result<Vec<Statement>, Error> {
    let mut by_object: BTreeMap<PrivilegeObject, Vec<&'static str>> = BTreeMap::new();
    for p in privileges {
        by_object
            .entry(p.object)
            .or_default()
            .push(p.kind.keyword());
    }
    let (verb, prep) = if grant {
        ("GRANT", "TO")
    } else {
        ("REVOKE", "FROM")
    };
    let grantee = pg_ident(role);
    let db = pg_ident(database);
    let mut out = Vec::new();
    for (object, kinds) in by_object {
        let kinds = kinds.join(", ");
        let inside = |sql: String| Statement {
            database: Some(database.to_owned()),
            sql,
        };
        let default_for = || {
            owners
                .get(database)
                .map(|o| pg_ident(o))
                .ok_or_else(|| Error::Apply {
                    action: format!(
                        "{} privileges on database {database:?}",
                        verb.to_lowercase()
                    ),
                    source: "database does not exist".into(),
                })
        };
        out.push(match object {
            // Runs in the database itself, so that a privilege action uses one connection.
            PrivilegeObject::Database => {
                inside(format!("{verb} {kinds} ON DATABASE {db} {prep} {grantee}"))
            }
            PrivilegeObject::PublicSchema => {
                inside(format!("{verb} {kinds} ON SCHEMA public {prep} {grantee}"))
            }
            PrivilegeObject::AllTables => inside(format!(
                "{verb} {kinds} ON ALL TABLES IN SCHEMA public {prep} {grantee}"
            )),
            PrivilegeObject::AllSequences => inside(format!(
                "{verb} {kinds} ON ALL SEQUENCES IN SCHEMA public {prep} {grantee}"
            )),
            PrivilegeObject::DefaultTables => inside(format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public {verb} {kinds} ON TABLES {prep} {grantee}",
                default_for()?
            )),
            PrivilegeObject::DefaultSequences => inside(format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public {verb} {kinds} ON SEQUENCES {prep} {grantee}",
                default_for()?
            )),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::plan::{Password, PrivilegeLevel, required_privileges};

    #[test]
    fn renders_quoted_statements() {
        let owners = BTreeMap::from([("d\"b".to_string(), "own'er".to_string())]);
        let create = SqlAction::CreateRole {
            name: r#"x"; DROP TABLE t; --"#.into(),
            attributes: BTreeSet::from([Attribute::Login, Attribute::Inherit]),
            password: Some(Password::new("pw'x")),
            marker: None,
        };
        let stmts = render(&create, &owners).unwrap();
        assert_eq!(stmts.len(), 1);
        assert!(
            stmts[0].sql.starts_with(
                r#"CREATE ROLE "x""; DROP TABLE t; --" WITH NOSUPERUSER INHERIT LOGIN"#
            )
        );
        assert!(stmts[0].sql.contains("PASSWORD 'SCRAM-SHA-256$4096:"));
        assert!(!stmts[0].sql.contains("pw'x"));

        let grant = SqlAction::GrantPrivileges {
            role: "r".into(),
            database: "d\"b".into(),
            privileges: required_privileges(Engine::Postgres, PrivilegeLevel::ReadOnly),
        };
        let sql: Vec<String> = render(&grant, &owners)
            .unwrap()
            .into_iter()
            .map(|s| s.sql)
            .collect();
        assert_eq!(
            sql,
            vec![
                r#"GRANT CONNECT ON DATABASE "d""b" TO "r""#,
                r#"GRANT USAGE ON SCHEMA public TO "r""#,
                r#"GRANT SELECT ON ALL TABLES IN SCHEMA public TO "r""#,
                r#"GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO "r""#,
                r#"ALTER DEFAULT PRIVILEGES FOR ROLE "own'er" IN SCHEMA public GRANT SELECT ON TABLES TO "r""#,
                r#"ALTER DEFAULT PRIVILEGES FOR ROLE "own'er" IN SCHEMA public GRANT SELECT ON SEQUENCES TO "r""#,
            ]
        );
        assert_eq!(parameter_ident("a.b"), r#""a"."b""#);
        assert_eq!(psql_meta_quote(r"it's\"), r"'it''s\\'");
    }

    #[test]
    fn markers_are_comments_with_quoted_literals() {
        let marker = OwnerMarker::new("ns'x", "Kind", "a\\b", None);
        let create = SqlAction::CreateRole {
            name: "r\"".into(),
            attributes: BTreeSet::new(),
            password: None,
            marker: Some(marker.clone()),
        };
        let stmts = render(&create, &BTreeMap::new()).unwrap();
        assert_eq!(stmts.len(), 2);
        assert_eq!(
            stmts[1].sql,
            r#"COMMENT ON ROLE "r""" IS E'dbward.dev/owner {"namespace":"ns''x","kind":"Kind","name":"a\\\\b"}'"#
        );
        let mark = SqlAction::MarkDatabase {
            name: "d".into(),
            marker,
        };
        let stmts = render(&mark, &BTreeMap::new()).unwrap();
        assert_eq!(stmts.len(), 1);
        assert!(stmts[0].sql.starts_with(r#"COMMENT ON DATABASE "d" IS E'"#));
    }
}
