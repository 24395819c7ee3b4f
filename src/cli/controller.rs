//! `dbward controller`: the DatabaseService, Database, ServiceUser and DatabaseClaim
//! controllers against a cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::admission;

/// Run the controllers in one process, without an election (one replica; `dbward run` elects a
/// leader among several).
#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// A kubeconfig file (default: in-cluster configuration, else $KUBECONFIG or ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// dbward's namespace (where connector Secrets live).
    #[arg(long, default_value = admission::DEFAULT_OPERATOR_NAMESPACE)]
    pub namespace: String,
    /// Serve /metrics, /healthz and /readyz on this address (plain HTTP).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

pub fn run(args: &ControllerArgs) -> ExitCode {
    super::init_logging();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let client = match crate::webhook::live::client(args.kubeconfig.as_deref()).await {
            Ok(client) => client,
            Err(e) => {
                eprintln!("error: cannot configure the Kubernetes client: {e}");
                return ExitCode::from(2);
            }
        };
        match crate::reconcile::controller::run(client, &args.namespace, args.metrics_listen).await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    })
}
