//! Reconcilers for the shared-server kinds: `DatabaseService`, `Database`, `ServiceUser` and
//! `DatabaseClaim`.
//!
//! Each kind follows observe → plan → act: `observe` reads the server (through [`crate::sql`])
//! and the Kubernetes side (through a [`Cluster`]), the pure `plan` compares desired and
//! observed state and returns [`Action`]s, and [`act`] executes them. A plan of an unchanged
//! object is empty, so a second reconcile writes nothing anywhere.
//!
//! The same per-kind functions serve the in-cluster controllers ([`controller`], over
//! [`kube_cluster::KubeCluster`]) and `dbward reconcile --local` ([`local::LocalCluster`]).
//! What only a cluster has — finalizers, status, events, requeues — lives in [`controller`].

pub mod cert_manager;
pub mod connection_pool;
pub mod context;
pub mod controller;
pub mod database;
pub mod database_claim;
pub mod database_service;
pub mod guard;
pub mod kube_cluster;
pub mod local;
pub mod local_pooler;
pub mod ops_request;
pub mod ops_request_plan;
pub mod ops_request_tls;
pub mod pooler;
pub mod pooler_kube;
pub mod pooler_objects;
pub mod pooler_plan;
pub mod pooler_tls;
pub mod postgres_cluster;
pub mod query_resource;
pub mod secret;
pub mod service_user;
pub mod status;

use std::fmt;
use std::future::Future;

use k8s_openapi::api::core::v1::{Namespace, Secret};

use crate::api::{AdmissionPolicySpec, DatabaseService, ServiceUser};
use crate::sql::{self, ConnectorError, Server, SqlAction};

pub use context::Context;

/// The finalizer that makes deletion wait for the server-side cleanup.
pub const FINALIZER: &str = "dbward.dev/finalizer";
/// The field manager of every server-side apply dbward makes.
pub const FIELD_MANAGER: &str = "dbward";
/// The label on every Secret the controllers write: they watch only Secrets that carry it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "dbward");
/// [`MANAGED_BY`] as a label selector.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=dbward";

/// A failed reconcile step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object names a DatabaseService that does not exist (yet).
    #[error("DatabaseService {name:?} not found")]
    ServiceNotFound {
        /// Its name.
        name: String,
    },
    /// The DatabaseService's connector Secret does not exist (yet).
    #[error("connector Secret {namespace}/{name} not found")]
    ConnectorSecretNotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The connector Secret lacks the `dbward.dev/connector-type: shared-database` label.
    #[error(
        "Secret {namespace}/{name} is not a connector: it lacks the label dbward.dev/connector-type=shared-database"
    )]
    ConnectorSecretUnlabelled {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The connector Secret's values cannot be used.
    #[error("connector Secret {namespace}/{name}: {source}")]
    Connector {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// What is wrong.
        source: ConnectorError,
    },
    /// The DatabaseService's `engine` and its connector's `type` disagree.
    #[error("DatabaseService {service:?} is {engine} but its connector Secret says {connector}")]
    EngineMismatch {
        /// Service.
        service: String,
        /// `spec.engine`.
        engine: sql::Engine,
        /// The connector's `type`.
        connector: sql::Engine,
    },
    /// `passwordSecretRef` names a Secret or key that does not exist (yet).
    #[error("password Secret {namespace}/{name} has no key {key:?}")]
    PasswordSecretMissing {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Key.
        key: String,
    },
    /// The admission rules refuse the object (it reached the API server without the webhook:
    /// the webhook was down, not yet registered, or skipped its namespace). Nothing is applied.
    #[error("{message}")]
    Denied {
        /// The field errors, as the webhook would have given them.
        message: String,
    },
    /// A role or database of this name exists on the server and does not belong to this object
    /// (dbward did not create it, or created it for another object). It is never changed,
    /// granted on or dropped. The message does not say whose it is.
    #[error(
        "{what} {name:?} already exists on DatabaseService {service:?} and does not belong to this {kind}; choose another name (an admin can let this namespace adopt an existing {what} in the AdmissionPolicy's spec.adoptions)"
    )]
    NameTaken {
        /// `role` or `database`.
        what: &'static str,
        /// Its name on the server.
        name: String,
        /// The DatabaseService.
        service: String,
        /// The kind of the object that wanted it.
        kind: String,
    },
    /// A grant, membership or owner names a role or database that does not belong to this
    /// namespace (or does not exist yet). Retried: it may be created by the namespace's own
    /// objects shortly.
    #[error("{field}: Forbidden: {what} {name:?} {reason}")]
    NotOwned {
        /// The field path, e.g. `spec.privileges[0].database`.
        field: String,
        /// `role` or `database`.
        what: &'static str,
        /// Its name on the server.
        name: String,
        /// What would be accepted.
        reason: String,
    },
    /// The object cannot be reconciled as it is (admission would have refused it); it waits for
    /// a change.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// A SQL operation failed.
    #[error(transparent)]
    Sql(#[from] sql::Error),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API {verb} failed: {source}")]
    Kube {
        /// What was being done (`apply Secret`, `patch status`, …).
        verb: &'static str,
        /// Cause.
        source: Box<kube::Error>,
    },
    /// A ConnectionPool's `username` names a ServiceUser whose credentials are not there (yet):
    /// its Secret or password is missing. Retried.
    #[error("{field}: {message}")]
    UserNotReady {
        /// The field, `spec.username`.
        field: String,
        /// What is missing and where.
        message: String,
    },
    /// The pooler (PgBouncer) does not serve the pools as desired yet: its pods do not run, its
    /// admin console does not answer, or `SHOW DATABASES` differs. Retried.
    #[error("{message}")]
    PoolerNotReady {
        /// What is wrong.
        message: String,
    },
    /// Local mode could not read or write a Secret file.
    #[error("{path}: {message}")]
    LocalFile {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// A short, bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::ServiceNotFound { .. } => "service_not_found",
            Error::ConnectorSecretNotFound { .. } => "connector_secret_not_found",
            Error::ConnectorSecretUnlabelled { .. } => "connector_secret_unlabelled",
            Error::Connector { source, .. } => source.category(),
            Error::EngineMismatch { .. } => "engine_mismatch",
            Error::PasswordSecretMissing { .. } => "password_secret_missing",
            Error::Invalid { .. } => "invalid",
            Error::Denied { .. } => "denied",
            Error::NameTaken { .. } => "name_taken",
            Error::NotOwned { .. } => "not_owned",
            Error::Sql(e) => e.category(),
            Error::Kube { .. } => "kube_api",
            Error::LocalFile { .. } => "local_file",
            Error::UserNotReady { .. } => "user_not_ready",
            Error::PoolerNotReady { .. } => "pooler_not_ready",
        }
    }

    /// The `reason` of the `Ready=False` condition and of the warning event.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::ServiceNotFound { .. } => "ServiceNotFound",
            Error::ConnectorSecretNotFound { .. }
            | Error::ConnectorSecretUnlabelled { .. }
            | Error::Connector { .. }
            | Error::EngineMismatch { .. } => "ConnectorInvalid",
            Error::PasswordSecretMissing { .. } => "PasswordSecretMissing",
            Error::Invalid { .. } => "Invalid",
            Error::Denied { .. } | Error::NotOwned { .. } => "Denied",
            Error::NameTaken { .. } => "NameTaken",
            Error::Sql(sql::Error::Unreachable { .. }) => "ServiceUnreachable",
            Error::Sql(sql::Error::ConnectRejected { .. }) => "ServiceRejectedConnection",
            Error::Sql(sql::Error::DatabaseInUse { .. }) => "DatabaseInUse",
            Error::Sql(sql::Error::InvalidName(_)) => "InvalidName",
            Error::Sql(_) => "SqlFailed",
            Error::Kube { .. } => "KubernetesApiFailed",
            Error::LocalFile { .. } => "LocalFileFailed",
            Error::UserNotReady { .. } => "UserNotReady",
            Error::PoolerNotReady { .. } => "PoolerNotReady",
        }
    }

    /// The message a tenant sees on its object (the `Ready` condition, the warning event): the
    /// error without what belongs to the administrator — the server's own words, which can name
    /// the connector's user (`password authentication failed for user "postgres"`, `Access
    /// denied for user 'root'@…`), and the connector Secret's contents. dbward's log and the
    /// DatabaseService's status keep the whole error.
    pub fn public_message(&self) -> String {
        const SEE_LOG: &str = "an administrator finds the server's message in dbward's log";
        let code = |e: &sql::Error| {
            e.sqlstate()
                .map(|code| format!(" (SQLSTATE {code})"))
                .unwrap_or_default()
        };
        match self {
            Error::Sql(
                e @ sql::Error::ConnectRejected {
                    engine, host, port, ..
                },
            ) => format!(
                "{engine} server {host}:{port} refused dbward's administrative connection{}; {SEE_LOG}",
                code(e)
            ),
            Error::Sql(
                e @ sql::Error::Unreachable {
                    engine, host, port, ..
                },
            ) => format!(
                "{engine} server {host}:{port} is unreachable{}; dbward retries",
                code(e)
            ),
            Error::Sql(e @ sql::Error::Observe { what, .. }) => {
                format!("observing {what} failed{}; {SEE_LOG}", code(e))
            }
            Error::Sql(e @ sql::Error::Apply { action, .. }) => {
                format!("{action} failed{}; {SEE_LOG}", code(e))
            }
            Error::Sql(sql::Error::Connector(_)) | Error::Connector { .. } => format!(
                "the DatabaseService's connector Secret cannot be used ({}); an administrator finds why in the DatabaseService's status",
                self.category()
            ),
            _ => self.to_string(),
        }
    }

    /// How the controller retries.
    pub fn retry(&self) -> Retry {
        match self {
            Error::Invalid { .. } | Error::Sql(sql::Error::InvalidName(_)) => Retry::OnChange,
            Error::Sql(e) if e.is_transient() => Retry::Backoff,
            Error::Kube { .. }
            | Error::ServiceNotFound { .. }
            | Error::ConnectorSecretNotFound { .. }
            | Error::PasswordSecretMissing { .. }
            | Error::UserNotReady { .. }
            | Error::PoolerNotReady { .. }
            | Error::NotOwned { .. } => Retry::Backoff,
            // Denied and NameTaken wait for a change of the object — or of the policy, the
            // service or the server, which are looked at again every few minutes.
            // A fix lies elsewhere (the connector, the server's configuration): look again
            // now and then rather than hammering.
            _ => Retry::Slow,
        }
    }
}

/// How a failed reconcile is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Exponential backoff with jitter: the cause is expected to go away.
    Backoff,
    /// Every few minutes: something outside the object must change.
    Slow,
    /// Not at all: the object itself must change.
    OnChange,
}

/// One step of a plan. Its `Debug` shows a Secret's keys, never its values.
#[derive(Clone, PartialEq)]
pub enum Action {
    /// A SQL change on the object's server.
    Sql(SqlAction),
    /// Create or update a Secret (server-side apply, field manager `dbward`).
    ApplySecret(Box<Secret>),
    /// Delete a Secret (not found is success).
    DeleteSecret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Apply or delete one of a pooler's Kubernetes objects (the controllers only).
    ApplyObject(Box<pooler_plan::ObjectChange>),
    /// `RELOAD` on a PgBouncer pod's admin console.
    ReloadPooler(Box<crate::pgbouncer::admin::Console>),
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Sql(sql) => f.debug_tuple("Sql").field(sql).finish(),
            Action::ApplySecret(secret) => f
                .debug_tuple("ApplySecret")
                .field(&secret::Redacted(secret))
                .finish(),
            Action::DeleteSecret { namespace, name } => f
                .debug_struct("DeleteSecret")
                .field("namespace", namespace)
                .field("name", name)
                .finish(),
            Action::ApplyObject(change) => f.debug_tuple("ApplyObject").field(change).finish(),
            // The console's Debug redacts its password.
            Action::ReloadPooler(console) => f.debug_tuple("ReloadPooler").field(console).finish(),
        }
    }
}

impl fmt::Display for Action {
    /// One line, without secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Sql(sql) => write!(f, "{sql}"),
            Action::ApplySecret(secret) => write!(
                f,
                "apply Secret {}/{}",
                secret.metadata.namespace.as_deref().unwrap_or_default(),
                secret.metadata.name.as_deref().unwrap_or_default()
            ),
            Action::DeleteSecret { namespace, name } => {
                write!(f, "delete Secret {namespace}/{name}")
            }
            Action::ApplyObject(change) => write!(f, "{change}"),
            Action::ReloadPooler(console) => write!(f, "RELOAD PgBouncer at {}", console.host),
        }
    }
}

/// What a reconcile did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applied {
    /// The actions executed, in order (empty when everything already was as desired).
    pub actions: Vec<Action>,
    /// Differences dbward cannot repair (a collation changed by hand), for the status message.
    pub warnings: Vec<String>,
}

/// The names on the server an object is pinned to in its `status` on its first reconcile, so
/// that no later edit, collision or lost webhook can retarget a grant or a drop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pinned {
    /// The database (Database, DatabaseClaim).
    pub database: Option<String>,
    /// The role (ServiceUser, DatabaseClaim).
    pub user: Option<String>,
}

/// A reconcile that has observed, passed the admission and ownership checks and planned, but
/// not written anything yet: the controller pins the names first, then runs it.
pub struct Prepared {
    /// The server the SQL actions go to.
    pub server: std::sync::Arc<Server>,
    /// The plan.
    pub actions: Vec<Action>,
    /// Differences dbward cannot repair, for the status message.
    pub warnings: Vec<String>,
    /// The names the object uses on the server.
    pub pinned: Pinned,
    /// Why the object is not ready even once the plan ran (a pooler whose pods do not serve
    /// the pools yet): reported as its failure after the actions, and retried.
    pub pending: Option<Error>,
}

impl Prepared {
    /// Executes the plan.
    pub async fn run(self, cluster: &impl Cluster) -> Result<Applied, Error> {
        act(&self.server, cluster, &self.actions).await?;
        Ok(Applied {
            actions: self.actions,
            warnings: self.warnings,
        })
    }
}

/// The Kubernetes side a reconciler reads and writes: the in-cluster API
/// ([`kube_cluster::KubeCluster`]) or local files ([`local::LocalCluster`]).
pub trait Cluster: Send + Sync {
    /// A Secret; `None` when it does not exist.
    fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>, Error>> + Send;

    /// A Secret dbward labels as its own ([`MANAGED_BY`]) that may well not exist: where the
    /// controllers cache those Secrets, a miss there means it does not (no request per
    /// reconcile for an absent one); elsewhere as [`Cluster::get_secret`].
    fn get_managed_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>, Error>> + Send {
        self.get_secret(namespace, name)
    }

    /// Server-side applies a Secret (field manager [`FIELD_MANAGER`]).
    fn apply_secret(&self, secret: &Secret) -> impl Future<Output = Result<(), Error>> + Send;

    /// Deletes a Secret; not found is success.
    fn delete_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Server-side applies or deletes one of a pooler's objects (the controllers' side only:
    /// local mode writes the pooler's files instead).
    fn apply_object(
        &self,
        change: &pooler_plan::ObjectChange,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// A DatabaseService; `None` when it does not exist.
    fn get_service(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<DatabaseService>, Error>> + Send;

    /// A ServiceUser (a ConnectionPool's `username` takes its credentials from its Secret);
    /// `None` when it does not exist.
    fn get_service_user(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ServiceUser>, Error>> + Send;

    /// The `default` AdmissionPolicy's spec; the built-in defaults when there is none.
    fn get_policy(&self) -> impl Future<Output = Result<AdmissionPolicySpec, Error>> + Send;

    /// Whether what this side returns is the whole cluster (a missing reference is then an
    /// error, as for the webhook) or only some manifests (local mode: a warning, as for
    /// `dbward validate`).
    fn is_complete(&self) -> bool {
        true
    }

    /// A Namespace (for its labels); `None` when it is unknown.
    fn get_namespace(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Namespace>, Error>> + Send;
}

/// Executes a plan: the SQL actions in order on `server`, then the Kubernetes ones.
pub async fn act(server: &Server, cluster: &impl Cluster, actions: &[Action]) -> Result<(), Error> {
    let sql: Vec<SqlAction> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Sql(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    if !sql.is_empty() {
        server.apply(&sql).await?;
    }
    for action in actions {
        match action {
            Action::Sql(_) => {}
            Action::ApplySecret(secret) => cluster.apply_secret(secret).await?,
            Action::DeleteSecret { namespace, name } => {
                cluster.delete_secret(namespace, name).await?
            }
            Action::ApplyObject(change) => cluster.apply_object(change).await?,
            Action::ReloadPooler(console) => {
                console.reload().await.map_err(|e| Error::PoolerNotReady {
                    message: format!("RELOAD on PgBouncer pod {}: {e}", console.host),
                })?
            }
        }
    }
    Ok(())
}

/// The cleanup of an object whose DatabaseService no longer exists: nothing to drop. (A
/// DatabaseService waits, through its finalizer, until no object uses it, so this is a service
/// that never existed or whose finalizer an admin removed.)
pub(crate) fn service_gone(name: &str) -> Applied {
    Applied {
        actions: Vec::new(),
        warnings: vec![format!("DatabaseService {name:?} is gone; nothing to drop")],
    }
}

/// `spec.serviceName`'s engine in the SQL engine's terms.
pub(crate) fn sql_engine(engine: crate::api::Engine) -> sql::Engine {
    match engine {
        crate::api::Engine::Postgres => sql::Engine::Postgres,
        crate::api::Engine::Mysql => sql::Engine::Mysql,
    }
}

/// The object reference used in logs and local-mode output: `serviceuser team-a/app`.
pub fn display_ref(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{} {ns}/{name}", kind.to_lowercase()),
        _ => format!("{} {name}", kind.to_lowercase()),
    }
}
