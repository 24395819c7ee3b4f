use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dbward::cli;

/// dbward: databases, roles and pools on PostgreSQL and MySQL, declared in Kubernetes, with every
/// mistake rejected at `kubectl apply` time.
#[derive(Parser, Debug)]
#[command(name = "dbward", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check manifests offline with the admission webhook's rules.
    Validate(cli::validate::ValidateArgs),
    /// Print the CustomResourceDefinitions.
    Crds(cli::crds::CrdsArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Validate(args) => cli::validate::run(&args),
        Command::Crds(args) => cli::crds::run(&args),
    }
}
