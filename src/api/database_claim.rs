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

/// The name a claim's database and user get on the server: `<namespace>_<name>`, lowercased,
/// every character outside `[a-z0-9_]` replaced by `_`, and — when longer than `max` — cut and
/// ended with a hash of the full name, so distinct claims never collide.
pub fn derived_name(namespace: &str, name: &str, max: usize) -> String {
    let full = format!("{namespace}_{name}");
    let mut clean: String = full
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if clean.starts_with(|c: char| c.is_ascii_digit()) {
        clean.insert(0, '_');
    }
    if clean.len() <= max {
        return clean;
    }
    let hash = format!("{:08x}", fnv1a32(full.as_bytes()));
    clean.truncate(max - hash.len() - 1);
    format!("{clean}_{hash}")
}

/// FNV-1a: a small, stable hash (it must never change between versions).
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::derived_name;

    #[test]
    fn derived_names_are_sanitised_and_bounded() {
        assert_eq!(derived_name("team-a", "app", 32), "team_a_app");
        assert_eq!(derived_name("9ns", "x.y", 32), "_9ns_x_y");
        let long = derived_name(
            "a-very-long-namespace-name",
            "with-a-very-long-claim-name",
            32,
        );
        assert_eq!(long.len(), 32);
        assert_ne!(
            long,
            derived_name(
                "a-very-long-namespace-name",
                "with-a-very-long-claim-name2",
                32
            )
        );
    }
}
