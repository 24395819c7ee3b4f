//! `Database`: a database on a DatabaseService.
//!
//! Observe the database → plan ([`crate::sql::plan_database`]: create it, fix its owner) → act.
//! Deletion drops it only with `deletionPolicy: Delete` and never while `terminationProtection`
//! is set; a database with connections is reported (`DatabaseInUse`) and retried, never forced.

use tracing::instrument;

use crate::api::{AdmissionPolicySpec, Database, DatabaseService, DeletionPolicy};
use crate::sql::{self, DatabaseState, Engine, RoleState, SqlAction};

use super::guard::{self, Wanted};
use super::{Action, Applied, Cluster, Context, Error, Pinned, Prepared, act, sql_engine};

/// The database's name on the server: the one pinned in `status`, else `spec.databaseName`,
/// default `metadata.name`.
pub fn database_name(db: &Database) -> String {
    db.status
        .as_ref()
        .and_then(|s| s.database_name.clone())
        .unwrap_or_else(|| requested_name(db))
}

fn requested_name(db: &Database) -> String {
    db.spec
        .database_name
        .clone()
        .unwrap_or_else(|| db.metadata.name.clone().unwrap_or_default())
}

/// Pure: a `spec.databaseName` that differs from the pinned name is refused, not followed.
pub fn check_pinned(db: &Database) -> Result<(), Error> {
    let (pinned, requested) = (database_name(db), requested_name(db));
    guard::check_pinned(db, "spec.databaseName", "database", &pinned, &requested)
}

/// The desired database. The owner is a PostgreSQL notion (MySQL has no database owners), so
/// it is ignored on MySQL; so is `lcCtype`, which MySQL reads as a character set.
pub fn desired(db: &Database, engine: Engine) -> sql::DatabaseSpec {
    let postgres = engine == Engine::Postgres;
    sql::DatabaseSpec {
        name: database_name(db),
        owner: db.spec.owner.clone().filter(|_| postgres),
        lc_collate: db.spec.lc_collate.clone(),
        lc_ctype: db.spec.lc_ctype.clone().filter(|_| postgres),
        marker: Some(guard::marker_of(db)),
    }
}

/// Pure: the actions that make the server hold `desired`.
pub fn plan(desired: &sql::DatabaseSpec, observed: Option<&DatabaseState>) -> Vec<Action> {
    sql::plan_database(desired, observed)
        .into_iter()
        .map(Action::Sql)
        .collect()
}

/// Observe → check → plan → act.
pub async fn reconcile<C: Cluster>(ctx: &Context<C>, db: &Database) -> Result<Applied, Error> {
    prepare(ctx, db).await?.run(&ctx.cluster).await
}

/// Observe, check (admission again, then ownership on the server) and plan, writing nothing.
#[instrument(skip_all, fields(kind = "Database", namespace = db.metadata.namespace.as_deref(), name = db.metadata.name.as_deref()))]
pub async fn prepare<C: Cluster>(ctx: &Context<C>, db: &Database) -> Result<Prepared, Error> {
    let (service, handle) = ctx.service(&db.spec.binding.service_name).await?;
    let policy = guard::admit(ctx, &service, &handle, db).await?;
    check_pinned(db)?;
    let desired = desired(db, sql_engine(service.spec.engine));
    let observed = handle.server.observe_database(&desired.name).await?;
    let owner = match &desired.owner {
        Some(owner) => handle.server.observe_role(owner, None).await?,
        None => None,
    };
    authorize(
        db,
        &service,
        &policy,
        &desired,
        observed.as_ref(),
        owner.as_ref(),
    )?;
    let warnings = observed
        .as_ref()
        .and_then(|o| sql::database_immutable_drift(&desired, o))
        .into_iter()
        .collect();
    Ok(Prepared {
        server: handle.server.clone(),
        actions: plan(&desired, observed.as_ref()),
        warnings,
        pinned: Pinned {
            database: Some(desired.name.clone()),
            user: None,
        },
        pending: None,
    })
}

/// Pure: the database must be free, this object's or adoptable, and its `owner` a role of the
/// same namespace.
pub fn authorize(
    db: &Database,
    service: &DatabaseService,
    policy: &AdmissionPolicySpec,
    desired: &sql::DatabaseSpec,
    observed: Option<&DatabaseState>,
    owner: Option<&RoleState>,
) -> Result<(), Error> {
    let namespace = db.metadata.namespace.as_deref().unwrap_or_default();
    let service_name = service.metadata.name.as_deref().unwrap_or_default();
    let marker = guard::marker_of(db);
    guard::own_name(
        Wanted {
            what: "database",
            name: &desired.name,
            service: service_name,
        },
        &marker,
        observed.map(|o| o.marker.as_ref()),
        policy.adopts_database(service_name, namespace, &desired.name),
    )?;
    if let Some(name) = &desired.owner
        && !sql::owned_by_namespace(owner.and_then(|o| o.marker.as_ref()), namespace)
    {
        return Err(Error::NotOwned {
            field: "spec.owner".to_owned(),
            what: "role",
            name: name.clone(),
            reason: "is not a role of this namespace's ServiceUsers".to_owned(),
        });
    }
    Ok(())
}

/// What deleting the object does to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// Drop it.
    Drop(String),
    /// Keep it, for this reason.
    Retain(&'static str),
}

/// Pure: `Delete` drops, `Retain` keeps; `terminationProtection` always keeps (admission
/// refuses the DELETE, but a cluster whose webhook was down must not lose data either).
pub fn cleanup_plan(db: &Database) -> Cleanup {
    if db.spec.termination_protection == Some(true) {
        return Cleanup::Retain("terminationProtection is set");
    }
    match db.spec.deletion_policy {
        DeletionPolicy::Retain => Cleanup::Retain("deletionPolicy is Retain"),
        DeletionPolicy::Delete => Cleanup::Drop(database_name(db)),
    }
}

/// Runs the cleanup of a deleted object.
#[instrument(skip_all, fields(kind = "Database", namespace = db.metadata.namespace.as_deref(), name = db.metadata.name.as_deref()))]
pub async fn cleanup<C: Cluster>(ctx: &Context<C>, db: &Database) -> Result<Applied, Error> {
    match cleanup_plan(db) {
        Cleanup::Retain(why) => Ok(Applied {
            actions: Vec::new(),
            warnings: vec![format!("database {:?} kept: {why}", database_name(db))],
        }),
        Cleanup::Drop(name) => {
            let handle = match ctx.service(&db.spec.binding.service_name).await {
                Ok((_, handle)) => handle,
                Err(Error::ServiceNotFound { name }) => return Ok(super::service_gone(&name)),
                Err(e) => return Err(e),
            };
            let Some(observed) = handle.server.observe_database(&name).await? else {
                return Ok(Applied::default());
            };
            if !guard::may_drop(&guard::marker_of(db), observed.marker.as_ref()) {
                return Ok(Applied {
                    actions: Vec::new(),
                    warnings: vec![format!(
                        "database {name:?} kept: it does not belong to this Database"
                    )],
                });
            }
            let actions = vec![Action::Sql(SqlAction::DropDatabase { name })];
            act(&handle.server, &ctx.cluster, &actions).await?;
            Ok(Applied {
                actions,
                warnings: Vec::new(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DatabaseSpec, ServiceBinding};

    fn db(policy: DeletionPolicy, protected: Option<bool>) -> Database {
        let mut db = Database::new(
            "orders",
            DatabaseSpec {
                binding: ServiceBinding {
                    project: "p".into(),
                    service_name: "svc".into(),
                    auth_secret_ref: None,
                },
                database_name: None,
                lc_collate: Some("C".into()),
                lc_ctype: Some("C".into()),
                owner: Some("app".into()),
                termination_protection: protected,
                deletion_policy: policy,
            },
        );
        db.metadata.namespace = Some("team".into());
        db
    }

    #[test]
    fn creates_a_missing_database_and_leaves_an_existing_one() {
        let d = desired(&db(DeletionPolicy::Retain, None), Engine::Postgres);
        assert_eq!(d.name, "orders");
        let actions = plan(&d, None);
        assert!(
            matches!(&actions[..], [Action::Sql(SqlAction::CreateDatabase { name, owner: Some(o), .. })] if name == "orders" && o == "app")
        );
        let observed = DatabaseState {
            owner: Some("app".into()),
            lc_collate: "C".into(),
            lc_ctype: "C".into(),
            marker: d.marker.clone(),
        };
        assert_eq!(plan(&d, Some(&observed)), vec![]);
        // Created before it carried a marker, or adopted: the marker is written.
        let unmarked = DatabaseState {
            marker: None,
            ..observed.clone()
        };
        assert!(matches!(
            &plan(&d, Some(&unmarked))[..],
            [Action::Sql(SqlAction::MarkDatabase { .. })]
        ));
        let other_owner = DatabaseState {
            owner: Some("postgres".into()),
            ..observed
        };
        assert_eq!(plan(&d, Some(&other_owner)).len(), 1);
    }

    #[test]
    fn mysql_ignores_owner_and_ctype() {
        let d = desired(&db(DeletionPolicy::Retain, None), Engine::Mysql);
        assert_eq!((d.owner, d.lc_ctype), (None, None));
    }

    #[test]
    fn deletion_honours_policy_and_protection() {
        assert_eq!(
            cleanup_plan(&db(DeletionPolicy::Delete, None)),
            Cleanup::Drop("orders".into())
        );
        assert!(matches!(
            cleanup_plan(&db(DeletionPolicy::Retain, None)),
            Cleanup::Retain(_)
        ));
        assert!(matches!(
            cleanup_plan(&db(DeletionPolicy::Delete, Some(true))),
            Cleanup::Retain(_)
        ));
    }
}
