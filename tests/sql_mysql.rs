//! The SQL engine against the real MariaDB on 127.0.0.1:3306 (and a second instance it starts
//! itself for the restart test).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{
    TempMariadb, assert_converged_role, hostile_markers, marker, my, my_info, my_raw, role as user,
    unique,
};
use dbward::sql::{
    Attribute, DatabaseSpec, Error, OwnerMarker, Password, PasswordState, PrivilegeLevel,
    PrivilegeSpec, RoleFlag, RoleSpec, Server, SqlAction, plan_database, plan_privileges,
    plan_role,
};
use mysql_async::prelude::Queryable;

/// Privileges of `'user'@'%'` on `db`.* as SHOW GRANTS would tell, from mysql.db.
async fn db_privileges(conn: &mut mysql_async::Conn, user: &str, db_pattern: &str) -> Vec<String> {
    let row: Option<mysql_async::Row> = conn
        .exec_first(
            "SELECT * FROM mysql.db WHERE Host = '%' AND User = ? AND Db = ?",
            (user, db_pattern),
        )
        .await
        .unwrap();
    let Some(row) = row else { return Vec::new() };
    let mut held = Vec::new();
    for (i, column) in row.columns_ref().iter().enumerate() {
        let name = column.name_str().into_owned();
        if name.ends_with("_priv") && row.get::<String, _>(i).as_deref() == Some("Y") {
            held.push(name);
        }
    }
    held
}

#[tokio::test]
async fn database_create_idempotent_and_drop() {
    let server = my();
    let spec = DatabaseSpec {
        name: format!("{}db", unique()),
        owner: None,
        lc_collate: Some("utf8mb4_bin".into()),
        lc_ctype: Some("utf8mb4".into()),
        marker: None,
    };
    let actions = server.ensure_database(&spec).await.unwrap();
    assert!(matches!(
        actions.as_slice(),
        [SqlAction::CreateDatabase { .. }]
    ));
    let state = server.observe_database(&spec.name).await.unwrap().unwrap();
    assert_eq!(state.lc_collate, "utf8mb4_bin");
    assert_eq!(state.lc_ctype, "utf8mb4");
    let before = server.writes();
    assert_eq!(server.ensure_database(&spec).await.unwrap(), vec![]);
    assert_eq!(server.writes(), before);

    // An owner has no meaning on MySQL: refused before anything runs.
    let with_owner = DatabaseSpec {
        owner: Some("someone".into()),
        ..spec.clone()
    };
    let err = server.ensure_database(&with_owner).await.unwrap_err();
    assert_eq!(err.category(), "unsupported", "{err}");

    // Dropped by hand: recreated.
    let mut raw = my_raw(3306, None).await;
    raw.query_drop(format!("DROP DATABASE `{}`", spec.name))
        .await
        .unwrap();
    let observed = server.observe_database(&spec.name).await.unwrap();
    assert_eq!(plan_database(&spec, observed.as_ref()).len(), 1);
    server.ensure_database(&spec).await.unwrap();

    server.drop_database(&spec.name).await.unwrap();
    assert!(server.observe_database(&spec.name).await.unwrap().is_none());
    let before = server.writes();
    server.drop_database(&spec.name).await.unwrap();
    assert_eq!(server.writes(), before);
}

#[tokio::test]
async fn user_create_update_idempotent_and_drift() {
    let server = my();
    let p = unique();
    let (r1, r2) = (format!("{p}r1"), format!("{p}r2"));
    let mut raw = my_raw(3306, None).await;
    for r in [&r1, &r2] {
        raw.query_drop(format!("CREATE ROLE `{r}`")).await.unwrap();
    }
    let mut spec = user(
        &format!("{p}app"),
        &[RoleFlag::Login, RoleFlag::Createdb],
        "first pw",
    );
    spec.in_roles = [r1.clone()].into();
    server.ensure_role(&spec).await.unwrap();

    let state = server
        .observe_role(&spec.name, Some("first pw"))
        .await
        .unwrap()
        .unwrap();
    assert!(state.attributes.contains(&Attribute::Login));
    assert!(state.attributes.contains(&Attribute::Createdb));
    assert!(!state.attributes.contains(&Attribute::Superuser));
    assert_eq!(state.in_roles, BTreeSet::from([r1.clone()]));
    assert_eq!(state.password, PasswordState::Matches);
    assert_eq!(
        server
            .observe_role(&spec.name, Some("nope"))
            .await
            .unwrap()
            .unwrap()
            .password,
        PasswordState::Differs
    );
    // The server stores the native hash of the password (sent hashed).
    let (plugin, stored): (String, String) = raw
        .exec_first(
            "SELECT plugin, authentication_string FROM mysql.user WHERE User = ? AND Host = '%'",
            (&spec.name,),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plugin, "mysql_native_password");
    let expected: String = raw
        .exec_first("SELECT PASSWORD(?)", ("first pw",))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, expected);
    assert_converged_role(&server, &spec).await;

    // Update: nologin (account lock), replication instead of createdb, other role, new password.
    spec.flags = [RoleFlag::Nologin, RoleFlag::Replication].into();
    spec.in_roles = [r2.clone()].into();
    spec.password = Some(Password::new("second pw"));
    let actions = server.ensure_role(&spec).await.unwrap();
    assert_eq!(actions.len(), 4, "{actions:#?}");
    let state = server
        .observe_role(&spec.name, Some("second pw"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.attributes,
        BTreeSet::from([Attribute::Inherit, Attribute::Replication])
    );
    assert_eq!(state.in_roles, BTreeSet::from([r2.clone()]));
    assert_eq!(state.password, PasswordState::Matches);
    assert_converged_role(&server, &spec).await;

    // Superuser and back.
    spec.flags = [RoleFlag::Superuser].into();
    server.ensure_role(&spec).await.unwrap();
    assert_converged_role(&server, &spec).await;
    spec.flags = [RoleFlag::Createdb].into();
    server.ensure_role(&spec).await.unwrap();
    let state = server
        .observe_role(&spec.name, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.attributes,
        BTreeSet::from([Attribute::Inherit, Attribute::Login, Attribute::Createdb])
    );
    assert_converged_role(&server, &spec).await;

    // Drift by hand, repaired.
    let account = format!("'{}'@'%'", spec.name);
    for sql in [
        format!("ALTER USER {account} ACCOUNT LOCK"),
        format!("REVOKE CREATE ON *.* FROM {account}"),
        format!("REVOKE `{r2}` FROM {account}"),
        format!("SET PASSWORD FOR {account} = PASSWORD('by hand')"),
    ] {
        raw.query_drop(sql).await.unwrap();
    }
    let observed = server
        .observe_role(&spec.name, Some("second pw"))
        .await
        .unwrap();
    let plan = plan_role(server.engine(), &spec, observed.as_ref());
    assert_eq!(plan.len(), 3, "{plan:#?}");
    server.ensure_role(&spec).await.unwrap();
    assert_converged_role(&server, &spec).await;

    // Parameters are PostgreSQL-only: a clear error, nothing executed.
    let mut with_params = spec.clone();
    with_params.parameters = BTreeMap::from([("wait_timeout".into(), "10".into())]);
    let before = server.writes();
    let err = server.ensure_role(&with_params).await.unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("parameters"));
    assert_eq!(server.writes(), before);

    server.drop_role(&spec.name).await.unwrap();
    assert!(
        server
            .observe_role(&spec.name, None)
            .await
            .unwrap()
            .is_none()
    );
    let before = server.writes();
    server.drop_role(&spec.name).await.unwrap();
    assert_eq!(server.writes(), before);
    for r in [&r1, &r2] {
        raw.query_drop(format!("DROP ROLE `{r}`")).await.unwrap();
    }
}

#[tokio::test]
async fn privileges_levels_idempotency_drift_and_revocation() {
    let server = my();
    let p = unique();
    // An underscore in the name: the grant must not become a wildcard.
    let db = format!("{p}my_db");
    let pattern = db.replace('_', "\\_");
    let name = format!("{p}user");
    server
        .ensure_database(&DatabaseSpec {
            name: db.clone(),
            ..DatabaseSpec::default()
        })
        .await
        .unwrap();
    server.ensure_role(&user(&name, &[], "pw")).await.unwrap();
    let mut raw = my_raw(3306, None).await;
    let level = |level| {
        [PrivilegeSpec {
            database: db.clone(),
            level,
        }]
    };

    for (lvl, expected) in [
        (PrivilegeLevel::ReadOnly, 1),
        (PrivilegeLevel::ReadWrite, 4),
        (PrivilegeLevel::Owner, 18),
        (PrivilegeLevel::ReadWrite, 4),
    ] {
        server.ensure_privileges(&name, &level(lvl)).await.unwrap();
        let held = db_privileges(&mut raw, &name, &pattern).await;
        assert!(held.len() >= expected, "{lvl:?}: {held:?}");
        if lvl != PrivilegeLevel::Owner {
            assert_eq!(held.len(), expected, "{lvl:?}: {held:?}");
        }
        let before = server.writes();
        assert_eq!(
            server.ensure_privileges(&name, &level(lvl)).await.unwrap(),
            vec![]
        );
        assert_eq!(server.writes(), before);
    }

    // Drift: revoked by hand, and an extra grant, both repaired.
    raw.query_drop(format!("REVOKE INSERT ON `{pattern}`.* FROM '{name}'@'%'"))
        .await
        .unwrap();
    raw.query_drop(format!("GRANT DROP ON `{pattern}`.* TO '{name}'@'%'"))
        .await
        .unwrap();
    let mut observed = server
        .observe_privileges(&[name.as_str()], &[db.as_str()])
        .await
        .unwrap();
    let plan = plan_privileges(
        server.engine(),
        &name,
        &level(PrivilegeLevel::ReadWrite),
        &observed.remove(&name).unwrap_or_default(),
    );
    assert_eq!(plan.len(), 2, "{plan:#?}");
    server
        .ensure_privileges(&name, &level(PrivilegeLevel::ReadWrite))
        .await
        .unwrap();
    let held = db_privileges(&mut raw, &name, &pattern).await;
    assert_eq!(
        held,
        vec!["Select_priv", "Insert_priv", "Update_priv", "Delete_priv"]
    );

    // No longer desired: revoked.
    server.ensure_privileges(&name, &[]).await.unwrap();
    assert!(db_privileges(&mut raw, &name, &pattern).await.is_empty());
    assert_eq!(server.ensure_privileges(&name, &[]).await.unwrap(), vec![]);

    server.drop_role(&name).await.unwrap();
    server.drop_database(&db).await.unwrap();
}

#[tokio::test]
async fn drop_database_with_connection_is_reported_not_forced() {
    let server = my();
    let db = format!("{}busy", unique());
    server
        .ensure_database(&DatabaseSpec {
            name: db.clone(),
            ..DatabaseSpec::default()
        })
        .await
        .unwrap();
    let conn = my_raw(3306, Some(&db)).await;
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
    conn.disconnect().await.unwrap();
    let mut result = Ok(());
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
async fn names_at_the_limits() {
    let server = my();
    let p = unique();
    let user32 = format!("{p}{}", "ü".repeat(32 - p.chars().count()));
    // Without '_': in GRANT a '_' is escaped, which takes a character of the 64.
    let db64 = format!("{}{}", p.replace('_', "x"), "d".repeat(64 - p.len()));
    assert_eq!(user32.chars().count(), 32);
    assert_eq!(db64.chars().count(), 64);
    server.ensure_role(&user(&user32, &[], "pw")).await.unwrap();
    assert_converged_role(&server, &user(&user32, &[], "pw")).await;
    server
        .ensure_database(&DatabaseSpec {
            name: db64.clone(),
            ..DatabaseSpec::default()
        })
        .await
        .unwrap();
    let privileges = [PrivilegeSpec {
        database: db64.clone(),
        level: PrivilegeLevel::ReadOnly,
    }];
    server
        .ensure_privileges(&user32, &privileges)
        .await
        .unwrap();
    assert_eq!(
        server
            .ensure_privileges(&user32, &privileges)
            .await
            .unwrap(),
        vec![]
    );
    server.drop_role(&user32).await.unwrap();
    server.drop_database(&db64).await.unwrap();

    let before = server.writes();
    // 64 characters with a '_' cannot be granted on exactly: refused before any SQL.
    let err = server
        .apply(&[SqlAction::GrantPrivileges {
            role: user32.clone(),
            database: format!("{p}{}", "d".repeat(64 - p.len())),
            privileges: dbward::sql::required_privileges(server.engine(), PrivilegeLevel::ReadOnly),
        }])
        .await
        .unwrap_err();
    assert_eq!(err.category(), "name_invalid", "{err}");
    let err = server
        .ensure_role(&user(&format!("{user32}x"), &[], "pw"))
        .await
        .unwrap_err();
    assert_eq!(err.category(), "name_too_long", "{err}");
    let err = server
        .ensure_database(&DatabaseSpec {
            name: format!("{db64}x"),
            ..DatabaseSpec::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.category(), "name_too_long", "{err}");
    assert_eq!(server.writes(), before);
}

#[tokio::test]
async fn hostile_names_are_quoted_never_executed() {
    let server = my();
    let p = unique();
    let sentinel = format!("{p}sentinel");
    let mut raw = my_raw(3306, None).await;
    raw.query_drop(format!("CREATE DATABASE `{sentinel}`"))
        .await
        .unwrap();
    let names = [
        format!("{p}x\"; DROP DATABASE `{sentinel}`; --"),
        format!("{p}a`b"),
        format!("{p}a'b"),
        format!("{p}with space"),
        format!("{p}ünï©ødé ✓"),
        format!("{p}x'; DROP USER root; --"),
        format!("{p}back\\slash"),
        format!("{p}100%_wild"),
    ];
    for name in &names {
        // User names are cut to 32 characters; database names keep the whole text.
        let user_name: String = name.chars().take(32).collect();
        let spec = user(&user_name, &[RoleFlag::Login], "p'w\\\"; --");
        server.ensure_role(&spec).await.unwrap();
        server
            .ensure_database(&DatabaseSpec {
                name: name.clone(),
                ..DatabaseSpec::default()
            })
            .await
            .unwrap();
        let privileges = [PrivilegeSpec {
            database: name.clone(),
            level: PrivilegeLevel::ReadWrite,
        }];
        server
            .ensure_privileges(&user_name, &privileges)
            .await
            .unwrap();
        let users: Option<i64> = raw
            .exec_first(
                "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = '%'",
                (&user_name,),
            )
            .await
            .unwrap();
        let dbs: Option<i64> = raw
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (name,),
            )
            .await
            .unwrap();
        assert_eq!((users, dbs), (Some(1), Some(1)), "{name}");
        assert_converged_role(&server, &spec).await;
        assert_eq!(
            server
                .ensure_privileges(&user_name, &privileges)
                .await
                .unwrap(),
            vec![],
            "{name}"
        );
        server.drop_database(name).await.unwrap();
        server.drop_role(&user_name).await.unwrap();
        assert!(
            server
                .observe_role(&user_name, None)
                .await
                .unwrap()
                .is_none()
        );
        assert!(server.observe_database(name).await.unwrap().is_none());
    }
    let intact: Option<i64> = raw
        .exec_first(
            "SELECT (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?) + \
                    (SELECT COUNT(*) FROM mysql.user WHERE User = 'root')",
            (&sentinel,),
        )
        .await
        .unwrap();
    assert!(intact.unwrap_or(0) >= 2);
    raw.query_drop(format!("DROP DATABASE `{sentinel}`"))
        .await
        .unwrap();
}

#[tokio::test]
async fn server_stopped_and_restarted_is_picked_up() {
    let mut instance = TempMariadb::init();
    let server = Server::new(&my_info(instance.port)).unwrap();
    let spec = user("restart_app", &[RoleFlag::Login], "pw");
    server.ensure_role(&spec).await.unwrap();
    assert!(server.probe().await.unwrap().version.contains("MariaDB"));

    instance.stop();
    let err = server.probe().await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    let err = server.ensure_role(&spec).await.unwrap_err();
    assert_eq!(err.category(), "unreachable", "{err}");

    instance.start();
    server.probe().await.unwrap();
    assert_eq!(server.ensure_role(&spec).await.unwrap(), vec![]);
    let other = user("restart_other", &[], "pw");
    assert!(!server.ensure_role(&other).await.unwrap().is_empty());
    assert_eq!(
        server
            .observe_role("restart_other", Some("pw"))
            .await
            .unwrap()
            .map(|s| s.password),
        Some(PasswordState::Matches)
    );
}

fn marked_user(name: &str, marker: &OwnerMarker) -> RoleSpec {
    RoleSpec {
        marker: Some(marker.clone()),
        ..user(name, &[RoleFlag::Login], "pw")
    }
}

fn marked_database(name: &str, marker: &OwnerMarker) -> DatabaseSpec {
    DatabaseSpec {
        name: name.to_owned(),
        marker: Some(marker.clone()),
        ..DatabaseSpec::default()
    }
}

/// The catalog row of `name`, read by hand: (namespace, kind, object_name, uid).
async fn catalog_row(
    conn: &mut mysql_async::Conn,
    object_type: &str,
    name: &str,
) -> Option<(String, String, String, Option<String>)> {
    conn.exec_first(
        "SELECT namespace, kind, object_name, uid FROM _dbward.owners \
         WHERE object_type = ? AND name = ?",
        (object_type, name.as_bytes()),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn markers_are_created_observed_idempotent_changed_and_dropped() {
    let server = my();
    let mut raw = my_raw(3306, None).await;
    let p = unique();
    let (name, db) = (format!("{p}app"), format!("{p}db"));
    let ours = marker("team-a", "ServiceUser", "app", "uid-1");
    let db_marker = marker("team-a", "Database", "orders", "uid-2");

    server
        .ensure_role(&marked_user(&name, &ours))
        .await
        .unwrap();
    server
        .ensure_database(&marked_database(&db, &db_marker))
        .await
        .unwrap();
    let state = server.observe_role(&name, None).await.unwrap().unwrap();
    assert_eq!(state.marker.as_ref(), Some(&ours));
    let state = server.observe_database(&db).await.unwrap().unwrap();
    assert_eq!(state.marker.as_ref(), Some(&db_marker));
    assert_eq!(
        catalog_row(&mut raw, "role", &name).await,
        Some((
            "team-a".into(),
            "ServiceUser".into(),
            "app".into(),
            Some("uid-1".into())
        ))
    );

    // Unchanged: nothing to do, nothing written, also from a new Server.
    for server in [&server, &my()] {
        assert_converged_role(server, &marked_user(&name, &ours)).await;
        let before = server.writes();
        let actions = server
            .ensure_database(&marked_database(&db, &db_marker))
            .await
            .unwrap();
        assert_eq!(actions, vec![]);
        assert_eq!(server.writes(), before);
    }

    // Another marker is written over the old one, as one write.
    let recreated = marker("team-a", "ServiceUser", "app", "uid-3");
    let before = server.writes();
    let actions = server
        .ensure_role(&marked_user(&name, &recreated))
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
    assert_eq!(state.marker, Some(recreated));
    let local = OwnerMarker::new("team-a", "Database", "orders", None);
    server
        .ensure_database(&marked_database(&db, &local))
        .await
        .unwrap();
    let state = server.observe_database(&db).await.unwrap().unwrap();
    assert_eq!(state.marker, Some(local));
    assert_converged_role(&server, &user(&name, &[RoleFlag::Login], "pw")).await;

    // Dropped: the catalog rows go too; dropping again writes nothing.
    server.drop_database(&db).await.unwrap();
    server.drop_role(&name).await.unwrap();
    assert!(server.observe_role(&name, None).await.unwrap().is_none());
    assert_eq!(catalog_row(&mut raw, "role", &name).await, None);
    assert_eq!(catalog_row(&mut raw, "database", &db).await, None);
    let before = server.writes();
    server.drop_database(&db).await.unwrap();
    server.drop_role(&name).await.unwrap();
    assert_eq!(server.writes(), before);
}

#[tokio::test]
async fn objects_created_by_hand_have_no_marker() {
    let server = my();
    let mut raw = my_raw(3306, None).await;
    let p = unique();
    let (name, db) = (format!("{p}plain"), format!("{p}db"));
    raw.query_drop(format!("CREATE USER '{name}'@'%'"))
        .await
        .unwrap();
    raw.query_drop(format!("CREATE DATABASE `{db}`"))
        .await
        .unwrap();
    let state = server.observe_role(&name, None).await.unwrap().unwrap();
    assert_eq!(state.marker, None);
    let state = server.observe_database(&db).await.unwrap().unwrap();
    assert_eq!(state.marker, None);
    // Names differing only in case are other names: a marker of one is not the other's.
    let upper = name.to_uppercase();
    server
        .ensure_role(&marked_user(&upper, &marker("ns", "ServiceUser", "u", "1")))
        .await
        .unwrap();
    let state = server.observe_role(&name, None).await.unwrap().unwrap();
    assert_eq!(state.marker, None);
    server.drop_role(&upper).await.unwrap();
    server.drop_database(&db).await.unwrap();
    server.drop_role(&name).await.unwrap();
}

#[tokio::test]
async fn hostile_marker_content_round_trips_exactly() {
    let server = my();
    let p = unique();
    for (i, hostile) in hostile_markers().iter().enumerate() {
        let (name, db) = (format!("{p}r{i}"), format!("{p}d{i}"));
        server
            .ensure_role(&marked_user(&name, hostile))
            .await
            .unwrap();
        server
            .ensure_database(&marked_database(&db, hostile))
            .await
            .unwrap();
        let state = server.observe_role(&name, None).await.unwrap().unwrap();
        assert_eq!(state.marker.as_ref(), Some(hostile));
        let state = server.observe_database(&db).await.unwrap().unwrap();
        assert_eq!(state.marker.as_ref(), Some(hostile));
        assert_converged_role(&server, &marked_user(&name, hostile)).await;
        server.drop_database(&db).await.unwrap();
        server.drop_role(&name).await.unwrap();
    }
    // The script form (quoted literals) stores the same values.
    let hostile = &hostile_markers()[0];
    let name = format!("{p}script");
    let script = server
        .render_script(&[SqlAction::MarkRole {
            name: name.clone(),
            marker: hostile.clone(),
        }])
        .await
        .unwrap();
    let mut raw = my_raw(3306, None).await;
    for statement in script.split(";\n").filter(|s| !s.is_empty()) {
        raw.query_drop(statement).await.expect(statement);
    }
    let row = catalog_row(&mut raw, "role", &name).await.unwrap();
    assert_eq!(
        row,
        (
            hostile.namespace.clone(),
            hostile.kind.clone(),
            hostile.name.clone(),
            hostile.uid.clone()
        )
    );
    raw.exec_drop(
        "DELETE FROM _dbward.owners WHERE object_type = 'role' AND name = ?",
        (name.as_bytes(),),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_marker_left_for_a_missing_name_is_replaced_on_creation() {
    // What a crash between writing the catalog row and creating the user leaves behind.
    let server = my();
    let mut raw = my_raw(3306, None).await;
    let name = format!("{}app", unique());
    server
        .apply(&[SqlAction::MarkRole {
            name: name.clone(),
            marker: marker("old", "ServiceUser", "gone", "u0"),
        }])
        .await
        .unwrap();
    assert!(server.observe_role(&name, None).await.unwrap().is_none());
    let ours = marker("team-a", "ServiceUser", "app", "u1");
    server
        .ensure_role(&marked_user(&name, &ours))
        .await
        .unwrap();
    let state = server.observe_role(&name, None).await.unwrap().unwrap();
    assert_eq!(state.marker, Some(ours));
    // A creation that fails (the name was taken meanwhile) puts the row back as it was.
    let taken = format!("{}taken", unique());
    raw.query_drop(format!("CREATE USER '{taken}'@'%'"))
        .await
        .unwrap();
    let err = server
        .apply(&[SqlAction::CreateRole {
            name: taken.clone(),
            attributes: BTreeSet::from([Attribute::Login, Attribute::Inherit]),
            password: None,
            marker: Some(marker("team-b", "ServiceUser", "x", "u2")),
        }])
        .await
        .unwrap_err();
    assert_eq!(err.category(), "apply", "{err}");
    assert_eq!(catalog_row(&mut raw, "role", &taken).await, None);
    assert_eq!(
        server
            .observe_role(&taken, None)
            .await
            .unwrap()
            .unwrap()
            .marker,
        None
    );
    server.drop_role(&taken).await.unwrap();
    server.drop_role(&name).await.unwrap();
}

#[tokio::test]
async fn concurrent_drops_share_the_pool_without_waiting_on_it() {
    let server = my();
    let p = unique();
    let names: Vec<String> = (0..4).map(|i| format!("{p}{i}")).collect();
    for name in &names {
        server
            .ensure_role(&marked_user(name, &marker("ns", "ServiceUser", name, "u")))
            .await
            .unwrap();
        server
            .ensure_database(&marked_database(name, &marker("ns", "Database", name, "u")))
            .await
            .unwrap();
    }
    // 8 applies on a pool of 4: each must finish on the one connection it holds.
    let drops = names.iter().flat_map(|name| {
        [
            SqlAction::DropRole { name: name.clone() },
            SqlAction::DropDatabase { name: name.clone() },
        ]
    });
    let applies = drops.map(|action| {
        let server = &server;
        async move { server.apply(&[action]).await }
    });
    let results = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        futures::future::join_all(applies),
    )
    .await
    .expect("concurrent drops hang");
    for result in results {
        result.expect("no pool timeout");
    }
    for name in &names {
        assert!(server.observe_role(name, None).await.unwrap().is_none());
        assert!(server.observe_database(name).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn prefer_against_a_server_without_tls_is_plaintext() {
    let mut raw = my_raw(3306, None).await;
    let have_ssl: Option<(String, String)> = raw
        .query_first("SHOW VARIABLES LIKE 'have_ssl'")
        .await
        .unwrap();
    let offered = have_ssl.is_some_and(|(_, v)| v == "YES");
    for sslmode in [None, Some("prefer"), Some("PREFERRED"), Some("allow")] {
        let mut info = my_info(3306);
        info.sslmode = sslmode.map(str::to_owned);
        let server = Server::new(&info).unwrap();
        let probed = server.probe().await.unwrap();
        assert_eq!(probed.tls, offered, "sslmode {sslmode:?}");
        // Applying works on the transport chosen.
        server
            .apply(&[SqlAction::DropRole {
                name: format!("{}x", unique()),
            }])
            .await
            .unwrap();
    }
    let mut info = my_info(3306);
    info.sslmode = Some("disable".into());
    assert!(!Server::new(&info).unwrap().probe().await.unwrap().tls);
    if !offered {
        info.sslmode = Some("require".into());
        let err = Server::new(&info).unwrap().probe().await.unwrap_err();
        assert_eq!(err.category(), "unreachable", "{err}");
    }
}

#[tokio::test]
async fn catalog_is_created_with_the_first_marker_and_absent_means_unmarked() {
    let instance = TempMariadb::init();
    let server = Server::new(&my_info(instance.port)).unwrap();
    let mut raw = my_raw(instance.port, None).await;
    // No catalog yet: observing works and reports no markers; drops need none.
    raw.query_drop("CREATE USER 'hand'@'%'").await.unwrap();
    let state = server.observe_role("hand", None).await.unwrap().unwrap();
    assert_eq!(state.marker, None);
    server.drop_role("nobody").await.unwrap();
    let schemas: Vec<String> = raw
        .query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '_dbward'")
        .await
        .unwrap();
    assert!(schemas.is_empty());
    // A role without a marker does not create the catalog either.
    server.ensure_role(&user("plain", &[], "pw")).await.unwrap();
    let schemas: Vec<String> = raw
        .query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '_dbward'")
        .await
        .unwrap();
    assert!(schemas.is_empty());

    let m = marker("team-a", "ServiceUser", "app", "u1");
    server.ensure_role(&marked_user("app", &m)).await.unwrap();
    assert_eq!(
        server
            .observe_role("app", None)
            .await
            .unwrap()
            .unwrap()
            .marker,
        Some(m.clone())
    );
    // A new Server finds the catalog there and writes nothing more for the same marker.
    let again = Server::new(&my_info(instance.port)).unwrap();
    assert_converged_role(&again, &marked_user("app", &m)).await;
    let before = again.writes();
    again
        .ensure_database(&marked_database("orders", &m))
        .await
        .unwrap();
    // The catalog existed: the row and the database, nothing else.
    assert_eq!(again.writes(), before + 2);
}
