//! The generated PgBouncer configuration, run: `dbward reconcile --local` writes
//! `pgbouncer.ini`, `hba.conf`, the auth file and the pool Secrets; Debian's `pgbouncer` (1.18)
//! runs them on a free loopback port against the local PostgreSQL, and clients connect through
//! it with tokio-postgres using the pool Secret's own values.

mod common;
mod pooler_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{free_port, secret_data};
use dbward::api::PoolMode;
use dbward::pgbouncer::admin::{Console, compare_databases};
use futures::FutureExt as _;
use pooler_support::{Bouncer, Names, cleanup, connect, connect_with, entry, reconcile};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_configuration_serves_pools_through_pgbouncer() {
    let n = Names::new();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let port = free_port();
    // Cleaned up whatever happens (an assertion in the scenario panics).
    let result = std::panic::AssertUnwindSafe(scenario(&n, &out, port))
        .catch_unwind()
        .await;
    cleanup(&n).await;
    match result {
        Ok(result) => result.unwrap(),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn scenario(n: &Names, out: &Path, port: u16) -> Result<(), String> {
    let pools = [("tx", "transaction", 2), ("sess", "session", 3)];
    let first = reconcile(n, out, port, &pools);
    assert!(
        first.contains("install the pooler's lookup function"),
        "{first}"
    );
    let dir = out.join("pooler").join(&n.svc);
    for file in ["pgbouncer.ini", "hba.conf", "userlist.txt"] {
        assert!(dir.join(file).exists(), "{file} missing");
    }
    let again = reconcile(n, out, port, &pools);
    assert_eq!(again.trim(), "no changes", "a second run changes nothing");

    let bouncer = Bouncer::start(&dir.join("pgbouncer.ini"), port);
    let auth = secret_data(&out.join(format!("dbward-system.{}-pooler.yaml", n.svc)));
    let console = Console {
        host: "127.0.0.1".into(),
        port,
        user: dbward::reconcile::pooler::ADMIN_USER.into(),
        password: auth["admin-password"].clone(),
    };
    let tx = secret_data(&out.join(format!("{}.tx.yaml", n.ns)));
    let sess = secret_data(&out.join(format!("{}.sess.yaml", n.ns)));

    // Both pools serve the pool's database as the ServiceUser.
    for secret in [&tx, &sess] {
        let client = connect_with(secret)
            .await
            .map_err(|e| format!("{e}\n{}", bouncer.log()))?;
        let row = client
            .query_one("SELECT current_user::text, current_database()::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), n.user);
        assert_eq!(row.get::<_, String>(1), n.db);
    }
    let shown = console.show_databases().await.map_err(|e| e.to_string())?;
    compare_databases(
        &shown,
        &[
            entry("sess", &n.db, PoolMode::Session, 3),
            entry("tx", &n.db, PoolMode::Transaction, 2),
        ],
    )?;
    let pools_shown = console.show_pools().await.map_err(|e| e.to_string())?;
    let modes: BTreeSet<(String, String, String)> = pools_shown
        .iter()
        .map(|r| {
            (
                r["database"].clone(),
                r["user"].clone(),
                r["pool_mode"].clone(),
            )
        })
        .collect();
    assert!(
        modes.contains(&("tx".into(), n.user.clone(), "transaction".into())),
        "{modes:?}"
    );
    assert!(
        modes.contains(&("sess".into(), n.user.clone(), "session".into())),
        "{modes:?}"
    );

    more_clients_than_pool_size(&tx).await;
    refused_logins(n, port, &auth, &tx).await;
    lookup_function_filters(n).await;

    // A session on `sess`, then a pool added and PgBouncer reloaded: the session stays on its
    // server connection.
    let session = connect_with(&sess).await.unwrap();
    let pid: i32 = session
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let added = reconcile(
        n,
        out,
        port,
        &[pools[0], pools[1], ("tx2", "transaction", 4)],
    );
    assert!(added.contains("tx2"), "{added}");
    // What the controller does on each pod: SHOW DATABASES differs, so RELOAD, then it matches.
    let desired = [
        entry("sess", &n.db, PoolMode::Session, 3),
        entry("tx", &n.db, PoolMode::Transaction, 2),
        entry("tx2", &n.db, PoolMode::Transaction, 4),
    ];
    assert_eq!(console.bring_in_step(&desired).await, Ok(true), "reloaded");
    assert_eq!(console.bring_in_step(&desired).await, Ok(false), "in step");
    compare_databases(
        &console.show_databases().await.map_err(|e| e.to_string())?,
        &desired,
    )?;
    let tx2 = secret_data(&out.join(format!("{}.tx2.yaml", n.ns)));
    connect_with(&tx2)
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();
    let after: i32 = session
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        after, pid,
        "the established session kept its server connection"
    );

    // A pooled database that lost its lookup function is repaired.
    let raw = common::pg_raw(5432, &n.db).await;
    raw.batch_execute("DROP SCHEMA dbward_pgbouncer CASCADE")
        .await
        .unwrap();
    drop(raw);
    let repaired = reconcile(
        n,
        out,
        port,
        &[pools[0], pools[1], ("tx2", "transaction", 4)],
    );
    assert!(
        repaired.contains("install the pooler's lookup function"),
        "{repaired}"
    );
    let fresh = connect_with(&tx2)
        .await
        .map_err(|e| format!("after repair: {e}"))?;
    fresh.simple_query("SELECT 1").await.unwrap();
    drop((session, fresh));
    drop(bouncer);

    // The last pool removed: everything goes.
    let removed = reconcile(n, out, port, &[]);
    assert!(removed.contains("drop role"), "{removed}");
    assert!(!dir.exists(), "the pooler's files are removed");
    for name in [
        format!("{}.tx.yaml", n.ns),
        format!("dbward-system.{}-pooler.yaml", n.svc),
    ] {
        assert!(!out.join(&name).exists(), "{name} is removed");
    }
    let pg = common::pg_raw(5432, &n.db).await;
    let roles = pg
        .query(
            "SELECT 1 FROM pg_roles WHERE rolname = $1",
            &[&n.lookup_role()],
        )
        .await
        .unwrap();
    assert!(roles.is_empty(), "the lookup role is dropped");
    let schemas = pg
        .query(
            "SELECT 1 FROM pg_namespace WHERE nspname = 'dbward_pgbouncer'",
            &[],
        )
        .await
        .unwrap();
    assert!(schemas.is_empty(), "the lookup function is removed");
    assert_eq!(reconcile(n, out, port, &[]).trim(), "no changes");
    Ok(())
}

/// Transaction mode with pool_size 2: eight clients, each running transactions at once, are
/// all served, by at most two server connections.
async fn more_clients_than_pool_size(secret: &BTreeMap<String, String>) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let secret = secret.clone();
        tasks.push(tokio::spawn(async move {
            let client = connect_with(&secret)
                .await
                .expect("client through the pooler");
            let mut pids = BTreeSet::new();
            // The simple protocol: PgBouncer 1.18 keeps no named prepared statements across
            // server connections in transaction mode (1.21's max_prepared_statements does).
            for _ in 0..5 {
                let messages = client
                    .simple_query("SELECT pg_backend_pid(), pg_sleep(0.02)")
                    .await
                    .expect("a transaction through the pooler");
                let pid = messages.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                    _ => None,
                });
                pids.insert(pid.expect("a row").parse::<i32>().unwrap());
            }
            pids
        }));
    }
    let mut servers = BTreeSet::new();
    for task in tasks {
        servers.extend(task.await.unwrap());
    }
    assert!(
        !servers.is_empty() && servers.len() <= 2,
        "8 clients served by {} server connections",
        servers.len()
    );
}

/// A superuser and the lookup role cannot log in through the pooler, whatever they send.
async fn refused_logins(
    n: &Names,
    port: u16,
    auth: &BTreeMap<String, String>,
    tx: &BTreeMap<String, String>,
) {
    let db = tx["CONNECTIONPOOL_DATABASE"].clone();
    // Refused by PgBouncer, with a message (not a timeout or a broken connection).
    let refused = |r: Result<tokio_postgres::Client, tokio_postgres::Error>| match r {
        Ok(_) => false,
        Err(e) => e.as_db_error().is_some(),
    };
    let superuser = connect("127.0.0.1", port, &db, "postgres", "").await;
    assert!(
        refused(superuser),
        "a superuser logged in through the pooler"
    );
    let superuser = connect("127.0.0.1", port, &db, "postgres", "anything").await;
    assert!(
        refused(superuser),
        "a superuser logged in through the pooler"
    );
    let lookup = connect(
        "127.0.0.1",
        port,
        &db,
        &n.lookup_role(),
        &auth["lookup-password"],
    )
    .await;
    assert!(
        refused(lookup),
        "the lookup role logged in through the pooler"
    );
    let console = connect(
        "127.0.0.1",
        port,
        "pgbouncer",
        &n.user,
        &tx["CONNECTIONPOOL_PASSWORD"],
    )
    .await;
    assert!(refused(console), "a tenant reached the admin console");
    let wrong = connect("127.0.0.1", port, &db, &n.user, "wrong").await;
    assert!(refused(wrong), "a wrong password was accepted");
}

/// The lookup function returns a plain login role's verifier, and nothing for a replication
/// role, a superuser or the lookup role itself.
async fn lookup_function_filters(n: &Names) {
    let raw = common::pg_raw(5432, &n.db).await;
    let repl = format!("{}repl", n.p);
    raw.batch_execute(&format!(
        "CREATE ROLE \"{repl}\" LOGIN REPLICATION PASSWORD 'x'"
    ))
    .await
    .unwrap();
    for (role, found) in [
        (n.user.clone(), true),
        (repl.clone(), false),
        ("postgres".to_owned(), false),
        (n.lookup_role(), false),
    ] {
        let rows = raw
            .query(
                "SELECT username FROM dbward_pgbouncer.get_auth($1)",
                &[&role],
            )
            .await
            .unwrap();
        assert_eq!(!rows.is_empty(), found, "get_auth({role})");
    }
    // Nobody but the lookup role may call it.
    let acl: Vec<String> = raw
        .query_one(
            "SELECT COALESCE(proacl::text[], '{}') FROM pg_proc WHERE proname = 'get_auth' \
             AND pronamespace = 'dbward_pgbouncer'::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !acl.iter().any(|a| a.starts_with('=')),
        "PUBLIC may execute: {acl:?}"
    );
    assert!(
        acl.iter()
            .any(|a| a.starts_with(&format!("{}=X", n.lookup_role()))),
        "{acl:?}"
    );
}
