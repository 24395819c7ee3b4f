//! `DatabaseClaim`: "give this namespace its own database" — a database, a non-privileged user
//! that owns it and nothing else, and a Secret with the connection details.
//!
//! The names are derived from namespace and name ([`api::database_claim::derived_name`]) on
//! the first reconcile and pinned in `status`, so a later change can never retarget a drop.
//! On PostgreSQL the user owns the database; MySQL has no database owners, so the user gets
//! the `owner` privilege level on it instead.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use tracing::instrument;

use crate::api::database_claim::{SECRET_KEYS, SECRET_PREFIX, derived_name};
use crate::api::{self, DatabaseClaim, DeletionPolicy};
use crate::sql::{
    self, ConnectionInfo, DatabaseState, Engine, OwnerMarker, Password, PrivilegeLevel,
    PrivilegeSpec, RoleSpec, SqlAction,
};

use super::guard::{self, Wanted};
use super::secret::{self, Target};
use super::service_user::{
    Observed as UserObserved, owner_reference, resolve_password, secret_action,
};
use super::{Action, Applied, Cluster, Context, Error, Pinned, Prepared, act, sql_engine};

/// The claim's names on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The database.
    pub database: String,
    /// The user.
    pub user: String,
}

/// The pinned names from `status`, else freshly derived ones within the engine's limits.
pub fn names(claim: &DatabaseClaim, engine: api::Engine) -> Names {
    let namespace = claim.metadata.namespace.as_deref().unwrap_or_default();
    let name = claim.metadata.name.as_deref().unwrap_or_default();
    let status = claim.status.as_ref();
    Names {
        database: status
            .and_then(|s| s.database_name.clone())
            .unwrap_or_else(|| derived_name(namespace, name, engine.max_database_name())),
        user: status
            .and_then(|s| s.username.clone())
            .unwrap_or_else(|| derived_name(namespace, name, engine.max_role_name())),
    }
}

/// Where the connection details go; `None` when `connInfoSecretTargetDisabled`.
pub fn target(claim: &DatabaseClaim) -> Option<Target> {
    Target::resolve(
        &claim.spec.secret,
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default(),
        SECRET_PREFIX,
    )
}

/// The connection Secret: exactly [`SECRET_KEYS`] after the prefix.
pub fn connection_secret(
    target: &Target,
    info: &ConnectionInfo,
    names: &Names,
    password: &str,
    owner: Option<&OwnerReference>,
) -> Secret {
    let values = SECRET_KEYS.map(|key| {
        let value = match key {
            "HOST" => info.host.clone(),
            "PORT" => info.port.to_string(),
            "DATABASE" => names.database.clone(),
            "USER" => names.user.clone(),
            "PASSWORD" => password.to_owned(),
            "SSLMODE" => secret::sslmode(info),
            "DATABASE_URI" => secret::database_uri(info, &names.user, password, &names.database),
            _ => String::new(),
        };
        (key, value)
    });
    target.build(&values, owner)
}

/// Everything the plan aims for (its `Debug` hides the Secret's values).
#[derive(Clone)]
pub struct Desired {
    /// The user: login, no other flag.
    pub role: RoleSpec,
    /// The database (owned by the user on PostgreSQL).
    pub database: sql::DatabaseSpec,
    /// The user's privileges: none beyond ownership on PostgreSQL, `owner` on its database on
    /// MySQL.
    pub privileges: Vec<PrivilegeSpec>,
    /// The connection Secret, `None` when disabled.
    pub secret: Option<Secret>,
}

impl std::fmt::Debug for Desired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desired")
            .field("role", &self.role)
            .field("database", &self.database)
            .field("privileges", &self.privileges)
            .field("secret", &self.secret.as_ref().map(super::secret::Redacted))
            .finish()
    }
}

/// The desired user, database and privileges for `names` on `engine`, both marked as the
/// claim's (`marker`).
pub fn desired(
    engine: Engine,
    names: &Names,
    password: Option<Password>,
    marker: Option<OwnerMarker>,
) -> Desired {
    let postgres = engine == Engine::Postgres;
    Desired {
        role: RoleSpec {
            name: names.user.clone(),
            flags: BTreeSet::new(),
            password,
            marker: marker.clone(),
            ..RoleSpec::default()
        },
        database: sql::DatabaseSpec {
            name: names.database.clone(),
            owner: postgres.then(|| names.user.clone()),
            lc_collate: None,
            lc_ctype: None,
            marker,
        },
        privileges: if postgres {
            Vec::new()
        } else {
            vec![PrivilegeSpec {
                database: names.database.clone(),
                level: PrivilegeLevel::Owner,
            }]
        },
        secret: None,
    }
}

/// What the plan compares against.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The user, its privileges, and the Secret.
    pub user: UserObserved,
    /// The database, `None` when missing.
    pub database: Option<DatabaseState>,
}

/// Pure: the user first (it owns the database), then the database, the privileges, the Secret.
pub fn plan(engine: Engine, desired: &Desired, observed: &Observed) -> Vec<Action> {
    let mut sql_actions = sql::plan_role(engine, &desired.role, observed.user.role.as_ref());
    sql_actions.extend(sql::plan_database(
        &desired.database,
        observed.database.as_ref(),
    ));
    sql_actions.extend(sql::plan_privileges(
        engine,
        &desired.role.name,
        &desired.privileges,
        &observed.user.privileges,
    ));
    let mut actions: Vec<Action> = sql_actions.into_iter().map(Action::Sql).collect();
    actions.extend(secret_action(
        desired.secret.as_ref(),
        observed.user.secret.as_ref(),
    ));
    actions
}

/// Observe → check → plan → act. Returns the names used.
pub async fn reconcile<C: Cluster>(
    ctx: &Context<C>,
    claim: &DatabaseClaim,
) -> Result<(Applied, Names), Error> {
    let prepared = prepare(ctx, claim).await?;
    let names = Names {
        database: prepared.pinned.database.clone().unwrap_or_default(),
        user: prepared.pinned.user.clone().unwrap_or_default(),
    };
    Ok((prepared.run(&ctx.cluster).await?, names))
}

/// Observe, check (admission again, then ownership on the server: the user and the database
/// must be free or the claim's own) and plan, writing nothing.
#[instrument(skip_all, fields(kind = "DatabaseClaim", namespace = claim.metadata.namespace.as_deref(), name = claim.metadata.name.as_deref()))]
pub async fn prepare<C: Cluster>(
    ctx: &Context<C>,
    claim: &DatabaseClaim,
) -> Result<Prepared, Error> {
    let (service, handle) = ctx.service(&claim.spec.binding.service_name).await?;
    let policy = guard::admit(ctx, &service, &handle, claim).await?;
    let engine = sql_engine(service.spec.engine);
    let names = names(claim, service.spec.engine);
    let namespace = claim.metadata.namespace.clone().unwrap_or_default();
    let target = target(claim);
    let existing = match &target {
        Some(t) => ctx.cluster.get_secret(&t.namespace, &t.name).await?,
        None => None,
    };
    let password = resolve_password(
        &ctx.cluster,
        &namespace,
        None,
        target.as_ref(),
        existing.as_ref(),
    )
    .await?;
    let role = handle
        .server
        .observe_role(&names.user, password.as_ref().map(Password::expose))
        .await?;
    let database = handle.server.observe_database(&names.database).await?;
    let mut held = handle
        .server
        .observe_privileges(&[names.user.as_str()], &[names.database.as_str()])
        .await?;
    let marker = guard::marker_of(claim);
    let service_name = service.metadata.name.as_deref().unwrap_or_default();
    guard::own_name(
        Wanted {
            what: "role",
            name: &names.user,
            service: service_name,
        },
        &marker,
        role.as_ref().map(|r| r.marker.as_ref()),
        policy.adopts_role(service_name, &namespace, &names.user),
    )?;
    guard::own_name(
        Wanted {
            what: "database",
            name: &names.database,
            service: service_name,
        },
        &marker,
        database.as_ref().map(|d| d.marker.as_ref()),
        policy.adopts_database(service_name, &namespace, &names.database),
    )?;
    let mut desired = desired(engine, &names, password.clone(), Some(marker));
    desired.secret = match (&target, &password) {
        (Some(t), Some(p)) => Some(connection_secret(
            t,
            &handle.info,
            &names,
            p.expose(),
            owner_reference(claim).as_ref(),
        )),
        _ => None,
    };
    let observed = Observed {
        user: UserObserved {
            role,
            privileges: held.remove(&names.user).unwrap_or_default(),
            secret: existing,
            ..UserObserved::default()
        },
        database,
    };
    Ok(Prepared {
        server: handle.server.clone(),
        actions: plan(engine, &desired, &observed),
        warnings: Vec::new(),
        pinned: Pinned {
            database: Some(names.database),
            user: Some(names.user),
        },
        pending: None,
    })
}

/// Pure: the drops deleting the claim performs (of what exists): with `Delete`, the database,
/// then always the user.
pub fn cleanup_plan(
    claim: &DatabaseClaim,
    names: &Names,
    database_exists: bool,
    user_exists: bool,
) -> Vec<Action> {
    let mut actions = Vec::new();
    if claim.spec.deletion_policy == DeletionPolicy::Delete && database_exists {
        actions.push(Action::Sql(SqlAction::DropDatabase {
            name: names.database.clone(),
        }));
    }
    if user_exists {
        actions.push(Action::Sql(SqlAction::DropRole {
            name: names.user.clone(),
        }));
    }
    actions
}

/// Drops the user and, with `deletionPolicy: Delete`, the database.
#[instrument(skip_all, fields(kind = "DatabaseClaim", namespace = claim.metadata.namespace.as_deref(), name = claim.metadata.name.as_deref()))]
pub async fn cleanup<C: Cluster>(
    ctx: &Context<C>,
    claim: &DatabaseClaim,
) -> Result<Applied, Error> {
    let (service, handle) = match ctx.service(&claim.spec.binding.service_name).await {
        Ok(found) => found,
        Err(Error::ServiceNotFound { name }) => return Ok(super::service_gone(&name)),
        Err(e) => return Err(e),
    };
    let names = names(claim, service.spec.engine);
    let marker = guard::marker_of(claim);
    let database = handle.server.observe_database(&names.database).await?;
    let user = handle.server.observe_role(&names.user, None).await?;
    let mut warnings = Vec::new();
    // Only what carries the claim's own marker is dropped.
    let database_exists = match &database {
        Some(d) if guard::may_drop(&marker, d.marker.as_ref()) => true,
        Some(_) => {
            warnings.push(format!(
                "database {:?} kept: it does not belong to this DatabaseClaim",
                names.database
            ));
            false
        }
        None => false,
    };
    let user_exists = match &user {
        Some(u) if guard::may_drop(&marker, u.marker.as_ref()) => true,
        Some(_) => {
            warnings.push(format!(
                "role {:?} kept: it does not belong to this DatabaseClaim",
                names.user
            ));
            false
        }
        None => false,
    };
    let actions = cleanup_plan(claim, &names, database_exists, user_exists);
    // One action at a time, so a database still in use leaves the user in place.
    for action in &actions {
        act(&handle.server, &ctx.cluster, std::slice::from_ref(action)).await?;
    }
    Ok(Applied { actions, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::database_claim::DatabaseClaimStatus;
    use crate::api::{DatabaseClaimSpec, SecretTarget, ServiceBinding};

    fn claim(policy: DeletionPolicy) -> DatabaseClaim {
        let mut c = DatabaseClaim::new(
            "store",
            DatabaseClaimSpec {
                binding: ServiceBinding {
                    project: "p".into(),
                    service_name: "svc".into(),
                    auth_secret_ref: None,
                },
                secret: SecretTarget::default(),
                deletion_policy: policy,
            },
        );
        c.metadata.namespace = Some("team-b".into());
        c
    }

    #[test]
    fn names_are_derived_then_pinned() {
        let mut c = claim(DeletionPolicy::Retain);
        let derived = names(&c, api::Engine::Postgres);
        assert!(derived.database.starts_with("team_b_store_"), "{derived:?}");
        assert_eq!(derived.user, derived.database);
        c.status = Some(DatabaseClaimStatus {
            database_name: Some("pinned_db".into()),
            username: Some("pinned_user".into()),
            ..DatabaseClaimStatus::default()
        });
        c.metadata.name = Some("renamed".into());
        assert_eq!(
            names(&c, api::Engine::Postgres),
            Names {
                database: "pinned_db".into(),
                user: "pinned_user".into()
            }
        );
    }

    #[test]
    fn plans_user_then_owned_database_and_secret() {
        let c = claim(DeletionPolicy::Retain);
        let n = names(&c, api::Engine::Postgres);
        let t = target(&c).unwrap();
        let info = ConnectionInfo {
            engine: Engine::Postgres,
            host: "h".into(),
            port: 5432,
            user: "postgres".into(),
            password: "x".into(),
            sslmode: Some("require".into()),
            ca_cert: None,
        };
        let mut d = desired(Engine::Postgres, &n, Some(Password::new("pw")), None);
        d.secret = Some(connection_secret(&t, &info, &n, "pw", None));
        let actions = plan(Engine::Postgres, &d, &Observed::default());
        assert!(matches!(
            &actions[..],
            [
                Action::Sql(SqlAction::CreateRole { .. }),
                Action::Sql(SqlAction::CreateDatabase { owner: Some(_), .. }),
                Action::ApplySecret(_)
            ]
        ));
        let data = secret::decoded_data(d.secret.as_ref().unwrap());
        assert_eq!(data.len(), SECRET_KEYS.len());
        assert_eq!(data["DATABASECLAIM_DATABASE"], n.database);
        assert_eq!(data["DATABASECLAIM_SSLMODE"], "require");

        let my = desired(Engine::Mysql, &n, None, None);
        assert_eq!(my.database.owner, None);
        assert_eq!(my.privileges[0].level, PrivilegeLevel::Owner);
    }

    #[test]
    fn cleanup_drops_user_and_database_per_policy() {
        let n = names(&claim(DeletionPolicy::Retain), api::Engine::Postgres);
        let retain = cleanup_plan(&claim(DeletionPolicy::Retain), &n, true, true);
        assert!(matches!(
            &retain[..],
            [Action::Sql(SqlAction::DropRole { .. })]
        ));
        let delete = cleanup_plan(&claim(DeletionPolicy::Delete), &n, true, true);
        assert!(matches!(
            &delete[..],
            [
                Action::Sql(SqlAction::DropDatabase { .. }),
                Action::Sql(SqlAction::DropRole { .. })
            ]
        ));
        assert_eq!(
            cleanup_plan(&claim(DeletionPolicy::Delete), &n, false, false),
            vec![]
        );
    }
}
