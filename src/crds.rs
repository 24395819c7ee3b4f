//! The CustomResourceDefinitions, generated from the API types. `dbward crds` prints them and
//! `crds/` holds the same output, one file per kind (a test fails when they drift).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api;

/// Every CRD, in the order of [`api::KINDS`].
pub fn all() -> Vec<CustomResourceDefinition> {
    [
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
    .into_iter()
    .map(without_null_enum_values)
    .collect()
}

/// kube-derive lists `null` among the `enum` values of an optional enum field (next to
/// `nullable: true`, which already admits null). API servers before 1.22 and kubectl's
/// client-side validation reject such a CRD, so the value is dropped.
fn without_null_enum_values(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(options)) = map.get_mut("enum") {
                    options.retain(|o| !o.is_null());
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    strip(&mut value);
    serde_json::from_value(value).expect("a CRD without null enum values still deserializes")
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
