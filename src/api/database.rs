//! `Database`: a database on a DatabaseService.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{CommonStatus, DeletionPolicy, ServiceBinding};

/// Longest `databaseName` (Aiven's ConnectionPool reference).
pub const MAX_DATABASE_NAME: usize = 40;

/// A database on a DatabaseService.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbward.dev",
    version = "v1alpha1",
    kind = "Database",
    namespaced,
    shortname = "db",
    category = "dbward",
    status = "DatabaseStatus",
    doc = "A database on a DatabaseService.",
    printcolumn(
        name = "Service Name",
        type_ = "string",
        json_path = ".spec.serviceName"
    ),
    printcolumn(name = "Project", type_ = "string", json_path = ".spec.project"),
    printcolumn(
        name = "Database",
        type_ = "string",
        json_path = ".status.databaseName"
    ),
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
pub struct DatabaseSpec {
    #[serde(flatten)]
    pub binding: ServiceBinding,

    /// Name of the database on the server. Defaults to `metadata.name`. Immutable. The server's
    /// own databases (`postgres`, `pg_*`, `template0/1`; `mysql`, `sys`, `information_schema`,
    /// …), `_dbward`, the connector's user and the service's `sharedDatabases` are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 40), regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_-]*$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("field is immutable"))]
    pub database_name: Option<String>,

    /// Collation (`LC_COLLATE`; on MySQL the collation name). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("field is immutable"))]
    pub lc_collate: Option<String>,

    /// Character classification (`LC_CTYPE`, PostgreSQL only). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("field is immutable"))]
    pub lc_ctype: Option<String>,

    /// Role that owns the database (PostgreSQL). Defaults to the connector's user, which cannot
    /// be named here; nor can another reserved role (`postgres`, `pg_*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_-]*$"))]
    pub owner: Option<String>,

    /// When true, deleting this object is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_protection: Option<bool>,

    /// `Retain` (default) keeps the database when this object is deleted; `Delete` drops it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Observed state of a Database. The name is pinned here on the first reconcile, so a later
/// change (or a lost webhook) can never retarget a drop.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Name of the database on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_name: Option<String>,
}
