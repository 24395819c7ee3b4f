//! One poll of a DatabaseQueryResource: query → render → place → observe → plan → apply,
//! status update queries, prune; the result is the CR's next status. Nothing is written to
//! Kubernetes before the query has returned every row and every read of the children has
//! succeeded (a failed read fails the poll); a poll that fails before that changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::api::database_query_resource::DatabaseQueryResourceStatus;
use crate::api::{AdmissionPolicySpec, DatabaseQueryResource};
use crate::query_template::object::{ChildRules, ObjectTemplate};
use crate::query_template::status_query::StatusQuery;
use crate::reconcile::Error;
use crate::reconcile::status::{Readiness, with_ready};
use crate::sql::query::{QueryError, QueryTarget, Row, Session};

use super::kube::{self as children, Discovery, Kinds, Served};
use super::plan::{self, ChildKey, Owner, Phase, Plan, PruneOptions, RowFailure};

/// How often every child is applied whatever its hash says, repairing edits made by hand.
pub const FULL_APPLY_EVERY: Duration = Duration::from_secs(3600);

/// What a poll needs besides the CR.
pub struct PollContext<'a> {
    /// The API server.
    pub client: &'a Client,
    /// Discovery answers.
    pub discovery: &'a Discovery,
    /// The AdmissionPolicy in force.
    pub policy: &'a AdmissionPolicySpec,
    /// The database, from the connection Secret (or why it cannot be used).
    pub target: Result<QueryTarget, (&'static str, String)>,
    /// Now.
    pub now: Time,
}

/// What a poll did, for the status and an event.
#[derive(Debug, Clone)]
pub struct Polled {
    /// The CR's next status.
    pub status: DatabaseQueryResourceStatus,
    /// Whether anything changed on the API server (an event is worth it).
    pub changed: bool,
}

/// `"{apiVersion}/{kind}"`, as `status.childKinds` lists kinds.
fn kind_entry(api_version: &str, kind: &str) -> String {
    format!("{api_version}/{kind}")
}

fn parse_kind_entry(entry: &str) -> Option<(String, String)> {
    let (api_version, kind) = entry.rsplit_once('/')?;
    Some((api_version.to_owned(), kind.to_owned()))
}

/// The status of a poll that stopped before touching anything: counts kept from the last
/// poll, `Ready=False` with `reason`.
fn stopped(cr: &DatabaseQueryResource, now: &Time, reason: &str, message: String) -> Polled {
    let mut status = cr.status.clone().unwrap_or_default();
    status.conditions = with_ready(
        &status.conditions,
        &Readiness::not_ready(reason, message),
        cr.metadata.generation,
        now,
    );
    status.observed_generation = cr.metadata.generation;
    status.last_poll_time = Some(now.clone());
    Polled {
        status,
        changed: false,
    }
}

/// The owner the children name.
pub fn owner_of(cr: &DatabaseQueryResource) -> Owner {
    Owner {
        name: cr.name_any(),
        namespace: cr.namespace().unwrap_or_default(),
        uid: cr.uid().unwrap_or_default(),
        owned: cr.spec.owned,
    }
}

/// The CR's metadata as templates see it: name, namespace, uid, labels, annotations.
pub fn template_metadata(cr: &DatabaseQueryResource) -> Value {
    serde_json::json!({
        "name": cr.name_any(),
        "namespace": cr.namespace(),
        "uid": cr.uid(),
        "labels": cr.labels(),
        "annotations": cr.annotations(),
        "generation": cr.metadata.generation,
    })
}

/// Runs the query; its error says why nothing was applied.
pub async fn fetch(
    target: &QueryTarget,
    query: &str,
    policy: &AdmissionPolicySpec,
) -> Result<(Session, Vec<Row>), QueryError> {
    let timeout = crate::duration::seconds(&policy.limits.query_timeout)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64);
    let max_rows = usize::try_from(policy.limits.max_query_rows).unwrap_or(usize::MAX);
    let mut session = Session::open(target).await?;
    match session.fetch(query, max_rows, timeout).await {
        Ok(rows) => Ok((session, rows)),
        Err(e) => {
            session.close().await;
            Err(e)
        }
    }
}

/// One poll.
pub async fn poll(cx: &PollContext<'_>, cr: &DatabaseQueryResource) -> Result<Polled, Error> {
    let now = &cx.now;
    let target = match &cx.target {
        Ok(target) => target,
        Err((reason, message)) => return Ok(stopped(cr, now, reason, message.clone())),
    };
    let template = match ObjectTemplate::compile(&cr.spec.template) {
        Ok(t) => t,
        Err(e) => {
            return Ok(stopped(
                cr,
                now,
                "InvalidTemplate",
                format!("spec.template: {e}"),
            ));
        }
    };
    let status_query = match &cr.spec.status_update_query_template {
        Some(source) => match StatusQuery::compile(source, cr.spec.database.engine) {
            Ok(q) => Some(q),
            Err(e) => {
                return Ok(stopped(
                    cr,
                    now,
                    "InvalidTemplate",
                    format!("spec.statusUpdateQueryTemplate: {e}"),
                ));
            }
        },
        None => None,
    };
    let (mut session, rows) = match fetch(target, &cr.spec.query, cx.policy).await {
        Ok(fetched) => fetched,
        Err(e @ QueryError::TooManyRows { .. }) => {
            return Ok(stopped(cr, now, "TooManyRows", e.to_string()));
        }
        Err(e @ QueryError::Connect { .. }) => {
            return Ok(stopped(cr, now, "DatabaseUnreachable", e.to_string()));
        }
        Err(e) => return Ok(stopped(cr, now, "QueryFailed", e.to_string())),
    };
    let result = apply_rows(
        cx,
        cr,
        &template,
        &rows,
        status_query.as_ref(),
        &mut session,
    )
    .await;
    session.close().await;
    result
}

/// Everything after the query: render, observe, plan, act, and the status of it.
async fn apply_rows(
    cx: &PollContext<'_>,
    cr: &DatabaseQueryResource,
    template: &ObjectTemplate,
    rows: &[Row],
    status_query: Option<&StatusQuery>,
    session: &mut Session,
) -> Result<Polled, Error> {
    let owner = owner_of(cr);
    let limits = &cx.policy.limits;
    let rules = ChildRules {
        namespace: &owner.namespace,
        allowed_kinds: &limits.allowed_query_resource_kinds,
        cross_namespace_allowed: limits.cross_namespace_allowed,
    };
    let rendered = plan::render_rows(rows, template, &template_metadata(cr), &rules);

    // Discovery of every kind rendered now or made before (prune must find those too).
    let previous = cr.status.clone().unwrap_or_default();
    let mut wanted_kinds: BTreeSet<(String, String)> = previous
        .child_kinds
        .iter()
        .filter_map(|e| parse_kind_entry(e))
        .collect();
    for child in rendered.iter().flatten() {
        wanted_kinds.insert((child.api_version.clone(), child.kind.clone()));
    }
    let mut kinds: Kinds = BTreeMap::new();
    for (api_version, kind) in wanted_kinds {
        let served = cx.discovery.served(cx.client, &api_version, &kind).await?;
        kinds.insert((api_version, kind), served);
    }
    let (desired, failures) = plan::place(
        rendered,
        |api_version, kind| children::scope_of(&kinds, api_version, kind),
        &owner,
    );
    let anywhere = limits.cross_namespace_allowed;
    let observed = children::observe(
        cx.client,
        &kinds,
        &owner.uid,
        &owner.namespace,
        anywhere,
        &desired,
    )
    .await?;
    let full_pass = previous
        .last_full_apply_time
        .as_ref()
        .is_none_or(|t| elapsed(t, &cx.now) >= FULL_APPLY_EVERY);
    let options = PruneOptions {
        prune: cr.spec.prune,
        allow_empty: cr.spec.allow_empty_prune,
        max: usize::try_from(limits.max_query_prunes).unwrap_or(usize::MAX),
    };
    let planned = plan::plan(rows.len(), desired, failures, &observed, full_pass, options);
    let served = children::by_qualified_kind(&kinds);
    act(
        cx,
        cr,
        planned,
        &served,
        &kinds,
        full_pass,
        rows.len(),
        status_query,
        session,
    )
    .await
}

fn elapsed(then: &Time, now: &Time) -> Duration {
    let seconds = now.0.as_second() - then.0.as_second();
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// Applies, runs the status queries, prunes; returns the status saying what happened.
#[allow(clippy::too_many_arguments)]
async fn act(
    cx: &PollContext<'_>,
    cr: &DatabaseQueryResource,
    planned: Plan,
    served: &BTreeMap<String, Served>,
    kinds: &Kinds,
    full_pass: bool,
    rows: usize,
    status_query: Option<&StatusQuery>,
    session: &mut Session,
) -> Result<Polled, Error> {
    let Plan {
        apply,
        refresh,
        unchanged,
        mut failures,
        prune,
        mut prune_held,
    } = planned;
    let everything: Vec<_> = apply.into_iter().chain(refresh).collect();
    let results = children::apply_all(cx.client, served, &everything).await;
    let mut written = 0usize;
    for (desired, result) in results {
        match result {
            Err(message) => failures.push(RowFailure {
                row: desired.row,
                key: Some(desired.key.clone()),
                phase: Phase::Apply,
                message,
            }),
            // A refreshed child was unchanged: its status query already ran.
            Ok(_) if desired.refresh => {}
            Ok(stored) => {
                written += 1;
                if let Some(query) = status_query
                    && let Err(message) = status_update(query, &stored, session).await
                {
                    failures.push(RowFailure {
                        row: desired.row,
                        key: Some(desired.key.clone()),
                        phase: Phase::StatusUpdate,
                        message,
                    });
                }
            }
        }
    }
    let delete_failures = children::delete_all(cx.client, served, &prune).await;
    let pruned = prune.len() - delete_failures.len();
    if !delete_failures.is_empty() {
        let (key, message) = &delete_failures[0];
        prune_held = Some(format!(
            "{} child(ren) could not be deleted, first {}: {message}",
            delete_failures.len(),
            key.display()
        ));
    }
    failures.sort_by_key(|f| f.row);
    let status = next_status(
        cr, cx, rows, written, unchanged, &failures, pruned, prune_held, kinds, full_pass,
    );
    Ok(Polled {
        status,
        changed: written > 0 || pruned > 0,
    })
}

/// Runs the status update query for one stored child.
async fn status_update(
    query: &StatusQuery,
    stored: &kube::api::DynamicObject,
    session: &mut Session,
) -> Result<(), String> {
    let resource = serde_json::to_value(stored).map_err(|e| e.to_string())?;
    let params = query.bind(&resource)?;
    session
        .execute(query.sql(), &params)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[allow(clippy::too_many_arguments)]
fn next_status(
    cr: &DatabaseQueryResource,
    cx: &PollContext<'_>,
    rows: usize,
    applied: usize,
    unchanged: usize,
    failures: &[RowFailure],
    pruned: usize,
    prune_held: Option<String>,
    kinds: &Kinds,
    full_pass: bool,
) -> DatabaseQueryResourceStatus {
    let previous = cr.status.clone().unwrap_or_default();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let readiness = if failures.is_empty() {
        Readiness {
            ready: true,
            reason: "Synced".to_owned(),
            message: format!(
                "{rows} row(s): {applied} applied, {unchanged} unchanged, {pruned} pruned"
            ),
        }
    } else {
        let first = &failures[0];
        Readiness::not_ready(
            "RowsFailed",
            format!(
                "{} of {rows} row(s) failed; row {} ({}): {}",
                failures.len(),
                first.row,
                first.phase.as_str(),
                first.message
            ),
        )
    };
    let child_kinds: BTreeSet<String> = kinds
        .iter()
        .filter(|(_, served)| served.is_some())
        .map(|((v, k), _)| kind_entry(v, k))
        .collect();
    DatabaseQueryResourceStatus {
        conditions: with_ready(
            &previous.conditions,
            &readiness,
            cr.metadata.generation,
            &cx.now,
        ),
        observed_generation: cr.metadata.generation,
        last_poll_time: Some(cx.now.clone()),
        last_full_apply_time: if full_pass {
            Some(cx.now.clone())
        } else {
            previous.last_full_apply_time
        },
        rows: count(rows),
        applied: count(applied),
        unchanged: count(unchanged),
        failed: count(failures.len()),
        pruned: count(pruned),
        prune_held,
        failed_rows: plan::failed_rows(failures),
        child_kinds: child_kinds.into_iter().collect(),
    }
}

/// Every child of `cr` of the kinds it made or the policy allows, anywhere the policy allows
/// (for the finalizer).
pub async fn children_of(
    client: &Client,
    discovery: &Discovery,
    cr: &DatabaseQueryResource,
    policy: &AdmissionPolicySpec,
) -> Result<(BTreeMap<String, Served>, Vec<ChildKey>), Error> {
    let owner = owner_of(cr);
    let mut entries: BTreeSet<(String, String)> = cr
        .status
        .iter()
        .flat_map(|s| s.child_kinds.iter())
        .filter_map(|e| parse_kind_entry(e))
        .collect();
    for allowed in &policy.limits.allowed_query_resource_kinds {
        if let Some(entry) = allowed_kind_entry(client, allowed).await? {
            entries.insert(entry);
        }
    }
    let mut kinds: Kinds = BTreeMap::new();
    for (api_version, kind) in entries {
        let served = discovery.served(client, &api_version, &kind).await?;
        kinds.insert((api_version, kind), served);
    }
    let observed =
        children::observe(client, &kinds, &owner.uid, &owner.namespace, true, &[]).await?;
    let served = children::by_qualified_kind(&kinds);
    Ok((served, observed.ours.into_keys().collect()))
}

/// An allow-list entry (`ConfigMap`, `apps/Deployment`) as `(apiVersion, kind)`: the core
/// group's `v1`, another group's preferred version (discovery; `None` when not served).
async fn allowed_kind_entry(
    client: &Client,
    allowed: &str,
) -> Result<Option<(String, String)>, Error> {
    let Some((group, kind)) = allowed.rsplit_once('/') else {
        return Ok(Some(("v1".to_owned(), allowed.to_owned())));
    };
    match kube::discovery::group(client, group).await {
        Ok(found) => Ok(found
            .recommended_kind(kind)
            .map(|(resource, _)| (resource.api_version, kind.to_owned()))),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(kube::Error::Discovery(_)) => Ok(None),
        Err(e) => Err(crate::reconcile::kube_cluster::kube_error(
            "discover an allowed kind",
        )(e)),
    }
}
