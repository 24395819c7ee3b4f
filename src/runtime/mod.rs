//! The process of `dbward run`: the webhook on every replica, the controllers on the one that
//! holds the leader Lease, signals.
//!
//! Readiness never depends on leadership: `/readyz` is the webhook's (its caches synced), so a
//! follower keeps serving admission reviews while it waits for the lease.

pub mod lease;
pub mod webhook;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::admin;
use crate::certs::self_managed::SelfManagedCertsArgs;
use crate::exposition::Type;
use crate::reconcile::controller::{self, State};
use crate::webhook::{WebhookArgs, WebhookError};
use lease::{Elector, LeaseArgs, LeaseError};
use webhook::{ServeError, serve_webhook};

/// `dbward run`: the webhook's flags and the lease's.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub webhook: WebhookArgs,
    #[command(flatten)]
    pub certs: SelfManagedCertsArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Flags(String),
    #[error(transparent)]
    Webhook(#[from] ServeError),
    #[error("waiting for the shutdown signal: {0}")]
    Signal(std::io::Error),
}

/// Serves the webhook, takes part in the election, runs the controllers while leading, and on
/// SIGTERM stops them, hands the lease back and drains the webhook.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    if args.webhook.no_kube {
        return Err(RunError::Flags(
            "dbward run needs a cluster; --no-kube is for `dbward webhook`".into(),
        ));
    }
    args.lease.check().map_err(RunError::Flags)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = crate::webhook::live::client(args.webhook.kubeconfig.as_deref())
        .await
        .map_err(|e| ServeError::Webhook(WebhookError::from(e)))?;
    let state = Arc::new(State::new(client.clone(), &args.webhook.namespace, true));
    let leading = Arc::new(AtomicBool::new(false));
    let extra: admin::Source = {
        let (state, leading) = (state.clone(), leading.clone());
        Arc::new(move |text| {
            state.render_metrics(text);
            text.single(
                "dbward_leader",
                Type::Gauge,
                "Whether this replica holds the controllers' Lease.",
                u8::from(leading.load(Ordering::Relaxed)),
            );
        })
    };
    let running = serve_webhook(&args.webhook, &args.certs, Some(extra)).await?;

    let elector = Elector::new(client, &args.webhook.namespace, &args.lease);
    info!(
        identity = elector.identity(),
        lease = elector.lease_name(),
        "dbward run: webhook serving; standing for the controllers' lease"
    );
    let (shutdown, shutting_down) = watch::channel(false);
    let election = tokio::spawn(lead(
        elector,
        args.lease.clone(),
        state,
        leading,
        shutting_down,
    ));
    let signal = shutdown_signal().await;
    info!("shutting down: stopping the controllers, releasing the lease");
    let _ = shutdown.send(true);
    let _ = election.await;
    running.shutdown().await;
    signal.map_err(RunError::Signal)
}

/// How a term of leadership ended.
enum TermEnd {
    /// The process is stopping.
    Shutdown,
    /// Renewal failed for the renew deadline.
    Lost,
    /// The controllers ended on their own.
    ControllersEnded,
}

/// The election loop: candidate until the lease is ours, then leader until it is lost (back to
/// candidate) or the process stops (the lease is released).
async fn lead(
    mut elector: Elector,
    timing: LeaseArgs,
    state: Arc<State>,
    leading: Arc<AtomicBool>,
    mut shutting_down: watch::Receiver<bool>,
) {
    loop {
        if !campaign(&mut elector, &timing, &mut shutting_down).await {
            return;
        }
        info!(
            identity = elector.identity(),
            "leader: starting the controllers"
        );
        leading.store(true, Ordering::Relaxed);
        let (stop, stopped) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(false));
        let mut controllers: JoinHandle<()> =
            tokio::spawn(controller::run_controllers(state.clone(), stopped, ready));
        let (end, renewed) =
            hold(&mut elector, &timing, &mut controllers, &mut shutting_down).await;
        leading.store(false, Ordering::Relaxed);
        let _ = stop.send(true);
        if !matches!(end, TermEnd::ControllersEnded) {
            // A candidate may take over `lease_duration` after our last renewal: the controllers
            // must have stopped by then, or this process goes.
            let deadline = (renewed + timing.lease_duration)
                .checked_sub(Duration::from_secs(1))
                .unwrap_or(renewed);
            if tokio::time::timeout_at(deadline, &mut controllers)
                .await
                .is_err()
            {
                error!(
                    "the controllers did not stop before the lease could pass to another replica; exiting so that two leaders never run"
                );
                std::process::exit(1);
            }
        }
        match end {
            TermEnd::Lost => {
                warn!("lost the lease: controllers stopped; standing again");
            }
            TermEnd::Shutdown | TermEnd::ControllersEnded => {
                if matches!(end, TermEnd::ControllersEnded) {
                    error!("the controllers ended on their own; releasing the lease");
                }
                match elector.release(timing.renew_deadline).await {
                    Ok(()) => info!("lease released"),
                    Err(e) => warn!(error = %e, "cannot release the lease; it expires on its own"),
                }
                return;
            }
        }
    }
}

/// Tries to acquire every retry period (with client-go's jitter) until it succeeds (`true`) or
/// the process stops (`false`).
async fn campaign(
    elector: &mut Elector,
    timing: &LeaseArgs,
    shutting_down: &mut watch::Receiver<bool>,
) -> bool {
    let mut wait = Duration::ZERO;
    let mut last_holder = None;
    loop {
        tokio::select! {
            _ = shutting_down.wait_for(|s| *s) => return false,
            () = tokio::time::sleep(wait) => {}
        }
        wait = timing
            .retry_period
            .mul_f64(1.0 + 1.2 * controller::random_fraction());
        match elector.try_acquire_or_renew(timing.renew_deadline).await {
            Ok(()) => return true,
            Err(LeaseError::HeldBy { holder }) => {
                if last_holder.as_ref() != Some(&holder) {
                    info!(%holder, "the controllers' lease is held by another replica; following");
                    last_holder = Some(holder);
                }
            }
            Err(LeaseError::Conflict) => {}
            Err(e) => warn!(error = %e, "cannot acquire the lease"),
        }
    }
}

/// Renews every retry period while leading. Returns how the term ended and when the lease was
/// last renewed.
async fn hold(
    elector: &mut Elector,
    timing: &LeaseArgs,
    controllers: &mut JoinHandle<()>,
    shutting_down: &mut watch::Receiver<bool>,
) -> (TermEnd, Instant) {
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = shutting_down.wait_for(|s| *s) => return (TermEnd::Shutdown, renewed),
            _ = &mut *controllers => return (TermEnd::ControllersEnded, renewed),
            () = tokio::time::sleep(timing.retry_period) => {}
        }
        let left = (renewed + timing.renew_deadline).saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (TermEnd::Lost, renewed);
        }
        match elector.try_acquire_or_renew(left).await {
            Ok(()) => renewed = Instant::now(),
            Err(LeaseError::HeldBy { holder }) => {
                warn!(%holder, "another replica holds the lease");
                return (TermEnd::Lost, renewed);
            }
            Err(e) => {
                warn!(error = %e, "cannot renew the lease");
                if renewed.elapsed() >= timing.renew_deadline {
                    return (TermEnd::Lost, renewed);
                }
            }
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}
