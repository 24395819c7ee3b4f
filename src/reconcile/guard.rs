//! The controllers' own gate, before any plan: the admission rules run again on the object
//! (whatever path it took into the API server), and every role or database an object would
//! touch is checked for ownership on the server itself.
//!
//! An object that reached the API server without the webhook — the webhook was down with
//! `failurePolicy: Ignore`, not yet registered, or skipped its namespace — is judged here by the
//! same engine with a snapshot of what the rules read, and refused with `Ready=False`, `Denied`
//! when the webhook would have refused it.

use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use serde::Serialize;
use serde_json::Value;

use crate::admission::{self, Operation, Request, Snapshot};
use crate::api::{AdmissionPolicySpec, DatabaseService};
use crate::sql::{self, Claim, OwnerMarker, RoleState};

use super::context::ServiceHandle;
use super::{Cluster, Context, Error};

/// Runs the admission rules on `object` as the webhook would on its creation, with a snapshot of
/// the service, its connector Secret (as `handle` read it), the object's namespace and the
/// AdmissionPolicy. Returns the policy, for the ownership checks that follow.
pub async fn admit<C: Cluster, K>(
    ctx: &Context<C>,
    service: &DatabaseService,
    handle: &ServiceHandle,
    object: &K,
) -> Result<AdmissionPolicySpec, Error>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let policy = ctx.cluster.get_policy().await?;
    let mut snapshot = Snapshot::new(&ctx.operator_namespace, ctx.cluster.is_complete());
    snapshot.policy = policy.clone();
    insert(&mut snapshot, service);
    insert(&mut snapshot, &with_kind(&handle.connector));
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    // Namespace labels matter only to an `allowedNamespaces.selector`.
    let selector = service
        .spec
        .allowed_namespaces
        .as_ref()
        .is_some_and(|a| a.selector.is_some());
    if selector && let Some(ns) = ctx.cluster.get_namespace(&namespace).await? {
        let mut value = serde_json::to_value(&ns).unwrap_or(Value::Null);
        value["apiVersion"] = "v1".into();
        value["kind"] = "Namespace".into();
        snapshot.insert(&value);
    }
    verdict_on(&snapshot, object)?;
    Ok(policy)
}

/// [`admit`] for a kind whose rules read only the AdmissionPolicy (a DatabaseQueryResource):
/// `policy` is the one in force.
pub fn admit_alone<C: Cluster, K>(
    ctx: &Context<C>,
    policy: &AdmissionPolicySpec,
    object: &K,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let mut snapshot = Snapshot::new(&ctx.operator_namespace, ctx.cluster.is_complete());
    snapshot.policy = policy.clone();
    verdict_on(&snapshot, object)
}

/// The admission engine's verdict on creating `object`, with `snapshot`.
fn verdict_on<K>(snapshot: &Snapshot, object: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Serialize,
{
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    let value = serde_json::to_value(object).map_err(|e| Error::Invalid {
        message: format!("cannot read the object: {e}"),
    })?;
    let kind = K::kind(&());
    let name = object.meta().name.clone().unwrap_or_default();
    let verdict = admission::admit(
        &Request {
            operation: Operation::Create,
            kind: &kind,
            namespace: Some(&namespace),
            name: &name,
            object: Some(&value),
            old_object: None,
            subresource: None,
        },
        snapshot,
    );
    if !verdict.allowed {
        return Err(Error::Denied {
            message: verdict.message(&kind, &name),
        });
    }
    Ok(())
}

fn insert<T: Serialize>(snapshot: &mut Snapshot, object: &T) {
    if let Ok(value) = serde_json::to_value(object) {
        snapshot.insert(&value);
    }
}

fn with_kind(secret: &Secret) -> Value {
    let mut value = serde_json::to_value(secret).unwrap_or(Value::Null);
    value["apiVersion"] = "v1".into();
    value["kind"] = "Secret".into();
    value
}

/// Pure: a name `spec` asks for (`field`) that differs from the one pinned in `status` — edited
/// while the webhook was not looking — is refused as the immutable field it is, never followed.
pub fn check_pinned<K: Resource<DynamicType = ()>>(
    object: &K,
    field: &str,
    what: &str,
    pinned: &str,
    requested: &str,
) -> Result<(), Error> {
    if pinned == requested {
        return Ok(());
    }
    Err(Error::Denied {
        message: format!(
            "{}.{} {:?} is invalid: {field}: Invalid value: {requested:?}: field is immutable (the {what} is {pinned:?})",
            K::kind(&()),
            crate::api::GROUP,
            object.meta().name.as_deref().unwrap_or_default()
        ),
    })
}

/// The marker an object's roles and databases carry.
pub fn marker_of<K: Resource<DynamicType = ()>>(object: &K) -> OwnerMarker {
    let meta = object.meta();
    OwnerMarker::new(
        meta.namespace.as_deref().unwrap_or_default(),
        &K::kind(&()),
        meta.name.as_deref().unwrap_or_default(),
        meta.uid.as_deref(),
    )
}

/// A role or database an object wants on a server.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// `role` or `database`.
    pub what: &'static str,
    /// Its name on the server.
    pub name: &'a str,
    /// The DatabaseService.
    pub service: &'a str,
}

/// What the object's own role or database may be: refused with [`Error::NameTaken`] unless it
/// is free, already the object's, or adoptable by the object's namespace. `observed`: `None`
/// when the name does not exist, else its marker.
pub fn own_name(
    wanted: Wanted<'_>,
    desired: &OwnerMarker,
    observed: Option<Option<&OwnerMarker>>,
    adoptable: bool,
) -> Result<Claim, Error> {
    let claim = sql::claim(desired, observed.is_some(), observed.flatten(), adoptable);
    if claim.permitted() {
        Ok(claim)
    } else {
        Err(Error::NameTaken {
            what: wanted.what,
            name: wanted.name.to_owned(),
            service: wanted.service.to_owned(),
            kind: desired.kind.clone(),
        })
    }
}

/// Whether a deleted object may drop what it names: only what carries its own marker.
pub fn may_drop(desired: &OwnerMarker, observed: Option<&OwnerMarker>) -> bool {
    observed.is_some_and(|m| m.same_object(desired))
}

/// Memberships: every role of `in_roles` must belong to `namespace` on the server, or be listed
/// in the policy's `limits.allowedInRoles`.
pub fn check_memberships<'a>(
    in_roles: impl IntoIterator<Item = &'a String>,
    observed: &std::collections::BTreeMap<String, RoleState>,
    namespace: &str,
    policy: &AdmissionPolicySpec,
) -> Result<(), Error> {
    for (i, role) in in_roles.into_iter().enumerate() {
        if policy.limits.allowed_in_roles.contains(role) {
            continue;
        }
        let marker = observed.get(role).and_then(|r| r.marker.as_ref());
        if !sql::owned_by_namespace(marker, namespace) {
            return Err(Error::NotOwned {
                field: format!("spec.inRoles[{i}]"),
                what: "role",
                name: role.clone(),
                reason: "is not a role of this namespace's objects, nor listed in the AdmissionPolicy's limits.allowedInRoles".to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_markers_may_be_dropped() {
        let me = OwnerMarker::new("a", "Database", "orders", Some("u1"));
        let recreated = OwnerMarker::new("a", "Database", "orders", Some("u2"));
        let other = OwnerMarker::new("b", "Database", "orders", Some("u1"));
        assert!(may_drop(&me, Some(&me)));
        assert!(may_drop(&me, Some(&recreated)));
        assert!(!may_drop(&me, Some(&other)));
        assert!(!may_drop(&me, None));
    }

    #[test]
    fn taken_names_are_refused_without_saying_whose() {
        let me = OwnerMarker::new("evil", "ServiceUser", "x", Some("u"));
        let victim = OwnerMarker::new("team-a", "ServiceUser", "app", Some("v"));
        let wanted = Wanted {
            what: "role",
            name: "app",
            service: "svc",
        };
        let err = own_name(wanted, &me, Some(Some(&victim)), true).unwrap_err();
        assert_eq!(err.reason(), "NameTaken");
        let message = err.to_string();
        assert!(!message.contains("team-a"), "{message}");
        assert_eq!(own_name(wanted, &me, None, false).unwrap(), Claim::Free);
        assert_eq!(
            own_name(wanted, &me, Some(None), true).unwrap(),
            Claim::Adopt
        );
    }
}
