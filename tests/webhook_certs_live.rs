//! dbward's own CA against a real API server (`--self-managed-certs`): runs against the cluster
//! `KUBECONFIG` names, and fails without one unless `DBWARD_E2E=0` skips it.
//!
//! With webhook configurations applied without a CA bundle, a webhook started in self-managed
//! mode creates the CA and serving certificate Secrets, writes the files and injects the bundle:
//! a client trusting only the CA from the Secret gets reviews answered, and so does the API
//! server. A second replica reuses the CA; an almost-expired certificate is renewed and served
//! without a restart; a configuration re-applied without a bundle gets it back.
//!
//! The configurations get a name of their own and an object selector matching only this test's
//! objects, so other suites on the same cluster never reach this webhook.

mod webhook_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use webhook_support::{Client, create_namespaces, eventually, fixture, install_crds, readyz};

use dbward::certs::plan::CertInfo;
use dbward::certs::self_managed::SelfManagedCertsArgs;
use dbward::certs::{KeyedCert, service_dns_names, sign_serving};
use dbward::runtime::webhook::{ServeError, WebhookCommand, serve_webhook};
use dbward::webhook::{RunningWebhook, TlsFiles, WebhookArgs};
use dbward::webhook_config::{WebhookConfigArgs, configurations};

const CA_SECRET: &str = "dbward-webhook-ca";
const TLS_SECRET: &str = "dbward-webhook-tls";
const TEST_LABEL: &str = "dbward.dev/certs-test";

fn data(secret: &Secret, key: &str) -> String {
    let bytes = &secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("Secret {:?} has no key {key}", secret.metadata.name))
        .0;
    String::from_utf8(bytes.clone()).unwrap()
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The CA bundle of every webhook of both configurations.
async fn bundles(kube: &kube::Client, name: &str) -> Vec<Option<Vec<u8>>> {
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(kube.clone());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(kube.clone());
    let mut found = Vec::new();
    for webhook in validating.get(name).await.unwrap().webhooks.unwrap() {
        found.push(webhook.client_config.ca_bundle.map(|b| b.0));
    }
    for webhook in mutating.get(name).await.unwrap().webhooks.unwrap() {
        found.push(webhook.client_config.ca_bundle.map(|b| b.0));
    }
    found
}

fn args(
    kubeconfig: &Path,
    namespace: &str,
    configuration: &str,
    dir: &Path,
    listen: std::net::SocketAddr,
) -> WebhookCommand {
    let mut args = WebhookArgs::local(
        listen,
        "127.0.0.1:0".parse().unwrap(),
        TlsFiles {
            cert: dir.join("tls/tls.crt"),
            key: dir.join("tls/tls.key"),
        },
    );
    args.no_kube = false;
    args.kubeconfig = Some(kubeconfig.to_path_buf());
    args.namespace = namespace.to_string();
    args.tls_reload_interval = Duration::from_millis(200);
    let mut certs = SelfManagedCertsArgs {
        self_managed_certs: true,
        certs_dns: vec!["localhost".to_string()],
        webhook_configuration: configuration.to_string(),
        ..SelfManagedCertsArgs::default()
    };
    certs.certs_check_interval = Duration::from_secs(1);
    WebhookCommand {
        webhook: args,
        certs,
    }
}

/// Serves the webhook as `dbward webhook` does.
async fn start(command: &WebhookCommand) -> Result<RunningWebhook, ServeError> {
    serve_webhook(&command.webhook, &command.certs, None).await
}

/// Whether a new connection to `server` is served `cert_pem`.
async fn serves(server: &RunningWebhook, ca_pem: &str, cert_pem: &str) -> bool {
    let client = Client::trusting(ca_pem, server.addr);
    match client.connect().await {
        Ok(connection) => connection.peer_certificate == der(cert_pem),
        Err(_) => false,
    }
}

fn files_hold(dir: &Path, tls: &Secret) -> bool {
    std::fs::read_to_string(dir.join("tls/tls.crt")).ok() == Some(data(tls, "tls.crt"))
        && std::fs::read_to_string(dir.join("tls/tls.key")).ok() == Some(data(tls, "tls.key"))
}

#[tokio::test]
async fn dbward_keeps_its_own_ca_and_certificates() {
    let Some(kubeconfig) = webhook_support::live_kubeconfig() else {
        return;
    };
    // RUST_LOG=dbward=info shows what the webhooks did.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kube = dbward::webhook::live::client(Some(&kubeconfig))
        .await
        .unwrap();

    // The kinds the webhook watches, and Database for the API server's call.
    install_crds(&kube, &["DatabaseService", "AdmissionPolicy", "Database"]).await;

    let suffix = format!("{:x}", std::process::id() ^ now() as u32);
    let operator_ns = format!("dbward-certs-{suffix}");
    let app_ns = format!("certs-app-{suffix}");
    let configuration = format!("dbward-certs-{suffix}");
    create_namespaces(&kube, &[&operator_ns, &app_ns]).await;
    let namespaces: Api<Namespace> = Api::all(kube.clone());

    // The configurations, by URL and without a CA bundle, reaching only this test's objects.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config_args = WebhookConfigArgs {
        namespace: operator_ns.clone(),
        url: Some(format!("https://localhost:{port}")),
        ..WebhookConfigArgs::default()
    };
    let (mut validating, mut mutating) = configurations(&config_args, None).unwrap();
    let only_ours = LabelSelector {
        match_labels: Some(BTreeMap::from([(TEST_LABEL.to_string(), suffix.clone())])),
        match_expressions: None,
    };
    validating.metadata.name = Some(configuration.clone());
    mutating.metadata.name = Some(configuration.clone());
    for webhook in validating.webhooks.iter_mut().flatten() {
        webhook.object_selector = Some(only_ours.clone());
    }
    for webhook in mutating.webhooks.iter_mut().flatten() {
        webhook.object_selector = Some(only_ours.clone());
    }
    let validating_api: Api<ValidatingWebhookConfiguration> = Api::all(kube.clone());
    let mutating_api: Api<MutatingWebhookConfiguration> = Api::all(kube.clone());
    validating_api
        .create(&PostParams::default(), &validating)
        .await
        .unwrap();
    mutating_api
        .create(&PostParams::default(), &mutating)
        .await
        .unwrap();

    // First replica: everything is made before it serves.
    let dir1 = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{port}").parse().unwrap();
    let first = start(&args(
        &kubeconfig,
        &operator_ns,
        &configuration,
        dir1.path(),
        listen,
    ))
    .await
    .unwrap();

    let secrets: Api<Secret> = Api::namespaced(kube.clone(), &operator_ns);
    let ca_secret = secrets.get(CA_SECRET).await.unwrap();
    let tls_secret = secrets.get(TLS_SECRET).await.unwrap();
    let ca_pem = data(&ca_secret, "ca.crt");
    assert!(data(&ca_secret, "ca.key").contains("PRIVATE KEY"));
    assert_eq!(tls_secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(data(&tls_secret, "ca.crt"), ca_pem);
    let serving = CertInfo::parse_pem(&data(&tls_secret, "tls.crt")).unwrap();
    let ca = CertInfo::parse_pem(&ca_pem).unwrap();
    assert!(serving[0].is_signed_by(&ca[0]));
    let mut names = service_dns_names("dbward-webhook", &operator_ns);
    names.push("localhost".into());
    assert_eq!(serving[0].dns_names, names.iter().cloned().collect());
    assert!(files_hold(dir1.path(), &tls_secret));
    assert_eq!(
        bundles(&kube, &configuration).await,
        vec![Some(ca_pem.clone().into_bytes()); 2],
        "the CA bundle is in every webhook"
    );

    // A client that trusts only the CA from the Secret gets a review answered.
    let client = Client::trusting(&ca_pem, first.addr);
    let mut connection = client.connect().await.unwrap();
    assert_eq!(
        connection.peer_certificate,
        der(&data(&tls_secret, "tls.crt"))
    );
    let (status, answer) = connection
        .post(
            "/validate",
            Bytes::from(fixture("create-connectionpool.json")),
        )
        .await
        .unwrap();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, 200);
    assert!(answer["response"]["allowed"].is_boolean(), "{answer}");

    // So does the API server, which checks the certificate against the injected bundle.
    let metrics_addr = first.metrics_addr;
    eventually("/readyz", || readyz(metrics_addr)).await;
    let databases: Api<DynamicObject> = Api::namespaced_with(
        kube.clone(),
        &app_ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("dbward.dev", "v1alpha1", "Database"),
            "databases",
        ),
    );
    let probe: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "dbward.dev/v1alpha1", "kind": "Database",
        "metadata": {"name": "probe", "namespace": app_ns, "labels": {TEST_LABEL: suffix}},
        "spec": {"project": "platform", "serviceName": "no-such-service"}
    }))
    .unwrap();
    let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    eventually("the API server to call the webhook over TLS", || {
        let databases = databases.clone();
        let probe = probe.clone();
        let last = last.clone();
        async move {
            let dry_run = PostParams {
                dry_run: true,
                field_manager: None,
            };
            let outcome = match databases.create(&dry_run, &probe).await {
                Ok(_) => "created".to_string(),
                Err(error) => error.to_string(),
            };
            let answered = outcome.contains("no DatabaseService has this name");
            *last.lock().unwrap() = outcome;
            answered
        }
    })
    .await;
    assert!(!last.lock().unwrap().contains("failed calling webhook"));

    // A second replica reuses the CA and the certificate.
    let dir2 = tempfile::tempdir().unwrap();
    let second = start(&args(
        &kubeconfig,
        &operator_ns,
        &configuration,
        dir2.path(),
        "127.0.0.1:0".parse().unwrap(),
    ))
    .await
    .unwrap();
    let ca_after = secrets.get(CA_SECRET).await.unwrap();
    assert_eq!(data(&ca_after, "ca.crt"), ca_pem);
    assert_eq!(
        ca_after.metadata.resource_version,
        ca_secret.metadata.resource_version
    );
    let tls_after = secrets.get(TLS_SECRET).await.unwrap();
    assert_eq!(data(&tls_after, "tls.crt"), data(&tls_secret, "tls.crt"));
    assert!(files_hold(dir2.path(), &tls_after));
    assert!(serves(&second, &ca_pem, &data(&tls_secret, "tls.crt")).await);

    // An almost-expired certificate is renewed and served without a restart, by both.
    let ca_keyed = KeyedCert {
        cert_pem: ca_pem.clone(),
        key_pem: data(&ca_secret, "ca.key"),
    };
    let now_time = time::OffsetDateTime::now_utc();
    let expiring = sign_serving(
        &ca_keyed,
        "expiring",
        &names,
        &[],
        now_time - time::Duration::days(60),
        now_time + time::Duration::hours(1),
    )
    .unwrap();
    let mut replaced = tls_after.clone();
    let mut secret_data = replaced.data.clone().unwrap();
    secret_data.insert(
        "tls.crt".into(),
        k8s_openapi::ByteString(expiring.cert_pem.clone().into_bytes()),
    );
    secret_data.insert(
        "tls.key".into(),
        k8s_openapi::ByteString(expiring.key_pem.clone().into_bytes()),
    );
    replaced.data = Some(secret_data);
    secrets
        .replace(TLS_SECRET, &PostParams::default(), &replaced)
        .await
        .unwrap();
    let renewed = std::sync::Arc::new(std::sync::Mutex::new(None::<Secret>));
    eventually("the expiring certificate to be renewed", || {
        let secrets = secrets.clone();
        let renewed = renewed.clone();
        let expiring = expiring.cert_pem.clone();
        let old = data(&tls_secret, "tls.crt");
        async move {
            let secret = secrets.get(TLS_SECRET).await.unwrap();
            let cert = data(&secret, "tls.crt");
            let done = cert != expiring && cert != old;
            if done {
                *renewed.lock().unwrap() = Some(secret);
            }
            done
        }
    })
    .await;
    let renewed = renewed.lock().unwrap().clone().unwrap();
    let renewed_cert = data(&renewed, "tls.crt");
    let info = CertInfo::parse_pem(&renewed_cert).unwrap().remove(0);
    assert!(info.not_after > now() + 80 * 86_400, "{info:?}");
    assert!(info.is_signed_by(&ca[0]));
    for (server, dir) in [(&first, dir1.path()), (&second, dir2.path())] {
        eventually("both replicas to serve the renewed certificate", || {
            let ca_pem = ca_pem.clone();
            let renewed_cert = renewed_cert.clone();
            async move { serves(server, &ca_pem, &renewed_cert).await }
        })
        .await;
        assert!(files_hold(dir, &renewed));
    }
    assert_eq!(
        secrets
            .get(CA_SECRET)
            .await
            .unwrap()
            .metadata
            .resource_version,
        ca_secret.metadata.resource_version,
        "renewing the serving certificate leaves the CA alone"
    );

    // A configuration re-applied without a CA bundle (an upgrade) gets it back.
    let mut stripped = validating_api.get(&configuration).await.unwrap();
    for webhook in stripped.webhooks.iter_mut().flatten() {
        webhook.client_config.ca_bundle = None;
    }
    validating_api
        .replace(&configuration, &PostParams::default(), &stripped)
        .await
        .unwrap();
    let mut stripped = mutating_api.get(&configuration).await.unwrap();
    for webhook in stripped.webhooks.iter_mut().flatten() {
        webhook.client_config.ca_bundle = None;
    }
    mutating_api
        .replace(&configuration, &PostParams::default(), &stripped)
        .await
        .unwrap();
    eventually("the CA bundle to be injected again", || {
        let kube = kube.clone();
        let configuration = configuration.clone();
        let ca_pem = ca_pem.clone();
        async move { bundles(&kube, &configuration).await == vec![Some(ca_pem.into_bytes()); 2] }
    })
    .await;

    first.shutdown().await;
    second.shutdown().await;

    // Two replicas starting at once in an empty namespace (and without configurations, which is
    // not fatal) agree on one CA and one certificate: the loser of each create reads the winner's.
    let race_ns = format!("dbward-certs-race-{suffix}");
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": race_ns}})).unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let (dir3, dir4) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let missing = format!("no-such-configuration-{suffix}");
    let any_port = "127.0.0.1:0".parse().unwrap();
    let args3 = args(&kubeconfig, &race_ns, &missing, dir3.path(), any_port);
    let args4 = args(&kubeconfig, &race_ns, &missing, dir4.path(), any_port);
    let (third, fourth) = tokio::join!(start(&args3), start(&args4));
    let (third, fourth) = (third.unwrap(), fourth.unwrap());
    let race_secrets: Api<Secret> = Api::namespaced(kube.clone(), &race_ns);
    let race_ca = data(&race_secrets.get(CA_SECRET).await.unwrap(), "ca.crt");
    let race_tls = race_secrets.get(TLS_SECRET).await.unwrap();
    assert_ne!(race_ca, ca_pem);
    for (server, dir) in [(&third, dir3.path()), (&fourth, dir4.path())] {
        assert!(files_hold(dir, &race_tls));
        assert!(serves(server, &race_ca, &data(&race_tls, "tls.crt")).await);
    }
    third.shutdown().await;
    fourth.shutdown().await;
    let _ = namespaces.delete(&race_ns, &DeleteParams::default()).await;
    let _ = validating_api
        .delete(&configuration, &DeleteParams::default())
        .await;
    let _ = mutating_api
        .delete(&configuration, &DeleteParams::default())
        .await;
    for ns in [&operator_ns, &app_ns] {
        let _ = namespaces.delete(ns, &DeleteParams::default()).await;
    }
}
