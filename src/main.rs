use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dbward::cli;

/// Every admission review builds and drops a few hundred small allocations (the objects' trees,
/// the answer); mimalloc serves them with far fewer instructions than glibc's malloc (see
/// `examples/webhook_bench.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run dbward in a cluster: the webhook on every replica, the controllers on the one
    /// holding the leader Lease.
    // The webhook's flags for a run without a cluster are refused here: not listed either.
    #[command(
        mut_arg("no_kube", |a| a.hide(true)),
        mut_arg("policy", |a| a.hide(true)),
        mut_arg("context", |a| a.hide(true))
    )]
    Run(Box<dbward::runtime::RunArgs>),
    /// Check manifests offline with the admission webhook's rules.
    Validate(cli::validate::ValidateArgs),
    /// Print the CustomResourceDefinitions.
    Crds(cli::crds::CrdsArgs),
    /// Apply the database side of manifests to their servers, without a cluster (`--local`).
    Reconcile(cli::reconcile::ReconcileArgs),
    /// Run the controllers against a cluster (one replica; `run` elects a leader).
    Controller(cli::controller::ControllerArgs),
    /// Serve the admission webhook (AdmissionReview v1 over HTTPS).
    Webhook(Box<dbward::runtime::webhook::WebhookCommand>),
    /// Write a CA and a serving certificate for the webhook.
    Certs(dbward::certs::CertsArgs),
    /// Print the Validating- and MutatingWebhookConfiguration.
    WebhookConfig(dbward::webhook_config::WebhookConfigArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => cli::run::run(*args),
        Command::Validate(args) => cli::validate::run(&args),
        Command::Crds(args) => cli::crds::run(&args),
        Command::Reconcile(args) => cli::reconcile::run(&args),
        Command::Controller(args) => cli::controller::run(&args),
        Command::Webhook(args) => cli::webhook::run_webhook(*args),
        Command::Certs(args) => cli::webhook::run_certs(args),
        Command::WebhookConfig(args) => cli::webhook::run_webhook_config(args),
    }
}
