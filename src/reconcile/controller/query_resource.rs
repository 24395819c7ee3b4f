//! The DatabaseQueryResource controller: polls each CR every `pollInterval` (and at once when
//! its spec changes), after the admission rules pass again on it; writes its status (only
//! when it changed) and an event when children changed or rows started failing; with the
//! finalizer, deleting the CR first deletes every child found by its UID label.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::warn;

use crate::api::database_query_resource::{DatabaseQueryResourceStatus, FINALIZER};
use crate::api::{AdmissionPolicySpec, DatabaseQueryResource};
use crate::reconcile::kube_cluster::kube_error;
use crate::reconcile::query_resource::connection;
use crate::reconcile::query_resource::kube::{Discovery, delete_all};
use crate::reconcile::query_resource::poll::{PollContext, Polled, children_of, poll};
use crate::reconcile::secret::decoded_data;
use crate::reconcile::status::{Readiness, now, with_ready};
use crate::reconcile::{Cluster, Error, FIELD_MANAGER, guard};

use super::State;

const KIND: &str = "DatabaseQueryResource";
/// Used when `pollInterval` does not parse (admission refuses that; an object stored
/// without the webhook may still have it).
const FALLBACK_INTERVAL: Duration = Duration::from_secs(60);

/// The controller's context: the shared state and its discovery answers.
pub struct QueryState {
    /// What every controller shares.
    pub state: Arc<State>,
    /// Kinds the API server serves.
    pub discovery: Discovery,
}

fn interval(cr: &DatabaseQueryResource) -> Duration {
    crate::duration::seconds(&cr.spec.poll_interval)
        .filter(|s| *s > 0.0)
        .map_or(FALLBACK_INTERVAL, Duration::from_secs_f64)
}

/// How long until the CR's next poll is due; `None` when it is due now (never polled, or
/// its spec changed since).
pub fn not_due_for(cr: &DatabaseQueryResource, now: &jiff::Timestamp) -> Option<Duration> {
    let status = cr.status.as_ref()?;
    if status.observed_generation != cr.metadata.generation {
        return None;
    }
    let last = status.last_poll_time.as_ref()?;
    let since = now.duration_since(last.0);
    let since = Duration::try_from(since).unwrap_or_default();
    interval(cr).checked_sub(since).filter(|d| !d.is_zero())
}

/// One reconcile.
pub async fn reconcile_query_resource(
    cr: Arc<DatabaseQueryResource>,
    qs: Arc<QueryState>,
) -> Result<Requeue, Error> {
    let state = &qs.state;
    if cr.metadata.deletion_timestamp.is_some() {
        let namespace = cr.namespace().unwrap_or_default();
        let api: Api<DatabaseQueryResource> = Api::namespaced(state.client(), &namespace);
        return finalize(&qs, &api, &cr).await;
    }
    if let Some(wait) = not_due_for(&cr, &jiff::Timestamp::now()) {
        return Ok(Requeue::requeue(wait));
    }
    let policy = state.ctx.cluster.get_policy().await?;
    poll_and_record(&qs, &cr, &policy).await?;
    state.metrics.count(KIND, "ok");
    Ok(Requeue::requeue(interval(&cr)))
}

/// Polls `cr` now under `policy` (after the admission rules pass again on it) and records
/// the result: status, and an event when something changed. Returns the status written.
pub async fn poll_and_record(
    qs: &QueryState,
    cr: &DatabaseQueryResource,
    policy: &AdmissionPolicySpec,
) -> Result<DatabaseQueryResourceStatus, Error> {
    let state = &qs.state;
    let namespace = cr.namespace().unwrap_or_default();
    let api: Api<DatabaseQueryResource> = Api::namespaced(state.client(), &namespace);
    let polled = match guard::admit_alone(&state.ctx, policy, cr) {
        Err(Error::Denied { message }) => refused(cr, "Denied", message),
        Err(e) => return Err(e),
        Ok(()) => {
            let target = target(state, cr, policy).await?;
            let client = state.client();
            let cx = PollContext {
                client: &client,
                discovery: &qs.discovery,
                policy,
                target,
                now: now(),
            };
            poll(&cx, cr).await?
        }
    };
    record(state, &api, cr, &polled).await?;
    Ok(polled.status)
}

/// A CR the rules refuse: nothing is polled, its status says why.
fn refused(cr: &DatabaseQueryResource, reason: &str, message: String) -> Polled {
    let mut status = cr.status.clone().unwrap_or_default();
    status.conditions = with_ready(
        &status.conditions,
        &Readiness::not_ready(reason, message),
        cr.metadata.generation,
        &now(),
    );
    status.observed_generation = cr.metadata.generation;
    status.last_poll_time = Some(now());
    Polled {
        status,
        changed: false,
    }
}

/// The database the CR's Secret names, or why it cannot be used (the CR's own namespace
/// unless the policy allows others: the rules ran again just before).
async fn target(
    state: &State,
    cr: &DatabaseQueryResource,
    policy: &AdmissionPolicySpec,
) -> Result<Result<crate::sql::query::QueryTarget, (&'static str, String)>, Error> {
    let own = cr.namespace().unwrap_or_default();
    let reference = &cr.spec.database.connection_secret_ref;
    let ns = connection::secret_namespace(reference, &own);
    if ns != own && !policy.limits.cross_namespace_allowed {
        return Ok(Err((
            "Denied",
            format!(
                "spec.database.connectionSecretRef.namespace: Forbidden: {ns:?} is another namespace (the AdmissionPolicy's limits.crossNamespaceAllowed is false)"
            ),
        )));
    }
    let Some(secret) = state.ctx.cluster.get_secret(ns, &reference.name).await? else {
        return Ok(Err((
            "ConnectionSecretNotFound",
            format!(
                "Secret {ns}/{} not found (spec.database.connectionSecretRef)",
                reference.name
            ),
        )));
    };
    Ok(
        connection::target(&cr.spec.database, &decoded_data(&secret))
            .map_err(|message| ("ConnectionSecretInvalid", message)),
    )
}

/// Writes the status, and an event when children changed or `Ready` turned or stayed
/// `False` with another message.
async fn record(
    state: &State,
    api: &Api<DatabaseQueryResource>,
    cr: &DatabaseQueryResource,
    polled: &Polled,
) -> Result<(), Error> {
    let before = cr.status.clone().unwrap_or_default();
    let after = &polled.status;
    // Written every poll: its poll time is what tells the next reconcile when to poll.
    let body = json!({
        "apiVersion": "dbward.dev/v1alpha1",
        "kind": KIND,
        "status": after,
    });
    api.patch_status(
        &cr.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(kube_error("patch status"))?;
    let ready = |s: &DatabaseQueryResourceStatus| {
        s.conditions
            .first()
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let summary = format!(
        "{} row(s): {} applied, {} unchanged, {} failed, {} pruned",
        after.rows, after.applied, after.unchanged, after.failed, after.pruned
    );
    if ready(&before) != ready(after)
        && after
            .conditions
            .first()
            .is_some_and(|c| c.status == "False")
    {
        let c = &after.conditions[0];
        state
            .publish(cr, EventType::Warning, &c.reason, c.message.clone())
            .await;
    } else if polled.changed {
        state
            .publish(cr, EventType::Normal, "Synced", summary)
            .await;
    }
    Ok(())
}

/// Deleting a CR with the finalizer: every child found by its UID label is deleted first,
/// then the finalizer is removed. Without it, nothing (owned children go with the garbage
/// collector).
async fn finalize(
    qs: &QueryState,
    api: &Api<DatabaseQueryResource>,
    cr: &DatabaseQueryResource,
) -> Result<Requeue, Error> {
    if !cr.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Requeue::await_change());
    }
    let state = &qs.state;
    let client = state.client();
    let policy = state.ctx.cluster.get_policy().await?;
    let (served, children) = children_of(&client, &qs.discovery, cr, &policy).await?;
    let failed = delete_all(&client, &served, &children).await;
    if let Some((key, message)) = failed.first() {
        warn!(kind = KIND, name = %cr.name_any(), child = %key.display(), error = %message, "cannot delete a child");
        return Err(Error::Invalid {
            message: format!(
                "{} child(ren) could not be deleted, first {} {}: {message}",
                failed.len(),
                key.kind,
                key.display()
            ),
        });
    }
    let finalizers: Vec<String> = cr
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"finalizers": finalizers,
                                    "resourceVersion": cr.resource_version()}});
    api.patch(
        &cr.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(kube_error("remove finalizer"))?;
    state
        .publish(
            cr,
            EventType::Normal,
            "ChildrenDeleted",
            format!("{} child(ren) deleted", children.len()),
        )
        .await;
    Ok(Requeue::await_change())
}

/// A failed reconcile (the API server, a read that failed): back off with jitter.
pub fn query_resource_error_policy(
    cr: Arc<DatabaseQueryResource>,
    error: &Error,
    qs: Arc<QueryState>,
) -> Requeue {
    let key = format!(
        "{KIND}/{}/{}",
        cr.namespace().unwrap_or_default(),
        cr.name_any()
    );
    qs.state.metrics.count(KIND, error.category());
    Requeue::requeue(qs.state.backoff(&key).min(interval(&cr)))
}
