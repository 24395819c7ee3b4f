//! The in-cluster controllers (kube-runtime): one per kind, watching the kind and the Secrets it
//! owns. This layer adds what only a cluster has around the per-kind observe → plan → act:
//! the finalizer, the `status` (written only when it changes), events, and requeues
//! (a periodic resync to repair drift; exponential backoff with jitter after a transient
//! failure; nothing for an invalid object until it changes).
//!
//! `dbward controller` runs them in one process; `dbward run` (`crate::runtime`) runs them on the
//! replica that holds the leader Lease.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::{self, Action as Requeue};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{info, warn};

use crate::admin::Admin;
use crate::api::database::DatabaseStatus;
use crate::api::database_claim::DatabaseClaimStatus;
use crate::api::service_user::ServiceUserStatus;
use crate::api::{
    CommonStatus, ConnectionPool, Database, DatabaseClaim, DatabaseOpsRequest,
    DatabaseQueryResource, DatabaseService, ServiceUser,
};
use crate::exposition::{Exposition, Type};

use super::kube_cluster::{KubeCluster, kube_error};
use super::status::{Readiness, now, with_ready};
use super::{
    Applied, Context, Error, FIELD_MANAGER, FINALIZER, Pinned, Prepared, Retry, database,
    database_claim, service_user,
};

mod caches;
mod ops_request;
mod postgres_cluster;
pub mod query_resource;
mod service;

use caches::{CacheSync, Stores, cached, each_change, read_caches};

pub use ops_request::{
    Advanced, WAIT_RETRY, advance, ops_request_error_policy, reconcile_ops_request,
};
pub use postgres_cluster::{postgres_cluster_error_policy, reconcile_postgres_cluster};
pub use service::{IN_USE_RETRY, reconcile_service};

/// How often an object that is fine is looked at again (drift repair).
pub const RESYNC: Duration = Duration::from_secs(600);
/// Backoff bounds after a transient failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(5);
/// See [`BACKOFF_MIN`].
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Reconciles of one kind that run at the same time.
pub const RECONCILE_CONCURRENCY: u16 = 8;
/// The retry interval of failures whose fix lies outside the object.
pub const SLOW_RETRY: Duration = Duration::from_secs(300);

/// Shared state of the controllers.
pub struct State {
    /// The reconcilers' context.
    pub ctx: Context<KubeCluster>,
    recorder: Option<Recorder>,
    failures: Mutex<HashMap<String, u32>>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Where PostgresClusters' primaries are reached instead of their Services (tests).
    pub primary_override: Option<crate::sql::ConnectionInfo>,
}

impl State {
    /// State over `client`; events are published unless `events` is false (tests).
    pub fn new(client: Client, operator_namespace: &str, events: bool) -> Self {
        let recorder = events.then(|| {
            Recorder::new(
                client.clone(),
                Reporter {
                    controller: "dbward".to_owned(),
                    instance: std::env::var("POD_NAME").ok(),
                },
            )
        });
        State {
            ctx: Context::new(KubeCluster::new(client), operator_namespace),
            recorder,
            failures: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
            primary_override: None,
        }
    }

    fn client(&self) -> Client {
        self.ctx.cluster.client().clone()
    }

    /// The controllers' counters in Prometheus text.
    pub fn render_metrics(&self, text: &mut Exposition) {
        self.metrics
            .sql_writes
            .store(self.ctx.sql_writes(), Ordering::Relaxed);
        self.metrics.render(text);
    }

    async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(bounded_note(note)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &object.object_ref(&())).await {
            warn!(error = %e, "cannot publish an event");
        }
    }

    /// The delay before retrying `key` after its `n`th consecutive failure, with ±50% jitter.
    fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n, jitter())
    }

    fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(key);
    }
}

/// Pure: `BACKOFF_MIN · 2^(n-1)`, capped at `BACKOFF_MAX`, scaled by `jitter` (0.5–1.5).
pub fn backoff_delay(failures: u32, jitter: f64) -> Duration {
    let exp = BACKOFF_MIN.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    exp.min(BACKOFF_MAX).mul_f64(jitter.clamp(0.5, 1.5))
}

fn jitter() -> f64 {
    0.5 + random_fraction()
}

/// A random number in 0.0–1.0 (0.5 when the operating system gives no randomness), for
/// spreading retries.
pub fn random_fraction() -> f64 {
    let mut b = [0u8; 2];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
}

/// Reconcile counters, by kind and outcome.
#[derive(Default)]
pub struct Metrics {
    reconciles: Mutex<HashMap<(&'static str, &'static str), u64>>,
    sql_writes: AtomicU64,
}

impl Metrics {
    fn count(&self, kind: &'static str, outcome: &'static str) {
        let mut map = self.reconciles.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((kind, outcome)).or_insert(0) += 1;
    }

    /// Prometheus text exposition.
    pub fn render(&self, text: &mut Exposition) {
        const NAME: &str = "dbward_reconcile_total";
        text.family(
            NAME,
            Type::Counter,
            "Reconciles by kind and outcome (ok or an error category).",
        );
        let map = self.reconciles.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = map.iter().collect();
        rows.sort();
        for ((kind, outcome), n) in rows {
            text.sample(NAME, &[("kind", kind), ("outcome", outcome)], n);
        }
        text.single(
            "dbward_sql_writes_total",
            Type::Counter,
            "SQL statements that changed something.",
            self.sql_writes.load(Ordering::Relaxed),
        );
    }
}

/// A namespaced kind with a finalizer and a `Ready` condition.
pub trait Reconciled:
    Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// The kind, for logs and metrics.
    const KIND: &'static str;
    /// Its status type.
    type Status: Serialize + PartialEq + Clone + Send + Sync;

    /// The current status.
    fn current_status(&self) -> Option<&Self::Status>;
    /// The current conditions.
    fn conditions(&self) -> Vec<Condition>;
    /// The status to hold after a reconcile: `conditions`, and the names pinned already or,
    /// when none are yet, `pinned`.
    fn next_status(&self, conditions: Vec<Condition>, pinned: Option<&Pinned>) -> Self::Status;
    /// Whether the status already pins names.
    fn is_pinned(&self) -> bool;
    /// Observe, check and plan (no writes).
    fn prepare(
        &self,
        ctx: &Context<KubeCluster>,
    ) -> impl Future<Output = Result<Prepared, Error>> + Send;
    /// The server-side cleanup of a deleted object.
    fn cleanup(
        &self,
        ctx: &Context<KubeCluster>,
    ) -> impl Future<Output = Result<Applied, Error>> + Send;
}

impl Reconciled for Database {
    const KIND: &'static str = "Database";
    type Status = DatabaseStatus;
    fn current_status(&self) -> Option<&DatabaseStatus> {
        self.status.as_ref()
    }
    fn conditions(&self) -> Vec<Condition> {
        self.status
            .as_ref()
            .map(|s| s.common.conditions.clone())
            .unwrap_or_default()
    }
    fn next_status(&self, conditions: Vec<Condition>, pinned: Option<&Pinned>) -> DatabaseStatus {
        let old = self.status.clone().unwrap_or_default();
        DatabaseStatus {
            common: CommonStatus {
                conditions,
                observed_generation: self.metadata.generation,
            },
            database_name: old
                .database_name
                .or_else(|| pinned.and_then(|p| p.database.clone())),
        }
    }
    fn is_pinned(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.database_name.is_some())
    }
    async fn prepare(&self, ctx: &Context<KubeCluster>) -> Result<Prepared, Error> {
        database::prepare(ctx, self).await
    }
    async fn cleanup(&self, ctx: &Context<KubeCluster>) -> Result<Applied, Error> {
        database::cleanup(ctx, self).await
    }
}

impl Reconciled for ServiceUser {
    const KIND: &'static str = "ServiceUser";
    type Status = ServiceUserStatus;
    fn current_status(&self) -> Option<&ServiceUserStatus> {
        self.status.as_ref()
    }
    fn conditions(&self) -> Vec<Condition> {
        self.status
            .as_ref()
            .map(|s| s.common.conditions.clone())
            .unwrap_or_default()
    }
    fn next_status(
        &self,
        conditions: Vec<Condition>,
        pinned: Option<&Pinned>,
    ) -> ServiceUserStatus {
        let old = self.status.clone().unwrap_or_default();
        ServiceUserStatus {
            common: CommonStatus {
                conditions,
                observed_generation: self.metadata.generation,
            },
            username: old.username.or_else(|| pinned.and_then(|p| p.user.clone())),
        }
    }
    fn is_pinned(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.username.is_some())
    }
    async fn prepare(&self, ctx: &Context<KubeCluster>) -> Result<Prepared, Error> {
        service_user::prepare(ctx, self).await
    }
    async fn cleanup(&self, ctx: &Context<KubeCluster>) -> Result<Applied, Error> {
        service_user::cleanup(ctx, self).await
    }
}

impl Reconciled for DatabaseClaim {
    const KIND: &'static str = "DatabaseClaim";
    type Status = DatabaseClaimStatus;
    fn current_status(&self) -> Option<&DatabaseClaimStatus> {
        self.status.as_ref()
    }
    fn conditions(&self) -> Vec<Condition> {
        self.status
            .as_ref()
            .map(|s| s.common.conditions.clone())
            .unwrap_or_default()
    }
    fn next_status(
        &self,
        conditions: Vec<Condition>,
        pinned: Option<&Pinned>,
    ) -> DatabaseClaimStatus {
        let old = self.status.clone().unwrap_or_default();
        DatabaseClaimStatus {
            common: CommonStatus {
                conditions,
                observed_generation: self.metadata.generation,
            },
            // Once pinned, the names never change.
            database_name: old
                .database_name
                .or_else(|| pinned.and_then(|p| p.database.clone())),
            username: old.username.or_else(|| pinned.and_then(|p| p.user.clone())),
        }
    }
    fn is_pinned(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.database_name.is_some() && s.username.is_some())
    }
    async fn prepare(&self, ctx: &Context<KubeCluster>) -> Result<Prepared, Error> {
        database_claim::prepare(ctx, self).await
    }
    async fn cleanup(&self, ctx: &Context<KubeCluster>) -> Result<Applied, Error> {
        database_claim::cleanup(ctx, self).await
    }
}

fn api_for<K>(client: Client, object: &K) -> Api<K>
where
    K: Reconciled + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    Api::namespaced(client, object.namespace().as_deref().unwrap_or("default"))
}

/// One reconcile of a namespaced kind: finalizer, cleanup or apply, status, events.
pub async fn reconcile<K>(object: Arc<K>, state: Arc<State>) -> Result<Requeue, Error>
where
    K: Reconciled + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    let api = api_for(state.client(), object.as_ref());
    let key = format!(
        "{}/{}/{}",
        K::KIND,
        object.namespace().unwrap_or_default(),
        object.name_any()
    );
    let has_finalizer = object.finalizers().iter().any(|f| f == FINALIZER);

    if object.meta().deletion_timestamp.is_some() {
        if !has_finalizer {
            return Ok(Requeue::await_change());
        }
        return match object.cleanup(&state.ctx).await {
            Ok(applied) => {
                announce(&state, object.as_ref(), &applied, "Deleted").await;
                set_finalizer(&api, object.as_ref(), false).await?;
                state.metrics.count(K::KIND, "ok");
                state.succeeded(&key);
                Ok(Requeue::await_change())
            }
            Err(e) => {
                fail(&state, &api, object.as_ref(), &e, None).await;
                Err(e)
            }
        };
    }

    // Continue with the object as the finalizer patch returned it (its latest version).
    let object = if has_finalizer {
        object
    } else {
        Arc::new(set_finalizer(&api, object.as_ref(), true).await?)
    };
    let prepared = match object.prepare(&state.ctx).await {
        Ok(prepared) => prepared,
        Err(e) => {
            fail(&state, &api, object.as_ref(), &e, None).await;
            return Err(e);
        }
    };
    // Pin the names before anything is written on the server: from now on no edit can
    // retarget what this object created.
    let pinned = prepared.pinned.clone();
    if !object.is_pinned() {
        let status = object.next_status(object.conditions(), Some(&pinned));
        write_status(&api, object.as_ref(), &status).await?;
    }
    let mut prepared = prepared;
    let pending = prepared.pending.take();
    match (prepared.run(&state.ctx.cluster).await, pending) {
        (Ok(applied), Some(e)) => {
            // What was applied stands; the object is not ready yet, and says why. A pass that
            // changed something is progress: the retries start again from the shortest wait
            // (earlier failures, e.g. a user that did not exist yet, no longer count).
            if !applied.actions.is_empty() {
                state.succeeded(&key);
            }
            announce(&state, object.as_ref(), &applied, "Reconciled").await;
            fail(&state, &api, object.as_ref(), &e, Some(&pinned)).await;
            Err(e)
        }
        (Ok(applied), None) => {
            let message = if applied.warnings.is_empty() {
                "as desired".to_owned()
            } else {
                applied.warnings.join("; ")
            };
            let conditions = with_ready(
                &object.conditions(),
                &Readiness::ready(message),
                object.meta().generation,
                &now(),
            );
            let status = object.next_status(conditions, Some(&pinned));
            write_status(&api, object.as_ref(), &status).await?;
            announce(&state, object.as_ref(), &applied, "Reconciled").await;
            state.metrics.count(K::KIND, "ok");
            state.succeeded(&key);
            Ok(Requeue::requeue(RESYNC))
        }
        (Err(e), _) => {
            fail(&state, &api, object.as_ref(), &e, Some(&pinned)).await;
            Err(e)
        }
    }
}

/// Records a failure: `Ready=False` with the error's reason, a warning event.
async fn fail<K: Reconciled>(
    state: &State,
    api: &Api<K>,
    object: &K,
    error: &Error,
    pinned: Option<&Pinned>,
) {
    warn!(kind = K::KIND, namespace = object.namespace().as_deref(), name = %object.name_any(), category = error.category(), error = %error, "reconcile failed");
    state.metrics.count(K::KIND, error.category());
    let conditions = with_ready(
        &object.conditions(),
        &Readiness::failed_publicly(error),
        object.meta().generation,
        &now(),
    );
    let status = object.next_status(conditions, pinned);
    if let Err(e) = write_status(api, object, &status).await {
        warn!(error = %e, "cannot write the status");
    }
    state
        .publish(
            object,
            EventType::Warning,
            error.reason(),
            error.public_message(),
        )
        .await;
}

/// One Normal event listing what changed (one-line descriptions, no secrets); none when
/// nothing did.
async fn announce<K: Reconciled>(state: &State, object: &K, applied: &Applied, reason: &str) {
    if applied.actions.is_empty() {
        return;
    }
    let lines: Vec<String> = applied.actions.iter().map(ToString::to_string).collect();
    info!(kind = K::KIND, namespace = object.namespace().as_deref(), name = %object.name_any(), changes = lines.len(), "reconciled");
    state
        .publish(object, EventType::Normal, reason, lines.join("; "))
        .await;
}

/// An event note cut to 1,000 bytes (at a character boundary): the API server refuses longer
/// notes, and a long driver error would otherwise lose the whole event.
pub fn bounded_note(mut note: String) -> String {
    const MAX: usize = 1000;
    if note.len() > MAX {
        let mut end = MAX - '…'.len_utf8();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}

/// Writes `status` unless the object already has it (server-side apply, status subresource).
async fn write_status<K: Reconciled>(
    api: &Api<K>,
    object: &K,
    status: &K::Status,
) -> Result<(), Error> {
    if object.current_status() == Some(status) {
        return Ok(());
    }
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(kube_error("patch status"))?;
    Ok(())
}

/// Adds or removes dbward's finalizer (a merge patch guarded by `resourceVersion`).
async fn set_finalizer<K>(api: &Api<K>, object: &K, present: bool) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let mut finalizers: Vec<String> = object
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(FINALIZER.to_owned());
    }
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": object.resource_version(),
        }
    });
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(kube_error(if present {
        "add finalizer"
    } else {
        "remove finalizer"
    }))
}

/// What a failed reconcile leads to.
pub fn error_policy<K: Reconciled>(object: Arc<K>, error: &Error, state: Arc<State>) -> Requeue {
    let key = format!(
        "{}/{}/{}",
        K::KIND,
        object.namespace().unwrap_or_default(),
        object.name_any()
    );
    match error.retry() {
        Retry::OnChange => Requeue::await_change(),
        Retry::Slow => Requeue::requeue(SLOW_RETRY),
        Retry::Backoff => Requeue::requeue(state.backoff(&key)),
    }
}

/// `dbward controller`: runs the eight controllers until SIGTERM or Ctrl-C; serves `/metrics`,
/// `/healthz` and `/readyz` (ready once the controllers' caches synced) on `metrics_listen`
/// when given. One replica: `dbward run` elects a leader among several.
pub async fn run(
    client: Client,
    operator_namespace: &str,
    metrics_listen: Option<SocketAddr>,
) -> std::io::Result<()> {
    let state = Arc::new(State::new(client, operator_namespace, true));
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    if let Some(addr) = metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let metrics: crate::admin::Source = {
            let state = state.clone();
            Arc::new(move |text| state.render_metrics(text))
        };
        let admin = Admin::new(ready.clone(), "caches not synced yet").with_metrics(metrics);
        tokio::spawn(crate::admin::serve(listener, admin, stopped.clone()));
    }
    tokio::spawn(async move {
        if let Err(e) = crate::runtime::shutdown_signal().await {
            warn!(error = %e, "cannot wait for signals");
        }
        let _ = stop.send(true);
    });
    run_controllers(state, stopped, ready).await;
    Ok(())
}

/// Runs the eight controllers until `stop` turns true; each lets its running reconciles finish.
/// `ready` turns true once every controller's cache holds a full list.
///
/// The controllers cache their own kinds, and what their reconciles read
/// ([`super::kube_cluster::Caches`]): the Secrets dbward wrote ([`MANAGED_BY_SELECTOR`]), the
/// connector Secrets, the AdmissionPolicy. An owned Secret edited or deleted by someone else
/// triggers its owner's reconcile; a changed AdmissionPolicy triggers every object's (it may
/// now allow what it denied, or deny what it allowed).
pub async fn run_controllers(
    state: Arc<State>,
    stop: tokio::sync::watch::Receiver<bool>,
    ready: Arc<AtomicBool>,
) {
    let client = state.client();
    let stopped = || {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
    };
    let sync = Arc::new(CacheSync::new(15, ready.clone()));
    let (services, services_cache) = cached::<DatabaseService>(&client, &sync);
    let (databases, databases_cache) = cached::<Database>(&client, &sync);
    let (users, users_cache) = cached::<ServiceUser>(&client, &sync);
    let (claims, claims_cache) = cached::<DatabaseClaim>(&client, &sync);
    let (pools, pools_cache) = cached::<ConnectionPool>(&client, &sync);
    let (ops, ops_cache) = cached::<DatabaseOpsRequest>(&client, &sync);
    let (clusters, clusters_cache) = cached::<crate::api::PostgresCluster>(&client, &sync);
    let (queries, queries_cache) = cached::<DatabaseQueryResource>(&client, &sync);
    let reads = read_caches::<4>(
        &client,
        &state.ctx.operator_namespace,
        Stores {
            services: services_cache.clone(),
            users: users_cache.clone(),
            pools: pools_cache.clone(),
        },
        &sync,
        ready,
    );
    state.ctx.cluster.use_caches(Some(reads.caches.clone()));
    let [
        users_secrets,
        claims_secrets,
        pools_secrets,
        pools_user_secrets,
    ] = reads.owned;
    let policy = || each_change(reads.policy_changes.clone());
    // At most this many reconciles of one kind at a time: a restart queues every object at
    // once, and unbounded, their connections, buffers and concurrent GRANTs on one database
    // (PostgreSQL's "tuple concurrently updated") all pile up together.
    let limits = || controller::Config::default().concurrency(RECONCILE_CONCURRENCY);
    let services = Controller::for_stream(services, services_cache)
        .with_config(limits())
        .graceful_shutdown_on(stopped());
    let databases = Controller::for_stream(databases, databases_cache)
        .with_config(limits())
        .reconcile_all_on(policy())
        .graceful_shutdown_on(stopped());
    let users = Controller::for_stream(users, users_cache)
        .with_config(limits())
        .owns_stream(users_secrets)
        .reconcile_all_on(policy())
        .graceful_shutdown_on(stopped());
    let claims = Controller::for_stream(claims, claims_cache)
        .with_config(limits())
        .owns_stream(claims_secrets)
        .reconcile_all_on(policy())
        .graceful_shutdown_on(stopped());
    // ConnectionPools (reconcile::pooler_kube): each realises its service's whole pooler, and
    // is looked at again when a ServiceUser Secret of its namespace changes (its password).
    // and when a pod of its pooler changes (turns ready: the pools can be served).
    let pool_store = pools_cache.clone();
    let pod_pool_store = pools_cache.clone();
    let pools = Controller::for_stream(pools, pools_cache)
        .with_config(limits())
        .owns_stream(pools_secrets)
        .watches_stream(pools_user_secrets, move |secret| {
            super::pooler_kube::pools_to_requeue(&pool_store, &secret.metadata)
        })
        .watches_stream(reads.pooler_pods, move |pod| {
            super::pooler_kube::pools_of_pod(&pod_pool_store, &pod.metadata)
        })
        .reconcile_all_on(policy())
        .graceful_shutdown_on(stopped());
    // DatabaseOpsRequests (controller/ops_request.rs): one-shot; a waiting one looks again
    // every WAIT_RETRY, a finished one is never run again.
    let ops = Controller::for_stream(ops, ops_cache)
        .with_config(limits())
        .graceful_shutdown_on(stopped());
    // DatabaseQueryResources (controller/query_resource.rs): each polls on its own interval
    // (a requeue), at once when its spec changes, and again when the policy changes.
    let query_state = Arc::new(query_resource::QueryState {
        state: state.clone(),
        discovery: Default::default(),
    });
    let queries = Controller::for_stream(queries, queries_cache)
        .with_config(limits())
        .reconcile_all_on(policy())
        .graceful_shutdown_on(stopped());
    // PostgresClusters (controller/postgres_cluster.rs): their objects are owned by them.
    let clusters = Controller::for_stream(clusters, clusters_cache)
        .with_config(limits())
        .reconcile_all_on(policy())
        .graceful_shutdown_on(stopped());

    let services = services
        .run(
            listed_then(reconcile_service),
            |_, _: &Error, _| Requeue::requeue(SLOW_RETRY),
            state.clone(),
        )
        .for_each(|r| log_result("DatabaseService", r));
    let databases = databases
        .run(
            listed_then(reconcile::<Database>),
            error_policy::<Database>,
            state.clone(),
        )
        .for_each(|r| log_result("Database", r));
    let users = users
        .run(
            listed_then(reconcile::<ServiceUser>),
            error_policy::<ServiceUser>,
            state.clone(),
        )
        .for_each(|r| log_result("ServiceUser", r));
    let claims = claims
        .run(
            listed_then(reconcile::<DatabaseClaim>),
            error_policy::<DatabaseClaim>,
            state.clone(),
        )
        .for_each(|r| log_result("DatabaseClaim", r));
    let pools = pools
        .run(
            listed_then(reconcile::<ConnectionPool>),
            error_policy::<ConnectionPool>,
            state.clone(),
        )
        .for_each(|r| log_result("ConnectionPool", r));
    let ops = ops
        .run(
            listed_then(reconcile_ops_request),
            ops_request_error_policy,
            state.clone(),
        )
        .for_each(|r| log_result("DatabaseOpsRequest", r));
    let clusters = clusters
        .run(
            listed_then(reconcile_postgres_cluster),
            postgres_cluster_error_policy,
            state.clone(),
        )
        .for_each(|r| log_result("PostgresCluster", r));
    let queries = queries
        .run(
            query_resource::reconcile_query_resource,
            query_resource::query_resource_error_policy,
            query_state,
        )
        .for_each(|r| log_result("DatabaseQueryResource", r));
    info!("controllers started");
    let fill = async {
        tokio::select! {
            () = reads.fill => {}
            () = stopped() => {}
        }
    };
    tokio::join!(
        services, databases, users, claims, pools, ops, clusters, queries, fill
    );
    state.ctx.cluster.use_caches(None);
    info!("controllers stopped");
}

/// How long a reconcile waits for the read caches after the controllers start.
const CACHE_WAIT: Duration = Duration::from_secs(30);

/// A reconcile under way.
type Reconciling = std::pin::Pin<Box<dyn Future<Output = Result<Requeue, Error>> + Send>>;

/// `reconcile`, once the read caches have listed (or [`CACHE_WAIT`] passed).
fn listed_then<K, F>(
    reconcile: impl Fn(Arc<K>, Arc<State>) -> F + Send + Sync + Clone + 'static,
) -> impl Fn(Arc<K>, Arc<State>) -> Reconciling
where
    K: Send + Sync + 'static,
    F: Future<Output = Result<Requeue, Error>> + Send + 'static,
{
    move |object, state| {
        let reconcile = reconcile.clone();
        Box::pin(async move {
            state.ctx.cluster.caches_listed(CACHE_WAIT).await;
            reconcile(object, state).await
        })
    }
}

async fn log_result<T, E: std::fmt::Display>(kind: &'static str, result: Result<T, E>) {
    if let Err(e) = result {
        warn!(kind, error = %e, "controller");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_are_cut_at_a_character_boundary() {
        assert_eq!(bounded_note("short".into()), "short");
        let long = "é".repeat(800);
        let note = bounded_note(long);
        assert!(note.len() <= 1000, "{}", note.len());
        assert!(note.ends_with('…'));
        assert!(note.starts_with("éé"));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        assert_eq!(backoff_delay(1, 1.0), BACKOFF_MIN);
        assert_eq!(backoff_delay(2, 1.0), BACKOFF_MIN * 2);
        assert_eq!(backoff_delay(30, 1.0), BACKOFF_MAX);
        assert_eq!(backoff_delay(1, 0.5), BACKOFF_MIN / 2);
        assert!(jitter() >= 0.5 && jitter() <= 1.5);
    }
}
