//! `DatabaseService`: an existing PostgreSQL or MySQL server that dbward administers.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label a connector Secret must carry (the vCluster connector contract, under dbward's domain).
pub const CONNECTOR_LABEL: &str = "dbward.dev/connector-type";
/// Value of [`CONNECTOR_LABEL`].
pub const CONNECTOR_LABEL_VALUE: &str = "shared-database";
/// Keys a connector Secret must hold.
pub const CONNECTOR_REQUIRED_KEYS: [&str; 4] = ["endpoint", "port", "user", "password"];

/// An existing PostgreSQL or MySQL server that dbward administers through a connector Secret
/// holding admin credentials. Databases, ServiceUsers, ConnectionPools and DatabaseClaims name it
/// in `spec.serviceName`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbward.dev",
    version = "v1alpha1",
    kind = "DatabaseService",
    shortname = "dbsvc",
    category = "dbward",
    status = "DatabaseServiceStatus",
    doc = "An existing PostgreSQL or MySQL server that dbward administers, reached through a connector Secret.",
    printcolumn(name = "Engine", type_ = "string", json_path = ".spec.engine"),
    printcolumn(name = "Project", type_ = "string", json_path = ".spec.project"),
    printcolumn(name = "Reachable", type_ = "boolean", json_path = ".status.reachable"),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.serverVersion"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseServiceSpec {
    /// The server's engine: `postgres` or `mysql` (MySQL and MariaDB). Immutable; must agree with
    /// the connector Secret's `type`.
    #[x_kube(validation = Rule::new("self == oldSelf").message("field is immutable"))]
    pub engine: Engine,

    /// Project this service belongs to; objects on it must name the same project. Immutable.
    #[schemars(length(max = 63), regex(pattern = r"^[a-zA-Z0-9_-]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("field is immutable"))]
    pub project: String,

    /// The Secret with the server's admin credentials, labelled
    /// `dbward.dev/connector-type: shared-database`, with keys `endpoint`, `port`, `user`,
    /// `password`, and optionally `type` (`mysql` when blank), `sslmode` and `ca.crt`.
    pub connector_secret_ref: ConnectorSecretRef,

    /// Namespaces whose objects may use this service. When empty, only dbward's own namespace
    /// may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,

    /// Databases on the server that every allowed namespace's ServiceUsers may be granted
    /// privileges on, up to `maxLevel` (a reference database the admin maintains, say). Other
    /// databases can only be granted on by objects of the namespace that owns them. Names follow
    /// the database name pattern, are unique, and are not the server's own databases or
    /// `_dbward`; no Database object may name one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_databases: Vec<SharedDatabase>,

    /// The PgBouncer that serves this service's ConnectionPools (PostgreSQL only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler: Option<PoolerSpec>,

    /// When true, deleting this object is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_protection: Option<bool>,
}

/// A database every allowed namespace may be granted privileges on.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SharedDatabase {
    /// The database's name on the server.
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// The highest privilege level a ServiceUser may hold on it: `readOnly` (default),
    /// `readWrite` or `owner`.
    #[serde(default = "read_only")]
    pub max_level: super::service_user::PrivilegeLevel,
}

fn read_only() -> super::service_user::PrivilegeLevel {
    super::service_user::PrivilegeLevel::ReadOnly
}

/// A server engine.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    Mysql,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }

    /// Longest role name the engine accepts (PostgreSQL's NAMEDATALEN - 1, MySQL's user name).
    pub fn max_role_name(self) -> usize {
        match self {
            Engine::Postgres => 63,
            Engine::Mysql => 32,
        }
    }

    /// Longest database name the engine accepts.
    pub fn max_database_name(self) -> usize {
        match self {
            Engine::Postgres => 63,
            Engine::Mysql => 64,
        }
    }

    /// The engine a connector Secret's `type` names: `mysql` when blank, as the vCluster
    /// connector document says.
    pub fn from_connector_type(value: &str) -> Option<Engine> {
        match value.trim() {
            "" | "mysql" => Some(Engine::Mysql),
            "postgres" | "postgresql" => Some(Engine::Postgres),
            _ => None,
        }
    }
}

/// Where the connector Secret is.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectorSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Namespace of the Secret; it must be dbward's own namespace, the only one whose Secrets
    /// dbward reads. Defaults to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Which namespaces may use a service. A namespace is allowed when `names` lists it (or `"*"`)
/// or when its labels match `selector`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct AllowedNamespaces {
    /// Namespace names; `"*"` allows every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// A label selector on namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// The PgBouncer deployment dbward runs for a PostgreSQL service's ConnectionPools.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolerSpec {
    /// PgBouncer container image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Number of PgBouncer replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,
    /// Compute resources of each PgBouncer container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// TLS for clients of the pooler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<PoolerTls>,
}

/// TLS settings of a pooler.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PoolerTls {
    /// Secret of type `kubernetes.io/tls` with the pooler's certificate (`tls.crt`, `tls.key`,
    /// optionally `ca.crt`). Managed by DatabaseOpsRequests of type ReconfigureTLS when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// `client_tls_sslmode` of PgBouncer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<String>,
}

/// Observed state of a DatabaseService.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseServiceStatus {
    /// Conditions; `Ready` says whether the server answered the last probe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Whether the server answered the last probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    /// The server's version, as it reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// How dbward's connections to the server travel: `tls` or `plaintext` (the connector's
    /// `sslmode` is `disable`, or `prefer`/`allow` and the server offers no TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// When the server was last probed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
}
