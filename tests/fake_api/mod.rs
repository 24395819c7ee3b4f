//! An in-memory Kubernetes API (`kube-fake-client`) holding dbward's kinds, for the
//! reconcilers' tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dbward::api::{
    ConnectionPool, Database, DatabaseClaim, DatabaseOpsRequest, DatabaseService, PostgresCluster,
    ServiceUser,
};
use kube::Client;
use kube_fake_client::ClientBuilder;

/// A client over `objects`.
pub async fn client(objects: Vec<serde_json::Value>) -> Client {
    counting_client(objects, Arc::default()).await
}

/// cert-manager's `Certificate` as the in-memory API stores it: the spec as written, the status
/// as the test (standing in for cert-manager) sets it.
#[derive(
    kube::CustomResource,
    schemars::JsonSchema,
    serde::Serialize,
    serde::Deserialize,
    Clone,
    Debug,
    Default,
)]
#[kube(
    derive = "Default",
    group = "cert-manager.io",
    version = "v1",
    kind = "Certificate",
    namespaced,
    status = "serde_json::Value"
)]
pub struct CertificateSpec {
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
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
        .with_resource::<Certificate>()
        .with_status_subresource::<Certificate>()
        .with_resource::<PostgresCluster>()
        .with_runtime_objects(objects)
        .with_interceptor_funcs(interceptors)
        .build()
        .await
        .expect("fake client")
}

/// `inner`, answering every request under `/apis/cert-manager.io` with 404 as an API server
/// without cert-manager does (the in-memory API serves no discovery at all).
pub fn without_cert_manager(inner: Client) -> Client {
    Client::new(
        CertManager {
            inner,
            served: false,
        },
        "default",
    )
}

/// `inner`, answering discovery of `cert-manager.io/v1` as an API server with cert-manager's
/// CRDs does; its `Certificate`s are stored by the in-memory API ([`Certificate`]). Nothing
/// issues them: the test does, as cert-manager would.
pub fn with_cert_manager(inner: Client) -> Client {
    Client::new(
        CertManager {
            inner,
            served: true,
        },
        "default",
    )
}

#[derive(Clone)]
pub struct CertManager {
    inner: Client,
    served: bool,
}

fn json_response(code: u16, body: &serde_json::Value) -> Response {
    hyper::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

type Request = hyper::Request<kube::client::Body>;
type Response = hyper::Response<kube::client::Body>;

impl tower_service::Service<Request> for CertManager {
    type Response = Response;
    type Error = kube::Error;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Response, kube::Error>> + Send + 'static>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), kube::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = self.inner.clone();
        let served = self.served;
        Box::pin(async move {
            let path = request.uri().path();
            if served && path.trim_end_matches('/') == "/apis/cert-manager.io/v1" {
                return Ok(json_response(
                    200,
                    &serde_json::json!({
                        "kind": "APIResourceList", "apiVersion": "v1",
                        "groupVersion": "cert-manager.io/v1",
                        "resources": [{"name": "certificates", "singularName": "certificate",
                            "namespaced": true, "kind": "Certificate",
                            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]
                    }),
                ));
            }
            if !served && path.starts_with("/apis/cert-manager.io") {
                return Ok(json_response(
                    404,
                    &serde_json::json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "reason": "NotFound", "code": 404,
                        "message": "the server could not find the requested resource"
                    }),
                ));
            }
            inner.send(request).await
        })
    }
}
