//! `dbward webhook`: the admission webhook.
//!
//! AdmissionReview in, verdict out; TLS and its reload; metrics and health on a plain-HTTP
//! admin port. The decision itself is the rule engine's (`engine`), a pure function.

pub(crate) mod engine;
pub mod live;
pub mod metrics;
pub mod review;
pub mod snapshot;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::http::{Timeouts, serve_tls};
pub use metrics::{Endpoint, Metrics, Outcome};
pub use snapshot::SharedSnapshot;
pub use tls::TlsFiles;

use crate::admin;

/// The largest AdmissionReview accepted. The API server caps objects at 3 MiB too (etcd's
/// request limit), and a review carries at most two of them.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Arguments of `dbward webhook`.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Address for admission reviews (HTTPS).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain of the serving certificate; reloaded when it changes.
    #[arg(long, default_value = "/etc/dbward/tls/tls.crt")]
    pub tls_cert: PathBuf,
    /// PEM private key of the serving certificate; reloaded when it changes.
    #[arg(long, default_value = "/etc/dbward/tls/tls.key")]
    pub tls_key: PathBuf,
    /// Address for /metrics, /healthz and /readyz (plain HTTP).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_listen: SocketAddr,
    /// Run without a cluster: the snapshot comes from --policy and --context.
    #[arg(long)]
    pub no_kube: bool,
    /// An AdmissionPolicy manifest (with --no-kube).
    #[arg(long, value_name = "FILE", requires = "no_kube")]
    pub policy: Option<PathBuf>,
    /// Manifests of referenced objects: DatabaseServices, connector Secrets, Namespaces
    /// (with --no-kube; multi-document YAML; repeatable).
    #[arg(long, value_name = "FILE", num_args = 1.., requires = "no_kube")]
    pub context: Vec<PathBuf>,
    /// Kubeconfig to use instead of the in-cluster configuration or $KUBECONFIG.
    #[arg(long, value_name = "FILE", conflicts_with = "no_kube")]
    pub kubeconfig: Option<PathBuf>,
    /// The operator's namespace (where connector Secrets live).
    #[arg(long, default_value = "dbward-system")]
    pub namespace: String,
    /// How often the certificate files are checked for changes.
    #[arg(long, default_value = "2s", value_parser = crate::duration::flag)]
    pub tls_reload_interval: Duration,
    /// How long a client may take for the TLS handshake.
    #[arg(long, default_value = "10s", value_parser = crate::duration::flag)]
    pub handshake_timeout: Duration,
    /// How long a client may take to send a request's head; idle connections close after it.
    #[arg(long, default_value = "60s", value_parser = crate::duration::flag)]
    pub idle_timeout: Duration,
    /// How long a client may take to send a request's body.
    #[arg(long, default_value = "10s", value_parser = crate::duration::flag)]
    pub body_timeout: Duration,
}

impl WebhookArgs {
    /// Arguments for a local run without a cluster: defaults for everything else.
    pub fn local(listen: SocketAddr, metrics_listen: SocketAddr, tls: TlsFiles) -> WebhookArgs {
        WebhookArgs {
            listen,
            tls_cert: tls.cert,
            tls_key: tls.key,
            metrics_listen,
            no_kube: true,
            policy: None,
            context: Vec::new(),
            kubeconfig: None,
            namespace: "dbward-system".to_string(),
            tls_reload_interval: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(10),
        }
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            handshake: self.handshake_timeout,
            header: self.idle_timeout,
            body: self.body_timeout,
            ..Timeouts::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("loading the serving certificate: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("loading the snapshot: {0}")]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to the cluster (use --no-kube to run without one): {0}")]
    Cluster(#[from] live::LiveError),
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub snapshot: SharedSnapshot,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub body_timeout: Duration,
    /// Reads references the cached snapshot lacks from the API server (live runs only).
    pub read_through: Option<live::ReadThrough>,
}

impl AppState {
    /// State around a fixed snapshot, ready at once (offline runs, tests, benchmarks).
    pub fn with_snapshot(snapshot: engine::Snapshot) -> AppState {
        AppState {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            metrics: Arc::new(Metrics::default()),
            ready: Arc::new(AtomicBool::new(true)),
            body_timeout: Timeouts::default().body,
            read_through: None,
        }
    }
}

/// `POST /validate` and `POST /mutate`.
pub fn router(state: AppState) -> Router {
    // Shared behind one pointer: handlers get it for one reference count, not a copy of each
    // field.
    let state = Arc::new(state);
    Router::new()
        .route(
            webhook_path(Endpoint::Validate),
            post(
                |State(state): State<Arc<AppState>>, request: Request| async move {
                    review_handler(&state, Endpoint::Validate, request).await
                },
            ),
        )
        .route(
            webhook_path(Endpoint::Mutate),
            post(
                |State(state): State<Arc<AppState>>, request: Request| async move {
                    review_handler(&state, Endpoint::Mutate, request).await
                },
            ),
        )
        .with_state(state)
}

fn webhook_path(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Validate => crate::webhook_config::VALIDATE_PATH,
        Endpoint::Mutate => crate::webhook_config::MUTATE_PATH,
    }
}

/// The admin endpoint of a webhook with `state`: ready once its caches synced; the webhook's
/// metrics, then `extra`'s.
pub fn admin(state: &AppState, extra: Option<admin::Source>) -> admin::Admin {
    let (metrics, ready) = (state.metrics.clone(), state.ready.clone());
    let webhook: admin::Source = Arc::new(move |text| {
        metrics.encode_into(ready.load(Ordering::Relaxed), text);
    });
    let admin =
        admin::Admin::new(state.ready.clone(), "caches not synced yet").with_metrics(webhook);
    match extra {
        Some(extra) => admin.with_metrics(extra),
        None => admin,
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

/// The thin handler: read the body, parse the review once, let the engine judge, answer;
/// count and log what happened (never the object's data).
async fn review_handler(state: &AppState, endpoint: Endpoint, request: Request) -> Response {
    let started = Instant::now();
    let (head, body) = request.into_parts();
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        // Refuse before reading a byte of it.
        let message = too_large_message();
        return bad_request(state, endpoint, started, StatusCode::BAD_REQUEST, message);
    }
    let read = axum::body::to_bytes(body, MAX_BODY_BYTES);
    let mut read = std::pin::pin!(read);
    // The body usually arrives with the head; only a body still on its way needs a timer.
    let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
    let read = match first {
        Poll::Ready(read) => Ok(read),
        Poll::Pending => tokio::time::timeout(state.body_timeout, read).await,
    };
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            let message = if too_large {
                too_large_message()
            } else {
                format!("reading the request body: {error}")
            };
            return bad_request(state, endpoint, started, StatusCode::BAD_REQUEST, message);
        }
        Err(_) => {
            let message = format!(
                "the request body did not arrive within {:?}",
                state.body_timeout
            );
            return bad_request(
                state,
                endpoint,
                started,
                StatusCode::REQUEST_TIMEOUT,
                message,
            );
        }
    };
    let request = match review::parse(&bytes) {
        Ok(request) => request,
        Err(rejected) => {
            let message = rejected.error.to_string();
            return match rejected.review {
                Some(review) => {
                    record_bad_request(state, endpoint, started, &message);
                    json(StatusCode::OK, review)
                }
                None => bad_request(state, endpoint, started, StatusCode::BAD_REQUEST, message),
            };
        }
    };
    let snapshot = state.snapshot.load_full();
    let completed = match (&state.read_through, &request.object) {
        (Some(read_through), Some(object)) if request.kind.group == crate::api::GROUP => {
            read_through
                .complete(
                    &snapshot,
                    &request.kind.kind,
                    request.namespace.as_deref(),
                    object,
                )
                .await
        }
        _ => None,
    };
    let (body, answered) =
        review::answer(endpoint, &request, completed.as_ref().unwrap_or(&snapshot));
    let elapsed = started.elapsed();
    state.metrics.record(
        endpoint,
        &request.kind.group,
        &request.kind.kind,
        &request.operation,
        answered.outcome,
        elapsed,
    );
    tracing::info!(
        endpoint = endpoint.as_str(),
        uid = %request.uid,
        kind = %request.kind.kind,
        namespace = request.namespace.as_deref().unwrap_or(""),
        name = request.name.as_deref().unwrap_or(""),
        operation = %request.operation,
        subresource = request.sub_resource.as_deref().unwrap_or(""),
        dry_run = request.dry_run.unwrap_or(false),
        verdict = answered.outcome.as_str(),
        warnings = answered.warnings,
        patch_ops = answered.patch_ops,
        latency_us = elapsed.as_micros() as u64,
        "admission review"
    );
    json(StatusCode::OK, body)
}

fn too_large_message() -> String {
    format!("the request body is larger than {MAX_BODY_BYTES} bytes (3 MiB)")
}

fn record_bad_request(state: &AppState, endpoint: Endpoint, started: Instant, message: &str) {
    let elapsed = started.elapsed();
    state
        .metrics
        .record(endpoint, "", "", "", Outcome::BadRequest, elapsed);
    tracing::warn!(
        endpoint = endpoint.as_str(),
        latency_us = elapsed.as_micros() as u64,
        error = message,
        "bad admission request"
    );
}

fn bad_request(
    state: &AppState,
    endpoint: Endpoint,
    started: Instant,
    status: StatusCode,
    message: String,
) -> Response {
    record_bad_request(state, endpoint, started, &message);
    text(status, message + "\n")
}

/// A running webhook: its bound addresses and the means to stop it.
#[derive(Debug)]
pub struct RunningWebhook {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub state: AppState,
    stop: watch::Sender<bool>,
    /// End on their own after the stop signal.
    servers: Vec<JoinHandle<()>>,
    /// Run until aborted (certificate reload, snapshot watchers).
    background: Vec<JoinHandle<()>>,
}

impl RunningWebhook {
    /// Runs `task` for as long as the webhook does (it is aborted on shutdown).
    pub fn keep(&mut self, task: JoinHandle<()>) {
        self.background.push(task);
    }

    /// Stops accepting, lets open requests finish, and waits for the servers to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for server in self.servers {
            let _ = server.await;
        }
        for task in self.background {
            task.abort();
        }
    }
}

/// Loads the certificate and the snapshot, binds both ports and starts serving.
pub async fn start(args: &WebhookArgs) -> Result<RunningWebhook, WebhookError> {
    start_with(args, None).await
}

/// [`start`], with `extra` appended to `/metrics`.
pub async fn start_with(
    args: &WebhookArgs,
    extra: Option<admin::Source>,
) -> Result<RunningWebhook, WebhookError> {
    let files = TlsFiles {
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
    };
    let client = if args.no_kube {
        None
    } else {
        // kube's client picks its TLS provider from the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Some(live::client(args.kubeconfig.as_deref()).await?)
    };
    let store = tls::load(&files)?;
    let tls_config = tls::server_config(store.clone())?;
    let reloader = tls::Reloader::new(files, store.clone())?;

    let mut background = Vec::new();
    let mut state = match client {
        None => {
            let snapshot =
                snapshot::offline(args.policy.as_deref(), &args.context, &args.namespace)?;
            AppState::with_snapshot(snapshot)
        }
        Some(client) => {
            // Until the caches sync, a missing reference is only a warning; /readyz says not
            // ready, so the API server should not be calling yet anyway.
            let mut state =
                AppState::with_snapshot(engine::Snapshot::from_objects([], &args.namespace, false));
            state.ready.store(false, Ordering::Relaxed);
            state.read_through = Some(live::ReadThrough::new(client.clone(), &args.namespace));
            background.extend(live::start(
                client,
                &args.namespace,
                state.snapshot.clone(),
                state.ready.clone(),
                state.metrics.clone(),
            ));
            state
        }
    };
    state.body_timeout = args.body_timeout;
    state.metrics.set_cert_not_after(store.not_after());

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| WebhookError::Bind {
            addr: args.listen,
            source,
        })?;
    let metrics_listener = TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|source| WebhookError::Bind {
            addr: args.metrics_listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| WebhookError::Bind {
        addr: args.listen,
        source,
    })?;
    let metrics_addr = metrics_listener
        .local_addr()
        .map_err(|source| WebhookError::Bind {
            addr: args.metrics_listen,
            source,
        })?;

    let (stop, stopped) = watch::channel(false);
    let tls_server = tokio::spawn(serve_tls(
        listener,
        router(state.clone()),
        tls_config,
        args.timeouts(),
        stopped.clone(),
    ));
    let admin_server = tokio::spawn(admin::serve(
        metrics_listener,
        admin(&state, extra),
        stopped,
    ));
    let metrics = state.metrics.clone();
    background.push(tokio::spawn(reloader.run(args.tls_reload_interval, move |outcome| match outcome {
        tls::Reload::Reloaded { not_after } => {
            metrics.cert_reloaded(true);
            metrics.set_cert_not_after(*not_after);
            tracing::info!(not_after, "serving certificate reloaded");
        }
        tls::Reload::Failed(error) => {
            metrics.cert_reloaded(false);
            tracing::warn!(%error, "serving certificate changed but could not be loaded; keeping the old one");
        }
        tls::Reload::Unchanged => {}
    })));
    tracing::info!(%addr, %metrics_addr, "dbward webhook serving");
    Ok(RunningWebhook {
        addr,
        metrics_addr,
        state,
        stop,
        servers: vec![tls_server, admin_server],
        background,
    })
}
