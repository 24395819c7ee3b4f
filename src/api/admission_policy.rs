//! `AdmissionPolicy`: the knobs cluster admins turn. One cluster-scoped object named `default`.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::CommonStatus;

/// The only name an AdmissionPolicy may have.
pub const POLICY_NAME: &str = "default";

/// How the cluster enforces dbward's rules: per rule `Enforce` (deny), `Warn` (allow with a
/// warning) or `Off`, and the limits and allow-lists the rules check against. Without this object,
/// the built-in defaults apply. Only the object named `default` is used.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "dbward.dev",
    version = "v1alpha1",
    kind = "AdmissionPolicy",
    shortname = "dbpolicy",
    category = "dbward",
    status = "CommonStatus",
    doc = "How dbward's admission rules are enforced, and the limits they check. One object, named default.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionPolicySpec {
    /// Rule name → `Enforce`, `Warn` or `Off`. Rules not listed keep their built-in mode
    /// (the README and docs/kinds/admissionpolicy.md list the rules).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, RuleMode>,

    /// Limits and allow-lists.
    #[serde(default)]
    pub limits: Limits,

    /// Pre-existing roles and databases that a namespace may take over (for migrating onto
    /// dbward). Without an entry here, dbward never changes, grants on or drops a role or
    /// database it did not create. The first object of `namespace` that names the role or
    /// database on `serviceName` marks it as its own; from then on it is that object's, as if
    /// dbward had created it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adoptions: Vec<Adoption>,
}

/// One pre-existing role or database a namespace may adopt.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Adoption {
    /// The DatabaseService the role or database is on.
    #[schemars(length(min = 1, max = 63))]
    pub service_name: String,
    /// The namespace whose object may adopt it.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// The name of an existing role (PostgreSQL) or user (MySQL) on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The name of an existing database on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// What happens when a rule fails.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleMode {
    /// Deny the request.
    Enforce,
    /// Allow it with a warning that kubectl prints.
    Warn,
    /// Do not check.
    Off,
}

/// Limits and allow-lists. Every field has a built-in default.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Limits {
    /// Largest `poolSize` of a ConnectionPool. Default 100.
    #[schemars(range(min = 1))]
    pub max_pool_size: i32,
    /// Pool modes ConnectionPools may use. Default: all three.
    pub allowed_pool_modes: Vec<super::PoolMode>,
    /// Whether ServiceUsers on shared services may be superusers. Default false.
    pub superuser_allowed: bool,
    /// Whether users of a team's own PostgresCluster may be superusers. Default true.
    pub cluster_superuser_allowed: bool,
    /// Minimum CPU of a PostgresCluster's containers. Default `250m`.
    pub min_cpu: String,
    /// Minimum memory of a PostgresCluster's containers. Default `250Mi`.
    pub min_memory: String,
    /// Minimum volume size of a PostgresCluster. Default `1Gi`.
    pub min_volume_size: String,
    /// PostgreSQL major versions a PostgresCluster may run. Default 13 to 17.
    pub allowed_postgres_versions: Vec<String>,
    /// Whether PostgresClusters may have sidecars. Default false.
    pub sidecars_enabled: bool,
    /// Whether PostgresClusters may have init containers. Default false.
    pub init_containers_enabled: bool,
    /// Shortest `pollInterval` of a DatabaseQueryResource. Default `10s`.
    pub min_poll_interval: String,
    /// Kinds a DatabaseQueryResource may create, as `Kind` (core group) or `group/Kind`.
    /// Default: ConfigMap.
    pub allowed_query_resource_kinds: Vec<String>,
    /// Whether a DatabaseQueryResource may read a Secret or create objects in another namespace.
    /// Default false.
    pub cross_namespace_allowed: bool,
    /// Most rows a DatabaseQueryResource's query may return; a poll with more fails and
    /// changes nothing. Default 10000.
    #[schemars(range(min = 1))]
    pub max_query_rows: u32,
    /// Most children one poll of a DatabaseQueryResource may prune; the rest wait for the next
    /// poll. Default 500.
    #[schemars(range(min = 1))]
    pub max_query_prunes: u32,
    /// Statement timeout of a DatabaseQueryResource's query (and of its status update
    /// queries), as a duration. Default `30s`.
    pub query_timeout: String,
    /// Roles outside a namespace that ServiceUsers may name in `inRoles` (for example a
    /// read-only group the admin maintains, or `pg_read_all_stats`). Default: none. Roles a
    /// namespace's own objects created are always allowed; `pg_*` roles only when listed here.
    /// Other reserved roles (`postgres`, `root`, the connector's user, …) cannot be allowed.
    pub allowed_in_roles: Vec<String>,
    /// Settings a ServiceUser may set in `parameters`. Default: `statement_timeout`,
    /// `lock_timeout`, `idle_in_transaction_session_timeout`, `idle_session_timeout`,
    /// `search_path`, `work_mem`, `maintenance_work_mem`, `temp_buffers`,
    /// `default_transaction_isolation`, `default_transaction_read_only`, `timezone`,
    /// `application_name`, `client_encoding`, `datestyle`, `intervalstyle`,
    /// `lc_messages`, `lc_monetary`, `lc_numeric`, `lc_time`.
    pub allowed_parameters: Vec<String>,
    /// Whether ServiceUsers on shared services may have the server-wide flags `createrole`
    /// (administers other roles; on MySQL the global `CREATE USER`) and `replication` (streams
    /// every database's changes), and on MySQL `createdb` (the global `CREATE`, which creates
    /// tables in every database). Default false.
    pub server_wide_flags_allowed: bool,
    /// Namespaces, besides dbward's own, whose DatabaseOpsRequests may reconfigure the TLS of a
    /// DatabaseService's pooler. That pooler serves every tenant of the service, so by default
    /// only dbward's namespace may (`admin-actions`). Default: none.
    pub pooler_tls_namespaces: Vec<String>,
}

/// The built-in `limits.allowedParameters`: per-session settings an unprivileged role may set
/// for itself.
pub const DEFAULT_ALLOWED_PARAMETERS: [&str; 19] = [
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "search_path",
    "work_mem",
    "maintenance_work_mem",
    "temp_buffers",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "timezone",
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
];

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pool_size: 100,
            allowed_pool_modes: super::PoolMode::ALL.to_vec(),
            superuser_allowed: false,
            cluster_superuser_allowed: true,
            min_cpu: "250m".into(),
            min_memory: "250Mi".into(),
            min_volume_size: "1Gi".into(),
            allowed_postgres_versions: ["13", "14", "15", "16", "17"].map(String::from).to_vec(),
            sidecars_enabled: false,
            init_containers_enabled: false,
            min_poll_interval: "10s".into(),
            allowed_query_resource_kinds: vec!["ConfigMap".into()],
            cross_namespace_allowed: false,
            max_query_rows: 10_000,
            max_query_prunes: 500,
            query_timeout: "30s".into(),
            allowed_in_roles: Vec::new(),
            allowed_parameters: DEFAULT_ALLOWED_PARAMETERS.map(String::from).to_vec(),
            server_wide_flags_allowed: false,
            pooler_tls_namespaces: Vec::new(),
        }
    }
}

impl AdmissionPolicySpec {
    /// Whether the policy lets `namespace` adopt the existing role `name` on `service`.
    pub fn adopts_role(&self, service: &str, namespace: &str, name: &str) -> bool {
        self.adoptions.iter().any(|a| {
            a.service_name == service && a.namespace == namespace && a.role.as_deref() == Some(name)
        })
    }

    /// Whether the policy lets `namespace` adopt the existing database `name` on `service`.
    pub fn adopts_database(&self, service: &str, namespace: &str, name: &str) -> bool {
        self.adoptions.iter().any(|a| {
            a.service_name == service
                && a.namespace == namespace
                && a.database.as_deref() == Some(name)
        })
    }
}
