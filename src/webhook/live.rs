//! The live snapshot: reflectors over what the rules read, and a task that rebuilds the
//! engine's snapshot and swaps it in whenever one of them changes.
//!
//! Caches hold only what the rules need: DatabaseServices, connector Secrets in the operator's
//! namespace (by label), Namespaces as metadata only, and the AdmissionPolicy named `default`.
//! dbward objects are read as dynamic objects, so one malformed object cannot stall a watch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, TypeMeta};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::engine::Snapshot;
use super::metrics::Metrics;
use super::snapshot::SharedSnapshot;
use crate::api::admission_policy::POLICY_NAME;
use crate::api::database_service::{CONNECTOR_LABEL, CONNECTOR_LABEL_VALUE};
use crate::api::{GROUP, VERSION, kind_info};

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("reading the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: std::path::PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("configuring the Kubernetes client: {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("configuring the Kubernetes client from the kubeconfig: {0}")]
    CustomConfig(kube::config::KubeconfigError),
    #[error("creating the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client from `--kubeconfig`, or else `$KUBECONFIG`, `~/.kube/config` or the in-cluster
/// service account.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, LiveError> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                LiveError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(LiveError::CustomConfig)?
        }
        None => kube::Config::infer().await?,
    };
    // Counted: `dbward_kube_requests_total` on /metrics.
    Ok(crate::kube_requests::client(config)?)
}

fn dbward_resource(kind: &str) -> ApiResource {
    let plural = kind_info(kind).map_or("", |k| k.plural);
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

/// Runs a reflector into `writer`, waking `changed` on every event; retries with backoff.
fn reflect<K>(
    writer: Writer<K>,
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    changed: Arc<Notify>,
    what: &'static str,
) -> JoinHandle<()>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    tokio::spawn(async move {
        reflector::reflector(writer, stream.default_backoff())
            .for_each(|event| {
                match event {
                    Ok(_) => changed.notify_one(),
                    Err(error) => tracing::warn!(what, %error, "watch failed; retrying"),
                }
                futures::future::ready(())
            })
            .await;
    })
}

struct Stores {
    services: Store<DynamicObject>,
    policies: Store<DynamicObject>,
    secrets: Store<Secret>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    services_type: TypeMeta,
    policy_type: TypeMeta,
}

impl Stores {
    async fn synced(&self) {
        let _ = self.services.wait_until_ready().await;
        let _ = self.policies.wait_until_ready().await;
        let _ = self.secrets.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
    }

    /// The objects as the engine's snapshot reads them, with their types set (list items
    /// may come without `apiVersion` and `kind`).
    fn objects(&self) -> Vec<serde_json::Value> {
        let mut objects = Vec::new();
        for (store, types) in [
            (&self.services, &self.services_type),
            (&self.policies, &self.policy_type),
        ] {
            for object in store.state() {
                let mut object = (*object).clone();
                object.types = Some(types.clone());
                objects.extend(serde_json::to_value(object).ok());
            }
        }
        for secret in self.secrets.state() {
            objects.extend(serde_json::to_value(&*secret).ok());
        }
        for namespace in self.namespaces.state() {
            objects.push(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": namespace.metadata.name,
                    "labels": namespace.metadata.labels,
                },
            }));
        }
        objects
    }
}

/// Starts the reflectors and the task that keeps `shared` current; `ready` turns true once
/// every cache has synced and the first live snapshot is in place.
pub fn start(
    client: Client,
    operator_namespace: &str,
    shared: SharedSnapshot,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> Vec<JoinHandle<()>> {
    let changed = Arc::new(Notify::new());
    let mut tasks = Vec::new();

    let service_resource = dbward_resource("DatabaseService");
    let services_writer = Writer::new(service_resource.clone());
    let services = services_writer.as_reader();
    let api = Api::<DynamicObject>::all_with(client.clone(), &service_resource);
    tasks.push(reflect(
        services_writer,
        watcher(api, watcher::Config::default()),
        changed.clone(),
        "DatabaseServices",
    ));

    let policy_resource = dbward_resource("AdmissionPolicy");
    let policies_writer = Writer::new(policy_resource.clone());
    let policies = policies_writer.as_reader();
    let api = Api::<DynamicObject>::all_with(client.clone(), &policy_resource);
    let config = watcher::Config::default().fields(&format!("metadata.name={POLICY_NAME}"));
    tasks.push(reflect(
        policies_writer,
        watcher(api, config),
        changed.clone(),
        "AdmissionPolicy",
    ));

    let secrets_writer = Writer::default();
    let secrets = secrets_writer.as_reader();
    let api = Api::<Secret>::namespaced(client.clone(), operator_namespace);
    let config =
        watcher::Config::default().labels(&format!("{CONNECTOR_LABEL}={CONNECTOR_LABEL_VALUE}"));
    tasks.push(reflect(
        secrets_writer,
        watcher(api, config),
        changed.clone(),
        "connector Secrets",
    ));

    let namespaces_writer = Writer::default();
    let namespaces = namespaces_writer.as_reader();
    // `PartialObjectMeta` makes the watch ask for metadata only.
    let api = Api::<PartialObjectMeta<Namespace>>::all(client);
    tasks.push(reflect(
        namespaces_writer,
        watcher(api, watcher::Config::default()),
        changed.clone(),
        "Namespaces",
    ));

    let stores = Stores {
        services,
        policies,
        secrets,
        namespaces,
        services_type: TypeMeta {
            api_version: service_resource.api_version.clone(),
            kind: service_resource.kind.clone(),
        },
        policy_type: TypeMeta {
            api_version: policy_resource.api_version.clone(),
            kind: policy_resource.kind.clone(),
        },
    };
    let operator_namespace = operator_namespace.to_string();
    tasks.push(tokio::spawn(async move {
        stores.synced().await;
        loop {
            let snapshot = Snapshot::from_objects(stores.objects(), &operator_namespace, true);
            shared.store(Arc::new(snapshot));
            metrics.snapshot_updated();
            if !ready.swap(true, Ordering::Relaxed) {
                tracing::info!("caches synced; ready");
            }
            changed.notified().await;
            // Let a burst of events (a resync, a bulk apply) settle into one rebuild.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }));
    tasks
}

/// Reads what the cached snapshot lacks straight from the API server. The caches trail the API
/// server by a watch event (and a short debounce), so a single `kubectl apply` of a service, its
/// connector Secret, a new namespace and the objects using them would otherwise be judged
/// against a snapshot that has not seen the first ones yet.
#[derive(Clone)]
pub struct ReadThrough {
    client: Client,
    operator_namespace: String,
}

impl std::fmt::Debug for ReadThrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadThrough")
            .field("operator_namespace", &self.operator_namespace)
            .finish()
    }
}

impl ReadThrough {
    pub fn new(client: Client, operator_namespace: &str) -> ReadThrough {
        ReadThrough {
            client,
            operator_namespace: operator_namespace.to_string(),
        }
    }

    /// A copy of `snapshot` with the objects `object` refers to that the cache lacks, or `None`
    /// when it lacks nothing (or the API server has nothing more either).
    pub async fn complete(
        &self,
        snapshot: &Snapshot,
        kind: &str,
        namespace: Option<&str>,
        object: &serde_json::Value,
    ) -> Option<Snapshot> {
        let text = |pointer: &str| {
            object
                .pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let mut found = Vec::new();
        let service = text("/spec/serviceName").or_else(|| text("/spec/serviceRef/name"));
        if let Some(service) = service.filter(|s| !snapshot.services.contains_key(*s)) {
            let api = Api::<DynamicObject>::all_with(
                self.client.clone(),
                &dbward_resource("DatabaseService"),
            );
            if let Ok(Some(mut found_service)) = api.get_opt(service).await {
                found_service.types = Some(TypeMeta {
                    api_version: format!("{GROUP}/{VERSION}"),
                    kind: "DatabaseService".into(),
                });
                found.extend(serde_json::to_value(found_service).ok());
            }
        }
        // The connector Secret: of the DatabaseService itself, or of the object's service
        // (cached, or just read), for the rules that read the connector's user.
        let connector = if kind == "DatabaseService" {
            text("/spec/connectorSecretRef/name").map(|name| {
                let namespace =
                    text("/spec/connectorSecretRef/namespace").unwrap_or(&self.operator_namespace);
                (namespace.to_string(), name.to_string())
            })
        } else if let Some(cached) = service.and_then(|s| snapshot.services.get(s)) {
            let reference = &cached.spec.connector_secret_ref;
            Some((
                reference
                    .namespace
                    .clone()
                    .unwrap_or_else(|| self.operator_namespace.clone()),
                reference.name.clone(),
            ))
        } else {
            found.first().and_then(|fetched| {
                let name = fetched.pointer("/spec/connectorSecretRef/name")?.as_str()?;
                let namespace = fetched
                    .pointer("/spec/connectorSecretRef/namespace")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(&self.operator_namespace);
                Some((namespace.to_string(), name.to_string()))
            })
        };
        if let Some(key) = connector
            && key.0 == self.operator_namespace
            && !snapshot.connector_secrets.contains_key(&key)
        {
            let api = Api::<Secret>::namespaced(self.client.clone(), &key.0);
            if let Ok(Some(secret)) = api.get_opt(&key.1).await {
                found.extend(serde_json::to_value(&secret).ok().map(|mut v| {
                    v["apiVersion"] = "v1".into();
                    v["kind"] = "Secret".into();
                    v
                }));
            }
        }
        if let Some(namespace) = namespace.filter(|ns| !snapshot.namespaces.contains_key(*ns)) {
            let api = Api::<PartialObjectMeta<Namespace>>::all(self.client.clone());
            if let Ok(Some(meta)) = api.get_metadata_opt(namespace).await {
                found.push(serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": meta.metadata.name, "labels": meta.metadata.labels},
                }));
            }
        }
        if found.is_empty() {
            return None;
        }
        let mut completed = snapshot.clone();
        for object in &found {
            completed.insert(object);
        }
        Some(completed)
    }
}
