//! The serving certificate: loaded and checked before the server binds, then reloaded from
//! disk whenever the files change, without a restart (as kubert does). Handshakes read the
//! current certificate through a resolver, so connections already open keep theirs and new
//! ones get the new one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("parsing PEM certificates in {path}: {source}")]
    ParseCertificate {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("parsing the PEM private key in {path}: {source}")]
    ParseKey {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("the key in {key} does not fit the certificate in {cert}: {source}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("the certificate in {path} has no readable expiry time")]
    NoExpiry { path: PathBuf },
    #[error("building the TLS configuration: {0}")]
    Config(rustls::Error),
}

/// Where the serving certificate and its key live.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate and key as read from disk, with what is needed to tell a change.
struct Loaded {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    certified: Arc<CertifiedKey>,
    not_after: i64,
}

/// The certificate handshakes use right now.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    not_after: AtomicI64,
}

impl CertStore {
    /// Expiry of the current certificate, in seconds since the Unix epoch.
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }

    fn store(&self, loaded: &Loaded) {
        self.current.store(loaded.certified.clone());
        self.not_after.store(loaded.not_after, Ordering::Relaxed);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The crypto provider of every TLS endpoint in dbward.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse(files: &TlsFiles, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Result<Loaded, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::ParseCertificate {
            path: files.cert.clone(),
            source,
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    };
    let not_after = not_after_unix(leaf).ok_or_else(|| TlsError::NoExpiry {
        path: files.cert.clone(),
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::ParseKey {
        path: files.key.clone(),
        source,
    })?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|source| {
        TlsError::KeyMismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        }
    })?;
    Ok(Loaded {
        cert_pem,
        key_pem,
        certified: Arc::new(certified),
        not_after,
    })
}

/// Loads and checks the certificate and key; fails before anything binds when they are unusable.
pub fn load(files: &TlsFiles) -> Result<Arc<CertStore>, TlsError> {
    let loaded = parse(files, read(&files.cert)?, read(&files.key)?)?;
    let store = CertStore {
        current: ArcSwap::new(loaded.certified.clone()),
        not_after: AtomicI64::new(loaded.not_after),
    };
    Ok(Arc::new(store))
}

/// TLS 1.3 and 1.2 only, HTTP/1.1, the certificate from `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Outcome of one look at the files, for logs and metrics.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Reloaded { not_after: i64 },
    Failed(TlsError),
}

/// Watches the files and swaps the certificate in `store` when they change.
///
/// Files are compared by content, not modification time: Kubernetes updates mounted Secrets
/// by swapping a symlink, which leaves the times of the files it points at unchanged. A pair
/// that does not load (say, a new certificate whose key is not written yet) is retried on the
/// next tick while the old certificate stays in use.
pub struct Reloader {
    files: TlsFiles,
    store: Arc<CertStore>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl Reloader {
    pub fn new(files: TlsFiles, store: Arc<CertStore>) -> Result<Reloader, TlsError> {
        Ok(Reloader {
            cert_pem: read(&files.cert)?,
            key_pem: read(&files.key)?,
            files,
            store,
        })
    }

    /// Reads the files once and swaps the certificate if they changed and load.
    pub fn check(&mut self) -> Reload {
        let (cert_pem, key_pem) = match (read(&self.files.cert), read(&self.files.key)) {
            (Ok(cert), Ok(key)) => (cert, key),
            (Err(e), _) | (_, Err(e)) => return Reload::Failed(e),
        };
        if cert_pem == self.cert_pem && key_pem == self.key_pem {
            return Reload::Unchanged;
        }
        match parse(&self.files, cert_pem, key_pem) {
            Ok(loaded) => {
                self.store.store(&loaded);
                self.cert_pem = loaded.cert_pem;
                self.key_pem = loaded.key_pem;
                Reload::Reloaded {
                    not_after: loaded.not_after,
                }
            }
            Err(e) => Reload::Failed(e),
        }
    }

    /// Checks every `interval` until the task is dropped, reporting each change to `report`.
    pub async fn run(mut self, interval: Duration, mut report: impl FnMut(&Reload) + Send) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut last_failed = false;
        loop {
            ticker.tick().await;
            let outcome = self.check();
            match &outcome {
                Reload::Unchanged => {}
                Reload::Reloaded { .. } => {
                    last_failed = false;
                    report(&outcome);
                }
                // Report a persistent failure once, not every tick.
                Reload::Failed(_) if last_failed => {}
                Reload::Failed(_) => {
                    last_failed = true;
                    report(&outcome);
                }
            }
        }
    }
}

/// `notAfter` of an X.509 certificate in seconds since the Unix epoch, read straight from its
/// DER: Certificate → tbsCertificate → (version) serial signature issuer validity.
pub fn not_after_unix(cert: &[u8]) -> Option<i64> {
    let (tag, certificate, _) = der_element(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, mut tbs, _) = der_element(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _, rest) = der_element(tbs)?;
    if tag == 0xa0 {
        tbs = rest; // explicit version
    }
    for _ in 0..3 {
        // serialNumber, signature, issuer
        tbs = der_element(tbs)?.2;
    }
    let (tag, validity, _) = der_element(tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, rest) = der_element(validity)?; // notBefore
    let (tag, not_after, _) = der_element(rest)?;
    der_time(tag, not_after)
}

/// One DER element: (tag, contents, what follows).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[count..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) to Unix seconds.
fn der_time(tag: u8, value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if text.len() == 12 => {
            let yy: i32 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        0x18 if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| rest.get(i..i + 2)?.parse::<u8>().ok();
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(field(0)?).ok()?, field(2)?)
            .ok()?;
    let time = time::Time::from_hms(field(4)?, field(6)?, field(8)?).ok()?;
    Some(
        time::PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    #[test]
    fn reads_not_after_from_der() {
        let key = KeyPair::generate().unwrap();
        for (year, month, day) in [(2049, 12, 31), (2051, 1, 2), (2030, 6, 15)] {
            let mut params = CertificateParams::new(vec!["x.example".to_string()]).unwrap();
            params.not_after = rcgen::date_time_ymd(year, month, day);
            let cert = params.self_signed(&key).unwrap();
            assert_eq!(
                not_after_unix(cert.der()),
                Some(params.not_after.unix_timestamp()),
                "{year}-{month}-{day}"
            );
        }
        assert_eq!(not_after_unix(b"\x30\x03\x02\x01"), None);
        assert_eq!(not_after_unix(b""), None);
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let a = CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        let (key_a, key_b) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        std::fs::write(&files.cert, a.self_signed(&key_a).unwrap().pem()).unwrap();
        std::fs::write(&files.key, key_b.serialize_pem()).unwrap();
        assert!(matches!(load(&files), Err(TlsError::KeyMismatch { .. })));
        std::fs::write(&files.key, key_a.serialize_pem()).unwrap();
        assert!(load(&files).is_ok());
        std::fs::write(&files.cert, "no pem here").unwrap();
        assert!(matches!(load(&files), Err(TlsError::NoCertificate { .. })));
    }
}
