//! Tenant isolation against the real PostgreSQL and MariaDB, through the reconcilers (the code
//! the controllers and `dbward reconcile --local` run): every attack of the tenant-isolation
//! issue is tried for real and refused, and the server is byte-for-byte unchanged afterwards.

mod common;
mod reconcile_support;

use dbward::api::AdmissionPolicySpec;
use dbward::api::admission_policy::Adoption;
use dbward::reconcile::local::LocalCluster;
use dbward::reconcile::{Context, Error, database, database_claim, service_user};
use dbward::sql::{Engine, PasswordState};
use mysql_async::prelude::Queryable;
use serde_json::json;

use common::unique;
use reconcile_support::*;

/// Everything the server holds about a role that an attack could change: its password
/// verifier, attributes, memberships, settings and every grant to it.
async fn role_fingerprint(engine: Engine, role: &str) -> String {
    fingerprint(engine, role, true).await
}

/// The connector's own role as [`role_fingerprint`] sees it, without its PostgreSQL database
/// privileges: it owns every database, so other tests running at the same time add and drop
/// entries there.
async fn admin_fingerprint(engine: Engine) -> String {
    fingerprint(engine, admin(engine), false).await
}

async fn fingerprint(engine: Engine, role: &str, database_grants: bool) -> String {
    match engine {
        Engine::Postgres => {
            let client = common::pg_raw(5432, "postgres").await;
            let row = client
                .query_one(
                    "SELECT concat_ws('|', a.rolpassword, a.rolsuper, a.rolcreaterole, \
                       a.rolcreatedb, a.rolcanlogin, a.rolreplication, a.rolbypassrls, \
                       shobj_description(a.oid, 'pg_authid'), \
                       (SELECT string_agg(g.rolname, ',' ORDER BY g.rolname) \
                          FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
                         WHERE m.member = a.oid), \
                       (SELECT string_agg(array_to_string(s.setconfig, ','), ';') \
                          FROM pg_db_role_setting s WHERE s.setrole = a.oid), \
                       CASE WHEN $2 THEN \
                       (SELECT string_agg(d.datname || '=' || item::text, ';' ORDER BY d.datname) \
                          FROM pg_database d, unnest(d.datacl) AS item \
                         WHERE item::text LIKE a.rolname || '=%') END) \
                     FROM pg_authid a WHERE a.rolname = $1",
                    &[&role, &database_grants],
                )
                .await
                .expect("role exists");
            row.get::<_, String>(0)
        }
        Engine::Mysql => {
            let mut conn = common::my_raw(3306, None).await;
            let accounts: Vec<(String, String)> = conn
                .exec(
                    "SELECT Host, CONCAT_WS('|', authentication_string, plugin) \
                     FROM mysql.user WHERE User = ? ORDER BY Host",
                    (role,),
                )
                .await
                .unwrap();
            assert!(!accounts.is_empty(), "user {role} exists");
            let mut out = Vec::new();
            for (host, auth) in accounts {
                let grants: Vec<String> = conn
                    .query(format!("SHOW GRANTS FOR '{role}'@'{host}'"))
                    .await
                    .unwrap();
                out.push(format!("{host}|{auth}|{}", grants.join(";")));
            }
            out.join("\n")
        }
    }
}

/// Creates a role by hand, as the server's admin would, with a password and no dbward marker.
async fn create_by_hand(engine: Engine, role: &str, password: &str) {
    match engine {
        Engine::Postgres => {
            let client = common::pg_raw(5432, "postgres").await;
            client
                .batch_execute(&format!(
                    "CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"
                ))
                .await
                .unwrap();
        }
        Engine::Mysql => {
            let mut conn = common::my_raw(3306, None).await;
            conn.query_drop(format!(
                "CREATE USER '{role}'@'%' IDENTIFIED BY '{password}'"
            ))
            .await
            .unwrap();
        }
    }
}

async fn create_database_by_hand(engine: Engine, name: &str) {
    let sql = match engine {
        Engine::Postgres => format!("CREATE DATABASE \"{name}\""),
        Engine::Mysql => format!("CREATE DATABASE `{name}`"),
    };
    match engine {
        Engine::Postgres => common::pg_raw(5432, "postgres")
            .await
            .batch_execute(&sql)
            .await
            .unwrap(),
        Engine::Mysql => common::my_raw(3306, None)
            .await
            .query_drop(sql)
            .await
            .unwrap(),
    }
}

/// Cleans up through the context's own server (which closes its idle connections to a
/// database before dropping it).
async fn drop_by_hand(ctx: &Context<LocalCluster>, role: Option<&str>, database: Option<&str>) {
    let srv = server(ctx);
    if let Some(db) = database {
        srv.drop_database(db).await.unwrap();
    }
    if let Some(role) = role {
        srv.drop_role(role).await.unwrap();
    }
}

fn assert_refused(result: Result<impl std::fmt::Debug, Error>, reason: &str) -> String {
    let err = result.expect_err("must be refused");
    assert_eq!(err.reason(), reason, "{err}");
    err.to_string()
}

/// Scenario 1: a ServiceUser naming a role dbward never created (or another tenant's, or the
///    connector's) is refused; the role's password and everything else are unchanged, and no
///    Secret is written.
async fn takeover_is_refused(engine: Engine) {
    let p = unique();
    let ctx = context(engine, port(engine));
    let victim = format!("{p}victim");
    create_by_hand(engine, &victim, "original-Pw0").await;
    let before = role_fingerprint(engine, &victim).await;

    let evil = user_in("evil", "grab", json!({"username": victim}));
    let message = assert_refused(service_user::reconcile(&ctx, &evil).await, "NameTaken");
    assert!(message.contains(&victim), "{message}");
    assert_eq!(role_fingerprint(engine, &victim).await, before);
    assert!(ctx.cluster.applied().is_empty(), "no Secret written");
    // The owner does not delete what it never had either.
    service_user::cleanup(&ctx, &evil).await.unwrap();
    assert_eq!(role_fingerprint(engine, &victim).await, before);

    // Another tenant's role: refused without saying whose it is; its password still works.
    let owned = format!("{p}owned");
    let team_a = user_in("team-a", "app", json!({"username": owned}));
    service_user::reconcile(&ctx, &team_a).await.unwrap();
    let password = secret_value(&ctx, "team-a", "app", "SERVICEUSER_PASSWORD")
        .await
        .unwrap();
    let fingerprint = role_fingerprint(engine, &owned).await;
    let thief = user_in("evil", "steal", json!({"username": owned}));
    let message = assert_refused(service_user::reconcile(&ctx, &thief).await, "NameTaken");
    assert!(!message.contains("team-a"), "{message}");
    assert_eq!(role_fingerprint(engine, &owned).await, fingerprint);
    let state = server(&ctx)
        .observe_role(&owned, Some(&password))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.password, PasswordState::Matches);
    service_user::cleanup(&ctx, &thief).await.unwrap();
    assert!(
        server(&ctx)
            .observe_role(&owned, None)
            .await
            .unwrap()
            .is_some()
    );

    // The connector's own user: refused by the rules before the server is looked at.
    let admin_user = user_in("evil", "root", json!({"username": admin(engine)}));
    let before_admin = admin_fingerprint(engine).await;
    assert_refused(service_user::reconcile(&ctx, &admin_user).await, "Denied");
    assert_eq!(admin_fingerprint(engine).await, before_admin);

    service_user::cleanup(&ctx, &team_a).await.unwrap();
    drop_by_hand(&ctx, Some(&victim), None).await;
}

#[tokio::test]
async fn postgres_takeover_is_refused() {
    takeover_is_refused(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_takeover_is_refused() {
    takeover_is_refused(Engine::Mysql).await;
}

/// Scenarios 2 and 3: memberships and grants reach only the namespace's own roles and databases: system
/// roles and databases are refused by the rules; another namespace's, or one dbward never
/// created, by the ownership check on the server. Nothing is granted.
async fn grants_stay_in_the_namespace(engine: Engine) {
    let p = unique();
    let ctx = context(engine, port(engine));
    let system_role = match engine {
        Engine::Postgres => "pg_read_server_files",
        Engine::Mysql => "mysql.sys",
    };
    let system_db = match engine {
        Engine::Postgres => "postgres",
        Engine::Mysql => "mysql",
    };
    let username = format!("{p}u");
    for spec in [
        json!({"username": username, "inRoles": [system_role]}),
        json!({"username": username, "inRoles": [admin(engine)]}),
        json!({"username": username, "privileges": [{"database": system_db, "level": "owner"}]}),
    ] {
        let user = user_in("evil", "u", spec.clone());
        assert_refused(service_user::reconcile(&ctx, &user).await, "Denied");
        assert!(
            server(&ctx)
                .observe_role(&username, None)
                .await
                .unwrap()
                .is_none(),
            "{spec}: nothing created"
        );
    }

    // A database and a group of namespace team-a; a database made by hand.
    let db = database_in("team-a", "data", &format!("{p}adb"), "Delete");
    database::reconcile(&ctx, &db).await.unwrap();
    let group = format!("{p}grp");
    let team_group = user_in(
        "team-a",
        "readers",
        json!({"username": group, "flags": ["nologin"]}),
    );
    service_user::reconcile(&ctx, &team_group).await.unwrap();
    let hand_db = format!("{p}hand");
    create_database_by_hand(engine, &hand_db).await;
    let hand_role = format!("{p}handrole");
    create_by_hand(engine, &hand_role, "x-Pw0rd").await;

    for (spec, field) in [
        (
            json!({"privileges": [{"database": format!("{p}adb"), "level": "readWrite"}]}),
            "spec.privileges[0].database",
        ),
        (
            json!({"privileges": [{"database": hand_db, "level": "readOnly"}]}),
            "spec.privileges[0].database",
        ),
        (json!({"inRoles": [group]}), "spec.inRoles[0]"),
        (json!({"inRoles": [hand_role]}), "spec.inRoles[0]"),
    ] {
        let mut spec = spec;
        spec["username"] = json!(format!("{p}evil"));
        let user = user_in("evil", "e", spec.clone());
        let message = assert_refused(service_user::reconcile(&ctx, &user).await, "Denied");
        assert!(message.starts_with(field), "{message}");
        assert!(
            server(&ctx)
                .observe_role(&format!("{p}evil"), None)
                .await
                .unwrap()
                .is_none(),
            "{spec}: nothing created"
        );
    }

    // The same grants from team-a itself are fine (memberships only on PostgreSQL: a
    // ServiceUser is an account on MySQL, not a role one can be a member of).
    let in_roles = match engine {
        Engine::Postgres => json!([group]),
        Engine::Mysql => json!([]),
    };
    let own = user_in(
        "team-a",
        "app",
        json!({"username": format!("{p}own"), "inRoles": in_roles,
               "privileges": [{"database": format!("{p}adb"), "level": "readWrite"}]}),
    );
    service_user::reconcile(&ctx, &own).await.unwrap();

    service_user::cleanup(&ctx, &own).await.unwrap();
    service_user::cleanup(&ctx, &team_group).await.unwrap();
    database::cleanup(&ctx, &db).await.unwrap();
    drop_by_hand(&ctx, Some(&hand_role), Some(&hand_db)).await;
}

#[tokio::test]
async fn postgres_grants_stay_in_the_namespace() {
    grants_stay_in_the_namespace(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_grants_stay_in_the_namespace() {
    grants_stay_in_the_namespace(Engine::Mysql).await;
}

/// A database the service shares is grantable from any namespace, up to its level.
async fn shared_databases_up_to_their_level(engine: Engine) {
    let p = unique();
    let shared = format!("{p}ref");
    create_database_by_hand(engine, &shared).await;
    let ctx = context_with(
        engine,
        port(engine),
        json!({"sharedDatabases": [{"name": shared}]}),
        AdmissionPolicySpec::default(),
    );
    let reader = user_in(
        "any",
        "reader",
        json!({"username": format!("{p}r"),
               "privileges": [{"database": shared, "level": "readOnly"}]}),
    );
    service_user::reconcile(&ctx, &reader).await.unwrap();
    let writer = user_in(
        "any",
        "writer",
        json!({"username": format!("{p}w"),
               "privileges": [{"database": shared, "level": "readWrite"}]}),
    );
    assert_refused(service_user::reconcile(&ctx, &writer).await, "Denied");
    assert!(
        server(&ctx)
            .observe_role(&format!("{p}w"), None)
            .await
            .unwrap()
            .is_none()
    );
    service_user::cleanup(&ctx, &reader).await.unwrap();
    drop_by_hand(&ctx, None, Some(&shared)).await;
}

#[tokio::test]
async fn postgres_shared_databases_up_to_their_level() {
    shared_databases_up_to_their_level(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_shared_databases_up_to_their_level() {
    shared_databases_up_to_their_level(Engine::Mysql).await;
}

/// Scenario 4: claims whose readable names agree get distinct users and databases; a claim forced onto
/// another claim's names (its status edited) is refused, and the first claim's password still
/// works.
async fn claims_never_share_names(engine: Engine) {
    let p = unique().replace('_', "");
    let ctx = context(engine, port(engine));
    let first = claim_object(&format!("{p}-a"), "b", "Delete");
    let second = claim_object(&p, "a-b", "Delete");
    let (_, first_names) = database_claim::reconcile(&ctx, &first).await.unwrap();
    let password = secret_value(&ctx, &format!("{p}-a"), "b", "DATABASECLAIM_PASSWORD")
        .await
        .unwrap();
    let (_, second_names) = database_claim::reconcile(&ctx, &second).await.unwrap();
    assert_ne!(first_names.user, second_names.user);
    assert_ne!(first_names.database, second_names.database);

    let mut forced = claim_object(&format!("{p}x"), "y", "Delete");
    forced.status = Some(dbward::api::database_claim::DatabaseClaimStatus {
        database_name: Some(first_names.database.clone()),
        username: Some(first_names.user.clone()),
        ..Default::default()
    });
    let before = role_fingerprint(engine, &first_names.user).await;
    assert_refused(database_claim::reconcile(&ctx, &forced).await, "NameTaken");
    database_claim::cleanup(&ctx, &forced).await.unwrap();
    assert_eq!(role_fingerprint(engine, &first_names.user).await, before);
    assert!(
        server(&ctx)
            .observe_database(&first_names.database)
            .await
            .unwrap()
            .is_some(),
        "the forced claim's deletion dropped nothing"
    );
    let state = server(&ctx)
        .observe_role(&first_names.user, Some(&password))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.password, PasswordState::Matches);

    for claim in [&first, &second] {
        database_claim::cleanup(&ctx, claim).await.unwrap();
    }
    assert!(
        server(&ctx)
            .observe_role(&first_names.user, None)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn postgres_claims_never_share_names() {
    claims_never_share_names(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_claims_never_share_names() {
    claims_never_share_names(Engine::Mysql).await;
}

/// Scenario 5: a Database naming an existing database dbward did not create is refused and never
/// dropped; an admin's adoption entry lets the named namespace take it over explicitly.
async fn existing_databases_are_adopted_only_by_admins(engine: Engine) {
    let p = unique();
    let existing = format!("{p}legacy");
    create_database_by_hand(engine, &existing).await;
    let ctx = context(engine, port(engine));
    let db = database_in("team", "legacy", &existing, "Delete");
    let writes = ctx.sql_writes();
    assert_refused(database::reconcile(&ctx, &db).await, "NameTaken");
    let applied = database::cleanup(&ctx, &db).await.unwrap();
    assert!(applied.actions.is_empty(), "{applied:?}");
    assert_eq!(ctx.sql_writes(), writes);
    assert!(
        server(&ctx)
            .observe_database(&existing)
            .await
            .unwrap()
            .is_some()
    );

    let policy = AdmissionPolicySpec {
        adoptions: vec![Adoption {
            service_name: "svc".into(),
            namespace: "team".into(),
            database: Some(existing.clone()),
            role: None,
        }],
        ..AdmissionPolicySpec::default()
    };
    let admin_ctx = context_with(engine, port(engine), json!({}), policy);
    // Only the namespace the entry names.
    let other = database_in("other", "legacy", &existing, "Delete");
    assert_refused(database::reconcile(&admin_ctx, &other).await, "NameTaken");
    let adopted = database::reconcile(&admin_ctx, &db).await.unwrap();
    assert!(
        adopted
            .actions
            .iter()
            .any(|a| a.to_string().starts_with("mark database")),
        "{adopted:?}"
    );
    assert_eq!(
        database::reconcile(&admin_ctx, &db).await.unwrap().actions,
        vec![]
    );
    // Now it is the Database's: the plain context (no adoption entry) accepts it too.
    assert_eq!(
        database::reconcile(&ctx, &db).await.unwrap().actions,
        vec![]
    );
    database::cleanup(&admin_ctx, &db).await.unwrap();
    assert!(
        server(&admin_ctx)
            .observe_database(&existing)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn postgres_existing_databases_are_adopted_only_by_admins() {
    existing_databases_are_adopted_only_by_admins(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_existing_databases_are_adopted_only_by_admins() {
    existing_databases_are_adopted_only_by_admins(Engine::Mysql).await;
}

/// Scenario 6: settings outside the policy's allow-list are refused (PostgreSQL: parameters exist only
/// there); an allowed one is applied.
#[tokio::test]
async fn postgres_parameters_come_from_the_allow_list() {
    let p = unique();
    let ctx = context(Engine::Postgres, 5432);
    let user = user_in(
        "team",
        "p",
        json!({"username": format!("{p}p"), "parameters": {"log_statement": "none"}}),
    );
    assert_refused(service_user::reconcile(&ctx, &user).await, "Denied");
    assert!(
        server(&ctx)
            .observe_role(&format!("{p}p"), None)
            .await
            .unwrap()
            .is_none()
    );
    let fine = user_in(
        "team",
        "p",
        json!({"username": format!("{p}p"), "parameters": {"statement_timeout": "5s"}}),
    );
    service_user::reconcile(&ctx, &fine).await.unwrap();
    service_user::cleanup(&ctx, &fine).await.unwrap();
}

/// A ServiceUser whose `spec.username` changed after its name was pinned is refused, and its
/// deletion drops the pinned role, never the new name.
#[tokio::test]
async fn postgres_pinned_names_are_not_retargeted() {
    let p = unique();
    let ctx: Context<LocalCluster> = context(Engine::Postgres, 5432);
    let user = user_in("team", "pin", json!({"username": format!("{p}a")}));
    service_user::reconcile(&ctx, &user).await.unwrap();
    let mut edited = user_in("team", "pin", json!({"username": format!("{p}b")}));
    edited.status = Some(dbward::api::service_user::ServiceUserStatus {
        username: Some(format!("{p}a")),
        ..Default::default()
    });
    assert_refused(service_user::reconcile(&ctx, &edited).await, "Denied");
    assert!(
        server(&ctx)
            .observe_role(&format!("{p}b"), None)
            .await
            .unwrap()
            .is_none()
    );
    service_user::cleanup(&ctx, &edited).await.unwrap();
    assert!(
        server(&ctx)
            .observe_role(&format!("{p}a"), None)
            .await
            .unwrap()
            .is_none()
    );
}

/// A connection refused by the server as an administrator of `engine` called `admin` would be.
async fn refused_connection(engine: Engine, admin: &str) -> Error {
    let mut info = match engine {
        Engine::Postgres => common::pg_info(5432),
        Engine::Mysql => common::my_info(3306),
    };
    info.user = admin.to_owned();
    info.password = "not-the-password".to_owned();
    let server = dbward::sql::Server::new(&info).unwrap();
    Error::Sql(
        server
            .probe()
            .await
            .expect_err("a connection as an unknown user"),
    )
}

async fn the_servers_words_stay_with_the_administrator(engine: Engine) {
    let admin = format!("{}admin", unique());
    let error = refused_connection(engine, &admin).await;
    assert_eq!(error.reason(), "ServiceRejectedConnection", "{error}");
    // The log has the server's own words, with the connector's user in them …
    assert!(error.to_string().contains(&admin), "{error}");
    // … the tenant's condition and event do not.
    let public = error.public_message();
    assert!(!public.contains(&admin), "{public}");
    assert!(public.contains("SQLSTATE 28"), "{public}");
    assert!(public.contains("dbward's log"), "{public}");
}

#[tokio::test]
async fn postgres_servers_words_stay_with_the_administrator() {
    the_servers_words_stay_with_the_administrator(Engine::Postgres).await;
}

#[tokio::test]
async fn mysql_servers_words_stay_with_the_administrator() {
    the_servers_words_stay_with_the_administrator(Engine::Mysql).await;
}
