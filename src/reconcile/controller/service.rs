//! The DatabaseService controller: probe the server and report it in `status`, and on deletion
//! wait, through the finalizer, until no object uses the service any more.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::EventType;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::api::database_service::DatabaseServiceStatus;
use crate::api::{ConnectionPool, Database, DatabaseClaim, DatabaseService, ServiceUser};

use super::super::kube_cluster::kube_error;
use super::super::status::{Readiness, now, with_ready};
use super::super::{Error, FIELD_MANAGER, FINALIZER, database_service};
use super::{State, set_finalizer};

/// One probe of a DatabaseService: status written when it changed, requeued every
/// [`database_service::PROBE_INTERVAL`] (sooner, with backoff, while unreachable).
pub async fn reconcile_service(
    service: Arc<DatabaseService>,
    state: Arc<State>,
) -> Result<Requeue, Error> {
    let name = service.name_any();
    let api: Api<DatabaseService> = Api::all(state.client());
    let has_finalizer = service.finalizers().iter().any(|f| f == FINALIZER);
    if service.meta().deletion_timestamp.is_some() {
        return delete_service(&state, &api, &service, has_finalizer).await;
    }
    let service = if has_finalizer {
        service
    } else {
        Arc::new(set_finalizer(&api, service.as_ref(), true).await?)
    };
    let probe = database_service::probe(&state.ctx, &service).await;
    let status = database_service::status_after(
        service.status.as_ref(),
        service.metadata.generation,
        &probe,
        &now(),
    );
    let was_reachable = service.status.as_ref().and_then(|s| s.reachable);
    if service.status.as_ref() != Some(&status) {
        write_service_status(&api, &name, &status).await?;
    }
    let key = format!("DatabaseService//{name}");
    match probe {
        Ok(_) => {
            if was_reachable == Some(false) {
                state
                    .publish(
                        service.as_ref(),
                        EventType::Normal,
                        "Reachable",
                        "the server is reachable again".to_owned(),
                    )
                    .await;
            }
            state.metrics.count("DatabaseService", "ok");
            state.succeeded(&key);
            Ok(Requeue::requeue(database_service::PROBE_INTERVAL))
        }
        Err(e) => {
            state.metrics.count("DatabaseService", e.category());
            if was_reachable != Some(false) {
                state
                    .publish(
                        service.as_ref(),
                        EventType::Warning,
                        e.reason(),
                        e.to_string(),
                    )
                    .await;
            }
            let delay = state.backoff(&key).min(database_service::PROBE_INTERVAL);
            Ok(Requeue::requeue(delay))
        }
    }
}

async fn write_service_status(
    api: &Api<DatabaseService>,
    name: &str,
    status: &DatabaseServiceStatus,
) -> Result<(), Error> {
    let body = json!({
        "apiVersion": DatabaseService::api_version(&()),
        "kind": "DatabaseService",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(kube_error("patch status"))?;
    Ok(())
}

/// How often a DatabaseService being deleted looks again for objects that still use it.
pub const IN_USE_RETRY: Duration = Duration::from_secs(15);

/// A deleted DatabaseService waits, through its finalizer, until no Database, ServiceUser,
/// ConnectionPool or DatabaseClaim uses it any more (`Ready=False`, reason `InUse`, with their
/// count): so every dependent's own cleanup can still reach the server, and no role or database
/// is left behind live and unmanaged. Then the finalizer goes and the server is forgotten.
async fn delete_service(
    state: &State,
    api: &Api<DatabaseService>,
    service: &DatabaseService,
    has_finalizer: bool,
) -> Result<Requeue, Error> {
    let name = service.name_any();
    if !has_finalizer {
        state.ctx.forget(&name);
        return Ok(Requeue::await_change());
    }
    let users = dependents(&state.client(), &name).await?;
    if users.is_empty() {
        set_finalizer(api, service, false).await?;
        state.ctx.forget(&name);
        return Ok(Requeue::await_change());
    }
    let message = format!(
        "waiting to be deleted until no object uses it: {}",
        users
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut status = service.status.clone().unwrap_or_default();
    status.conditions = with_ready(
        &status.conditions,
        &Readiness::not_ready("InUse", message),
        service.metadata.generation,
        &now(),
    );
    if service.status.as_ref() != Some(&status) {
        write_service_status(api, &name, &status).await?;
    }
    Ok(Requeue::requeue(IN_USE_RETRY))
}

/// The objects naming DatabaseService `service`, counted by kind (kinds with none left out).
async fn dependents(client: &Client, service: &str) -> Result<Vec<(&'static str, usize)>, Error> {
    async fn count<K>(
        client: &Client,
        service: &str,
        kind: &'static str,
        of: fn(&K) -> &str,
    ) -> Result<Option<(&'static str, usize)>, Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let list = Api::<K>::all(client.clone())
            .list(&kube::api::ListParams::default())
            .await
            .map_err(kube_error("list dependents"))?;
        let n = list.items.iter().filter(|o| of(o) == service).count();
        Ok((n > 0).then_some((kind, n)))
    }
    let found = [
        count::<Database>(client, service, "Databases", |o| {
            &o.spec.binding.service_name
        })
        .await?,
        count::<ServiceUser>(client, service, "ServiceUsers", |o| {
            &o.spec.binding.service_name
        })
        .await?,
        count::<DatabaseClaim>(client, service, "DatabaseClaims", |o| {
            &o.spec.binding.service_name
        })
        .await?,
        count::<ConnectionPool>(client, service, "ConnectionPools", |o| {
            &o.spec.binding.service_name
        })
        .await?,
    ];
    Ok(found.into_iter().flatten().collect())
}
