//! The PostgresCluster controller (reconcile::postgres_cluster): admission again (an object that
//! reached the API server without the webhook is refused), build, observe, plan, act, status.
//! Its objects are owned by the cluster, so deleting it lets the garbage collector remove them;
//! the PVCs are the StatefulSet's and stay (the data outlives the object).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::admission::{self, Operation, Request, Snapshot};
use crate::api::postgres_cluster::PostgresClusterStatus;
use crate::api::{CommonStatus, PostgresCluster};
use crate::reconcile::kube_cluster::kube_error;
use crate::reconcile::postgres_cluster::plan::{self, Health};
use crate::reconcile::postgres_cluster::{
    SUPERUSER, kube as cluster_kube, objects, sql as cluster_sql,
};
use crate::reconcile::secret::generate_password;
use crate::reconcile::status::{READY, Readiness, now};
use crate::reconcile::{Cluster, Error, FIELD_MANAGER, Retry};
use crate::sql::{Password, Server};

use super::{RESYNC, SLOW_RETRY, State};

const KIND: &str = "PostgresCluster";
/// How soon a cluster whose pods are not all ready is looked at again (pods are not watched).
pub const STARTING_RETRY: Duration = Duration::from_secs(30);

/// One reconcile of a PostgresCluster.
pub async fn reconcile_postgres_cluster(
    cluster: Arc<PostgresCluster>,
    state: Arc<State>,
) -> Result<Requeue, Error> {
    if cluster.metadata.deletion_timestamp.is_some() {
        return Ok(Requeue::await_change());
    }
    match converge(&cluster, &state).await {
        Ok(health) => {
            state.metrics.count(KIND, "ok");
            state.succeeded(&key(&cluster));
            Ok(Requeue::requeue(if health.phase == "Running" {
                RESYNC
            } else {
                STARTING_RETRY
            }))
        }
        Err(e) => {
            warn!(kind = KIND, namespace = cluster.namespace().as_deref(), name = %cluster.name_any(), category = e.category(), error = %e, "reconcile failed");
            state.metrics.count(KIND, e.category());
            let failed = Readiness::failed_publicly(&e);
            let status = next_status(&cluster, &failed, None, &now());
            if let Err(write) = write_status(&state, &cluster, &status).await {
                warn!(error = %write, "cannot write the status");
            }
            state
                .publish(
                    cluster.as_ref(),
                    EventType::Warning,
                    e.reason(),
                    e.public_message(),
                )
                .await;
            Err(e)
        }
    }
}

/// What a failed reconcile leads to.
pub fn postgres_cluster_error_policy(
    cluster: Arc<PostgresCluster>,
    error: &Error,
    state: Arc<State>,
) -> Requeue {
    match error.retry() {
        Retry::OnChange => Requeue::await_change(),
        Retry::Slow => Requeue::requeue(SLOW_RETRY),
        Retry::Backoff => Requeue::requeue(state.backoff(&key(&cluster))),
    }
}

fn key(cluster: &PostgresCluster) -> String {
    format!(
        "{KIND}/{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    )
}

/// Admit, build, observe, plan, act, write the status: the cluster's health.
async fn converge(cluster: &PostgresCluster, state: &State) -> Result<Health, Error> {
    let client = state.ctx.cluster.client().clone();
    let policy = state.ctx.cluster.get_policy().await?;
    admit(cluster, &state.ctx.operator_namespace, &policy)?;
    let built =
        objects::build(cluster, &policy.limits).map_err(|message| Error::Invalid { message })?;
    let (observed, read_error) = cluster_kube::observe(&client, cluster).await;
    if let Some(source) = read_error {
        // Nothing is written from a partial read (the plan would say the same).
        return Err(Error::Kube {
            verb: "observe the PostgresCluster's objects",
            source: Box::new(source),
        });
    }
    let plan = plan::plan(cluster, &built, &observed, || {
        generate_password().map_err(|e| format!("cannot generate a password: {e}"))
    })
    .map_err(|message| Error::Invalid { message })?;
    let namespace = cluster.namespace().unwrap_or_default();
    let notes = cluster_kube::act(&client, &namespace, &plan.changes).await?;
    for note in &notes {
        warn!(kind = KIND, namespace, name = %cluster.name_any(), "{note}");
        state
            .publish(
                cluster,
                EventType::Warning,
                "PodDisruptionBudgetUnavailable",
                note.clone(),
            )
            .await;
    }
    if !plan.changes.is_empty() {
        let lines: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
        info!(kind = KIND, namespace, name = %cluster.name_any(), changes = lines.len(), "reconciled");
        state
            .publish(cluster, EventType::Normal, "Applied", lines.join("; "))
            .await;
    }
    if !built.raised.is_empty() && !raised_before(cluster) {
        state
            .publish(
                cluster,
                EventType::Warning,
                "ResourcesRaised",
                built.raised.join("; "),
            )
            .await;
    }
    let health = plan::health(cluster, &observed.pods);
    if health.primary_available {
        roles_and_databases(state, cluster, &plan.passwords).await?;
    }
    let readiness = readiness(&health, &built.raised);
    let status = next_status(cluster, &readiness, Some(&health), &now());
    write_status(state, cluster, &status).await?;
    Ok(health)
}

/// The manifest's users and databases on the primary (once it is ready).
async fn roles_and_databases(
    state: &State,
    cluster: &PostgresCluster,
    passwords: &std::collections::BTreeMap<String, Password>,
) -> Result<(), Error> {
    let superuser = passwords
        .get(SUPERUSER)
        .map(Password::expose)
        .unwrap_or_default();
    let info = state
        .primary_override
        .clone()
        .unwrap_or_else(|| cluster_sql::primary_connection(cluster, superuser));
    let server = Server::new(&info)?;
    let (roles, databases) = cluster_sql::desired(cluster, passwords);
    let executed = cluster_sql::converge(&server, &roles, &databases).await?;
    if !executed.is_empty() {
        let lines: Vec<String> = executed.iter().map(ToString::to_string).collect();
        state
            .publish(cluster, EventType::Normal, "Applied", lines.join("; "))
            .await;
    }
    Ok(())
}

/// Whether the status already says the resources were raised (the event is sent once).
fn raised_before(cluster: &PostgresCluster) -> bool {
    cluster
        .status
        .as_ref()
        .and_then(|s| s.common.conditions.iter().find(|c| c.type_ == READY))
        .is_some_and(|c| c.message.contains("the StatefulSet gets"))
}

/// The admission rules, as the webhook would run them on the cluster's creation.
fn admit(
    cluster: &PostgresCluster,
    operator_namespace: &str,
    policy: &crate::api::AdmissionPolicySpec,
) -> Result<(), Error> {
    let mut snapshot = Snapshot::new(operator_namespace, true);
    snapshot.policy = policy.clone();
    let value = serde_json::to_value(cluster).unwrap_or(Value::Null);
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let verdict = admission::admit(
        &Request {
            operation: Operation::Create,
            kind: KIND,
            namespace: Some(&namespace),
            name: &name,
            object: Some(&value),
            old_object: None,
            subresource: None,
        },
        &snapshot,
    );
    if verdict.allowed {
        Ok(())
    } else {
        Err(Error::Denied {
            message: verdict.message(KIND, &name),
        })
    }
}

/// `Ready` from the cluster's health (resources raised are said in its message).
fn readiness(health: &Health, raised: &[String]) -> Readiness {
    let note = if raised.is_empty() {
        String::new()
    } else {
        format!("; {}", raised.join("; "))
    };
    match health.phase {
        "Running" | "Stopped" => Readiness::ready(format!(
            "{} ({} pods ready){note}",
            health.phase, health.ready_instances
        )),
        phase => Readiness::not_ready(
            phase,
            format!(
                "{} pods ready; the primary is {}{note}",
                health.ready_instances,
                if health.primary_available {
                    "available"
                } else {
                    "not available yet"
                }
            ),
        ),
    }
}

/// The status after a pass: `Ready` (and, with the health, `PrimaryAvailable`,
/// `ReplicasReady`, the phase, ready pods and the endpoint). Unchanged conditions keep their
/// transition time.
fn next_status(
    cluster: &PostgresCluster,
    ready: &Readiness,
    health: Option<&Health>,
    at: &Time,
) -> PostgresClusterStatus {
    let old = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let mut conditions = old.common.conditions.clone();
    set(
        &mut conditions,
        READY,
        ready.ready,
        &ready.reason,
        &ready.message,
        generation,
        at,
    );
    if let Some(h) = health {
        let (reason, message) = if h.primary_available {
            ("PrimaryReady", format!("{} answers", h.primary_endpoint))
        } else {
            (
                "PrimaryNotReady",
                "the primary's pod (ordinal 0) is not ready".to_owned(),
            )
        };
        set(
            &mut conditions,
            "PrimaryAvailable",
            h.primary_available,
            reason,
            &message,
            generation,
            at,
        );
        let replicas = (cluster.spec.number_of_instances - 1).max(0);
        let (reason, message) = if h.replicas_ready {
            ("ReplicasReady", format!("{replicas} replicas ready"))
        } else {
            (
                "ReplicasNotReady",
                format!(
                    "{} of {replicas} replicas ready",
                    h.ready_instances - i32::from(h.primary_available)
                ),
            )
        };
        set(
            &mut conditions,
            "ReplicasReady",
            h.replicas_ready,
            reason,
            &message,
            generation,
            at,
        );
    }
    PostgresClusterStatus {
        common: CommonStatus {
            conditions,
            observed_generation: generation,
        },
        phase: Some(health.map_or("Failed", |h| h.phase).to_owned()),
        ready_instances: health.map(|h| h.ready_instances).or(old.ready_instances),
        primary_endpoint: health
            .map(|h| h.primary_endpoint.clone())
            .or(old.primary_endpoint),
    }
}

/// Sets the condition `type_`, keeping its transition time unless its status flips.
fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    at: &Time,
) {
    let status = if status { "True" } else { "False" };
    let transition = match conditions.iter().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => at.clone(),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: transition,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => *c = condition,
        None => conditions.push(condition),
    }
}

/// Writes `status` unless the cluster already has it.
async fn write_status(
    state: &State,
    cluster: &PostgresCluster,
    status: &PostgresClusterStatus,
) -> Result<(), Error> {
    if cluster.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<PostgresCluster> = Api::namespaced(
        state.ctx.cluster.client().clone(),
        &cluster.namespace().unwrap_or_default(),
    );
    let body = json!({
        "apiVersion": "dbward.dev/v1alpha1",
        "kind": KIND,
        "status": status,
    });
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(kube_error("patch status"))?;
    Ok(())
}
