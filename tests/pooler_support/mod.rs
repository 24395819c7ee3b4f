//! Helpers of the pooler tiers (`tests/pooler.rs`, `tests/pooler_rules.rs`): manifests with
//! unique names, `dbward reconcile --local` into an `--out` directory, Debian's `pgbouncer` on
//! the generated files, clients through it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use dbward::api::PoolMode;
use dbward::pgbouncer::config::{Name, PoolEntry};

use super::common::{self, unique};

pub fn dbward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbward"))
        .args(args)
        .output()
        .expect("run dbward")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub struct Names {
    pub p: String,
    pub ns: String,
    pub svc: String,
    pub db: String,
    pub user: String,
}

impl Names {
    pub fn new() -> Names {
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

    pub fn lookup_role(&self) -> String {
        dbward::reconcile::pooler::lookup_role(&self.svc)
    }
}

/// The service, a database, a ServiceUser, and `pools` (name, mode, size).
pub fn manifests(n: &Names, pools: &[(&str, &str, u32)]) -> String {
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

pub fn reconcile(n: &Names, out: &Path, port: u16, pools: &[(&str, &str, u32)]) -> String {
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

/// A PgBouncer on the generated configuration; killed on drop.
pub struct Bouncer {
    child: Child,
    log: PathBuf,
}

impl Bouncer {
    pub fn start(ini: &Path, port: u16) -> Bouncer {
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| text(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn chown_tree(dir: &Path, user: &str) {
    let status = Command::new("chown")
        .args(["-R", user])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

/// A client through the pooler with a pool Secret's values.
pub async fn connect_with(
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

pub async fn connect(
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

pub fn entry(name: &str, db: &str, mode: PoolMode, size: u32) -> PoolEntry {
    PoolEntry {
        name: Name::new("n", name).unwrap(),
        dbname: Name::new("n", db).unwrap(),
        mode,
        size,
    }
}

pub async fn cleanup(n: &Names) {
    let pg = common::pg();
    let _ = pg.drop_database(&n.db).await;
    for role in [n.user.clone(), n.lookup_role(), format!("{}repl", n.p)] {
        let _ = pg.drop_role(&role).await;
    }
}
