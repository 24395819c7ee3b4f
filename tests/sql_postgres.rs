//! The SQL engine against the real PostgreSQL on 127.0.0.1:5432 (and a second instance it
//! starts itself for the restart test).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{
    TempPostgres, assert_converged_role, hostile_markers, marker, pg, pg_info, pg_raw, role, unique,
};
use dbward::sql::{
    Attribute, DatabaseSpec, Error, OwnerMarker, Password, PasswordState, PrivilegeLevel,
    PrivilegeSpec, RoleFlag, RoleSpec, Server, SqlAction, plan_database, plan_privileges,
    plan_role,
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
        marker: None,
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

fn marked_role(name: &str, marker: &OwnerMarker) -> RoleSpec {
    RoleSpec {
        marker: Some(marker.clone()),
        ..role(name, &[RoleFlag::Login], "pw")
    }
}

fn marked_database(name: &str, marker: &OwnerMarker) -> DatabaseSpec {
    DatabaseSpec {
        name: name.to_owned(),
        marker: Some(marker.clone()),
        ..DatabaseSpec::default()
    }
}

async fn comment(raw: &tokio_postgres::Client, sql: &str, name: &str) -> Option<String> {
    raw.query_one(sql, &[&name]).await.expect(sql).get(0)
}

#[tokio::test]
async fn markers_are_created_observed_idempotent_changed_and_dropped() {
    let server = pg();
    let raw = pg_raw(5432, "postgres").await;
    let p = unique();
    let (name, db) = (format!("{p}app"), format!("{p}db"));
    let ours = marker("team-a", "ServiceUser", "app", "uid-1");

    let actions = server
        .ensure_role(&marked_role(&name, &ours))
        .await
        .unwrap();
    assert!(matches!(
        actions.as_slice(),
        [SqlAction::CreateRole { marker: Some(m), .. }] if m == &ours
    ));
    let db_marker = marker("team-a", "Database", "orders", "uid-2");
    server
        .ensure_database(&marked_database(&db, &db_marker))
        .await
        .unwrap();
    let role_state = server.observe_role(&name, None).await.unwrap().unwrap();
    assert_eq!(role_state.marker.as_ref(), Some(&ours));
    let db_state = server.observe_database(&db).await.unwrap().unwrap();
    assert_eq!(db_state.marker.as_ref(), Some(&db_marker));
    // The marker is the comment, as documented.
    assert_eq!(
        comment(
            &raw,
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
            &name
        )
        .await,
        Some(ours.encode())
    );

    // Unchanged: nothing to do, nothing written, also from a new Server (markers live on the
    // server).
    assert_converged_role(&server, &marked_role(&name, &ours)).await;
    for server in [&server, &pg()] {
        let before = server.writes();
        let actions = server
            .ensure_database(&marked_database(&db, &db_marker))
            .await
            .unwrap();
        assert_eq!(actions, vec![]);
        assert_eq!(server.writes(), before);
    }
    assert_converged_role(&pg(), &marked_role(&name, &ours)).await;

    // Another marker (the object was recreated: new UID) is written over the old one.
    let recreated = marker("team-a", "ServiceUser", "app", "uid-3");
    let before = server.writes();
    let actions = server
        .ensure_role(&marked_role(&name, &recreated))
        .await
        .unwrap();
    assert_eq!(
        actions,
        vec![SqlAction::MarkRole {
            name: name.clone(),
            marker: recreated.clone()
        }]
    );
    assert_eq!(server.writes(), before + 1);
    let state = server.observe_role(&name, None).await.unwrap().unwrap();
    assert_eq!(state.marker, Some(recreated.clone()));
    let other_db = marker("team-a", "Database", "orders", "uid-4");
    server
        .ensure_database(&marked_database(&db, &other_db))
        .await
        .unwrap();
    let state = server.observe_database(&db).await.unwrap().unwrap();
    assert_eq!(state.marker, Some(other_db));

    // A plan without a marker leaves markers alone.
    assert_converged_role(&server, &role(&name, &[RoleFlag::Login], "pw")).await;

    // Dropped: the marker goes with the object.
    server.drop_database(&db).await.unwrap();
    server.drop_role(&name).await.unwrap();
    assert!(server.observe_role(&name, None).await.unwrap().is_none());
    assert!(server.observe_database(&db).await.unwrap().is_none());
    let left: i64 = raw
        .query_one(
            "SELECT count(*) FROM pg_shdescription WHERE description = $1",
            &[&recreated.encode()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn objects_created_by_hand_have_no_marker() {
    let server = pg();
    let raw = pg_raw(5432, "postgres").await;
    let p = unique();
    let (plain, commented, db) = (
        format!("{p}plain"),
        format!("{p}commented"),
        format!("{p}db"),
    );
    raw.batch_execute(&format!(
        "CREATE ROLE \"{plain}\"; CREATE ROLE \"{commented}\"; \
         COMMENT ON ROLE \"{commented}\" IS 'dbward.dev/owner not json'"
    ))
    .await
    .unwrap();
    raw.batch_execute(&format!("CREATE DATABASE \"{db}\""))
        .await
        .unwrap();
    let roles = server
        .observe_roles(&[(&plain, None), (&commented, None)])
        .await
        .unwrap();
    assert_eq!(roles.len(), 2);
    assert!(roles.values().all(|r| r.marker.is_none()), "{roles:?}");
    let state = server.observe_database(&db).await.unwrap().unwrap();
    assert_eq!(state.marker, None);
    // What plan_* would do with them is the reconciler's call (claim): observed as unmarked.
    server.drop_database(&db).await.unwrap();
    server.drop_role(&plain).await.unwrap();
    server.drop_role(&commented).await.unwrap();
}

#[tokio::test]
async fn hostile_marker_content_round_trips_exactly() {
    let server = pg();
    let p = unique();
    for (i, hostile) in hostile_markers().iter().enumerate() {
        let (name, db) = (format!("{p}r{i}"), format!("{p}d{i}"));
        server
            .ensure_role(&marked_role(&name, hostile))
            .await
            .unwrap();
        server
            .ensure_database(&marked_database(&db, hostile))
            .await
            .unwrap();
        let role_state = server.observe_role(&name, None).await.unwrap().unwrap();
        assert_eq!(role_state.marker.as_ref(), Some(hostile));
        let db_state = server.observe_database(&db).await.unwrap().unwrap();
        assert_eq!(db_state.marker.as_ref(), Some(hostile));
        assert_converged_role(&server, &marked_role(&name, hostile)).await;
        // A MarkRole of hostile content goes through the same literal.
        let plain = marker("ns", "ServiceUser", "x", "u");
        server
            .apply(&[SqlAction::MarkRole {
                name: name.clone(),
                marker: plain.clone(),
            }])
            .await
            .unwrap();
        server
            .apply(&[SqlAction::MarkRole {
                name: name.clone(),
                marker: hostile.clone(),
            }])
            .await
            .unwrap();
        let role_state = server.observe_role(&name, None).await.unwrap().unwrap();
        assert_eq!(role_state.marker.as_ref(), Some(hostile));
        server.drop_database(&db).await.unwrap();
        server.drop_role(&name).await.unwrap();
    }
    // Nothing was injected.
    let raw = pg_raw(5432, "postgres").await;
    assert!(
        scalar_bool(
            &raw,
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'postgres')"
        )
        .await
    );
}

#[tokio::test]
async fn scripts_carry_the_markers() {
    let server = pg();
    let m = marker("team-a", "ServiceUser", "it's", "u1");
    let script = server
        .render_script(&[
            SqlAction::CreateRole {
                name: "app".into(),
                attributes: BTreeSet::from([Attribute::Login, Attribute::Inherit]),
                password: None,
                marker: Some(m.clone()),
            },
            SqlAction::CreateDatabase {
                name: "db".into(),
                owner: None,
                lc_collate: None,
                lc_ctype: None,
                marker: Some(m.clone()),
            },
            SqlAction::MarkRole {
                name: "app".into(),
                marker: m.clone(),
            },
        ])
        .await
        .unwrap();
    let literal = format!("'{}'", m.encode().replace('\'', "''"));
    let lines: Vec<&str> = script.lines().collect();
    assert_eq!(lines[0], "BEGIN;");
    assert!(lines[1].starts_with("CREATE ROLE \"app\" WITH"), "{script}");
    assert_eq!(lines[2], format!("COMMENT ON ROLE \"app\" IS {literal};"));
    assert_eq!(lines[3], "COMMIT;");
    assert_eq!(lines[4], "CREATE DATABASE \"db\";");
    assert_eq!(
        lines[5],
        format!("COMMENT ON DATABASE \"db\" IS {literal};")
    );
    assert_eq!(lines[6], format!("COMMENT ON ROLE \"app\" IS {literal};"));
}

/// A lock that blocks every comment write, held from the moment this returns (taken before
/// the statement under test starts, so that statement can never slip through ahead of it).
struct CommentLock {
    locker: tokio_postgres::Client,
    watcher: tokio_postgres::Client,
}

impl CommentLock {
    async fn hold() -> Self {
        let locker = pg_raw(5432, "postgres").await;
        let watcher = pg_raw(5432, "postgres").await;
        // SHARE blocks COMMENT (ROW EXCLUSIVE) but not reads of comments.
        locker
            .batch_execute("BEGIN; LOCK TABLE pg_catalog.pg_shdescription IN SHARE MODE")
            .await
            .unwrap();
        Self { locker, watcher }
    }

    /// Waits until a dbward statement mentioning `name` waits on the lock, cancels that
    /// statement, then releases the lock.
    async fn cancel_comment_on(self, name: &str) {
        loop {
            let rows = self
                .watcher
                .query(
                    "SELECT pid FROM pg_stat_activity \
                     WHERE application_name = 'dbward' AND wait_event_type = 'Lock' \
                       AND query LIKE '%COMMENT ON%' AND strpos(query, $1) > 0",
                    &[&name],
                )
                .await
                .unwrap();
            if let Some(row) = rows.first() {
                let pid: i32 = row.get(0);
                self.watcher
                    .execute("SELECT pg_cancel_backend($1)", &[&pid])
                    .await
                    .unwrap();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.locker.batch_execute("ROLLBACK").await.unwrap();
    }
}

#[tokio::test]
async fn no_role_or_database_remains_without_its_marker() {
    let server = pg();
    let p = unique();
    let (name, db) = (format!("{p}app"), format!("{p}db"));
    let m = marker("team-a", "ServiceUser", "app", "u1");
    let deadline = std::time::Duration::from_secs(30);

    // CREATE ROLE and COMMENT run in one transaction: when the comment fails, no role remains.
    let spec = marked_role(&name, &m);
    let lock = CommentLock::hold().await;
    let (result, ()) = tokio::time::timeout(deadline, async {
        tokio::join!(server.ensure_role(&spec), lock.cancel_comment_on(&name))
    })
    .await
    .expect("no hang");
    let err = result.unwrap_err();
    assert_eq!(err.category(), "apply", "{err}");
    assert!(server.observe_role(&name, None).await.unwrap().is_none());
    // The connection went back to the pool clean: the next ensure works.
    server.ensure_role(&marked_role(&name, &m)).await.unwrap();
    assert_eq!(
        server
            .observe_role(&name, None)
            .await
            .unwrap()
            .unwrap()
            .marker,
        Some(m.clone())
    );

    // CREATE DATABASE cannot be in a transaction: a failed comment drops the new database.
    let db_spec = marked_database(&db, &m);
    let lock = CommentLock::hold().await;
    let (result, ()) = tokio::time::timeout(deadline, async {
        tokio::join!(
            server.ensure_database(&db_spec),
            lock.cancel_comment_on(&db)
        )
    })
    .await
    .expect("no hang");
    let err = result.unwrap_err();
    assert_eq!(err.category(), "apply", "{err}");
    assert!(server.observe_database(&db).await.unwrap().is_none());

    server.drop_role(&name).await.unwrap();
}

#[tokio::test]
async fn prefer_uses_tls_exactly_when_the_server_offers_it() {
    let raw = pg_raw(5432, "postgres").await;
    let offered: String = raw.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let offered = offered == "on";
    for sslmode in [None, Some("prefer"), Some("allow"), Some("")] {
        let mut info = pg_info(5432);
        info.sslmode = sslmode.map(str::to_owned);
        let info = Server::new(&info).unwrap().probe().await.unwrap();
        assert_eq!(info.tls, offered, "sslmode {sslmode:?}");
    }
    let mut info = pg_info(5432);
    info.sslmode = Some("disable".into());
    assert!(!Server::new(&info).unwrap().probe().await.unwrap().tls);
    if offered {
        info.sslmode = Some("require".into());
        assert!(Server::new(&info).unwrap().probe().await.unwrap().tls);
    }
    // The server's view of our connection agrees.
    let mut info = pg_info(5432);
    info.sslmode = Some("prefer".into());
    let server = Server::new(&info).unwrap();
    server.probe().await.unwrap();
    let encrypted: i64 = raw
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'dbward' AND s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if offered {
        assert!(encrypted > 0);
    }
}

#[tokio::test]
async fn prefer_without_tls_on_the_server_is_plaintext() {
    // A second instance with ssl off (initdb's default).
    let instance = TempPostgres::init();
    let mut info = pg_info(instance.port);
    info.sslmode = Some("prefer".into());
    let probed = Server::new(&info).unwrap().probe().await.unwrap();
    assert!(!probed.tls);
    info.sslmode = None;
    assert!(!Server::new(&info).unwrap().probe().await.unwrap().tls);
    info.sslmode = Some("require".into());
    let err = Server::new(&info).unwrap().probe().await.unwrap_err();
    assert_eq!(err.category(), "unreachable", "{err}");
}
