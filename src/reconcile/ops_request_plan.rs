//! Pure: the step machine of a `DatabaseOpsRequest`. Given the request, its status, what was
//! observed of its target and of the other requests on that target, and the time, it says what
//! to do next ([`next`]) and computes the status that records it ([`record`]).
//!
//! A request is `Pending` until it may start (no other unfinished request on its target goes
//! first; with `apply: IfReady` the target is `Ready`), then `Progressing` through its steps —
//! each completed step is a condition of its own, so a restarted dbward resumes at the first
//! step without one — and ends `Successful` or `Failed`, after which it is never run again.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::DatabaseOpsRequestSpec;
use crate::api::database_ops_request::{ApplyPolicy, DatabaseOpsRequestStatus, OpsType};

/// `status.phase` before the request starts.
pub const PENDING: &str = "Pending";
/// `status.phase` while its steps run.
pub const PROGRESSING: &str = "Progressing";
/// `status.phase` once every step is done.
pub const SUCCESSFUL: &str = "Successful";
/// `status.phase` once a step failed or timed out.
pub const FAILED: &str = "Failed";
/// The condition type (and reason) of a request that waits to start.
pub const PENDING_CONDITION: &str = "Pending";
/// The condition type of the end of a successful request, as KubeDB names it.
pub const SUCCESSFUL_CONDITION: &str = "Successful";
/// `reason` of a step that ran out of `spec.timeout`.
pub const TIMED_OUT: &str = "TimedOut";

/// One step of an operation; each ends with a condition named [`Step::condition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// RotateCredentials: a new password from the CSPRNG, kept in a staging Secret owned by
    /// the request (so a restart resumes with the same password).
    GenerateCredentials,
    /// RotateCredentials: the new password set on the server, then written to the user's
    /// Secret.
    RotateCredentials,
    /// ReconfigureTLS (add, rotate, change issuer): a new serving certificate for the pooler
    /// Service's names in the pooler's serving Secret, from dbward's own CA for the pooler or
    /// from cert-manager (`issuerRef`: a `Certificate`, waited for until it is issued).
    IssueCertificates,
    /// ReconfigureTLS (remove): the pooler's serving Secret deleted.
    RemoveCertificates,
    /// ReconfigureTLS: the service's pools reconciled with the new TLS settings — the pooler's
    /// configuration and Deployment, and every pool Secret's `SSLMODE` and `CA_CERT`.
    SyncCertificate,
    /// ReconfigureTLS (rotate): every ready pooler pod presents the new certificate to new
    /// handshakes, after a `RELOAD` (established sessions stay).
    ReloadPods,
}

impl Step {
    /// The condition type (and reason) that records the step as done.
    pub fn condition(self) -> &'static str {
        match self {
            Step::GenerateCredentials => "CredentialsGenerated",
            Step::RotateCredentials => "CredentialsRotated",
            Step::IssueCertificates => "IssueCertificatesSucceeded",
            Step::RemoveCertificates => "CertificatesRemoved",
            Step::SyncCertificate => "CertificateSynced",
            Step::ReloadPods => "ReloadPods",
        }
    }

    /// `reason` of the step's condition when it failed.
    pub fn failure(self) -> &'static str {
        match self {
            Step::GenerateCredentials => "GenerateCredentialsFailed",
            Step::RotateCredentials => "RotateCredentialsFailed",
            Step::IssueCertificates => "IssueCertificatesFailed",
            Step::RemoveCertificates => "RemoveCertificatesFailed",
            Step::SyncCertificate => "CertificateSyncFailed",
            Step::ReloadPods => "ReloadPodsFailed",
        }
    }
}

/// The steps of a request, in order (`None`: a request dbward does not run).
pub fn steps(spec: &DatabaseOpsRequestSpec) -> Option<&'static [Step]> {
    match spec.op_type {
        OpsType::RotateCredentials => Some(&[Step::GenerateCredentials, Step::RotateCredentials]),
        OpsType::ReconfigureTLS => {
            let tls = spec.tls.clone().unwrap_or_default();
            if tls.remove == Some(true) {
                Some(&[Step::RemoveCertificates, Step::SyncCertificate])
            } else if tls.issuer_ref.is_some() || tls.rotate_certificates == Some(true) {
                // A new certificate at the same Secret (so at the same paths in the pods),
                // loaded by the running pods with RELOAD: a rotation, or a (new) cert-manager
                // issuer.
                Some(&[
                    Step::IssueCertificates,
                    Step::SyncCertificate,
                    Step::ReloadPods,
                ])
            } else {
                Some(&[Step::IssueCertificates, Step::SyncCertificate])
            }
        }
    }
}

/// The name of an operation: the type and reason of the condition that records its start.
pub fn op_name(op: OpsType) -> &'static str {
    match op {
        OpsType::RotateCredentials => "RotateCredentials",
        OpsType::ReconfigureTLS => "ReconfigureTLS",
    }
}

/// The target as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// It does not exist.
    Missing(String),
    /// It exists and is not `Ready`; why.
    NotReady(String),
    /// It is `Ready`.
    Ready,
}

/// Another request on the same target, as the queue sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its name.
    pub name: String,
    /// `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
    /// `status.phase`.
    pub phase: Option<String>,
}

/// Pure: the unfinished request on the same target that goes before `me` (created at
/// `created`): one already `Progressing`, else an older one (by creation time, then name).
pub fn first_in_line<'a>(
    me: &str,
    created: Option<Timestamp>,
    others: &'a [Queued],
) -> Option<&'a Queued> {
    let unfinished =
        |q: &&Queued| q.name != me && !matches!(q.phase.as_deref(), Some(SUCCESSFUL | FAILED));
    if let Some(running) = others
        .iter()
        .filter(unfinished)
        .find(|q| q.phase.as_deref() == Some(PROGRESSING))
    {
        return Some(running);
    }
    let key = |created: Option<Timestamp>, name: &str| (created, name.to_owned());
    let mine = key(created, me);
    others
        .iter()
        .filter(unfinished)
        .filter(|q| key(q.created, &q.name) < mine)
        .min_by_key(|q| key(q.created, &q.name))
}

/// What the machine saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The target.
    pub target: Target,
    /// The request that goes first, if any ([`first_in_line`]).
    pub blocked_by: Option<String>,
    /// Now.
    pub now: Timestamp,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The request is finished (Successful or Failed), or of an operation dbward does not run:
    /// nothing to do, ever.
    Nothing,
    /// Stay (or become) `Pending`, for `reason`.
    Wait {
        /// CamelCase reason: `WaitingForOtherRequest`, `TargetNotFound`, `TargetNotReady`.
        reason: &'static str,
        /// What it waits for.
        message: String,
    },
    /// Record the start: `Progressing`, the operation's own condition.
    Start,
    /// Run this step.
    Run(Step),
    /// Every step is done: `Successful`.
    Succeed,
    /// End as `Failed`: `step` could not finish.
    Fail {
        /// The step that failed.
        step: Step,
        /// CamelCase reason.
        reason: &'static str,
        /// Why.
        message: String,
    },
}

/// `spec.timeout` in seconds; `None` when not given (no bound, as in KubeDB).
fn timeout(spec: &DatabaseOpsRequestSpec) -> Option<f64> {
    spec.timeout.as_deref().and_then(crate::duration::seconds)
}

fn condition<'a>(
    status: Option<&'a DatabaseOpsRequestStatus>,
    type_: &str,
) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

fn done(status: Option<&DatabaseOpsRequestStatus>, type_: &str) -> bool {
    condition(status, type_).is_some_and(|c| c.status == "True")
}

/// Pure: the next transition of the request.
pub fn next(
    spec: &DatabaseOpsRequestSpec,
    status: Option<&DatabaseOpsRequestStatus>,
    observed: &Observed,
) -> Next {
    let Some(steps) = steps(spec) else {
        return Next::Nothing;
    };
    let phase = status.and_then(|s| s.phase.as_deref());
    if matches!(phase, Some(SUCCESSFUL | FAILED)) {
        return Next::Nothing;
    }
    let started = phase == Some(PROGRESSING) && done(status, op_name(spec.op_type));
    if !started {
        if let Some(other) = &observed.blocked_by {
            return Next::Wait {
                reason: "WaitingForOtherRequest",
                message: format!(
                    "DatabaseOpsRequest {other:?} on the same target goes first; this one starts when it has finished"
                ),
            };
        }
        return match &observed.target {
            Target::Missing(what) => Next::Wait {
                reason: "TargetNotFound",
                message: format!("{what} does not exist (yet)"),
            },
            Target::NotReady(why) if spec.apply == ApplyPolicy::IfReady => Next::Wait {
                reason: "TargetNotReady",
                message: format!("apply is IfReady and {why}; apply: Always would not wait"),
            },
            _ => Next::Start,
        };
    }
    let Some(&step) = steps.iter().find(|s| !done(status, s.condition())) else {
        return Next::Succeed;
    };
    if let Target::Missing(what) = &observed.target {
        return Next::Fail {
            step,
            reason: "TargetNotFound",
            message: format!("{what} was deleted while the request ran"),
        };
    }
    // A step starts when the one before it (or the request) was recorded as done.
    let previous = steps
        .iter()
        .rev()
        .find(|s| done(status, s.condition()))
        .map_or(op_name(spec.op_type), |s| s.condition());
    let since = condition(status, previous).map(|c| c.last_transition_time.0);
    if let (Some(limit), Some(since)) = (timeout(spec), since) {
        let elapsed = observed.now.duration_since(since);
        if elapsed > SignedDuration::try_from_secs_f64(limit).unwrap_or(SignedDuration::MAX) {
            return Next::Fail {
                step,
                reason: TIMED_OUT,
                message: format!(
                    "step {} did not finish within spec.timeout {}",
                    step.condition(),
                    spec.timeout.as_deref().unwrap_or_default()
                ),
            };
        }
    }
    Next::Run(step)
}

/// A transition to record in the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// `Pending`, for `reason`.
    Pending {
        /// CamelCase reason.
        reason: &'a str,
        /// Why.
        message: &'a str,
    },
    /// Started: `Progressing`.
    Started,
    /// `step` is done.
    StepDone {
        /// The step.
        step: Step,
        /// What it did (never a secret).
        message: &'a str,
    },
    /// `Successful`.
    Succeeded,
    /// `Failed` at `step`.
    Failed {
        /// The step.
        step: Step,
        /// CamelCase reason.
        reason: &'a str,
        /// Why (never a secret).
        message: &'a str,
    },
}

/// Pure: the status after `record`. A condition that already says the same keeps its
/// `lastTransitionTime`, so recording a wait twice writes nothing.
pub fn record(
    op: OpsType,
    status: Option<&DatabaseOpsRequestStatus>,
    generation: Option<i64>,
    record: &Record<'_>,
    now: &Time,
) -> DatabaseOpsRequestStatus {
    let mut next = status.cloned().unwrap_or_default();
    next.observed_generation = generation;
    let name = op_name(op);
    let (phase, type_, state, reason, message) = match record {
        Record::Pending { reason, message } => (
            PENDING,
            PENDING_CONDITION,
            "True",
            *reason,
            message.to_string(),
        ),
        Record::Started => (
            PROGRESSING,
            name,
            "True",
            name,
            format!("dbward has started the {name} request"),
        ),
        Record::StepDone { step, message } => (
            PROGRESSING,
            step.condition(),
            "True",
            step.condition(),
            message.to_string(),
        ),
        Record::Succeeded => (
            SUCCESSFUL,
            SUCCESSFUL_CONDITION,
            "True",
            SUCCESSFUL_CONDITION,
            format!("{name} completed"),
        ),
        Record::Failed {
            step,
            reason,
            message,
        } => (
            FAILED,
            step.condition(),
            "False",
            *reason,
            message.to_string(),
        ),
    };
    if matches!(record, Record::Started)
        && next.conditions.iter().any(|c| c.type_ == PENDING_CONDITION)
    {
        // The wait is over.
        set(
            &mut next.conditions,
            PENDING_CONDITION,
            "False",
            "Started",
            "the request has started",
            generation,
            now,
        );
    }
    set(
        &mut next.conditions,
        type_,
        state,
        reason,
        &message,
        generation,
        now,
    );
    next.phase = Some(phase.to_owned());
    next
}

fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let existing = conditions.iter_mut().find(|c| c.type_ == type_);
    let condition = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    };
    match existing {
        Some(c) if c.status == status && c.reason == reason && c.message == message => {
            c.observed_generation = generation;
        }
        Some(c) => *c = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests;
