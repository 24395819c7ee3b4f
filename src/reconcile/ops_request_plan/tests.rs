use super::*;
use crate::api::database_ops_request::NameRef;

fn rotate(apply: ApplyPolicy, timeout: Option<&str>) -> DatabaseOpsRequestSpec {
    DatabaseOpsRequestSpec {
        op_type: OpsType::RotateCredentials,
        service_ref: None,
        user_ref: Some(NameRef { name: "app".into() }),
        tls: None,
        timeout: timeout.map(String::from),
        apply,
    }
}

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_000_000 + second).unwrap()
}

fn observed(target: Target, second: i64) -> Observed {
    Observed {
        target,
        blocked_by: None,
        now: at(second),
    }
}

/// Runs the machine as the controller does, recording each transition at `second`, until it
/// waits or is finished; returns the transitions.
fn drive(
    spec: &DatabaseOpsRequestSpec,
    status: &mut Option<DatabaseOpsRequestStatus>,
    seen: &Observed,
) -> Vec<Next> {
    let mut transitions = Vec::new();
    let now = Time(seen.now);
    for _ in 0..10 {
        let n = next(spec, status.as_ref(), seen);
        transitions.push(n.clone());
        let r = match &n {
            Next::Nothing => break,
            Next::Wait { reason, message } => {
                *status = Some(record(
                    spec.op_type,
                    status.as_ref(),
                    Some(1),
                    &Record::Pending { reason, message },
                    &now,
                ));
                break;
            }
            Next::Start => record(
                spec.op_type,
                status.as_ref(),
                Some(1),
                &Record::Started,
                &now,
            ),
            Next::Run(step) => record(
                spec.op_type,
                status.as_ref(),
                Some(1),
                &Record::StepDone {
                    step: *step,
                    message: "done",
                },
                &now,
            ),
            Next::Succeed => record(
                spec.op_type,
                status.as_ref(),
                Some(1),
                &Record::Succeeded,
                &now,
            ),
            Next::Fail {
                step,
                reason,
                message,
            } => record(
                spec.op_type,
                status.as_ref(),
                Some(1),
                &Record::Failed {
                    step: *step,
                    reason,
                    message,
                },
                &now,
            ),
        };
        *status = Some(r);
    }
    transitions
}

fn types(status: &DatabaseOpsRequestStatus) -> Vec<(&str, &str)> {
    status
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str()))
        .collect()
}

#[test]
fn a_request_runs_its_steps_in_order_then_never_again() {
    let spec = rotate(ApplyPolicy::IfReady, None);
    let mut status = None;
    let t = drive(&spec, &mut status, &observed(Target::Ready, 0));
    assert_eq!(
        t,
        vec![
            Next::Start,
            Next::Run(Step::GenerateCredentials),
            Next::Run(Step::RotateCredentials),
            Next::Succeed,
            Next::Nothing
        ]
    );
    let status = status.unwrap();
    assert_eq!(status.phase.as_deref(), Some(SUCCESSFUL));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        types(&status),
        vec![
            ("RotateCredentials", "True"),
            ("CredentialsGenerated", "True"),
            ("CredentialsRotated", "True"),
            ("Successful", "True")
        ]
    );
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.last_transition_time == Time(at(0)) && !c.reason.is_empty())
    );
    // Finished: whatever is observed later, it is not run again.
    for target in [Target::Ready, Target::Missing("x".into())] {
        assert_eq!(
            next(&spec, Some(&status), &observed(target, 99)),
            Next::Nothing
        );
    }
}

#[test]
fn a_restart_resumes_at_the_first_step_without_a_condition() {
    let spec = rotate(ApplyPolicy::IfReady, None);
    let s = record(spec.op_type, None, Some(1), &Record::Started, &Time(at(0)));
    let s = record(
        spec.op_type,
        Some(&s),
        Some(1),
        &Record::StepDone {
            step: Step::GenerateCredentials,
            message: "staged",
        },
        &Time(at(1)),
    );
    // Whatever the target looks like now (Ready or not), a started request carries on.
    for target in [Target::Ready, Target::NotReady("busy".into())] {
        assert_eq!(
            next(&spec, Some(&s), &observed(target, 2)),
            Next::Run(Step::RotateCredentials)
        );
    }
    // Another request that queued meanwhile does not stop it either.
    let seen = Observed {
        blocked_by: Some("other".into()),
        ..observed(Target::Ready, 2)
    };
    assert_eq!(
        next(&spec, Some(&s), &seen),
        Next::Run(Step::RotateCredentials)
    );
}

#[test]
fn if_ready_waits_for_the_target_and_always_does_not() {
    let not_ready = observed(
        Target::NotReady("ServiceUser \"app\" is not Ready".into()),
        0,
    );
    let mut status = None;
    let t = drive(&rotate(ApplyPolicy::IfReady, None), &mut status, &not_ready);
    assert!(
        matches!(&t[..], [Next::Wait { reason: "TargetNotReady", message }] if message.contains("apply is IfReady")),
        "{t:?}"
    );
    let pending = status.clone().unwrap();
    assert_eq!(pending.phase.as_deref(), Some(PENDING));
    assert_eq!(types(&pending), vec![("Pending", "True")]);
    // Waiting again changes nothing, not even the time.
    let mut again = status.clone();
    drive(
        &rotate(ApplyPolicy::IfReady, None),
        &mut again,
        &observed(
            Target::NotReady("ServiceUser \"app\" is not Ready".into()),
            50,
        ),
    );
    assert_eq!(again, status);
    // Once Ready it starts, and the Pending condition says so.
    let t = drive(
        &rotate(ApplyPolicy::IfReady, None),
        &mut status,
        &observed(Target::Ready, 60),
    );
    assert_eq!(t[0], Next::Start);
    let done = status.unwrap();
    assert_eq!(done.conditions[0].type_, "Pending");
    assert_eq!(
        (
            done.conditions[0].status.as_str(),
            done.conditions[0].reason.as_str()
        ),
        ("False", "Started")
    );
    // Always does not wait.
    assert_eq!(
        next(&rotate(ApplyPolicy::Always, None), None, &not_ready),
        Next::Start
    );
    // A missing target is waited for by both.
    let missing = observed(Target::Missing("ServiceUser \"app\"".into()), 0);
    for apply in [ApplyPolicy::IfReady, ApplyPolicy::Always] {
        assert!(matches!(
            next(&rotate(apply, None), None, &missing),
            Next::Wait {
                reason: "TargetNotFound",
                ..
            }
        ));
    }
}

#[test]
fn a_target_deleted_while_running_fails_the_step() {
    let spec = rotate(ApplyPolicy::Always, None);
    let s = record(spec.op_type, None, Some(1), &Record::Started, &Time(at(0)));
    let mut status = Some(s);
    let t = drive(
        &spec,
        &mut status,
        &observed(Target::Missing("ServiceUser \"app\"".into()), 1),
    );
    assert!(matches!(
        &t[..],
        [
            Next::Fail {
                step: Step::GenerateCredentials,
                reason: "TargetNotFound",
                ..
            },
            Next::Nothing
        ]
    ));
    let status = status.unwrap();
    assert_eq!(status.phase.as_deref(), Some(FAILED));
    assert_eq!(
        types(&status),
        vec![
            ("RotateCredentials", "True"),
            ("CredentialsGenerated", "False")
        ]
    );
}

#[test]
fn timeout_bounds_each_step_from_the_end_of_the_one_before() {
    let spec = rotate(ApplyPolicy::IfReady, Some("30s"));
    let s = record(spec.op_type, None, Some(1), &Record::Started, &Time(at(0)));
    // 30 s after the start the first step may still run…
    assert_eq!(
        next(&spec, Some(&s), &observed(Target::Ready, 30)),
        Next::Run(Step::GenerateCredentials)
    );
    // …and a step that finishes late resets the clock for the next one.
    let s = record(
        spec.op_type,
        Some(&s),
        Some(1),
        &Record::StepDone {
            step: Step::GenerateCredentials,
            message: "staged",
        },
        &Time(at(25)),
    );
    assert_eq!(
        next(&spec, Some(&s), &observed(Target::Ready, 50)),
        Next::Run(Step::RotateCredentials)
    );
    match next(&spec, Some(&s), &observed(Target::Ready, 56)) {
        Next::Fail {
            step: Step::RotateCredentials,
            reason: TIMED_OUT,
            message,
        } => assert!(message.contains("within spec.timeout 30s"), "{message}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // Without a timeout there is no bound.
    let unbounded = rotate(ApplyPolicy::IfReady, None);
    assert_eq!(
        next(&unbounded, Some(&s), &observed(Target::Ready, 100_000)),
        Next::Run(Step::RotateCredentials)
    );
}

#[test]
fn one_unfinished_request_per_target_oldest_first() {
    let q = |name: &str, second: i64, phase: Option<&str>| Queued {
        name: name.into(),
        created: Some(at(second)),
        phase: phase.map(String::from),
    };
    let others = vec![
        q("older-done", 0, Some(SUCCESSFUL)),
        q("older-failed", 1, Some(FAILED)),
        q("me", 5, None),
    ];
    assert_eq!(first_in_line("me", Some(at(5)), &others), None);

    let others = vec![
        q("older", 1, Some(PENDING)),
        q("me", 5, None),
        q("newer", 9, None),
    ];
    assert_eq!(
        first_in_line("me", Some(at(5)), &others).map(|q| q.name.as_str()),
        Some("older")
    );
    assert_eq!(
        first_in_line("older", Some(at(1)), &others).map(|q| q.name.as_str()),
        None
    );
    // Created in the same second: by name.
    let others = vec![q("a", 5, None), q("b", 5, None)];
    assert_eq!(
        first_in_line("b", Some(at(5)), &others).map(|q| q.name.as_str()),
        Some("a")
    );
    assert_eq!(first_in_line("a", Some(at(5)), &others), None);
    // One that already runs goes first, even when it is newer.
    let others = vec![q("newer", 9, Some(PROGRESSING)), q("me", 5, None)];
    assert_eq!(
        first_in_line("me", Some(at(5)), &others).map(|q| q.name.as_str()),
        Some("newer")
    );

    let spec = rotate(ApplyPolicy::IfReady, None);
    let seen = Observed {
        blocked_by: Some("older".into()),
        ..observed(Target::Ready, 0)
    };
    assert!(matches!(
        next(&spec, None, &seen),
        Next::Wait { reason: "WaitingForOtherRequest", message } if message.contains("\"older\"")
    ));
}

#[test]
fn reconfigure_tls_steps() {
    use crate::api::database_ops_request::{IssuerKind, IssuerRef, TlsChange};
    let tls = |tls: TlsChange| DatabaseOpsRequestSpec {
        op_type: OpsType::ReconfigureTLS,
        tls: Some(tls),
        ..rotate(ApplyPolicy::IfReady, None)
    };
    let add = tls(TlsChange {
        ssl_mode: Some("verify-full".into()),
        ..TlsChange::default()
    });
    assert_eq!(
        steps(&add),
        Some(&[Step::IssueCertificates, Step::SyncCertificate][..])
    );
    let rotate_certs = tls(TlsChange {
        rotate_certificates: Some(true),
        ..TlsChange::default()
    });
    assert_eq!(
        steps(&rotate_certs),
        Some(
            &[
                Step::IssueCertificates,
                Step::SyncCertificate,
                Step::ReloadPods
            ][..]
        )
    );
    let remove = tls(TlsChange {
        remove: Some(true),
        ..TlsChange::default()
    });
    assert_eq!(
        steps(&remove),
        Some(&[Step::RemoveCertificates, Step::SyncCertificate][..])
    );
    // The conditions are KubeDB's names where the step exists in KubeDB.
    assert_eq!(
        Step::IssueCertificates.condition(),
        "IssueCertificatesSucceeded"
    );
    assert_eq!(Step::IssueCertificates.failure(), "IssueCertificatesFailed");
    assert_eq!(Step::SyncCertificate.condition(), "CertificateSynced");

    // Started, the steps run in order, then Successful.
    let now = Time(Timestamp::from_second(100).unwrap());
    let started = record(
        OpsType::ReconfigureTLS,
        None,
        Some(1),
        &Record::Started,
        &now,
    );
    let seen = observed(Target::Ready, 100);
    assert_eq!(
        next(&add, Some(&started), &seen),
        Next::Run(Step::IssueCertificates)
    );
    let issued = record(
        OpsType::ReconfigureTLS,
        Some(&started),
        Some(1),
        &Record::StepDone {
            step: Step::IssueCertificates,
            message: "issued",
        },
        &now,
    );
    assert_eq!(
        next(&add, Some(&issued), &seen),
        Next::Run(Step::SyncCertificate)
    );
    assert_eq!(
        next(&remove, Some(&started), &seen),
        Next::Run(Step::RemoveCertificates)
    );

    // A cert-manager issuer (add or change): a new certificate, loaded with RELOAD.
    let issuer = tls(TlsChange {
        issuer_ref: Some(IssuerRef {
            name: "ca".into(),
            kind: IssuerKind::ClusterIssuer,
            api_group: "cert-manager.io".into(),
        }),
        ..TlsChange::default()
    });
    assert_eq!(steps(&issuer), steps(&rotate_certs));
}
