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
    /// (`dbward validate --help` and the README list the rules).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, RuleMode>,

    /// Limits and allow-lists.
    #[serde(default)]
    pub limits: Limits,
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
}

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
        }
    }
}
