//! Pure builder of a PostgresCluster's StatefulSet (it computes only): the official `postgres`
//! image at `postgresql.version`, the bootstrap of [`super::BOOTSTRAP`], resources raised to
//! the AdmissionPolicy's minimum (here only: the manifest is never rewritten), tolerations,
//! sidecars and init containers when the policy allows them, probes, a restricted security
//! context and preferred anti-affinity across nodes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    ExecAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::admission::quantity;
use crate::api::PostgresCluster;
use crate::api::admission_policy::Limits;
use crate::api::postgres_cluster::credentials_secret_name;
use crate::reconcile::pooler_objects::stamped;

use super::super::{PORT, REPLICATION_USER, SUPERUSER, config_name, headless_name, name_of};
use super::{BOOTSTRAP_FILE, HBA_FILE, REPLICATION_ROLE_FILE, meta};

/// The PVC template's name (the PVCs are `pgdata-{cluster}-{ordinal}`).
pub const VOLUME: &str = "pgdata";
/// Where the volume is mounted (the image's default).
pub const DATA_DIR: &str = "/var/lib/postgresql/data";
/// `PGDATA`: a directory below the mount point (a fresh volume's `lost+found` stays outside).
pub const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/dbward";
/// Where the TLS Secret is mounted.
pub const TLS_DIR: &str = "/etc/dbward-tls";
/// The `postgres` user of the official image.
pub const POSTGRES_UID: i64 = 999;

/// The StatefulSet (stamped with its hash, its claim templates added after stamping) and the
/// notes on resources raised to the minimum.
pub fn build(
    cluster: &PostgresCluster,
    limits: &Limits,
) -> Result<(StatefulSet, Vec<String>), String> {
    let (name, _) = name_of(cluster);
    let (resources, raised) = raised_resources(cluster.spec.resources.as_ref(), limits);
    let mut containers = vec![postgres_container(cluster, resources)];
    let env = shared_env(&name);
    if limits.sidecars_enabled {
        containers.extend(extra_containers(
            "spec.sidecars",
            &cluster.spec.sidecars,
            &env,
        )?);
    }
    let init_containers = if limits.init_containers_enabled {
        extra_containers("spec.initContainers", &cluster.spec.init_containers, &env)?
    } else {
        Vec::new()
    };
    let selector = super::super::selector(&name);
    let pod = PodSpec {
        containers,
        init_containers: (!init_containers.is_empty()).then_some(init_containers),
        volumes: Some(volumes(cluster)),
        tolerations: (!cluster.spec.tolerations.is_empty())
            .then(|| cluster.spec.tolerations.clone()),
        affinity: Some(anti_affinity(&selector)),
        security_context: Some(PodSecurityContext {
            run_as_user: Some(POSTGRES_UID),
            run_as_group: Some(POSTGRES_UID),
            fs_group: Some(POSTGRES_UID),
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(60),
        ..PodSpec::default()
    };
    let set = StatefulSet {
        metadata: meta(cluster, name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(cluster.spec.number_of_instances),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            service_name: Some(headless_name(&name)),
            pod_management_policy: Some("OrderedReady".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                ..StatefulSetUpdateStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    let mut set = stamped(set, |o| &mut o.metadata);
    if let Some(spec) = set.spec.as_mut() {
        spec.volume_claim_templates = Some(vec![claim_template(cluster)]);
    }
    Ok((set, raised))
}

/// The PVC template from `spec.volume`.
pub fn claim_template(cluster: &PostgresCluster) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(VOLUME.to_owned()),
            labels: Some(super::super::selector(&name_of(cluster).0)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(cluster.spec.volume.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            storage_class_name: cluster.spec.volume.storage_class.clone(),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// `resources` with every CPU and memory request and limit below the minimum raised to it (no
/// resources at all: the minimum as requests), and a note per raised value.
pub fn raised_resources(
    resources: Option<&ResourceRequirements>,
    limits: &Limits,
) -> (ResourceRequirements, Vec<String>) {
    let mins = [("cpu", &limits.min_cpu), ("memory", &limits.min_memory)];
    let mut out = resources.cloned().unwrap_or_default();
    let mut notes = Vec::new();
    let mut requests = out.requests.take().unwrap_or_default();
    let mut caps = out.limits.take().unwrap_or_default();
    for (section, values) in [("requests", &mut requests), ("limits", &mut caps)] {
        for (resource, min) in mins {
            let Some(value) = values.get(resource) else {
                continue;
            };
            let below = matches!(
                (quantity::parse(&value.0), quantity::parse(min)),
                (Some(v), Some(m)) if v < m
            );
            if below {
                notes.push(format!(
                    "spec.resources.{section}.{resource} {} is below the AdmissionPolicy's minimum; the StatefulSet gets {min}",
                    value.0
                ));
                values.insert(resource.to_owned(), Quantity(min.clone()));
            }
        }
    }
    for (resource, min) in mins {
        if !requests.contains_key(resource) && !caps.contains_key(resource) {
            requests.insert(resource.to_owned(), Quantity(min.clone()));
        }
    }
    out.requests = Some(requests);
    out.limits = (!caps.is_empty()).then_some(caps);
    (out, notes)
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn secret_env(name: &str, secret: String, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret,
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn value_env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..EnvVar::default()
    }
}

/// What the seed gives every container of the pod: `POD_NAME`, `POD_NAMESPACE`,
/// `POSTGRES_USER`, `POSTGRES_PASSWORD` (from the `postgres` credentials Secret).
fn shared_env(cluster: &str) -> Vec<EnvVar> {
    vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        value_env("POSTGRES_USER", SUPERUSER.to_owned()),
        secret_env(
            "POSTGRES_PASSWORD",
            credentials_secret_name(SUPERUSER, cluster),
            "password",
        ),
    ]
}

fn postgres_container(cluster: &PostgresCluster, resources: ResourceRequirements) -> Container {
    let (name, _) = name_of(cluster);
    let mut env = shared_env(&name);
    env.extend([
        value_env("PGDATA", PGDATA.to_owned()),
        value_env("PGREPL_USER", REPLICATION_USER.to_owned()),
        secret_env(
            "PGREPL_PASSWORD",
            credentials_secret_name(REPLICATION_USER, &name),
            "password",
        ),
        value_env("PRIMARY_HOST", format!("{name}-0.{}", headless_name(&name))),
    ]);
    let pg_isready = |timeout: i32, failures: i32| Probe {
        exec: Some(ExecAction {
            command: Some(
                [
                    "pg_isready",
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    "5432",
                    "-U",
                    SUPERUSER,
                ]
                .map(String::from)
                .to_vec(),
            ),
        }),
        period_seconds: Some(10),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let mut mounts = vec![
        mount(VOLUME, DATA_DIR, false),
        mount("config", CONFIG_DIR, true),
        mount("initdb", "/docker-entrypoint-initdb.d", true),
    ];
    if cluster.spec.tls.is_some() {
        mounts.push(mount("tls", TLS_DIR, true));
    }
    Container {
        name: "postgres".to_owned(),
        image: Some(format!("postgres:{}", cluster.spec.postgresql.version)),
        command: Some(vec![
            "/bin/bash".to_owned(),
            format!("{CONFIG_DIR}/{BOOTSTRAP_FILE}"),
        ]),
        args: Some(server_args(cluster)),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("postgresql".to_owned()),
            container_port: PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        // initdb, or a replica's pg_basebackup of a large primary, takes long: up to an hour
        // before the kubelet gives up; readiness then follows pg_isready. No liveness probe: a
        // long crash recovery must not be killed.
        startup_probe: Some(pg_isready(5, 360)),
        readiness_probe: Some(pg_isready(5, 3)),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// PostgreSQL's `-c` settings: the manifest's `postgresql.parameters`, then dbward's own (which
/// win: replication and `pg_hba.conf` depend on them).
pub fn server_args(cluster: &PostgresCluster) -> Vec<String> {
    let mut settings: Vec<(String, String)> = cluster
        .spec
        .postgresql
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    settings.extend(
        [
            ("listen_addresses", "*".to_owned()),
            ("hba_file", format!("{CONFIG_DIR}/{HBA_FILE}")),
            ("wal_level", "replica".to_owned()),
            ("hot_standby", "on".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    if let Some(tls) = &cluster.spec.tls {
        settings.push(("ssl".to_owned(), "on".to_owned()));
        settings.push(("ssl_cert_file".to_owned(), format!("{TLS_DIR}/tls.crt")));
        settings.push(("ssl_key_file".to_owned(), format!("{TLS_DIR}/tls.key")));
        if let Some(ca) = &tls.ca_file {
            settings.push(("ssl_ca_file".to_owned(), format!("{TLS_DIR}/{ca}")));
        }
    }
    settings
        .into_iter()
        .flat_map(|(k, v)| ["-c".to_owned(), format!("{k}={v}")])
        .collect()
}

/// Sidecars or init containers from the manifest, each with the shared environment added
/// (the manifest's own variables of the same names win).
fn extra_containers(
    field: &str,
    raw: &[serde_json::Value],
    env: &[EnvVar],
) -> Result<Vec<Container>, String> {
    raw.iter()
        .enumerate()
        .map(|(i, value)| {
            let mut container: Container = serde_json::from_value(value.clone())
                .map_err(|e| format!("{field}[{i}]: Invalid value: not a container ({e}); a container needs at least name and image"))?;
            let own = container.env.get_or_insert_with(Vec::new);
            for var in env {
                if !own.iter().any(|v| v.name == var.name) {
                    own.push(var.clone());
                }
            }
            Ok(container)
        })
        .collect()
}

fn volumes(cluster: &PostgresCluster) -> Vec<Volume> {
    let (name, _) = name_of(cluster);
    let config = |items: &[&str], mode: i32| ConfigMapVolumeSource {
        name: config_name(&name),
        items: Some(
            items
                .iter()
                .map(|k| KeyToPath {
                    key: (*k).to_owned(),
                    path: (*k).to_owned(),
                    ..KeyToPath::default()
                })
                .collect(),
        ),
        default_mode: Some(mode),
        ..ConfigMapVolumeSource::default()
    };
    let mut volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(config(&[BOOTSTRAP_FILE, HBA_FILE], 0o444)),
            ..Volume::default()
        },
        Volume {
            name: "initdb".to_owned(),
            config_map: Some(config(&[REPLICATION_ROLE_FILE], 0o444)),
            ..Volume::default()
        },
    ];
    if let Some(tls) = &cluster.spec.tls {
        volumes.push(Volume {
            name: "tls".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.secret_name.clone()),
                // Root-owned and 0640 is what PostgreSQL accepts for a key it does not own.
                default_mode: Some(0o640),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    volumes
}

fn anti_affinity(selector: &BTreeMap<String, String>) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector.clone()),
                            ..LabelSelector::default()
                        }),
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::PostgresClusterSpec;

    /// The seed's `acid-minimal-cluster` with `instances` pods (as `examples/50-cluster.yaml`,
    /// without TLS and pooler).
    pub(crate) fn cluster(instances: i32) -> PostgresCluster {
        let spec: PostgresClusterSpec = serde_json::from_value(serde_json::json!({
            "teamId": "acid", "numberOfInstances": instances,
            "volume": {"size": "1Gi"}, "postgresql": {"version": "16"},
            "users": {"zalando": ["superuser", "createdb"], "foo_user": []},
            "databases": {"foo": "zalando"},
            "resources": {"requests": {"cpu": "10m", "memory": "100Mi"},
                          "limits": {"cpu": "500m", "memory": "500Mi"}}
        }))
        .unwrap();
        let mut c = PostgresCluster::new("acid-minimal-cluster", spec);
        c.metadata.namespace = Some("team-a".into());
        c.metadata.uid = Some("pgc-uid".into());
        c
    }

    fn pod(set: &StatefulSet) -> &PodSpec {
        set.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn one_statefulset_of_the_official_image_with_a_stable_selector() {
        let (set, _) = build(&cluster(2), &Limits::default()).unwrap();
        let spec = set.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(
            spec.service_name.as_deref(),
            Some("acid-minimal-cluster-headless")
        );
        let template_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref();
        assert_eq!(spec.selector.match_labels.as_ref(), template_labels);
        assert!(!template_labels.unwrap().contains_key("dbward.dev/team"));
        let c = &pod(&set).containers[0];
        assert_eq!(c.image.as_deref(), Some("postgres:16"));
        let env: BTreeMap<&str, &EnvVar> = c
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e))
            .collect();
        let secret_ref = |n: &str| {
            env[n]
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .clone()
                .unwrap()
        };
        assert_eq!(
            secret_ref("POSTGRES_PASSWORD").name,
            "postgres.acid-minimal-cluster.credentials.postgresql.dbward.dev"
        );
        assert_eq!(
            secret_ref("PGREPL_PASSWORD").name,
            "standby.acid-minimal-cluster.credentials.postgresql.dbward.dev"
        );
        assert!(
            env.values()
                .all(|e| e.value.is_some() || e.value_from.is_some())
        );
        assert_eq!(
            env["PRIMARY_HOST"].value.as_deref(),
            Some("acid-minimal-cluster-0.acid-minimal-cluster-headless")
        );
        let claims = spec.volume_claim_templates.as_ref().unwrap();
        let storage = &claims[0]
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests;
        assert_eq!(storage.as_ref().unwrap()["storage"].0, "1Gi");
        assert_eq!(claims[0].metadata.name.as_deref(), Some(VOLUME));
    }

    #[test]
    fn restricted_security_context_probes_and_anti_affinity() {
        let (set, _) = build(&cluster(2), &Limits::default()).unwrap();
        let p = pod(&set);
        let sc = p.security_context.as_ref().unwrap();
        assert_eq!(
            (sc.run_as_user, sc.fs_group, sc.run_as_non_root),
            (Some(999), Some(999), Some(true))
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let c = &p.containers[0];
        let csc = c.security_context.as_ref().unwrap();
        assert_eq!(csc.allow_privilege_escalation, Some(false));
        assert_eq!(
            csc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_owned()])
        );
        let startup = c.startup_probe.as_ref().unwrap();
        let window = startup.period_seconds.unwrap() * startup.failure_threshold.unwrap();
        assert!(
            window >= 3600,
            "{window}s is too short for initdb or pg_basebackup"
        );
        let ready = c.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap();
        assert_eq!(ready.command.as_ref().unwrap()[0], "pg_isready");
        assert!(c.liveness_probe.is_none());
        let anti = p
            .affinity
            .as_ref()
            .unwrap()
            .pod_anti_affinity
            .as_ref()
            .unwrap();
        assert!(
            anti.required_during_scheduling_ignored_during_execution
                .is_none()
        );
        let term = &anti
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            term.pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
    }

    #[test]
    fn resources_are_raised_in_the_statefulset_only() {
        let c = cluster(1);
        let (set, raised) = build(&c, &Limits::default()).unwrap();
        let r = pod(&set).containers[0].resources.clone().unwrap();
        let requests = r.requests.unwrap();
        assert_eq!(requests["cpu"].0, "250m");
        assert_eq!(requests["memory"].0, "250Mi");
        assert_eq!(
            r.limits.unwrap()["cpu"].0,
            "500m",
            "limits above the minimum are kept"
        );
        assert_eq!(raised.len(), 2, "{raised:?}");
        assert!(
            raised[0].contains("spec.resources.requests.cpu 10m"),
            "{raised:?}"
        );
        let manifest = c.spec.resources.unwrap().requests.unwrap();
        assert_eq!(manifest["cpu"].0, "10m", "the manifest is not rewritten");
        let (none, notes) = raised_resources(None, &Limits::default());
        assert_eq!(none.requests.unwrap()["memory"].0, "250Mi");
        assert!(none.limits.is_none() && notes.is_empty());
    }

    #[test]
    fn sidecars_only_when_the_policy_allows_them() {
        let mut c = cluster(1);
        c.spec.sidecars = vec![
            serde_json::json!({"name": "exporter", "image": "exporter:1",
            "env": [{"name": "POD_NAME", "value": "mine"}]}),
        ];
        c.spec.init_containers = vec![serde_json::json!({"name": "prep", "image": "busybox"})];
        c.spec.tolerations = serde_json::from_value(serde_json::json!(
            [{"key": "postgres", "operator": "Exists", "effect": "NoSchedule"}]
        ))
        .unwrap();
        let (set, _) = build(&c, &Limits::default()).unwrap();
        assert_eq!(pod(&set).containers.len(), 1);
        assert!(pod(&set).init_containers.is_none());
        assert_eq!(
            pod(&set).tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("postgres")
        );
        let allowed = Limits {
            sidecars_enabled: true,
            init_containers_enabled: true,
            ..Limits::default()
        };
        let (set, _) = build(&c, &allowed).unwrap();
        let sidecar = &pod(&set).containers[1];
        let names: Vec<&str> = sidecar
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "POD_NAME",
                "POD_NAMESPACE",
                "POSTGRES_USER",
                "POSTGRES_PASSWORD"
            ]
        );
        assert_eq!(
            sidecar.env.as_ref().unwrap()[0].value.as_deref(),
            Some("mine")
        );
        assert_eq!(pod(&set).init_containers.as_ref().unwrap()[0].name, "prep");
        c.spec.sidecars = vec![serde_json::json!({"name": 3})];
        let err = build(&c, &allowed).unwrap_err();
        assert!(err.starts_with("spec.sidecars[0]: Invalid value"), "{err}");
    }

    #[test]
    fn only_the_template_changes_with_the_version_and_claims_are_not_hashed() {
        let a = build(&cluster(2), &Limits::default()).unwrap().0;
        let mut bigger = cluster(2);
        bigger.spec.volume.size = "5Gi".into();
        let b = build(&bigger, &Limits::default()).unwrap().0;
        assert_eq!(
            super::super::spec_hash(&a.metadata),
            super::super::spec_hash(&b.metadata)
        );
        let mut newer = cluster(2);
        newer.spec.postgresql.version = "17".into();
        let n = build(&newer, &Limits::default()).unwrap().0;
        assert_ne!(
            super::super::spec_hash(&a.metadata),
            super::super::spec_hash(&n.metadata)
        );
        let mut tls = cluster(1);
        tls.spec.tls = Some(crate::api::postgres_cluster::ClusterTls {
            secret_name: "pg-tls".into(),
            ca_file: Some("ca.crt".into()),
        });
        tls.spec
            .postgresql
            .parameters
            .insert("ssl".into(), "off".into());
        let args = server_args(&tls);
        let last_ssl = args.iter().rposition(|a| a.starts_with("ssl=")).unwrap();
        assert_eq!(args[last_ssl], "ssl=on", "dbward's settings win: {args:?}");
        assert!(args.contains(&"ssl_ca_file=/etc/dbward-tls/ca.crt".to_owned()));
    }
}
