//! `dbward webhook` as a process: the webhook (`crate::webhook`, which only answers reviews and
//! reads the cluster) and, with `--self-managed-certs`, dbward's own CA and serving certificate
//! kept in the cluster (`crate::certs::self_managed`, which writes Secrets and the webhook
//! configurations' CA bundle). `dbward run` serves it the same way.

use kube::Client;

use crate::admin;
use crate::certs::self_managed::{SelfManagedCerts, SelfManagedCertsArgs, SelfManagedError};
use crate::webhook::{self, RunningWebhook, TlsFiles, WebhookArgs, WebhookError, tls};

/// `dbward webhook`: the webhook's flags and its self-managed certificates'.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookCommand {
    #[command(flatten)]
    pub webhook: WebhookArgs,
    #[command(flatten)]
    pub certs: SelfManagedCertsArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    #[error("--self-managed-certs needs a cluster; it cannot be used with --no-kube")]
    SelfManagedWithoutCluster,
    #[error("self-managed certificates: {0}")]
    Certs(#[from] SelfManagedError),
    #[error("waiting for the shutdown signal: {0}")]
    Signal(std::io::Error),
}

/// Makes the certificate files first when they are self-managed (so the webhook loads what its
/// CA signed), starts the webhook, then keeps the certificates renewed beside it.
pub async fn serve_webhook(
    args: &WebhookArgs,
    certs: &SelfManagedCertsArgs,
    extra: Option<admin::Source>,
) -> Result<RunningWebhook, ServeError> {
    if !certs.self_managed_certs {
        return Ok(webhook::start_with(args, extra).await?);
    }
    if args.no_kube {
        return Err(ServeError::SelfManagedWithoutCluster);
    }
    // kube's client picks its TLS provider from the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client: Client = webhook::live::client(args.kubeconfig.as_deref())
        .await
        .map_err(WebhookError::from)?;
    let files = TlsFiles {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
    };
    let self_managed = SelfManagedCerts::new(
        client,
        &args.namespace,
        certs,
        files.cert.clone(),
        files.key.clone(),
    );
    match self_managed.reconcile().await {
        Ok(_) => {}
        // Serving a certificate from an earlier run beats not serving.
        Err(error) if tls::load(&files).is_ok() => tracing::warn!(
            %error,
            "self-managed certificates could not be checked; serving the certificate on disk and retrying"
        ),
        Err(error) => return Err(error.into()),
    }
    let mut running = webhook::start_with(args, extra).await?;
    running.keep(tokio::spawn(self_managed.run(certs.certs_check_interval)));
    Ok(running)
}

/// `dbward webhook`: serve until SIGTERM or Ctrl-C.
pub async fn run_webhook(command: WebhookCommand) -> Result<(), ServeError> {
    let running = serve_webhook(&command.webhook, &command.certs, None).await?;
    super::shutdown_signal().await.map_err(ServeError::Signal)?;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}
