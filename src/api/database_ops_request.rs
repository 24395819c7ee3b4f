//! `DatabaseOpsRequest`: a one-shot operation, in KubeDB's ops-request shape.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A one-shot operation: `ReconfigureTLS` on a service's pooler (add, rotate, change issuer,
/// remove) or `RotateCredentials` of a ServiceUser. The spec is immutable once created.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbward.dev",
    version = "v1alpha1",
    kind = "DatabaseOpsRequest",
    namespaced,
    shortname = "dbops",
    category = "dbward",
    status = "DatabaseOpsRequestStatus",
    doc = "A one-shot operation on a DatabaseService's pooler (ReconfigureTLS) or a ServiceUser (RotateCredentials). Immutable once created.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseOpsRequestSpec {
    /// `ReconfigureTLS` or `RotateCredentials`.
    #[serde(rename = "type")]
    pub op_type: OpsType,
    /// The DatabaseService whose pooler a ReconfigureTLS request changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_ref: Option<NameRef>,
    /// The ServiceUser (in this namespace) whose password a RotateCredentials request rotates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ref: Option<NameRef>,
    /// What a ReconfigureTLS request does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsChange>,
    /// How long the request may run, as a duration such as `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// `IfReady` (default) runs only when the target is Ready; `Always` runs regardless.
    #[serde(default = "default_apply")]
    pub apply: ApplyPolicy,
}

fn default_apply() -> ApplyPolicy {
    ApplyPolicy::IfReady
}

/// The operations.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpsType {
    ReconfigureTLS,
    RotateCredentials,
}

/// When to run.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyPolicy {
    IfReady,
    Always,
}

/// A reference by name.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NameRef {
    #[schemars(length(min = 1))]
    pub name: String,
}

/// A TLS change. Give `issuerRef` to add TLS or change the issuer, `rotateCertificates` to
/// rotate, `remove` to remove TLS; without `issuerRef`, dbward's own CA issues the certificate.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsChange {
    /// A cert-manager issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
    /// `client_tls_sslmode` of the pooler: disable, allow, prefer, require, verify-ca or
    /// verify-full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<String>,
    /// How clients authenticate: `md5`, `scram` or `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth_mode: Option<String>,
    /// Issue new certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_certificates: Option<bool>,
    /// Remove TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<bool>,
}

/// A cert-manager issuer.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    #[schemars(length(min = 1))]
    pub name: String,
    /// `Issuer` or `ClusterIssuer`.
    pub kind: IssuerKind,
    /// Must be `cert-manager.io`.
    pub api_group: String,
}

/// cert-manager issuer kinds.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssuerKind {
    Issuer,
    ClusterIssuer,
}

/// Observed state of an ops request.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseOpsRequestStatus {
    /// Pending → Progressing → Successful | Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// A condition per step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
