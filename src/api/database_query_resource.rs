//! `DatabaseQueryResource`: poll a query, render one Kubernetes object per row (konnektr's contract,
//! with Jinja templates).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Label on every child, naming the DatabaseQueryResource that manages it.
pub const MANAGED_BY_LABEL: &str = "dbward.dev/managed-by";
/// With this finalizer, deleting the DatabaseQueryResource first deletes its children.
pub const FINALIZER: &str = "dbward.dev/databasequeryresource-finalizer";

/// Polls a read-only SQL query and renders one Kubernetes object per row from a Jinja template;
/// objects whose row disappeared are pruned, and a status query can write back to the database.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbward.dev",
    version = "v1alpha1",
    kind = "DatabaseQueryResource",
    namespaced,
    shortname = "dbqr",
    category = "dbward",
    status = "DatabaseQueryResourceStatus",
    doc = "Polls a read-only SQL query and renders one Kubernetes object per row from a Jinja template.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.database.type"),
    printcolumn(name = "Interval", type_ = "string", json_path = ".spec.pollInterval"),
    printcolumn(name = "Rows", type_ = "integer", json_path = ".status.rows"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseQueryResourceSpec {
    /// How often to run the query, as a duration such as `30s`, `5m` or `1h30m`; at least the
    /// AdmissionPolicy's `limits.minPollInterval`.
    #[schemars(length(min = 1))]
    pub poll_interval: String,

    /// Delete children whose row no longer comes back. Defaults to true. Never in a poll where
    /// a row failed before its object's name was known, never more than the AdmissionPolicy's
    /// `limits.maxQueryPrunes` per poll, and never on an empty result unless
    /// `allowEmptyPrune` is set.
    #[serde(default = "default_true")]
    pub prune: bool,

    /// Let a query that returns no rows at all prune every child. Defaults to false: an empty
    /// result (a truncated table, a wrong filter) keeps the children.
    #[serde(default)]
    pub allow_empty_prune: bool,

    /// The database to query.
    pub database: QueryDatabase,

    /// One read-only statement (a SELECT, WITH … SELECT, VALUES or TABLE); checked at admission
    /// and run inside a read-only transaction.
    #[schemars(length(min = 1))]
    pub query: String,

    /// A Jinja template rendering one Kubernetes object per row, as one YAML document. It is
    /// parsed as YAML first and each value is rendered alone, so a row's values stay inside
    /// the field they are written to (a `{% … %}` tag must open and close within one value).
    /// Context: `row` (column → value) and `metadata` (this object's metadata).
    #[schemars(length(min = 1))]
    pub template: String,

    /// A Jinja template of one SQL statement, run after each child this poll created or
    /// changed. Context: `resource` (the child as stored). Every `{{ … }}` is sent as a bound
    /// parameter (`$1`… on PostgreSQL, `?` on MySQL), never as SQL text, so write it bare —
    /// not inside quotes or comments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_update_query_template: Option<String>,

    /// Set owner references on children, so Kubernetes' garbage collector removes them with this
    /// object. Defaults to true.
    #[serde(default = "default_true")]
    pub owned: bool,
}

/// What the last poll did. Small at any row count: counts, and at most
/// [`MAX_FAILED_ROWS`] failed rows.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseQueryResourceStatus {
    /// `Ready`: `True` when the last poll applied every row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the last poll ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the last poll ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll_time: Option<Time>,
    /// When every child was last applied whatever its hash said (drift repair).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_full_apply_time: Option<Time>,
    /// Rows the last poll returned.
    #[serde(default)]
    pub rows: u32,
    /// Children the last poll created or changed.
    #[serde(default)]
    pub applied: u32,
    /// Children already as rendered (no write).
    #[serde(default)]
    pub unchanged: u32,
    /// Rows that failed (render, rules, conflict, apply or status query).
    #[serde(default)]
    pub failed: u32,
    /// Children the last poll deleted.
    #[serde(default)]
    pub pruned: u32,
    /// Why pruning was held back in the last poll, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_held: Option<String>,
    /// The first failed rows (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_rows: Vec<FailedRow>,
    /// The `apiVersion/kind`s this object has made children of, so that prune and deletion
    /// find them after the template changed kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub child_kinds: Vec<String>,
}

/// At most this many failed rows are listed in the status.
pub const MAX_FAILED_ROWS: usize = 20;

/// A row that failed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FailedRow {
    /// The row's position in the result (from 0).
    pub row: u32,
    /// The child's `namespace/name`, when it was known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Where it failed: `Render`, `Rules`, `Conflict`, `Apply` or `StatusUpdate`.
    pub phase: String,
    /// Why (short).
    pub message: String,
}

fn default_true() -> bool {
    true
}

/// The database a DatabaseQueryResource queries.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueryDatabase {
    /// `postgres` or `mysql`.
    #[serde(rename = "type")]
    pub engine: super::Engine,
    /// The Secret with the connection details.
    pub connection_secret_ref: ConnectionSecretRef,
}

/// A Secret with connection details, with konnektr's overridable keys.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Namespace of the Secret; defaults to this object's. Another namespace needs the
    /// AdmissionPolicy's cross-namespace right.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key of the host name. Defaults to `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Key of the port. Defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_key: Option<String>,
    /// Key of the user name. Defaults to `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key: Option<String>,
    /// Key of the password. Defaults to `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_key: Option<String>,
    /// Key of the database name. Defaults to `dbname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_name_key: Option<String>,
    /// Key of the SSL mode. Defaults to `sslmode`; `prefer` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode_key: Option<String>,
}
