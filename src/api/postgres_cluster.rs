//! `PostgresCluster`: a PostgreSQL cluster run in Kubernetes, with the Zalando manifest's contract.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CommonStatus, RoleFlag};

/// What dbward last saw of a PostgresCluster: its phase and conditions (`Ready`,
/// `PrimaryAvailable`, `ReplicasReady`), its ready pods and where clients connect.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// `Creating` (the primary is not ready), `Running` (every pod ready), `Degraded` (the
    /// primary is ready, a replica is not), `Stopped` (no instances) or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Pods of the cluster that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_instances: Option<i32>,
    /// The primary's Service, `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_endpoint: Option<String>,
}

/// A PostgreSQL cluster run in Kubernetes (a StatefulSet of the official image, Services, an
/// optional pooler and credential Secrets named `{user}.{cluster}.credentials.postgresql.dbward.dev`).
/// `metadata.name` must start with `spec.teamId` and `-`.
///
/// Pod 0 is the primary, the others are streaming replicas. There is no automatic failover and
/// no backup: when the primary's pod is lost, clients wait until it is back on its volume. For
/// high availability use an operator built for it (Zalando's postgres-operator with Patroni,
/// CloudNativePG).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbward.dev",
    version = "v1alpha1",
    kind = "PostgresCluster",
    namespaced,
    shortname = "pgc",
    category = "dbward",
    status = "PostgresClusterStatus",
    doc = "A PostgreSQL cluster run in Kubernetes, with the Zalando postgres-operator manifest's contract. Pod 0 is the primary, the others streaming replicas; there is no automatic failover and no backup (use Zalando's postgres-operator or CloudNativePG for high availability).",
    printcolumn(name = "Team", type_ = "string", json_path = ".spec.teamId"),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".spec.postgresql.version"
    ),
    printcolumn(
        name = "Pods",
        type_ = "integer",
        json_path = ".spec.numberOfInstances"
    ),
    printcolumn(name = "Volume", type_ = "string", json_path = ".spec.volume.size"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterSpec {
    /// The team that owns the cluster; `metadata.name` must start with it and `-`. Immutable.
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("field is immutable"))]
    pub team_id: String,

    /// Number of PostgreSQL pods (one primary, the rest replicas). 0 stops the cluster.
    #[schemars(range(min = 0))]
    pub number_of_instances: i32,

    /// Storage of each pod.
    pub volume: Volume,

    /// PostgreSQL settings.
    pub postgresql: PostgresqlSettings,

    /// Roles to create: name → flags (as for ServiceUser; `superuser` is allowed in a team's own
    /// cluster unless the AdmissionPolicy forbids it). An empty list means a plain login role.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, Option<Vec<RoleFlag>>>,

    /// Databases to create: name → owner, which must be one of `users`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub databases: BTreeMap<String, String>,

    /// Compute resources of the PostgreSQL containers. Below the AdmissionPolicy's minimum
    /// (250m CPU, 250Mi memory by default) admission warns and the StatefulSet gets the minimum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Extra containers in each pod; denied unless the AdmissionPolicy enables sidecars.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::common::preserve_unknown_objects")]
    pub sidecars: Vec<serde_json::Value>,

    /// Init containers of each pod; denied unless the AdmissionPolicy enables them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::common::preserve_unknown_objects")]
    pub init_containers: Vec<serde_json::Value>,

    /// Run a PgBouncer pooler in front of the primary, reached as `{cluster}-pooler`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_connection_pool: Option<bool>,

    /// Settings of the pooler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ClusterConnectionPool>,

    /// A custom TLS certificate for PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClusterTls>,

    /// Run as a standby of another cluster, replaying its WAL archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<Standby>,

    /// Create the cluster as a clone of another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone: Option<Clone>,
}

/// Storage of a cluster's pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Size of each pod's volume (a quantity such as `1Gi`). May grow, never shrink.
    pub size: String,
    /// Storage class of the volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

/// PostgreSQL settings of a cluster.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PostgresqlSettings {
    /// Major version, e.g. `"16"`; one of the AdmissionPolicy's allowed versions.
    pub version: String,
    /// Server parameters (`postgresql.conf`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

/// The cluster's PgBouncer pooler.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConnectionPool {
    /// How many pooler pods to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub number_of_instances: Option<i32>,
    /// `session` or `transaction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClusterPoolMode>,
    /// Schema in which the credentials lookup function is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Role the pooler connects as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Compute resources of each pooler pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Pool modes the cluster pooler supports.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClusterPoolMode {
    Session,
    Transaction,
}

/// A custom TLS certificate.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTls {
    /// Secret with `tls.crt` and `tls.key`.
    #[schemars(length(min = 1))]
    pub secret_name: String,
    /// Key of the CA certificate in the Secret, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// Standby settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Standby {
    /// S3 path of the source cluster's WAL archive; must not be empty.
    pub s3_wal_path: String,
}

/// Clone settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Clone {
    /// Name of the source cluster.
    #[schemars(length(min = 1))]
    pub cluster: String,
    /// `metadata.uid` of the source cluster; required with `timestamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Point in time to clone (RFC 3339 with a time zone, e.g. `2017-12-19T12:40:33+01:00`);
    /// without it the cluster is cloned from the running source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// Suffix of the credential Secrets' names.
pub const CREDENTIALS_SUFFIX: &str = "credentials.postgresql.dbward.dev";

/// Name of the Secret with the credentials of `user` in `cluster`.
pub fn credentials_secret_name(user: &str, cluster: &str) -> String {
    format!("{}.{cluster}.{CREDENTIALS_SUFFIX}", user.replace('_', "-"))
}
