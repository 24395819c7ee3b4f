//! Provisioning benchmark through the reconcilers themselves (a command that prints figures, not
//! a test).
//!
//!     cargo run --release --example provision_bench -- [--engine postgres|mysql|both] [--users 1000] [--dbs 100]
//!     cargo run --release --example provision_bench -- --scale 100,1000 [--engine …] [--dbs 10]
//!
//! Every object goes through the path `dbward reconcile --local` and the controllers take:
//! `database::prepare` / `service_user::prepare` (admission re-check, observe of that one
//! object, ownership checks, plan) then `Prepared::run`, one object after the other, over an
//! in-memory Kubernetes side (`LocalCluster`) and the local servers.
//!
//! Default mode: `--users` ServiceUsers with `readWrite` on one of `--dbs` Databases each (in
//! blocks, as a namespace's users would be), a first pass, an unchanged second pass (its SQL and
//! Kubernetes writes must be 0), and, in the same run, the engine's own client (`psql -f`,
//! `mariadb <`) executing the statements the first pass executed (the SQL actions the
//! reconcilers returned, rendered by `Server::render_script`) on fresh names.
//!
//! `--scale N,…`: for each N, N users on `--dbs` databases, an unchanged resync timed; then 3N
//! more users on the same databases, and an unchanged resync of all 4N timed. A per-object cost
//! that does not depend on the other objects on the server gives a ratio of 4 (target ≤ 5).
//!
//! Objects are named `bench_<random>_…` and dropped at the end.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dbward::api::{Database, ServiceUser};
use dbward::reconcile::local::LocalCluster;
use dbward::reconcile::{Action, Context, database, service_user};
use dbward::sql::{Engine, Server, SqlAction};
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

const OPERATOR_NS: &str = "dbward-system";
const SERVICE: &str = "bench-svc";

fn usage() -> ExitCode {
    eprintln!(
        "usage: provision_bench [--engine postgres|mysql|both] [--users N] [--dbs N] [--scale N,N…]"
    );
    ExitCode::from(2)
}

/// A run's objects: their names on the server start with `prefix`.
struct Population {
    prefix: String,
    namespace: String,
    databases: Vec<Database>,
    users: Vec<ServiceUser>,
}

impl Population {
    fn new(dbs: usize) -> Population {
        let tag = random_tag();
        let prefix = format!("bench_{tag}_");
        let namespace = format!("bench-{tag}");
        let databases = (0..dbs.max(1))
            .map(|i| {
                serde_json::from_value(json!({
                    "apiVersion": "dbward.dev/v1alpha1", "kind": "Database",
                    "metadata": {"name": format!("d{i}"), "namespace": namespace,
                                 "uid": format!("uid-{tag}-d{i}")},
                    "spec": {"project": "proj", "serviceName": SERVICE,
                             "databaseName": format!("{prefix}d{i}"), "deletionPolicy": "Delete"}
                }))
                .expect("a Database")
            })
            .collect();
        Population {
            prefix,
            namespace,
            databases,
            users: Vec::new(),
        }
    }

    /// Adds users up to `total`, spread over the databases in blocks.
    fn grow_to(&mut self, total: usize) {
        let dbs = self.databases.len();
        for i in self.users.len()..total {
            // Blocks of consecutive users per database, as a namespace's users would be.
            let db = format!("{}d{}", self.prefix, i * dbs / total.max(1));
            let user: ServiceUser = serde_json::from_value(json!({
                "apiVersion": "dbward.dev/v1alpha1", "kind": "ServiceUser",
                "metadata": {"name": format!("u{i}"), "namespace": self.namespace,
                             "uid": format!("uid-{}-u{i}", self.namespace)},
                "spec": {"project": "proj", "serviceName": SERVICE,
                         "username": format!("{}u{i}", self.prefix),
                         "privileges": [{"database": db, "level": "readWrite"}]}
            }))
            .expect("a ServiceUser");
            self.users.push(user);
        }
    }
}

fn random_tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut n = (nanos ^ (u128::from(std::process::id()) << 40)) % 36u128.pow(5);
    let mut s = String::new();
    for _ in 0..5 {
        s.push(char::from_digit((n % 36) as u32, 36).unwrap_or('x'));
        n /= 36;
    }
    s
}

fn context(engine: Engine) -> Context<LocalCluster> {
    let (port, user) = match engine {
        Engine::Postgres => (5432, "postgres"),
        Engine::Mysql => (3306, "root"),
    };
    let connector: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bench-admin", "namespace": OPERATOR_NS,
                     "labels": {"dbward.dev/connector-type": "shared-database"}},
        "stringData": {"endpoint": "127.0.0.1", "port": port.to_string(), "user": user,
                       "password": "", "type": engine.as_str(), "sslmode": "disable"}
    }))
    .expect("a Secret");
    let service = serde_json::from_value(json!({
        "apiVersion": "dbward.dev/v1alpha1", "kind": "DatabaseService",
        "metadata": {"name": SERVICE},
        "spec": {"engine": engine.as_str(), "project": "proj",
                 "connectorSecretRef": {"name": "bench-admin"},
                 "allowedNamespaces": {"names": ["*"]}}
    }))
    .expect("a DatabaseService");
    let mut cluster = LocalCluster::new();
    cluster.add_secret(connector);
    cluster.add_service(service);
    Context::new(cluster, OPERATOR_NS)
}

/// What one pass did.
struct Pass {
    wall: Duration,
    objects: usize,
    actions: Vec<Action>,
    sql_writes: u64,
}

impl Pass {
    fn sql_actions(&self) -> Vec<SqlAction> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Sql(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    fn kube_writes(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| !matches!(a, Action::Sql(_)))
            .count()
    }
}

/// Reconciles `databases` then `users`, one object at a time, as the reconcilers do.
async fn pass(
    ctx: &Context<LocalCluster>,
    databases: &[Database],
    users: &[ServiceUser],
) -> Result<Pass, String> {
    let writes = ctx.sql_writes();
    let mut actions = Vec::new();
    let started = Instant::now();
    for db in databases {
        let prepared = database::prepare(ctx, db)
            .await
            .map_err(|e| format!("database {:?}: {e}", db.metadata.name))?;
        let applied = prepared
            .run(&ctx.cluster)
            .await
            .map_err(|e| format!("database {:?}: {e}", db.metadata.name))?;
        actions.extend(applied.actions);
    }
    for user in users {
        let prepared = service_user::prepare(ctx, user)
            .await
            .map_err(|e| format!("serviceuser {:?}: {e}", user.metadata.name))?;
        let applied = prepared
            .run(&ctx.cluster)
            .await
            .map_err(|e| format!("serviceuser {:?}: {e}", user.metadata.name))?;
        actions.extend(applied.actions);
    }
    Ok(Pass {
        wall: started.elapsed(),
        objects: databases.len() + users.len(),
        actions,
        sql_writes: ctx.sql_writes() - writes,
    })
}

fn server(ctx: &Context<LocalCluster>) -> std::sync::Arc<Server> {
    ctx.servers()
        .remove(SERVICE)
        .expect("the service's server is registered after a pass")
}

/// Drops every database and role whose name starts with one of `prefixes` (and, on MySQL,
/// their ownership rows, which the drops remove).
async fn cleanup(server: &Server, engine: Engine, prefixes: &[&str]) -> Result<(), String> {
    let mut databases = Vec::new();
    let mut roles = Vec::new();
    for prefix in prefixes {
        let pattern = format!("{}%", prefix.replace('_', "\\_"));
        let (dbs_sql, roles_sql) = match engine {
            Engine::Postgres => (
                format!(
                    "SELECT datname FROM pg_database WHERE datname LIKE '{pattern}' ORDER BY 1"
                ),
                format!("SELECT rolname FROM pg_roles WHERE rolname LIKE '{pattern}' ORDER BY 1"),
            ),
            Engine::Mysql => (
                format!(
                    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA \
                     WHERE SCHEMA_NAME LIKE '{pattern}' ORDER BY 1"
                ),
                format!(
                    "SELECT User FROM mysql.user WHERE Host = '%' AND User LIKE '{pattern}' \
                     ORDER BY 1"
                ),
            ),
        };
        databases.extend(client_query(engine, &dbs_sql)?);
        roles.extend(client_query(engine, &roles_sql)?);
    }
    let mut actions: Vec<SqlAction> = databases
        .into_iter()
        .map(|name| SqlAction::DropDatabase { name })
        .collect();
    actions.extend(roles.into_iter().map(|name| SqlAction::DropRole { name }));
    server
        .apply(&actions)
        .await
        .map_err(|e| format!("cleanup: {e}"))
}

fn client_name(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => "psql",
        Engine::Mysql => "mariadb",
    }
}

fn client_command(engine: Engine) -> Command {
    match engine {
        Engine::Postgres => {
            let mut c = Command::new("psql");
            c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
                .args(["-U", "postgres", "-d", "postgres"]);
            c
        }
        Engine::Mysql => {
            let mut c = Command::new("mariadb");
            c.args(["--protocol=tcp", "-h", "127.0.0.1", "-u", "root"]);
            c
        }
    }
}

/// One column of a read-only query, through the engine's client (names only: the benchmark's
/// own objects).
fn client_query(engine: Engine, sql: &str) -> Result<Vec<String>, String> {
    let mut command = client_command(engine);
    match engine {
        Engine::Postgres => command.args(["-At", "-c", sql]),
        Engine::Mysql => command.args(["-N", "-B", "-e", sql]),
    };
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", client_name(engine)))?;
    if !output.status.success() {
        return Err(format!(
            "{}: {}",
            client_name(engine),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Runs `script` with the engine's client, timed.
fn run_client(engine: Engine, script: &str) -> Result<Duration, String> {
    let path = std::env::temp_dir().join(format!(
        "dbward-provision-bench-{}-{}.sql",
        std::process::id(),
        random_tag()
    ));
    std::fs::write(&path, script).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut command = client_command(engine);
    match engine {
        Engine::Postgres => {
            command.arg("-f").arg(&path).stdin(Stdio::null());
        }
        Engine::Mysql => {
            let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
            command.stdin(Stdio::from(file));
        }
    }
    let started = Instant::now();
    let output = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&path);
    let output = output.map_err(|e| format!("{}: {e}", client_name(engine)))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed: {}",
            client_name(engine),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(elapsed)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The default mode; returns whether the second pass was quiet.
async fn provision(engine: Engine, n_users: usize, n_dbs: usize) -> Result<bool, String> {
    let ctx = context(engine);
    let mut population = Population::new(n_dbs);
    population.grow_to(n_users);
    let fresh = format!("bench_{}_", random_tag());
    let result = async {
        let first = pass(&ctx, &population.databases, &population.users).await?;
        let second = pass(&ctx, &population.databases, &population.users).await?;
        let server = server(&ctx);
        let version = server.probe().await.map_err(|e| e.to_string())?.version;
        let script = server
            .render_script(&first.sql_actions())
            .await
            .map_err(|e| format!("rendering the script: {e}"))?;
        let script = script.replace(&population.prefix, &fresh);
        let statements = script.lines().filter(|l| l.ends_with(';')).count();
        let client = run_client(engine, &script)?;
        println!(
            "provisioning through the reconcilers: {engine} ({version}), {} ServiceUsers with \
             readWrite on {} Databases, one object at a time (prepare + run)",
            population.users.len(),
            population.databases.len()
        );
        println!(
            "{:<44} {:>9} {:>8} {:>11} {:>12}",
            "step", "wall (s)", "objects", "SQL writes", "Kube writes"
        );
        println!(
            "{:<44} {:>9.3} {:>8} {:>11} {:>12}",
            "dbward first pass",
            secs(first.wall),
            first.objects,
            first.sql_writes,
            first.kube_writes()
        );
        println!(
            "{:<44} {:>9.3} {:>8} {:>11} {:>12}",
            format!(
                "dbward unchanged second pass ({} actions)",
                second.actions.len()
            ),
            secs(second.wall),
            second.objects,
            second.sql_writes,
            second.kube_writes()
        );
        println!(
            "{:<44} {:>9.3} {:>8} {:>11} {:>12}",
            format!(
                "{} ({statements} statements, same SQL)",
                client_name(engine)
            ),
            secs(client),
            "",
            statements,
            ""
        );
        println!(
            "ratio dbward first pass / {}: {:.2} (target <= 2)",
            client_name(engine),
            secs(first.wall) / secs(client).max(1e-9)
        );
        let quiet = second.sql_writes == 0 && second.actions.is_empty();
        println!(
            "unchanged second pass: {} SQL writes, {} Kubernetes writes ({})\n",
            second.sql_writes,
            second.kube_writes(),
            if quiet { "ok" } else { "NOT IDEMPOTENT" }
        );
        Ok(quiet)
    }
    .await;
    if let Some(server) = ctx.servers().remove(SERVICE) {
        cleanup(&server, engine, &[&population.prefix, &fresh]).await?;
    }
    result
}

/// `--scale`: an unchanged resync of N users, then of 4N, on the same databases.
async fn scale(engine: Engine, n: usize, n_dbs: usize) -> Result<(f64, bool), String> {
    let ctx = context(engine);
    let mut population = Population::new(n_dbs);
    let result = async {
        population.grow_to(n);
        let setup = pass(&ctx, &population.databases, &population.users).await?;
        let small = pass(&ctx, &population.databases, &population.users).await?;
        population.grow_to(4 * n);
        let grown = pass(&ctx, &population.databases, &population.users[n..]).await?;
        let large = pass(&ctx, &population.databases, &population.users).await?;
        let ratio = secs(large.wall) / secs(small.wall).max(1e-9);
        let quiet = small.sql_writes + large.sql_writes == 0
            && small.actions.is_empty()
            && large.actions.is_empty();
        println!(
            "{engine:<8} {:>6} {:>6} {:>5} {:>11.3} {:>11.3} {:>9.3} {:>9.3} {:>7.2} {:>7}",
            n,
            4 * n,
            population.databases.len(),
            secs(setup.wall),
            secs(grown.wall),
            secs(small.wall),
            secs(large.wall),
            ratio,
            small.sql_writes + large.sql_writes
        );
        Ok((ratio, quiet))
    }
    .await;
    if let Some(server) = ctx.servers().remove(SERVICE) {
        cleanup(&server, engine, &[&population.prefix]).await?;
    }
    result
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut engines = vec![Engine::Postgres, Engine::Mysql];
    let mut users = 1000usize;
    let mut dbs = None;
    let mut scale_ns: Vec<usize> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value.as_deref()) {
            ("--engine", Some("postgres" | "postgresql")) => engines = vec![Engine::Postgres],
            ("--engine", Some("mysql" | "mariadb")) => engines = vec![Engine::Mysql],
            ("--engine", Some("both")) => engines = vec![Engine::Postgres, Engine::Mysql],
            ("--users", Some(n)) => match n.parse() {
                Ok(n) => users = n,
                Err(_) => return usage(),
            },
            ("--dbs", Some(n)) => match n.parse() {
                Ok(n) => dbs = Some(n),
                Err(_) => return usage(),
            },
            ("--scale", Some(list)) => {
                match list.split(',').map(str::parse).collect::<Result<_, _>>() {
                    Ok(ns) => scale_ns = ns,
                    Err(_) => return usage(),
                }
            }
            _ => return usage(),
        }
    }
    let mut ok = true;
    if scale_ns.is_empty() {
        for engine in engines {
            match provision(engine, users, dbs.unwrap_or(100)).await {
                Ok(quiet) => ok &= quiet,
                Err(e) => {
                    eprintln!("benchmark failed: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    } else {
        println!(
            "scaling: an unchanged resync of N ServiceUsers (readWrite each) and of 4N on the same \
             server, through the reconcilers (prepare + run, one object at a time); linear is 4"
        );
        println!(
            "{:<8} {:>6} {:>6} {:>5} {:>11} {:>11} {:>9} {:>9} {:>7} {:>7}",
            "engine",
            "N",
            "4N",
            "dbs",
            "create N s",
            "add 3N s",
            "resync N",
            "resync4N",
            "ratio",
            "writes"
        );
        for engine in engines {
            for &n in &scale_ns {
                match scale(engine, n, dbs.unwrap_or(10)).await {
                    Ok((ratio, quiet)) => ok &= quiet && ratio <= 5.0,
                    Err(e) => {
                        eprintln!("benchmark failed: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
        println!("target: ratio <= 5 (about 4), 0 writes on every resync");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
