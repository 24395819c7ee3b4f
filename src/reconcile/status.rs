//! The `Ready` condition. Setting it again to what it already says changes nothing (not even
//! its `lastTransitionTime`), so an unchanged object's status is never rewritten.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::Error;

/// The condition type every kind carries.
pub const READY: &str = "Ready";
/// `reason` of `Ready=True`.
pub const RECONCILED: &str = "Reconciled";

/// What the `Ready` condition should say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// `True` or `False`.
    pub ready: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message (never a secret).
    pub message: String,
}

impl Readiness {
    /// `Ready=True`.
    pub fn ready(message: impl Into<String>) -> Self {
        Readiness {
            ready: true,
            reason: RECONCILED.to_owned(),
            message: message.into(),
        }
    }

    /// `Ready=False` for a failed reconcile, told in full (the DatabaseService's status: an
    /// administrator's object).
    pub fn failed(error: &Error) -> Self {
        Readiness {
            ready: false,
            reason: error.reason().to_owned(),
            message: error.to_string(),
        }
    }

    /// `Ready=False` for `error`, told as a tenant may see it ([`Error::public_message`]).
    pub fn failed_publicly(error: &Error) -> Self {
        Readiness {
            ready: false,
            reason: error.reason().to_owned(),
            message: error.public_message(),
        }
    }

    /// `Ready=False` with a given reason.
    pub fn not_ready(reason: &str, message: impl Into<String>) -> Self {
        Readiness {
            ready: false,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// `conditions` with the `Ready` condition set to `readiness` for `generation`. An identical
/// condition is kept as it is; a changed one keeps its `lastTransitionTime` unless its status
/// flips.
pub fn with_ready(
    conditions: &[Condition],
    readiness: &Readiness,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let status = if readiness.ready { "True" } else { "False" };
    let previous = conditions.iter().find(|c| c.type_ == READY);
    let transition = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now.clone(),
    };
    let ready = Condition {
        type_: READY.to_owned(),
        status: status.to_owned(),
        reason: readiness.reason.clone(),
        message: readiness.message.clone(),
        observed_generation: generation,
        last_transition_time: transition,
    };
    let mut out: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != READY)
        .cloned()
        .collect();
    out.insert(0, ready);
    out
}

/// The `Ready` condition, if any.
pub fn ready_of(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == READY)
}

/// The current time as a Kubernetes `Time`.
pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_condition_is_kept_and_flip_moves_transition_time() {
        let t0 = Time(jiff::Timestamp::from_second(1_000).unwrap());
        let t1 = Time(jiff::Timestamp::from_second(2_000).unwrap());
        let first = with_ready(&[], &Readiness::ready("ok"), Some(1), &t0);
        assert_eq!(first[0].status, "True");
        assert_eq!(
            with_ready(&first, &Readiness::ready("ok"), Some(1), &t1),
            first
        );
        let message = with_ready(&first, &Readiness::ready("still ok"), Some(2), &t1);
        assert_eq!(message[0].last_transition_time, t0);
        let down = with_ready(
            &first,
            &Readiness::not_ready("ServiceUnreachable", "down"),
            Some(1),
            &t1,
        );
        assert_eq!(
            (down[0].status.as_str(), down[0].reason.as_str()),
            ("False", "ServiceUnreachable")
        );
        assert_eq!(down[0].last_transition_time, t1);
        assert_eq!(down.len(), 1);
    }
}
