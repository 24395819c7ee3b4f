//! `dbward reconcile --local` for a DatabaseQueryResource: the query runs (read-only, as in a
//! poll), each row is rendered and checked by the same code as in the cluster, and the objects
//! it would apply are returned as manifests. Nothing is written anywhere: not the children,
//! not the status update query.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::{AdmissionPolicySpec, DatabaseQueryResource};
use crate::query_template::object::{ChildRules, ObjectTemplate};

use super::connection;
use super::plan::{self, Scope};
use super::poll::{fetch, owner_of, template_metadata};

/// Kinds a preview places at cluster scope (it has no discovery); any other is namespaced.
const CLUSTER_SCOPED: [&str; 8] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "CustomResourceDefinition",
    "IngressClass",
];

/// What a preview found.
#[derive(Debug, Default)]
pub struct Preview {
    /// `(file name, YAML)` of each object that would be applied, in row order.
    pub manifests: Vec<(String, String)>,
    /// Rows that would fail, and why nothing could be rendered at all.
    pub errors: Vec<String>,
}

/// Renders `cr`'s rows; `secret` is its connection Secret's decoded data, when found.
pub async fn preview(
    cr: &DatabaseQueryResource,
    secret: Option<&BTreeMap<String, String>>,
    policy: &AdmissionPolicySpec,
) -> Preview {
    let mut out = Preview::default();
    let reference = &cr.spec.database.connection_secret_ref;
    let Some(data) = secret else {
        out.errors.push(format!(
            "Secret {:?} (spec.database.connectionSecretRef) is not among the manifests",
            reference.name
        ));
        return out;
    };
    let target = match connection::target(&cr.spec.database, data) {
        Ok(t) => t,
        Err(e) => {
            out.errors.push(e);
            return out;
        }
    };
    let template = match ObjectTemplate::compile(&cr.spec.template) {
        Ok(t) => t,
        Err(e) => {
            out.errors.push(format!("spec.template: {e}"));
            return out;
        }
    };
    let rows = match fetch(&target, &cr.spec.query, policy).await {
        Ok((session, rows)) => {
            session.close().await;
            rows
        }
        Err(e) => {
            out.errors.push(e.to_string());
            return out;
        }
    };
    let owner = owner_of(cr);
    let rules = ChildRules {
        namespace: &owner.namespace,
        allowed_kinds: &policy.limits.allowed_query_resource_kinds,
        cross_namespace_allowed: policy.limits.cross_namespace_allowed,
    };
    let rendered = plan::render_rows(&rows, &template, &template_metadata(cr), &rules);
    let scope = |_: &str, kind: &str| {
        if CLUSTER_SCOPED.contains(&kind) {
            Scope::Cluster
        } else {
            Scope::Namespaced
        }
    };
    let (desired, failures) = plan::place(rendered, scope, &owner);
    for d in desired {
        let file = format!(
            "{}.{}.{}.yaml",
            d.key.kind.replace('/', "_"),
            d.key.namespace.as_deref().unwrap_or("_cluster"),
            d.key.name
        );
        let yaml = serde_yaml::to_string(&d.object).unwrap_or_default();
        out.manifests.push((file, yaml));
    }
    for f in failures {
        out.errors.push(format!(
            "{}: row {} ({}): {}",
            cr.name_any(),
            f.row,
            f.phase.as_str(),
            f.message
        ));
    }
    out
}
