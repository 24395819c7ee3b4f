//! The DatabaseOpsRequest controller: observes a request's target and the other requests on
//! it, asks the step machine ([`crate::reconcile::ops_request_plan`]) for the next transition,
//! runs it and records it in `status` — one status write and one event per transition. A
//! reconcile carries on with the object the status write returned until the request waits or
//! is finished, so a stale cache never makes it run a step twice within one reconcile, and
//! every step is idempotent for the reconcile that comes after a restart.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::{info, warn};

use crate::api::database_ops_request::{DatabaseOpsRequestStatus, OpsType};
use crate::api::{ConnectionPool, DatabaseOpsRequest, DatabaseService, ServiceUser};
use crate::reconcile::kube_cluster::kube_error;
use crate::reconcile::ops_request::{self, StepError};
use crate::reconcile::ops_request_plan::{self as machine, Next, Observed, Queued, Record};
use crate::reconcile::status::now;
use crate::reconcile::{Cluster, Error, FIELD_MANAGER, Retry};
use crate::reconcile::{cert_manager, ops_request_tls, pooler_kube, pooler_tls};

use super::State;

/// How often a waiting request looks again (the request it waits for, its target's `Ready`).
pub const WAIT_RETRY: Duration = Duration::from_secs(5);
/// How often a step whose fix lies outside the request (a connector, a denied user) is tried
/// again; sooner than the other kinds' five minutes because a step has a timeout.
pub const SLOW_STEP_RETRY: Duration = Duration::from_secs(60);
/// At most this many transitions in one reconcile (a request has a handful).
const MAX_TRANSITIONS: usize = 10;

const KIND: &str = "DatabaseOpsRequest";

/// One reconcile: transitions until the request waits, is finished, or a step must be retried.
pub async fn reconcile_ops_request(
    request: Arc<DatabaseOpsRequest>,
    state: Arc<State>,
) -> Result<Requeue, Error> {
    let mut request = request.as_ref().clone();
    for _ in 0..MAX_TRANSITIONS {
        match advance(&state, &request).await {
            Ok(Advanced::Next(updated)) => request = *updated,
            Ok(Advanced::Stop(requeue)) => {
                state.metrics.count(KIND, "ok");
                state.succeeded(&format!(
                    "{KIND}/{}/{}",
                    request.namespace().unwrap_or_default(),
                    request.name_any()
                ));
                return Ok(requeue);
            }
            Err(e) => {
                state.metrics.count(KIND, e.category());
                return Err(e);
            }
        }
    }
    Ok(Requeue::requeue(Duration::ZERO))
}

/// What a failed reconcile (a step to retry, an API call that failed) leads to: backoff with
/// jitter, or a slower look when the fix lies elsewhere; the step's `timeout` bounds the
/// retries.
pub fn ops_request_error_policy(
    request: Arc<DatabaseOpsRequest>,
    error: &Error,
    state: Arc<State>,
) -> Requeue {
    let key = format!(
        "{KIND}/{}/{}",
        request.namespace().unwrap_or_default(),
        request.name_any()
    );
    match error.retry() {
        Retry::OnChange | Retry::Slow => Requeue::requeue(SLOW_STEP_RETRY),
        Retry::Backoff => Requeue::requeue(state.backoff(&key)),
    }
}

/// What one transition led to.
#[derive(Debug)]
pub enum Advanced {
    /// A transition was recorded; the request as the status write returned it.
    Next(Box<DatabaseOpsRequest>),
    /// Nothing more to do now.
    Stop(Requeue),
}

/// The other requests on the same target (the target is named by the request's own
/// namespace and `userRef`, or by `serviceRef` for ReconfigureTLS).
async fn queue(state: &State, request: &DatabaseOpsRequest) -> Result<Vec<Queued>, Error> {
    let same_target = |other: &DatabaseOpsRequest| {
        other.spec.op_type == request.spec.op_type
            && match request.spec.op_type {
                OpsType::RotateCredentials => other.spec.user_ref == request.spec.user_ref,
                OpsType::ReconfigureTLS => other.spec.service_ref == request.spec.service_ref,
            }
    };
    let api: Api<DatabaseOpsRequest> = match request.spec.op_type {
        OpsType::RotateCredentials => Api::namespaced(
            state.client(),
            request.namespace().as_deref().unwrap_or("default"),
        ),
        OpsType::ReconfigureTLS => Api::all(state.client()),
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(kube_error("list DatabaseOpsRequests"))?;
    Ok(list
        .items
        .iter()
        .filter(|o| same_target(o))
        .map(|o| Queued {
            name: o.name_any(),
            created: o.metadata.creation_timestamp.as_ref().map(|t| t.0),
            phase: o.status.as_ref().and_then(|s| s.phase.clone()),
        })
        .collect())
}

/// What a request works on.
enum Subject {
    User(ServiceUser),
    Service(DatabaseService),
}

/// One transition of `request`.
pub async fn advance(state: &Arc<State>, request: &DatabaseOpsRequest) -> Result<Advanced, Error> {
    let status = request.status.as_ref();
    if machine::steps(&request.spec).is_none()
        || matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some(machine::SUCCESSFUL | machine::FAILED)
        )
    {
        return Ok(Advanced::Stop(Requeue::await_change()));
    }
    let namespace = request.namespace().unwrap_or_default();
    let (target, subject) = match request.spec.op_type {
        OpsType::RotateCredentials => {
            let Some(user_ref) = request.spec.user_ref.as_ref().map(|r| r.name.clone()) else {
                let failed = Record::Failed {
                    step: machine::Step::GenerateCredentials,
                    reason: "Invalid",
                    message: "spec.userRef: Required value: RotateCredentials names the ServiceUser to rotate",
                };
                return finish(state, request, &failed, EventType::Warning).await;
            };
            let user: Option<ServiceUser> = state
                .ctx
                .cluster
                .get_service_user(&namespace, &user_ref)
                .await?;
            (
                ops_request::target_state(&user_ref, user.as_ref()),
                user.map(Subject::User),
            )
        }
        OpsType::ReconfigureTLS => {
            let Some(service_ref) = request.spec.service_ref.as_ref().map(|r| r.name.clone())
            else {
                let failed = Record::Failed {
                    step: machine::Step::IssueCertificates,
                    reason: "Invalid",
                    message: "spec.serviceRef: Required value: ReconfigureTLS names the DatabaseService whose pooler it changes",
                };
                return finish(state, request, &failed, EventType::Warning).await;
            };
            let service = state.ctx.cluster.get_service(&service_ref).await?;
            (
                ops_request_tls::target_state(&service_ref, service.as_ref()),
                service.map(Subject::Service),
            )
        }
    };
    let queued = queue(state, request).await?;
    let observed = Observed {
        target,
        blocked_by: machine::first_in_line(
            &request.name_any(),
            request.metadata.creation_timestamp.as_ref().map(|t| t.0),
            &queued,
        )
        .map(|q| q.name.clone()),
        now: jiff::Timestamp::now(),
    };
    match machine::next(&request.spec, status, &observed) {
        Next::Nothing => Ok(Advanced::Stop(Requeue::await_change())),
        Next::Wait { reason, message } => wait(state, request, reason, message).await,
        Next::Start => transition(state, request, &Record::Started, EventType::Normal).await,
        Next::Run(step) => {
            let Some(subject) = subject else {
                // The machine fails a started request whose target is missing.
                return Ok(Advanced::Stop(Requeue::requeue(WAIT_RETRY)));
            };
            run(state, request, &subject, step).await
        }
        Next::Succeed => finish(state, request, &Record::Succeeded, EventType::Normal).await,
        Next::Fail {
            step,
            reason,
            message,
        } => {
            let record = Record::Failed {
                step,
                reason,
                message: &message,
            };
            finish(state, request, &record, EventType::Warning).await
        }
    }
}

/// The pools of `service` reconciled (each writes its own Secret; any of them the pooler's
/// objects), so that they follow the TLS the request left. A pooler whose pods do not serve
/// the pools yet (they roll out with the new Deployment) is no failure of this step.
async fn sync_pools(
    state: &Arc<State>,
    request: &DatabaseOpsRequest,
    service: &DatabaseService,
) -> Result<String, StepError> {
    let svc = service.name_any();
    // The pools render from the serving Secret as dbward's cache holds it: wait until that is
    // what the step before left (the cache may lag behind a write or a delete).
    let change = request.spec.tls.clone().unwrap_or_default();
    let expected = if change.remove == Some(true) {
        None
    } else {
        pooler_tls::policy(&change).ok()
    };
    let seen = pooler_kube::managed_tls(&state.ctx, &svc)
        .await?
        .as_ref()
        .and_then(pooler_tls::recorded_policy);
    if seen != expected {
        return Err(StepError::Retry(Error::PoolerNotReady {
            message: format!(
                "the pooler's TLS Secret {:?} is not yet as the request left it",
                pooler_tls::tls_secret_name(&svc)
            ),
        }));
    }
    let pools: Vec<ConnectionPool> = Api::<ConnectionPool>::all(state.client())
        .list(&ListParams::default())
        .await
        .map_err(kube_error("list ConnectionPools"))?
        .items
        .into_iter()
        .filter(|p| p.spec.binding.service_name == svc && p.metadata.deletion_timestamp.is_none())
        .collect();
    for pool in &pools {
        match super::reconcile(Arc::new(pool.clone()), state.clone()).await {
            Ok(_) => {}
            Err(e) if e.reason() == "PoolerNotReady" => {}
            Err(e) => return Err(StepError::Retry(e)),
        }
    }
    let layout = pooler_kube::cluster_layout(
        service,
        &state.ctx.operator_namespace,
        pooler_kube::managed_tls(&state.ctx, &svc).await?.as_ref(),
    );
    Ok(format!(
        "{} ConnectionPool(s) of DatabaseService {svc:?} reconciled: the pooler's configuration follows, pool Secrets carry SSLMODE {}{}",
        pools.len(),
        layout.endpoint.sslmode,
        if layout.endpoint.ca_cert.is_empty() {
            ""
        } else {
            " and the pooler's CA as CA_CERT"
        }
    ))
}

/// Records a wait (`Pending` and why) when it is new, with an event; looks again later.
async fn wait(
    state: &Arc<State>,
    request: &DatabaseOpsRequest,
    reason: &'static str,
    message: String,
) -> Result<Advanced, Error> {
    let status = request.status.as_ref();
    let record = Record::Pending {
        reason,
        message: &message,
    };
    let next = machine::record(
        request.spec.op_type,
        status,
        request.metadata.generation,
        &record,
        &now(),
    );
    if status != Some(&next) {
        write(state, request, &next).await?;
        state
            .publish(request, EventType::Normal, reason, message)
            .await;
    }
    Ok(Advanced::Stop(Requeue::requeue(WAIT_RETRY)))
}

/// `IssueCertificates` from a cert-manager issuer: the pooler's `Certificate` (its Secret is
/// the pooler's serving Secret), then waits until cert-manager has issued it. Without
/// cert-manager's API the request fails `CertManagerNotInstalled`.
async fn issue_with_cert_manager(
    state: &Arc<State>,
    request: &DatabaseOpsRequest,
    service: &DatabaseService,
) -> Result<String, StepError> {
    if let Some((reason, message)) = pooler_tls::admin_secret_set(service) {
        return Err(StepError::Fail { reason, message });
    }
    let change = request.spec.tls.clone().unwrap_or_default();
    let Some(issuer) = change.issuer_ref.clone() else {
        return Err(StepError::Fail {
            reason: "Invalid",
            message: "spec.tls.issuerRef: Required value".to_owned(),
        });
    };
    let policy = pooler_tls::policy(&change)
        .map_err(|(reason, message)| StepError::Fail { reason, message })?;
    let client = state.client();
    if !cert_manager::served(&client).await? {
        return Err(StepError::Fail {
            reason: "CertManagerNotInstalled",
            message: format!(
                "spec.tls.issuerRef names a cert-manager {:?} {:?}, but the API server does not serve {} Certificates: install cert-manager, or leave issuerRef out to use dbward's own CA",
                issuer.kind,
                issuer.name,
                cert_manager::GROUP_VERSION
            ),
        });
    }
    let ns = &state.ctx.operator_namespace;
    let wanted = cert_manager::certificate(service, ns, &issuer, &policy);
    let stored = cert_manager::apply_certificate(&client, ns, &wanted).await?;
    cert_manager::issued(&stored)
        .map_err(|message| StepError::Retry(Error::PoolerNotReady { message }))?;
    Ok(format!(
        "cert-manager issued Certificate {:?} from {:?} {:?} into Secret {:?}; clients are told sslmode {}",
        stored.name_any(),
        issuer.kind,
        issuer.name,
        pooler_tls::tls_secret_name(&service.name_any()),
        policy.sslmode
    ))
}

/// Every ready pooler pod presents the new certificate (RELOAD where needed); until then the
/// step is retried (the kubelet updates a mounted Secret within its sync period).
async fn reload_pods(state: &Arc<State>, service: &DatabaseService) -> Result<String, StepError> {
    let svc = service.name_any();
    let (pods, presenting) = pooler_kube::reload_for_certificate(&state.ctx, &svc).await?;
    if presenting < pods {
        return Err(StepError::Retry(Error::PoolerNotReady {
            message: format!(
                "{presenting} of {pods} pooler pod(s) present the new certificate; the others were sent RELOAD and are asked again (their mounted Secret may not be updated yet)"
            ),
        }));
    }
    Ok(if pods == 0 {
        "no pooler pod is ready: pods load the new certificate when they start".to_owned()
    } else {
        format!(
            "{pods} pooler pod(s) present the new certificate to new handshakes (RELOAD; established sessions stay)"
        )
    })
}

/// Runs `step`: done is a transition; a transient failure is retried (with a warning event);
/// a permanent one ends the request `Failed`.
async fn run(
    state: &Arc<State>,
    request: &DatabaseOpsRequest,
    subject: &Subject,
    step: machine::Step,
) -> Result<Advanced, Error> {
    let issuer = request
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.issuer_ref.as_ref());
    let result = match (subject, step) {
        (Subject::Service(service), machine::Step::SyncCertificate) => {
            sync_pools(state, request, service).await
        }
        (Subject::Service(service), machine::Step::IssueCertificates) if issuer.is_some() => {
            issue_with_cert_manager(state, request, service).await
        }
        (Subject::Service(service), machine::Step::RemoveCertificates) => {
            // cert-manager would write the Secret again.
            let ns = &state.ctx.operator_namespace;
            match cert_manager::delete_certificate(&state.client(), ns, &service.name_any()).await {
                Ok(()) => ops_request_tls::run_step(&state.ctx, request, service, step).await,
                Err(e) => Err(StepError::Retry(e)),
            }
        }
        (Subject::Service(service), machine::Step::ReloadPods) => reload_pods(state, service).await,
        (Subject::Service(service), step) => {
            ops_request_tls::run_step(&state.ctx, request, service, step).await
        }
        (Subject::User(user), step) => ops_request::run_step(&state.ctx, request, user, step).await,
    };
    match result {
        Ok(message) => {
            let record = Record::StepDone {
                step,
                message: &message,
            };
            transition(state, request, &record, EventType::Normal).await
        }
        Err(StepError::Retry(e)) => {
            warn!(kind = KIND, namespace = request.namespace().as_deref(), name = %request.name_any(), step = step.condition(), category = e.category(), error = %e, "step failed; retrying");
            state
                .publish(
                    request,
                    EventType::Warning,
                    step.failure(),
                    e.public_message(),
                )
                .await;
            Err(e)
        }
        Err(StepError::Fail { reason, message }) => {
            let record = Record::Failed {
                step,
                reason,
                message: &message,
            };
            finish(state, request, &record, EventType::Warning).await
        }
    }
}

/// Records a transition and announces it; the request carries on.
async fn transition(
    state: &Arc<State>,
    request: &DatabaseOpsRequest,
    record: &Record<'_>,
    type_: EventType,
) -> Result<Advanced, Error> {
    let next = machine::record(
        request.spec.op_type,
        request.status.as_ref(),
        request.metadata.generation,
        record,
        &now(),
    );
    let updated = write(state, request, &next).await?;
    announce(state, request, &next, type_).await;
    Ok(Advanced::Next(Box::new(updated)))
}

/// Records the last transition (Successful or Failed) and announces it. The staging Secret
/// goes first: after a failure between the server's and the Secret's write, the ServiceUser
/// reconciler then sets the Secret's (old) password on the server again, so the two agree.
async fn finish(
    state: &Arc<State>,
    request: &DatabaseOpsRequest,
    record: &Record<'_>,
    type_: EventType,
) -> Result<Advanced, Error> {
    if let Some(user) = &request.spec.user_ref {
        ops_request::finish(&state.ctx, request, &user.name).await?;
    }
    transition(state, request, record, type_).await?;
    Ok(Advanced::Stop(Requeue::await_change()))
}

/// One event per transition: the newest condition's reason and message.
async fn announce(
    state: &State,
    request: &DatabaseOpsRequest,
    status: &DatabaseOpsRequestStatus,
    type_: EventType,
) {
    let Some(latest) = status
        .conditions
        .iter()
        .max_by_key(|c| c.last_transition_time.0)
    else {
        return;
    };
    info!(kind = KIND, namespace = request.namespace().as_deref(), name = %request.name_any(), phase = status.phase.as_deref(), step = %latest.type_, "ops request");
    state
        .publish(request, type_, &latest.reason, latest.message.clone())
        .await;
}

/// Writes the status (server-side apply on the status subresource) and returns the request
/// as stored.
async fn write(
    state: &State,
    request: &DatabaseOpsRequest,
    status: &DatabaseOpsRequestStatus,
) -> Result<DatabaseOpsRequest, Error> {
    let api: Api<DatabaseOpsRequest> = Api::namespaced(
        state.client(),
        request.namespace().as_deref().unwrap_or("default"),
    );
    let body = json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": KIND,
        "status": status,
    });
    api.patch_status(
        &request.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(kube_error("patch status"))
}
