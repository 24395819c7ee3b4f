//! The live snapshot against a real API server: runs against the one `KUBECONFIG` names (the
//! control plane of `../shared/kube-apiserver/` in CI, kind or a real cluster for a user), and
//! fails without one unless `DBWARD_E2E=0` skips it. It installs the CRDs, starts the webhook with `--kubeconfig`,
//! waits for `/readyz`, and checks that a review follows the cluster: denied while the
//! referenced DatabaseService is missing, allowed once it and its connector Secret exist.

mod webhook_support;

use std::time::Instant;

use bytes::Bytes;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};
use webhook_support::{
    Client, create_namespaces, eventually, fixture, install_crds, make_certs, readyz,
};

#[tokio::test]
async fn the_live_snapshot_follows_the_cluster() {
    let Some(kubeconfig) = webhook_support::live_kubeconfig() else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kube = dbward::webhook::live::client(Some(&kubeconfig))
        .await
        .unwrap();

    // The kinds the webhook watches.
    install_crds(&kube, &["DatabaseService", "AdmissionPolicy"]).await;

    let suffix = format!(
        "{:x}",
        std::process::id() ^ (Instant::now().elapsed().subsec_nanos())
    );
    let operator_ns = format!("dbward-live-{suffix}");
    let app_ns = format!("shop-{suffix}");
    let service_name = format!("pg-live-{suffix}");
    create_namespaces(&kube, &[&operator_ns, &app_ns]).await;
    let namespaces: Api<Namespace> = Api::all(kube.clone());

    let dir = tempfile::tempdir().unwrap();
    let bundle = make_certs(dir.path());
    let mut args = dbward::webhook::WebhookArgs::local(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        dbward::webhook::TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        },
    );
    args.no_kube = false;
    args.kubeconfig = Some(kubeconfig);
    args.namespace = operator_ns.clone();
    let server = dbward::webhook::start(&args).await.unwrap();
    let metrics_addr = server.metrics_addr;
    eventually("/readyz", || readyz(metrics_addr)).await;

    let mut review: Value = serde_json::from_slice(&fixture("create-connectionpool.json")).unwrap();
    review["request"]["namespace"] = json!(app_ns);
    review["request"]["object"]["metadata"]["namespace"] = json!(app_ns);
    review["request"]["object"]["spec"]["serviceName"] = json!(service_name);
    let body = Bytes::from(serde_json::to_vec(&review).unwrap());
    let client = Client::trusting(&bundle.ca_cert_pem, server.addr);
    let mut connection = client.connect().await.unwrap();

    // In a complete snapshot a missing service is an error, not a warning.
    let (_, answer) = connection.post("/validate", body.clone()).await.unwrap();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains(&service_name),
        "{answer}"
    );

    let secrets: Api<Secret> = Api::namespaced(kube.clone(), &operator_ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pg-connector", "labels": {"dbward.dev/connector-type": "shared-database"}},
        "stringData": {"type": "postgres", "endpoint": "127.0.0.1", "port": "5432", "user": "postgres", "password": "x"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("dbward.dev", "v1alpha1", "DatabaseService"),
        "databaseservices",
    );
    let services: Api<DynamicObject> = Api::all_with(kube.clone(), &resource);
    let service: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "dbward.dev/v1alpha1", "kind": "DatabaseService",
        "metadata": {"name": service_name},
        "spec": {
            "engine": "postgres", "project": "acme",
            "connectorSecretRef": {"name": "pg-connector", "namespace": operator_ns},
            "allowedNamespaces": {"names": [app_ns]}
        }
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();

    // What the caches have not seen yet is read from the API server: found by the e2e suite,
    // where one `kubectl apply` of a service and the objects using it was denied.
    let read_through = dbward::webhook::live::ReadThrough::new(kube.clone(), &operator_ns);
    let empty = dbward::admission::Snapshot::new(&operator_ns, true);
    let object = review["request"]["object"].clone();
    let completed = read_through
        .complete(&empty, "ConnectionPool", Some(&app_ns), &object)
        .await
        .expect("the service and the namespace are read through");
    assert!(completed.services.contains_key(&service_name));
    assert!(completed.namespaces.contains_key(&app_ns));
    let service_object = serde_json::to_value(&service).unwrap();
    let completed = read_through
        .complete(&empty, "DatabaseService", None, &service_object)
        .await
        .expect("the connector Secret is read through");
    assert!(
        completed
            .connector_secrets
            .contains_key(&(operator_ns.clone(), "pg-connector".to_string()))
    );

    let last = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    eventually("the review to be allowed once the service exists", || {
        let client = client.clone();
        let body = body.clone();
        let last = last.clone();
        async move {
            let mut connection = client.connect().await.unwrap();
            let (_, answer) = connection.post("/validate", body).await.unwrap();
            let answer: Value = serde_json::from_slice(&answer).unwrap();
            let allowed = answer["response"]["allowed"] == true;
            *last.lock().unwrap() = answer;
            allowed
        }
    })
    .await;
    let answer = last.lock().unwrap().clone();
    assert!(answer["response"].get("warnings").is_none(), "{answer}");

    server.shutdown().await;
    let _ = services
        .delete(&service_name, &DeleteParams::default())
        .await;
    for ns in [&operator_ns, &app_ns] {
        let _ = namespaces.delete(ns, &DeleteParams::default()).await;
    }
}
