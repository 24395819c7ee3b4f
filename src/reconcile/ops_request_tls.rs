//! The steps of a `ReconfigureTLS` request on a DatabaseService's pooler that touch only
//! Secrets (the step that reconciles the pools is the controller's, in
//! `controller/ops_request.rs`). What the request leaves is the pooler's serving Secret
//! ([`super::pooler_tls`]); the ConnectionPool reconciler renders the pooler from it.

use tracing::instrument;

use crate::api::{DatabaseOpsRequest, DatabaseService};

use super::ops_request::StepError;
use super::ops_request_plan::{Step, Target};
use super::pooler_tls;
use super::status::ready_of;
use super::{Cluster, Context};

/// The target as the step machine sees it: the DatabaseService and its `Ready`.
pub fn target_state(name: &str, service: Option<&DatabaseService>) -> Target {
    let Some(service) = service else {
        return Target::Missing(format!("DatabaseService {name:?}"));
    };
    match service
        .status
        .as_ref()
        .and_then(|s| ready_of(&s.conditions))
    {
        Some(c) if c.status == "True" => Target::Ready,
        Some(c) => Target::NotReady(format!(
            "DatabaseService {name:?} is not Ready ({})",
            c.reason
        )),
        None => Target::NotReady(format!("DatabaseService {name:?} has not been probed yet")),
    }
}

fn fail(reason: &'static str, message: impl Into<String>) -> StepError {
    StepError::Fail {
        reason,
        message: message.into(),
    }
}

/// Runs a Secret step of `request` on `service`'s pooler; the message says what it did.
#[instrument(skip_all, fields(kind = "DatabaseOpsRequest", namespace = request.metadata.namespace.as_deref(), name = request.metadata.name.as_deref(), step = step.condition()))]
pub async fn run_step<C: Cluster>(
    ctx: &Context<C>,
    request: &DatabaseOpsRequest,
    service: &DatabaseService,
    step: Step,
) -> Result<String, StepError> {
    let svc = service.metadata.name.clone().unwrap_or_default();
    let ns = ctx.operator_namespace.clone();
    let tls_name = pooler_tls::tls_secret_name(&svc);
    match step {
        Step::IssueCertificates => {
            if let Some((reason, message)) = pooler_tls::admin_secret_set(service) {
                return Err(fail(reason, message));
            }
            let change = request.spec.tls.clone().unwrap_or_default();
            let policy = pooler_tls::policy(&change).map_err(|(r, m)| fail(r, m))?;
            let ca_name = pooler_tls::ca_secret_name(&svc);
            let stored = ctx.cluster.get_secret(&ns, &ca_name).await?;
            let ca = pooler_tls::ca_or_new(&svc, stored.as_ref())
                .map_err(|e| fail(Step::IssueCertificates.failure(), e))?;
            let ca_secret = pooler_tls::ca_secret(service, &ns, &ca);
            if stored.as_ref().map(|s| &s.data) != Some(&ca_secret.data) {
                ctx.cluster.apply_secret(&ca_secret).await?;
            }
            let serving = pooler_tls::issue(&ca, &svc, &ns)
                .map_err(|e| fail(Step::IssueCertificates.failure(), e))?;
            let secret = pooler_tls::tls_secret(service, &ns, &ca, &serving, &policy);
            ctx.cluster.apply_secret(&secret).await?;
            Ok(format!(
                "a certificate for {} from dbward's CA of the pooler (Secret {ca_name:?}) is in Secret {tls_name:?}; clients are told sslmode {}",
                pooler_tls::dns_names(&svc, &ns).join(", "),
                policy.sslmode
            ))
        }
        Step::RemoveCertificates => {
            ctx.cluster.delete_secret(&ns, &tls_name).await?;
            Ok(format!(
                "Secret {tls_name:?} is deleted: the pooler serves clients without TLS"
            ))
        }
        Step::GenerateCredentials
        | Step::RotateCredentials
        | Step::SyncCertificate
        | Step::ReloadPods => Err(fail(
            "Invalid",
            format!("{} is not a Secret step", step.condition()),
        )),
    }
}
