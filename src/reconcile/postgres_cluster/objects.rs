//! Pure builders of a PostgresCluster's Kubernetes objects (they compute only): the ConfigMap
//! with the bootstrap script and `pg_hba.conf`, the Services `{name}` (primary), `{name}-repl`
//! (replicas) and `{name}-headless` (the StatefulSet's), the PodDisruptionBudget, the credential
//! Secrets, and — in [`super::plan`]'s hands — the StatefulSet of [`statefulset`].
//!
//! Every object is owned by the cluster and stamped with a hash of what dbward sets on it
//! ([`SPEC_ANNOTATION`]), so an unchanged cluster is recognised without comparing fields the API
//! server defaults.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::PostgresCluster;
use crate::api::admission_policy::Limits;
use crate::api::postgres_cluster::credentials_secret_name;
use crate::reconcile::pooler_objects::stamped;
use crate::reconcile::service_user::owner_reference;

use super::{
    POD_NAME_LABEL, PORT, REPLICATION_USER, ROLE_LABEL, config_name, headless_name, labels,
    name_of, replicas_name, selector,
};

pub use crate::reconcile::pooler_objects::{SPEC_ANNOTATION, spec_hash};

pub mod statefulset;

/// The bootstrap script's key in the ConfigMap.
pub const BOOTSTRAP_FILE: &str = "bootstrap.sh";
/// `pg_hba.conf`'s key in the ConfigMap.
pub const HBA_FILE: &str = "pg_hba.conf";
/// The init script that creates the replication role on the primary's first start.
pub const REPLICATION_ROLE_FILE: &str = "10-replication-role.sh";

/// A cluster's objects, except its credential Secrets (see [`credentials`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Objects {
    /// Bootstrap script and `pg_hba.conf`.
    pub config_map: ConfigMap,
    /// The PostgreSQL pods; its `volumeClaimTemplates` are not part of its spec hash (they are
    /// immutable: a grown volume is applied to the PVCs instead).
    pub stateful_set: StatefulSet,
    /// `{name}`: the primary.
    pub primary: Service,
    /// `{name}-repl`: the replicas.
    pub replicas: Service,
    /// `{name}-headless`: the pods' DNS names.
    pub headless: Service,
    /// With two instances or more (none for one: it could only block a drain).
    pub pdb: Option<PodDisruptionBudget>,
    /// Where the StatefulSet got other resources than the manifest asks for, for the status.
    pub raised: Vec<String>,
}

/// Metadata of an object of `cluster` named `name`.
pub fn meta(cluster: &PostgresCluster, name: String) -> ObjectMeta {
    let (_, namespace) = name_of(cluster);
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace),
        labels: Some(labels(cluster)),
        owner_references: owner_reference(cluster).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// Every object of `cluster` under the AdmissionPolicy's `limits`. An error says which field
/// cannot be turned into an object.
pub fn build(cluster: &PostgresCluster, limits: &Limits) -> Result<Objects, String> {
    let (name, _) = name_of(cluster);
    let (stateful_set, raised) = statefulset::build(cluster, limits)?;
    let config_map = ConfigMap {
        metadata: meta(cluster, config_name(&name)),
        data: Some(BTreeMap::from([
            (BOOTSTRAP_FILE.to_owned(), BOOTSTRAP.to_owned()),
            (HBA_FILE.to_owned(), hba(cluster.spec.tls.is_some())),
            (
                REPLICATION_ROLE_FILE.to_owned(),
                REPLICATION_ROLE.to_owned(),
            ),
        ])),
        ..ConfigMap::default()
    };
    let mut primary_selector = selector(&name);
    primary_selector.insert(POD_NAME_LABEL.to_owned(), format!("{name}-0"));
    let mut replica_selector = selector(&name);
    replica_selector.insert(ROLE_LABEL.to_owned(), "replica".to_owned());
    Ok(Objects {
        config_map: stamped(config_map, |o| &mut o.metadata),
        stateful_set,
        primary: service(cluster, name.clone(), primary_selector, false),
        replicas: service(cluster, replicas_name(&name), replica_selector, false),
        headless: service(cluster, headless_name(&name), selector(&name), true),
        pdb: pdb(cluster),
        raised,
    })
}

fn service(
    cluster: &PostgresCluster,
    name: String,
    selector: BTreeMap<String, String>,
    headless: bool,
) -> Service {
    let spec = ServiceSpec {
        selector: Some(selector),
        ports: Some(vec![ServicePort {
            name: Some("postgresql".to_owned()),
            port: PORT,
            target_port: Some(IntOrString::String("postgresql".to_owned())),
            protocol: Some("TCP".to_owned()),
            ..ServicePort::default()
        }]),
        type_: Some("ClusterIP".to_owned()),
        // The headless Service gives each pod its DNS name before it is ready: a replica's
        // pg_basebackup and the bootstrap need the primary's name while it starts.
        cluster_ip: headless.then(|| "None".to_owned()),
        publish_not_ready_addresses: headless.then_some(true),
        ..ServiceSpec::default()
    };
    stamped(
        Service {
            metadata: meta(cluster, name),
            spec: Some(spec),
            ..Service::default()
        },
        |o| &mut o.metadata,
    )
}

/// `maxUnavailable: 1` over all the cluster's pods: a drain can always evict one pod at a time
/// (Zalando's `minAvailable: 1` on the primary alone blocked every drain of a one-pod cluster:
/// postgres-operator#611, #1663, #2988). No PDB for fewer than two instances.
fn pdb(cluster: &PostgresCluster) -> Option<PodDisruptionBudget> {
    if cluster.spec.number_of_instances < 2 {
        return None;
    }
    let (name, _) = name_of(cluster);
    let pdb = PodDisruptionBudget {
        metadata: meta(cluster, name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(&name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };
    Some(stamped(pdb, |o| &mut o.metadata))
}

/// The credentials Secret of `user` (keys `username` and `password`, as Zalando's).
pub fn credentials(cluster: &PostgresCluster, user: &str, password: &str) -> Secret {
    let (name, _) = name_of(cluster);
    Secret {
        metadata: meta(cluster, credentials_secret_name(user, &name)),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            ("username".to_owned(), ByteString(user.as_bytes().to_vec())),
            (
                "password".to_owned(),
                ByteString(password.as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    }
}

/// `pg_hba.conf`: the pod's own socket trusted (the image's init scripts and `pg_isready`), the
/// replication role and every other role by SCRAM password — over TLS only when the cluster
/// has a certificate.
pub fn hba(tls: bool) -> String {
    let host = if tls { "hostssl" } else { "host" };
    format!(
        "# Written by dbward.\n\
         local all all trust\n\
         {host} replication {REPLICATION_USER} all scram-sha-256\n\
         {host} all all all scram-sha-256\n"
    )
}

/// The container's entry point: ordinal 0 runs the image's entry point (initdb on an empty
/// volume, then the init scripts); the other ordinals copy the primary with `pg_basebackup`
/// once and then run as streaming replicas (`-R` writes `standby.signal` and
/// `primary_conninfo`). The arguments are PostgreSQL's `-c` settings.
pub const BOOTSTRAP: &str = r#"#!/bin/bash
# Written by dbward: ordinal 0 is the primary, the others stream from it. No automatic failover.
set -euo pipefail
ordinal="${POD_NAME##*-}"
if [ "$ordinal" = "0" ]; then
  exec docker-entrypoint.sh postgres "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  # A pg_basebackup interrupted earlier leaves a partial copy: start again from nothing.
  find "$PGDATA" -mindepth 1 -delete
  until pg_isready -q -h "$PRIMARY_HOST" -p 5432; do
    echo "dbward: waiting for the primary $PRIMARY_HOST"
    sleep 2
  done
  PGPASSWORD="$PGREPL_PASSWORD" pg_basebackup -h "$PRIMARY_HOST" -p 5432 \
    -U "$PGREPL_USER" -D "$PGDATA" -X stream -R
fi
exec postgres "$@"
"#;

/// Run by the image's entry point on the primary's first start (sourced from
/// `/docker-entrypoint-initdb.d`): the replication role, its password bound as a psql variable.
pub const REPLICATION_ROLE: &str = r#"# Written by dbward: the replicas' replication role.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v user="$PGREPL_USER" -v password="$PGREPL_PASSWORD" <<'SQL'
CREATE ROLE :"user" WITH REPLICATION LOGIN PASSWORD :'password';
SQL
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::postgres_cluster::objects::statefulset::tests::cluster;

    #[test]
    fn services_select_the_right_pods_on_stable_labels() {
        let o = build(&cluster(3), &Limits::default()).unwrap();
        let template = o
            .stateful_set
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        let pod = |ordinal: u32, role: &str| {
            let mut labels = template.clone();
            labels.insert(
                POD_NAME_LABEL.into(),
                format!("acid-minimal-cluster-{ordinal}"),
            );
            labels.insert(ROLE_LABEL.into(), role.into());
            labels
        };
        let selects = |s: &Service, labels: &BTreeMap<String, String>| {
            let sel = s.spec.as_ref().unwrap().selector.as_ref().unwrap();
            sel.iter().all(|(k, v)| labels.get(k) == Some(v))
        };
        let (p0, p1, p2) = (pod(0, "primary"), pod(1, "replica"), pod(2, "replica"));
        assert!(selects(&o.primary, &p0));
        assert!(!selects(&o.primary, &p1) && !selects(&o.primary, &p2));
        assert!(!selects(&o.replicas, &p0));
        assert!(selects(&o.replicas, &p1) && selects(&o.replicas, &p2));
        assert!([&p0, &p1, &p2].iter().all(|p| selects(&o.headless, p)));
        for s in [&o.primary, &o.replicas, &o.headless] {
            let sel = s.spec.as_ref().unwrap().selector.as_ref().unwrap();
            assert!(!sel.contains_key(crate::reconcile::postgres_cluster::TEAM_LABEL));
            let meta = &s.metadata;
            assert_eq!(meta.namespace.as_deref(), Some("team-a"));
            assert_eq!(meta.owner_references.as_ref().unwrap()[0].uid, "pgc-uid");
            assert!(spec_hash(meta).is_some());
        }
        assert_eq!(
            o.headless.metadata.name.as_deref(),
            Some("acid-minimal-cluster-headless")
        );
        let headless = o.headless.spec.as_ref().unwrap();
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        assert_eq!(
            o.replicas.metadata.name.as_deref(),
            Some("acid-minimal-cluster-repl")
        );
    }

    #[test]
    fn the_pdb_never_blocks_a_drain_on_its_own() {
        for n in [0, 1] {
            assert_eq!(
                build(&cluster(n), &Limits::default()).unwrap().pdb,
                None,
                "{n}"
            );
        }
        for n in [2, 5] {
            let pdb = build(&cluster(n), &Limits::default()).unwrap().pdb.unwrap();
            let spec = pdb.spec.unwrap();
            assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)), "{n}");
            assert_eq!(spec.min_available, None);
            assert_eq!(
                spec.selector.unwrap().match_labels,
                Some(selector("acid-minimal-cluster"))
            );
        }
    }

    #[test]
    fn credentials_and_hba() {
        let secret = credentials(&cluster(1), "foo_user", "pw");
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("foo-user.acid-minimal-cluster.credentials.postgresql.dbward.dev")
        );
        let data = crate::reconcile::secret::decoded_data(&secret);
        assert_eq!(data["username"], "foo_user");
        assert_eq!(data["password"], "pw");
        assert!(hba(true).contains("hostssl all all all scram-sha-256"));
        assert!(!hba(true).contains("\nhost "));
        assert!(hba(false).contains("host replication standby all scram-sha-256"));
    }
}
