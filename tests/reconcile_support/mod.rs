//! What the reconciler tests share: a context over the local servers with an in-memory
//! Kubernetes side, and the objects they reconcile.
#![allow(dead_code)]

use dbward::api::{AdmissionPolicySpec, Database, DatabaseClaim, DatabaseService, ServiceUser};
use dbward::reconcile::local::LocalCluster;
use dbward::reconcile::secret::decoded_data;
use dbward::reconcile::{Cluster, Context};
use dbward::sql::{Engine, Server};
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

/// dbward's namespace in these tests.
pub const NS: &str = "dbward-system";

pub fn port(engine: Engine) -> u16 {
    match engine {
        Engine::Postgres => 5432,
        Engine::Mysql => 3306,
    }
}

/// The connector's (administrator's) user on each local server.
pub fn admin(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "postgres",
        Engine::Mysql => "root",
    }
}

pub fn connector(name: &str, engine: Engine, port: u16) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"dbward.dev/connector-type": "shared-database"}},
        "stringData": {"endpoint": "127.0.0.1", "port": port.to_string(),
                       "user": admin(engine), "password": "", "type": engine.as_str()}
    }))
    .unwrap()
}

/// A DatabaseService every namespace may use, with `extra` merged into its spec.
pub fn service_with(name: &str, engine: Engine, connector: &str, extra: Value) -> DatabaseService {
    let mut spec = json!({"engine": engine.as_str(), "project": "proj",
                          "connectorSecretRef": {"name": connector},
                          "allowedNamespaces": {"names": ["*"]}});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    serde_json::from_value(json!({
        "apiVersion": "dbward.dev/v1alpha1", "kind": "DatabaseService",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

pub fn service(name: &str, engine: Engine, connector: &str) -> DatabaseService {
    service_with(name, engine, connector, json!({}))
}

/// A context with one service, `svc`, on `engine` at `port`.
pub fn context(engine: Engine, port: u16) -> Context<LocalCluster> {
    context_with(engine, port, json!({}), AdmissionPolicySpec::default())
}

/// A context whose service `svc` has `extra` in its spec, under `policy`.
pub fn context_with(
    engine: Engine,
    port: u16,
    extra: Value,
    policy: AdmissionPolicySpec,
) -> Context<LocalCluster> {
    let mut cluster = LocalCluster::new();
    cluster.add_secret(connector("admin", engine, port));
    cluster.add_service(service_with("svc", engine, "admin", extra));
    cluster.set_policy(policy);
    Context::new(cluster, NS)
}

pub fn server(ctx: &Context<LocalCluster>) -> std::sync::Arc<Server> {
    ctx.servers()["svc"].clone()
}

/// A Database in namespace `team`.
pub fn database_object(name: &str, db: &str, policy: &str) -> Database {
    database_in("team", name, db, policy)
}

pub fn database_in(namespace: &str, name: &str, db: &str, policy: &str) -> Database {
    serde_json::from_value(json!({
        "apiVersion": "dbward.dev/v1alpha1", "kind": "Database",
        "metadata": {"name": name, "namespace": namespace,
                     "uid": format!("uid-{namespace}-{name}")},
        "spec": {"project": "proj", "serviceName": "svc", "databaseName": db,
                 "deletionPolicy": policy}
    }))
    .unwrap()
}

/// A ServiceUser in namespace `team` with `spec` merged into the binding.
pub fn user_object(name: &str, spec: Value) -> ServiceUser {
    user_in("team", name, spec)
}

pub fn user_in(namespace: &str, name: &str, spec: Value) -> ServiceUser {
    let mut full = json!({"project": "proj", "serviceName": "svc"});
    full.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "apiVersion": "dbward.dev/v1alpha1", "kind": "ServiceUser",
        "metadata": {"name": name, "namespace": namespace,
                     "uid": format!("uid-{namespace}-{name}")},
        "spec": full
    }))
    .unwrap()
}

pub fn claim_object(namespace: &str, name: &str, policy: &str) -> DatabaseClaim {
    serde_json::from_value(json!({
        "apiVersion": "dbward.dev/v1alpha1", "kind": "DatabaseClaim",
        "metadata": {"name": name, "namespace": namespace,
                     "uid": format!("uid-{namespace}-{name}")},
        "spec": {"project": "proj", "serviceName": "svc", "deletionPolicy": policy}
    }))
    .unwrap()
}

/// The value of `key` in Secret `namespace/name`, `None` when either is missing.
pub async fn secret_value(
    ctx: &Context<LocalCluster>,
    namespace: &str,
    name: &str,
    key: &str,
) -> Option<String> {
    let secret = ctx.cluster.get_secret(namespace, name).await.unwrap()?;
    decoded_data(&secret).remove(key)
}
