//! Changing the pooler's issuer: a pooler serving a certificate from dbward's own CA gets a
//! `ReconfigureTLS` request naming a cert-manager `ClusterIssuer`. The in-memory API serves
//! cert-manager's `Certificate` ([`fake_api::with_cert_manager`]); the test stands in for
//! cert-manager, signing what the `Certificate` asks for with a second CA ("corp") into the
//! Secret it names. Afterwards the pool Secret carries the corp CA, a client that trusts it
//! connects with `sslmode=verify-full` after `RELOAD`, and the old CA no longer verifies.

use std::sync::Arc;

use dbward::api::DatabaseOpsRequest;
use dbward::certs::{new_ca, sign_serving};
use dbward::pgbouncer::tls_probe::{leaf_der, presented_certificate, reload_until_presented};
use dbward::reconcile::controller::{Advanced, State, advance};
use dbward::reconcile::pooler_tls::tls_secret_name;
use dbward::reconcile::secret::decoded_data;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use super::common::free_port;
use super::fake_api::{Certificate, with_cert_manager};
use super::pooler_support::{Bouncer, Names, text};
use super::{
    NS, console, materialise, ok, pool_secret, pooler_with_dbward_tls, psql, step_through,
    with_requests_on,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_issuer_serves_a_certificate_its_ca_verifies() {
    let tls = json!({
        "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer", "apiGroup": "cert-manager.io"},
        "sslMode": "verify-full"
    });
    with_requests_on(with_cert_manager, "corp-tls", tls, change_issuer).await;
}

/// Advances `name` until a step is retried; returns that error's message.
async fn advance_until_retried(
    state: &Arc<State>,
    requests: &Api<DatabaseOpsRequest>,
    name: &str,
) -> String {
    let mut request = requests.get(name).await.unwrap();
    for _ in 0..10 {
        match advance(state, &request).await {
            Ok(Advanced::Next(updated)) => request = *updated,
            Ok(Advanced::Stop(_)) => panic!("{name} stopped without waiting for its issuer"),
            Err(e) => return e.to_string(),
        }
    }
    panic!("{name} neither waited nor stopped");
}

/// What cert-manager's issuing controller does for a `Certificate` of a CA issuer: a key and a
/// certificate for its `dnsNames` signed by `ca`, with `ca.crt`, into `spec.secretName`
/// (labels and annotations from `secretTemplate`), then `Ready` for its generation.
async fn issue_as_cert_manager(client: &Client, name: &str, ca: &dbward::certs::KeyedCert) {
    let certificates: Api<Certificate> = Api::namespaced(client.clone(), NS);
    let certificate = certificates.get(name).await.unwrap();
    let spec = &certificate.spec.fields;
    let dns: Vec<String> = serde_json::from_value(spec["dnsNames"].clone()).unwrap();
    let now = OffsetDateTime::now_utc();
    let serving = sign_serving(
        ca,
        spec["commonName"].as_str().unwrap(),
        &dns,
        &[],
        now - Duration::minutes(5),
        now + Duration::days(90),
    )
    .unwrap();
    // The Secret exists (dbward's CA wrote it): cert-manager takes it over in place.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let secret_name = spec["secretName"].as_str().unwrap();
    let mut stored = secrets.get(secret_name).await.unwrap();
    let template = &spec["secretTemplate"];
    stored.metadata.labels = serde_json::from_value(template["labels"].clone()).unwrap();
    stored.metadata.annotations = serde_json::from_value(template["annotations"].clone()).unwrap();
    stored.data = Some(
        [
            ("tls.crt", &serving.cert_pem),
            ("tls.key", &serving.key_pem),
            ("ca.crt", &ca.cert_pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())))
        .collect(),
    );
    secrets
        .replace(secret_name, &PostParams::default(), &stored)
        .await
        .unwrap();
    let generation = certificate.metadata.generation.unwrap_or(1);
    certificates
        .patch_status(
            &certificate.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{
                "type": "Ready", "status": "True", "reason": "Ready",
                "message": "Certificate is up to date and has not expired",
                "observedGeneration": generation}]}})),
        )
        .await
        .unwrap();
}

async fn change_issuer(client: &Client, state: &Arc<State>, n: &Names, tmp: &std::path::Path) {
    let requests: Api<DatabaseOpsRequest> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    pooler_with_dbward_tls(client, state, n).await;
    let dbward_ca = pool_secret(client, n).await["CA_CERT"].clone();
    let first = decoded_data(&secrets.get(&tls_secret_name(&n.svc)).await.unwrap());

    let dir = tmp.join("pooler").join("tls");
    let port = free_port();
    materialise(client, n, &dir, port).await;
    let bouncer = Bouncer::start(&dir.join("pgbouncer.ini"), port);
    let secret = pool_secret(client, n).await;
    let before = presented_certificate("127.0.0.1", port, &secret["HOST"], &dbward_ca)
        .await
        .unwrap();
    assert_eq!(before, leaf_der(&first["tls.crt"]).unwrap());

    // The request asks cert-manager, then waits until the Certificate is issued.
    let waiting = advance_until_retried(state, &requests, "corp-tls").await;
    assert!(waiting.contains("no Ready condition yet"), "{waiting}");
    let certificate_name = format!("{}-pooler", n.svc);
    let certificate: Certificate = Api::namespaced(client.clone(), NS)
        .get(&certificate_name)
        .await
        .unwrap();
    assert_eq!(
        certificate.spec.fields["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
    assert_eq!(
        certificate.spec.fields["secretName"],
        tls_secret_name(&n.svc)
    );
    let now = OffsetDateTime::now_utc();
    let corp = new_ca(
        "corp CA",
        now - Duration::minutes(5),
        now + Duration::days(365),
    )
    .unwrap();
    issue_as_cert_manager(client, &certificate_name, &corp).await;
    assert_eq!(
        step_through(state, &requests, "corp-tls").await,
        [
            "ReconfigureTLS",
            "IssueCertificatesSucceeded",
            "CertificateSynced",
            "ReloadPods",
            "Successful"
        ]
    );
    let secret = pool_secret(client, n).await;
    assert_eq!(
        secret["CA_CERT"], corp.cert_pem,
        "the pool Secret carries the new CA"
    );
    assert_eq!(secret["SSLMODE"], "verify-full");
    let issued = decoded_data(&secrets.get(&tls_secret_name(&n.svc)).await.unwrap());

    // The kubelet updates the mounted Secret; RELOAD (the ReloadPods step, when a pod runs)
    // makes PgBouncer present the corp certificate to new handshakes.
    materialise(client, n, &dir, port).await;
    let console = console(&secrets, n, port).await;
    assert!(
        reload_until_presented(
            &console,
            &secret["HOST"],
            &corp.cert_pem,
            &issued["tls.crt"]
        )
        .await
        .unwrap(),
        "{}",
        bouncer.log()
    );
    let corp_root = tmp.join("corp-ca.crt");
    std::fs::write(&corp_root, &secret["CA_CERT"]).unwrap();
    ok(&psql(&secret, port, "verify-full", &corp_root), &bouncer);
    // A client still trusting only dbward's CA no longer verifies the pooler.
    let old_root = tmp.join("dbward-ca.crt");
    std::fs::write(&old_root, &dbward_ca).unwrap();
    let refused = psql(&secret, port, "verify-full", &old_root);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("certificate verify failed"),
        "{}",
        text(&refused.stderr)
    );
}
