//! Shared by the webhook tests and `examples/webhook_bench.rs`: certificates from
//! `dbward certs`, a running webhook on 127.0.0.1, and a keep-alive HTTPS client that trusts
//! only the test CA.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use dbward::certs::{self, CertBundle, CertRequest};

/// A CA and serving certificate for `localhost` and 127.0.0.1, as `dbward certs` makes them.
pub fn make_certs(dir: &Path) -> CertBundle {
    let bundle = certs::generate(&CertRequest {
        service: "dbward-webhook".into(),
        namespace: "dbward-system".into(),
        dns: vec!["localhost".into()],
        ip: vec!["127.0.0.1".parse().unwrap()],
        days: 30,
    })
    .expect("generating certificates");
    certs::write_bundle(&bundle, dir).expect("writing certificates");
    bundle
}

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A client that trusts only the given CA and checks the name `localhost`.
#[derive(Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    addr: SocketAddr,
}

impl Client {
    pub fn trusting(ca_pem: &str, addr: SocketAddr) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = ClientConfig::builder_with_provider(dbward::webhook::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Client {
            config: Arc::new(config),
            addr,
        }
    }

    /// One keep-alive HTTPS connection.
    pub async fn connect(&self) -> Result<Connection, Box<dyn std::error::Error + Send + Sync>> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let connector = TlsConnector::from(self.config.clone());
        let tls = connector
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let peer_certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
            .ok_or("no peer certificate")?;
        let protocol = tls.get_ref().1.protocol_version();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection {
            sender,
            peer_certificate,
            protocol,
            task,
        })
    }
}

pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    pub peer_certificate: CertificateDer<'static>,
    pub protocol: Option<rustls::ProtocolVersion>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Connection {
    /// POSTs `body` as JSON and returns the status and the whole response body.
    pub async fn post(
        &mut self,
        path: &str,
        body: Bytes,
    ) -> Result<(u16, Bytes), Box<dyn std::error::Error + Send + Sync>> {
        self.sender.ready().await?;
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// A webhook on 127.0.0.1 (ports chosen by the OS) with fresh certificates in `dir`, run
/// with `--no-kube` and the fixtures' policy and context.
pub async fn start_webhook(
    dir: &Path,
    tweak: impl FnOnce(&mut dbward::webhook::WebhookArgs),
) -> (dbward::webhook::RunningWebhook, Client, CertBundle) {
    let bundle = make_certs(dir);
    let mut args = dbward::webhook::WebhookArgs::local(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        dbward::webhook::TlsFiles {
            cert: dir.join(certs::TLS_CERT_FILE),
            key: dir.join(certs::TLS_KEY_FILE),
        },
    );
    args.policy = Some(fixture_dir().join("policy.yaml"));
    args.context = vec![fixture_dir().join("context.yaml")];
    tweak(&mut args);
    let running = dbward::webhook::start(&args)
        .await
        .expect("starting the webhook");
    let client = Client::trusting(&bundle.ca_cert_pem, running.addr);
    (running, client, bundle)
}

impl Client {
    /// A TLS stream without HTTP on top, for tests that write bytes by hand.
    pub async fn raw(&self, addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        TlsConnector::from(self.config.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }
}

/// Whether the webhook's admin port answers `/readyz` with 200.
pub async fn readyz(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return false;
    };
    let _ = tcp
        .write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await;
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer).await;
    answer.starts_with("HTTP/1.1 200")
}

/// Polls `check` every 200 ms until it holds; fails the test after a minute.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let started = std::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Installs the CRDs of `kinds` (an existing one is kept) and waits until the API server has
/// established them.
pub async fn install_crds(kube: &kube::Client, kinds: &[&str]) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, PostParams};
    let crds: Api<CustomResourceDefinition> = Api::all(kube.clone());
    let wanted: Vec<CustomResourceDefinition> = dbward::crds::all()
        .into_iter()
        .filter(|crd| kinds.contains(&crd.spec.names.kind.as_str()))
        .collect();
    assert_eq!(wanted.len(), kinds.len(), "unknown kinds among {kinds:?}");
    for crd in &wanted {
        match crds.create(&PostParams::default(), crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => panic!("creating CRD: {error}"),
        }
    }
    for crd in &wanted {
        let name = crd.metadata.name.clone().unwrap();
        eventually("CRDs to be established", || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                crds.get(&name)
                    .await
                    .ok()
                    .and_then(|c| c.status)
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
            }
        })
        .await;
    }
}

/// Creates namespaces with these names.
pub async fn create_namespaces(kube: &kube::Client, names: &[&str]) {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, PostParams};
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    for name in names {
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
    }
}

/// The cluster a live test runs against: the file `KUBECONFIG` names. Without one the test
/// fails, saying why, so that a tier asked for never passes by not running; `DBWARD_E2E=0`
/// skips it on purpose (`None`).
pub fn live_kubeconfig() -> Option<PathBuf> {
    if std::env::var("DBWARD_E2E").as_deref() == Ok("0") {
        eprintln!("skipped: DBWARD_E2E=0");
        return None;
    }
    match std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
        Some(path) if Path::new(&path).is_file() => Some(PathBuf::from(path)),
        Some(path) => panic!(
            "KUBECONFIG={} names no file; this live test needs a cluster \
             (scripts/test starts one; DBWARD_E2E=0 skips the live tests)",
            Path::new(&path).display()
        ),
        None => panic!(
            "KUBECONFIG is not set; this live test needs a cluster \
             (scripts/test starts one; DBWARD_E2E=0 skips the live tests)"
        ),
    }
}
