//! `dbward certs`: a CA and a serving certificate for the admission webhook, made with rcgen.
//!
//! The serving certificate names the webhook's Service the ways the API server may dial it
//! (`NAME`, `NAME.NS`, `NAME.NS.svc`, `NAME.NS.svc.cluster.local`) plus any extra DNS names and
//! IP addresses. Keys are ECDSA P-256; private keys are written with mode 0600.
//!
//! `plan` and `self_managed` are `dbward webhook --self-managed-certs`: dbward's own CA, kept
//! in a Secret, with the serving certificate renewed and the CA bundle injected by the webhook.

pub mod plan;
pub mod self_managed;

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// File names written by [`write_bundle`], as Kubernetes TLS Secrets name their keys.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const TLS_CERT_FILE: &str = "tls.crt";
pub const TLS_KEY_FILE: &str = "tls.key";

/// Arguments of `dbward certs`.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Name of the webhook's Service.
    #[arg(long, default_value = "dbward-webhook")]
    pub service: String,
    /// Namespace of the webhook's Service.
    #[arg(long, default_value = "dbward-system")]
    pub namespace: String,
    /// Directory to write ca.crt, ca.key, tls.crt and tls.key into (created when missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Extra DNS name for the serving certificate (repeatable), e.g. `localhost`.
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// Extra IP address for the serving certificate (repeatable), e.g. `127.0.0.1`.
    #[arg(long = "ip", value_name = "ADDR")]
    pub ip: Vec<IpAddr>,
    /// Validity of the serving certificate in days (the CA gets ten times as long).
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

/// What goes into the serving certificate.
#[derive(Debug, Clone)]
pub struct CertRequest {
    pub service: String,
    pub namespace: String,
    pub dns: Vec<String>,
    pub ip: Vec<IpAddr>,
    pub days: u32,
}

impl From<&CertsArgs> for CertRequest {
    fn from(args: &CertsArgs) -> Self {
        CertRequest {
            service: args.service.clone(),
            namespace: args.namespace.clone(),
            dns: args.dns.clone(),
            ip: args.ip.clone(),
            days: args.days,
        }
    }
}

/// A CA and a serving certificate signed by it, all PEM.
#[derive(Clone)]
pub struct CertBundle {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub tls_cert_pem: String,
    pub tls_key_pem: String,
}

impl std::fmt::Debug for CertBundle {
    // Never print private keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertBundle").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("invalid DNS name {name:?}: expected dot-separated labels of a-z, 0-9 and '-'")]
    InvalidDnsName { name: String },
    #[error("DNS name {name:?}: {source}")]
    Rcgen { name: String, source: rcgen::Error },
    #[error("validity of {days} days is out of range (1..=36500)")]
    InvalidValidity { days: u32 },
    #[error("generating a key pair: {0}")]
    GenerateKey(rcgen::Error),
    #[error("signing the {which} certificate: {source}")]
    Sign {
        which: &'static str,
        source: rcgen::Error,
    },
    #[error("reading the CA certificate and key: {0}")]
    ReadCa(rcgen::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The DNS names under which the API server reaches a Service.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// A certificate and its private key, both PEM. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for KeyedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCert").finish_non_exhaustive()
    }
}

/// Makes a fresh CA and a serving certificate signed by it.
pub fn generate(request: &CertRequest) -> Result<CertBundle, CertsError> {
    if request.days == 0 || request.days > 36_500 {
        return Err(CertsError::InvalidValidity { days: request.days });
    }
    let now = OffsetDateTime::now_utc();
    // Allow for clocks that are a little behind ours.
    let not_before = now - Duration::minutes(5);
    let ca = new_ca(
        &format!("dbward webhook CA ({})", request.namespace),
        not_before,
        now + Duration::days(i64::from(request.days) * 10),
    )?;
    let dns: Vec<String> = service_dns_names(&request.service, &request.namespace)
        .into_iter()
        .chain(request.dns.iter().cloned())
        .collect();
    let tls = sign_serving(
        &ca,
        &format!("{}.{}.svc", request.service, request.namespace),
        &dns,
        &request.ip,
        not_before,
        now + Duration::days(i64::from(request.days)),
    )?;
    Ok(CertBundle {
        ca_cert_pem: ca.cert_pem,
        ca_key_pem: ca.key_pem,
        tls_cert_pem: tls.cert_pem,
        tls_key_pem: tls.key_pem,
    })
}

/// A self-signed CA valid from `not_before` to `not_after`, allowed to sign serving
/// certificates only (path length 0).
pub fn new_ca(
    common_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<KeyedCert, CertsError> {
    let ca_key = KeyPair::generate().map_err(CertsError::GenerateKey)?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = distinguished_name(common_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|source| CertsError::Sign {
            which: "CA",
            source,
        })?;
    Ok(KeyedCert {
        cert_pem: ca_cert.pem(),
        key_pem: ca_key.serialize_pem(),
    })
}

/// A serving certificate for `dns` and `ips` with a fresh key, signed by `ca` (which may have
/// been made by another process: it is read back from its PEM).
pub fn sign_serving(
    ca: &KeyedCert,
    common_name: &str,
    dns: &[String],
    ips: &[IpAddr],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<KeyedCert, CertsError> {
    let mut sans = Vec::new();
    for name in dns {
        if !is_dns_name(name) {
            return Err(CertsError::InvalidDnsName { name: name.clone() });
        }
        let dns = name
            .clone()
            .try_into()
            .map_err(|source| CertsError::Rcgen {
                name: name.clone(),
                source,
            })?;
        sans.push(SanType::DnsName(dns));
    }
    sans.extend(ips.iter().copied().map(SanType::IpAddress));

    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(CertsError::ReadCa)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(CertsError::ReadCa)?;
    let tls_key = KeyPair::generate().map_err(CertsError::GenerateKey)?;
    let mut tls_params = CertificateParams::default();
    tls_params.distinguished_name = distinguished_name(common_name);
    tls_params.subject_alt_names = sans;
    tls_params.is_ca = IsCa::ExplicitNoCa;
    tls_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    tls_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    tls_params.use_authority_key_identifier_extension = true;
    tls_params.not_before = not_before;
    tls_params.not_after = not_after;
    let tls_cert = tls_params
        .signed_by(&tls_key, &issuer)
        .map_err(|source| CertsError::Sign {
            which: "serving",
            source,
        })?;
    Ok(KeyedCert {
        cert_pem: tls_cert.pem(),
        key_pem: tls_key.serialize_pem(),
    })
}

/// A DNS name as certificates carry it: labels of letters, digits and `-`, optionally `*.` first.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "dbward");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Writes the bundle as `ca.crt`, `ca.key`, `tls.crt`, `tls.key` into `dir`.
///
/// Each file is written to a temporary name and renamed into place, so a webhook watching
/// the directory never reads half a file.
pub fn write_bundle(bundle: &CertBundle, dir: &Path) -> Result<(), CertsError> {
    fs::create_dir_all(dir).map_err(|source| CertsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write_file(&dir.join(CA_CERT_FILE), &bundle.ca_cert_pem, false)?;
    write_file(&dir.join(CA_KEY_FILE), &bundle.ca_key_pem, true)?;
    // The key before the certificate: a reader that sees the new certificate finds its key.
    write_file(&dir.join(TLS_KEY_FILE), &bundle.tls_key_pem, true)?;
    write_file(&dir.join(TLS_CERT_FILE), &bundle.tls_cert_pem, false)?;
    Ok(())
}

pub(crate) fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), CertsError> {
    crate::private_file::write(path, contents.as_bytes(), private).map_err(|source| {
        CertsError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// `dbward certs`: generate and write the bundle, then say what was written.
pub fn run_certs(args: CertsArgs) -> Result<(), CertsError> {
    let bundle = generate(&CertRequest::from(&args))?;
    write_bundle(&bundle, &args.out)?;
    println!(
        "wrote {ca}, {ca_key}, {crt} and {key} to {dir} (serving certificate for {names})",
        ca = CA_CERT_FILE,
        ca_key = CA_KEY_FILE,
        crt = TLS_CERT_FILE,
        key = TLS_KEY_FILE,
        dir = args.out.display(),
        names = service_dns_names(&args.service, &args.namespace)
            .into_iter()
            .chain(args.dns.iter().cloned())
            .chain(args.ip.iter().map(IpAddr::to_string))
            .collect::<Vec<_>>()
            .join(", "),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CertRequest {
        CertRequest {
            service: "dbward-webhook".into(),
            namespace: "dbward-system".into(),
            dns: vec!["localhost".into()],
            ip: vec!["127.0.0.1".parse().unwrap()],
            days: 30,
        }
    }

    #[test]
    fn writes_four_pem_files_with_private_keys_unreadable_to_others() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(&generate(&request()).unwrap(), dir.path()).unwrap();
        for (file, header) in [
            (CA_CERT_FILE, "-----BEGIN CERTIFICATE-----"),
            (TLS_CERT_FILE, "-----BEGIN CERTIFICATE-----"),
            (CA_KEY_FILE, "-----BEGIN PRIVATE KEY-----"),
            (TLS_KEY_FILE, "-----BEGIN PRIVATE KEY-----"),
        ] {
            let text = fs::read_to_string(dir.path().join(file)).unwrap();
            assert!(text.starts_with(header), "{file}: {text}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(TLS_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "tls.key mode {mode:o}");
        }
    }

    #[test]
    fn rejects_bad_names_and_validity() {
        let mut bad = request();
        bad.dns = vec!["not a name".into()];
        assert!(matches!(
            generate(&bad),
            Err(CertsError::InvalidDnsName { .. })
        ));
        let mut bad = request();
        bad.days = 0;
        assert!(matches!(
            generate(&bad),
            Err(CertsError::InvalidValidity { .. })
        ));
    }

    #[test]
    fn debug_never_prints_keys() {
        let bundle = generate(&request()).unwrap();
        assert!(!format!("{bundle:?}").contains("PRIVATE"));
    }
}
