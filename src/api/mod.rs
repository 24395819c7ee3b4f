//! The `dbward.dev/v1alpha1` API: one module per kind, holding its spec and status types, the
//! doc comments that become the CRD schema (and `kubectl explain`), and its constants.
//!
//! Nothing here talks to a cluster or a database.

pub mod common;

pub mod admission_policy;
pub mod connection_pool;
pub mod database;
pub mod database_claim;
pub mod database_ops_request;
pub mod database_query_resource;
pub mod database_service;
pub mod postgres_cluster;
pub mod service_user;

pub use admission_policy::{AdmissionPolicy, AdmissionPolicySpec};
pub use common::*;
pub use connection_pool::{ConnectionPool, ConnectionPoolSpec, PoolMode};
pub use database::{Database, DatabaseSpec};
pub use database_claim::{DatabaseClaim, DatabaseClaimSpec};
pub use database_ops_request::{DatabaseOpsRequest, DatabaseOpsRequestSpec};
pub use database_query_resource::{DatabaseQueryResource, DatabaseQueryResourceSpec};
pub use database_service::{DatabaseService, DatabaseServiceSpec, Engine};
pub use postgres_cluster::{PostgresCluster, PostgresClusterSpec};
pub use service_user::{ServiceUser, ServiceUserSpec};

/// The API group of every dbward kind.
pub const GROUP: &str = "dbward.dev";
/// The API version of every dbward kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "dbward.dev/v1alpha1";

/// What the webhook configurations, the CLI and the engine need to know about a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

/// Every kind of `dbward.dev/v1alpha1`.
pub const KINDS: &[KindInfo] = &[
    KindInfo {
        kind: "DatabaseService",
        plural: "databaseservices",
        namespaced: false,
    },
    KindInfo {
        kind: "Database",
        plural: "databases",
        namespaced: true,
    },
    KindInfo {
        kind: "ServiceUser",
        plural: "serviceusers",
        namespaced: true,
    },
    KindInfo {
        kind: "ConnectionPool",
        plural: "connectionpools",
        namespaced: true,
    },
    KindInfo {
        kind: "DatabaseClaim",
        plural: "databaseclaims",
        namespaced: true,
    },
    KindInfo {
        kind: "PostgresCluster",
        plural: "postgresclusters",
        namespaced: true,
    },
    KindInfo {
        kind: "DatabaseQueryResource",
        plural: "databasequeryresources",
        namespaced: true,
    },
    KindInfo {
        kind: "DatabaseOpsRequest",
        plural: "databaseopsrequests",
        namespaced: true,
    },
    KindInfo {
        kind: "AdmissionPolicy",
        plural: "admissionpolicies",
        namespaced: false,
    },
];

/// The kind's entry in [`KINDS`], if it is one of ours.
pub fn kind_info(kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.kind == kind)
}
