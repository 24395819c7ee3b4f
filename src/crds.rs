//! The CustomResourceDefinitions, generated from the API types. `dbward crds` prints them and
//! `crds/` holds the same output, one file per kind (a test fails when they drift).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api;

/// Every CRD, in the order of [`api::KINDS`].
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        api::DatabaseService::crd(),
        api::Database::crd(),
        api::ServiceUser::crd(),
        api::ConnectionPool::crd(),
        api::DatabaseClaim::crd(),
        api::PostgresCluster::crd(),
        api::DatabaseQueryResource::crd(),
        api::DatabaseOpsRequest::crd(),
        api::AdmissionPolicy::crd(),
    ]
}

/// One CRD as a YAML document.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    serde_yaml::to_string(crd).expect("a CRD always serializes")
}

/// All CRDs as one multi-document YAML stream, as `dbward crds` prints it.
pub fn all_yaml() -> String {
    all()
        .iter()
        .map(|crd| format!("---\n{}", to_yaml(crd)))
        .collect()
}

/// The file under `crds/` that holds a kind's CRD.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or_default())
}
