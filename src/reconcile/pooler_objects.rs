//! Pure builders of a pooler's Kubernetes objects (they compute only): the ConfigMap with
//! `pgbouncer.ini` and `hba.conf`, the Service, and the PgBouncer Deployment, all in dbward's
//! namespace and owned by the DatabaseService. Files are mounted as whole directories (never
//! `subPath`, which the kubelet does not refresh), so a RELOAD reads what the ConfigMap says once
//! the kubelet has synced it. The pod template carries a hash of what only a restart changes:
//! a new listen port rolls the pods (`maxUnavailable: 0`); pools and auth changes are reloaded.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource,
    SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use crate::api::DatabaseService;

use super::pooler::{self, AUTH_FILE, HBA_FILE, INI_FILE, Realised, SERVER_CA_FILE};
use super::service_user::owner_reference;

/// The image when `spec.pooler.image` is unset (CloudNativePG's PgBouncer build).
pub const DEFAULT_IMAGE: &str = "ghcr.io/cloudnative-pg/pgbouncer:1.24.1";
/// The port PgBouncer listens on in the pod, and the Service's port.
pub const PORT: u16 = 5432;
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/pgbouncer/config";
/// Where the auth Secret is mounted.
pub const AUTH_DIR: &str = "/etc/pgbouncer/auth";
/// Where the pooler's TLS Secret is mounted.
pub const TLS_DIR: &str = "/etc/pgbouncer/tls";
/// Pod template annotation: a hash of what PgBouncer cannot reload.
pub const RESTART_ANNOTATION: &str = "dbward.dev/restart-hash";
/// Annotation on each object: a hash of everything dbward sets on it (an unchanged object is
/// recognised without comparing fields the API server defaults).
pub const SPEC_ANNOTATION: &str = "dbward.dev/spec-hash";

/// The pooler's objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Objects {
    /// `pgbouncer.ini` and `hba.conf`.
    pub config_map: ConfigMap,
    /// Where clients connect.
    pub service: Service,
    /// PgBouncer.
    pub deployment: Deployment,
}

fn meta(service: &DatabaseService, namespace: &str) -> ObjectMeta {
    let svc = service.metadata.name.clone().unwrap_or_default();
    ObjectMeta {
        name: Some(pooler::object_name(&svc)),
        namespace: Some(namespace.to_owned()),
        labels: Some(pooler::labels(&svc)),
        owner_references: owner_reference(service).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The pods' labels (what the Service and the Deployment select).
pub fn selector(service: &str) -> BTreeMap<String, String> {
    let mut labels = pooler::labels(service);
    labels.remove(super::MANAGED_BY.0);
    labels
}

/// Stamps `SPEC_ANNOTATION` with the hash of `object` as built.
pub(crate) fn stamped<T: serde::Serialize>(
    mut object: T,
    meta: impl Fn(&mut T) -> &mut ObjectMeta,
) -> T {
    let json = serde_json::to_string(&object).unwrap_or_default();
    let hash: String = Sha256::digest(json.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    meta(&mut object)
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SPEC_ANNOTATION.to_owned(), hash);
    object
}

/// The hash an object was stamped with (`None` when it has none).
pub fn spec_hash(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(SPEC_ANNOTATION))
        .map(String::as_str)
}

/// Every object of `service`'s pooler, from what [`pooler::realise`] rendered.
pub fn build(service: &DatabaseService, namespace: &str, realised: &Realised) -> Objects {
    let svc = service.metadata.name.clone().unwrap_or_default();
    let config_map = ConfigMap {
        metadata: meta(service, namespace),
        data: Some(BTreeMap::from([
            (INI_FILE.to_owned(), realised.files.ini.clone()),
            (HBA_FILE.to_owned(), realised.files.hba.clone()),
        ])),
        ..ConfigMap::default()
    };
    let service_object = Service {
        metadata: meta(service, namespace),
        spec: Some(ServiceSpec {
            selector: Some(selector(&svc)),
            ports: Some(vec![ServicePort {
                name: Some("pgbouncer".to_owned()),
                port: i32::from(PORT),
                target_port: Some(IntOrString::String("pgbouncer".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            type_: Some("ClusterIP".to_owned()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Objects {
        config_map: stamped(config_map, |o| &mut o.metadata),
        service: stamped(service_object, |o| &mut o.metadata),
        deployment: stamped(deployment(service, namespace, realised), |o| {
            &mut o.metadata
        }),
    }
}

/// The pod's volumes and the container's mounts: the ConfigMap, the auth file (and the
/// connector's CA), and the pooler's TLS Secret when it has one.
fn volumes(
    name: &str,
    realised: &Realised,
    tls_secret: Option<String>,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut auth_items = vec![KeyToPath {
        key: AUTH_FILE.to_owned(),
        path: AUTH_FILE.to_owned(),
        ..KeyToPath::default()
    }];
    if realised.files.server_ca.is_some() {
        auth_items.push(KeyToPath {
            key: SERVER_CA_FILE.to_owned(),
            path: SERVER_CA_FILE.to_owned(),
            ..KeyToPath::default()
        });
    }
    let mut volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.to_owned(),
                default_mode: Some(0o444),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "auth".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.to_owned()),
                // Only the files PgBouncer reads; dbward's own passwords stay out of the pod.
                items: Some(auth_items),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![mount("config", CONFIG_DIR), mount("auth", AUTH_DIR)];
    if let Some(secret_name) = tls_secret {
        volumes.push(Volume {
            name: "tls".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_name),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount("tls", TLS_DIR));
    }
    (volumes, mounts)
}

fn deployment(service: &DatabaseService, namespace: &str, realised: &Realised) -> Deployment {
    let svc = service.metadata.name.clone().unwrap_or_default();
    let name = pooler::object_name(&svc);
    let spec = service.spec.pooler.clone().unwrap_or_default();
    let (volumes, mounts) = volumes(&name, realised, realised.tls_secret.clone());
    let container = container(&spec, mounts);
    let mut annotations = BTreeMap::new();
    annotations.insert(
        RESTART_ANNOTATION.to_owned(),
        pooler::restart_hash(&realised.restart, ""),
    );
    Deployment {
        metadata: meta(service, namespace),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas.unwrap_or(1)),
            selector: LabelSelector {
                match_labels: Some(selector(&svc)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector(&svc)),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// PgBouncer's container: the image, the generated configuration, a TCP readiness probe, no
/// privileges, a read-only root file system.
fn container(
    spec: &crate::api::database_service::PoolerSpec,
    mounts: Vec<VolumeMount>,
) -> Container {
    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
    Container {
        name: "pgbouncer".to_owned(),
        image: Some(image),
        command: Some(vec![
            "pgbouncer".to_owned(),
            format!("{CONFIG_DIR}/{INI_FILE}"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("pgbouncer".to_owned()),
            container_port: i32::from(PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(i32::from(PORT)),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
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

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::database_service::{ConnectorSecretRef, PoolerSpec, PoolerTls};
    use crate::api::{DatabaseServiceSpec, Engine};
    use crate::reconcile::pooler::Files;

    fn service(pooler: Option<PoolerSpec>) -> DatabaseService {
        let mut s = DatabaseService::new(
            "svc",
            DatabaseServiceSpec {
                engine: Engine::Postgres,
                project: "p".into(),
                connector_secret_ref: ConnectorSecretRef {
                    name: "admin".into(),
                    namespace: None,
                },
                allowed_namespaces: None,
                shared_databases: vec![],
                pooler,
                termination_protection: None,
            },
        );
        s.metadata.uid = Some("uid-s".into());
        s
    }

    fn realised(restart: &str, ini: &str) -> Realised {
        Realised {
            files: Files {
                ini: ini.into(),
                hba: "hba".into(),
                userlist: "\"u\" \"p\"\n".into(),
                server_ca: None,
            },
            auth_secret: Default::default(),
            entries: vec![],
            pools: vec![],
            restart: restart.into(),
            tls_secret: None,
            admin_password: "pw".into(),
            changes: vec![],
        }
    }

    #[test]
    fn objects_are_owned_mounted_without_subpath_and_keep_passwords_out() {
        let o = build(&service(None), "dbward-system", &realised("r", "ini"));
        for meta in [
            &o.config_map.metadata,
            &o.service.metadata,
            &o.deployment.metadata,
        ] {
            assert_eq!(meta.name.as_deref(), Some("svc-pooler"));
            assert_eq!(meta.namespace.as_deref(), Some("dbward-system"));
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.uid.as_str()),
                ("DatabaseService", "uid-s")
            );
            assert!(spec_hash(meta).is_some());
        }
        let data = o.config_map.data.as_ref().unwrap();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["hba.conf", "pgbouncer.ini"]
        );
        let spec = o.deployment.spec.as_ref().unwrap();
        let strategy = spec
            .strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref()
            .unwrap();
        assert_eq!(strategy.max_unavailable, Some(IntOrString::Int(0)));
        let pod = spec.template.spec.as_ref().unwrap();
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some(DEFAULT_IMAGE));
        for m in container.volume_mounts.as_ref().unwrap() {
            assert_eq!(m.sub_path, None, "{}", m.name);
        }
        let auth = pod.volumes.as_ref().unwrap()[1].secret.as_ref().unwrap();
        let items: Vec<&str> = auth
            .items
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(
            items,
            ["userlist.txt"],
            "dbward's own passwords are not mounted"
        );
        assert_eq!(
            o.service.spec.as_ref().unwrap().selector,
            spec.template.metadata.as_ref().unwrap().labels
        );
    }

    #[test]
    fn only_what_reload_cannot_change_rolls_the_pods() {
        let s = service(None);
        let base = build(&s, "ns", &realised("listen_port=5432", "a"));
        let pools_changed = build(&s, "ns", &realised("listen_port=5432", "b"));
        let template = |o: &Objects| o.deployment.spec.as_ref().unwrap().template.clone();
        assert_eq!(
            template(&base),
            template(&pools_changed),
            "a reload suffices"
        );
        assert_ne!(
            spec_hash(&base.config_map.metadata),
            spec_hash(&pools_changed.config_map.metadata)
        );
        assert_eq!(
            spec_hash(&base.deployment.metadata),
            spec_hash(&pools_changed.deployment.metadata)
        );
        let port_changed = build(&s, "ns", &realised("listen_port=6432", "a"));
        assert_ne!(
            template(&base),
            template(&port_changed),
            "a restart is needed"
        );
        let resized = build(
            &service(Some(PoolerSpec {
                image: Some("example/pgbouncer:1.24".into()),
                replicas: Some(3),
                resources: None,
                tls: Some(PoolerTls {
                    secret_name: Some("pooler-tls".into()),
                    ssl_mode: None,
                }),
            })),
            "ns",
            &Realised {
                tls_secret: Some("pooler-tls".into()),
                ..realised("listen_port=5432", "a")
            },
        );
        let spec = resized.deployment.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("example/pgbouncer:1.24")
        );
        assert!(
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .any(|v| v.name == "tls")
        );
    }
}
