//! `ServiceUser`: a role (PostgreSQL) or user (MySQL) on a DatabaseService.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CommonStatus, RoleFlag, SecretKeyRef, SecretTarget, ServiceBinding};

/// Default key prefix of the credentials Secret.
pub const SECRET_PREFIX: &str = "SERVICEUSER_";
/// Keys of the credentials Secret, after the prefix.
pub const SECRET_KEYS: [&str; 7] = [
    "HOST",
    "PORT",
    "USERNAME",
    "PASSWORD",
    "DATABASE_URI",
    "SSLMODE",
    "CA_CERT",
];

/// A role (PostgreSQL) or user (MySQL) on a DatabaseService, with its flags, memberships,
/// privileges, and a Secret with its credentials.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbward.dev",
    version = "v1alpha1",
    kind = "ServiceUser",
    namespaced,
    shortname = "dbuser",
    category = "dbward",
    status = "ServiceUserStatus",
    doc = "A role (PostgreSQL) or user (MySQL) on a DatabaseService, and a Secret with its credentials.",
    printcolumn(
        name = "Service Name",
        type_ = "string",
        json_path = ".spec.serviceName"
    ),
    printcolumn(name = "Project", type_ = "string", json_path = ".spec.project"),
    printcolumn(name = "Username", type_ = "string", json_path = ".status.username"),
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
pub struct ServiceUserSpec {
    #[serde(flatten)]
    pub binding: ServiceBinding,

    #[serde(flatten)]
    pub secret: SecretTarget,

    /// Name of the role on the server. Defaults to `metadata.name`. At most 63 characters on
    /// PostgreSQL and 32 on MySQL. Immutable. Reserved names are refused: the connector's user,
    /// `postgres`, `pg_*`, `template0/1` on PostgreSQL, `root`, `mysql`, `sys`, `mariadb.sys`, …
    /// on MySQL, and `_dbward`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_-]*$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("field is immutable"))]
    pub username: Option<String>,

    /// Role flags: `superuser inherit login nologin createrole createdb replication bypassrls`.
    /// `login` unless `nologin` is given. `superuser` only where the AdmissionPolicy allows it
    /// (`limits.superuserAllowed`); `createrole` and `replication` (and on MySQL `createdb`, a
    /// global privilege there) reach every tenant of the server and are allowed only where the
    /// AdmissionPolicy's `limits.serverWideFlagsAllowed` is true; `inherit`, `replication` and
    /// `bypassrls` only on PostgreSQL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<RoleFlag>,

    /// Roles this role is a member of: roles of this namespace's own ServiceUsers, or roles the
    /// AdmissionPolicy's `limits.allowedInRoles` lists (that is how a `pg_*` predefined role such
    /// as `pg_read_all_stats` is granted). Reserved roles (the connector's user, `postgres`,
    /// `root`, …) are refused, and a role another namespace's object created is never granted
    /// (the reconciler checks ownership on the server).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_roles: Vec<String>,

    /// Per-role settings (`ALTER ROLE … SET name = value`, PostgreSQL only). Only settings the
    /// AdmissionPolicy's `limits.allowedParameters` lists (by default per-session settings such
    /// as `statement_timeout`, `lock_timeout`, `search_path`, `work_mem`); values are one line.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,

    /// Privileges on databases of the same service: databases of this namespace's own Databases
    /// and DatabaseClaims, or the service's `sharedDatabases` up to their `maxLevel`. The
    /// server's own databases (`postgres`, `template0/1`, `mysql`, `sys`, …) and `_dbward` are
    /// refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub privileges: Vec<Privilege>,

    /// Use this password instead of a generated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// Observed state of a ServiceUser. The role's name is pinned here on the first reconcile, so a
/// later change (or a lost webhook) can never retarget a drop.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceUserStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Name of the role on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// A privilege on one database.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Privilege {
    /// Name of the database on the server: one of this namespace's own databases, or one of the
    /// service's `sharedDatabases`.
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
    /// `readOnly`, `readWrite` or `owner`.
    pub level: PrivilegeLevel,
}

/// How much a role may do in a database.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "camelCase")]
pub enum PrivilegeLevel {
    /// Read every table.
    ReadOnly,
    /// Read and write every table.
    ReadWrite,
    /// Everything, including DDL.
    Owner,
}

impl PrivilegeLevel {
    /// The manifest spelling (`readWrite`).
    pub fn as_str(self) -> &'static str {
        match self {
            PrivilegeLevel::ReadOnly => "readOnly",
            PrivilegeLevel::ReadWrite => "readWrite",
            PrivilegeLevel::Owner => "owner",
        }
    }

    /// Parses the manifest spelling.
    pub fn parse(level: &str) -> Option<PrivilegeLevel> {
        [
            PrivilegeLevel::ReadOnly,
            PrivilegeLevel::ReadWrite,
            PrivilegeLevel::Owner,
        ]
        .into_iter()
        .find(|l| l.as_str() == level)
    }
}
