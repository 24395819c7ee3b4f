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
