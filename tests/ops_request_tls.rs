//! DatabaseOpsRequest `ReconfigureTLS` on a DatabaseService's pooler, through the controller's
//! transitions (`controller::advance`) against the in-memory Kubernetes API and the real
//! PostgreSQL; the pooler the ConnectionPool reconciler then renders (its ConfigMap, auth
//! Secret and the request's serving Secret, as the pod would mount them) runs in Debian's
//! `pgbouncer` on a free loopback port, and `psql` connects with the pool Secret's values:
//! after adding TLS, `sslmode=verify-full` with the Secret's `CA_CERT` connects (and another CA
//! or plaintext does not); after rotating the certificate, `RELOAD` (as the `ReloadPods` step
//! sends it) makes new handshakes present the new certificate while a session opened before
//! stays up; after removing TLS, plaintext connects and `sslmode=require` fails. Changing the
//! issuer to a cert-manager one is in [`issuer`].

mod common;
mod fake_api;
#[path = "ops_request_tls/issuer.rs"]
mod issuer;
mod pooler_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use common::free_port;
use dbward::api::{ConnectionPool, Database, DatabaseOpsRequest, ServiceUser};
use dbward::reconcile::controller::{Advanced, State, advance, reconcile};
use dbward::reconcile::pooler_tls::{ca_secret_name, tls_secret_name};
use dbward::reconcile::secret::decoded_data;
use futures::FutureExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::Api;
use pooler_support::{Bouncer, Names, cleanup, text};
use serde_json::{Value, json};

use fake_api::without_cert_manager;

async fn client(objects: Vec<Value>) -> Client {
    without_cert_manager(fake_api::client(objects).await)
}

/// How the in-memory API answers for cert-manager.io ([`fake_api::with_cert_manager`] or
/// [`without_cert_manager`]).
type CertManagerApi = fn(Client) -> Client;

const NS: &str = "dbward-system";

fn objects(n: &Names, requests: Vec<Value>) -> Vec<Value> {
    let Names {
        ns, svc, db, user, ..
    } = n;
    vec![
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "pg-admin", "namespace": NS,
                         "labels": {"dbward.dev/connector-type": "shared-database"}},
            "stringData": {"endpoint": "127.0.0.1", "port": "5432", "user": "postgres",
                           "password": "", "type": "postgres", "sslmode": "disable"}
        }),
        json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "DatabaseService",
            "metadata": {"name": svc, "uid": "svc-uid"},
            "spec": {"engine": "postgres", "project": "proj",
                     "connectorSecretRef": {"name": "pg-admin"},
                     "allowedNamespaces": {"names": ["*"]}}
        }),
        json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "Database",
            "metadata": {"name": "db", "namespace": ns},
            "spec": {"project": "proj", "serviceName": svc, "databaseName": db,
                     "deletionPolicy": "Delete"}
        }),
        json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "ServiceUser",
            "metadata": {"name": "app", "namespace": ns},
            "spec": {"project": "proj", "serviceName": svc, "username": user,
                     "privileges": [{"database": db, "level": "readWrite"}]}
        }),
        json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "ConnectionPool",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"project": "proj", "serviceName": svc, "databaseName": db,
                     "username": user, "poolMode": "session", "poolSize": 3}
        }),
    ]
    .into_iter()
    .chain(requests)
    .collect()
}

fn add_tls(svc: &str) -> Value {
    request(
        "add-tls",
        svc,
        "2026-01-01T00:00:00Z",
        json!({"sslMode": "verify-full", "clientAuthMode": "scram"}),
    )
}

fn request(name: &str, svc: &str, created: &str, tls: Value) -> Value {
    json!({
        "apiVersion": "dbward.dev/v1alpha1", "kind": "DatabaseOpsRequest",
        "metadata": {"name": name, "namespace": NS, "uid": format!("{name}-uid"),
                     "generation": 1, "creationTimestamp": created},
        "spec": {"type": "ReconfigureTLS", "serviceRef": {"name": svc}, "tls": tls,
                 "timeout": "5m", "apply": "Always"}
    })
}

/// `scenario` on a fresh in-memory API holding the fixture, the add-TLS request and the request
/// `then_name` with `spec.tls` `then_tls` (created a minute later); what it made on the server
/// is dropped whatever happens (an assertion in the scenario panics).
async fn with_requests(
    then_name: &str,
    then_tls: Value,
    scenario: impl AsyncFnOnce(&Client, &Arc<State>, &Names, &Path),
) {
    with_requests_on(without_cert_manager, then_name, then_tls, scenario).await
}

/// [`with_requests`] on an in-memory API that answers for cert-manager.io as `cert_manager`.
async fn with_requests_on(
    cert_manager: CertManagerApi,
    then_name: &str,
    then_tls: Value,
    scenario: impl AsyncFnOnce(&Client, &Arc<State>, &Names, &Path),
) {
    let n = Names::new();
    let then = request(then_name, &n.svc, "2026-01-01T00:01:00Z", then_tls);
    let client = cert_manager(fake_api::client(objects(&n, vec![add_tls(&n.svc), then])).await);
    let state = Arc::new(State::new(client.clone(), NS, false));
    let tmp = tempfile::tempdir().unwrap();
    let result = std::panic::AssertUnwindSafe(scenario(&client, &state, &n, tmp.path()))
        .catch_unwind()
        .await;
    cleanup(&n).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_then_remove_tls_on_the_pooler_through_pgbouncer() {
    with_requests("remove-tls", json!({"remove": true}), scenario).await;
}

/// Advances `name` until it stops; returns the condition types it recorded, in order.
async fn step_through(
    state: &Arc<State>,
    requests: &Api<DatabaseOpsRequest>,
    name: &str,
) -> Vec<String> {
    let mut request = requests.get(name).await.unwrap();
    for _ in 0..10 {
        match advance(state, &request).await.unwrap() {
            Advanced::Next(updated) => request = *updated,
            Advanced::Stop(_) => break,
        }
    }
    let request = requests.get(name).await.unwrap();
    let status = request.status.expect("status");
    assert_eq!(
        status.phase.as_deref(),
        Some("Successful"),
        "{:?}",
        status.conditions
    );
    status.conditions.iter().map(|c| c.type_.clone()).collect()
}

async fn pool_secret(client: &Client, n: &Names) -> BTreeMap<String, String> {
    let secret: Secret = Api::namespaced(client.clone(), &n.ns)
        .get("web")
        .await
        .unwrap();
    decoded_data(&secret)
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches("CONNECTIONPOOL_").to_owned(), v))
        .collect()
}

/// The pooler's files as its pod mounts them (ConfigMap, auth Secret, the serving Secret when
/// there is one), in one directory, listening on `port` on the loopback.
async fn materialise(client: &Client, n: &Names, dir: &Path, port: u16) {
    let name = format!("{}-pooler", n.svc);
    std::fs::create_dir_all(dir).unwrap();
    let config: ConfigMap = Api::namespaced(client.clone(), NS)
        .get(&name)
        .await
        .unwrap();
    let auth: Secret = Api::namespaced(client.clone(), NS)
        .get(&name)
        .await
        .unwrap();
    let here = dir.display().to_string();
    let data = config.data.unwrap();
    let ini = data["pgbouncer.ini"]
        .replace("/etc/pgbouncer/config", &here)
        .replace("/etc/pgbouncer/auth", &here)
        .replace("/etc/pgbouncer/tls", &here)
        .replace("listen_addr = 0.0.0.0", "listen_addr = 127.0.0.1")
        .replace("listen_port = 5432", &format!("listen_port = {port}"));
    std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
    std::fs::write(dir.join("hba.conf"), &data["hba.conf"]).unwrap();
    std::fs::write(
        dir.join("userlist.txt"),
        &decoded_data(&auth)["userlist.txt"],
    )
    .unwrap();
    let tls: Option<Secret> = Api::namespaced(client.clone(), NS)
        .get_opt(&tls_secret_name(&n.svc))
        .await
        .unwrap();
    for (key, value) in tls.as_ref().map(decoded_data).unwrap_or_default() {
        std::fs::write(dir.join(key), value).unwrap();
    }
}

/// `psql` through the pooler with the pool Secret's values, reaching the Secret's host name at
/// the loopback (`hostaddr`), as `sslmode` with `root` as the CA file.
fn psql(secret: &BTreeMap<String, String>, port: u16, sslmode: &str, root: &Path) -> Output {
    Command::new("psql")
        .args(["-tAc", "SELECT 1"])
        .env("PGHOST", &secret["HOST"])
        .env("PGHOSTADDR", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", &secret["USER"])
        .env("PGPASSWORD", &secret["PASSWORD"])
        .env("PGDATABASE", &secret["DATABASE"])
        .env("PGSSLMODE", sslmode)
        .env("PGSSLROOTCERT", root)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap()
}

fn ok(out: &Output, bouncer: &Bouncer) {
    assert!(
        out.status.success() && text(&out.stdout).trim() == "1",
        "{}{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        bouncer.log()
    );
}

fn tls_volume(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "tls")
        .and_then(|v| v.secret.as_ref()?.secret_name.clone())
}

async fn scenario(client: &Client, state: &Arc<State>, n: &Names, tmp: &Path) {
    let dbs: Api<Database> = Api::namespaced(client.clone(), &n.ns);
    let users: Api<ServiceUser> = Api::namespaced(client.clone(), &n.ns);
    let pools: Api<ConnectionPool> = Api::namespaced(client.clone(), &n.ns);
    let requests: Api<DatabaseOpsRequest> = Api::namespaced(client.clone(), NS);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let pooler = format!("{}-pooler", n.svc);
    reconcile(Arc::new(dbs.get("db").await.unwrap()), state.clone())
        .await
        .unwrap();
    reconcile(Arc::new(users.get("app").await.unwrap()), state.clone())
        .await
        .unwrap();
    // No kubelet: the objects are written, the pool waits for pods.
    let err = reconcile(Arc::new(pools.get("web").await.unwrap()), state.clone())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "PoolerNotReady", "{err}");
    let before = pool_secret(client, n).await;
    assert_eq!(
        (before["SSLMODE"].as_str(), before["CA_CERT"].as_str()),
        ("disable", "")
    );
    assert_eq!(tls_volume(&deployments.get(&pooler).await.unwrap()), None);

    // Add TLS (dbward's own CA). The remove request, created later, waits for it.
    assert_eq!(
        step_through(state, &requests, "add-tls").await,
        [
            "ReconfigureTLS",
            "IssueCertificatesSucceeded",
            "CertificateSynced",
            "Successful"
        ]
    );
    let ca = decoded_data(&secrets.get(&ca_secret_name(&n.svc)).await.unwrap());
    let serving = secrets.get(&tls_secret_name(&n.svc)).await.unwrap();
    assert_eq!(serving.type_.as_deref(), Some("kubernetes.io/tls"));
    let serving = decoded_data(&serving);
    assert_eq!(serving["ca.crt"], ca["ca.crt"]);
    let secret = pool_secret(client, n).await;
    assert_eq!(secret["SSLMODE"], "verify-full");
    assert_eq!(
        secret["CA_CERT"], ca["ca.crt"],
        "the pool Secret carries the CA"
    );
    assert_eq!(secret["HOST"], format!("{pooler}.{NS}.svc"));
    assert_eq!(
        tls_volume(&deployments.get(&pooler).await.unwrap()).as_deref(),
        Some(tls_secret_name(&n.svc).as_str())
    );
    let config: ConfigMap = Api::namespaced(client.clone(), NS)
        .get(&pooler)
        .await
        .unwrap();
    let ini = &config.data.as_ref().unwrap()["pgbouncer.ini"];
    assert!(
        ini.contains("client_tls_cert_file = /etc/pgbouncer/tls/tls.crt\n"),
        "{ini}"
    );

    let dir = tmp.join("pooler").join("tls");
    let port = free_port();
    materialise(client, n, &dir, port).await;
    let root = tmp.join("pool-ca.crt");
    std::fs::write(&root, &secret["CA_CERT"]).unwrap();
    {
        let bouncer = Bouncer::start(&dir.join("pgbouncer.ini"), port);
        ok(&psql(&secret, port, "verify-full", &root), &bouncer);
        // Another CA does not verify the pooler's certificate.
        let other = tmp.join("other-ca.crt");
        let other_ca = dbward::reconcile::pooler_tls::ca_or_new("other", None).unwrap();
        std::fs::write(&other, &other_ca.keyed.cert_pem).unwrap();
        let refused = psql(&secret, port, "verify-full", &other);
        assert!(!refused.status.success());
        assert!(
            text(&refused.stderr).contains("certificate verify failed"),
            "{}",
            text(&refused.stderr)
        );
        // Without TLS, the pooler refuses the client.
        let plain = psql(&secret, port, "disable", &root);
        assert!(!plain.status.success(), "{}", text(&plain.stdout));
    }

    // Remove TLS.
    assert_eq!(
        step_through(state, &requests, "remove-tls").await,
        [
            "ReconfigureTLS",
            "CertificatesRemoved",
            "CertificateSynced",
            "Successful"
        ]
    );
    assert!(
        secrets
            .get_opt(&tls_secret_name(&n.svc))
            .await
            .unwrap()
            .is_none()
    );
    let secret = pool_secret(client, n).await;
    assert_eq!(
        (secret["SSLMODE"].as_str(), secret["CA_CERT"].as_str()),
        ("disable", "")
    );
    assert_eq!(tls_volume(&deployments.get(&pooler).await.unwrap()), None);
    let dir = tmp.join("pooler").join("plain");
    let port = free_port();
    materialise(client, n, &dir, port).await;
    let bouncer = Bouncer::start(&dir.join("pgbouncer.ini"), port);
    ok(&psql(&secret, port, "disable", &root), &bouncer);
    let require = psql(&secret, port, "require", &root);
    assert!(!require.status.success());
    assert!(
        text(&require.stderr).contains("server does not support SSL"),
        "{}",
        text(&require.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_certificates_reloads_and_keeps_sessions() {
    with_requests("rotate-tls", json!({"rotateCertificates": true}), rotation).await;
}

fn serial(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial().to_vec()
}

/// A session over TLS (verified against `ca` and the Secret's host name, reached at the
/// loopback), kept open by the caller.
async fn tls_session(
    secret: &BTreeMap<String, String>,
    port: u16,
    ca: &str,
) -> tokio_postgres::Client {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let (session, connection) = tokio_postgres::Config::new()
        .host(&secret["HOST"])
        .hostaddr("127.0.0.1".parse().unwrap())
        .port(port)
        .dbname(&secret["DATABASE"])
        .user(&secret["USER"])
        .password(&secret["PASSWORD"])
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(config))
        .await
        .unwrap();
    tokio::spawn(connection);
    session
}

/// The database, the user and the pool reconciled (the pooler's objects written), then the
/// add-TLS request run to `Successful`: the pooler serves a certificate from dbward's CA.
async fn pooler_with_dbward_tls(client: &Client, state: &Arc<State>, n: &Names) {
    let dbs: Api<Database> = Api::namespaced(client.clone(), &n.ns);
    let users: Api<ServiceUser> = Api::namespaced(client.clone(), &n.ns);
    let pools: Api<ConnectionPool> = Api::namespaced(client.clone(), &n.ns);
    let requests: Api<DatabaseOpsRequest> = Api::namespaced(client.clone(), NS);
    reconcile(Arc::new(dbs.get("db").await.unwrap()), state.clone())
        .await
        .unwrap();
    reconcile(Arc::new(users.get("app").await.unwrap()), state.clone())
        .await
        .unwrap();
    let _ = reconcile(Arc::new(pools.get("web").await.unwrap()), state.clone()).await;
    step_through(state, &requests, "add-tls").await;
}

/// PgBouncer's admin console on the loopback `port`, with the auth Secret's admin password.
async fn console(secrets: &Api<Secret>, n: &Names, port: u16) -> dbward::pgbouncer::admin::Console {
    let auth: Secret = secrets.get(&format!("{}-pooler", n.svc)).await.unwrap();
    dbward::pgbouncer::admin::Console {
        host: "127.0.0.1".into(),
        port,
        user: dbward::reconcile::pooler::ADMIN_USER.into(),
        password: decoded_data(&auth)[dbward::reconcile::pooler::ADMIN_PASSWORD_KEY].clone(),
    }
}

async fn rotation(client: &Client, state: &Arc<State>, n: &Names, tmp: &Path) {
    use dbward::pgbouncer::tls_probe::{leaf_der, presented_certificate, reload_until_presented};
    let requests: Api<DatabaseOpsRequest> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    pooler_with_dbward_tls(client, state, n).await;
    let secret = pool_secret(client, n).await;
    let ca = secret["CA_CERT"].clone();
    let first = decoded_data(&secrets.get(&tls_secret_name(&n.svc)).await.unwrap());

    let dir = tmp.join("pooler").join("tls");
    let port = free_port();
    materialise(client, n, &dir, port).await;
    let bouncer = Bouncer::start(&dir.join("pgbouncer.ini"), port);
    let before = presented_certificate("127.0.0.1", port, &secret["HOST"], &ca)
        .await
        .unwrap();
    assert_eq!(before, leaf_der(&first["tls.crt"]).unwrap());
    let session = tls_session(&secret, port, &ca).await;
    session.simple_query("SELECT 1").await.unwrap();

    assert_eq!(
        step_through(state, &requests, "rotate-tls").await,
        [
            "ReconfigureTLS",
            "IssueCertificatesSucceeded",
            "CertificateSynced",
            "ReloadPods",
            "Successful"
        ]
    );
    let rotated = decoded_data(&secrets.get(&tls_secret_name(&n.svc)).await.unwrap());
    assert_ne!(rotated["tls.crt"], first["tls.crt"]);
    assert_eq!(rotated["ca.crt"], first["ca.crt"], "the CA is kept");
    assert_eq!(pool_secret(client, n).await["CA_CERT"], ca);

    // The new files at the same paths, as the kubelet updates the mounted Secret: PgBouncer
    // still presents what it loaded until RELOAD.
    materialise(client, n, &dir, port).await;
    let stale = presented_certificate("127.0.0.1", port, &secret["HOST"], &ca)
        .await
        .unwrap();
    assert_eq!(stale, before, "{}", bouncer.log());
    let console = console(&secrets, n, port).await;
    assert!(
        reload_until_presented(&console, &secret["HOST"], &ca, &rotated["tls.crt"])
            .await
            .unwrap(),
        "{}",
        bouncer.log()
    );
    let after = presented_certificate("127.0.0.1", port, &secret["HOST"], &ca)
        .await
        .unwrap();
    assert_eq!(after, leaf_der(&rotated["tls.crt"]).unwrap());
    assert_ne!(serial(&after), serial(&before), "a new serial");
    // The session opened before the rotation is still up; new clients verify the new one.
    let rows = session.simple_query("SELECT 1").await.unwrap();
    assert!(!rows.is_empty());
    let root = tmp.join("pool-ca.crt");
    std::fs::write(&root, &ca).unwrap();
    ok(&psql(&secret, port, "verify-full", &root), &bouncer);
}

/// An `issuerRef` without cert-manager's API (the in-memory API serves no cert-manager.io):
/// the request fails `CertManagerNotInstalled` at its first step, and nothing is written.
#[tokio::test]
async fn an_issuer_without_cert_manager_fails() {
    let n = Names::new();
    let issuer = request(
        "issuer-tls",
        &n.svc,
        "2026-01-01T00:00:00Z",
        json!({"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer",
                             "apiGroup": "cert-manager.io"}}),
    );
    let client = client(objects(&n, vec![issuer])).await;
    let state = Arc::new(State::new(client.clone(), NS, false));
    let requests: Api<DatabaseOpsRequest> = Api::namespaced(client.clone(), NS);
    let mut request = requests.get("issuer-tls").await.unwrap();
    for _ in 0..10 {
        match advance(&state, &request).await.unwrap() {
            Advanced::Next(updated) => request = *updated,
            Advanced::Stop(_) => break,
        }
    }
    let status = requests.get("issuer-tls").await.unwrap().status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let failed = status.conditions.last().unwrap();
    assert_eq!(
        (
            failed.type_.as_str(),
            failed.status.as_str(),
            failed.reason.as_str()
        ),
        (
            "IssueCertificatesSucceeded",
            "False",
            "CertManagerNotInstalled"
        )
    );
    assert!(
        failed.message.contains("install cert-manager"),
        "{}",
        failed.message
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    assert!(
        secrets
            .get_opt(&tls_secret_name(&n.svc))
            .await
            .unwrap()
            .is_none()
    );
}

/// A pooler with the admin's own certificate Secret (`spec.pooler.tls.secretName`) is not
/// changed by a request: it fails `PoolerSecretNameSet`, and writes no Secret.
#[tokio::test]
async fn the_admins_own_pooler_secret_is_left_alone() {
    let n = Names::new();
    let mut all = objects(&n, vec![add_tls(&n.svc)]);
    for o in &mut all {
        if o["kind"] == "DatabaseService" {
            o["spec"]["pooler"] = json!({"tls": {"secretName": "admins-cert"}});
        }
    }
    let client = client(all).await;
    let state = Arc::new(State::new(client.clone(), NS, false));
    let requests: Api<DatabaseOpsRequest> = Api::namespaced(client.clone(), NS);
    let mut request = requests.get("add-tls").await.unwrap();
    for _ in 0..10 {
        match advance(&state, &request).await.unwrap() {
            Advanced::Next(updated) => request = *updated,
            Advanced::Stop(_) => break,
        }
    }
    let status = requests.get("add-tls").await.unwrap().status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let failed = status.conditions.last().unwrap();
    assert_eq!(
        (failed.type_.as_str(), failed.reason.as_str()),
        ("IssueCertificatesSucceeded", "PoolerSecretNameSet")
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    for name in [tls_secret_name(&n.svc), ca_secret_name(&n.svc)] {
        assert!(secrets.get_opt(&name).await.unwrap().is_none(), "{name}");
    }
}
