//! Which certificate a PgBouncer presents to a new TLS handshake: the PostgreSQL `SSLRequest`,
//! then a rustls handshake that verifies the chain against the pooler's CA and the name, and
//! the leaf it was shown. A rotation uses it to know that a pod has loaded the new files
//! (`RELOAD` only takes effect once the kubelet has updated the mounted Secret).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::admin::{AdminError, Console};

/// How long a probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// PostgreSQL's `SSLRequest`: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A failed probe (never a secret).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The CA or certificate PEM is not usable.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// The connection, the `SSLRequest` or the handshake failed.
    #[error("TLS handshake with {host}:{port} failed: {message}")]
    Handshake {
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Cause.
        message: String,
    },
    /// `RELOAD` failed.
    #[error(transparent)]
    Reload(#[from] AdminError),
}

/// The leaf certificate (DER) that `host:port` presents for `server_name`, verified against
/// `ca_pem`.
pub async fn presented_certificate(
    host: &str,
    port: u16,
    server_name: &str,
    ca_pem: &str,
) -> Result<Vec<u8>, ProbeError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| ProbeError::Pem(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| ProbeError::Pem(e.to_string()))?;
    }
    let failed = |message: String| ProbeError::Handshake {
        host: host.to_owned(),
        port,
        message,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| failed(e.to_string()))?;
    let probe = async {
        let mut tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| failed(e.to_string()))?;
        tcp.write_all(&SSL_REQUEST)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if answer[0] != b'S' {
            return Err(failed("the pooler does not offer TLS".to_owned()));
        }
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let (_, session) = tls.get_ref();
        session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|leaf| leaf.as_ref().to_vec())
            .ok_or_else(|| failed("no certificate presented".to_owned()))
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .map_err(|_| failed("timed out".to_owned()))?
}

/// The DER of the first certificate in `pem`.
pub fn leaf_der(pem: &str) -> Result<Vec<u8>, ProbeError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.as_ref().to_vec())
        .map_err(|e| ProbeError::Pem(e.to_string()))
}

/// Whether the PgBouncer behind `console` presents `cert_pem` to a new handshake; when it does
/// not, it is sent `RELOAD` (established sessions stay) and asked again. `false`: it still
/// presents another certificate — its files are not updated yet (a mounted Secret follows
/// within the kubelet's sync period); ask again later.
pub async fn reload_until_presented(
    console: &Console,
    server_name: &str,
    ca_pem: &str,
    cert_pem: &str,
) -> Result<bool, ProbeError> {
    let want = leaf_der(cert_pem)?;
    let shown = presented_certificate(&console.host, console.port, server_name, ca_pem).await;
    if shown.as_ref().is_ok_and(|der| *der == want) {
        return Ok(true);
    }
    console.reload().await?;
    let shown = presented_certificate(&console.host, console.port, server_name, ca_pem).await?;
    Ok(shown == want)
}
