//! Provisioning benchmark: dbward's observe → plan → apply against the engine's own command-line
//! client running the same statements, side by side in one run (see
//! `examples/provision_bench.rs`). A command that prints figures, never a timed test.

use std::collections::BTreeMap;
use std::fmt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{
    ConnectionInfo, DatabaseSpec, Engine, Error, Password, PrivilegeLevel, PrivilegeSpec, RoleFlag,
    RoleSpec, Server, SqlAction, plan_database, plan_privileges, plan_role,
};

/// A benchmark that could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An SQL operation failed.
    #[error("benchmark SQL step {step} failed: {source}")]
    Sql {
        /// Which step.
        step: &'static str,
        /// Cause.
        source: Error,
    },
    /// The reference client could not be run or failed.
    #[error("running {client} failed: {reason}")]
    RunClient {
        /// `psql` or `mariadb`.
        client: &'static str,
        /// What went wrong.
        reason: String,
    },
}

impl BenchError {
    /// A short, bounded label.
    pub fn category(&self) -> &'static str {
        match self {
            BenchError::Sql { .. } => "bench_sql",
            BenchError::RunClient { .. } => "bench_client",
        }
    }
}

/// Figures of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Engine.
    pub engine: Engine,
    /// Server version.
    pub version: String,
    /// Users provisioned.
    pub users: usize,
    /// Databases provisioned.
    pub databases: usize,
    /// Wall time of dbward's first pass (observe, plan, apply everything).
    pub first_pass: Duration,
    /// Write statements of the first pass.
    pub first_pass_writes: u64,
    /// Wall time of the second, unchanged pass.
    pub second_pass: Duration,
    /// Write statements of the second pass (must be 0).
    pub second_pass_writes: u64,
    /// Actions planned by the second pass (must be 0).
    pub second_pass_actions: usize,
    /// The reference client (`psql` or `mariadb`).
    pub client: &'static str,
    /// Statements in the reference script.
    pub client_statements: usize,
    /// Wall time of the reference client running the script on fresh names.
    pub client_time: Duration,
}

impl BenchReport {
    /// dbward's first pass divided by the client's time (target ≤ 2).
    pub fn ratio(&self) -> f64 {
        self.first_pass.as_secs_f64() / self.client_time.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "provisioning benchmark: {} ({}), {} users with readWrite on {} databases",
            self.engine, self.version, self.users, self.databases
        )?;
        writeln!(
            f,
            "{:<38} {:>10} {:>17}",
            "step", "wall (s)", "write statements"
        )?;
        writeln!(
            f,
            "{:<38} {:>10.3} {:>17}",
            "dbward first pass",
            self.first_pass.as_secs_f64(),
            self.first_pass_writes
        )?;
        writeln!(
            f,
            "{:<38} {:>10.3} {:>17}",
            format!("dbward second pass ({} actions)", self.second_pass_actions),
            self.second_pass.as_secs_f64(),
            self.second_pass_writes
        )?;
        writeln!(
            f,
            "{:<38} {:>10.3} {:>17}",
            match self.engine {
                Engine::Postgres => "psql -f script (same statements)".to_owned(),
                Engine::Mysql => "mariadb < script (same statements)".to_owned(),
            },
            self.client_time.as_secs_f64(),
            self.client_statements
        )?;
        writeln!(
            f,
            "ratio dbward/{} (first pass): {:.2} (target <= 2)",
            self.client,
            self.ratio()
        )?;
        write!(
            f,
            "second pass writes: {} ({})",
            self.second_pass_writes,
            if self.second_pass_writes == 0 && self.second_pass_actions == 0 {
                "ok"
            } else {
                "NOT IDEMPOTENT"
            }
        )
    }
}

/// The local administrator connection the benchmark uses.
pub fn local_connection(engine: Engine) -> ConnectionInfo {
    match engine {
        Engine::Postgres => ConnectionInfo {
            engine,
            host: "127.0.0.1".into(),
            port: 5432,
            user: "postgres".into(),
            password: String::new(),
            sslmode: None,
            ca_cert: None,
        },
        Engine::Mysql => ConnectionInfo {
            engine,
            host: "127.0.0.1".into(),
            port: 3306,
            user: "root".into(),
            password: String::new(),
            sslmode: None,
            ca_cert: None,
        },
    }
}

struct Desired {
    databases: Vec<DatabaseSpec>,
    roles: Vec<RoleSpec>,
    privileges: BTreeMap<String, Vec<PrivilegeSpec>>,
}

fn desired(prefix: &str, n_users: usize, n_dbs: usize) -> Desired {
    let databases: Vec<DatabaseSpec> = (0..n_dbs)
        .map(|i| DatabaseSpec {
            name: format!("{prefix}d{i}"),
            ..DatabaseSpec::default()
        })
        .collect();
    let mut roles = Vec::new();
    let mut privileges = BTreeMap::new();
    for i in 0..n_users {
        let name = format!("{prefix}u{i}");
        // Users in blocks per database, as a namespace's users would be.
        let db = &databases[i * n_dbs / n_users.max(1)].name;
        privileges.insert(
            name.clone(),
            vec![PrivilegeSpec {
                database: db.clone(),
                level: PrivilegeLevel::ReadWrite,
            }],
        );
        roles.push(RoleSpec {
            name,
            flags: [RoleFlag::Login].into(),
            password: Some(Password::new(format!("bench-{prefix}-{i}-Pw0rd"))),
            ..RoleSpec::default()
        });
    }
    Desired {
        databases,
        roles,
        privileges,
    }
}

/// One reconcile of everything: databases, then roles, then privileges, each observed in bulk,
/// planned per object and applied. Returns the actions executed.
async fn reconcile_all(server: &Server, want: &Desired) -> Result<Vec<SqlAction>, BenchError> {
    let sql = |step| move |source| BenchError::Sql { step, source };
    let mut executed = Vec::new();

    let names: Vec<&str> = want.databases.iter().map(|d| d.name.as_str()).collect();
    let observed = server
        .observe_databases(&names)
        .await
        .map_err(sql("observe databases"))?;
    let actions: Vec<SqlAction> = want
        .databases
        .iter()
        .flat_map(|d| plan_database(d, observed.get(&d.name)))
        .collect();
    server
        .apply(&actions)
        .await
        .map_err(sql("apply databases"))?;
    executed.extend(actions);

    let queries: Vec<(&str, Option<&str>)> = want
        .roles
        .iter()
        .map(|r| (r.name.as_str(), r.password.as_ref().map(Password::expose)))
        .collect();
    let observed = server
        .observe_roles(&queries)
        .await
        .map_err(sql("observe roles"))?;
    let actions: Vec<SqlAction> = want
        .roles
        .iter()
        .flat_map(|r| plan_role(server.engine(), r, observed.get(&r.name)))
        .collect();
    server.apply(&actions).await.map_err(sql("apply roles"))?;
    executed.extend(actions);

    let roles: Vec<&str> = want.roles.iter().map(|r| r.name.as_str()).collect();
    let observed = server
        .observe_privileges(&roles, &names)
        .await
        .map_err(sql("observe privileges"))?;
    let empty = BTreeMap::new();
    let actions: Vec<SqlAction> = want
        .privileges
        .iter()
        .flat_map(|(role, desired)| {
            plan_privileges(
                server.engine(),
                role,
                desired,
                observed.get(role).unwrap_or(&empty),
            )
        })
        .collect();
    // Grouped by database, so that consecutive statements share a connection.
    let mut actions = actions;
    actions.sort_by(|a, b| privilege_database(a).cmp(privilege_database(b)));
    server
        .apply(&actions)
        .await
        .map_err(sql("apply privileges"))?;
    executed.extend(actions);
    Ok(executed)
}

fn privilege_database(action: &SqlAction) -> &str {
    match action {
        SqlAction::GrantPrivileges { database, .. }
        | SqlAction::RevokePrivileges { database, .. } => database,
        _ => "",
    }
}

async fn cleanup(server: &Server, want: &Desired) -> Result<(), BenchError> {
    // Databases first: their in-database dependencies go with them, so roles drop directly.
    let mut actions: Vec<SqlAction> = want
        .databases
        .iter()
        .map(|d| SqlAction::DropDatabase {
            name: d.name.clone(),
        })
        .collect();
    actions.extend(want.roles.iter().map(|r| SqlAction::DropRole {
        name: r.name.clone(),
    }));
    server
        .apply(&actions)
        .await
        .map_err(|source| BenchError::Sql {
            step: "cleanup",
            source,
        })
}

fn unique_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut n = (nanos ^ u128::from(std::process::id()) << 64) % 36u128.pow(6);
    let mut s = String::from("b");
    for _ in 0..6 {
        let digit = (n % 36) as u32;
        s.push(char::from_digit(digit, 36).unwrap_or('x'));
        n /= 36;
    }
    s.push('_');
    s
}

fn run_client(engine: Engine, script: &str) -> Result<Duration, BenchError> {
    let client = match engine {
        Engine::Postgres => "psql",
        Engine::Mysql => "mariadb",
    };
    let err = |reason: String| BenchError::RunClient { client, reason };
    let path = std::env::temp_dir().join(format!(
        "dbward-bench-{}-{}.sql",
        std::process::id(),
        unique_prefix().trim_end_matches('_')
    ));
    std::fs::write(&path, script).map_err(|e| err(format!("writing {}: {e}", path.display())))?;
    let mut command = match engine {
        Engine::Postgres => {
            let mut c = Command::new("psql");
            c.args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-d", "postgres", "-f"])
            .arg(&path)
            .stdin(Stdio::null());
            c
        }
        Engine::Mysql => {
            let file = std::fs::File::open(&path).map_err(|e| err(e.to_string()))?;
            let mut c = Command::new("mariadb");
            c.args(["--protocol=tcp", "-h", "127.0.0.1", "-u", "root"])
                .stdin(Stdio::from(file));
            c
        }
    };
    let start = Instant::now();
    let output = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| err(e.to_string()));
    let elapsed = start.elapsed();
    let _ = std::fs::remove_file(&path);
    let output = output?;
    if !output.status.success() {
        return Err(err(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(elapsed)
}

/// Provisions `n_dbs` databases and `n_users` users (each with `readWrite` on one database)
/// through observe → plan → apply, times it, reconciles everything again unchanged (time and
/// writes: 0), then times the engine's client running the same statements on fresh names, and
/// cleans up everything it created.
pub async fn run_provision_bench(
    engine: Engine,
    n_users: usize,
    n_dbs: usize,
) -> Result<BenchReport, BenchError> {
    let n_dbs = n_dbs.max(1);
    let server = Server::new(&local_connection(engine)).map_err(|source| BenchError::Sql {
        step: "connect",
        source,
    })?;
    let version = server
        .probe()
        .await
        .map_err(|source| BenchError::Sql {
            step: "probe",
            source,
        })?
        .version;
    let prefix = unique_prefix();
    let want = desired(&prefix, n_users, n_dbs);

    let result = async {
        let writes = server.writes();
        let start = Instant::now();
        let first_actions = reconcile_all(&server, &want).await?;
        let first_pass = start.elapsed();
        let first_pass_writes = server.writes() - writes;

        let writes = server.writes();
        let start = Instant::now();
        let second_actions = reconcile_all(&server, &want).await?;
        let second_pass = start.elapsed();
        let second_pass_writes = server.writes() - writes;

        // The same statements, on fresh names (the prefix is unique in the script).
        let script = server
            .render_script(&first_actions)
            .await
            .map_err(|source| BenchError::Sql {
                step: "render script",
                source,
            })?;
        let fresh = unique_prefix().replace('b', "c");
        let script = script.replace(&prefix, &fresh);
        let client_statements = script.lines().filter(|l| l.ends_with(';')).count();
        let client_want = desired(&fresh, n_users, n_dbs);
        let client_time = run_client(engine, &script);
        let cleaned = cleanup(&server, &client_want).await;
        let client_time = client_time?;
        cleaned?;
        Ok(BenchReport {
            engine,
            version: version.clone(),
            users: n_users,
            databases: n_dbs,
            first_pass,
            first_pass_writes,
            second_pass,
            second_pass_writes,
            second_pass_actions: second_actions.len(),
            client: match engine {
                Engine::Postgres => "psql",
                Engine::Mysql => "mariadb",
            },
            client_statements,
            client_time,
        })
    }
    .await;
    let cleaned = cleanup(&server, &want).await;
    let report = result?;
    cleaned?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_spread_in_blocks() {
        let want = desired("p_", 10, 3);
        assert_eq!(want.databases.len(), 3);
        let dbs: Vec<&str> = want
            .privileges
            .values()
            .map(|p| p[0].database.as_str())
            .collect();
        assert!(dbs.iter().all(|d| d.starts_with("p_d")));
        assert_eq!(unique_prefix().len(), 8);
    }
}
