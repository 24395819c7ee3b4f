//! Types and constants shared by several kinds.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of `spec.project` (Aiven's contract).
pub const PROJECT_PATTERN: &str = "^[a-zA-Z0-9_-]+$";
/// Pattern of `spec.serviceName` (Aiven's contract).
pub const SERVICE_NAME_PATTERN: &str = "^[a-z][-a-z0-9]+$";
/// Pattern dbward accepts for database and role names on shared services. Quoting would make any
/// name safe; this keeps names portable between engines and readable in URIs.
pub const SQL_NAME_PATTERN: &str = "^[a-zA-Z_][a-zA-Z0-9_-]*$";
/// Maximum length of `spec.project` and `spec.serviceName`.
pub const MAX_REF_LENGTH: u64 = 63;

/// The fields every service-scoped kind (Database, ServiceUser, ConnectionPool, DatabaseClaim)
/// carries to say which DatabaseService it lives on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBinding {
    /// Identifies the project this resource belongs to; must equal the DatabaseService's
    /// `spec.project`. Immutable.
    #[schemars(length(max = 63), regex(pattern = r"^[a-zA-Z0-9_-]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("field is immutable"))]
    pub project: String,

    /// Name of the cluster-scoped DatabaseService this resource belongs to. Immutable.
    #[schemars(length(max = 63), regex(pattern = r"^[a-z][-a-z0-9]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("field is immutable"))]
    pub service_name: String,

    /// Not supported: dbward administers a service only through its connector Secret, and
    /// admission refuses this field (rule `auth-secret-ref`). It stays in the schema so that an
    /// Aiven manifest carrying it gets that answer instead of an unknown-field error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SecretKeyRef>,
}

/// The fields of kinds that write a connection Secret (ServiceUser, ConnectionPool,
/// DatabaseClaim).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretTarget {
    /// Where the Secret with the connection information is written. Defaults to a Secret named
    /// after this object, with keys prefixed by the kind in capitals and `_`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_info_secret_target: Option<ConnInfoSecretTarget>,

    /// When true, no Secret with the connection information is written. Immutable; defaults to
    /// false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("field is immutable"))]
    pub conn_info_secret_target_disabled: Option<bool>,
}

/// A key of a Secret in the object's own namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// The Secret dbward writes with an object's connection information.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnInfoSecretTarget {
    /// Name of the Secret to create. Defaults to the object's `metadata.name`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("field is immutable"))]
    pub name: Option<String>,
    /// Annotations added to the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Labels added to the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Prefix of the Secret's keys, used as is. Defaults to the kind in capitals and `_`, e.g.
    /// `CONNECTIONPOOL_`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// What to do with the database when the object is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// The database outlives the object (default): nothing is lost by accident.
    #[default]
    Retain,
    /// The database is dropped with the object.
    Delete,
}

/// The status every kind reports.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommonStatus {
    /// Conditions; `Ready` says whether the object is in effect, with a reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A role flag, from the Zalando postgres-operator set.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum RoleFlag {
    Superuser,
    Inherit,
    Login,
    Nologin,
    Createrole,
    Createdb,
    Replication,
    Bypassrls,
}

impl RoleFlag {
    pub const ALL: [RoleFlag; 8] = [
        RoleFlag::Superuser,
        RoleFlag::Inherit,
        RoleFlag::Login,
        RoleFlag::Nologin,
        RoleFlag::Createrole,
        RoleFlag::Createdb,
        RoleFlag::Replication,
        RoleFlag::Bypassrls,
    ];

    /// The flag as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            RoleFlag::Superuser => "superuser",
            RoleFlag::Inherit => "inherit",
            RoleFlag::Login => "login",
            RoleFlag::Nologin => "nologin",
            RoleFlag::Createrole => "createrole",
            RoleFlag::Createdb => "createdb",
            RoleFlag::Replication => "replication",
            RoleFlag::Bypassrls => "bypassrls",
        }
    }

    /// Parses the manifest spelling, case-insensitively.
    pub fn parse(flag: &str) -> Option<RoleFlag> {
        RoleFlag::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(flag))
    }

    /// Flags that only PostgreSQL has; MySQL has no equivalent for them.
    pub fn postgres_only(self) -> bool {
        matches!(
            self,
            RoleFlag::Inherit | RoleFlag::Replication | RoleFlag::Bypassrls
        )
    }
}

/// Kubernetes' JSON for `x-kubernetes-preserve-unknown-fields` objects (containers and the like
/// that dbward passes through).
pub(crate) fn preserve_unknown_objects(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
    })
}
