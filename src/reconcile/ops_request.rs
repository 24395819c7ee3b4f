//! `DatabaseOpsRequest` of type `RotateCredentials`: a new password for a ServiceUser, on the
//! server and in its Secret. The step machine is [`super::ops_request_plan`]; this module
//! observes the target and runs one step at a time.
//!
//! **Order: server first, then the Secret.** One PostgreSQL role (and one MariaDB account)
//! holds one password, so old and new cannot both be valid; whichever is written first, the
//! other side holds the old value for the time between the two writes. dbward sets the server
//! first so that the Secret is only ever written with a password the server already accepts:
//! a client that reads the Secret never gets a password that does not work yet, and the one it
//! had stops working — which is the point of a rotation. Sessions already open stay open on
//! both engines (a password is checked only when a session starts). The two writes run back to
//! back in one step, with the new password staged beforehand in a Secret of the request's own
//! ([`staging_name`]), so a restart between them resumes with the same password, and the
//! ServiceUser reconciler, which otherwise repairs a server password that differs from the
//! Secret, leaves a server password that matches the staged one alone.

use k8s_openapi::api::core::v1::Secret;
use tracing::instrument;

use crate::api::{DatabaseOpsRequest, ServiceUser};
use crate::sql::{Password, PasswordState, SqlAction};

use super::ops_request_plan::{Step, Target};
use super::secret::{self, Target as SecretTarget};
use super::status::ready_of;
use super::{Cluster, Context, Error, guard, service_user, sql_engine};

/// The key of the staged password in the staging Secret.
pub const STAGED_KEY: &str = "PASSWORD";

/// The Secret that holds a rotation's new password between its steps: one per ServiceUser
/// (a user has at most one unfinished rotation), in the user's namespace.
pub fn staging_name(user: &str) -> String {
    let mut name = format!("{user}-dbward-rotation");
    // A Secret name is at most 253 characters; ServiceUser names can be as long.
    name.truncate(253);
    name
}

/// Pure: the target as the step machine sees it.
pub fn target_state(user_ref: &str, user: Option<&ServiceUser>) -> Target {
    let Some(user) = user else {
        return Target::Missing(format!("ServiceUser {user_ref:?}"));
    };
    let ready = user
        .status
        .as_ref()
        .and_then(|s| ready_of(&s.common.conditions));
    match ready {
        Some(c) if c.status == "True" => Target::Ready,
        Some(c) => Target::NotReady(format!(
            "ServiceUser {user_ref:?} is not Ready ({})",
            c.reason
        )),
        None => Target::NotReady(format!(
            "ServiceUser {user_ref:?} has not been reconciled yet"
        )),
    }
}

/// Why a step did not complete.
#[derive(Debug)]
pub enum StepError {
    /// Try again (the step's timeout bounds how long): the server is unreachable, an API call
    /// failed.
    Retry(Error),
    /// The request cannot succeed: it ends `Failed` with this reason.
    Fail {
        /// CamelCase reason.
        reason: &'static str,
        /// Why (never a secret).
        message: String,
    },
}

impl From<Error> for StepError {
    fn from(e: Error) -> Self {
        match e {
            Error::Denied { message } => StepError::Fail {
                reason: "Denied",
                message,
            },
            e => StepError::Retry(e),
        }
    }
}

fn fail(reason: &'static str, message: impl Into<String>) -> StepError {
    StepError::Fail {
        reason,
        message: message.into(),
    }
}

/// The staging Secret of `request` for `user`, holding `password`, owned by the request.
pub fn staging_secret(request: &DatabaseOpsRequest, user: &str, password: &str) -> Secret {
    let target = SecretTarget {
        namespace: request.metadata.namespace.clone().unwrap_or_default(),
        name: staging_name(user),
        prefix: String::new(),
        labels: Default::default(),
        annotations: Default::default(),
    };
    target.build(
        &[(STAGED_KEY, password.to_owned())],
        service_user::owner_reference(request).as_ref(),
    )
}

/// Whether `secret` is `request`'s staging Secret (owned by it). dbward never takes a password
/// from, writes over or deletes a Secret of that name that is someone else's (a tenant's own).
pub fn staged_by(secret: &Secret, request: &DatabaseOpsRequest) -> bool {
    request
        .metadata
        .uid
        .as_deref()
        .is_some_and(|uid| owned_by_request(secret, Some(uid)))
}

/// Whether a DatabaseOpsRequest owns `secret` (`uid`: that one; `None`: any).
fn owned_by_request(secret: &Secret, uid: Option<&str>) -> bool {
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DatabaseOpsRequest" && uid.is_none_or(|uid| o.uid == uid))
}

fn not_staged_by_us(staging: &str) -> StepError {
    fail(
        "StagingSecretTaken",
        format!(
            "Secret {staging:?} exists and is not this request's: dbward neither uses nor writes over it; rename it, then create a new request"
        ),
    )
}

/// The staged password in `secret`, if any.
pub fn staged_password(secret: Option<&Secret>) -> Option<String> {
    secret
        .map(secret::decoded_data)
        .and_then(|mut d| d.remove(STAGED_KEY))
        .filter(|p| !p.is_empty())
}

/// Runs `step` of a RotateCredentials request for `user`; the message to record when done.
#[instrument(skip_all, fields(kind = "DatabaseOpsRequest", namespace = request.metadata.namespace.as_deref(), name = request.metadata.name.as_deref(), step = step.condition()))]
pub async fn run_step<C: Cluster>(
    ctx: &Context<C>,
    request: &DatabaseOpsRequest,
    user: &ServiceUser,
    step: Step,
) -> Result<String, StepError> {
    let namespace = request.metadata.namespace.clone().unwrap_or_default();
    let user_name = user.metadata.name.clone().unwrap_or_default();
    let staging = staging_name(&user_name);
    match step {
        Step::GenerateCredentials => {
            let existing = ctx.cluster.get_secret(&namespace, &staging).await?;
            if existing.as_ref().is_some_and(|s| !staged_by(s, request)) {
                return Err(not_staged_by_us(&staging));
            }
            if staged_password(existing.as_ref()).is_none() {
                let password = secret::generate_password().map_err(|e| {
                    fail("GenerateCredentialsFailed", format!("no randomness: {e}"))
                })?;
                ctx.cluster
                    .apply_secret(&staging_secret(request, &user_name, &password))
                    .await?;
            }
            Ok(format!(
                "a new password from the CSPRNG is staged in Secret {staging:?}"
            ))
        }
        Step::RotateCredentials => rotate(ctx, request, user, &staging).await,
        Step::IssueCertificates
        | Step::RemoveCertificates
        | Step::SyncCertificate
        | Step::ReloadPods => Err(fail(
            "Invalid",
            format!("{} is not a step of RotateCredentials", step.condition()),
        )),
    }
}

/// The server, then the Secret (see the module's documentation for why in this order).
async fn rotate<C: Cluster>(
    ctx: &Context<C>,
    request: &DatabaseOpsRequest,
    user: &ServiceUser,
    staging: &str,
) -> Result<String, StepError> {
    let namespace = request.metadata.namespace.clone().unwrap_or_default();
    let user_name = user.metadata.name.clone().unwrap_or_default();
    if user.spec.password_secret_ref.is_some() {
        return Err(fail(
            "PasswordSecretRefSet",
            format!(
                "ServiceUser {user_name:?} takes its password from spec.passwordSecretRef: change that Secret to rotate it; dbward rotates only passwords it generated"
            ),
        ));
    }
    let Some(target) = service_user::target(user) else {
        return Err(fail(
            "SecretTargetDisabled",
            format!(
                "ServiceUser {user_name:?} has connInfoSecretTargetDisabled: there is no Secret to hold a new password"
            ),
        ));
    };
    let staged = ctx.cluster.get_secret(&namespace, staging).await?;
    if staged.as_ref().is_some_and(|s| !staged_by(s, request)) {
        return Err(not_staged_by_us(staging));
    }
    let Some(password) = staged_password(staged.as_ref()) else {
        return Err(fail(
            "StagedCredentialsMissing",
            format!(
                "the staged password in Secret {staging:?} is gone; nothing was changed on the server since it was lost — create a new request"
            ),
        ));
    };
    let (service, handle) = ctx.service(&user.spec.binding.service_name).await?;
    guard::admit(ctx, &service, &handle, request).await?;
    guard::admit(ctx, &service, &handle, user).await?;
    service_user::check_pinned(user)?;
    let role_name = service_user::username(user);
    let role = handle
        .server
        .observe_role(&role_name, Some(password.as_str()))
        .await
        .map_err(Error::from)?;
    let Some(role) = role else {
        return Err(fail(
            "RoleNotFound",
            format!(
                "role {role_name:?} does not exist on DatabaseService {:?}",
                handle.name
            ),
        ));
    };
    if !guard::may_drop(&guard::marker_of(user), role.marker.as_ref()) {
        return Err(fail(
            "Denied",
            format!("role {role_name:?} does not belong to ServiceUser {user_name:?}"),
        ));
    }
    let mut changes = Vec::new();
    if role.password != PasswordState::Matches {
        handle
            .server
            .apply(&[SqlAction::SetPassword {
                name: role_name.clone(),
                password: Password::new(password.clone()),
            }])
            .await
            .map_err(Error::from)?;
        changes.push(format!("set on {:?}", handle.name));
    }
    let engine = sql_engine(service.spec.engine);
    let desired = service_user::credentials_secret(
        &target,
        &handle.info,
        &role_name,
        &password,
        &service_user::uri_database(user, engine),
        service_user::owner_reference(user).as_ref(),
    );
    let existing = ctx
        .cluster
        .get_secret(&target.namespace, &target.name)
        .await?;
    if service_user::secret_action(Some(&desired), existing.as_ref()).is_some() {
        ctx.cluster.apply_secret(&desired).await?;
        changes.push(format!("written to Secret {:?}", target.name));
    }
    Ok(if changes.is_empty() {
        format!(
            "the new password of role {role_name:?} was already on the server and in Secret {:?}",
            target.name
        )
    } else {
        format!(
            "the new password of role {role_name:?}: {}",
            changes.join(", then ")
        )
    })
}

/// The end of a RotateCredentials request: its staging Secret is deleted (not found is
/// success; a Secret of that name that is not the request's is left alone).
pub async fn finish<C: Cluster>(
    ctx: &Context<C>,
    request: &DatabaseOpsRequest,
    user_name: &str,
) -> Result<(), Error> {
    let namespace = request.metadata.namespace.clone().unwrap_or_default();
    let name = staging_name(user_name);
    match ctx.cluster.get_secret(&namespace, &name).await? {
        Some(secret) if staged_by(&secret, request) => {
            ctx.cluster.delete_secret(&namespace, &name).await
        }
        _ => Ok(()),
    }
}

/// For the ServiceUser reconciler: whether a rotation is under way whose staged password the
/// server already holds (between the two writes of [`Step::RotateCredentials`]). The
/// reconciler then leaves the password alone instead of setting the Secret's old one again.
pub async fn rotation_in_flight<C: Cluster>(
    ctx: &Context<C>,
    user: &ServiceUser,
    server: &crate::sql::Server,
    role: &str,
) -> Result<bool, Error> {
    let namespace = user.metadata.namespace.clone().unwrap_or_default();
    let name = staging_name(user.metadata.name.as_deref().unwrap_or_default());
    let staged = ctx.cluster.get_secret(&namespace, &name).await?;
    // Only a request's own staging Secret (a tenant's Secret of that name is not a rotation).
    let staged = staged.filter(|s| owned_by_request(s, None));
    let Some(password) = staged_password(staged.as_ref()) else {
        return Ok(false);
    };
    let state = server.observe_role(role, Some(password.as_str())).await?;
    Ok(state.is_some_and(|s| s.password == PasswordState::Matches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::service_user::ServiceUserStatus;
    use crate::api::{CommonStatus, ServiceUserSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn user(ready: Option<&str>) -> ServiceUser {
        let spec: ServiceUserSpec =
            serde_json::from_value(serde_json::json!({"project": "p", "serviceName": "svc"}))
                .unwrap();
        let mut u = ServiceUser::new("app", spec);
        u.status = ready.map(|status| ServiceUserStatus {
            common: CommonStatus {
                conditions: vec![Condition {
                    type_: "Ready".into(),
                    status: status.into(),
                    reason: "Reconciled".into(),
                    message: String::new(),
                    observed_generation: None,
                    last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                }],
                observed_generation: None,
            },
            username: None,
        });
        u
    }

    #[test]
    fn target_state_follows_the_ready_condition() {
        assert_eq!(
            target_state("app", None),
            Target::Missing("ServiceUser \"app\"".into())
        );
        assert_eq!(
            target_state("app", Some(&user(Some("True")))),
            Target::Ready
        );
        assert!(matches!(
            target_state("app", Some(&user(Some("False")))),
            Target::NotReady(m) if m.contains("not Ready (Reconciled)")
        ));
        assert!(matches!(
            target_state("app", Some(&user(None))),
            Target::NotReady(m) if m.contains("not been reconciled")
        ));
    }

    #[test]
    fn staging_secret_is_owned_labelled_and_bounded() {
        let mut request: DatabaseOpsRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "DatabaseOpsRequest",
            "metadata": {"name": "rot", "namespace": "team-a", "uid": "u-1"},
            "spec": {"type": "RotateCredentials", "userRef": {"name": "app"}}
        }))
        .unwrap();
        let s = staging_secret(&request, "app", "pw");
        assert_eq!(s.metadata.name.as_deref(), Some("app-dbward-rotation"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(staged_password(Some(&s)).as_deref(), Some("pw"));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("DatabaseOpsRequest", "u-1")
        );
        assert_eq!(
            s.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
            "dbward"
        );
        assert_eq!(staging_name(&"x".repeat(300)).len(), 253);
        request.metadata.uid = None;
        assert!(
            staging_secret(&request, "app", "pw")
                .metadata
                .owner_references
                .is_none()
        );
        assert_eq!(staged_password(None), None);
    }
}
