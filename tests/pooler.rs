//! The generated PgBouncer configuration, run: `dbward reconcile --local` writes
//! `pgbouncer.ini`, `hba.conf`, the auth file and the pool Secrets; Debian's `pgbouncer` (1.18)
//! runs them on a free loopback port against the local PostgreSQL, and clients connect through
//! it with tokio-postgres using the pool Secret's own values.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{free_port, unique};
use dbward::api::PoolMode;
use dbward::pgbouncer::admin::{Console, compare_databases};
use dbward::pgbouncer::config::{Name, PoolEntry};
use futures::FutureExt as _;

fn dbward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbward"))
        .args(args)
        .output()
        .expect("run dbward")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Names {
    p: String,
    ns: String,
    svc: String,
    db: String,
    user: String,
}

impl Names {
    fn new() -> Names {
        let p = unique();
        let dashed = p.trim_end_matches('_').replace('_', "-");
        Names {
            ns: format!("{dashed}-ns"),
            svc: format!("{dashed}-pg"),
            db: format!("{p}db"),
            user: format!("{p}app"),
            p,
        }
    }

    fn lookup_role(&self) -> String {
        dbward::reconcile::pooler::lookup_role(&self.svc)
    }
}

/// The service, a database, a ServiceUser, and `pools` (name, mode, size).
fn manifests(n: &Names, pools: &[(&str, &str, u32)]) -> String {
    let Names {
        p,
        ns,
        svc,
        db,
        user,
        ..
    } = n;
    let mut text = format!(
        r#"
apiVersion: v1
kind: Secret
metadata:
  name: {p}admin
  namespace: dbward-system
  labels: {{dbward.dev/connector-type: shared-database}}
stringData: {{endpoint: 127.0.0.1, port: "5432", user: postgres, password: "", type: postgres, sslmode: disable}}
---
apiVersion: dbward.dev/v1alpha1
kind: DatabaseService
metadata: {{name: {svc}}}
spec:
  engine: postgres
  project: proj
  connectorSecretRef: {{name: {p}admin, namespace: dbward-system}}
  allowedNamespaces: {{names: ["*"]}}
---
apiVersion: dbward.dev/v1alpha1
kind: Database
metadata: {{name: db, namespace: {ns}}}
spec: {{project: proj, serviceName: {svc}, databaseName: {db}, deletionPolicy: Delete}}
---
apiVersion: dbward.dev/v1alpha1
kind: ServiceUser
metadata: {{name: app, namespace: {ns}}}
spec:
  project: proj
  serviceName: {svc}
  username: {user}
  privileges: [{{database: {db}, level: readWrite}}]
"#
    );
    for (name, mode, size) in pools {
        text.push_str(&format!(
            r#"---
apiVersion: dbward.dev/v1alpha1
kind: ConnectionPool
metadata: {{name: {name}, namespace: {ns}}}
spec: {{project: proj, serviceName: {svc}, databaseName: {db}, username: {user}, poolMode: {mode}, poolSize: {size}}}
"#
        ));
    }
    text
}

fn reconcile(n: &Names, out: &Path, port: u16, pools: &[(&str, &str, u32)]) -> String {
    let file = out.with_extension("yaml");
    std::fs::write(&file, manifests(n, pools)).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let result = dbward(&[
        "reconcile",
        "--local",
        "-f",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--pooler-listen",
        &listen,
    ]);
    let stdout = text(&result.stdout);
    assert!(
        result.status.success(),
        "reconcile failed\nstdout:\n{stdout}\nstderr:\n{}",
        text(&result.stderr)
    );
    stdout
}

fn secret_data(path: &Path) -> BTreeMap<String, String> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("secret file")).unwrap();
    use base64::Engine as _;
    value["data"]
        .as_mapping()
        .expect("data")
        .iter()
        .map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap();
            (
                k.as_str().unwrap().to_owned(),
                String::from_utf8(bytes).unwrap(),
            )
        })
        .collect()
}

/// A PgBouncer on the generated configuration; killed on drop.
struct Bouncer {
    child: Child,
    log: PathBuf,
}

impl Bouncer {
    fn start(ini: &Path, port: u16) -> Bouncer {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("pgbouncer is not installed (scripts/test installs Debian's pgbouncer)");
        let dir = ini.parent().unwrap();
        let log = dir.with_extension("log");
        let mut cmd = Command::new(binary);
        // PgBouncer refuses to run as root; the files are then handed to `postgres`.
        if is_root() {
            chown_tree(dir.parent().unwrap().parent().unwrap(), "postgres");
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd
            .arg(ini)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start pgbouncer");
        let bouncer = Bouncer { child, log };
        bouncer.wait_listening(port);
        bouncer
    }

    fn wait_listening(&self, port: u16) {
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pgbouncer does not listen on {port}:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| text(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn chown_tree(dir: &Path, user: &str) {
    let status = Command::new("chown")
        .args(["-R", user])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A client through the pooler with a pool Secret's values.
async fn connect_with(
    secret: &BTreeMap<String, String>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let get = |k: &str| secret[&format!("CONNECTIONPOOL_{k}")].clone();
    assert_eq!(get("SSLMODE"), "disable");
    connect(
        &get("HOST"),
        get("PORT").parse().unwrap(),
        &get("DATABASE"),
        &get("USER"),
        &get("PASSWORD"),
    )
    .await
}

async fn connect(
    host: &str,
    port: u16,
    database: &str,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(host)
        .port(port)
        .dbname(database)
        .user(user)
        .password(password)
        // A bound, so that a pooler that never answers fails the test instead of hanging it.
        .connect_timeout(Duration::from_secs(10))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

fn entry(name: &str, db: &str, mode: PoolMode, size: u32) -> PoolEntry {
    PoolEntry {
        name: Name::new("n", name).unwrap(),
        dbname: Name::new("n", db).unwrap(),
        mode,
        size,
    }
}

async fn cleanup(n: &Names) {
    let pg = common::pg();
    let _ = pg.drop_database(&n.db).await;
    for role in [n.user.clone(), n.lookup_role(), format!("{}repl", n.p)] {
        let _ = pg.drop_role(&role).await;
    }
}

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
    console.reload().await.map_err(|e| e.to_string())?;
    let shown = console.show_databases().await.map_err(|e| e.to_string())?;
    compare_databases(
        &shown,
        &[
            entry("sess", &n.db, PoolMode::Session, 3),
            entry("tx", &n.db, PoolMode::Transaction, 2),
            entry("tx2", &n.db, PoolMode::Transaction, 4),
        ],
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

/// Another namespace's pools cannot use this namespace's database or user: refused with the
/// field that names them, no Secret written, and the pools of the owner are served meanwhile.
#[tokio::test]
async fn pools_use_only_their_namespaces_databases_and_users() {
    let n = Names::new();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let other = format!("{}-other", n.ns);
    let other_db = format!("{}odb", n.p);
    let mut objects = manifests(&n, &[("mine", "session", 2)]);
    objects.push_str(&format!(
        r#"---
apiVersion: dbward.dev/v1alpha1
kind: Database
metadata: {{name: odb, namespace: {other}}}
spec: {{project: proj, serviceName: {svc}, databaseName: {other_db}, deletionPolicy: Delete}}
---
apiVersion: dbward.dev/v1alpha1
kind: ConnectionPool
metadata: {{name: steal-db, namespace: {other}}}
spec: {{project: proj, serviceName: {svc}, databaseName: {db}}}
---
apiVersion: dbward.dev/v1alpha1
kind: ConnectionPool
metadata: {{name: steal-user, namespace: {other}}}
spec: {{project: proj, serviceName: {svc}, databaseName: {other_db}, username: {user}}}
"#,
        svc = n.svc,
        db = n.db,
        user = n.user,
    ));
    let file = tmp.path().join("objects.yaml");
    std::fs::write(&file, objects).unwrap();
    let run = dbward(&[
        "reconcile",
        "--local",
        "-f",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--pooler-listen",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    let stderr = text(&run.stderr);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "connectionpool {other}/steal-db: spec.databaseName: Forbidden: database \"{}\"",
                n.db
            )),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "connectionpool {other}/steal-user: spec.username: Forbidden: role \"{}\"",
                n.user
            )),
            "{stderr}"
        );
        for name in ["steal-db", "steal-user"] {
            assert!(!out.join(format!("{other}.{name}.yaml")).exists(), "{name}");
        }
        assert!(out.join(format!("{}.mine.yaml", n.ns)).exists());
        let ini =
            std::fs::read_to_string(out.join("pooler").join(&n.svc).join("pgbouncer.ini")).unwrap();
        assert!(ini.contains("\nmine = ") && !ini.contains("steal"), "{ini}");
    }));
    let _ = common::pg().drop_database(&other_db).await;
    cleanup(&n).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// A pooler with TLS (rendered as the controller renders it for `spec.pooler.tls`): every
/// client must use TLS, but the admin console stays reachable in plain TCP for dbward.
#[test]
fn with_tls_clients_must_use_it_and_the_console_answers_dbward() {
    use dbward::pgbouncer::config::{
        self, AuthSecret, ClientTls, FilePath, Host, ServerTarget, Settings, TlsMode,
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pooler").join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let at = |f: &str| dir.join(f).display().to_string();
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-keyout",
            &at("tls.key"),
            "-out",
            &at("tls.crt"),
        ])
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", text(&made.stderr));
    let name = |n: &str| Name::new("n", n).unwrap();
    let path = |f: &str| FilePath::new("p", &at(f)).unwrap();
    let port = free_port();
    let settings = Settings {
        listen_addr: Host::new("h", "127.0.0.1").unwrap(),
        listen_port: port,
        hba_file: path("hba.conf"),
        auth_file: path("userlist.txt"),
        auth_user: name("dbward_pgbouncer_tls"),
        auth_query: dbward::pgbouncer::lookup::auth_query(),
        admin_user: name("adm"),
        max_client_conn: 10,
        server: ServerTarget {
            host: Host::new("h", "127.0.0.1").unwrap(),
            port: 5432,
            tls_mode: TlsMode::Disable,
            ca_file: None,
        },
        client_tls: Some(ClientTls {
            // As reconcile::pooler renders it.
            mode: TlsMode::Prefer,
            cert_file: path("tls.crt"),
            key_file: path("tls.key"),
            ca_file: None,
        }),
        databases: vec![entry("p", "postgres", PoolMode::Session, 1)],
    };
    std::fs::write(
        dir.join("pgbouncer.ini"),
        config::render_ini(&settings).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("hba.conf"),
        config::render_hba(&settings.admin_user, &settings.auth_user, true),
    )
    .unwrap();
    let userlist = config::render_userlist(&[
        (name("adm"), AuthSecret::new("p", "admin-Pw1").unwrap()),
        (name("tenant"), AuthSecret::new("p", "tenant-Pw1").unwrap()),
    ]);
    std::fs::write(dir.join("userlist.txt"), userlist).unwrap();
    let bouncer = Bouncer::start(&dir.join("pgbouncer.ini"), port);
    let psql = |sslmode: &str, user: &str, password: &str, db: &str| {
        Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                user,
                "-d",
                db,
            ])
            .args([
                "-tAc",
                if db == "pgbouncer" {
                    "SHOW VERSION"
                } else {
                    "SELECT 1"
                },
            ])
            .env("PGSSLMODE", sslmode)
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap()
    };
    let console = psql("disable", "adm", "admin-Pw1", "pgbouncer");
    assert!(
        console.status.success(),
        "{}{}",
        text(&console.stderr),
        bouncer.log()
    );
    let plain = psql("disable", "tenant", "tenant-Pw1", "p");
    assert!(!plain.status.success());
    assert!(
        text(&plain.stderr).contains("login rejected"),
        "{}",
        text(&plain.stderr)
    );
    // Over TLS the tenant passes hba.conf and PgBouncer goes on to the server (where no such
    // role exists): refused by PostgreSQL, not by the TLS rule.
    let tls = psql("require", "tenant", "tenant-Pw1", "p");
    let stderr = text(&tls.stderr);
    assert!(
        stderr.contains("role \"tenant\" does not exist"),
        "{stderr}"
    );
}
