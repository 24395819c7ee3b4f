//! An in-memory Kubernetes API (`kube-fake-client`) holding dbward's kinds, for the
//! reconcilers' tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dbward::api::{
    ConnectionPool, Database, DatabaseClaim, DatabaseOpsRequest, DatabaseService, ServiceUser,
};
use kube::Client;
use kube_fake_client::ClientBuilder;

/// A client over `objects`.
pub async fn client(objects: Vec<serde_json::Value>) -> Client {
    counting_client(objects, Arc::default()).await
}

/// A client over `objects` that counts every GET in `gets`.
pub async fn counting_client(objects: Vec<serde_json::Value>, gets: Arc<AtomicUsize>) -> Client {
    // kube-fake-client 0.3 registers every custom resource as namespaced, so the cluster-scoped
    // DatabaseService is stored in `default` and a cluster-scoped GET is answered from there.
    let services: Vec<serde_json::Value> = objects
        .iter()
        .filter(|o| o["kind"] == "DatabaseService")
        .cloned()
        .collect();
    let interceptors = kube_fake_client::interceptor::Funcs::new().get(move |ctx| {
        gets.fetch_add(1, Ordering::Relaxed);
        if !ctx.namespace.is_empty() {
            return Ok(None);
        }
        Ok(services
            .iter()
            .find(|s| s["metadata"]["name"] == ctx.name)
            .cloned())
    });
    ClientBuilder::new()
        .with_resource::<DatabaseService>()
        .with_resource::<Database>()
        .with_resource::<ServiceUser>()
        .with_resource::<DatabaseClaim>()
        .with_resource::<ConnectionPool>()
        .with_resource::<DatabaseOpsRequest>()
        .with_runtime_objects(objects)
        .with_interceptor_funcs(interceptors)
        .build()
        .await
        .expect("fake client")
}
