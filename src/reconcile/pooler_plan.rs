//! Pure plan of a pooler's Kubernetes side (it computes only): given what was observed of its
//! objects and its pods, which objects to apply or delete, which PgBouncer pods to `RELOAD`,
//! and why the pooler is not serving the desired pools yet.
//!
//! An object is applied when it is missing, when its spec hash differs from the desired one's
//! or when it lost its owner; everything else is left alone, so an unchanged pass plans
//! nothing. A `RELOAD` is planned only for a ready pod whose `SHOW DATABASES` differs while its
//! files are already the desired ones (right after a ConfigMap or auth Secret change the kubelet
//! has not refreshed the mounted files yet, and a reload would read the old ones).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pgbouncer::admin::{self, Console, Row};
use crate::pgbouncer::config::PoolEntry;

use super::Action;
use super::pooler_objects::{Objects, spec_hash};
use super::service_user::secret_action;

/// What is there of a service's pooler.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The auth Secret (with its data: the passwords dbward keeps).
    pub auth_secret: Option<Secret>,
    /// The ConfigMap's metadata.
    pub config_map: Option<ObjectMeta>,
    /// The Service's metadata.
    pub service: Option<ObjectMeta>,
    /// The Deployment's metadata.
    pub deployment: Option<ObjectMeta>,
    /// The ready PgBouncer pods.
    pub pods: Vec<PodState>,
}

/// A ready PgBouncer pod and what its console showed.
#[derive(Debug, Clone)]
pub struct PodState {
    /// The pod's IP (where its console listens).
    pub ip: String,
    /// `SHOW DATABASES`, or why the console did not answer.
    pub shown: Result<Vec<Row>, String>,
}

/// A pooler object to write.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectChange {
    /// Server-side apply the ConfigMap.
    ConfigMap(Box<ConfigMap>),
    /// Server-side apply the Service.
    Service(Box<Service>),
    /// Server-side apply the Deployment.
    Deployment(Box<Deployment>),
    /// Delete an object (not found is success).
    Delete {
        /// `ConfigMap`, `Service` or `Deployment`.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

impl std::fmt::Display for ObjectChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let named = |kind: &str, meta: &ObjectMeta| {
            format!(
                "{kind} {}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            )
        };
        match self {
            ObjectChange::ConfigMap(o) => write!(f, "apply {}", named("ConfigMap", &o.metadata)),
            ObjectChange::Service(o) => write!(f, "apply {}", named("Service", &o.metadata)),
            ObjectChange::Deployment(o) => write!(f, "apply {}", named("Deployment", &o.metadata)),
            ObjectChange::Delete {
                kind,
                namespace,
                name,
            } => write!(f, "delete {kind} {namespace}/{name}"),
        }
    }
}

/// What a service's pooler should be.
pub struct Desired<'a> {
    /// Its objects.
    pub objects: &'a Objects,
    /// Its auth Secret.
    pub auth_secret: &'a Secret,
    /// The pools PgBouncer should serve.
    pub entries: &'a [PoolEntry],
    /// How to reach a pod's console (the host is the pod's).
    pub console: Console,
}

/// The plan: actions in the order they run, and why the pooler does not serve the desired
/// pools yet (`None`: it does, or will once these actions ran).
#[derive(Debug, Default)]
pub struct Plan {
    /// Secrets, objects, reloads.
    pub actions: Vec<Action>,
    /// Why the pools are not served yet.
    pub waiting: Option<String>,
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

/// Desired vs observed → the plan.
pub fn plan(desired: &Desired<'_>, observed: &Observed) -> Plan {
    let mut actions: Vec<Action> =
        secret_action(Some(desired.auth_secret), observed.auth_secret.as_ref())
            .into_iter()
            .collect();
    let objects = desired.objects;
    let config_differs = differs(observed.config_map.as_ref(), &objects.config_map.metadata);
    // New files (pgbouncer.ini, hba.conf, the auth file) reach the pods only with the kubelet.
    let files_change = !actions.is_empty() || config_differs;
    if config_differs {
        actions.push(object(ObjectChange::ConfigMap(Box::new(
            objects.config_map.clone(),
        ))));
    }
    if differs(observed.service.as_ref(), &objects.service.metadata) {
        actions.push(object(ObjectChange::Service(Box::new(
            objects.service.clone(),
        ))));
    }
    if differs(observed.deployment.as_ref(), &objects.deployment.metadata) {
        actions.push(object(ObjectChange::Deployment(Box::new(
            objects.deployment.clone(),
        ))));
    }
    let meta = &objects.deployment.metadata;
    let name = format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    );
    let waiting = if observed.pods.is_empty() {
        Some(format!(
            "no pod of the PgBouncer Deployment {name} is ready yet; the pools are configured and will be served once one is"
        ))
    } else if files_change {
        Some(format!(
            "PgBouncer's configuration changed; its pods load it once the kubelet has refreshed their files (then {name} is reloaded)"
        ))
    } else {
        pods_in_step(desired, &observed.pods, &mut actions)
    };
    Plan { actions, waiting }
}

/// Reloads for the pods that show other pools than desired; what still keeps them from
/// serving the desired pools.
fn pods_in_step(
    desired: &Desired<'_>,
    pods: &[PodState],
    actions: &mut Vec<Action>,
) -> Option<String> {
    let mut waiting = Vec::new();
    for pod in pods {
        match &pod.shown {
            Err(e) => waiting.push(format!("PgBouncer pod {}: {e}", pod.ip)),
            Ok(shown) => {
                if let Err(difference) = admin::compare_databases(shown, desired.entries) {
                    let console = Console {
                        host: pod.ip.clone(),
                        ..desired.console.clone()
                    };
                    actions.push(Action::ReloadPooler(Box::new(console)));
                    waiting.push(format!(
                        "PgBouncer pod {} served other pools ({difference}); reloaded",
                        pod.ip
                    ));
                }
            }
        }
    }
    (!waiting.is_empty()).then(|| waiting.join("; "))
}

/// Deleting a service's pooler: everything that is there, the Deployment first.
pub fn plan_removal(namespace: &str, name: &str, observed: &Observed) -> Vec<Action> {
    let present = [
        ("Deployment", observed.deployment.is_some()),
        ("Service", observed.service.is_some()),
        ("ConfigMap", observed.config_map.is_some()),
    ];
    let mut actions: Vec<Action> = present
        .into_iter()
        .filter(|(_, there)| *there)
        .map(|(kind, _)| {
            object(ObjectChange::Delete {
                kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
        })
        .collect();
    if observed.auth_secret.is_some() {
        actions.push(Action::DeleteSecret {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }
    actions
}

fn object(change: ObjectChange) -> Action {
    Action::ApplyObject(Box::new(change))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;
    use crate::api::PoolMode;
    use crate::pgbouncer::config::Name;
    use crate::reconcile::pooler_objects::SPEC_ANNOTATION;

    const NS: &str = "dbward-system";
    const NAME: &str = "pgbouncer-svc";

    fn meta(hash: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(NS.into()),
            annotations: Some(BTreeMap::from([(SPEC_ANNOTATION.into(), hash.into())])),
            owner_references: Some(vec![OwnerReference {
                uid: "svc-uid".into(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        }
    }

    fn objects() -> Objects {
        Objects {
            config_map: ConfigMap {
                metadata: meta("c1"),
                ..ConfigMap::default()
            },
            service: Service {
                metadata: meta("s1"),
                ..Service::default()
            },
            deployment: Deployment {
                metadata: meta("d1"),
                ..Deployment::default()
            },
        }
    }

    fn auth_secret(password: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(NAME.into()),
                namespace: Some(NS.into()),
                ..ObjectMeta::default()
            },
            string_data: Some(BTreeMap::from([(
                "lookup-password".into(),
                password.into(),
            )])),
            ..Secret::default()
        }
    }

    fn entries() -> Vec<PoolEntry> {
        vec![PoolEntry {
            name: Name::new("n", "web").unwrap(),
            dbname: Name::new("n", "orders").unwrap(),
            mode: PoolMode::Transaction,
            size: 5,
        }]
    }

    fn shows(name: &str, size: &str) -> Vec<Row> {
        vec![
            [
                ("name", name),
                ("database", "orders"),
                ("pool_mode", "transaction"),
                ("pool_size", size),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ]
    }

    fn console() -> Console {
        Console {
            host: String::new(),
            port: 5432,
            user: "dbward_pgbouncer_admin".into(),
            password: "admin-secret".into(),
        }
    }

    /// What a pooler that is exactly as desired looks like, with one pod per `shown`.
    fn in_place(objects: &Objects, secret: &Secret, shown: Vec<Vec<Row>>) -> Observed {
        // The live Secret as the API server returns it: `data`, not `stringData`.
        let mut live = secret.clone();
        live.data = live.string_data.take().map(|d| {
            d.into_iter()
                .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
                .collect()
        });
        Observed {
            auth_secret: Some(live),
            config_map: Some(objects.config_map.metadata.clone()),
            service: Some(objects.service.metadata.clone()),
            deployment: Some(objects.deployment.metadata.clone()),
            pods: shown
                .into_iter()
                .enumerate()
                .map(|(i, rows)| PodState {
                    ip: format!("10.0.0.{i}"),
                    shown: Ok(rows),
                })
                .collect(),
        }
    }

    fn desired<'a>(
        objects: &'a Objects,
        secret: &'a Secret,
        entries: &'a [PoolEntry],
    ) -> Desired<'a> {
        Desired {
            objects,
            auth_secret: secret,
            entries,
            console: console(),
        }
    }

    fn described(plan: &Plan) -> Vec<String> {
        plan.actions.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_pooler_as_desired_plans_nothing() {
        let (objects, secret, entries) = (objects(), auth_secret("p"), entries());
        let desired = desired(&objects, &secret, &entries);
        let plan = plan(
            &desired,
            &in_place(&objects, &secret, vec![shows("web", "5")]),
        );
        assert!(plan.actions.is_empty(), "{:?}", described(&plan));
        assert_eq!(plan.waiting, None);
    }

    #[test]
    fn only_what_differs_is_applied_and_new_files_are_waited_for_not_reloaded() {
        let (objects, secret, entries) = (objects(), auth_secret("p"), entries());
        let desired = desired(&objects, &secret, &entries);
        let mut observed = in_place(&objects, &secret, vec![shows("web", "4")]);
        observed.config_map = Some(meta("c0"));
        // The Service lost its owner reference (edited by hand).
        observed.service.as_mut().unwrap().owner_references = None;
        let plan = plan(&desired, &observed);
        assert_eq!(
            described(&plan),
            [
                format!("apply ConfigMap {NS}/{NAME}"),
                format!("apply Service {NS}/{NAME}")
            ]
        );
        let waiting = plan.waiting.expect("waiting for the kubelet");
        assert!(waiting.contains("configuration changed"), "{waiting}");
    }

    #[test]
    fn a_new_auth_secret_is_applied_and_waited_for() {
        let (objects, entries) = (objects(), entries());
        let secret = auth_secret("new");
        let desired = desired(&objects, &secret, &entries);
        let observed = in_place(&objects, &auth_secret("old"), vec![shows("web", "5")]);
        let plan = plan(&desired, &observed);
        assert_eq!(described(&plan), [format!("apply Secret {NS}/{NAME}")]);
        assert!(plan.waiting.is_some());
    }

    #[test]
    fn a_pod_serving_other_pools_with_current_files_is_reloaded_alone() {
        let (objects, secret, entries) = (objects(), auth_secret("p"), entries());
        let desired = desired(&objects, &secret, &entries);
        let mut observed = in_place(
            &objects,
            &secret,
            vec![shows("web", "5"), shows("web", "3")],
        );
        observed.pods.push(PodState {
            ip: "10.0.0.9".into(),
            shown: Err("connection refused".into()),
        });
        let plan = plan(&desired, &observed);
        let reloads: Vec<&Console> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::ReloadPooler(c) => Some(c.as_ref()),
                _ => None,
            })
            .collect();
        assert_eq!(reloads.len(), 1, "{:?}", described(&plan));
        assert_eq!(reloads[0].host, "10.0.0.1");
        assert_eq!(reloads[0].password, "admin-secret");
        let waiting = plan.waiting.expect("not in step yet");
        assert!(
            waiting.contains("10.0.0.1") && waiting.contains("10.0.0.9"),
            "{waiting}"
        );
        assert!(!format!("{:?}", plan.actions).contains("admin-secret"));
    }

    #[test]
    fn no_ready_pod_is_waiting_and_still_applies_the_objects() {
        let (objects, secret, entries) = (objects(), auth_secret("p"), entries());
        let desired = desired(&objects, &secret, &entries);
        let plan = plan(&desired, &Observed::default());
        assert_eq!(plan.actions.len(), 4, "{:?}", described(&plan));
        assert!(plan.waiting.unwrap().contains("no pod"));
    }

    #[test]
    fn removal_deletes_what_is_there_deployment_first() {
        let objects = objects();
        let mut observed = in_place(&objects, &auth_secret("p"), Vec::new());
        observed.service = None;
        let actions = plan_removal(NS, NAME, &observed);
        let lines: Vec<String> = actions.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                format!("delete Deployment {NS}/{NAME}"),
                format!("delete ConfigMap {NS}/{NAME}"),
                format!("delete Secret {NS}/{NAME}"),
            ]
        );
        assert!(plan_removal(NS, NAME, &Observed::default()).is_empty());
    }
}
