//! Connection details read from a connector Secret (the vCluster "shared-database" shape), and
//! the TLS settings they imply.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::Engine;

/// A connector Secret that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// A required key is absent or empty.
    #[error("connector secret: key {key:?} is missing or empty")]
    MissingKey {
        /// The key.
        key: &'static str,
    },
    /// A key has a value dbward cannot use.
    #[error("connector secret: key {key:?} has invalid value {value:?}; expected {expected}")]
    InvalidValue {
        /// The key.
        key: &'static str,
        /// The value found (never a password).
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// The TLS settings cannot be turned into a TLS client.
    #[error("connector secret: TLS settings unusable: {reason}")]
    BuildTls {
        /// What went wrong.
        reason: String,
    },
}

impl ConnectorError {
    /// A short, bounded label for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            ConnectorError::MissingKey { .. } => "connector_missing_key",
            ConnectorError::InvalidValue { .. } => "connector_invalid_value",
            ConnectorError::BuildTls { .. } => "connector_tls",
        }
    }
}

/// How to secure the connection to the server, from the connector's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP: `disable`, MySQL's `DISABLED`.
    Disable,
    /// TLS when the server offers it, without checking its certificate; plain TCP when it does
    /// not (libpq's `prefer`): `prefer`, `allow`, absent or empty; MySQL's `PREFERRED`. Which
    /// one was used is reported by [`super::ServerInfo::tls`].
    Prefer,
    /// TLS; the certificate is checked against `ca.crt` when one is given (as libpq does with a
    /// root certificate), otherwise not checked: `require`, MySQL `REQUIRED`.
    Require,
    /// TLS, certificate chain checked against `ca.crt` (or the web PKI roots), host name not
    /// checked: `verify-ca`, MySQL `VERIFY_CA`.
    VerifyCa,
    /// TLS, chain and host name checked: `verify-full`, MySQL `VERIFY_IDENTITY`.
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's and MySQL's spellings, case-insensitively.
    pub fn parse(value: &str) -> Result<SslMode, ConnectorError> {
        let norm = value.trim().to_ascii_lowercase().replace('_', "-");
        Ok(match norm.as_str() {
            "disable" | "disabled" => SslMode::Disable,
            "" | "allow" | "prefer" | "preferred" => SslMode::Prefer,
            "require" | "required" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" | "verify-identity" => SslMode::VerifyFull,
            _ => {
                return Err(ConnectorError::InvalidValue {
                    key: "sslmode",
                    value: value.to_owned(),
                    expected: "one of disable, allow, prefer, require, verify-ca, verify-full \
                               (or MySQL's DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY)",
                });
            }
        })
    }
}

/// Where and how to reach a server as its administrator.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// PostgreSQL or MySQL.
    pub engine: Engine,
    /// Host name or address (`endpoint`).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Administrator user.
    pub user: String,
    /// Its password.
    pub password: String,
    /// `sslmode` as given (see [`SslMode`]).
    pub sslmode: Option<String>,
    /// PEM CA certificate(s) to trust (`ca.crt`).
    pub ca_cert: Option<String>,
}

impl fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionInfo")
            .field("engine", &self.engine)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("sslmode", &self.sslmode)
            .field("ca_cert", &self.ca_cert.as_ref().map(|_| "<pem>"))
            .finish()
    }
}

impl ConnectionInfo {
    /// Reads a connector Secret's decoded `data`: `endpoint`, `port`, `user`, `password`
    /// (required), `type` (`mysql` when missing or blank; `postgres` or `postgresql`),
    /// `sslmode` and `ca.crt` (optional).
    pub fn from_connector(data: &BTreeMap<String, String>) -> Result<Self, ConnectorError> {
        let required = |key: &'static str| -> Result<String, ConnectorError> {
            data.get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or(ConnectorError::MissingKey { key })
        };
        let engine = match data.get("type").map(|t| t.trim().to_ascii_lowercase()) {
            None => Engine::Mysql,
            Some(t) if t.is_empty() || t == "mysql" => Engine::Mysql,
            Some(t) if t == "postgres" || t == "postgresql" => Engine::Postgres,
            Some(_) => {
                return Err(ConnectorError::InvalidValue {
                    key: "type",
                    value: data.get("type").cloned().unwrap_or_default(),
                    expected: "mysql (or blank), postgres or postgresql",
                });
            }
        };
        let host = required("endpoint")?;
        let port_text = required("port")?;
        let port = port_text
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| ConnectorError::InvalidValue {
                key: "port",
                value: port_text.clone(),
                expected: "a TCP port number (1-65535)",
            })?;
        let user = required("user")?;
        // A password is taken as is: surrounding spaces may be part of it. The key is
        // required, but may be empty (a development server's `root` without a password).
        let password = data
            .get("password")
            .cloned()
            .ok_or(ConnectorError::MissingKey { key: "password" })?;
        let sslmode = data
            .get("sslmode")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if let Some(mode) = &sslmode {
            SslMode::parse(mode)?;
        }
        let ca_cert = data.get("ca.crt").filter(|c| !c.trim().is_empty()).cloned();
        let info = ConnectionInfo {
            engine,
            host,
            port,
            user,
            password,
            sslmode,
            ca_cert,
        };
        if let Some(ca) = &info.ca_cert {
            parse_ca(ca)?;
        }
        Ok(info)
    }

    /// The parsed `sslmode`.
    pub fn ssl_mode(&self) -> Result<SslMode, ConnectorError> {
        self.sslmode
            .as_deref()
            .map_or(Ok(SslMode::Prefer), SslMode::parse)
    }
}

/// Parses PEM certificates from `ca.crt`.
pub(crate) fn parse_ca(pem: &str) -> Result<Vec<CertificateDer<'static>>, ConnectorError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConnectorError::InvalidValue {
            key: "ca.crt",
            value: format!("<unparsable PEM: {e}>"),
            expected: "PEM-encoded CA certificates",
        })?;
    if certs.is_empty() {
        return Err(ConnectorError::InvalidValue {
            key: "ca.crt",
            value: "<no certificate>".into(),
            expected: "PEM-encoded CA certificates",
        });
    }
    Ok(certs)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `mode`, or `None` for plain TCP.
pub(crate) fn rustls_client_config(
    mode: SslMode,
    ca_cert: Option<&str>,
) -> Result<Option<rustls::ClientConfig>, ConnectorError> {
    let tls_err = |e: &dyn fmt::Display| ConnectorError::BuildTls {
        reason: e.to_string(),
    };
    if mode == SslMode::Disable {
        return Ok(None);
    }
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, ca_cert) {
        (SslMode::Prefer, _) | (SslMode::Require, None) => {
            Arc::new(AcceptAnyCertificate(provider.clone()))
        }
        (_, ca) => {
            let mut roots = RootCertStore::empty();
            match ca {
                Some(pem) => {
                    for cert in parse_ca(pem)? {
                        roots.add(cert).map_err(|e| tls_err(&e))?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| tls_err(&e))?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(IgnoreHostName(webpki))
            }
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(config))
}

/// `sslmode=require` without a CA: encrypt, do not authenticate the server (libpq's meaning).
/// Handshake signatures are still verified.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct IgnoreHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for IgnoreHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_vcluster_connector() {
        let base = [
            ("endpoint", "mysql.vcluster-platform"),
            ("port", "3306"),
            ("user", "root"),
            ("password", " pw "),
        ];
        let info = ConnectionInfo::from_connector(&secret(&base)).unwrap();
        assert_eq!(info.engine, Engine::Mysql);
        assert_eq!(info.port, 3306);
        assert_eq!(info.password, " pw ");
        assert_eq!(info.ssl_mode().unwrap(), SslMode::Prefer);
        assert!(!format!("{info:?}").contains(" pw "));

        for (t, engine) in [
            ("", Engine::Mysql),
            ("mysql", Engine::Mysql),
            ("postgres", Engine::Postgres),
            ("postgresql", Engine::Postgres),
        ] {
            let mut s = secret(&base);
            s.insert("type".into(), t.into());
            assert_eq!(ConnectionInfo::from_connector(&s).unwrap().engine, engine);
        }
    }

    #[test]
    fn names_the_bad_key() {
        let mut s = secret(&[("endpoint", "h"), ("port", "5432"), ("user", "u")]);
        assert_eq!(
            ConnectionInfo::from_connector(&s),
            Err(ConnectorError::MissingKey { key: "password" })
        );
        s.insert("password".into(), String::new());
        assert_eq!(ConnectionInfo::from_connector(&s).unwrap().password, "");
        s.insert("password".into(), "p".into());
        s.insert("type".into(), "oracle".into());
        let err = ConnectionInfo::from_connector(&s).unwrap_err();
        assert!(err.to_string().contains("\"type\"") && err.to_string().contains("postgres"));
        s.insert("type".into(), "postgres".into());
        s.insert("port".into(), "99999".into());
        assert!(matches!(
            ConnectionInfo::from_connector(&s),
            Err(ConnectorError::InvalidValue { key: "port", .. })
        ));
        s.insert("port".into(), "5432".into());
        s.insert("sslmode".into(), "sometimes".into());
        assert!(matches!(
            ConnectionInfo::from_connector(&s),
            Err(ConnectorError::InvalidValue { key: "sslmode", .. })
        ));
        s.insert("sslmode".into(), "verify-full".into());
        s.insert("ca.crt".into(), "not pem".into());
        assert!(matches!(
            ConnectionInfo::from_connector(&s),
            Err(ConnectorError::InvalidValue { key: "ca.crt", .. })
        ));
        s.remove("ca.crt");
        s.remove("endpoint");
        assert_eq!(
            ConnectionInfo::from_connector(&s),
            Err(ConnectorError::MissingKey { key: "endpoint" })
        );
    }

    #[test]
    fn ssl_modes() {
        for prefer in ["prefer", "allow", "", "PREFERRED"] {
            assert_eq!(
                SslMode::parse(prefer).unwrap(),
                SslMode::Prefer,
                "{prefer:?}"
            );
        }
        assert_eq!(SslMode::parse("disable").unwrap(), SslMode::Disable);
        assert_eq!(SslMode::parse("DISABLED").unwrap(), SslMode::Disable);
        assert_eq!(SslMode::parse("REQUIRED").unwrap(), SslMode::Require);
        assert_eq!(
            SslMode::parse("VERIFY_IDENTITY").unwrap(),
            SslMode::VerifyFull
        );
        assert_eq!(SslMode::parse("verify-ca").unwrap(), SslMode::VerifyCa);
        assert!(
            rustls_client_config(SslMode::Disable, None)
                .unwrap()
                .is_none()
        );
        assert!(
            rustls_client_config(SslMode::Require, None)
                .unwrap()
                .is_some()
        );
        assert!(
            rustls_client_config(SslMode::Prefer, None)
                .unwrap()
                .is_some()
        );
        assert!(
            rustls_client_config(SslMode::VerifyFull, None)
                .unwrap()
                .is_some()
        );
    }
}
