//! The decisions of dbward's own CA as a pure function: the time, what was observed (the CA
//! Secret, the serving certificate Secret, the certificate files, the CA bundles of the webhook
//! configurations) and the names wanted → the actions to take, in order. `self_managed`
//! observes and acts; nothing here does I/O.
//!
//! Lifetimes: a certificate is replaced once less than a third of its lifetime remains. A CA
//! being replaced stays in the bundle until it expires, and a serving certificate is only
//! re-signed by a new CA once every webhook configuration trusts that CA, so the API server
//! never meets a certificate it cannot verify.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use base64::Engine;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::KeyedCert;

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// Keys of the CA Secret: the CA that signs, its key, and the CAs it replaced that are still
/// valid (kept in the bundle until they expire).
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
pub const PREVIOUS_CAS_KEY: &str = "previous-cas.crt";
/// Keys of the serving certificate Secret (`kubernetes.io/tls`); `ca.crt` is the issuing CA.
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";
pub const TLS_CA_KEY: &str = "ca.crt";

/// How long new certificates are valid, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub ca: i64,
    pub serving: i64,
}

impl Default for Lifetimes {
    /// Ten years for the CA (replaced after about six years and eight months), 90 days for the
    /// serving certificate (renewed after 60).
    fn default() -> Self {
        Lifetimes {
            ca: 3650 * DAY,
            serving: 90 * DAY,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertReadError {
    #[error("no PEM certificate found")]
    NoCertificate,
    #[error("not valid PEM: {0}")]
    Pem(String),
    #[error("not an X.509 certificate: {0}")]
    X509(String),
    #[error("the private key is not a PEM PKCS#8 key: {0}")]
    Key(String),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("the certificate is not a CA (basicConstraints CA:TRUE is missing)")]
    NotCa,
    #[error("key {key:?} is missing")]
    MissingKey { key: &'static str },
    #[error("key {key:?} is not UTF-8 text")]
    NotText { key: &'static str },
}

/// A certificate read back from PEM: what the plan judges it by.
#[derive(Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// This certificate alone, as normalised PEM.
    pub pem: String,
    der: Vec<u8>,
    /// Validity in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    pub dns_names: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
    pub is_ca: bool,
}

impl std::fmt::Debug for CertInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertInfo")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("dns_names", &self.dns_names)
            .field("ips", &self.ips)
            .field("is_ca", &self.is_ca)
            .finish_non_exhaustive()
    }
}

impl CertInfo {
    /// Every certificate in a PEM text, in order; at least one.
    pub fn parse_pem(pem: &str) -> Result<Vec<CertInfo>, CertReadError> {
        let mut certs = Vec::new();
        for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
            let block = block.map_err(|e| CertReadError::Pem(e.to_string()))?;
            if block.label == "CERTIFICATE" {
                certs.push(CertInfo::from_der(&block.contents)?);
            }
        }
        if certs.is_empty() {
            return Err(CertReadError::NoCertificate);
        }
        Ok(certs)
    }

    fn from_der(der: &[u8]) -> Result<CertInfo, CertReadError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| CertReadError::X509(e.to_string()))?;
        let mut dns_names = BTreeSet::new();
        let mut ips = BTreeSet::new();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| CertReadError::X509(e.to_string()))?;
        for name in san.iter().flat_map(|san| &san.value.general_names) {
            match name {
                GeneralName::DNSName(dns) => {
                    dns_names.insert(dns.to_string());
                }
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).map(IpAddr::from).ok(),
                        16 => <[u8; 16]>::try_from(*bytes).map(IpAddr::from).ok(),
                        _ => None,
                    };
                    ips.extend(ip);
                }
                _ => {}
            }
        }
        Ok(CertInfo {
            pem: pem_encode(der),
            der: der.to_vec(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            dns_names,
            ips,
            is_ca: cert.is_ca(),
        })
    }

    /// Whether `ca`'s key signed this certificate.
    pub fn is_signed_by(&self, ca: &CertInfo) -> bool {
        let (Ok((_, cert)), Ok((_, issuer))) = (
            X509Certificate::from_der(&self.der),
            X509Certificate::from_der(&ca.der),
        ) else {
            return false;
        };
        cert.verify_signature(Some(issuer.public_key())).is_ok()
    }

    /// Whether `key_pem` is the private key of this certificate.
    fn check_key(&self, key_pem: &str) -> Result<(), CertReadError> {
        let key =
            rcgen::KeyPair::from_pem(key_pem).map_err(|e| CertReadError::Key(e.to_string()))?;
        let (_, cert) =
            X509Certificate::from_der(&self.der).map_err(|e| CertReadError::X509(e.to_string()))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CertReadError::KeyMismatch);
        }
        Ok(())
    }

    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now < self.not_after
    }

    /// Less than a third of the lifetime left (or none at all).
    pub fn renewal_due(&self, now: i64) -> bool {
        self.not_after - now < (self.not_after - self.not_before) / 3
    }
}

/// DER as a PEM `CERTIFICATE` block, lines of 64 characters.
fn pem_encode(der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

fn text<'a>(
    data: &'a BTreeMap<String, Vec<u8>>,
    key: &'static str,
) -> Result<Option<&'a str>, CertReadError> {
    data.get(key)
        .map(|bytes| std::str::from_utf8(bytes).map_err(|_| CertReadError::NotText { key }))
        .transpose()
}

fn required<'a>(
    data: &'a BTreeMap<String, Vec<u8>>,
    key: &'static str,
) -> Result<&'a str, CertReadError> {
    text(data, key)?.ok_or(CertReadError::MissingKey { key })
}

/// The CA Secret's content: the CA that signs, with its key, and the CAs it replaced.
#[derive(Clone, PartialEq, Eq)]
pub struct CaMaterial {
    pub current: CertInfo,
    pub keyed: KeyedCert,
    pub previous: Vec<CertInfo>,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("current", &self.current)
            .field("previous", &self.previous)
            .finish_non_exhaustive()
    }
}

impl CaMaterial {
    /// A CA and its key, checked to belong together.
    pub fn new(keyed: KeyedCert, previous: Vec<CertInfo>) -> Result<CaMaterial, CertReadError> {
        let current = CertInfo::parse_pem(&keyed.cert_pem)?.remove(0);
        if !current.is_ca {
            return Err(CertReadError::NotCa);
        }
        current.check_key(&keyed.key_pem)?;
        Ok(CaMaterial {
            keyed: KeyedCert {
                cert_pem: current.pem.clone(),
                key_pem: keyed.key_pem,
            },
            current,
            previous,
        })
    }

    /// Reads the Secret's data (`ca.crt`, `ca.key`, optional `previous-cas.crt`).
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Result<CaMaterial, CertReadError> {
        let previous = match text(data, PREVIOUS_CAS_KEY)? {
            Some(pem) if !pem.trim().is_empty() => CertInfo::parse_pem(pem)?,
            _ => Vec::new(),
        };
        let keyed = KeyedCert {
            cert_pem: required(data, CA_CERT_KEY)?.to_string(),
            key_pem: required(data, CA_KEY_KEY)?.to_string(),
        };
        CaMaterial::new(keyed, previous)
    }

    /// The Secret's data.
    pub fn to_data(&self) -> BTreeMap<String, Vec<u8>> {
        let mut data = BTreeMap::from([
            (
                CA_CERT_KEY.to_string(),
                self.keyed.cert_pem.clone().into_bytes(),
            ),
            (
                CA_KEY_KEY.to_string(),
                self.keyed.key_pem.clone().into_bytes(),
            ),
        ]);
        if !self.previous.is_empty() {
            let pem: String = self.previous.iter().map(|c| c.pem.as_str()).collect();
            data.insert(PREVIOUS_CAS_KEY.to_string(), pem.into_bytes());
        }
        data
    }

    /// The CA bundle: the current CA, then every replaced one still valid at `now`.
    pub fn bundle(&self, now: i64) -> String {
        std::iter::once(&self.current)
            .chain(self.previous.iter().filter(|ca| ca.valid_at(now)))
            .map(|ca| ca.pem.as_str())
            .collect()
    }

    /// `next` becomes the CA that signs; the current one is kept while it is valid, and
    /// replaced CAs that expired are dropped.
    pub fn rotated(&self, next: KeyedCert, now: i64) -> Result<CaMaterial, CertReadError> {
        let previous = std::iter::once(&self.current)
            .chain(&self.previous)
            .filter(|ca| ca.valid_at(now))
            .cloned()
            .collect();
        CaMaterial::new(next, previous)
    }

    /// The same CAs without the replaced ones that expired.
    pub fn without_expired(&self, now: i64) -> CaMaterial {
        let mut pruned = self.clone();
        pruned.previous.retain(|ca| ca.valid_at(now));
        pruned
    }
}

/// The serving certificate Secret's content.
#[derive(Clone, PartialEq, Eq)]
pub struct ServingMaterial {
    /// The leaf certificate.
    pub cert: CertInfo,
    /// `tls.crt` and `tls.key` exactly as stored, which is what the files must hold.
    pub keyed: KeyedCert,
}

impl std::fmt::Debug for ServingMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingMaterial")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl ServingMaterial {
    pub fn new(keyed: KeyedCert) -> Result<ServingMaterial, CertReadError> {
        let cert = CertInfo::parse_pem(&keyed.cert_pem)?.remove(0);
        cert.check_key(&keyed.key_pem)?;
        Ok(ServingMaterial { cert, keyed })
    }

    /// Reads the Secret's data (`tls.crt`, `tls.key`).
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Result<ServingMaterial, CertReadError> {
        ServingMaterial::new(KeyedCert {
            cert_pem: required(data, TLS_CERT_KEY)?.to_string(),
            key_pem: required(data, TLS_KEY_KEY)?.to_string(),
        })
    }

    /// The Secret's data, with the issuing CA as `ca.crt`.
    pub fn to_data(&self, issuer: &CertInfo) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            (
                TLS_CERT_KEY.to_string(),
                self.keyed.cert_pem.clone().into_bytes(),
            ),
            (
                TLS_KEY_KEY.to_string(),
                self.keyed.key_pem.clone().into_bytes(),
            ),
            (TLS_CA_KEY.to_string(), issuer.pem.clone().into_bytes()),
        ])
    }
}

/// A Secret as observed: absent, present but not usable (why), or usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<T> {
    Missing,
    Unusable(String),
    Usable(T),
}

/// The two webhook configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigurationKind {
    Validating,
    Mutating,
}

impl ConfigurationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigurationKind::Validating => "ValidatingWebhookConfiguration",
            ConfigurationKind::Mutating => "MutatingWebhookConfiguration",
        }
    }
}

/// One webhook configuration as observed: the `caBundle` of each of its webhooks, or `None`
/// when the configuration does not exist (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedConfiguration {
    pub kind: ConfigurationKind,
    pub ca_bundles: Option<Vec<Option<Vec<u8>>>>,
}

/// Everything the plan looks at.
#[derive(Debug, Clone)]
pub struct Observed {
    pub ca: Found<CaMaterial>,
    pub serving: Found<ServingMaterial>,
    /// The certificate and key files' contents, when both could be read.
    pub files: Option<(Vec<u8>, Vec<u8>)>,
    pub configurations: Vec<ObservedConfiguration>,
}

/// What the serving certificate must name, and how long new certificates last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub dns_names: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
    pub lifetimes: Lifetimes,
}

/// Why a new serving certificate is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueReason {
    /// There is no serving certificate Secret.
    Missing,
    /// The Secret holds no usable certificate and key.
    Unreadable,
    /// Less than a third of its lifetime remains, or it expired.
    RenewalDue,
    /// It names other DNS names or IP addresses than wanted.
    Names,
    /// No CA of the CA Secret signed it.
    UnknownIssuer,
    /// A replaced CA signed it and every configuration now trusts the new one.
    NewCa,
}

impl IssueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueReason::Missing => "missing",
            IssueReason::Unreadable => "unreadable",
            IssueReason::RenewalDue => "renewal due",
            IssueReason::Names => "names changed",
            IssueReason::UnknownIssuer => "signed by an unknown CA",
            IssueReason::NewCa => "signed by a replaced CA",
        }
    }
}

/// One step, executed in order against what the steps before it produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create the CA Secret with a fresh CA.
    CreateCa,
    /// Make a fresh CA the signing one, keeping the current one in the bundle until it expires.
    RotateCa,
    /// Remove replaced CAs that expired from the CA Secret.
    DropExpiredCas,
    /// Set the CA bundle on every webhook of the configuration.
    InjectBundle(ConfigurationKind),
    /// Sign a new serving certificate with the current CA and store it in its Secret.
    IssueServing(IssueReason),
    /// Write the serving certificate Secret's `tls.crt` and `tls.key` to the files.
    WriteFiles,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "the CA Secret exists but cannot be used ({reason}); dbward never replaces a CA it did \
         not make: fix the Secret's ca.crt and ca.key, or delete it to let dbward create a new CA"
    )]
    UnusableCa { reason: String },
}

/// Whether a configuration's bundle (any webhook's) holds `ca`.
fn bundle_holds(bundle: Option<&[u8]>, ca: &CertInfo) -> bool {
    let Some(pem) = bundle.and_then(|b| std::str::from_utf8(b).ok()) else {
        return false;
    };
    CertInfo::parse_pem(pem).is_ok_and(|certs| certs.iter().any(|c| c.der == ca.der))
}

/// The actions that bring the observed state to the desired one.
pub fn plan(now: i64, observed: &Observed, desired: &Desired) -> Result<Vec<Action>, PlanError> {
    let mut actions = Vec::new();

    // The CA.
    let ca = match &observed.ca {
        Found::Missing => {
            actions.push(Action::CreateCa);
            None
        }
        Found::Unusable(reason) => {
            return Err(PlanError::UnusableCa {
                reason: reason.clone(),
            });
        }
        Found::Usable(ca) => {
            if ca.current.renewal_due(now) {
                actions.push(Action::RotateCa);
            } else if ca.previous.iter().any(|old| !old.valid_at(now)) {
                actions.push(Action::DropExpiredCas);
            }
            Some(ca)
        }
    };
    let ca_replaced = matches!(actions.first(), Some(Action::CreateCa | Action::RotateCa));

    // The bundle in the configurations that exist (a missing one is looked at next time).
    let bundle = ca.map(|ca| ca.bundle(now));
    for configuration in &observed.configurations {
        let Some(bundles) = &configuration.ca_bundles else {
            continue;
        };
        let differs = |b: &Option<Vec<u8>>| match &bundle {
            Some(bundle) => b.as_deref() != Some(bundle.as_bytes()),
            None => true,
        };
        if !bundles.is_empty() && (ca_replaced || bundles.iter().any(differs)) {
            actions.push(Action::InjectBundle(configuration.kind));
        }
    }
    // Whether the API server already trusts the CA that signs new serving certificates.
    let signer_trusted = match ca {
        Some(ca) if !ca_replaced => observed.configurations.iter().all(|c| {
            c.ca_bundles
                .iter()
                .flatten()
                .all(|b| bundle_holds(b.as_deref(), &ca.current))
        }),
        _ => false,
    };

    // The serving certificate.
    let reissue = match &observed.serving {
        Found::Missing => Some(IssueReason::Missing),
        Found::Unusable(_) => Some(IssueReason::Unreadable),
        Found::Usable(serving) => {
            let cert = &serving.cert;
            let wanted = if cert.renewal_due(now) || !cert.valid_at(now) {
                Some(IssueReason::RenewalDue)
            } else if cert.dns_names != desired.dns_names || cert.ips != desired.ips {
                Some(IssueReason::Names)
            } else {
                match ca {
                    None => Some(IssueReason::UnknownIssuer),
                    Some(ca) if cert.is_signed_by(&ca.current) => None,
                    Some(ca)
                        if ca
                            .previous
                            .iter()
                            .any(|old| old.valid_at(now) && cert.is_signed_by(old)) =>
                    {
                        Some(IssueReason::NewCa)
                    }
                    Some(_) => Some(IssueReason::UnknownIssuer),
                }
            };
            // A certificate the API server accepts today is only replaced by one it will
            // accept too: wait until the bundle with the signing CA is out.
            let still_good = cert.valid_at(now);
            match wanted {
                Some(IssueReason::RenewalDue | IssueReason::Names | IssueReason::NewCa)
                    if still_good && !signer_trusted =>
                {
                    None
                }
                wanted => wanted,
            }
        }
    };
    if let Some(reason) = reissue {
        actions.push(Action::IssueServing(reason));
        actions.push(Action::WriteFiles);
    } else if let Found::Usable(serving) = &observed.serving {
        let in_secret = (
            serving.keyed.cert_pem.as_bytes(),
            serving.keyed.key_pem.as_bytes(),
        );
        let on_disk = observed
            .files
            .as_ref()
            .map(|(cert, key)| (cert.as_slice(), key.as_slice()));
        if on_disk != Some(in_secret) {
            actions.push(Action::WriteFiles);
        }
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{new_ca, sign_serving};
    use time::OffsetDateTime;

    /// 2030-01-01T00:00:00Z: every test runs at this fixed time.
    const NOW: i64 = 1_893_456_000;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(seconds).unwrap()
    }

    fn desired() -> Desired {
        Desired {
            dns_names: ["dbward-webhook.dbward-system.svc", "localhost"]
                .map(String::from)
                .into(),
            ips: BTreeSet::new(),
            lifetimes: Lifetimes::default(),
        }
    }

    /// A CA valid from `from` to `until` (seconds relative to NOW).
    fn ca(from: i64, until: i64) -> CaMaterial {
        let keyed = new_ca("test CA", at(NOW + from), at(NOW + until)).unwrap();
        CaMaterial::new(keyed, Vec::new()).unwrap()
    }

    fn serving(ca: &CaMaterial, names: &[&str], from: i64, until: i64) -> ServingMaterial {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let keyed = sign_serving(
            &ca.keyed,
            "dbward-webhook.dbward-system.svc",
            &names,
            &[],
            at(NOW + from),
            at(NOW + until),
        )
        .unwrap();
        ServingMaterial::new(keyed).unwrap()
    }

    fn good_serving(ca: &CaMaterial) -> ServingMaterial {
        serving(
            ca,
            &["dbward-webhook.dbward-system.svc", "localhost"],
            -10 * DAY,
            80 * DAY,
        )
    }

    fn configurations(bundle: Option<&str>) -> Vec<ObservedConfiguration> {
        [ConfigurationKind::Validating, ConfigurationKind::Mutating]
            .into_iter()
            .map(|kind| ObservedConfiguration {
                kind,
                ca_bundles: Some(vec![bundle.map(|b| b.as_bytes().to_vec())]),
            })
            .collect()
    }

    /// Everything in place and consistent.
    fn converged(ca: &CaMaterial, serving: &ServingMaterial) -> Observed {
        Observed {
            ca: Found::Usable(ca.clone()),
            serving: Found::Usable(serving.clone()),
            files: Some((
                serving.keyed.cert_pem.clone().into_bytes(),
                serving.keyed.key_pem.clone().into_bytes(),
            )),
            configurations: configurations(Some(&ca.bundle(NOW))),
        }
    }

    fn long_ca() -> CaMaterial {
        ca(-DAY, 3000 * DAY)
    }

    #[test]
    fn nothing_exists_creates_the_ca_and_the_certificate_and_injects_the_bundle() {
        let observed = Observed {
            ca: Found::Missing,
            serving: Found::Missing,
            files: None,
            configurations: configurations(None),
        };
        assert_eq!(
            plan(NOW, &observed, &desired()).unwrap(),
            vec![
                Action::CreateCa,
                Action::InjectBundle(ConfigurationKind::Validating),
                Action::InjectBundle(ConfigurationKind::Mutating),
                Action::IssueServing(IssueReason::Missing),
                Action::WriteFiles,
            ]
        );
    }

    #[test]
    fn a_missing_configuration_is_left_for_later() {
        let ca = long_ca();
        let mut observed = converged(&ca, &good_serving(&ca));
        observed.configurations[1].ca_bundles = None;
        assert_eq!(plan(NOW, &observed, &desired()).unwrap(), vec![]);
        // So is one without webhooks, even when the CA is new.
        observed.ca = Found::Missing;
        observed.configurations[0].ca_bundles = Some(Vec::new());
        assert_eq!(
            plan(NOW, &observed, &desired()).unwrap(),
            vec![
                Action::CreateCa,
                Action::IssueServing(IssueReason::UnknownIssuer),
                Action::WriteFiles
            ]
        );
    }

    #[test]
    fn a_valid_certificate_needs_nothing() {
        let ca = long_ca();
        let observed = converged(&ca, &good_serving(&ca));
        assert_eq!(plan(NOW, &observed, &desired()).unwrap(), vec![]);
    }

    #[test]
    fn a_certificate_past_two_thirds_of_its_life_is_renewed() {
        let ca = long_ca();
        // 90 days of life, 29 left: renew. 31 left: keep.
        let old = serving(
            &ca,
            &["dbward-webhook.dbward-system.svc", "localhost"],
            -61 * DAY,
            29 * DAY,
        );
        assert_eq!(
            plan(NOW, &converged(&ca, &old), &desired()).unwrap(),
            vec![
                Action::IssueServing(IssueReason::RenewalDue),
                Action::WriteFiles
            ]
        );
        let young = serving(
            &ca,
            &["dbward-webhook.dbward-system.svc", "localhost"],
            -59 * DAY,
            31 * DAY,
        );
        assert_eq!(
            plan(NOW, &converged(&ca, &young), &desired()).unwrap(),
            vec![]
        );
        let expired = serving(
            &ca,
            &["dbward-webhook.dbward-system.svc", "localhost"],
            -90 * DAY,
            -DAY,
        );
        assert_eq!(
            plan(NOW, &converged(&ca, &expired), &desired()).unwrap(),
            vec![
                Action::IssueServing(IssueReason::RenewalDue),
                Action::WriteFiles
            ]
        );
    }

    #[test]
    fn a_certificate_for_other_names_is_reissued() {
        let ca = long_ca();
        for names in [
            &["dbward-webhook.dbward-system.svc"][..],
            &[
                "dbward-webhook.dbward-system.svc",
                "localhost",
                "extra.example",
            ][..],
            &["dbward-webhook.other.svc", "localhost"][..],
        ] {
            let wrong = serving(&ca, names, -DAY, 89 * DAY);
            assert_eq!(
                plan(NOW, &converged(&ca, &wrong), &desired()).unwrap(),
                vec![Action::IssueServing(IssueReason::Names), Action::WriteFiles],
                "{names:?}"
            );
        }
    }

    #[test]
    fn a_certificate_of_another_ca_is_reissued() {
        let ca = long_ca();
        let stranger = long_ca();
        assert_eq!(
            plan(NOW, &converged(&ca, &good_serving(&stranger)), &desired()).unwrap(),
            vec![
                Action::IssueServing(IssueReason::UnknownIssuer),
                Action::WriteFiles
            ]
        );
    }

    #[test]
    fn a_ca_near_expiry_is_rotated_and_the_bundle_keeps_both_until_the_old_one_expires() {
        // Ten years of life, three left: under a third.
        let old_ca = ca(-7 * 365 * DAY, 3 * 365 * DAY);
        let cert = good_serving(&old_ca);
        let observed = converged(&old_ca, &cert);
        assert_eq!(
            plan(NOW, &observed, &desired()).unwrap(),
            vec![
                Action::RotateCa,
                Action::InjectBundle(ConfigurationKind::Validating),
                Action::InjectBundle(ConfigurationKind::Mutating),
            ],
            "the serving certificate stays until the new CA is trusted"
        );

        // What acting on RotateCa produces.
        let next = new_ca("next CA", at(NOW - 60), at(NOW + 3650 * DAY)).unwrap();
        let rotated = old_ca.rotated(next, NOW).unwrap();
        let bundle = CertInfo::parse_pem(&rotated.bundle(NOW)).unwrap();
        assert_eq!(
            bundle,
            vec![rotated.current.clone(), old_ca.current.clone()]
        );
        assert_eq!(CaMaterial::from_data(&rotated.to_data()).unwrap(), rotated);

        // Bundle not injected yet: the certificate signed by the old CA stays.
        let mut observed = converged(&rotated, &cert);
        observed.configurations = configurations(Some(&old_ca.bundle(NOW)));
        assert_eq!(
            plan(NOW, &observed, &desired()).unwrap(),
            vec![
                Action::InjectBundle(ConfigurationKind::Validating),
                Action::InjectBundle(ConfigurationKind::Mutating),
            ]
        );
        // Injected: now the serving certificate moves to the new CA.
        let observed = converged(&rotated, &cert);
        assert_eq!(
            plan(NOW, &observed, &desired()).unwrap(),
            vec![Action::IssueServing(IssueReason::NewCa), Action::WriteFiles]
        );

        // Once the old CA expired, it leaves the bundle and the Secret.
        let after = 3 * 365 * DAY + DAY;
        let later = NOW + after;
        assert_eq!(
            CertInfo::parse_pem(&rotated.bundle(later)).unwrap(),
            vec![rotated.current.clone()]
        );
        let cert = serving(
            &rotated,
            &["dbward-webhook.dbward-system.svc", "localhost"],
            after - DAY,
            after + 80 * DAY,
        );
        let mut observed = converged(&rotated, &cert);
        observed.configurations = configurations(Some(&rotated.bundle(later)));
        assert_eq!(
            plan(later, &observed, &desired()).unwrap(),
            vec![Action::DropExpiredCas]
        );
        assert!(rotated.without_expired(later).previous.is_empty());
    }

    #[test]
    fn an_expired_certificate_is_replaced_even_before_the_new_ca_is_trusted() {
        let old_ca = ca(-7 * 365 * DAY, 3 * 365 * DAY);
        let expired = serving(
            &old_ca,
            &["dbward-webhook.dbward-system.svc", "localhost"],
            -90 * DAY,
            -DAY,
        );
        assert_eq!(
            plan(NOW, &converged(&old_ca, &expired), &desired()).unwrap(),
            vec![
                Action::RotateCa,
                Action::InjectBundle(ConfigurationKind::Validating),
                Action::InjectBundle(ConfigurationKind::Mutating),
                Action::IssueServing(IssueReason::RenewalDue),
                Action::WriteFiles,
            ]
        );
    }

    #[test]
    fn a_bundle_that_differs_is_patched() {
        let ca = long_ca();
        let cert = good_serving(&ca);
        let stranger = long_ca();
        for bundle in [None, Some(stranger.bundle(NOW)), Some(String::new())] {
            let mut observed = converged(&ca, &cert);
            observed.configurations[0].ca_bundles = Some(vec![bundle.map(String::into_bytes)]);
            assert_eq!(
                plan(NOW, &observed, &desired()).unwrap(),
                vec![Action::InjectBundle(ConfigurationKind::Validating)]
            );
        }
        // Every webhook of a configuration counts, not only the first.
        let mut observed = converged(&ca, &cert);
        observed.configurations[1].ca_bundles = Some(vec![Some(ca.bundle(NOW).into_bytes()), None]);
        assert_eq!(
            plan(NOW, &observed, &desired()).unwrap(),
            vec![Action::InjectBundle(ConfigurationKind::Mutating)]
        );
    }

    #[test]
    fn files_that_differ_from_the_secret_are_rewritten() {
        let ca = long_ca();
        let cert = good_serving(&ca);
        let other = good_serving(&ca);
        for files in [
            None,
            Some((
                other.keyed.cert_pem.clone().into_bytes(),
                other.keyed.key_pem.clone().into_bytes(),
            )),
            Some((
                cert.keyed.cert_pem.clone().into_bytes(),
                other.keyed.key_pem.clone().into_bytes(),
            )),
        ] {
            let mut observed = converged(&ca, &cert);
            observed.files = files;
            assert_eq!(
                plan(NOW, &observed, &desired()).unwrap(),
                vec![Action::WriteFiles]
            );
        }
    }

    #[test]
    fn unreadable_secrets() {
        let ca = long_ca();
        let mut observed = converged(&ca, &good_serving(&ca));
        observed.serving = Found::Unusable("no tls.key".into());
        assert_eq!(
            plan(NOW, &observed, &desired()).unwrap(),
            vec![
                Action::IssueServing(IssueReason::Unreadable),
                Action::WriteFiles
            ]
        );
        observed.ca = Found::Unusable("garbage".into());
        let error = plan(NOW, &observed, &desired()).unwrap_err();
        assert!(error.to_string().contains("garbage"), "{error}");
    }

    #[test]
    fn reading_secrets_back_checks_keys_and_kinds() {
        let ca = long_ca();
        let cert = good_serving(&ca);
        let other = good_serving(&ca);
        let mismatched = KeyedCert {
            cert_pem: cert.keyed.cert_pem.clone(),
            key_pem: other.keyed.key_pem.clone(),
        };
        assert_eq!(
            ServingMaterial::new(mismatched).unwrap_err(),
            CertReadError::KeyMismatch
        );
        assert_eq!(
            CaMaterial::new(cert.keyed.clone(), vec![]).unwrap_err(),
            CertReadError::NotCa
        );
        let data = BTreeMap::from([(
            CA_CERT_KEY.to_string(),
            ca.keyed.cert_pem.clone().into_bytes(),
        )]);
        assert_eq!(
            CaMaterial::from_data(&data).unwrap_err(),
            CertReadError::MissingKey { key: CA_KEY_KEY }
        );
        assert_eq!(
            ServingMaterial::from_data(&cert.to_data(&ca.current)).unwrap(),
            cert
        );
        assert!(cert.cert.is_signed_by(&ca.current));
        assert!(!ca.current.is_signed_by(&cert.cert));
        assert!(!format!("{ca:?} {cert:?}").contains("PRIVATE"));
    }
}
