//! Helpers shared by the SQL tests: unique names, raw driver connections for setting up drift
//! by hand, and throwaway second server instances for restart tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dbward::sql::{ConnectionInfo, Engine, OwnerMarker, Password, RoleFlag, RoleSpec, Server};

/// A name prefix unique to this process and call: `t<6 base36>_`.
pub fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let mut n = nanos
        .wrapping_mul(6364136223846793005)
        .wrapping_add(u64::from(std::process::id()) << 20)
        .wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed) * 7919);
    let mut s = String::from("t");
    for _ in 0..6 {
        s.push(char::from_digit((n % 36) as u32, 36).unwrap());
        n /= 36;
    }
    s.push('_');
    s
}

pub fn pg_info(port: u16) -> ConnectionInfo {
    ConnectionInfo {
        engine: Engine::Postgres,
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        password: String::new(),
        sslmode: None,
        ca_cert: None,
    }
}

pub fn my_info(port: u16) -> ConnectionInfo {
    ConnectionInfo {
        engine: Engine::Mysql,
        host: "127.0.0.1".into(),
        port,
        user: "root".into(),
        password: String::new(),
        sslmode: None,
        ca_cert: None,
    }
}

pub fn pg() -> Server {
    Server::new(&pg_info(5432)).expect("server")
}

pub fn my() -> Server {
    Server::new(&my_info(3306)).expect("server")
}

/// A plain driver connection, for doing things by hand.
pub async fn pg_raw(port: u16, database: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname(database)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("raw connection");
    tokio::spawn(connection);
    client
}

pub async fn my_raw(port: u16, database: Option<&str>) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false)
        .db_name(database);
    mysql_async::Conn::new(opts).await.expect("raw connection")
}

/// A free TCP port on the loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dbward-{tag}-{}", unique().trim_end_matches('_')));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A second PostgreSQL instance in a temporary directory, run as the `postgres` OS user.
pub struct TempPostgres {
    pub dir: PathBuf,
    pub port: u16,
}

impl TempPostgres {
    fn bin(name: &str) -> PathBuf {
        let base = Path::new("/usr/lib/postgresql");
        let mut versions: Vec<PathBuf> = std::fs::read_dir(base)
            .expect("/usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        versions.sort();
        versions
            .last()
            .expect("a PostgreSQL version")
            .join("bin")
            .join(name)
    }

    fn as_postgres(&self, program: &Path) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    }

    pub fn init() -> TempPostgres {
        let dir = temp_dir("pg");
        run(Command::new("chown").arg("postgres:postgres").arg(&dir));
        let pg = TempPostgres {
            port: free_port(),
            dir,
        };
        run(pg
            .as_postgres(&Self::bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(pg.dir.join("data")));
        pg.start();
        pg
    }

    pub fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=20",
            self.port,
            self.dir.display()
        );
        run(self
            .as_postgres(&Self::bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-o", &opts, "-l"])
            .arg(self.dir.join("log"))
            .args(["-w", "start"]));
    }

    pub fn stop(&self) {
        run(self
            .as_postgres(&Self::bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"]));
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let _ = self
            .as_postgres(&Self::bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A second MariaDB instance in a temporary directory.
pub struct TempMariadb {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<std::process::Child>,
}

impl TempMariadb {
    pub fn init() -> TempMariadb {
        let dir = temp_dir("maria");
        // Its own temporary directory: in the shared /tmp the bootstrap's temporary tables
        // vanished under parallel tests ("Could not remove temporary table … error: 2").
        std::fs::create_dir_all(dir.join("tmp")).expect("tmp dir");
        run(Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--user=root",
                "--skip-test-db",
            ]));
        let mut db = TempMariadb {
            port: free_port(),
            dir,
            child: None,
        };
        db.start();
        db
    }

    pub fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("log")).expect("log file");
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!("--tmpdir={}", self.dir.join("tmp").display()))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mariadbd");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("mariadbd did not start on port {}", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: a clean shutdown.
            run(Command::new("kill").arg(child.id().to_string()));
            let _ = child.wait();
        }
    }
}

impl Drop for TempMariadb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A role (a user, on MySQL) with these flags and this password, nothing else.
pub fn role(name: &str, flags: &[RoleFlag], password: &str) -> RoleSpec {
    RoleSpec {
        name: name.to_owned(),
        flags: flags.iter().copied().collect(),
        password: Some(Password::new(password)),
        ..RoleSpec::default()
    }
}

/// Plans `spec` against a fresh observation; applying must leave nothing to do and write nothing.
pub async fn assert_converged_role(server: &Server, spec: &RoleSpec) {
    let before = server.writes();
    let actions = server.ensure_role(spec).await.expect("ensure role");
    assert_eq!(actions, vec![], "role {:?} should need nothing", spec.name);
    assert_eq!(server.writes(), before, "no write statements expected");
}

/// A marker of a `kind` object `namespace`/`name` with a UID.
pub fn marker(namespace: &str, kind: &str, name: &str, uid: &str) -> OwnerMarker {
    OwnerMarker::new(namespace, kind, name, Some(uid))
}

/// Markers whose every field holds what a SQL literal or a JSON string must escape: quotes,
/// backslashes, newlines, comment closers, dollar quotes, NUL, and non-ASCII text.
pub fn hostile_markers() -> Vec<OwnerMarker> {
    vec![
        marker(
            "ns'; DROP ROLE postgres; --",
            "Kind\"with\\quotes",
            "name\nnew line */ /* $$ $q$ `tick`",
            "uid'\"\\\r\n\t\u{0}\u{1a}",
        ),
        OwnerMarker::new("ünïcødé-名前-🦀", "\u{202e}Kind", "\\'\\\"\\\\", None),
    ]
}

/// The decoded `data` of a Secret manifest that `dbward reconcile --local --out` wrote.
pub fn secret_data(path: &Path) -> std::collections::BTreeMap<String, String> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("secret file")).unwrap();
    assert_eq!(value["kind"].as_str(), Some("Secret"));
    use base64::Engine as _;
    value["data"]
        .as_mapping()
        .expect("base64 data")
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
