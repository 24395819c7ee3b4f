//! `ConnectionPool`: a PgBouncer pool on a PostgreSQL DatabaseService.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CommonStatus, SecretTarget, ServiceBinding};

/// Default key prefix of the connection Secret.
pub const SECRET_PREFIX: &str = "CONNECTIONPOOL_";
/// Keys of the connection Secret after the prefix, exactly as the Aiven document lists them.
pub const SECRET_KEYS: [&str; 9] = [
    "NAME",
    "HOST",
    "PORT",
    "DATABASE",
    "USER",
    "PASSWORD",
    "SSLMODE",
    "DATABASE_URI",
    "CA_CERT",
];
/// Default `poolSize`.
pub const DEFAULT_POOL_SIZE: i32 = 10;

/// A PgBouncer pool on a PostgreSQL DatabaseService, and a Secret with its connection details.
/// Clients connect to the pooler with the pool's name as the database name.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbward.dev",
    version = "v1alpha1",
    kind = "ConnectionPool",
    namespaced,
    shortname = "pool",
    category = "dbward",
    status = "CommonStatus",
    doc = "A PgBouncer connection pool on a PostgreSQL DatabaseService, and a Secret with its connection details.",
    printcolumn(
        name = "Service Name",
        type_ = "string",
        json_path = ".spec.serviceName"
    ),
    printcolumn(name = "Project", type_ = "string", json_path = ".spec.project"),
    printcolumn(name = "Database", type_ = "string", json_path = ".spec.databaseName"),
    printcolumn(name = "Username", type_ = "string", json_path = ".spec.username"),
    printcolumn(name = "Pool Size", type_ = "integer", json_path = ".spec.poolSize"),
    printcolumn(name = "Pool Mode", type_ = "string", json_path = ".spec.poolMode")
)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPoolSpec {
    #[serde(flatten)]
    pub binding: ServiceBinding,

    #[serde(flatten)]
    pub secret: SecretTarget,

    /// Name of the database the pool connects to. Reserved names (the server's own databases,
    /// `_dbward`, the connector's user) are refused.
    #[schemars(length(max = 40))]
    pub database_name: String,

    /// Name of the service user used to connect to the database; clients bring their own when
    /// unset. Reserved roles (the connector's user, `postgres`, `pg_*`) are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub username: Option<String>,

    /// Mode the pool operates in (session, transaction, statement). Defaults to transaction.
    #[serde(default = "default_pool_mode")]
    pub pool_mode: PoolMode,

    /// Number of connections the pool may open towards the server. Defaults to 10; at most the
    /// AdmissionPolicy's `limits.maxPoolSize`.
    #[serde(default = "default_pool_size")]
    #[schemars(range(min = 1))]
    pub pool_size: i32,
}

fn default_pool_mode() -> PoolMode {
    PoolMode::Transaction
}

fn default_pool_size() -> i32 {
    DEFAULT_POOL_SIZE
}

/// PgBouncer's pool modes.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection per client connection, released when the client disconnects.
    Session,
    /// A server connection per transaction.
    Transaction,
    /// A server connection per statement; multi-statement transactions are refused.
    Statement,
}

impl PoolMode {
    pub const ALL: [PoolMode; 3] = [
        PoolMode::Session,
        PoolMode::Transaction,
        PoolMode::Statement,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}
