//! Serving a router over TLS (the webhook) or plain HTTP (the admin port): HTTP/1.1 with keep-alive, a bound on every wait a client can
//! impose (handshake, request head — which also closes idle connections — and body), and a
//! graceful drain on shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;

/// How long the server waits on a client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For the TLS handshake to finish.
    pub handshake: Duration,
    /// For a request's head to arrive; an idle keep-alive connection is closed after it too.
    pub header: Duration,
    /// For a request's body to arrive.
    pub body: Duration,
    /// For open connections to finish on shutdown.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(10),
            // The API server's webhook client keeps idle connections for 90 s; closing ours
            // sooner only costs it a new handshake.
            header: Duration::from_secs(60),
            body: Duration::from_secs(10),
            drain: Duration::from_secs(10),
        }
    }
}

/// A receiver that turns `true` when the server should stop.
pub type Shutdown = watch::Receiver<bool>;

async fn stopped(shutdown: &mut Shutdown) {
    // A dropped sender also means stop.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves `app` over TLS on `listener` until `shutdown` turns true, then lets open requests
/// finish for up to `timeouts.drain`.
pub async fn serve_tls(
    listener: TcpListener,
    app: Router,
    tls: Arc<ServerConfig>,
    timeouts: Timeouts,
    shutdown: Shutdown,
) {
    serve(
        listener,
        app,
        Some(TlsAcceptor::from(tls)),
        timeouts,
        shutdown,
    )
    .await;
}

/// Serves `app` over plain HTTP (an admin port) with the same bounds, `handshake` aside.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    shutdown: Shutdown,
) {
    serve(listener, app, None, timeouts, shutdown).await;
}

async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    timeouts: Timeouts,
    mut shutdown: Shutdown,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .keep_alive(true);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let connection = Connection {
            app: app.clone(),
            http: http.clone(),
            watcher: graceful.watcher(),
            peer,
        };
        tokio::spawn(async move {
            let Some(acceptor) = tls else {
                return connection.serve(tcp).await;
            };
            match tokio::time::timeout(timeouts.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => connection.serve(tls).await,
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(timeouts.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

/// One accepted connection, ready to be served.
struct Connection {
    app: Router,
    http: hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    peer: std::net::SocketAddr,
}

impl Connection {
    async fn serve<IO>(self, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let app = self.app;
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut app = app.clone();
            async move {
                let response = app.call(request.map(Body::new)).await;
                Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
            }
        });
        let connection = self.http.serve_connection(TokioIo::new(io), service);
        if let Err(error) = self.watcher.watch(connection).await {
            tracing::debug!(peer = %self.peer, %error, "connection ended with an error");
        }
    }
}
