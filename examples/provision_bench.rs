//! Provisioning benchmark: dbward against `psql` / `mariadb` on the local servers.
//!
//! `cargo run --release --example provision_bench -- --engine postgres --users 1000 --dbs 100`

use std::process::ExitCode;

use dbward::sql::Engine;
use dbward::sql::bench::run_provision_bench;

fn usage() -> ExitCode {
    eprintln!("usage: provision_bench --engine postgres|mysql [--users N] [--dbs N]");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut engine = None;
    let mut users = 1000usize;
    let mut dbs = 100usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value.as_deref()) {
            ("--engine", Some("postgres" | "postgresql")) => engine = Some(Engine::Postgres),
            ("--engine", Some("mysql" | "mariadb")) => engine = Some(Engine::Mysql),
            ("--users", Some(n)) => match n.parse() {
                Ok(n) => users = n,
                Err(_) => return usage(),
            },
            ("--dbs", Some(n)) => match n.parse() {
                Ok(n) => dbs = n,
                Err(_) => return usage(),
            },
            _ => return usage(),
        }
    }
    let Some(engine) = engine else {
        return usage();
    };
    match run_provision_bench(engine, users, dbs).await {
        Ok(report) => {
            println!("{report}");
            if report.second_pass_writes == 0 && report.second_pass_actions == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}
