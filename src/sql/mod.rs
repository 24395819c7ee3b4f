//! The SQL engine: databases, roles and privileges on PostgreSQL (`tokio-postgres`) and
//! MySQL/MariaDB (`mysql_async`) behind one [`Server`] type.
//!
//! The verbs follow observe → plan → act: `observe_*` reads the catalogs (in bulk where it
//! matters), the pure `plan_*` functions of [`plan`] compare desired and observed state and
//! return [`SqlAction`]s, and [`Server::apply`] executes them. A plan of an unchanged object is
//! empty, so a second reconcile writes nothing; [`Server::writes`] counts the statements that
//! changed something, for tests and benchmarks to check that.
//!
//! Every identifier is quoted by [`quote`], every value is a bound parameter or (in DDL, which
//! takes no parameters) a quoted literal, and passwords travel as SCRAM-SHA-256 verifiers
//! (PostgreSQL) or `mysql_native_password` hashes (MySQL), never in clear text.

pub mod connector;
pub mod mysql;
pub mod ownership;
pub mod password;
pub mod plan;
pub mod pooler;
pub mod postgres;
pub mod query;
pub mod quote;

use std::collections::BTreeMap;
use std::fmt;

pub use connector::{ConnectionInfo, ConnectorError, SslMode};
pub use ownership::{Claim, MYSQL_CATALOG, OwnerMarker, claim, owned_by_namespace};
pub use plan::{
    Attribute, DatabaseSpec, DatabaseState, Password, PasswordState, Privilege, PrivilegeKind,
    PrivilegeLevel, PrivilegeMap, PrivilegeObject, PrivilegeSet, PrivilegeSpec, RoleFlag, RoleSpec,
    RoleState, SqlAction, database_immutable_drift, desired_attributes, plan_database,
    plan_privileges, plan_role, required_privileges,
};
pub use quote::NameError;

/// The database engine a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
}

impl Engine {
    /// `postgres` or `mysql`.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of a driver, boxed so both engines share [`Error`].
pub type DriverError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error with its causes, `outer: inner: …` (tokio-postgres says only "db error" itself, and
/// keeps the server's message in its source).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

/// A failed SQL operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached or the connection broke (network, server down, TLS
    /// handshake). Transient: a reconciler reports `ServiceUnreachable` and retries.
    #[error("{engine} server {host}:{port} is unreachable: {}", chain(source.as_ref()))]
    Unreachable {
        /// Engine.
        engine: Engine,
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Cause.
        source: DriverError,
    },
    /// The server answered but refused the administrator's connection (authentication,
    /// missing database).
    #[error("{engine} server {host}:{port} refused the connection: {}", chain(source.as_ref()))]
    ConnectRejected {
        /// Engine.
        engine: Engine,
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Cause.
        source: DriverError,
    },
    /// The connector's settings cannot be used.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// A name is refused before any SQL is sent.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The database still has connections; it is not dropped (never forced).
    #[error("database {database:?} still has {connections} connection(s); not dropped")]
    DatabaseInUse {
        /// Database.
        database: String,
        /// Other sessions connected to it.
        connections: u64,
    },
    /// The action has no meaning on this engine.
    #[error("{what} is not supported on {engine}")]
    Unsupported {
        /// Engine.
        engine: Engine,
        /// What was asked.
        what: String,
    },
    /// Reading the catalogs failed.
    #[error("observing {what} failed: {}", chain(source.as_ref()))]
    Observe {
        /// What was being read.
        what: String,
        /// Cause.
        source: DriverError,
    },
    /// Executing an action failed (the action's description carries no secret).
    #[error("{action} failed: {}", chain(source.as_ref()))]
    Apply {
        /// The action, as [`SqlAction`]'s `Display` describes it.
        action: String,
        /// Cause.
        source: DriverError,
    },
}

impl Error {
    /// A short, bounded label for metrics, events and status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Unreachable { .. } => "unreachable",
            Error::ConnectRejected { .. } => "connect_rejected",
            Error::Connector(e) => e.category(),
            Error::InvalidName(e) => e.category(),
            Error::DatabaseInUse { .. } => "database_in_use",
            Error::Unsupported { .. } => "unsupported",
            Error::Observe { .. } => "observe",
            Error::Apply { .. } => "apply",
        }
    }

    /// The SQLSTATE the server answered with, when it answered (`42501`, `XX000`, …): what a
    /// tenant may be shown of a server's error, whose words can name the connector's user.
    pub fn sqlstate(&self) -> Option<String> {
        let source = match self {
            Error::Observe { source, .. }
            | Error::Apply { source, .. }
            | Error::ConnectRejected { source, .. }
            | Error::Unreachable { source, .. } => source,
            _ => return None,
        };
        if let Some(e) = source.downcast_ref::<tokio_postgres::Error>() {
            return e.code().map(|c| c.code().to_owned());
        }
        match source.downcast_ref::<mysql_async::Error>() {
            Some(mysql_async::Error::Server(e)) => Some(e.state.clone()),
            _ => None,
        }
    }

    /// Whether retrying later may succeed without a change of the desired state.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. } | Error::DatabaseInUse { .. } | Error::Apply { .. }
        )
    }
}

/// What [`Server::probe`] learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The server's version string (`15.20 (Debian …)`, `10.11.19-MariaDB-…`).
    pub version: String,
    /// Whether the last connection made to the server uses TLS (with `sslmode` `prefer`,
    /// `allow` or absent: whether the server offered it).
    pub tls: bool,
}

/// An administered server with its small connection pool. Cheap to share behind an `Arc`;
/// connections are opened lazily, and a broken one is replaced on next use, so a server that
/// goes away and comes back is picked up without restarting the process.
pub enum Server {
    /// A PostgreSQL server.
    Postgres(postgres::PgServer),
    /// A MySQL or MariaDB server.
    Mysql(mysql::MyServer),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Server::Postgres($s) => $e,
            Server::Mysql($s) => $e,
        }
    };
}

impl Server {
    /// Prepares a server from connector details. Performs no I/O.
    pub fn new(info: &ConnectionInfo) -> Result<Server, Error> {
        Ok(match info.engine {
            Engine::Postgres => Server::Postgres(postgres::PgServer::new(info)?),
            Engine::Mysql => Server::Mysql(mysql::MyServer::new(info)?),
        })
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        match self {
            Server::Postgres(_) => Engine::Postgres,
            Server::Mysql(_) => Engine::Mysql,
        }
    }

    /// Statements executed so far that changed something.
    pub fn writes(&self) -> u64 {
        dispatch!(self, s => s.writes())
    }

    /// Connects (or reuses a connection) and reads the server's version and transport.
    pub async fn probe(&self) -> Result<ServerInfo, Error> {
        dispatch!(self, s => s.probe().await)
    }

    /// Observes one database; `None` when it does not exist.
    pub async fn observe_database(&self, name: &str) -> Result<Option<DatabaseState>, Error> {
        let mut found = self.observe_databases(&[name]).await?;
        Ok(found.remove(name))
    }

    /// Observes several databases in one query; missing ones are absent from the map.
    pub async fn observe_databases(
        &self,
        names: &[&str],
    ) -> Result<BTreeMap<String, DatabaseState>, Error> {
        dispatch!(self, s => s.observe_databases(names).await)
    }

    /// Observes one role, checking `password` against the stored verifier when given.
    pub async fn observe_role(
        &self,
        name: &str,
        password: Option<&str>,
    ) -> Result<Option<RoleState>, Error> {
        let mut found = self.observe_roles(&[(name, password)]).await?;
        Ok(found.remove(name))
    }

    /// Observes several roles (name, candidate password) in one query; missing ones are absent.
    pub async fn observe_roles(
        &self,
        roles: &[(&str, Option<&str>)],
    ) -> Result<BTreeMap<String, RoleState>, Error> {
        dispatch!(self, s => s.observe_roles(roles).await)
    }

    /// Observes the privileges of `roles` on every database where they hold any, plus
    /// `databases` (so that a desired database with nothing granted yet is looked at).
    pub async fn observe_privileges(
        &self,
        roles: &[&str],
        databases: &[&str],
    ) -> Result<PrivilegeMap, Error> {
        dispatch!(self, s => s.observe_privileges(roles, databases).await)
    }

    /// Executes actions in order. Everything is checked first (names, engine support), so a
    /// refused action means nothing was executed.
    pub async fn apply(&self, actions: &[SqlAction]) -> Result<(), Error> {
        dispatch!(self, s => s.apply(actions).await)
    }

    /// The statements `actions` would execute, as a script for the engine's command-line client
    /// (`psql -f` or `mariadb <`). Passwords appear hashed, as they would be sent.
    pub async fn render_script(&self, actions: &[SqlAction]) -> Result<String, Error> {
        dispatch!(self, s => s.render_script(actions).await)
    }

    /// Observe → plan → apply for one database; returns the actions executed (empty when it
    /// was already as desired).
    pub async fn ensure_database(&self, spec: &DatabaseSpec) -> Result<Vec<SqlAction>, Error> {
        let observed = self.observe_database(&spec.name).await?;
        let actions = plan_database(spec, observed.as_ref());
        self.apply(&actions).await?;
        Ok(actions)
    }

    /// Observe → plan → apply for one role (attributes, password, memberships, parameters).
    pub async fn ensure_role(&self, spec: &RoleSpec) -> Result<Vec<SqlAction>, Error> {
        let password = spec.password.as_ref().map(Password::expose);
        let observed = self.observe_role(&spec.name, password).await?;
        let actions = plan_role(self.engine(), spec, observed.as_ref());
        self.apply(&actions).await?;
        Ok(actions)
    }

    /// Observe → plan → apply for the privileges of one role: exactly `desired`, everything
    /// else it holds on any database is revoked.
    pub async fn ensure_privileges(
        &self,
        role: &str,
        desired: &[PrivilegeSpec],
    ) -> Result<Vec<SqlAction>, Error> {
        let databases: Vec<&str> = desired.iter().map(|p| p.database.as_str()).collect();
        let mut observed = self.observe_privileges(&[role], &databases).await?;
        let held = observed.remove(role).unwrap_or_default();
        let actions = plan_privileges(self.engine(), role, desired, &held);
        self.apply(&actions).await?;
        Ok(actions)
    }

    /// Drops a database; not found is success; [`Error::DatabaseInUse`] while it has
    /// connections.
    pub async fn drop_database(&self, name: &str) -> Result<(), Error> {
        self.apply(&[SqlAction::DropDatabase {
            name: name.to_owned(),
        }])
        .await
    }

    /// Drops a role; not found is success. On PostgreSQL, what it owns is first reassigned to
    /// the administrator and its privileges dropped, in every database where it has any.
    pub async fn drop_role(&self, name: &str) -> Result<(), Error> {
        self.apply(&[SqlAction::DropRole {
            name: name.to_owned(),
        }])
        .await
    }
}
