//! The ConnectionPool controller's reconcile: every pool of a service is realised together
//! ([`pooler::realise`]), then the pooler's objects are applied in dbward's namespace (only
//! those that differ, so an unchanged pass writes nothing), the pool's own Secret, and PgBouncer
//! is brought in step: `SHOW DATABASES` on each ready pod through the admin console, `RELOAD`
//! when it differs. A pooler whose pods do not run (yet) is `Ready=False`, `PoolerNotReady`,
//! retried with backoff — never waited for. Deleting the last pool of a service removes the
//! Deployment, Service, ConfigMap and auth Secret and the server side.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{CommonStatus, ConnectionPool, DatabaseService};
use crate::pgbouncer::admin::Console;

use super::connection_pool::{Endpoint, POOLER_LABEL};
use super::controller::Reconciled;
use super::kube_cluster::{KubeCluster, kube_error};
use super::pooler::{self, Layout, Realised};
use super::pooler_objects::{self, AUTH_DIR, CONFIG_DIR, PORT, TLS_DIR, spec_hash};
use super::service_user::secret_action;
use super::{Action, Applied, Cluster, Context, Error, FIELD_MANAGER, Pinned, Prepared, act};

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

/// The pooler's files in the pod, its Service's address, and TLS when the service has it.
pub fn cluster_layout(service: &DatabaseService, operator_namespace: &str) -> Layout {
    let svc = service.metadata.name.clone().unwrap_or_default();
    let tls = service
        .spec
        .pooler
        .as_ref()
        .and_then(|p| p.tls.as_ref())
        .and_then(|t| t.secret_name.as_ref())
        .is_some();
    Layout {
        listen_addr: "0.0.0.0".to_owned(),
        listen_port: PORT,
        config_dir: CONFIG_DIR.to_owned(),
        auth_dir: AUTH_DIR.to_owned(),
        tls_dir: tls.then(|| TLS_DIR.to_owned()),
        endpoint: Endpoint {
            host: format!("{}.{operator_namespace}.svc", pooler::object_name(&svc)),
            port: PORT,
            sslmode: if tls { "require" } else { "disable" }.to_owned(),
            ca_cert: String::new(),
        },
    }
}

/// The service's pools that are not being deleted (`except`: a pool to leave out, by UID).
async fn pools_of(
    client: &Client,
    service: &str,
    except: Option<&str>,
) -> Result<Vec<ConnectionPool>, Error> {
    let list = Api::<ConnectionPool>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_error("list ConnectionPools"))?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.spec.binding.service_name == service)
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| except.is_none() || p.metadata.uid.as_deref() != except)
        .collect())
}

/// Realise the pool's service, apply its objects and the pool's Secret, then check PgBouncer.
/// The pool's Secret is written even while the pooler is not ready (clients find it when it
/// is).
pub async fn prepare(ctx: &Context<KubeCluster>, pool: &ConnectionPool) -> Result<Prepared, Error> {
    let svc = pool.spec.binding.service_name.clone();
    let lock = service_lock(&svc);
    let _held = lock.lock().await;
    let (service, handle) = ctx.service(&svc).await?;
    let client = ctx.cluster.client().clone();
    let mut pools = pools_of(&client, &svc, None).await?;
    if !pools.iter().any(|p| p.metadata.uid == pool.metadata.uid) {
        pools.push(pool.clone());
    }
    let layout = cluster_layout(&service, &ctx.operator_namespace);
    let mut realised = pooler::realise(ctx, &service, &pools, &layout).await?;
    apply_objects(ctx, &service, &realised).await?;
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
    if let Some(secret) = mine {
        let existing = ctx
            .cluster
            .get_secret(
                &namespace,
                secret.metadata.name.as_deref().unwrap_or_default(),
            )
            .await?;
        let actions: Vec<Action> = secret_action(Some(&secret), existing.as_ref())
            .into_iter()
            .collect();
        act(&handle.server, &ctx.cluster, &actions).await?;
    }
    in_step(&client, &ctx.operator_namespace, &svc, &realised).await?;
    Ok(Prepared {
        server: handle.server.clone(),
        actions: Vec::new(),
        warnings: vec![format!(
            "served by PgBouncer at {}:{}",
            layout.endpoint.host, layout.endpoint.port
        )],
        pinned: Pinned::default(),
    })
}

/// The pooler's objects: the auth Secret, ConfigMap, Service and Deployment, each applied only
/// when it differs from what is there.
async fn apply_objects(
    ctx: &Context<KubeCluster>,
    service: &DatabaseService,
    realised: &Realised,
) -> Result<(), Error> {
    let namespace = ctx.operator_namespace.as_str();
    let existing = ctx
        .cluster
        .get_secret(
            namespace,
            realised
                .auth_secret
                .metadata
                .name
                .as_deref()
                .unwrap_or_default(),
        )
        .await?;
    if let Some(Action::ApplySecret(secret)) =
        secret_action(Some(&realised.auth_secret), existing.as_ref())
    {
        ctx.cluster.apply_secret(&secret).await?;
    }
    let objects = pooler_objects::build(service, namespace, realised);
    let client = ctx.cluster.client();
    apply_if_changed(client, namespace, &objects.config_map, "apply ConfigMap").await?;
    apply_if_changed(client, namespace, &objects.service, "apply Service").await?;
    apply_if_changed(client, namespace, &objects.deployment, "apply Deployment").await
}

async fn apply_if_changed<K>(
    client: &Client,
    namespace: &str,
    desired: &K,
    verb: &'static str,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let name = desired.meta().name.clone().unwrap_or_default();
    let existing = api.get_opt(&name).await.map_err(kube_error(verb))?;
    let unchanged = existing.as_ref().is_some_and(|e| {
        spec_hash(e.meta()) == spec_hash(desired.meta()) && owners_present(e.meta(), desired.meta())
    });
    if unchanged {
        return Ok(());
    }
    let mut body = serde_json::to_value(desired).map_err(|e| Error::Invalid {
        message: format!("cannot serialize {name}: {e}"),
    })?;
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(kube_error(verb))?;
    Ok(())
}

fn owners_present(have: &ObjectMeta, want: &ObjectMeta) -> bool {
    want.owner_references.iter().flatten().all(|w| {
        have.owner_references
            .iter()
            .flatten()
            .any(|h| h.uid == w.uid)
    })
}

/// PgBouncer serves what was rendered: on every ready pod, `SHOW DATABASES` equals the pools,
/// else `RELOAD` and look again. The kubelet refreshes mounted files within its sync period, so
/// a pod still showing the old pools after the RELOAD is reported and retried.
async fn in_step(
    client: &Client,
    namespace: &str,
    service: &str,
    realised: &Realised,
) -> Result<(), Error> {
    let name = pooler::object_name(service);
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{POOLER_LABEL}={service}")))
        .await
        .map_err(kube_error("list Pods"))?;
    let ready: Vec<String> = pods
        .items
        .iter()
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .filter_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()))
        .collect();
    if ready.is_empty() {
        return Err(Error::PoolerNotReady {
            message: format!(
                "no pod of the PgBouncer Deployment {namespace}/{name} is ready yet; the pools are configured and will be served once one is"
            ),
        });
    }
    for ip in ready {
        let console = Console {
            host: ip.clone(),
            port: PORT,
            user: pooler::ADMIN_USER.to_owned(),
            password: realised.admin_password.clone(),
        };
        console.bring_in_step(&realised.entries).await.map_err(|e| Error::PoolerNotReady {
            message: format!(
                "PgBouncer pod {ip}: {e} (after a RELOAD the kubelet may not have refreshed the ConfigMap yet)"
            ),
        })?;
    }
    Ok(())
}

/// A pool is deleted: its service's pooler is realised without it, or, when it was the last,
/// removed with everything it had.
pub async fn cleanup(ctx: &Context<KubeCluster>, pool: &ConnectionPool) -> Result<Applied, Error> {
    let svc = pool.spec.binding.service_name.clone();
    let lock = service_lock(&svc);
    let _held = lock.lock().await;
    let service = match ctx.service(&svc).await {
        Ok((service, _)) => service,
        Err(Error::ServiceNotFound { name }) => return Ok(super::service_gone(&name)),
        Err(e) => return Err(e),
    };
    let client = ctx.cluster.client().clone();
    let others = pools_of(&client, &svc, pool.metadata.uid.as_deref()).await?;
    if others.is_empty() {
        let changes = pooler::remove(ctx, &service).await?;
        delete_objects(ctx, &svc).await?;
        return Ok(Applied {
            actions: Vec::new(),
            warnings: changes,
        });
    }
    let layout = cluster_layout(&service, &ctx.operator_namespace);
    let realised = pooler::realise(ctx, &service, &others, &layout).await?;
    apply_objects(ctx, &service, &realised).await?;
    // Best effort: the remaining pools' reconciles report a pooler that is not in step.
    let _ = in_step(&client, &ctx.operator_namespace, &svc, &realised).await;
    Ok(Applied::default())
}

async fn delete_objects(ctx: &Context<KubeCluster>, service: &str) -> Result<(), Error> {
    let name = pooler::object_name(service);
    let namespace = ctx.operator_namespace.as_str();
    let client = ctx.cluster.client();
    delete::<Deployment>(client, namespace, &name, "delete Deployment").await?;
    delete::<Service>(client, namespace, &name, "delete Service").await?;
    delete::<ConfigMap>(client, namespace, &name, "delete ConfigMap").await?;
    delete::<Secret>(client, namespace, &name, "delete Secret").await
}

async fn delete<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    verb: &'static str,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match Api::<K>::namespaced(client.clone(), namespace)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(kube_error(verb)(e)),
    }
}

/// The pools to look at again when a Secret dbward wrote changes: when it is a ServiceUser's
/// (its password may have changed), every pool of that namespace with a `username` (a pool
/// Secret carries that password; an unchanged one is not rewritten).
pub fn pools_to_requeue(
    pools: &kube::runtime::reflector::Store<ConnectionPool>,
    secret: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<kube::runtime::reflector::ObjectRef<ConnectionPool>> {
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
    }
}
