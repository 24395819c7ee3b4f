//! `DatabaseQueryResource`: poll a query, render one Kubernetes object per row (konnektr's contract,
//! with Jinja templates).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::CommonStatus;

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
    status = "CommonStatus",
    doc = "Polls a read-only SQL query and renders one Kubernetes object per row from a Jinja template.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.database.type"),
    printcolumn(name = "Interval", type_ = "string", json_path = ".spec.pollInterval"),
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

    /// Delete children whose row no longer comes back. Defaults to true.
    #[serde(default = "default_true")]
    pub prune: bool,

    /// The database to query.
    pub database: QueryDatabase,

    /// One read-only statement (a SELECT, WITH … SELECT, VALUES or TABLE); checked at admission
    /// and run inside a read-only transaction.
    #[schemars(length(min = 1))]
    pub query: String,

    /// A Jinja template rendering one Kubernetes object (YAML or JSON) per row. Context: `row`
    /// (column → value) and `metadata` (this object's metadata).
    #[schemars(length(min = 1))]
    pub template: String,

    /// A Jinja template of an SQL statement run after each child is applied. Context: `resource`
    /// (the child as stored). Every interpolated value is emitted as a quoted SQL literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_update_query_template: Option<String>,

    /// Set owner references on children, so Kubernetes' garbage collector removes them with this
    /// object. Defaults to true.
    #[serde(default = "default_true")]
    pub owned: bool,
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
