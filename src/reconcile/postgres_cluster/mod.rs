//! The PostgresCluster's Kubernetes side: the Zalando manifest realised as a StatefulSet of the
//! official `postgres` image, its Services, a PodDisruptionBudget, a ConfigMap with its bootstrap
//! script and `pg_hba.conf`, and credential Secrets — all in the cluster's namespace, owned by
//! it, written with server-side apply and compared through a spec-hash annotation first.
//!
//! Ordinal 0 is the primary; ordinals ≥ 1 are streaming replicas bootstrapped with
//! `pg_basebackup` as the replication role `standby`. **There is no automatic failover**: when
//! the primary's pod is lost, the StatefulSet recreates it on its volume and clients wait. For
//! high availability use an operator built for it (Zalando's postgres-operator with Patroni,
//! CloudNativePG, Crunchy PGO).
//!
//! [`objects`] builds (pure), [`plan`] compares with what was observed (pure).

pub mod kube;
pub mod objects;
pub mod plan;
pub mod sql;

use std::collections::BTreeMap;

use crate::api::PostgresCluster;

/// Label naming the cluster on every object and pod (a selector label: it never changes).
pub const CLUSTER_LABEL: &str = "dbward.dev/postgres-cluster";
/// Label with the pod's role, `primary` or `replica`, set by dbward on the pods by ordinal.
pub const ROLE_LABEL: &str = "dbward.dev/role";
/// Label with the team, on the objects' metadata only — never in a selector (the StatefulSet's
/// selector is immutable, and Zalando's team label in it made clusters impossible to rename).
pub const TEAM_LABEL: &str = "dbward.dev/team";
/// The label the StatefulSet controller stamps on each of its pods.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The superuser the image creates.
pub const SUPERUSER: &str = "postgres";
/// The replication role the replicas' `pg_basebackup` and streaming use.
pub const REPLICATION_USER: &str = "standby";
/// PostgreSQL's port.
pub const PORT: i32 = 5432;

/// The cluster's name and namespace.
pub fn name_of(cluster: &PostgresCluster) -> (String, String) {
    (
        cluster.metadata.name.clone().unwrap_or_default(),
        cluster.metadata.namespace.clone().unwrap_or_default(),
    )
}

/// What the StatefulSet, the Services and the PDB select: stable labels only.
pub fn selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "postgres".to_owned()),
        (CLUSTER_LABEL.to_owned(), cluster.to_owned()),
    ])
}

/// The labels of every object dbward writes for `cluster` (the selector, dbward's managed-by
/// label and the team).
pub fn labels(cluster: &PostgresCluster) -> BTreeMap<String, String> {
    let (name, _) = name_of(cluster);
    let mut labels = selector(&name);
    labels.insert(
        super::MANAGED_BY.0.to_owned(),
        super::MANAGED_BY.1.to_owned(),
    );
    labels.insert(TEAM_LABEL.to_owned(), cluster.spec.team_id.clone());
    labels
}

/// The headless Service's name (the StatefulSet's `serviceName`).
pub fn headless_name(cluster: &str) -> String {
    format!("{cluster}-headless")
}

/// The replicas' Service's name.
pub fn replicas_name(cluster: &str) -> String {
    format!("{cluster}-repl")
}

/// The ConfigMap's name.
pub fn config_name(cluster: &str) -> String {
    format!("{cluster}-config")
}

/// The users that get a credentials Secret: every manifest user that can log in, `postgres`
/// and the replication role.
pub fn credential_users(cluster: &PostgresCluster) -> Vec<String> {
    let mut users = vec![SUPERUSER.to_owned(), REPLICATION_USER.to_owned()];
    for (user, flags) in &cluster.spec.users {
        let nologin = flags
            .iter()
            .flatten()
            .any(|f| *f == crate::api::RoleFlag::Nologin);
        if !nologin && !users.contains(user) {
            users.push(user.clone());
        }
    }
    users
}

/// The pod's role by its name's ordinal: `{cluster}-0` is the primary.
pub fn role_of(cluster: &str, pod: &str) -> Option<&'static str> {
    let ordinal = pod.strip_prefix(cluster)?.strip_prefix('-')?;
    match ordinal.parse::<u32>().ok()? {
        0 => Some("primary"),
        _ => Some("replica"),
    }
}
