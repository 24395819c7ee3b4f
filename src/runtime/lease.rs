//! Leader election over a `coordination.k8s.io/v1` Lease, with client-go's semantics and timing.
//!
//! Why not a crate: of the maintained ones for kube 4, kube-lease-manager keeps reporting
//! "leader" while the API server is unreachable (a partitioned leader would go on reconciling
//! next to the new one), and kube-leader-election acquires with a plain patch, without a
//! `resourceVersion` precondition (two candidates can both believe they won). The loop is small
//! enough to own: the decision is a pure function ([`decide`]) and every write is guarded by the
//! `resourceVersion` the decision was made on.
//!
//! The guarantee, as client-go's: a leader that cannot renew for `renew_deadline` steps down;
//! a candidate takes over only after it has seen the lease unchanged for `lease_duration`
//! (measured on its own monotonic clock, so clock skew between hosts does not matter). Because
//! `renew_deadline < lease_duration`, the old leader has stopped before a new one can start.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

/// Timing and identity of one candidate.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaseArgs {
    /// Name of the Lease (in --namespace) that elects the replica running the controllers.
    #[arg(long, default_value = "dbward-controller")]
    pub lease_name: String,
    /// This replica's identity in the Lease (default: $POD_NAME, else the host name and the
    /// process id).
    #[arg(long, value_name = "NAME")]
    pub lease_identity: Option<String>,
    /// How long a lease is valid without renewal: a candidate takes over after seeing it
    /// unchanged this long.
    #[arg(long, default_value = "15s", value_parser = crate::duration::flag)]
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops its controllers.
    #[arg(long, default_value = "10s", value_parser = crate::duration::flag)]
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews.
    #[arg(long, default_value = "2s", value_parser = crate::duration::flag)]
    pub retry_period: Duration,
}

impl LeaseArgs {
    /// The identity: the flag, `$POD_NAME`, or `hostname-pid`.
    pub fn identity(&self) -> String {
        if let Some(identity) = self.lease_identity.clone().filter(|s| !s.is_empty()) {
            return identity;
        }
        if let Ok(pod) = std::env::var("POD_NAME")
            && !pod.is_empty()
        {
            return pod;
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "dbward".to_owned());
        format!("{host}-{}", std::process::id())
    }

    /// Refuses timings under which two leaders could overlap (client-go's checks).
    pub fn check(&self) -> Result<(), String> {
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "--renew-deadline ({:?}) must be shorter than --lease-duration ({:?}): the leader must stop before a candidate may take over",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.mul_f64(1.2) >= self.renew_deadline {
            return Err(format!(
                "--retry-period ({:?}) must be well below --renew-deadline ({:?}) (at most 1/1.2 of it), or a single slow renewal loses the lease",
                self.retry_period, self.renew_deadline
            ));
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err(
                "--lease-duration must be at least 1s (the Lease counts whole seconds)".into(),
            );
        }
        Ok(())
    }
}

/// What the lease says, as far as the election is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub holder: Option<String>,
    pub lease_duration_seconds: i32,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    pub transitions: i32,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    fn spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: self.holder.clone(),
            lease_duration_seconds: Some(self.lease_duration_seconds),
            acquire_time: self.acquire_time.map(MicroTime),
            renew_time: self.renew_time.map(MicroTime),
            lease_transitions: Some(self.transitions),
            ..LeaseSpec::default()
        }
    }
}

/// What one attempt should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Another candidate holds a lease that has not expired (on our clock).
    Wait { holder: String },
    /// Write this record, guarded by the version it was decided on.
    Write(Record),
}

/// Pure: the next record for `identity`, given the current one and how long it has been
/// unchanged on our clock. A lease held by another and seen changing less than its duration ago
/// is left alone; a lease of our own is renewed; a free or expired one is taken (one more
/// transition).
pub fn decide(
    identity: &str,
    current: &Record,
    unchanged_for: Duration,
    lease_duration: Duration,
    now: Timestamp,
) -> Decision {
    let ours = current.holder.as_deref() == Some(identity);
    if let Some(holder) = &current.holder
        && !ours
        && unchanged_for < lease_duration
    {
        return Decision::Wait {
            holder: holder.clone(),
        };
    }
    Decision::Write(Record {
        holder: Some(identity.to_owned()),
        lease_duration_seconds: whole_seconds(lease_duration),
        acquire_time: if ours {
            current.acquire_time
        } else {
            Some(now)
        },
        renew_time: Some(now),
        transitions: if ours {
            current.transitions
        } else {
            current.transitions + 1
        },
    })
}

/// The Lease's `leaseDurationSeconds` for `duration`.
fn whole_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

/// Why an attempt did not make us the holder.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the Lease is held by {holder}")]
    HeldBy { holder: String },
    #[error("the Lease changed while it was being written (another candidate was faster)")]
    Conflict,
    #[error("{verb} Lease {namespace}/{name}: {source}")]
    Api {
        verb: &'static str,
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("the API server did not answer within {0:?}")]
    Timeout(Duration),
}

/// One candidate: the Lease's API and what it last saw of the record.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    namespace: String,
    identity: String,
    lease_duration: Duration,
    /// The record last seen, and when (our clock) it was first seen in that state.
    observed: Option<(Record, Instant)>,
}

impl Elector {
    pub fn new(client: kube::Client, namespace: &str, args: &LeaseArgs) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: args.lease_name.clone(),
            namespace: namespace.to_owned(),
            identity: args.identity(),
            lease_duration: args.lease_duration,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn lease_name(&self) -> &str {
        &self.name
    }

    /// One acquire-or-renew attempt (client-go's `tryAcquireOrRenew`), bounded by `timeout`.
    /// `Ok` means we hold the lease until at least `lease_duration` from now.
    pub async fn try_acquire_or_renew(&mut self, timeout: Duration) -> Result<(), LeaseError> {
        match tokio::time::timeout(timeout, self.attempt()).await {
            Ok(result) => result,
            Err(_) => Err(LeaseError::Timeout(timeout)),
        }
    }

    async fn attempt(&mut self) -> Result<(), LeaseError> {
        let now = Timestamp::now();
        let Some(lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(self.api_error("get"))?
        else {
            // A new lease starts at zero transitions, as client-go's.
            let record = Record {
                holder: Some(self.identity.clone()),
                lease_duration_seconds: whole_seconds(self.lease_duration),
                acquire_time: Some(now),
                renew_time: Some(now),
                transitions: 0,
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    labels: Some(
                        [(
                            "app.kubernetes.io/managed-by".to_owned(),
                            "dbward".to_owned(),
                        )]
                        .into(),
                    ),
                    ..ObjectMeta::default()
                },
                spec: Some(record.spec()),
            };
            return match self.api.create(&write_params(), &lease).await {
                Ok(_) => {
                    self.observed = Some((record, Instant::now()));
                    Ok(())
                }
                Err(kube::Error::Api(status)) if status.code == 409 => Err(LeaseError::Conflict),
                Err(e) => Err(self.api_error("create")(e)),
            };
        };
        let current = Record::of(&lease);
        let seen_at = match &self.observed {
            Some((record, at)) if *record == current => *at,
            _ => Instant::now(),
        };
        self.observed = Some((current.clone(), seen_at));
        let record = match decide(
            &self.identity,
            &current,
            seen_at.elapsed(),
            self.lease_duration,
            now,
        ) {
            Decision::Wait { holder } => return Err(LeaseError::HeldBy { holder }),
            Decision::Write(record) => record,
        };
        // `replace` sends the resourceVersion we read: a concurrent writer makes it fail (409).
        let mut next = lease;
        next.spec = Some(record.spec());
        next.metadata.managed_fields = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => {
                self.observed = Some((record, Instant::now()));
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Err(LeaseError::Conflict),
            Err(e) => Err(self.api_error("update")(e)),
        }
    }

    /// Hands the lease back if we hold it, so a candidate takes over at once (client-go's
    /// `ReleaseOnCancel`): no holder, one second, renewed now.
    pub async fn release(&mut self, timeout: Duration) -> Result<(), LeaseError> {
        let release = async {
            let Some(mut lease) = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(self.api_error("get"))?
            else {
                return Ok(());
            };
            let current = Record::of(&lease);
            if current.holder.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            let now = Timestamp::now();
            let released = Record {
                holder: None,
                lease_duration_seconds: 1,
                acquire_time: Some(now),
                renew_time: Some(now),
                transitions: current.transitions,
            };
            lease.spec = Some(released.spec());
            lease.metadata.managed_fields = None;
            match self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => Err(LeaseError::Conflict),
                Err(e) => Err(self.api_error("release")(e)),
            }
        };
        let result = match tokio::time::timeout(timeout, release).await {
            Ok(result) => result,
            Err(_) => Err(LeaseError::Timeout(timeout)),
        };
        self.observed = None;
        result
    }

    fn api_error(&self, verb: &'static str) -> impl FnOnce(kube::Error) -> LeaseError + '_ {
        move |source| LeaseError::Api {
            verb,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }
}

fn write_params() -> PostParams {
    PostParams {
        field_manager: Some(crate::reconcile::FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIFTEEN: Duration = Duration::from_secs(15);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn held_by(holder: &str, transitions: i32) -> Record {
        Record {
            holder: Some(holder.into()),
            lease_duration_seconds: 15,
            acquire_time: Some(at(0)),
            renew_time: Some(at(5)),
            transitions,
        }
    }

    #[test]
    fn a_lease_of_another_is_left_alone_until_it_has_not_changed_for_its_duration() {
        let current = held_by("b", 3);
        assert_eq!(
            decide("a", &current, Duration::from_secs(14), FIFTEEN, at(20)),
            Decision::Wait { holder: "b".into() }
        );
        let Decision::Write(taken) = decide("a", &current, FIFTEEN, FIFTEEN, at(20)) else {
            panic!("an expired lease is taken");
        };
        assert_eq!(taken.holder.as_deref(), Some("a"));
        assert_eq!(taken.transitions, 4, "taking over is a transition");
        assert_eq!(taken.acquire_time, Some(at(20)));
        assert_eq!(taken.renew_time, Some(at(20)));
        assert_eq!(taken.lease_duration_seconds, 15);
    }

    #[test]
    fn our_own_lease_is_renewed_without_a_transition() {
        let current = held_by("a", 3);
        let Decision::Write(renewed) = decide("a", &current, Duration::ZERO, FIFTEEN, at(7)) else {
            panic!("our lease is renewed");
        };
        assert_eq!(renewed.transitions, 3);
        assert_eq!(
            renewed.acquire_time,
            Some(at(0)),
            "acquisition time is kept"
        );
        assert_eq!(renewed.renew_time, Some(at(7)));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let released = Record {
            holder: None,
            lease_duration_seconds: 1,
            acquire_time: Some(at(5)),
            renew_time: Some(at(5)),
            transitions: 2,
        };
        let Decision::Write(taken) = decide("a", &released, Duration::ZERO, FIFTEEN, at(6)) else {
            panic!("a released lease is free");
        };
        assert_eq!(taken.holder.as_deref(), Some("a"));
        assert_eq!(taken.transitions, 3);
    }

    #[test]
    fn timings_that_could_overlap_two_leaders_are_refused() {
        let args = |duration: u64, deadline: u64, retry: u64| LeaseArgs {
            lease_name: "l".into(),
            lease_identity: None,
            lease_duration: Duration::from_secs(duration),
            renew_deadline: Duration::from_secs(deadline),
            retry_period: Duration::from_secs(retry),
        };
        assert!(args(15, 10, 2).check().is_ok());
        assert!(
            args(10, 10, 2)
                .check()
                .unwrap_err()
                .contains("--renew-deadline")
        );
        assert!(
            args(15, 10, 9)
                .check()
                .unwrap_err()
                .contains("--retry-period")
        );
    }

    #[test]
    fn the_identity_flag_wins() {
        let args = LeaseArgs {
            lease_name: "l".into(),
            lease_identity: Some("pod-0".into()),
            lease_duration: FIFTEEN,
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        };
        assert_eq!(args.identity(), "pod-0");
    }
}
