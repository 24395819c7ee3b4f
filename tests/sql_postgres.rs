//! The SQL engine against the real PostgreSQL on 127.0.0.1:5432 (and a second instance it
//! starts itself for the restart test).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{TempPostgres, assert_converged_role, pg, pg_info, pg_raw, role, unique};
use dbward::sql::{
    Attribute, DatabaseSpec, Error, Password, PasswordState, PrivilegeLevel, PrivilegeSpec,
    RoleFlag, RoleSpec, Server, SqlAction, plan_database, plan_privileges, plan_role,
};

/// Drops a database that a connection of the test itself just closed (its backend exits
/// asynchronously).
async fn drop_database_eventually(server: &Server, db: &str) {
    let mut result = server.drop_database(db).await;
    for _ in 0..50 {
        if !matches!(result, Err(Error::DatabaseInUse { .. })) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        result = server.drop_database(db).await;
    }
    result.unwrap();
}

async fn scalar_bool(client: &tokio_postgres::Client, sql: &str) -> bool {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

#[tokio::test]
async fn database_create_idempotent_drift_and_drop() {
    let server = pg();
    let p = unique();
    let owner = format!("{p}owner");
    server
        .ensure_role(&role(&owner, &[RoleFlag::Nologin], "x"))
        .await
        .unwrap();
    let spec = DatabaseSpec {
        name: format!("{p}db"),
        owner: Some(owner.clone()),
        lc_collate: Some("C".into()),
        lc_ctype: Some("C".into()),
    };
    let actions = server.ensure_database(&spec).await.unwrap();
    assert!(matches!(
        actions.as_slice(),
        [SqlAction::CreateDatabase { .. }]
    ));
    let state = server.observe_database(&spec.name).await.unwrap().unwrap();
    assert_eq!(state.owner.as_deref(), Some(owner.as_str()));
    assert_eq!(
        (state.lc_collate.as_str(), state.lc_ctype.as_str()),
        ("C", "C")
    );

    // Second pass: nothing to do, nothing written.
    let before = server.writes();
    assert_eq!(server.ensure_database(&spec).await.unwrap(), vec![]);
    assert_eq!(server.writes(), before);

    // Drift: the owner changed by hand is restored.
    let raw = pg_raw(5432, "postgres").await;
    raw.batch_execute(&format!(
        "ALTER DATABASE \"{}\" OWNER TO postgres",
        spec.name
    ))
    .await
    .unwrap();
    let observed = server.observe_database(&spec.name).await.unwrap();
    assert_eq!(
        plan_database(&spec, observed.as_ref()),
        vec![SqlAction::SetDatabaseOwner {
            name: spec.name.clone(),
            owner: owner.clone()
        }]
    );
    server.ensure_database(&spec).await.unwrap();
    assert_eq!(
        server
            .observe_database(&spec.name)
            .await
            .unwrap()
            .unwrap()
            .owner,
        Some(owner.clone())
    );

    // Drop; dropping again is success without writing.
    server.drop_database(&spec.name).await.unwrap();
    assert_eq!(server.observe_database(&spec.name).await.unwrap(), None);
    let before = server.writes();
    server.drop_database(&spec.name).await.unwrap();
    assert_eq!(server.writes(), before);
    server.drop_role(&owner).await.unwrap();
    assert_eq!(server.observe_role(&owner, None).await.unwrap(), None);
}

#[tokio::test]
async fn role_create_update_idempotent_and_drift() {
    let server = pg();
    let p = unique();
    let (g1, g2) = (format!("{p}g1"), format!("{p}g2"));
    for g in [&g1, &g2] {
        server
            .ensure_role(&RoleSpec {
                name: g.clone(),
                flags: [RoleFlag::Nologin].into(),
                ..RoleSpec::default()
            })
            .await
            .unwrap();
    }
    let mut spec = role(
        &format!("{p}app"),
        &[RoleFlag::Login, RoleFlag::Createdb],
        "first pw",
    );
    spec.in_roles = [g1.clone()].into();
    spec.parameters = BTreeMap::from([("work_mem".into(), "8MB".into())]);
    server.ensure_role(&spec).await.unwrap();

    let state = server
        .observe_role(&spec.name, Some("first pw"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.attributes,
        BTreeSet::from([Attribute::Inherit, Attribute::Login, Attribute::Createdb])
    );
    assert_eq!(state.in_roles, BTreeSet::from([g1.clone()]));
    assert_eq!(
        state.parameters.get("work_mem").map(String::as_str),
        Some("8MB")
    );
    assert_eq!(state.password, PasswordState::Matches);
    let wrong = server
        .observe_role(&spec.name, Some("other"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wrong.password, PasswordState::Differs);

    // The password is stored as a SCRAM verifier, never in clear.
    let raw = pg_raw(5432, "postgres").await;
    let stored: String = raw
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&spec.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");

    assert_converged_role(&server, &spec).await;

    // Update flags, memberships, parameters and password.
    spec.flags = [RoleFlag::Login, RoleFlag::Createrole].into();
    spec.in_roles = [g2.clone()].into();
    spec.parameters = BTreeMap::from([("statement_timeout".into(), "5s".into())]);
    spec.password = Some(Password::new("second pw"));
    let actions = server.ensure_role(&spec).await.unwrap();
    assert_eq!(actions.len(), 6, "{actions:#?}");
    let state = server
        .observe_role(&spec.name, Some("second pw"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.attributes,
        BTreeSet::from([Attribute::Inherit, Attribute::Login, Attribute::Createrole])
    );
    assert_eq!(state.in_roles, BTreeSet::from([g2.clone()]));
    assert_eq!(
        state.parameters,
        BTreeMap::from([("statement_timeout".into(), "5s".into())])
    );
    assert_eq!(state.password, PasswordState::Matches);
    assert_converged_role(&server, &spec).await;

    // Drift by hand: everything is repaired by the next pass.
    let name = format!("\"{}\"", spec.name);
    raw.batch_execute(&format!(
        "ALTER ROLE {name} NOLOGIN SUPERUSER; REVOKE \"{g2}\" FROM {name}; \
         ALTER ROLE {name} RESET statement_timeout; ALTER ROLE {name} PASSWORD 'by hand'"
    ))
    .await
    .unwrap();
    let observed = server
        .observe_role(&spec.name, Some("second pw"))
        .await
        .unwrap();
    let plan = plan_role(server.engine(), &spec, observed.as_ref());
    assert_eq!(plan.len(), 4, "{plan:#?}");
    server.ensure_role(&spec).await.unwrap();
    assert_converged_role(&server, &spec).await;
    let state = server
        .observe_role(&spec.name, Some("second pw"))
        .await
        .unwrap()
        .unwrap();
    assert!(!state.attributes.contains(&Attribute::Superuser));
    assert_eq!(state.password, PasswordState::Matches);

    // Dropped by hand: recreated.
    raw.batch_execute(&format!("DROP ROLE {name}"))
        .await
        .unwrap();
    let actions = server.ensure_role(&spec).await.unwrap();
    assert!(matches!(
        actions.first(),
        Some(SqlAction::CreateRole { .. })
    ));
    assert_converged_role(&server, &spec).await;

    for r in [&spec.name, &g1, &g2] {
        server.drop_role(r).await.unwrap();
    }
    let before = server.writes();
    server.drop_role(&spec.name).await.unwrap();
    assert_eq!(
        server.writes(),
        before,
        "dropping a missing role writes nothing"
    );
}

#[tokio::test]
async fn privileges_levels_idempotency_drift_and_revocation() {
    let server = pg();
    let p = unique();
    let db = format!("{p}db");
    let user = format!("{p}user");
    server
        .ensure_database(&DatabaseSpec {
            name: db.clone(),
            ..DatabaseSpec::default()
        })
        .await
        .unwrap();
    server.ensure_role(&role(&user, &[], "pw")).await.unwrap();
    let inside = pg_raw(5432, &db).await;
    inside
        .batch_execute("CREATE TABLE t1 (id serial PRIMARY KEY, v text)")
        .await
        .unwrap();
    let has = |privilege: &'static str, table: &'static str| {
        let (inside, user) = (&inside, &user);
        async move {
            inside
                .query_one(
                    "SELECT has_table_privilege($1, $2, $3)",
                    &[user, &table, &privilege],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };

    let ro = [PrivilegeSpec {
        database: db.clone(),
        level: PrivilegeLevel::ReadOnly,
    }];
    server.ensure_privileges(&user, &ro).await.unwrap();
    assert!(has("SELECT", "t1").await);
    assert!(!has("INSERT", "t1").await);
    let before = server.writes();
    assert_eq!(server.ensure_privileges(&user, &ro).await.unwrap(), vec![]);
    assert_eq!(server.writes(), before);

    // readWrite: DML on existing tables, and through default privileges on new ones.
    let rw = [PrivilegeSpec {
        database: db.clone(),
        level: PrivilegeLevel::ReadWrite,
    }];
    server.ensure_privileges(&user, &rw).await.unwrap();
    assert!(has("INSERT", "t1").await && has("DELETE", "t1").await);
    assert!(!has("TRUNCATE", "t1").await);
    inside
        .batch_execute("CREATE TABLE t2 (v text)")
        .await
        .unwrap();
    assert!(has("UPDATE", "t2").await);
    let before = server.writes();
    assert_eq!(server.ensure_privileges(&user, &rw).await.unwrap(), vec![]);
    assert_eq!(server.writes(), before);

    // Drift: a grant revoked by hand comes back; an extra grant goes away.
    inside
        .batch_execute(&format!(
            "REVOKE INSERT ON t1 FROM \"{user}\"; GRANT TRUNCATE ON t2 TO \"{user}\""
        ))
        .await
        .unwrap();
    let mut observed = server
        .observe_privileges(&[user.as_str()], &[db.as_str()])
        .await
        .unwrap();
    let plan = plan_privileges(
        server.engine(),
        &user,
        &rw,
        &observed.remove(&user).unwrap_or_default(),
    );
    assert_eq!(plan.len(), 2, "{plan:#?}");
    server.ensure_privileges(&user, &rw).await.unwrap();
    assert!(has("INSERT", "t1").await);
    assert!(!has("TRUNCATE", "t2").await);
    assert_eq!(server.ensure_privileges(&user, &rw).await.unwrap(), vec![]);

    // owner: everything, including creating in public.
    let owner = [PrivilegeSpec {
        database: db.clone(),
        level: PrivilegeLevel::Owner,
    }];
    server.ensure_privileges(&user, &owner).await.unwrap();
    assert!(has("TRUNCATE", "t1").await);
    assert!(
        scalar_bool(
            &inside,
            &format!("SELECT has_schema_privilege('{user}', 'public', 'CREATE')")
        )
        .await
    );
    assert_eq!(
        server.ensure_privileges(&user, &owner).await.unwrap(),
        vec![]
    );

    // No longer desired: everything revoked, then nothing more to do.
    server.ensure_privileges(&user, &[]).await.unwrap();
    assert!(!has("SELECT", "t1").await);
    let connect_granted: bool = scalar_bool(
        &inside,
        &format!(
            "SELECT EXISTS (SELECT 1 FROM pg_database d, aclexplode(d.datacl) a \
             WHERE d.datname = '{db}' AND a.grantee = '\"{user}\"'::regrole)"
        ),
    )
    .await;
    assert!(!connect_granted);
    let before = server.writes();
    assert_eq!(server.ensure_privileges(&user, &[]).await.unwrap(), vec![]);
    assert_eq!(server.writes(), before);

    drop(inside);
    drop_database_eventually(&server, &db).await;
    server.drop_role(&user).await.unwrap();
}

#[tokio::test]
async fn drop_database_with_connection_is_reported_not_forced() {
    let server = pg();
    let db = format!("{}busy", unique());
    server
        .ensure_database(&DatabaseSpec {
            name: db.clone(),
            ..DatabaseSpec::default()
        })
        .await
        .unwrap();
    let client = pg_raw(5432, &db).await;
    match server.drop_database(&db).await {
        Err(Error::DatabaseInUse {
            database,
            connections,
        }) => {
            assert_eq!(database, db);
            assert!(connections >= 1);
        }
        other => panic!("expected DatabaseInUse, got {other:?}"),
    }
    assert!(server.observe_database(&db).await.unwrap().is_some());
    drop(client);
    // The backend needs a moment to go away.
    let mut result = Err(Error::DatabaseInUse {
        database: db.clone(),
        connections: 1,
    });
    for _ in 0..50 {
        result = server.drop_database(&db).await;
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    result.unwrap();
    assert!(server.observe_database(&db).await.unwrap().is_none());
}

#[tokio::test]
async fn role_owning_objects_is_dropped_safely() {
    let server = pg();
    let p = unique();
    let db = format!("{p}db");
    let user = format!("{p}maker");
    server
        .ensure_database(&DatabaseSpec {
            name: db.clone(),
            ..DatabaseSpec::default()
        })
        .await
        .unwrap();
    server.ensure_role(&role(&user, &[], "pw")).await.unwrap();
    server
        .ensure_privileges(
            &user,
            &[PrivilegeSpec {
                database: db.clone(),
                level: PrivilegeLevel::Owner,
            }],
        )
        .await
        .unwrap();
    let inside = pg_raw(5432, &db).await;
    inside
        .batch_execute(&format!(
            "SET ROLE \"{user}\"; CREATE TABLE made (v int); INSERT INTO made VALUES (1); RESET ROLE"
        ))
        .await
        .unwrap();
    server.drop_role(&user).await.unwrap();
    assert_eq!(server.observe_role(&user, None).await.unwrap(), None);
    // The data survives, owned by the administrator.
    let row = inside
        .query_one(
            "SELECT pg_get_userbyid(relowner)::text, (SELECT count(*) FROM made) FROM pg_class WHERE relname = 'made'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "postgres");
    assert_eq!(row.get::<_, i64>(1), 1);
    drop(inside);
    drop_database_eventually(&server, &db).await;
}

#[tokio::test]
async fn names_at_the_limits() {
    let server = pg();
    let p = unique();
    // 63 bytes exactly, one with multi-byte characters.
    let ascii = format!("{p}{}", "a".repeat(63 - p.len()));
    let accented = format!("{p}{}", "é".repeat((63 - p.len()) / 2));
    assert_eq!(ascii.len(), 63);
    assert!(accented.len() <= 63);
    for name in [&ascii, &accented] {
        server.ensure_role(&role(name, &[], "pw")).await.unwrap();
        server
            .ensure_database(&DatabaseSpec {
                name: name.clone(),
                owner: Some(name.clone()),
                ..DatabaseSpec::default()
            })
            .await
            .unwrap();
        assert!(server.observe_role(name, None).await.unwrap().is_some());
        assert!(server.observe_database(name).await.unwrap().is_some());
        server.drop_database(name).await.unwrap();
        server.drop_role(name).await.unwrap();
    }
    // One byte more is refused before any SQL is sent.
    let too_long = format!("{ascii}b");
    let before = server.writes();
    let err = server
        .ensure_role(&role(&too_long, &[], "pw"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidName(_)), "{err}");
    assert_eq!(err.category(), "name_too_long");
    let err = server
        .ensure_database(&DatabaseSpec {
            name: too_long.clone(),
            ..DatabaseSpec::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidName(_)), "{err}");
    assert_eq!(server.writes(), before);
}

#[tokio::test]
async fn hostile_names_are_quoted_never_executed() {
    let server = pg();
    let p = unique();
    let sentinel = format!("{p}sentinel");
    let raw = pg_raw(5432, "postgres").await;
    raw.batch_execute(&format!("CREATE TABLE \"{sentinel}\" (v int)"))
        .await
        .unwrap();
    let names = [
        format!("{p}x\"; DROP TABLE \"{sentinel}\"; --"),
        format!("{p}a'b"),
        format!("{p}with space"),
        format!("{p}ünï©ødé ✓"),
        format!("{p}a`b"),
        format!("{p}'); DROP ROLE postgres; --"),
        format!("{p}back\\slash"),
    ];
    for name in &names {
        let mut spec = role(name, &[RoleFlag::Login], "p'w\"; --");
        spec.parameters =
            BTreeMap::from([("application_name".into(), "'; DROP TABLE x; --".into())]);
        server.ensure_role(&spec).await.unwrap();
        server
            .ensure_database(&DatabaseSpec {
                name: name.clone(),
                owner: Some(name.clone()),
                ..DatabaseSpec::default()
            })
            .await
            .unwrap();
        let privileges = [PrivilegeSpec {
            database: name.clone(),
            level: PrivilegeLevel::ReadWrite,
        }];
        server.ensure_privileges(name, &privileges).await.unwrap();
        // Exactly these names exist.
        let found: i64 = raw
            .query_one(
                "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = $1) + \
                        (SELECT count(*) FROM pg_database WHERE datname = $1)",
                &[name],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(found, 2, "{name}");
        assert_converged_role(&server, &spec).await;
        assert_eq!(
            server.ensure_privileges(name, &privileges).await.unwrap(),
            vec![]
        );
        server.drop_database(name).await.unwrap();
        server.drop_role(name).await.unwrap();
        assert!(server.observe_role(name, None).await.unwrap().is_none());
    }
    // Nothing was injected: the sentinel table and the postgres role are still there.
    let intact: bool = scalar_bool(
        &raw,
        &format!(
            "SELECT to_regclass('\"{sentinel}\"') IS NOT NULL \
             AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'postgres')"
        ),
    )
    .await;
    assert!(intact);
    raw.batch_execute(&format!("DROP TABLE \"{sentinel}\""))
        .await
        .unwrap();
}

#[tokio::test]
async fn tls_when_sslmode_asks_for_it() {
    // The local server has ssl=on with a self-signed certificate.
    let mut info = pg_info(5432);
    info.sslmode = Some("require".into());
    let server = Server::new(&info).unwrap();
    server.probe().await.expect("TLS without verification");
    // verify-full without a CA that signed it must fail the handshake: TLS really is used.
    info.sslmode = Some("verify-full".into());
    let server = Server::new(&info).unwrap();
    let err = server.probe().await.unwrap_err();
    assert_eq!(err.category(), "unreachable", "{err}");
}

#[tokio::test]
async fn server_stopped_and_restarted_is_picked_up() {
    let instance = TempPostgres::init();
    let server = Server::new(&pg_info(instance.port)).unwrap();
    let spec = role("restart_app", &[RoleFlag::Login], "pw");
    server.ensure_role(&spec).await.unwrap();
    assert!(!server.probe().await.unwrap().version.is_empty());

    instance.stop();
    let err = server.probe().await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert_eq!(err.category(), "unreachable");
    let err = server.ensure_role(&spec).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");

    instance.start();
    // The same Server value recovers: the role is still there and nothing needs doing.
    server.probe().await.unwrap();
    assert_eq!(server.ensure_role(&spec).await.unwrap(), vec![]);
    let other = role("restart_other", &[], "pw");
    assert_eq!(server.ensure_role(&other).await.unwrap().len(), 1);
    assert_eq!(
        server
            .observe_role("restart_other", Some("pw"))
            .await
            .unwrap()
            .map(|s| s.password),
        Some(PasswordState::Matches)
    );
}
