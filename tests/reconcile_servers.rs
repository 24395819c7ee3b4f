//! The reconcilers against the real PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306),
//! with an in-memory Kubernetes side: create, update, idempotency (zero writes), drift repair,
//! deletion per policy, hostile names, and a server stopped and restarted mid-run.

mod common;
mod reconcile_support;

use std::collections::BTreeMap;

use dbward::api::ServiceUser;
use dbward::reconcile::local::LocalCluster;
use dbward::reconcile::secret::decoded_data;
use dbward::reconcile::{Action, Cluster, Context, Error, database, database_claim, service_user};
use dbward::sql::{self, Engine, PasswordState, SqlAction};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

use common::unique;
use reconcile_support::*;

async fn secret_password(ctx: &Context<LocalCluster>, name: &str) -> String {
    let secret = ctx.cluster.get_secret("team", name).await.unwrap().unwrap();
    decoded_data(&secret)["SERVICEUSER_PASSWORD"].clone()
}

/// Reconciles again and asserts nothing at all happened.
async fn assert_quiet(ctx: &Context<LocalCluster>, user: &ServiceUser) {
    let writes = ctx.sql_writes();
    let secrets = ctx.cluster.applied().len();
    let applied = service_user::reconcile(ctx, user).await.unwrap();
    assert_eq!(applied.actions, vec![], "second reconcile must do nothing");
    assert_eq!(ctx.sql_writes(), writes, "zero SQL writes");
    assert_eq!(ctx.cluster.applied().len(), secrets);
}

async fn user_lifecycle(engine: Engine) {
    let p = unique();
    // The update below adds `createdb`, a server-wide flag on MySQL: the admin allows it here.
    let mut policy = dbward::api::AdmissionPolicySpec::default();
    policy.limits.server_wide_flags_allowed = true;
    let ctx = context_with(engine, port(engine), json!({}), policy);
    let db = database_object(
        &format!("{}d", p.replace('_', "-")),
        &format!("{p}db"),
        "Delete",
    );
    let created = database::reconcile(&ctx, &db).await.unwrap();
    assert!(matches!(
        &created.actions[..],
        [Action::Sql(SqlAction::CreateDatabase { .. })]
    ));
    assert_eq!(
        database::reconcile(&ctx, &db).await.unwrap().actions,
        vec![]
    );

    let username = format!("{p}app");
    let creds = format!("{}creds", p.replace('_', "-"));
    let mut user = user_object(
        "app",
        json!({"username": username, "flags": ["login"],
               "privileges": [{"database": format!("{p}db"), "level": "readWrite"}],
               "connInfoSecretTarget": {"name": creds, "labels": {"team": "a"}}}),
    );
    let applied = service_user::reconcile(&ctx, &user).await.unwrap();
    assert!(matches!(
        applied.actions.first(),
        Some(Action::Sql(SqlAction::CreateRole { .. }))
    ));
    assert!(matches!(
        applied.actions.last(),
        Some(Action::ApplySecret(_))
    ));
    let password = secret_password(&ctx, &creds).await;
    let srv = server(&ctx);
    let state = srv
        .observe_role(&username, Some(&password))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.password, PasswordState::Matches);
    assert_quiet(&ctx, &user).await;

    // Update: a flag, a lower privilege level.
    user.spec.flags.push(dbward::api::RoleFlag::Createdb);
    user.spec.privileges[0].level = dbward::api::service_user::PrivilegeLevel::ReadOnly;
    let applied = service_user::reconcile(&ctx, &user).await.unwrap();
    assert!(
        applied
            .actions
            .iter()
            .any(|a| matches!(a, Action::Sql(SqlAction::AlterRoleAttributes { .. })))
    );
    assert!(
        applied
            .actions
            .iter()
            .any(|a| matches!(a, Action::Sql(SqlAction::RevokePrivileges { .. })))
    );
    assert!(
        !applied
            .actions
            .iter()
            .any(|a| matches!(a, Action::ApplySecret(_)))
    );
    assert_quiet(&ctx, &user).await;

    // Update: bring your own password (quotes, spaces and unicode in it).
    let own = "it's a \"pässword\" 🔑";
    let mut pw = Secret::default();
    pw.metadata.name = Some("own-pw".into());
    pw.metadata.namespace = Some("team".into());
    pw.data = Some(BTreeMap::from([(
        "pw".into(),
        ByteString(own.as_bytes().to_vec()),
    )]));
    ctx.cluster.apply_secret(&pw).await.unwrap();
    user.spec.password_secret_ref = Some(dbward::api::SecretKeyRef {
        name: "own-pw".into(),
        key: "pw".into(),
    });
    let applied = service_user::reconcile(&ctx, &user).await.unwrap();
    assert!(
        applied
            .actions
            .iter()
            .any(|a| matches!(a, Action::Sql(SqlAction::SetPassword { .. })))
    );
    assert_eq!(secret_password(&ctx, &creds).await, own);
    let state = srv
        .observe_role(&username, Some(own))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.password, PasswordState::Matches);
    assert_quiet(&ctx, &user).await;
    user.spec.password_secret_ref = None;
    assert_quiet(&ctx, &user).await; // the Secret's password is kept

    // Drift: a grant revoked by hand.
    let held = srv.observe_privileges(&[&username], &[]).await.unwrap();
    let revoke = sql::plan_privileges(engine, &username, &[], &held[&username]);
    assert!(!revoke.is_empty());
    srv.apply(&revoke).await.unwrap();
    let applied = service_user::reconcile(&ctx, &user).await.unwrap();
    assert!(
        applied
            .actions
            .iter()
            .any(|a| matches!(a, Action::Sql(SqlAction::GrantPrivileges { .. })))
    );
    assert_quiet(&ctx, &user).await;

    // Drift: the role dropped by hand comes back with the Secret's password.
    srv.drop_role(&username).await.unwrap();
    service_user::reconcile(&ctx, &user).await.unwrap();
    let state = srv
        .observe_role(&username, Some(own))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.password, PasswordState::Matches);
    assert_quiet(&ctx, &user).await;

    // Drift: the Secret deleted by hand is written again (with a new password the role gets).
    ctx.cluster.delete_secret("team", &creds).await.unwrap();
    let applied = service_user::reconcile(&ctx, &user).await.unwrap();
    assert!(matches!(
        applied.actions.last(),
        Some(Action::ApplySecret(_))
    ));
    let renewed = secret_password(&ctx, &creds).await;
    let state = srv
        .observe_role(&username, Some(&renewed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.password, PasswordState::Matches);
    assert_quiet(&ctx, &user).await;

    // Deletion: the role goes; the database only with Delete.
    service_user::cleanup(&ctx, &user).await.unwrap();
    assert!(srv.observe_role(&username, None).await.unwrap().is_none());
    assert_eq!(
        service_user::cleanup(&ctx, &user).await.unwrap().actions,
        vec![]
    );
    let mut retained = db.clone();
    retained.spec.deletion_policy = dbward::api::DeletionPolicy::Retain;
    database::cleanup(&ctx, &retained).await.unwrap();
    assert!(
        srv.observe_database(&format!("{p}db"))
            .await
            .unwrap()
            .is_some()
    );
    let mut protected = db.clone();
    protected.spec.termination_protection = Some(true);
    database::cleanup(&ctx, &protected).await.unwrap();
    assert!(
        srv.observe_database(&format!("{p}db"))
            .await
            .unwrap()
            .is_some()
    );
    database::cleanup(&ctx, &db).await.unwrap();
    assert!(
        srv.observe_database(&format!("{p}db"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn postgres_user_lifecycle() {
    user_lifecycle(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_user_lifecycle() {
    user_lifecycle(Engine::Mysql).await;
}

async fn claim_lifecycle(engine: Engine) {
    let p = unique();
    let ctx = context(engine, port(engine));
    let namespace = format!("{}ns", p.replace('_', "-"));
    for policy in ["Retain", "Delete"] {
        let claim = claim_object(&namespace, &format!("c-{}", policy.to_lowercase()), policy);
        let (applied, names) = database_claim::reconcile(&ctx, &claim).await.unwrap();
        assert!(applied.actions.len() >= 3, "{:?}", applied.actions);
        let srv = server(&ctx);
        let secret = ctx
            .cluster
            .get_secret(&namespace, claim.metadata.name.as_deref().unwrap())
            .await
            .unwrap()
            .unwrap();
        let data = decoded_data(&secret);
        assert_eq!(data["DATABASECLAIM_DATABASE"], names.database);
        assert_eq!(data["DATABASECLAIM_USER"], names.user);
        let state = srv
            .observe_role(&names.user, Some(&data["DATABASECLAIM_PASSWORD"]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state.password, PasswordState::Matches);
        if engine == Engine::Postgres {
            let db = srv
                .observe_database(&names.database)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(db.owner.as_deref(), Some(names.user.as_str()));
        }
        let writes = ctx.sql_writes();
        let (again, _) = database_claim::reconcile(&ctx, &claim).await.unwrap();
        assert_eq!(again.actions, vec![]);
        assert_eq!(ctx.sql_writes(), writes);

        database_claim::cleanup(&ctx, &claim).await.unwrap();
        assert!(srv.observe_role(&names.user, None).await.unwrap().is_none());
        let kept = srv
            .observe_database(&names.database)
            .await
            .unwrap()
            .is_some();
        assert_eq!(kept, policy == "Retain");
        srv.drop_database(&names.database).await.unwrap();
    }
}

#[tokio::test]
async fn postgres_claim_lifecycle() {
    claim_lifecycle(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_claim_lifecycle() {
    claim_lifecycle(Engine::Mysql).await;
}

#[tokio::test]
async fn database_in_use_is_reported_not_forced() {
    let p = unique();
    let ctx = context(Engine::Postgres, 5432);
    let db = database_object("busy", &format!("{p}busy"), "Delete");
    database::reconcile(&ctx, &db).await.unwrap();
    let conn = common::pg_raw(5432, &format!("{p}busy")).await;
    let err = database::cleanup(&ctx, &db).await.unwrap_err();
    assert_eq!(err.reason(), "DatabaseInUse");
    assert_eq!(err.retry(), dbward::reconcile::Retry::Backoff);
    drop(conn);
    let mut result = database::cleanup(&ctx, &db).await;
    for _ in 0..50 {
        if !matches!(&result, Err(e) if e.reason() == "DatabaseInUse") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        result = database::cleanup(&ctx, &db).await;
    }
    result.unwrap();
    assert!(
        server(&ctx)
            .observe_database(&format!("{p}busy"))
            .await
            .unwrap()
            .is_none()
    );
}

/// Names admission lets through (hyphens, the length limits) are quoted; hostile ones are
/// refused by admission, and by the SQL layer before anything is sent.
async fn names_quoted_or_refused(engine: Engine) {
    let p = unique();
    let ctx = context(engine, port(engine));
    let limit = match engine {
        Engine::Postgres => 63,
        Engine::Mysql => 32,
    };
    let long = format!("{p}{}", "x".repeat(limit - p.len()));
    let hyphen_db = format!("{p}my-db");
    let db = database_object("hyphen", &hyphen_db, "Delete");
    database::reconcile(&ctx, &db).await.unwrap();
    let user = user_object(
        "long",
        json!({"username": long,
               "privileges": [{"database": hyphen_db, "level": "owner"}]}),
    );
    service_user::reconcile(&ctx, &user).await.unwrap();
    assert_quiet(&ctx, &user).await;
    service_user::cleanup(&ctx, &user).await.unwrap();
    database::cleanup(&ctx, &db).await.unwrap();

    // Hostile: admission refuses it; the reconciler alone would not execute it either.
    let hostile = user_object(
        "hostile",
        json!({"username": format!("{p}x'; DROP DATABASE postgres; --")}),
    );
    let object = serde_json::to_value(&hostile).unwrap();
    let request = dbward::admission::Request {
        operation: dbward::admission::Operation::Create,
        kind: "ServiceUser",
        namespace: Some("team"),
        name: "hostile",
        object: Some(&object),
        old_object: None,
        subresource: None,
    };
    let snapshot = dbward::admission::Snapshot::new(NS, false);
    assert!(!dbward::admission::admit(&request, &snapshot).allowed);
    // The reconciler runs the same rules before it plans: denied, and nothing is sent.
    let writes = ctx.sql_writes();
    let err = service_user::reconcile(&ctx, &hostile).await.unwrap_err();
    assert_eq!(err.reason(), "Denied", "{err}");
    assert!(err.to_string().contains("spec.username"), "{err}");
    assert_eq!(ctx.sql_writes(), writes, "a denied object writes nothing");
    assert!(
        server(&ctx)
            .observe_database(if engine == Engine::Postgres {
                "postgres"
            } else {
                "mysql"
            })
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn postgres_names_quoted_or_refused() {
    names_quoted_or_refused(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_names_quoted_or_refused() {
    names_quoted_or_refused(Engine::Mysql).await;
}

#[tokio::test]
async fn postgres_stopped_then_restarted_is_unreachable_then_recovers() {
    let instance = common::TempPostgres::init();
    let ctx = context(Engine::Postgres, instance.port);
    let user = user_object("restart", json!({"username": "restart_app"}));
    service_user::reconcile(&ctx, &user).await.unwrap();

    instance.stop();
    let err: Error = service_user::reconcile(&ctx, &user).await.unwrap_err();
    assert_eq!(err.reason(), "ServiceUnreachable", "{err}");
    assert_eq!(err.retry(), dbward::reconcile::Retry::Backoff);

    instance.start();
    // Same context, same Server: it reconnects, and nothing needs doing.
    let applied = service_user::reconcile(&ctx, &user).await.unwrap();
    assert_eq!(applied.actions, vec![]);
}

#[tokio::test]
async fn mysql_stopped_then_restarted_is_unreachable_then_recovers() {
    let mut instance = common::TempMariadb::init();
    let ctx = context(Engine::Mysql, instance.port);
    let user = user_object("restart", json!({"username": "restart_app"}));
    service_user::reconcile(&ctx, &user).await.unwrap();

    instance.stop();
    let err: Error = service_user::reconcile(&ctx, &user).await.unwrap_err();
    assert_eq!(err.reason(), "ServiceUnreachable", "{err}");

    instance.start();
    let applied = service_user::reconcile(&ctx, &user).await.unwrap();
    assert_eq!(applied.actions, vec![]);
}
