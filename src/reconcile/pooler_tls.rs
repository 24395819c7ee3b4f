//! TLS of a DatabaseService's pooler as a `ReconfigureTLS` request leaves it: two Secrets in
//! dbward's namespace, owned by the DatabaseService — the pooler's CA (`<svc>-pooler-ca`:
//! `ca.crt`, `ca.key`, made with the code of the webhook's self-managed certificates) and the
//! serving certificate it signed (`<svc>-pooler-tls`, type `kubernetes.io/tls`: `tls.crt`,
//! `tls.key`, `ca.crt`, and the request's `sslMode` and `clientAuthMode` as annotations).
//!
//! The serving Secret is the request's result, and the only place it is kept: the ConnectionPool
//! reconciler finds it by its well-known name ([`tls_secret_name`]), mounts it at the pooler's TLS
//! directory and renders `client_tls_*`, `hba.conf` and the pool Secrets' `SSLMODE` / `CA_CERT`
//! from it. Removing TLS deletes it. A `spec.pooler.tls.secretName` the admin set takes
//! precedence (a Secret dbward does not manage).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use time::{Duration, OffsetDateTime};

use crate::api::DatabaseService;
use crate::api::database_ops_request::TlsChange;
use crate::certs::plan::{CA_CERT_KEY, CA_KEY_KEY, CaMaterial, TLS_CERT_KEY, TLS_KEY_KEY};
use crate::certs::{self, KeyedCert};

use super::MANAGED_BY;
use super::pooler::{bounded, object_name};
use super::service_user::owner_reference;

/// Annotation of the serving Secret: the `sslMode` clients are told (the pool Secrets' `SSLMODE`).
pub const SSLMODE_ANNOTATION: &str = "dbward.dev/client-tls-sslmode";
/// Annotation of the serving Secret: how clients authenticate (`scram`).
pub const AUTH_MODE_ANNOTATION: &str = "dbward.dev/client-auth-mode";
/// Label of both Secrets: the DatabaseService whose pooler they serve.
pub const TLS_LABEL: &str = "dbward.dev/pooler-tls";
/// `sslMode` when the request gives none: clients get the CA, and the Service's names are in
/// the certificate, so they can verify both.
pub const DEFAULT_SSLMODE: &str = "verify-full";
/// How long the CA is valid.
pub const CA_DAYS: i64 = 3650;
/// How long a serving certificate is valid (rotate with `rotateCertificates`).
pub const SERVING_DAYS: i64 = 365;

/// The serving certificate Secret of `service`'s pooler (a DNS label).
pub fn tls_secret_name(service: &str) -> String {
    bounded("", service, "-pooler-tls", 63)
}

/// The CA Secret of `service`'s pooler.
pub fn ca_secret_name(service: &str) -> String {
    bounded("", service, "-pooler-ca", 63)
}

/// The names the pooler Service answers to, in the certificate.
pub fn dns_names(service: &str, operator_namespace: &str) -> Vec<String> {
    certs::service_dns_names(&object_name(service), operator_namespace)
}

/// What the pooler is to do with TLS, as checked from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsPolicy {
    /// What clients are told (`SSLMODE`): `allow`, `prefer`, `require`, `verify-ca` or
    /// `verify-full`.
    pub sslmode: String,
    /// `scram`.
    pub auth_mode: String,
}

impl ClientTlsPolicy {
    /// Whether PgBouncer must refuse clients without TLS (`hostssl` in `hba.conf`).
    pub fn tls_required(&self) -> bool {
        matches!(
            self.sslmode.as_str(),
            "require" | "verify-ca" | "verify-full"
        )
    }
}

/// Pure: the policy a request that adds or rotates TLS asks for, or why it cannot be run (a
/// CamelCase reason and a message).
pub fn policy(change: &TlsChange) -> Result<ClientTlsPolicy, (&'static str, String)> {
    let sslmode = change
        .ssl_mode
        .clone()
        .unwrap_or_else(|| DEFAULT_SSLMODE.to_owned());
    match sslmode.as_str() {
        "allow" | "prefer" | "require" | "verify-ca" | "verify-full" => {}
        other => {
            return Err((
                "InvalidSSLMode",
                format!("spec.tls.sslMode {other:?} turns TLS off; use remove: true to remove TLS"),
            ));
        }
    }
    let auth_mode = change
        .client_auth_mode
        .clone()
        .unwrap_or_else(|| "scram".to_owned());
    if auth_mode != "scram" {
        // The pooler checks clients against the server's SCRAM verifiers (auth_query): an MD5
        // login cannot be checked against them, and client certificates are not issued here.
        return Err((
            "ClientAuthModeUnsupported",
            format!(
                "spec.tls.clientAuthMode {auth_mode:?} is not supported by dbward's pooler: clients log in with SCRAM (clientAuthMode scram)"
            ),
        ));
    }
    Ok(ClientTlsPolicy { sslmode, auth_mode })
}

/// Pure: why a ReconfigureTLS request cannot change `service`'s pooler: the admin gave it a
/// Secret of their own (`spec.pooler.tls.secretName`), which takes precedence over the
/// request's Secret.
pub fn admin_secret_set(service: &DatabaseService) -> Option<(&'static str, String)> {
    let name = service
        .spec
        .pooler
        .as_ref()?
        .tls
        .as_ref()?
        .secret_name
        .as_ref()?;
    Some((
        "PoolerSecretNameSet",
        format!(
            "the DatabaseService's spec.pooler.tls.secretName {name:?} is the pooler's certificate and takes precedence; change that Secret, or unset secretName to let ReconfigureTLS manage TLS"
        ),
    ))
}

/// The policy a serving Secret records (`None`: not a Secret of this module's).
pub fn recorded_policy(secret: &Secret) -> Option<ClientTlsPolicy> {
    let annotations = secret.metadata.annotations.as_ref()?;
    Some(ClientTlsPolicy {
        sslmode: annotations.get(SSLMODE_ANNOTATION)?.clone(),
        auth_mode: annotations
            .get(AUTH_MODE_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| "scram".to_owned()),
    })
}

/// The CA of a stored CA Secret, or a new one when there is none (or it is not usable).
pub fn ca_or_new(service: &str, stored: Option<&Secret>) -> Result<CaMaterial, String> {
    if let Some(material) = stored
        .map(raw_data)
        .and_then(|data| CaMaterial::from_data(&data).ok())
    {
        return Ok(material);
    }
    let now = OffsetDateTime::now_utc();
    let keyed = certs::new_ca(
        &format!("dbward pooler CA ({service})"),
        now - Duration::minutes(5),
        now + Duration::days(CA_DAYS),
    )
    .map_err(|e| e.to_string())?;
    CaMaterial::new(keyed, Vec::new()).map_err(|e| e.to_string())
}

/// A fresh serving certificate (a new key, a new serial) for the pooler Service's names.
pub fn issue(
    ca: &CaMaterial,
    service: &str,
    operator_namespace: &str,
) -> Result<KeyedCert, String> {
    let now = OffsetDateTime::now_utc();
    let names = dns_names(service, operator_namespace);
    certs::sign_serving(
        &ca.keyed,
        &names[2],
        &names,
        &[],
        now - Duration::minutes(5),
        now + Duration::days(SERVING_DAYS),
    )
    .map_err(|e| e.to_string())
}

fn raw_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

fn metadata(
    service: &DatabaseService,
    name: String,
    operator_namespace: &str,
    annotations: Option<BTreeMap<String, String>>,
) -> ObjectMeta {
    let svc = service.metadata.name.clone().unwrap_or_default();
    ObjectMeta {
        name: Some(name),
        namespace: Some(operator_namespace.to_owned()),
        labels: Some(BTreeMap::from([
            (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
            (TLS_LABEL.to_owned(), svc),
        ])),
        annotations,
        owner_references: owner_reference(service).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

fn data(entries: BTreeMap<&str, &str>) -> BTreeMap<String, ByteString> {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

/// The CA Secret.
pub fn ca_secret(service: &DatabaseService, operator_namespace: &str, ca: &CaMaterial) -> Secret {
    let svc = service.metadata.name.clone().unwrap_or_default();
    Secret {
        metadata: metadata(service, ca_secret_name(&svc), operator_namespace, None),
        data: Some(data(BTreeMap::from([
            (CA_CERT_KEY, ca.keyed.cert_pem.as_str()),
            (CA_KEY_KEY, ca.keyed.key_pem.as_str()),
        ]))),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// The serving Secret: the certificate, its key, the CA, and the policy.
pub fn tls_secret(
    service: &DatabaseService,
    operator_namespace: &str,
    ca: &CaMaterial,
    serving: &KeyedCert,
    policy: &ClientTlsPolicy,
) -> Secret {
    let svc = service.metadata.name.clone().unwrap_or_default();
    let annotations = BTreeMap::from([
        (SSLMODE_ANNOTATION.to_owned(), policy.sslmode.clone()),
        (AUTH_MODE_ANNOTATION.to_owned(), policy.auth_mode.clone()),
    ]);
    Secret {
        metadata: metadata(
            service,
            tls_secret_name(&svc),
            operator_namespace,
            Some(annotations),
        ),
        data: Some(data(BTreeMap::from([
            (TLS_CERT_KEY, serving.cert_pem.as_str()),
            (TLS_KEY_KEY, serving.key_pem.as_str()),
            (CA_CERT_KEY, ca.keyed.cert_pem.as_str()),
        ]))),
        type_: Some("kubernetes.io/tls".to_owned()),
        ..Secret::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::certs::plan::CertInfo;

    /// The DatabaseService `shared-pg` whose pooler the TLS tests serve.
    pub(crate) fn service() -> DatabaseService {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "DatabaseService",
            "metadata": {"name": "shared-pg", "uid": "svc-uid"},
            "spec": {"engine": "postgres", "project": "proj",
                     "connectorSecretRef": {"name": "admin"}}
        }))
        .unwrap()
    }

    #[test]
    fn policy_defaults_to_verify_full_and_scram() {
        let p = policy(&TlsChange::default()).unwrap();
        assert_eq!(
            (p.sslmode.as_str(), p.auth_mode.as_str()),
            ("verify-full", "scram")
        );
        assert!(p.tls_required());
        let prefer = policy(&TlsChange {
            ssl_mode: Some("prefer".into()),
            ..TlsChange::default()
        })
        .unwrap();
        assert!(!prefer.tls_required());
    }

    #[test]
    fn policy_refuses_what_the_pooler_cannot_do() {
        let off = TlsChange {
            ssl_mode: Some("disable".into()),
            ..TlsChange::default()
        };
        assert_eq!(policy(&off).unwrap_err().0, "InvalidSSLMode");
        for mode in ["md5", "cert"] {
            let change = TlsChange {
                ssl_mode: Some("verify-full".into()),
                client_auth_mode: Some(mode.into()),
                ..TlsChange::default()
            };
            assert_eq!(policy(&change).unwrap_err().0, "ClientAuthModeUnsupported");
        }
    }

    #[test]
    fn certificate_names_the_pooler_service_and_is_signed_by_the_ca() {
        let ca = ca_or_new("shared-pg", None).unwrap();
        let serving = issue(&ca, "shared-pg", "dbward-system").unwrap();
        let info = CertInfo::parse_pem(&serving.cert_pem).unwrap().remove(0);
        assert!(info.is_signed_by(&ca.current));
        assert_eq!(
            dns_names("shared-pg", "dbward-system"),
            [
                "shared-pg-pooler",
                "shared-pg-pooler.dbward-system",
                "shared-pg-pooler.dbward-system.svc",
                "shared-pg-pooler.dbward-system.svc.cluster.local"
            ]
        );
        // A stored CA is kept; a second certificate is a new one.
        let service = service();
        let stored = ca_secret(&service, "dbward-system", &ca);
        let again = ca_or_new("shared-pg", Some(&stored)).unwrap();
        assert_eq!(again.keyed, ca.keyed);
        let second = issue(&again, "shared-pg", "dbward-system").unwrap();
        assert_ne!(second.cert_pem, serving.cert_pem);
    }

    #[test]
    fn the_serving_secret_records_the_policy() {
        let service = service();
        let ca = ca_or_new("shared-pg", None).unwrap();
        let serving = issue(&ca, "shared-pg", "dbward-system").unwrap();
        let p = policy(&TlsChange::default()).unwrap();
        let secret = tls_secret(&service, "dbward-system", &ca, &serving, &p);
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("shared-pg-pooler-tls")
        );
        assert_eq!(recorded_policy(&secret), Some(p));
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    }
}
