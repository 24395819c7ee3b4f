//! `DatabaseClaim`: "give this namespace its own database" — the vCluster connector flow.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{CommonStatus, DeletionPolicy, SecretTarget, ServiceBinding};

/// Default key prefix of the connection Secret.
pub const SECRET_PREFIX: &str = "DATABASECLAIM_";
/// Keys of the connection Secret, after the prefix.
pub const SECRET_KEYS: [&str; 7] = [
    "HOST",
    "PORT",
    "DATABASE",
    "USER",
    "PASSWORD",
    "SSLMODE",
    "DATABASE_URI",
];

/// An isolated database and a non-privileged user that owns it and nothing else, on a shared
/// DatabaseService, with a Secret holding the connection details.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbward.dev",
    version = "v1alpha1",
    kind = "DatabaseClaim",
    namespaced,
    shortname = "dbclaim",
    category = "dbward",
    status = "DatabaseClaimStatus",
    doc = "An isolated database and a non-privileged owner user on a shared DatabaseService, with a Secret holding the connection details.",
    printcolumn(
        name = "Service Name",
        type_ = "string",
        json_path = ".spec.serviceName"
    ),
    printcolumn(
        name = "Database",
        type_ = "string",
        json_path = ".status.databaseName"
    ),
    printcolumn(name = "User", type_ = "string", json_path = ".status.username"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseClaimSpec {
    #[serde(flatten)]
    pub binding: ServiceBinding,

    #[serde(flatten)]
    pub secret: SecretTarget,

    /// `Retain` (default) keeps the database when this object is deleted (its user is always
    /// dropped); `Delete` drops it too.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Observed state of a DatabaseClaim. The names are pinned here on the first reconcile, so a
/// later change can never retarget a drop.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseClaimStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Name of the claimed database on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_name: Option<String>,
    /// Name of the claim's user on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// The name a claim's database and user get on the server: `<namespace>_<name>` lowercased,
/// every character outside `[a-z0-9_]` replaced by `_`, cut to fit, and always ended with `_`
/// and a hash of the pair itself (ten base-32 characters of SHA-256 over `namespace/name`), so
/// that claims whose readable parts agree — `team-a/b` and `team/a-b` — still get distinct
/// names within the engine's `max`. The hash must never change between versions; names already
/// pinned in a claim's status are kept as they are.
pub fn derived_name(namespace: &str, name: &str, max: usize) -> String {
    let hash = pair_hash(namespace, name);
    let mut readable: String = format!("{namespace}_{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    // Names may not start with a digit, and PostgreSQL reserves roles starting with `pg_`.
    if readable.starts_with(|c: char| c.is_ascii_digit()) || readable.starts_with("pg_") {
        readable.insert(0, '_');
    }
    readable.truncate(max.saturating_sub(hash.len() + 1));
    format!("{readable}_{hash}")
}

/// Ten characters of base 32 (`a-z2-7`) from the first 50 bits of SHA-256 over `namespace/name`
/// (neither may contain `/`, so the pair is read back unambiguously).
fn pair_hash(namespace: &str, name: &str) -> String {
    use sha2::Digest as _;
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let digest = sha2::Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let bits = u64::from_be_bytes(digest[..8].try_into().expect("eight bytes"));
    (0..10)
        .map(|i| char::from(ALPHABET[((bits >> (59 - 5 * i)) & 31) as usize]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::derived_name;

    #[test]
    fn derived_names_are_sanitised_bounded_and_stable() {
        let short = derived_name("team-a", "app", 32);
        assert!(short.starts_with("team_a_app_"), "{short}");
        assert_eq!(short.len(), "team_a_app_".len() + 10);
        // Stable across versions: a change here would retarget every unpinned claim.
        assert_eq!(short, derived_name("team-a", "app", 32));
        assert!(derived_name("9ns", "x.y", 32).starts_with("_9ns_x_y_"));
        assert!(derived_name("pg-team", "app", 63).starts_with("_pg_team_app_"));
        for max in [32, 63, 64] {
            let long = derived_name(
                "a-very-long-namespace-name",
                "with-a-very-long-claim-name",
                max,
            );
            assert_eq!(long.len(), max);
        }
    }

    #[test]
    fn the_issue_pairs_no_longer_collide() {
        for max in [32, 63, 64] {
            assert_ne!(
                derived_name("team-a", "b", max),
                derived_name("team", "a-b", max)
            );
            assert_ne!(
                derived_name("team", "a.b", max),
                derived_name("team", "a-b", max)
            );
        }
    }

    /// Property: distinct (namespace, name) pairs get distinct names, at every engine limit,
    /// over generated pairs built to agree in their readable part.
    #[test]
    fn distinct_pairs_never_share_a_name() {
        use std::collections::HashMap;
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"ab-.0";
        let mut pairs = std::collections::BTreeSet::new();
        while pairs.len() < 20_000 {
            let len = 2 + (next() % 40) as usize;
            let word: String = (0..len)
                .map(|_| char::from(alphabet[(next() % alphabet.len() as u64) as usize]))
                .collect();
            // Split the same characters at several places: the readable parts agree.
            let cut = 1 + (next() as usize % (len - 1));
            let (ns, name) = word.split_at(cut);
            pairs.insert((ns.replace('.', "-"), name.to_owned()));
            pairs.insert((format!("{ns}x").replace('.', "-"), name.to_owned()));
        }
        for max in [32, 63, 64] {
            let mut seen: HashMap<String, &(String, String)> = HashMap::new();
            for pair in &pairs {
                let derived = derived_name(&pair.0, &pair.1, max);
                assert!(derived.len() <= max);
                if let Some(other) = seen.insert(derived.clone(), pair) {
                    panic!("{other:?} and {pair:?} both became {derived:?}");
                }
            }
        }
    }
}
