//! The ConnectionPool controller's reconcile: every pool of a service is realised together
//! ([`pooler::realise`]: the server side, and PgBouncer's files as data), then the Kubernetes
//! side is observed (through the controllers' caches: the service's pools, its pooler's objects
//! and ready pods, each pod's `SHOW DATABASES`), planned ([`pooler_plan::plan`], pure) and acted
//! on by the controller like any plan: the objects that differ, the auth Secret, the pool's own
//! Secret, and `RELOAD` on a pod that serves other pools than its files say. An unchanged pass
//! plans nothing. A pooler whose pods do not serve the pools (yet) leaves the pool
//! `Ready=False`, `PoolerNotReady`, retried with backoff — never waited for. Deleting the last
//! pool of a service removes the Deployment, Service, ConfigMap and auth Secret and the server
//! side.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::api::{CommonStatus, ConnectionPool, DatabaseService};
use crate::pgbouncer::admin::Console;
use crate::pgbouncer::tls_probe;

use super::connection_pool::{Endpoint, POOLER_LABEL};
use super::controller::Reconciled;
use super::kube_cluster::{KubeCluster, kube_error};
use super::pooler::{self, Layout, Realised};
use super::pooler_objects::{self, AUTH_DIR, CONFIG_DIR, PORT, TLS_DIR};
use super::pooler_plan::{self, Desired, Observed, PodState};
use super::pooler_tls;
use super::secret::decoded_data;
use super::service_user::secret_action;
use super::{Applied, Cluster, Context, Error, Pinned, Prepared, act};

impl Reconciled for ConnectionPool {
    const KIND: &'static str = "ConnectionPool";
    type Status = CommonStatus;
    fn current_status(&self) -> Option<&CommonStatus> {
        self.status.as_ref()
    }
    fn conditions(&self) -> Vec<Condition> {
        self.status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default()
    }
    fn next_status(&self, conditions: Vec<Condition>, _: Option<&Pinned>) -> CommonStatus {
        CommonStatus {
            conditions,
            observed_generation: self.metadata.generation,
        }
    }
    fn is_pinned(&self) -> bool {
        // A pool pins nothing: its database and user are the namespace's own objects'.
        true
    }
    async fn prepare(&self, ctx: &Context<KubeCluster>) -> Result<Prepared, Error> {
        prepare(ctx, self).await
    }
    async fn cleanup(&self, ctx: &Context<KubeCluster>) -> Result<Applied, Error> {
        cleanup(ctx, self).await
    }
}

/// One reconcile of a service's pooler at a time (its pools are reconciled concurrently, and
/// would otherwise race to create the same role and objects).
fn service_lock(service: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    locks.entry(service.to_owned()).or_default().clone()
}

/// The pooler's files in the pod, its Service's address, and TLS when the service has it:
/// `spec.pooler.tls.secretName` (the admin's own Secret: clients must use TLS, `SSLMODE`
/// `require`), else the serving Secret a ReconfigureTLS request left (`managed_tls`, see
/// [`pooler_tls`]: its `sslMode`, and its CA as `CA_CERT`).
pub fn cluster_layout(
    service: &DatabaseService,
    operator_namespace: &str,
    managed_tls: Option<&Secret>,
) -> Layout {
    let svc = service.metadata.name.clone().unwrap_or_default();
    let own = service
        .spec
        .pooler
        .as_ref()
        .and_then(|p| p.tls.as_ref())
        .and_then(|t| t.secret_name.clone());
    let managed = managed_tls.and_then(|s| Some((s, pooler_tls::recorded_policy(s)?)));
    let (tls_secret, policy, ca_cert) = match (own, managed) {
        (Some(own), _) => (Some(own), None, String::new()),
        (None, Some((secret, policy))) => (
            secret.metadata.name.clone(),
            Some(policy),
            decoded_data(secret).remove("ca.crt").unwrap_or_default(),
        ),
        (None, None) => (None, None, String::new()),
    };
    let tls = tls_secret.is_some();
    let sslmode = match (&policy, tls) {
        (Some(p), _) => p.sslmode.clone(),
        (None, true) => "require".to_owned(),
        (None, false) => "disable".to_owned(),
    };
    Layout {
        listen_addr: "0.0.0.0".to_owned(),
        listen_port: PORT,
        config_dir: CONFIG_DIR.to_owned(),
        auth_dir: AUTH_DIR.to_owned(),
        tls_dir: tls.then(|| TLS_DIR.to_owned()),
        tls_required: policy.as_ref().is_none_or(|p| p.tls_required()),
        tls_secret,
        endpoint: Endpoint {
            host: format!("{}.{operator_namespace}.svc", pooler::object_name(&svc)),
            port: PORT,
            sslmode,
            ca_cert,
        },
    }
}

/// The serving Secret a ReconfigureTLS request left for `service`'s pooler, if any (from the
/// cache of dbward's Secrets: most poolers have none, and asking for it on every reconcile
/// would cost each pass a request; its change requeues the pools).
pub async fn managed_tls<C: Cluster>(
    ctx: &Context<C>,
    service: &str,
) -> Result<Option<Secret>, Error> {
    ctx.cluster
        .get_managed_secret(
            &ctx.operator_namespace,
            &pooler_tls::tls_secret_name(service),
        )
        .await
}

/// The service's pools that are not being deleted (`except`: a pool to leave out, by UID):
/// from the pool controller's cache once it has listed, else from the API server.
async fn pools_of(
    cluster: &KubeCluster,
    service: &str,
    except: Option<&str>,
) -> Result<Vec<ConnectionPool>, Error> {
    let all: Vec<ConnectionPool> = match cluster.synced_caches() {
        Some(caches) => caches.pools.state().iter().map(|p| (**p).clone()).collect(),
        None => {
            Api::<ConnectionPool>::all(cluster.client().clone())
                .list(&ListParams::default())
                .await
                .map_err(kube_error("list ConnectionPools"))?
                .items
        }
    };
    Ok(all
        .into_iter()
        .filter(|p| p.spec.binding.service_name == service)
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| except.is_none() || p.metadata.uid.as_deref() != except)
        .collect())
}

/// Realise the pool's service, observe its pooler, and plan: the objects and auth Secret that
/// differ, the pool's own Secret, reloads. The pool's Secret is written even while the pooler
/// is not ready (clients find it when it is).
pub async fn prepare(ctx: &Context<KubeCluster>, pool: &ConnectionPool) -> Result<Prepared, Error> {
    let svc = pool.spec.binding.service_name.clone();
    let lock = service_lock(&svc);
    let _held = lock.lock().await;
    let (service, handle) = ctx.service(&svc).await?;
    let mut pools = pools_of(&ctx.cluster, &svc, None).await?;
    if !pools.iter().any(|p| p.metadata.uid == pool.metadata.uid) {
        pools.push(pool.clone());
    }
    let tls = managed_tls(ctx, &svc).await?;
    let layout = cluster_layout(&service, &ctx.operator_namespace, tls.as_ref());
    let mut realised = pooler::realise(ctx, &service, &pools, &layout).await?;
    let namespace = pool.metadata.namespace.clone().unwrap_or_default();
    let name = pool.metadata.name.clone().unwrap_or_default();
    let position = realised
        .pools
        .iter()
        .position(|p| p.namespace == namespace && p.name == name);
    let mine = position
        .map(|i| realised.pools.remove(i))
        .map(|p| p.result)
        .unwrap_or_else(|| {
            Err(Error::Invalid {
                message: "the pool is not among its service's pools".to_owned(),
            })
        })?;
    let plan = plan_pooler(ctx, &service, &realised, true).await?;
    let mut actions = plan.actions;
    if let Some(secret) = mine {
        let existing = ctx
            .cluster
            .get_secret(
                &namespace,
                secret.metadata.name.as_deref().unwrap_or_default(),
            )
            .await?;
        actions.extend(secret_action(Some(&secret), existing.as_ref()));
    }
    Ok(Prepared {
        server: handle.server.clone(),
        actions,
        warnings: vec![format!(
            "served by PgBouncer at {}:{}",
            layout.endpoint.host, layout.endpoint.port
        )],
        pinned: Pinned::default(),
        pending: plan
            .waiting
            .map(|message| Error::PoolerNotReady { message }),
    })
}

/// Observes `service`'s pooler (its pods too when `pods`) and plans it towards `realised`.
async fn plan_pooler(
    ctx: &Context<KubeCluster>,
    service: &DatabaseService,
    realised: &Realised,
    pods: bool,
) -> Result<pooler_plan::Plan, Error> {
    let namespace = ctx.operator_namespace.as_str();
    let svc = service.metadata.name.clone().unwrap_or_default();
    let objects = pooler_objects::build(service, namespace, realised);
    let console = Console {
        host: String::new(),
        port: PORT,
        user: pooler::ADMIN_USER.to_owned(),
        password: realised.admin_password.clone(),
    };
    let mut observed = observe_objects(&ctx.cluster, namespace, &svc).await?;
    if pods {
        observed.pods = observe_pods(&ctx.cluster, namespace, &svc, &console).await?;
    }
    let desired = Desired {
        objects: &objects,
        auth_secret: &realised.auth_secret,
        entries: &realised.entries,
        console,
    };
    Ok(pooler_plan::plan(&desired, &observed))
}

/// The pooler's objects as they are: through the caches (a miss is read from the API server:
/// an object written a moment ago may not be in them yet).
async fn observe_objects(
    cluster: &KubeCluster,
    namespace: &str,
    service: &str,
) -> Result<Observed, Error> {
    let name = pooler::object_name(service);
    let caches = cluster.synced_caches();
    let pooler = caches.as_ref().map(|c| &c.pooler);
    let client = cluster.client();
    Ok(Observed {
        auth_secret: cluster.get_secret(namespace, &name).await?,
        config_map: meta_of::<ConfigMap>(
            client,
            pooler.map(|p| &p.config_maps),
            namespace,
            &name,
            "get ConfigMap",
        )
        .await?,
        service: meta_of::<Service>(
            client,
            pooler.map(|p| &p.services),
            namespace,
            &name,
            "get Service",
        )
        .await?,
        deployment: meta_of::<Deployment>(
            client,
            pooler.map(|p| &p.deployments),
            namespace,
            &name,
            "get Deployment",
        )
        .await?,
        pods: Vec::new(),
    })
}

async fn meta_of<K>(
    client: &Client,
    cache: Option<&Store<PartialObjectMeta<K>>>,
    namespace: &str,
    name: &str,
    verb: &'static str,
) -> Result<Option<ObjectMeta>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let key = ObjectRef::new(name).within(namespace);
    if let Some(meta) = cache.and_then(|c| c.get(&key)) {
        return Ok(Some(meta.metadata.clone()));
    }
    let live = Api::<PartialObjectMeta<K>>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(kube_error(verb))?;
    Ok(live.map(|o| o.metadata))
}

/// The service's ready PgBouncer pods (from the pod cache once it has listed) and what each
/// console shows.
async fn observe_pods(
    cluster: &KubeCluster,
    namespace: &str,
    service: &str,
    console: &Console,
) -> Result<Vec<PodState>, Error> {
    let mut states = Vec::new();
    for ip in ready_pod_ips(cluster, namespace, service).await? {
        let console = Console {
            host: ip.clone(),
            ..console.clone()
        };
        let shown = console.show_databases().await.map_err(|e| e.to_string());
        states.push(PodState { ip, shown });
    }
    Ok(states)
}

/// The addresses of the service's ready PgBouncer pods (from the pod cache once it has listed).
async fn ready_pod_ips(
    cluster: &KubeCluster,
    namespace: &str,
    service: &str,
) -> Result<Vec<String>, Error> {
    let pods: Vec<Pod> = match cluster.synced_caches() {
        Some(caches) => caches
            .pooler
            .pods
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect(),
        None => {
            Api::<Pod>::namespaced(cluster.client().clone(), namespace)
                .list(&ListParams::default().labels(&format!("{POOLER_LABEL}={service}")))
                .await
                .map_err(kube_error("list Pods"))?
                .items
        }
    };
    Ok(ready_ips(&pods, namespace, service))
}

/// After a certificate rotation: every ready pod of `service`'s pooler is made to present the
/// serving Secret's certificate to new handshakes (`RELOAD` where it does not yet; established
/// sessions stay). Returns the ready pods and how many of them present it.
pub async fn reload_for_certificate(
    ctx: &Context<KubeCluster>,
    service: &str,
) -> Result<(usize, usize), Error> {
    let namespace = ctx.operator_namespace.as_str();
    let not_ready = |message: String| Error::PoolerNotReady { message };
    let Some(tls) = managed_tls(ctx, service).await? else {
        return Err(not_ready(format!(
            "the pooler's TLS Secret {:?} is missing",
            pooler_tls::tls_secret_name(service)
        )));
    };
    let tls = decoded_data(&tls);
    let auth = ctx
        .cluster
        .get_secret(namespace, &pooler::object_name(service))
        .await?
        .map(|s| decoded_data(&s))
        .unwrap_or_default();
    let console = Console {
        host: String::new(),
        port: PORT,
        user: pooler::ADMIN_USER.to_owned(),
        password: auth
            .get(pooler::ADMIN_PASSWORD_KEY)
            .cloned()
            .unwrap_or_default(),
    };
    let server_name = pooler_tls::dns_names(service, namespace)[2].clone();
    let ips = ready_pod_ips(&ctx.cluster, namespace, service).await?;
    let mut presenting = 0;
    for ip in &ips {
        let console = Console {
            host: ip.clone(),
            ..console.clone()
        };
        let done = tls_probe::reload_until_presented(
            &console,
            &server_name,
            tls.get("ca.crt").map_or("", String::as_str),
            tls.get("tls.crt").map_or("", String::as_str),
        )
        .await
        .map_err(|e| not_ready(format!("pod {ip}: {e}")))?;
        presenting += usize::from(done);
    }
    Ok((ips.len(), presenting))
}

/// The addresses of `service`'s ready pooler pods in `namespace`.
fn ready_ips(pods: &[Pod], namespace: &str, service: &str) -> Vec<String> {
    pods.iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(POOLER_LABEL))
                .is_some_and(|s| s == service)
        })
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .filter_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()))
        .collect()
}

/// A pool is deleted: its service's pooler is realised without it, or, when it was the last,
/// removed with everything it had.
pub async fn cleanup(ctx: &Context<KubeCluster>, pool: &ConnectionPool) -> Result<Applied, Error> {
    let svc = pool.spec.binding.service_name.clone();
    let lock = service_lock(&svc);
    let _held = lock.lock().await;
    let (service, handle) = match ctx.service(&svc).await {
        Ok(found) => found,
        Err(Error::ServiceNotFound { name }) => return Ok(super::service_gone(&name)),
        Err(e) => return Err(e),
    };
    let others = pools_of(&ctx.cluster, &svc, pool.metadata.uid.as_deref()).await?;
    if others.is_empty() {
        let changes = pooler::remove(ctx, &service).await?;
        let namespace = ctx.operator_namespace.as_str();
        let observed = observe_objects(&ctx.cluster, namespace, &svc).await?;
        let actions = pooler_plan::plan_removal(namespace, &pooler::object_name(&svc), &observed);
        act(&handle.server, &ctx.cluster, &actions).await?;
        return Ok(Applied {
            actions,
            warnings: changes,
        });
    }
    let tls = managed_tls(ctx, &svc).await?;
    let layout = cluster_layout(&service, &ctx.operator_namespace, tls.as_ref());
    let realised = pooler::realise(ctx, &service, &others, &layout).await?;
    // The remaining pools' reconciles report a pooler that does not serve them yet.
    let plan = plan_pooler(ctx, &service, &realised, true).await?;
    act(&handle.server, &ctx.cluster, &plan.actions).await?;
    Ok(Applied {
        actions: plan.actions,
        warnings: Vec::new(),
    })
}

/// The pools to look at again when a Secret dbward wrote changes: when it is a ServiceUser's
/// (its password may have changed), every pool of that namespace with a `username` (a pool
/// Secret carries that password; an unchanged one is not rewritten); when it is a pooler's
/// TLS Secret ([`pooler_tls`]), every pool of that service.
pub fn pools_to_requeue(
    pools: &kube::runtime::reflector::Store<ConnectionPool>,
    secret: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<kube::runtime::reflector::ObjectRef<ConnectionPool>> {
    if let Some(service) = secret
        .labels
        .as_ref()
        .and_then(|l| l.get(pooler_tls::TLS_LABEL))
    {
        return pools
            .state()
            .iter()
            .filter(|p| &p.spec.binding.service_name == service)
            .map(|p| kube::runtime::reflector::ObjectRef::from_obj(p.as_ref()))
            .collect();
    }
    let from_user = secret
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "ServiceUser");
    if !from_user {
        return Vec::new();
    }
    let namespace = secret.namespace.as_deref();
    pools
        .state()
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == namespace && p.spec.username.is_some())
        .map(|p| kube::runtime::reflector::ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// The pools to look at again when a pooler pod changes (turns ready, goes): every pool of the
/// service named by the pod's pooler label.
pub fn pools_of_pod(
    pools: &kube::runtime::reflector::Store<ConnectionPool>,
    pod: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<kube::runtime::reflector::ObjectRef<ConnectionPool>> {
    let Some(service) = pod.labels.as_ref().and_then(|l| l.get(POOLER_LABEL)) else {
        return Vec::new();
    };
    pools
        .state()
        .iter()
        .filter(|p| &p.spec.binding.service_name == service)
        .map(|p| kube::runtime::reflector::ObjectRef::from_obj(p.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::connection_pool::tests::pool;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::runtime::{reflector, watcher};

    /// A Secret's metadata: in `ns`, owned by an object of `owner_kind`.
    fn secret(ns: &str, owner_kind: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            owner_references: Some(vec![OwnerReference {
                kind: owner_kind.into(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_service_users_secret_requeues_its_namespaces_pools_with_users() {
        let (store, mut writer) = reflector::store();
        for p in [
            pool("a", "web", Some("app")),
            pool("a", "anon", None),
            pool("b", "other", Some("app")),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(p));
        }
        let names = |refs: Vec<reflector::ObjectRef<ConnectionPool>>| {
            refs.into_iter().map(|r| r.name).collect::<Vec<_>>()
        };
        assert_eq!(
            names(pools_to_requeue(&store, &secret("a", "ServiceUser"))),
            ["web"]
        );
        assert!(pools_to_requeue(&store, &secret("a", "ConnectionPool")).is_empty());
        assert!(pools_to_requeue(&store, &secret("c", "ServiceUser")).is_empty());
        // The pooler's TLS Secret (in dbward's namespace): every pool of its service.
        let tls = |service: &str| ObjectMeta {
            namespace: Some("dbward-system".into()),
            labels: Some([(pooler_tls::TLS_LABEL.to_owned(), service.to_owned())].into()),
            ..ObjectMeta::default()
        };
        let mut all = names(pools_to_requeue(&store, &tls("svc")));
        all.sort();
        assert_eq!(all, ["anon", "other", "web"]);
        assert!(pools_to_requeue(&store, &tls("elsewhere")).is_empty());
    }

    #[test]
    fn a_pooler_pod_requeues_every_pool_of_its_service_in_any_namespace() {
        let (store, mut writer) = reflector::store();
        let mut elsewhere = pool("b", "other", None);
        elsewhere.spec.binding.service_name = "svc2".into();
        for p in [
            pool("a", "web", Some("app")),
            pool("c", "anon", None),
            elsewhere,
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(p));
        }
        let pod = |label: Option<&str>| ObjectMeta {
            labels: label.map(|l| [(POOLER_LABEL.to_owned(), l.to_owned())].into()),
            ..ObjectMeta::default()
        };
        let mut names: Vec<String> = pools_of_pod(&store, &pod(Some("svc")))
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        assert_eq!(names, ["anon", "web"]);
        assert!(pools_of_pod(&store, &pod(Some("nope"))).is_empty());
        assert!(pools_of_pod(&store, &pod(None)).is_empty());
    }
}
