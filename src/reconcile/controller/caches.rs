//! The controllers' watch caches: one per kind they reconcile, and the ones their reconciles
//! read ([`Caches`]: DatabaseServices, the AdmissionPolicy, connector Secrets, the Secrets dbward
//! wrote, the poolers' objects and pods). Every cache drops `managedFields` (never read, most of an object's size); readiness
//! waits for every first list.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::channel::mpsc;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tracing::info;

use crate::api::admission_policy::POLICY_NAME;
use crate::api::database_service::{CONNECTOR_LABEL, CONNECTOR_LABEL_VALUE};
use crate::api::{AdmissionPolicy, ConnectionPool, DatabaseService, ServiceUser};

use super::super::MANAGED_BY_SELECTOR;
use super::super::connection_pool::POOLER_LABEL;
use super::super::kube_cluster::{Caches, PoolerCaches};

/// Counts the caches that still wait for their first full list; `ready` turns true when none
/// does.
pub(super) struct CacheSync {
    pending: AtomicUsize,
    ready: Arc<AtomicBool>,
}

impl CacheSync {
    pub(super) fn new(caches: usize, ready: Arc<AtomicBool>) -> CacheSync {
        CacheSync {
            pending: AtomicUsize::new(caches),
            ready,
        }
    }

    fn listed(&self, what: &str) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.ready.store(true, Ordering::Release);
            info!(last = %what, "controller caches synced; ready");
        }
    }

    /// An `inspect` callback that marks `what` listed at its stream's first `InitDone`.
    fn on_first_list<K>(
        self: &Arc<Self>,
        what: &'static str,
    ) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + Send + 'static {
        let sync = self.clone();
        let mut listed = false;
        move |event| {
            if !listed && matches!(event, Ok(watcher::Event::InitDone)) {
                listed = true;
                sync.listed(what);
            }
        }
    }
}

fn without_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// A controller's cache of kind `K`: every object of the kind, and a stream of the objects that
/// changed.
pub(super) fn cached<K>(
    client: &Client,
    sync: &Arc<CacheSync>,
) -> (
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    Store<K>,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let kind: &'static str = match K::kind(&()) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "object",
    };
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(without_managed_fields)
        .inspect(sync.on_first_list(kind))
        .reflect(writer)
        .applied_objects();
    (stream, reader)
}

/// A change of an owned Secret, for the controller of its owner's kind.
pub(super) type OwnedSecrets = mpsc::UnboundedReceiver<Result<Secret, watcher::Error>>;

/// A change of a pooler's pod, for the ConnectionPool controller.
pub(super) type PoolerPods = mpsc::UnboundedReceiver<Result<Pod, watcher::Error>>;

/// The reads' caches and the futures that fill them (poll them for as long as the controllers
/// run).
pub(super) struct ReadCaches<const OWNERS: usize> {
    pub caches: Arc<Caches>,
    /// Owned Secrets that changed or went, once for each of the `OWNERS` controllers.
    pub owned: [OwnedSecrets; OWNERS],
    /// The poolers' pods that changed.
    pub pooler_pods: PoolerPods,
    /// Ticks whenever the AdmissionPolicy changes after the first list (a denied object may
    /// now be allowed, an allowed one denied).
    pub policy_changes: tokio::sync::watch::Receiver<u64>,
    pub fill: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// The controllers' own caches that reconciles of other kinds read too.
pub(super) struct Stores {
    pub services: Store<DatabaseService>,
    pub users: Store<ServiceUser>,
    pub pools: Store<ConnectionPool>,
}

/// Watches what the reconciles read: the Secrets dbward wrote (all namespaces, by label, with
/// their data), the connector Secrets in `namespace`, the AdmissionPolicy named `default`, the
/// poolers' objects and pods in `namespace`; `stores` are controllers' own caches. `OWNERS`
/// controllers get each owned Secret's changes. The caches are read only once `ready` (every
/// cache listed).
pub(super) fn read_caches<const OWNERS: usize>(
    client: &Client,
    namespace: &str,
    stores: Stores,
    sync: &Arc<CacheSync>,
    ready: Arc<AtomicBool>,
) -> ReadCaches<OWNERS> {
    let (owned_secrets, owned_writer) = reflector::store::<Secret>();
    let mut senders = Vec::with_capacity(OWNERS);
    let owned = std::array::from_fn(|_| {
        let (sender, receiver) = mpsc::unbounded();
        senders.push(sender);
        receiver
    });
    let owned_fill = watcher(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().labels(MANAGED_BY_SELECTOR),
    )
    .default_backoff()
    .modify(without_managed_fields)
    .inspect(sync.on_first_list("Secret"))
    .reflect(owned_writer)
    .touched_objects()
    .for_each(move |secret| {
        if let Ok(secret) = secret {
            for sender in &senders {
                let _ = sender.unbounded_send(Ok(secret.clone()));
            }
        }
        futures::future::ready(())
    });

    let (connectors, connectors_writer) = reflector::store::<Secret>();
    let connectors_fill = watcher(
        Api::<Secret>::namespaced(client.clone(), namespace),
        watcher::Config::default().labels(&format!("{CONNECTOR_LABEL}={CONNECTOR_LABEL_VALUE}")),
    )
    .default_backoff()
    .modify(without_managed_fields)
    .inspect(sync.on_first_list("connector Secret"))
    .reflect(connectors_writer)
    .for_each(|_| futures::future::ready(()));

    let (policies, policies_writer) = reflector::store::<AdmissionPolicy>();
    let (changed, policy_changes) = tokio::sync::watch::channel(0u64);
    let mut lists = 0u32;
    let policies_fill = watcher(
        Api::<AdmissionPolicy>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={POLICY_NAME}")),
    )
    .default_backoff()
    .modify(without_managed_fields)
    .inspect(sync.on_first_list("AdmissionPolicy"))
    .reflect(policies_writer)
    .for_each(move |event| {
        let change = match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => true,
            // A relist after a lost watch may hide a change; the first list is the start.
            Ok(watcher::Event::InitDone) => {
                lists += 1;
                lists > 1
            }
            _ => false,
        };
        if change {
            changed.send_modify(|n| *n += 1);
        }
        futures::future::ready(())
    });

    let (pooler, pooler_pods, pooler_fill) = pooler_caches(client, namespace, sync);

    ReadCaches {
        caches: Arc::new(Caches {
            services: stores.services,
            users: stores.users,
            pools: stores.pools,
            pooler,
            policies,
            connectors,
            owned_secrets,
            operator_namespace: namespace.to_owned(),
            synced: ready,
        }),
        owned,
        pooler_pods,
        policy_changes,
        fill: Box::pin(async move {
            tokio::join!(owned_fill, connectors_fill, policies_fill, pooler_fill);
        }),
    }
}

/// The poolers' ConfigMaps, Services and Deployments (metadata only) and pods (without their
/// spec) in `namespace`, by the pooler label; the pods that changed (a pod turning ready is
/// when its pools can become Ready); and the future that fills them.
fn pooler_caches(
    client: &Client,
    namespace: &str,
    sync: &Arc<CacheSync>,
) -> (
    PoolerCaches,
    PoolerPods,
    impl Future<Output = ()> + Send + 'static,
) {
    let config = || watcher::Config::default().labels(POOLER_LABEL);
    let (config_maps, config_maps_fill) =
        metadata_cache::<ConfigMap>(client, namespace, sync, "pooler ConfigMap");
    let (services, services_fill) =
        metadata_cache::<Service>(client, namespace, sync, "pooler Service");
    let (deployments, deployments_fill) =
        metadata_cache::<Deployment>(client, namespace, sync, "pooler Deployment");
    let (pods, pods_writer) = reflector::store::<Pod>();
    let (pods_changed, pod_changes) = mpsc::unbounded();
    let pods_fill = watcher(Api::<Pod>::namespaced(client.clone(), namespace), config())
        .default_backoff()
        .modify(|pod: &mut Pod| {
            pod.metadata.managed_fields = None;
            pod.spec = None;
        })
        .inspect(sync.on_first_list("pooler Pod"))
        .reflect(pods_writer)
        .touched_objects()
        .for_each(move |pod| {
            if let Ok(pod) = pod {
                let _ = pods_changed.unbounded_send(Ok(pod));
            }
            futures::future::ready(())
        });
    let fill = async move {
        tokio::join!(config_maps_fill, services_fill, deployments_fill, pods_fill);
    };
    (
        PoolerCaches {
            config_maps,
            services,
            deployments,
            pods,
        },
        pod_changes,
        fill,
    )
}

/// A metadata-only cache of the pooler's objects of kind `K` in `namespace`.
fn metadata_cache<K>(
    client: &Client,
    namespace: &str,
    sync: &Arc<CacheSync>,
    what: &'static str,
) -> (
    Store<PartialObjectMeta<K>>,
    impl Future<Output = ()> + Send + 'static,
)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<PartialObjectMeta<K>>();
    // `Api<PartialObjectMeta<K>>` asks for metadata only (PartialObjectMetadataList).
    let fill = watcher(
        Api::<PartialObjectMeta<K>>::namespaced(client.clone(), namespace),
        watcher::Config::default().labels(POOLER_LABEL),
    )
    .default_backoff()
    .modify(|meta: &mut PartialObjectMeta<K>| meta.metadata.managed_fields = None)
    .inspect(sync.on_first_list(what))
    .reflect(writer)
    .for_each(|_| futures::future::ready(()));
    (store, fill)
}

/// A stream that yields once per change of `changes` (for `Controller::reconcile_all_on`).
pub(super) fn each_change(
    changes: tokio::sync::watch::Receiver<u64>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(changes, |mut changes| async move {
        changes.changed().await.ok()?;
        Some(((), changes))
    })
}
