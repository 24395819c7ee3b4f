//! The Kubernetes side of the in-cluster controllers: the API server through a `kube::Client`,
//! read through the controllers' watch caches while they run ([`Caches`]). Secrets are written
//! with server-side apply (field manager [`FIELD_MANAGER`], forced, so dbward owns the fields it
//! sets and nothing else).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::admission_policy::POLICY_NAME;
use crate::api::{
    AdmissionPolicy, AdmissionPolicySpec, ConnectionPool, DatabaseService, ServiceUser,
};

use super::pooler_plan::ObjectChange;
use super::{Cluster, Error, FIELD_MANAGER};

/// The API server.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    caches: Arc<ArcSwapOption<Caches>>,
}

/// What the controllers keep watched, so that a reconcile of an unchanged object asks the API
/// server nothing: the DatabaseServices, the AdmissionPolicies, the connector Secrets in dbward's
/// namespace and the Secrets dbward wrote (with their data: the password a target Secret holds
/// decides whether the role's is right).
///
/// A Secret or DatabaseService that is not in the caches is still read from the API server (it
/// may be a tenant's own Secret, or one written a moment ago whose event is on its way), so a
/// cache that lags can cost a read, never a wrong answer such as a new password. The policy is
/// taken from the cache as the webhook takes it.
pub struct Caches {
    pub services: Store<DatabaseService>,
    pub policies: Store<AdmissionPolicy>,
    pub connectors: Store<Secret>,
    pub owned_secrets: Store<Secret>,
    /// The ServiceUser controller's own cache (a pool's `username` takes its credentials from
    /// its user).
    pub users: Store<ServiceUser>,
    /// The ConnectionPool controller's own cache (a pooler serves all its service's pools).
    pub pools: Store<ConnectionPool>,
    /// The poolers' objects and pods in dbward's namespace.
    pub pooler: PoolerCaches,
    /// dbward's namespace, where `connectors` are watched.
    pub operator_namespace: String,
    /// True once every one of these caches holds a full list; until then reads go to the API
    /// server.
    pub synced: Arc<AtomicBool>,
}

/// The poolers' objects in dbward's namespace, by their `dbward.dev/pooler` label: metadata only
/// (the spec hash and the owner decide whether one is as desired), and the pods with their
/// status (which are ready, and where their consoles listen).
pub struct PoolerCaches {
    /// ConfigMaps.
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    /// Services.
    pub services: Store<PartialObjectMeta<Service>>,
    /// Deployments.
    pub deployments: Store<PartialObjectMeta<Deployment>>,
    /// PgBouncer pods (their spec dropped).
    pub pods: Store<Pod>,
}

impl Caches {
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        let key = ObjectRef::new(name).within(namespace);
        self.owned_secrets
            .get(&key)
            .or_else(|| {
                (namespace == self.operator_namespace)
                    .then(|| self.connectors.get(&key))
                    .flatten()
            })
            .map(|s| (*s).clone())
    }
}

impl KubeCluster {
    /// Wraps a client; reads go to the API server until [`KubeCluster::use_caches`].
    pub fn new(client: Client) -> Self {
        KubeCluster {
            client,
            caches: Arc::new(ArcSwapOption::empty()),
        }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Reads through `caches` from now on (every clone of this cluster does), or, with `None`,
    /// from the API server again (the controllers that kept them stopped).
    pub fn use_caches(&self, caches: Option<Arc<Caches>>) {
        self.caches.store(caches);
    }

    /// Waits, for at most `limit`, until the caches in use have listed (at once without caches):
    /// the reconciles queued when the controllers start then read them instead of each asking
    /// the API server.
    pub async fn caches_listed(&self, limit: std::time::Duration) {
        let Some(caches) = self.caches.load_full() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + limit;
        while !caches.synced.load(Ordering::Acquire) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The caches, once every one has listed (`None` until then and without caches: read the
    /// API server).
    pub(crate) fn synced_caches(&self) -> Option<Arc<Caches>> {
        self.caches
            .load_full()
            .filter(|c| c.synced.load(Ordering::Acquire))
    }
}

pub(crate) fn kube_error(verb: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube {
        verb,
        source: Box::new(source),
    }
}

impl Cluster for KubeCluster {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, Error> {
        if let Some(secret) = self.synced_caches().and_then(|c| c.secret(namespace, name)) {
            return Ok(Some(secret));
        }
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(kube_error("get Secret"))
    }

    async fn get_managed_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Secret>, Error> {
        match self.synced_caches() {
            Some(caches) => Ok(caches.secret(namespace, name)),
            None => self.get_secret(namespace, name).await,
        }
    }

    async fn apply_secret(&self, secret: &Secret) -> Result<(), Error> {
        apply(&self.client, secret, "apply Secret").await
    }

    async fn delete_secret(&self, namespace: &str, name: &str) -> Result<(), Error> {
        match Api::<Secret>::namespaced(self.client.clone(), namespace)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(kube_error("delete Secret")(e)),
        }
    }

    async fn get_service(&self, name: &str) -> Result<Option<DatabaseService>, Error> {
        if let Some(service) = self
            .synced_caches()
            .and_then(|c| c.services.get(&ObjectRef::new(name)))
        {
            return Ok(Some((*service).clone()));
        }
        Api::<DatabaseService>::all(self.client.clone())
            .get_opt(name)
            .await
            .map_err(kube_error("get DatabaseService"))
    }

    async fn get_service_user(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ServiceUser>, Error> {
        if let Some(user) = self
            .synced_caches()
            .and_then(|c| c.users.get(&ObjectRef::new(name).within(namespace)))
        {
            return Ok(Some((*user).clone()));
        }
        Api::<ServiceUser>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(kube_error("get ServiceUser"))
    }

    async fn apply_object(&self, change: &ObjectChange) -> Result<(), Error> {
        match change {
            ObjectChange::ConfigMap(o) => apply(&self.client, o.as_ref(), "apply ConfigMap").await,
            ObjectChange::Service(o) => apply(&self.client, o.as_ref(), "apply Service").await,
            ObjectChange::Deployment(o) => {
                apply(&self.client, o.as_ref(), "apply Deployment").await
            }
            ObjectChange::Delete {
                kind,
                namespace,
                name,
            } => {
                let client = self.client.clone();
                match *kind {
                    "ConfigMap" => {
                        delete::<ConfigMap>(client, namespace, name, "delete ConfigMap").await
                    }
                    "Service" => delete::<Service>(client, namespace, name, "delete Service").await,
                    "Deployment" => {
                        delete::<Deployment>(client, namespace, name, "delete Deployment").await
                    }
                    other => Err(Error::Invalid {
                        message: format!("dbward deletes no pooler object of kind {other}"),
                    }),
                }
            }
        }
    }

    async fn get_policy(&self) -> Result<AdmissionPolicySpec, Error> {
        if let Some(caches) = self.synced_caches() {
            let policy = caches.policies.get(&ObjectRef::new(POLICY_NAME));
            return Ok(policy.map(|p| p.spec.clone()).unwrap_or_default());
        }
        let policy = Api::<AdmissionPolicy>::all(self.client.clone())
            .get_opt(POLICY_NAME)
            .await
            .map_err(kube_error("get AdmissionPolicy"))?;
        Ok(policy.map(|p| p.spec).unwrap_or_default())
    }

    async fn get_namespace(&self, name: &str) -> Result<Option<Namespace>, Error> {
        Api::<Namespace>::all(self.client.clone())
            .get_opt(name)
            .await
            .map_err(kube_error("get Namespace"))
    }
}

/// Server-side applies a namespaced object as dbward built it (field manager [`FIELD_MANAGER`],
/// forced; never its `managedFields` or `resourceVersion`).
pub(crate) async fn apply<K>(client: &Client, desired: &K, verb: &'static str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let meta = desired.meta();
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    let mut object = desired.clone();
    object.meta_mut().managed_fields = None;
    object.meta_mut().resource_version = None;
    let mut body = serde_json::to_value(&object).map_err(|e| Error::Invalid {
        message: format!("cannot serialize {name}: {e}"),
    })?;
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    Api::<K>::namespaced(client.clone(), namespace)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(kube_error(verb))?;
    Ok(())
}

/// Deletes a namespaced object in the background; not found is success.
async fn delete<K>(
    client: Client,
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
    match Api::<K>::namespaced(client, namespace)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(kube_error(verb)(e)),
    }
}
