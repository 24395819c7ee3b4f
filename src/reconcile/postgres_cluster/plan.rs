//! Pure plan of a PostgresCluster's Kubernetes side (it computes only): given what was observed
//! of its objects, PVCs and pods, which objects to apply, which PVCs to expand, which pods to
//! label with their role, and the cluster's status.
//!
//! **Complete reads only**: when any read failed, nothing is planned that cycle (Zalando's
//! postgres-operator#2031: a StatefulSet rebuilt from a partial read rolled every pod). An
//! object is applied when it is missing, when its spec hash differs, or when it lost its owner;
//! an unchanged cluster plans nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::admission::quantity;
use crate::api::PostgresCluster;
use crate::reconcile::secret::{self, decoded_data};
use crate::sql::plan::Password;

use super::objects::statefulset::VOLUME;
use super::objects::{Objects, credentials, spec_hash};
use super::{ROLE_LABEL, credential_users, name_of, role_of};

/// What was read of a cluster's objects. A read that failed is named in `failed`.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Reads that failed, each saying what and why.
    pub failed: Vec<String>,
    /// The ConfigMap's metadata.
    pub config_map: Option<ObjectMeta>,
    /// The StatefulSet (whole: its claim templates are carried over, its status read).
    pub stateful_set: Option<StatefulSet>,
    /// The Services' metadata: primary, replicas, headless.
    pub services: [Option<ObjectMeta>; 3],
    /// The PodDisruptionBudget's metadata.
    pub pdb: Option<ObjectMeta>,
    /// Credential Secrets by user.
    pub secrets: BTreeMap<String, Secret>,
    /// The cluster's PVCs.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// The cluster's pods.
    pub pods: Vec<Pod>,
}

/// One write.
#[derive(Clone, PartialEq)]
pub enum Change {
    /// Server-side apply the ConfigMap.
    ConfigMap(Box<ConfigMap>),
    /// Server-side apply the StatefulSet.
    StatefulSet(Box<StatefulSet>),
    /// Server-side apply a Service.
    Service(Box<Service>),
    /// Server-side apply the PodDisruptionBudget.
    Pdb(Box<PodDisruptionBudget>),
    /// Delete the PodDisruptionBudget (the cluster went below two instances).
    DeletePdb {
        /// Its name.
        name: String,
    },
    /// Server-side apply a credentials Secret.
    Secret(Box<Secret>),
    /// Raise a PVC's storage request (volume expansion).
    ExpandPvc {
        /// The PVC.
        name: String,
        /// The new `spec.resources.requests.storage`.
        size: String,
    },
    /// Set a pod's role label (`primary` for ordinal 0, `replica` for the others).
    LabelPod {
        /// The pod.
        name: String,
        /// The role.
        role: &'static str,
    },
}

impl std::fmt::Debug for Change {
    /// Never a Secret's values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |m: &ObjectMeta| m.name.clone().unwrap_or_default();
        match self {
            Change::ConfigMap(o) => write!(f, "apply ConfigMap {}", name(&o.metadata)),
            Change::StatefulSet(o) => write!(f, "apply StatefulSet {}", name(&o.metadata)),
            Change::Service(o) => write!(f, "apply Service {}", name(&o.metadata)),
            Change::Pdb(o) => write!(f, "apply PodDisruptionBudget {}", name(&o.metadata)),
            Change::DeletePdb { name } => write!(f, "delete PodDisruptionBudget {name}"),
            Change::Secret(o) => write!(f, "apply Secret {}", name(&o.metadata)),
            Change::ExpandPvc { name, size } => write!(f, "expand PVC {name} to {size}"),
            Change::LabelPod { name, role } => write!(f, "label Pod {name} {ROLE_LABEL}={role}"),
        }
    }
}

/// The plan: the writes in order, the passwords the SQL side sets, and the status.
#[derive(Debug, Default)]
pub struct Plan {
    /// Writes, in order (Secrets before the StatefulSet that reads them).
    pub changes: Vec<Change>,
    /// Every credential user's password (the Secret's, or a new one), for the SQL side.
    pub passwords: BTreeMap<String, Password>,
    /// Why nothing was planned: the reads that failed.
    pub blocked: Option<String>,
}

fn differs(have: Option<&ObjectMeta>, want: &ObjectMeta) -> bool {
    let Some(have) = have else {
        return true;
    };
    let owners_present = want.owner_references.iter().flatten().all(|w| {
        have.owner_references
            .iter()
            .flatten()
            .any(|h| h.uid == w.uid)
    });
    spec_hash(have) != spec_hash(want) || !owners_present
}

/// Desired vs observed → the plan. `generate` makes a new password (for a user whose Secret
/// does not exist yet or has none); it fails only when the system's randomness does.
pub fn plan(
    cluster: &PostgresCluster,
    objects: &Objects,
    observed: &Observed,
    mut generate: impl FnMut() -> Result<String, String>,
) -> Result<Plan, String> {
    if !observed.failed.is_empty() {
        return Ok(Plan {
            blocked: Some(format!(
                "nothing was written: {} (dbward writes only what it computed from complete reads)",
                observed.failed.join("; ")
            )),
            ..Plan::default()
        });
    }
    let mut plan = Plan::default();
    for user in credential_users(cluster) {
        let existing = observed.secrets.get(&user);
        let kept = existing
            .and_then(|s| decoded_data(s).remove("password"))
            .filter(|p| !p.is_empty());
        let password = match kept {
            Some(p) => p,
            None => generate()?,
        };
        let desired = credentials(cluster, &user, &password);
        if !existing.is_some_and(|e| secret::up_to_date(e, &desired)) {
            plan.changes.push(Change::Secret(Box::new(desired)));
        }
        plan.passwords.insert(user, Password::new(password));
    }
    if differs(observed.config_map.as_ref(), &objects.config_map.metadata) {
        plan.changes
            .push(Change::ConfigMap(Box::new(objects.config_map.clone())));
    }
    let services = [&objects.primary, &objects.replicas, &objects.headless];
    for (want, have) in services.into_iter().zip(&observed.services) {
        if differs(have.as_ref(), &want.metadata) {
            plan.changes.push(Change::Service(Box::new(want.clone())));
        }
    }
    stateful_set(objects, observed, &mut plan.changes);
    match (&objects.pdb, &observed.pdb) {
        (Some(want), have) if differs(have.as_ref(), &want.metadata) => {
            plan.changes.push(Change::Pdb(Box::new(want.clone())))
        }
        (None, Some(have)) => plan.changes.push(Change::DeletePdb {
            name: have.name.clone().unwrap_or_default(),
        }),
        _ => {}
    }
    plan.changes.extend(expansions(cluster, &observed.pvcs));
    plan.changes.extend(role_labels(cluster, &observed.pods));
    Ok(plan)
}

/// The StatefulSet when it differs. An existing one keeps its own `volumeClaimTemplates` (the
/// API server refuses any change to them; a grown volume is applied to the PVCs).
fn stateful_set(objects: &Objects, observed: &Observed, changes: &mut Vec<Change>) {
    let have = observed.stateful_set.as_ref();
    if !differs(have.map(|s| &s.metadata), &objects.stateful_set.metadata) {
        return;
    }
    let mut want = objects.stateful_set.clone();
    if let (Some(have), Some(spec)) = (have.and_then(|s| s.spec.as_ref()), want.spec.as_mut()) {
        spec.volume_claim_templates = have.volume_claim_templates.clone();
    }
    changes.push(Change::StatefulSet(Box::new(want)));
}

/// The cluster's PVCs (`pgdata-{cluster}-{ordinal}`) whose request is below `volume.size`.
fn expansions(cluster: &PostgresCluster, pvcs: &[PersistentVolumeClaim]) -> Vec<Change> {
    let (name, _) = name_of(cluster);
    let prefix = format!("{VOLUME}-");
    let want = &cluster.spec.volume.size;
    let Some(wanted) = quantity::parse(want) else {
        return Vec::new();
    };
    pvcs.iter()
        .filter_map(|pvc| {
            let pvc_name = pvc.metadata.name.clone()?;
            role_of(&name, pvc_name.strip_prefix(&prefix)?)?;
            let have = pvc
                .spec
                .as_ref()?
                .resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("storage")?;
            (quantity::parse(&have.0)? < wanted).then(|| Change::ExpandPvc {
                name: pvc_name,
                size: want.clone(),
            })
        })
        .collect()
}

/// The pods of the cluster whose role label is not what their ordinal says.
fn role_labels(cluster: &PostgresCluster, pods: &[Pod]) -> Vec<Change> {
    let (name, _) = name_of(cluster);
    pods.iter()
        .filter_map(|pod| {
            let pod_name = pod.metadata.name.clone()?;
            let role = role_of(&name, &pod_name)?;
            let have = pod.metadata.labels.as_ref().and_then(|l| l.get(ROLE_LABEL));
            (have.map(String::as_str) != Some(role)).then_some(Change::LabelPod {
                name: pod_name,
                role,
            })
        })
        .collect()
}

/// Whether `pod` is Ready (its `Ready` condition is `True`).
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The cluster's state as its pods show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `Running`, `Creating`, `Degraded` or `Stopped`.
    pub phase: &'static str,
    /// Ready pods of the cluster.
    pub ready_instances: i32,
    /// The primary (`{name}-0`) is ready.
    pub primary_available: bool,
    /// Every replica is ready (true when there are none).
    pub replicas_ready: bool,
    /// Where clients connect: `{name}.{namespace}.svc:5432`.
    pub primary_endpoint: String,
}

/// The cluster's health from its observed pods.
pub fn health(cluster: &PostgresCluster, pods: &[Pod]) -> Health {
    let (name, namespace) = name_of(cluster);
    let wanted = cluster.spec.number_of_instances;
    let mut primary_available = false;
    let mut ready_replicas = 0;
    for pod in pods.iter().filter(|p| pod_ready(p)) {
        match role_of(&name, pod.metadata.name.as_deref().unwrap_or_default()) {
            Some("primary") => primary_available = true,
            Some(_) => ready_replicas += 1,
            None => {}
        }
    }
    let replicas_ready = ready_replicas >= (wanted - 1).max(0);
    let ready_instances = ready_replicas + i32::from(primary_available);
    let phase = match (wanted, primary_available, replicas_ready) {
        (0, _, _) => "Stopped",
        (_, true, true) => "Running",
        (_, true, false) => "Degraded",
        (_, false, _) => "Creating",
    };
    Health {
        phase,
        ready_instances,
        primary_available,
        replicas_ready,
        primary_endpoint: format!("{name}.{namespace}.svc:{}", super::PORT),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimSpec, PodCondition, PodStatus, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;
    use crate::api::admission_policy::Limits;
    use crate::reconcile::postgres_cluster::objects::build;
    use crate::reconcile::postgres_cluster::objects::statefulset::tests::cluster;

    fn generated() -> impl FnMut() -> Result<String, String> {
        let mut n = 0;
        move || {
            n += 1;
            Ok(format!("generated-{n}"))
        }
    }

    /// What the API server holds after `changes` were applied to nothing.
    fn applied(changes: &[Change]) -> Observed {
        let mut o = Observed::default();
        for change in changes {
            match change {
                Change::ConfigMap(c) => o.config_map = Some(c.metadata.clone()),
                Change::StatefulSet(s) => o.stateful_set = Some((**s).clone()),
                Change::Service(s) => {
                    let name = s.metadata.name.clone().unwrap();
                    let at = if name.ends_with("-repl") {
                        1
                    } else if name.ends_with("-headless") {
                        2
                    } else {
                        0
                    };
                    o.services[at] = Some(s.metadata.clone());
                }
                Change::Pdb(p) => o.pdb = Some(p.metadata.clone()),
                Change::Secret(s) => {
                    let user = decoded_data(s).remove("username").unwrap();
                    o.secrets.insert(user, (**s).clone());
                }
                other => panic!("unexpected {other}"),
            }
        }
        o
    }

    fn names(changes: &[Change]) -> Vec<String> {
        changes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_new_cluster_gets_everything_and_a_second_pass_nothing() {
        let c = cluster(2);
        let objects = build(&c, &Limits::default()).unwrap();
        let first = plan(&c, &objects, &Observed::default(), generated()).unwrap();
        assert_eq!(
            names(&first.changes),
            [
                "apply Secret postgres.acid-minimal-cluster.credentials.postgresql.dbward.dev",
                "apply Secret standby.acid-minimal-cluster.credentials.postgresql.dbward.dev",
                "apply Secret foo-user.acid-minimal-cluster.credentials.postgresql.dbward.dev",
                "apply Secret zalando.acid-minimal-cluster.credentials.postgresql.dbward.dev",
                "apply ConfigMap acid-minimal-cluster-config",
                "apply Service acid-minimal-cluster",
                "apply Service acid-minimal-cluster-repl",
                "apply Service acid-minimal-cluster-headless",
                "apply StatefulSet acid-minimal-cluster",
                "apply PodDisruptionBudget acid-minimal-cluster",
            ]
        );
        assert_eq!(first.passwords.len(), 4);
        let observed = applied(&first.changes);
        let mut never = || -> Result<String, String> { panic!("no password is generated again") };
        let second = plan(&c, &objects, &observed, &mut never).unwrap();
        assert_eq!(names(&second.changes), Vec::<String>::new());
        assert_eq!(
            second.passwords, first.passwords,
            "existing passwords are kept"
        );
    }

    #[test]
    fn scaling_and_upgrading_change_exactly_what_they_must() {
        let c = cluster(2);
        let objects = build(&c, &Limits::default()).unwrap();
        let observed = applied(
            &plan(&c, &objects, &Observed::default(), generated())
                .unwrap()
                .changes,
        );

        let mut newer = c.clone();
        newer.spec.postgresql.version = "17".into();
        let p = plan(
            &newer,
            &build(&newer, &Limits::default()).unwrap(),
            &observed,
            generated(),
        )
        .unwrap();
        assert_eq!(
            names(&p.changes),
            ["apply StatefulSet acid-minimal-cluster"]
        );

        let mut one = c.clone();
        one.spec.number_of_instances = 1;
        let p = plan(
            &one,
            &build(&one, &Limits::default()).unwrap(),
            &observed,
            generated(),
        )
        .unwrap();
        assert_eq!(
            names(&p.changes),
            [
                "apply StatefulSet acid-minimal-cluster",
                "delete PodDisruptionBudget acid-minimal-cluster"
            ]
        );
        let Change::StatefulSet(set) = &p.changes[0] else {
            unreachable!()
        };
        assert_eq!(set.spec.as_ref().unwrap().replicas, Some(1));
    }

    #[test]
    fn a_failed_read_writes_nothing() {
        let c = cluster(2);
        let objects = build(&c, &Limits::default()).unwrap();
        let observed = Observed {
            failed: vec!["get StatefulSet team-a/acid-minimal-cluster: connection reset".into()],
            ..Observed::default()
        };
        let p = plan(&c, &objects, &observed, generated()).unwrap();
        assert!(p.changes.is_empty());
        assert!(p.passwords.is_empty());
        assert!(p.blocked.unwrap().contains("connection reset"));
    }

    #[test]
    fn a_password_changed_in_the_secret_is_kept_and_an_empty_one_replaced() {
        let c = cluster(1);
        let objects = build(&c, &Limits::default()).unwrap();
        let mut observed = applied(
            &plan(&c, &objects, &Observed::default(), generated())
                .unwrap()
                .changes,
        );
        observed.secrets.insert(
            "zalando".into(),
            credentials(&c, "zalando", "chosen-by-user"),
        );
        observed
            .secrets
            .insert("foo_user".into(), credentials(&c, "foo_user", ""));
        let p = plan(&c, &objects, &observed, generated()).unwrap();
        assert_eq!(p.passwords["zalando"].expose(), "chosen-by-user");
        assert_eq!(p.passwords["foo_user"].expose(), "generated-1");
        assert_eq!(
            names(&p.changes),
            ["apply Secret foo-user.acid-minimal-cluster.credentials.postgresql.dbward.dev"]
        );
    }

    fn pvc(name: &str, size: &str) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), Quantity(size.into()))])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }
    }

    #[test]
    fn a_grown_volume_expands_the_pvcs_and_leaves_the_claim_templates() {
        let c = cluster(2);
        let objects = build(&c, &Limits::default()).unwrap();
        let mut observed = applied(
            &plan(&c, &objects, &Observed::default(), generated())
                .unwrap()
                .changes,
        );
        observed.pvcs = vec![
            pvc("pgdata-acid-minimal-cluster-0", "1Gi"),
            pvc("pgdata-acid-minimal-cluster-1", "2048Mi"),
            pvc("pgdata-acid-minimal-cluster-other-0", "1Gi"),
            pvc("pgdata-acid-minimal-cluster-2", "10Gi"),
        ];
        let mut grown = c.clone();
        grown.spec.volume.size = "2Gi".into();
        let p = plan(
            &grown,
            &build(&grown, &Limits::default()).unwrap(),
            &observed,
            generated(),
        )
        .unwrap();
        assert_eq!(
            names(&p.changes),
            ["expand PVC pgdata-acid-minimal-cluster-0 to 2Gi"]
        );

        // The StatefulSet changes for another reason: its claim templates stay as they were.
        grown.spec.postgresql.version = "17".into();
        let p = plan(
            &grown,
            &build(&grown, &Limits::default()).unwrap(),
            &observed,
            generated(),
        )
        .unwrap();
        let Change::StatefulSet(set) = &p.changes[0] else {
            panic!("{:?}", p.changes)
        };
        let claims = set
            .spec
            .as_ref()
            .unwrap()
            .volume_claim_templates
            .as_ref()
            .unwrap();
        let storage = &claims[0]
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests;
        assert_eq!(storage.as_ref().unwrap()["storage"].0, "1Gi");
    }

    fn pod(name: &str, role: Option<&str>, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: role.map(|r| BTreeMap::from([(ROLE_LABEL.into(), r.into())])),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn pods_get_their_role_and_the_health_follows_them() {
        let c = cluster(3);
        let pods = [
            pod("acid-minimal-cluster-0", Some("primary"), true),
            pod("acid-minimal-cluster-1", None, true),
            pod("acid-minimal-cluster-2", Some("primary"), false),
        ];
        assert_eq!(
            names(&role_labels(&c, &pods)),
            [
                "label Pod acid-minimal-cluster-1 dbward.dev/role=replica",
                "label Pod acid-minimal-cluster-2 dbward.dev/role=replica",
            ]
        );
        let h = health(&c, &pods);
        assert_eq!(
            (
                h.phase,
                h.ready_instances,
                h.primary_available,
                h.replicas_ready
            ),
            ("Degraded", 2, true, false)
        );
        assert_eq!(h.primary_endpoint, "acid-minimal-cluster.team-a.svc:5432");
        assert_eq!(health(&c, &pods[1..]).phase, "Creating");
        assert_eq!(health(&cluster(2), &pods[..2]).phase, "Running");
        assert_eq!(health(&cluster(0), &[]).phase, "Stopped");
    }
}
