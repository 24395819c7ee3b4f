//! Credential Secrets: building them, reading them back, comparing them (so an identical Secret
//! is never re-applied), generated passwords and connection URIs.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::api::SecretTarget;
use crate::sql::{ConnectionInfo, Engine};

/// Length of generated passwords (alphanumeric: safe in URIs and shells, ~238 bits).
pub const PASSWORD_LENGTH: usize = 40;

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A fresh password from the operating system's CSPRNG.
pub fn generate_password() -> Result<String, getrandom::Error> {
    let mut out = String::with_capacity(PASSWORD_LENGTH);
    let mut buf = [0u8; 64];
    while out.len() < PASSWORD_LENGTH {
        getrandom::fill(&mut buf)?;
        // Rejection sampling: 248 = 4 × 62, so every character is equally likely.
        for b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == PASSWORD_LENGTH {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]));
        }
    }
    Ok(out)
}

/// The Secret's values as text (`data` decoded, then `stringData`, which wins as on the API
/// server). Values that are not UTF-8 are read lossily.
pub fn decoded_data(secret: &Secret) -> BTreeMap<String, String> {
    let mut data: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    if let Some(string_data) = &secret.string_data {
        data.extend(string_data.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    data
}

/// Where a kind's credentials go, resolved from `connInfoSecretTarget` with its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Namespace (the object's).
    pub namespace: String,
    /// Name (`connInfoSecretTarget.name`, default `metadata.name`).
    pub name: String,
    /// Key prefix, used as is.
    pub prefix: String,
    /// Labels to set.
    pub labels: BTreeMap<String, String>,
    /// Annotations to set.
    pub annotations: BTreeMap<String, String>,
}

impl Target {
    /// `None` when `connInfoSecretTargetDisabled`.
    pub fn resolve(
        spec: &SecretTarget,
        namespace: &str,
        object_name: &str,
        default_prefix: &str,
    ) -> Option<Target> {
        if spec.conn_info_secret_target_disabled == Some(true) {
            return None;
        }
        let target = spec.conn_info_secret_target.clone().unwrap_or_default();
        Some(Target {
            namespace: namespace.to_owned(),
            name: target.name.unwrap_or_else(|| object_name.to_owned()),
            prefix: target.prefix.unwrap_or_else(|| default_prefix.to_owned()),
            labels: target.labels.unwrap_or_default(),
            annotations: target.annotations.unwrap_or_default(),
        })
    }

    /// The Secret holding `values` (keys without the prefix), owned by `owner` when given.
    pub fn build(&self, values: &[(&str, String)], owner: Option<&OwnerReference>) -> Secret {
        let data = values
            .iter()
            .map(|(k, v)| {
                (
                    format!("{}{k}", self.prefix),
                    ByteString(v.as_bytes().to_vec()),
                )
            })
            .collect();
        // dbward's label last: the controllers find their Secrets by it.
        let mut labels = self.labels.clone();
        labels.insert(
            super::MANAGED_BY.0.to_owned(),
            super::MANAGED_BY.1.to_owned(),
        );
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels),
                annotations: (!self.annotations.is_empty()).then(|| self.annotations.clone()),
                owner_references: owner.map(|o| vec![o.clone()]),
                ..ObjectMeta::default()
            },
            data: Some(data),
            type_: Some("Opaque".to_owned()),
            ..Secret::default()
        }
    }

    /// The password already stored in the existing Secret, if any (kept across reconciles).
    pub fn stored_password(&self, existing: Option<&Secret>) -> Option<String> {
        let key = format!("{}PASSWORD", self.prefix);
        existing
            .map(decoded_data)
            .and_then(|mut d| d.remove(&key))
            .filter(|p| !p.is_empty())
    }
}

/// A Secret for `Debug` output: its name, labels, annotations, owners and keys, never its values
/// (a failing `assert_eq!` or a `{:?}` in a log must not print a password).
pub struct Redacted<'a>(pub &'a Secret);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let meta = &self.0.metadata;
        fn keys<'k>(data: impl IntoIterator<Item = &'k String>) -> BTreeMap<&'k str, &'static str> {
            data.into_iter()
                .map(|k| (k.as_str(), "<redacted>"))
                .collect()
        }
        f.debug_struct("Secret")
            .field("namespace", &meta.namespace)
            .field("name", &meta.name)
            .field("labels", &meta.labels)
            .field("annotations", &meta.annotations)
            .field(
                "owners",
                &meta
                    .owner_references
                    .iter()
                    .flatten()
                    .map(|o| (&o.kind, &o.name, &o.uid))
                    .collect::<Vec<_>>(),
            )
            .field("type", &self.0.type_)
            .field("data", &keys(self.0.data.iter().flat_map(|d| d.keys())))
            .field(
                "stringData",
                &keys(self.0.string_data.iter().flat_map(|d| d.keys())),
            )
            .finish()
    }
}

/// Whether `existing` already holds everything `desired` sets: the same data (exactly the same
/// keys), its labels, annotations and owner references. Other labels and annotations (set by
/// someone else) do not count as a difference.
pub fn up_to_date(existing: &Secret, desired: &Secret) -> bool {
    fn contains(
        have: Option<&BTreeMap<String, String>>,
        want: Option<&BTreeMap<String, String>>,
    ) -> bool {
        want.into_iter()
            .flatten()
            .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
    }
    let data_equal = decoded_data(existing) == decoded_data(desired);
    let owners_present = desired
        .metadata
        .owner_references
        .iter()
        .flatten()
        .all(|want| {
            existing
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|have| have.uid == want.uid && have.controller == want.controller)
        });
    data_equal
        && owners_present
        && contains(
            existing.metadata.labels.as_ref(),
            desired.metadata.labels.as_ref(),
        )
        && contains(
            existing.metadata.annotations.as_ref(),
            desired.metadata.annotations.as_ref(),
        )
}

/// Characters left as they are in the user-info part of a URI (RFC 3986 unreserved).
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `postgres://user:password@host:port/database?sslmode=…` or
/// `mysql://user:password@host:port/database`, with user, password and database
/// percent-encoded.
pub fn database_uri(info: &ConnectionInfo, user: &str, password: &str, database: &str) -> String {
    let host = if info.host.contains(':') && !info.host.starts_with('[') {
        format!("[{}]", info.host)
    } else {
        info.host.clone()
    };
    let user = utf8_percent_encode(user, USERINFO);
    let password = utf8_percent_encode(password, USERINFO);
    let database = utf8_percent_encode(database, USERINFO);
    match info.engine {
        Engine::Postgres => format!(
            "postgres://{user}:{password}@{host}:{}/{database}?sslmode={}",
            info.port,
            sslmode(info)
        ),
        Engine::Mysql => format!("mysql://{user}:{password}@{host}:{}/{database}", info.port),
    }
}

/// The connector's `sslmode`; `prefer` when it has none, which is what dbward itself then does
/// (TLS when the server offers it, as libpq's default): a client told `disable` would talk in
/// plaintext to a server that offers TLS.
pub fn sslmode(info: &ConnectionInfo) -> String {
    info.sslmode.clone().unwrap_or_else(|| "prefer".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(engine: Engine) -> ConnectionInfo {
        ConnectionInfo {
            engine,
            host: "db.example".into(),
            port: 5432,
            user: "admin".into(),
            password: "x".into(),
            sslmode: Some("require".into()),
            ca_cert: None,
        }
    }

    #[test]
    fn clients_are_told_to_prefer_tls_when_the_connector_says_nothing() {
        let mut unset = info(Engine::Postgres);
        unset.sslmode = None;
        assert_eq!(sslmode(&unset), "prefer");
        assert_eq!(sslmode(&info(Engine::Postgres)), "require");
    }

    #[test]
    fn passwords_are_long_random_and_uri_safe() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), PASSWORD_LENGTH);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn uris_encode_user_and_password() {
        let uri = database_uri(&info(Engine::Postgres), "o'brien", "p@ss:w/rd", "my db");
        assert_eq!(
            uri,
            "postgres://o%27brien:p%40ss%3Aw%2Frd@db.example:5432/my%20db?sslmode=require"
        );
        let mut v6 = info(Engine::Mysql);
        v6.host = "::1".into();
        assert_eq!(database_uri(&v6, "u", "p", "d"), "mysql://u:p@[::1]:5432/d");
    }

    #[test]
    fn debug_output_never_shows_secret_values() {
        let target = Target::resolve(&SecretTarget::default(), "ns", "obj", "X_").unwrap();
        let secret = target.build(&[("PASSWORD", "hunter2-Pw".into())], None);
        let shown = format!("{:?}", Redacted(&secret));
        assert!(
            shown.contains("X_PASSWORD") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        // The bytes as numbers would be as bad as the text.
        let bytes = format!("{:?}", b"hunter2-Pw");
        assert!(!shown.contains(&bytes[1..12]), "{shown}");
    }

    #[test]
    fn targets_default_and_compare() {
        let spec = SecretTarget::default();
        let target = Target::resolve(&spec, "ns", "obj", "SERVICEUSER_").unwrap();
        assert_eq!(
            (target.name.as_str(), target.prefix.as_str()),
            ("obj", "SERVICEUSER_")
        );
        let disabled = SecretTarget {
            conn_info_secret_target_disabled: Some(true),
            ..SecretTarget::default()
        };
        assert_eq!(Target::resolve(&disabled, "ns", "obj", "X_"), None);

        let desired = target.build(&[("PASSWORD", "pw".into())], None);
        assert_eq!(
            target.stored_password(Some(&desired)).as_deref(),
            Some("pw")
        );
        let mut existing = desired.clone();
        existing
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("other".into(), "x".into());
        assert!(
            up_to_date(&existing, &desired),
            "labels of others do not count"
        );
        // A Secret written before dbward labelled its Secrets gets the label on the next pass.
        let mut unlabelled = desired.clone();
        unlabelled.metadata.labels = None;
        assert!(!up_to_date(&unlabelled, &desired));
        let changed = target.build(&[("PASSWORD", "pw2".into())], None);
        assert!(!up_to_date(&existing, &changed));
    }
}
