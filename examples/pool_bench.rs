//! Connection-pool benchmark (a command that prints figures, not a test): pgbench straight to
//! PostgreSQL vs through the PgBouncer dbward generates, in the same run, transaction mode, more
//! clients than `poolSize`.
//!
//!     cargo run --release --example pool_bench -- [--clients 32] [--pool-size 4] [--seconds 10]
//!
//! `dbward reconcile --local` (the same code as the command) realises a ConnectionPool on the
//! local PostgreSQL (127.0.0.1:5432) into a temporary `--out`; Debian's `pgbouncer` runs the
//! generated files on a free loopback port; `pgbench` (simple protocol, a three-statement
//! transaction on the catalogs, `--connect` off) runs the same script first directly, then
//! through the pooler, as the pool's ServiceUser with the pool Secret's password. Printed: both
//! throughputs, their ratio, and the most server connections the user had during each run
//! (sampled from `pg_stat_activity`). At the end the pool is removed (the same command) and the
//! database and user dropped. Names are `bench_<random>_…`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dbward::cli::reconcile::ReconcileArgs;

struct Options {
    clients: u32,
    pool_size: u32,
    seconds: u32,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        clients: 32,
        pool_size: 4,
        seconds: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let n: u32 = value
            .parse()
            .map_err(|_| format!("{flag}: not a number: {value}"))?;
        match flag.as_str() {
            "--clients" => o.clients = n,
            "--pool-size" => o.pool_size = n,
            "--seconds" => o.seconds = n,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if o.clients <= o.pool_size {
        return Err("--clients must exceed --pool-size (that is what a pooler is for)".into());
    }
    Ok(o)
}

fn suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0)
        ^ std::process::id();
    format!("{nanos:08x}")
}

/// The DatabaseService's name for the prefix `p`.
fn service_name(p: &str) -> String {
    p.trim_end_matches('_').replace('_', "-")
}

fn manifests(p: &str, pools: bool, pool_size: u32) -> String {
    let svc = service_name(p);
    let mut text = format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: {svc}-admin
  namespace: dbward-system
  labels: {{dbward.dev/connector-type: shared-database}}
stringData: {{endpoint: 127.0.0.1, port: "5432", user: postgres, password: "", type: postgres, sslmode: disable}}
---
apiVersion: dbward.dev/v1alpha1
kind: DatabaseService
metadata: {{name: {svc}}}
spec:
  engine: postgres
  project: bench
  connectorSecretRef: {{name: {svc}-admin, namespace: dbward-system}}
  allowedNamespaces: {{names: ["*"]}}
---
apiVersion: dbward.dev/v1alpha1
kind: Database
metadata: {{name: db, namespace: bench}}
spec: {{project: bench, serviceName: {svc}, databaseName: {p}db, deletionPolicy: Delete}}
---
apiVersion: dbward.dev/v1alpha1
kind: ServiceUser
metadata: {{name: app, namespace: bench}}
spec:
  project: bench
  serviceName: {svc}
  username: {p}app
  privileges: [{{database: {p}db, level: readWrite}}]
"#
    );
    if pools {
        text.push_str(&format!(
            "---\napiVersion: dbward.dev/v1alpha1\nkind: ConnectionPool\nmetadata: {{name: {svc}-tx, namespace: bench}}\nspec: {{project: bench, serviceName: {svc}, databaseName: {p}db, username: {p}app, poolMode: transaction, poolSize: {pool_size}}}\n"
        ));
    }
    text
}

fn reconcile(dir: &Path, text: &str, port: u16) -> Result<(), String> {
    let file = dir.join("objects.yaml");
    std::fs::write(&file, text).map_err(|e| e.to_string())?;
    let args = ReconcileArgs {
        local: true,
        files: vec![file],
        out: Some(dir.join("out")),
        pooler_listen: format!("127.0.0.1:{port}").parse().unwrap(),
        namespace: "dbward-system".to_owned(),
    };
    let code = dbward::cli::reconcile::run(&args);
    (code == ExitCode::SUCCESS)
        .then_some(())
        .ok_or_else(|| "dbward reconcile --local failed".to_owned())
}

fn secret_data(path: &Path) -> Result<BTreeMap<String, String>, String> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| e.to_string())?;
    let data = value["data"].as_mapping().ok_or("no data")?;
    Ok(data
        .iter()
        .filter_map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str()?)
                .ok()?;
            Some((k.as_str()?.to_owned(), String::from_utf8(bytes).ok()?))
        })
        .collect())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn psql(sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
            sql,
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn start_pgbouncer(ini: &Path, port: u16) -> Result<Child, String> {
    let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("pgbouncer is not installed (apt-get install pgbouncer)")?;
    let mut cmd = Command::new(binary);
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        // PgBouncer refuses to run as root.
        let top = ini.ancestors().nth(4).ok_or("no work directory")?;
        Command::new("chown")
            .args(["-R", "postgres"])
            .arg(top)
            .status()
            .map_err(|e| e.to_string())?;
        cmd.args(["-u", "postgres"]);
    }
    let child = cmd
        .arg(ini)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("pgbouncer: {e}"))?;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("pgbouncer does not listen".into())
}

/// Runs pgbench; returns its tps and the most connections `user` had on the server meanwhile.
fn pgbench(
    o: &Options,
    port: u16,
    database: &str,
    user: &str,
    password: &str,
    script: &Path,
) -> Result<(f64, u64), String> {
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak, user) = (done.clone(), peak.clone(), user.to_owned());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}'");
                if let Ok(n) = psql(&sql).map(|s| s.parse::<u64>().unwrap_or(0)) {
                    peak.fetch_max(n, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let out = Command::new("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            user,
            "-d",
            database,
        ])
        .args(["-n", "-M", "simple", "-j", "2"])
        .args(["-c", &o.clients.to_string(), "-T", &o.seconds.to_string()])
        .arg("-f")
        .arg(script)
        .env("PGPASSWORD", password)
        .output()
        .map_err(|e| format!("pgbench: {e}"))?;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "pgbench failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or(format!("no tps in pgbench's output: {text}"))?;
    Ok((tps, peak.load(Ordering::Relaxed)))
}

fn run(o: &Options, work: &Path, p: &str) -> Result<(), String> {
    let port = free_port();
    reconcile(work, &manifests(p, true, o.pool_size), port)?;
    let svc = service_name(p);
    let out = work.join("out");
    let pool = secret_data(&out.join(format!("bench.{svc}-tx.yaml")))?;
    let user = &pool["CONNECTIONPOOL_USER"];
    let password = &pool["CONNECTIONPOOL_PASSWORD"];
    let script = work.join("bench.sql");
    std::fs::write(
        &script,
        "BEGIN;\nSELECT count(*) FROM pg_catalog.pg_class;\nSELECT pg_catalog.now();\nEND;\n",
    )
    .map_err(|e| e.to_string())?;
    let ini: PathBuf = out.join("pooler").join(&svc).join("pgbouncer.ini");
    let mut bouncer = start_pgbouncer(&ini, port)?;
    let direct = pgbench(o, 5432, &format!("{p}db"), user, password, &script);
    let pooled = pgbench(
        o,
        port,
        &pool["CONNECTIONPOOL_DATABASE"],
        user,
        password,
        &script,
    );
    let _ = bouncer.kill();
    let _ = bouncer.wait();
    let (direct, pooled) = (direct?, pooled?);
    println!(
        "pool_bench: {} clients, poolSize {}, transaction mode, {} s each, pgbench -M simple",
        o.clients, o.pool_size, o.seconds
    );
    println!(
        "  direct:           {:>10.1} tps, {:>3} server connections (peak)",
        direct.0, direct.1
    );
    println!(
        "  through PgBouncer: {:>9.1} tps, {:>3} server connections (peak)",
        pooled.0, pooled.1
    );
    println!("  ratio pooled/direct: {:.2}", pooled.0 / direct.0);
    Ok(())
}

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pool_bench: {e}");
            return ExitCode::from(2);
        }
    };
    let p = format!("bench_{}_", suffix());
    let work = std::env::temp_dir().join(format!("dbward-pool-bench-{}", suffix()));
    std::fs::create_dir_all(&work).expect("work directory");
    let result = run(&o, &work, &p);
    // The pool removed the way a user removes it, then the rest.
    let cleanup = reconcile(&work, &manifests(&p, false, o.pool_size), free_port());
    let _ = psql(&format!("DROP DATABASE IF EXISTS \"{p}db\""));
    let _ = psql(&format!("DROP ROLE IF EXISTS \"{p}app\""));
    let _ = std::fs::remove_dir_all(&work);
    match result.and(cleanup) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pool_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
