//! `Database`: a database on a DatabaseService.
//!
//! Observe the database → plan ([`crate::sql::plan_database`]: create it, fix its owner) → act.
//! Deletion drops it only with `deletionPolicy: Delete` and never while `terminationProtection`
//! is set; a database with connections is reported (`DatabaseInUse`) and retried, never forced.

use tracing::instrument;

use crate::api::{Database, DeletionPolicy};
use crate::sql::{self, DatabaseState, Engine, SqlAction};

use super::{Action, Applied, Cluster, Context, Error, act, sql_engine};

/// The database's name on the server: `spec.databaseName`, default `metadata.name`.
pub fn database_name(db: &Database) -> String {
    db.spec
        .database_name
        .clone()
        .unwrap_or_else(|| db.metadata.name.clone().unwrap_or_default())
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
    }
}

/// Pure: the actions that make the server hold `desired`.
pub fn plan(desired: &sql::DatabaseSpec, observed: Option<&DatabaseState>) -> Vec<Action> {
    sql::plan_database(desired, observed)
        .into_iter()
        .map(Action::Sql)
        .collect()
}

/// Observe → plan → act.
#[instrument(skip_all, fields(kind = "Database", namespace = db.metadata.namespace.as_deref(), name = db.metadata.name.as_deref()))]
pub async fn reconcile<C: Cluster>(ctx: &Context<C>, db: &Database) -> Result<Applied, Error> {
    let (service, handle) = ctx.service(&db.spec.binding.service_name).await?;
    let desired = desired(db, sql_engine(service.spec.engine));
    let observed = handle.server.observe_database(&desired.name).await?;
    let actions = plan(&desired, observed.as_ref());
    act(&handle.server, &ctx.cluster, &actions).await?;
    let warnings = observed
        .as_ref()
        .and_then(|o| sql::database_immutable_drift(&desired, o))
        .into_iter()
        .collect();
    Ok(Applied { actions, warnings })
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
            let (_, handle) = ctx.service(&db.spec.binding.service_name).await?;
            if handle.server.observe_database(&name).await?.is_none() {
                return Ok(Applied::default());
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
        };
        assert_eq!(plan(&d, Some(&observed)), vec![]);
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
