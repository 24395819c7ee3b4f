//! The admin endpoint every long-running dbward process serves over plain HTTP — `dbward
//! webhook`, `dbward controller`, `dbward run` alike: `/healthz` (the process answers),
//! `/readyz` (200 once ready, else 503 saying what it waits for), `/metrics` (Prometheus text
//! from every source the process registered).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::exposition::{self, Exposition};
use crate::http::{Shutdown, Timeouts, serve_plain};

/// Writes some of a process's metrics.
pub type Source = Arc<dyn Fn(&mut Exposition) + Send + Sync>;

/// What the admin endpoint reports.
#[derive(Clone)]
pub struct Admin {
    ready: Arc<AtomicBool>,
    /// Why `/readyz` is 503, while it is.
    waiting_for: &'static str,
    sources: Vec<Source>,
}

impl Admin {
    /// Ready when `ready` is true; `waiting_for` says what it waits for until then.
    pub fn new(ready: Arc<AtomicBool>, waiting_for: &'static str) -> Admin {
        Admin {
            ready,
            waiting_for,
            sources: Vec::new(),
        }
    }

    /// Adds a source of metrics; `/metrics` writes them in the order they were added.
    pub fn with_metrics(mut self, source: Source) -> Admin {
        self.sources.push(source);
        self
    }

    /// `GET /metrics`, `/healthz`, `/readyz`.
    pub fn router(self) -> Router {
        let admin = Arc::new(self);
        Router::new()
            .route(
                "/metrics",
                get({
                    let admin = admin.clone();
                    move || async move {
                        let mut text = Exposition::new();
                        for source in &admin.sources {
                            source(&mut text);
                        }
                        crate::kube_requests::render(&mut text);
                        (
                            [(header::CONTENT_TYPE, exposition::CONTENT_TYPE)],
                            text.finish(),
                        )
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/readyz",
                get(move || async move {
                    if admin.ready.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ready\n".to_owned()).into_response()
                    } else {
                        let why = format!("{}\n", admin.waiting_for);
                        (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
                    }
                }),
            )
    }
}

/// How long the admin endpoint waits on a client (probes and scrapes are small and quick).
pub const TIMEOUTS: Timeouts = Timeouts {
    handshake: Duration::from_secs(5),
    header: Duration::from_secs(10),
    body: Duration::from_secs(5),
    drain: Duration::from_secs(2),
};

/// Serves `admin` on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, admin: Admin, shutdown: Shutdown) {
    serve_plain(listener, admin.router(), TIMEOUTS, shutdown).await;
}
