//! Load benchmark of the admission webhook (a command that prints figures, not a test).
//!
//!     cargo run --release --example webhook_bench -- [--duration 10s] [--clients 1,8,64] [--rate 1000]
//!
//! One server — the real router (`/validate`, `/mutate`) plus a baseline route that reads the
//! body and answers a fixed "allowed" without parsing — on 127.0.0.1 over the real TLS setup.
//! The same keep-alive HTTPS clients drive both, in the same run:
//! - closed loop: N clients send as fast as they can; requests/s and p50/p99/p99.9, and
//!   dbward's throughput as a ratio of the baseline's;
//! - open loop: a fixed offered rate (an API server's, well below saturation); latency
//!   percentiles measured from the moment each request was due (`start + i / rate`), so a
//!   generator that falls behind does not hide the queueing (coordinated omission).
//!
//! The server logs one line per review at info, as `dbward webhook` does by default
//! (`--no-log` turns that off).
//!
//! Server and load generator run on separate runtimes (two worker threads each by default, as
//! `dbward webhook` has on this 2-core machine), as two processes would, and share the cores.

#[path = "../tests/webhook_support/mod.rs"]
mod webhook_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use bytes::Bytes;
use clap::Parser;
use dbward::webhook::{self, AppState, Timeouts};
use webhook_support::{Client, fixture, fixture_dir, make_certs};

/// The same allocator as the `dbward` binary, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(about = "Load benchmark of the dbward admission webhook")]
struct Args {
    /// Measured time of each closed-loop run.
    #[arg(long, default_value = "10s", value_parser = dbward::duration::flag)]
    duration: Duration,
    /// Each closed-loop run is cut into this many slices, alternating baseline and dbward, so
    /// that load from elsewhere on the machine falls on both alike.
    #[arg(long, default_value_t = 10)]
    slices: u32,
    /// Unmeasured time before each run.
    #[arg(long, default_value = "1s", value_parser = dbward::duration::flag)]
    warmup: Duration,
    /// Numbers of concurrent keep-alive clients for the closed-loop runs.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    clients: Vec<usize>,
    /// Offered rate of the open-loop run, in reviews per second (0: skip it).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Measured time of the open-loop run.
    #[arg(long, default_value = "10s", value_parser = dbward::duration::flag)]
    open_duration: Duration,
    /// Run without the log subscriber. By default the server logs as `dbward webhook` does: an
    /// info-level `tracing` subscriber formatting one line per review, written to `/dev/null`
    /// (one write per line, as to the binary's stdout).
    #[arg(long)]
    no_log: bool,
    /// Rounds of each review in the handler-work measurement.
    #[arg(long, default_value_t = 20_000)]
    rounds: u32,
    /// Measure only the handler's work (parse, engine, answer) and stop: for profilers such as
    /// `valgrind --tool=callgrind`, whose instruction counts do not depend on the machine's load.
    #[arg(long)]
    handler_only: bool,
    /// Drive only one side in the closed-loop runs (`dbward` or `baseline`), e.g. under `perf
    /// record`, to see where each side's time goes; no ratio is printed then.
    #[arg(long, value_parser = ["dbward", "baseline"])]
    only: Option<String>,
    /// Also run two routes that answer like the baseline after doing part of dbward's work:
    /// `parse` only parses each review (the floor of what judging one can cost), `judge` also
    /// runs the engine and serializes the answer; each as a ratio of the baseline too.
    #[arg(long)]
    breakdown: bool,
    /// Worker threads of the server's runtime (`dbward webhook` starts one per core).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
}

/// What the clients send: realistic reviews, each to the endpoint the API server would use.
fn workload() -> Vec<(&'static str, Bytes)> {
    let mut requests = Vec::new();
    for (name, paths) in [
        ("create-connectionpool.json", &["/mutate", "/validate"][..]),
        (
            "update-connectionpool-immutable.json",
            &["/mutate", "/validate"][..],
        ),
        ("delete-database-protected.json", &["/validate"][..]),
        (
            "create-serviceuser-invalid.json",
            &["/mutate", "/validate"][..],
        ),
        (
            "create-postgrescluster-low-resources.json",
            &["/mutate", "/validate"][..],
        ),
        ("update-connectionpool-status.json", &["/validate"][..]),
    ] {
        let body = Bytes::from(fixture(name));
        for path in paths {
            requests.push((*path, body.clone()));
        }
    }
    requests
}

const BASELINE_ANSWER: &[u8] =
    br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":true}}"#;

/// Reads the body like the real handlers (same limit), does `work` with it, and answers a fixed
/// "allowed": the baseline does no work, the `--breakdown` routes part of dbward's.
async fn answer_fixed(body: Body, work: impl FnOnce(&[u8])) -> axum::response::Response {
    match axum::body::to_bytes(body, webhook::MAX_BODY_BYTES).await {
        Ok(bytes) => {
            work(&bytes);
            (
                [(header::CONTENT_TYPE, "application/json")],
                BASELINE_ANSWER,
            )
                .into_response()
        }
        Err(_) => axum::http::StatusCode::BAD_REQUEST.into_response(),
    }
}

/// Reads the body and answers without parsing it.
async fn baseline(body: Body) -> axum::response::Response {
    answer_fixed(body, |_| {}).await
}

/// Parses the review as the real handlers do: what only reading a review costs, a floor under
/// any handler that judges one.
async fn parse_only(body: Body) -> axum::response::Response {
    answer_fixed(body, |bytes| {
        std::hint::black_box(webhook::review::parse(bytes).is_ok());
    })
    .await
}

/// Parses and judges like the real handlers (engine and serialized answer included): with
/// `parse_only`, where dbward's time goes.
async fn judge_only(
    snapshot: &dbward::webhook::SharedSnapshot,
    endpoint: webhook::Endpoint,
    body: Body,
) -> axum::response::Response {
    answer_fixed(body, |bytes| {
        if let Ok(request) = webhook::review::parse(bytes) {
            let answer = webhook::review::answer(endpoint, &request, &snapshot.load());
            std::hint::black_box(answer.0.len());
        }
    })
    .await
}

/// Where a request of the mix goes: its own path, or a comparison route.
type Route = fn(&'static str) -> &'static str;

fn judge_only_path(path: &'static str) -> &'static str {
    if path == "/mutate" {
        "/judge-only/mutate"
    } else {
        "/judge-only/validate"
    }
}

#[derive(Default)]
struct Figures {
    requests: usize,
    errors: usize,
    seconds: f64,
    latencies: Vec<Duration>,
    /// CPU time the server's threads used.
    server_cpu: Duration,
}

impl Figures {
    fn merge(&mut self, other: Figures) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.seconds += other.seconds;
        self.server_cpu += other.server_cpu;
        self.latencies.extend(other.latencies);
    }

    /// Server CPU time per request.
    fn cpu_per_request(&self) -> Duration {
        self.server_cpu / u32::try_from(self.requests.max(1)).unwrap_or(u32::MAX)
    }

    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn percentile(&mut self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    fn row(&mut self, label: &str, clients: &str) -> String {
        format!(
            "{label:<9} {clients:>7} {rate:>10.0} {p50:>9} {p99:>9} {p999:>9} {errors:>7} {cpu:>11}",
            rate = self.rate(),
            p50 = micros(self.percentile(50.0)),
            p99 = micros(self.percentile(99.0)),
            p999 = micros(self.percentile(99.9)),
            errors = self.errors,
            cpu = format!("{:.1} µs", self.cpu_per_request().as_secs_f64() * 1e6),
        )
    }
}

/// CPU time (user + system) of this process's threads named `server` so far.
fn server_cpu() -> Duration {
    let ticks_per_second = 100; // USER_HZ on Linux
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid … utime is field 14 and stime field 15, counted from 1.
        let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
        else {
            continue;
        };
        if comm != "server" {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(11) + field(12);
    }
    Duration::from_millis(ticks * 1000 / ticks_per_second)
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// N clients, each on its own connection, sending back to back for `duration`.
async fn closed_loop(
    client: &Client,
    clients: usize,
    requests: Arc<Vec<(&'static str, Bytes)>>,
    route: Route,
    warmup: Duration,
    duration: Duration,
) -> Figures {
    // Handshakes first, outside the measured time.
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(client.connect().await.expect("connecting"));
    }
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut tasks = Vec::new();
    for (c, mut connection) in connections.into_iter().enumerate() {
        let client = client.clone();
        let requests = requests.clone();
        tasks.push(tokio::spawn(async move {
            let mut figures = Figures::default();
            let mut i = c; // clients start at different places in the mix
            loop {
                let (path, body) = &requests[i % requests.len()];
                i += 1;
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let path = route(path);
                let ok = matches!(connection.post(path, body.clone()).await, Ok((200, _)));
                if sent >= start {
                    figures.requests += 1;
                    figures.latencies.push(sent.elapsed());
                    if !ok {
                        figures.errors += 1;
                    }
                }
                if !ok {
                    connection = client.connect().await.expect("reconnecting");
                }
            }
            figures
        }));
    }
    let cpu_before = loop {
        // Sample the server's CPU time when the measured part begins.
        if Instant::now() >= start {
            break server_cpu();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let mut all = Figures::default();
    for task in tasks {
        all.merge(task.await.expect("client task"));
    }
    all.seconds = duration.as_secs_f64();
    all.server_cpu = server_cpu().saturating_sub(cpu_before);
    all
}

/// A fixed offered rate over a pool of keep-alive connections. Request `i` is due at
/// `start + i / rate`, and its latency runs from that moment, not from when the generator got
/// round to sending it: when the generator or the pool falls behind, the wait counts (no
/// coordinated omission).
async fn open_loop(
    client: &Client,
    rate: u32,
    requests: Arc<Vec<(&'static str, Bytes)>>,
    route: Route,
    duration: Duration,
) -> Figures {
    const POOL: usize = 32;
    let (give_back, pool) = tokio::sync::mpsc::channel(POOL);
    for _ in 0..POOL {
        give_back
            .send(client.connect().await.expect("connecting"))
            .await
            .unwrap();
    }
    let pool = Arc::new(tokio::sync::Mutex::new(pool));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let started = Instant::now();
    let cpu_before = server_cpu();
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let (path, body) = requests[i % requests.len()].clone();
        let path = route(path);
        let pool = pool.clone();
        let give_back = give_back.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let mut connection = pool.lock().await.recv().await.expect("pool");
            let ok = matches!(connection.post(path, body).await, Ok((200, _)));
            let _ = done.send((due.elapsed(), ok));
            let _ = give_back.send(connection).await;
        });
    }
    drop(done_tx);
    let mut figures = Figures::default();
    while let Some((latency, ok)) = done_rx.recv().await {
        figures.requests += 1;
        figures.latencies.push(latency);
        if !ok {
            figures.errors += 1;
        }
    }
    figures.seconds = started.elapsed().as_secs_f64();
    figures.server_cpu = server_cpu().saturating_sub(cpu_before);
    figures
}

/// The review's envelope with its objects read as `O`: `IgnoredAny` skips them (the floor of
/// any parse that reads them), a typed kind reads them into its Rust structure straight from the
/// bytes (the lever the handler does not use: it reads the fields its engine judges into a
/// `serde_json::Value`).
#[derive(serde::Deserialize)]
struct Envelope<'a, O> {
    #[serde(borrow)]
    request: EnvelopeRequest<'a, O>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeRequest<'a, O> {
    #[serde(borrow)]
    uid: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    operation: std::borrow::Cow<'a, str>,
    #[serde(default = "Option::default")]
    object: Option<O>,
    #[serde(default = "Option::default")]
    old_object: Option<O>,
}

fn read_as<'a, O: serde::Deserialize<'a>>(body: &'a [u8]) -> usize {
    let review: Envelope<'a, O> = serde_json::from_slice(body).expect("a valid review");
    let r = review.request;
    r.uid.len()
        + r.operation.len()
        + usize::from(r.object.is_some())
        + usize::from(r.old_object.is_some())
}

/// Time per call of `work`, after a warm-up.
fn per_call(rounds: u32, mut work: impl FnMut() -> usize) -> Duration {
    for _ in 0..rounds.min(1000) {
        std::hint::black_box(work());
    }
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(work());
    }
    started.elapsed() / rounds
}

/// CPU time of the handler's own work (parse, judge, serialize) per review, on one thread,
/// without the network: what dbward adds to the baseline. Beside it, what parsing alone costs
/// three ways: the envelope with the objects skipped, the handler's parse, and the objects
/// read into their typed kinds instead.
fn handler_cost(snapshot: &dbward::webhook::SharedSnapshot, rounds: u32) {
    println!("\nhandler work per review on one thread, no network (µs)");
    println!(
        "  {:<44} {:<9} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "review", "endpoint", "bytes", "skip-obj", "parse", "typed", "handler"
    );
    type Typed = fn(&[u8]) -> usize;
    let pool: Typed = |b| read_as::<dbward::api::ConnectionPool>(b);
    let cluster: Typed = |b| read_as::<dbward::api::PostgresCluster>(b);
    for (name, endpoint, typed) in [
        (
            "create-connectionpool.json",
            webhook::Endpoint::Mutate,
            pool,
        ),
        (
            "create-connectionpool.json",
            webhook::Endpoint::Validate,
            pool,
        ),
        (
            "update-connectionpool-immutable.json",
            webhook::Endpoint::Validate,
            pool,
        ),
        (
            "create-postgrescluster-low-resources.json",
            webhook::Endpoint::Validate,
            cluster,
        ),
        (
            "update-connectionpool-status.json",
            webhook::Endpoint::Validate,
            pool,
        ),
    ] {
        let body = fixture(name);
        let snapshot = snapshot.load();
        let skipped = per_call(rounds, || read_as::<serde::de::IgnoredAny>(&body));
        let parsed = per_call(rounds, || {
            usize::from(webhook::review::parse(&body).is_ok())
        });
        let typed = per_call(rounds, || typed(&body));
        let handler = per_call(rounds, || {
            let request = webhook::review::parse(&body).expect("a valid review");
            webhook::review::answer(endpoint, &request, &snapshot)
                .0
                .len()
        });
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "  {:<44} {:<9} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            name,
            endpoint.as_str(),
            body.len(),
            us(skipped),
            us(parsed),
            us(typed),
            us(handler),
        );
    }
}

fn main() {
    let args = Args::parse();
    if !args.no_log {
        let null = std::fs::File::create("/dev/null").expect("/dev/null");
        tracing_subscriber::fmt()
            .with_writer(std::sync::Mutex::new(null))
            .with_env_filter("info")
            .init();
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let bundle = make_certs(dir.path());

    // The server, on its own runtime.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .thread_name("server")
        .enable_all()
        .build()
        .unwrap();
    let snapshot = webhook::snapshot::offline(
        Some(&fixture_dir().join("policy.yaml")),
        &[fixture_dir().join("context.yaml")],
        "dbward-system",
    )
    .expect("fixture snapshot");
    let state = AppState::with_snapshot(snapshot);
    let shared_snapshot = state.snapshot.clone();
    let app = webhook::router(state)
        .route("/baseline", post(baseline))
        .route("/parse-only", post(parse_only))
        .route("/judge-only/validate", {
            let snapshot = shared_snapshot.clone();
            post(move |body: Body| async move {
                judge_only(&snapshot, webhook::Endpoint::Validate, body).await
            })
        })
        .route("/judge-only/mutate", {
            let snapshot = shared_snapshot.clone();
            post(move |body: Body| async move {
                judge_only(&snapshot, webhook::Endpoint::Mutate, body).await
            })
        });
    let files = webhook::TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let tls = webhook::tls::server_config(webhook::tls::load(&files).unwrap()).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let listener = server_runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = server_runtime.spawn(webhook::serve_tls(
        listener,
        app,
        tls,
        Timeouts::default(),
        stopped,
    ));

    // The load generator, on another.
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("client")
        .enable_all()
        .build()
        .unwrap();
    let client = Client::trusting(&bundle.ca_cert_pem, addr);
    let requests = Arc::new(workload());

    let protocol = client_runtime
        .block_on(client.connect())
        .expect("connecting")
        .protocol;
    println!(
        "dbward webhook benchmark: {} reviews in the mix (/validate and /mutate), {} cores, {:?} (rustls, ring)",
        requests.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        protocol,
    );
    println!(
        "server logging: {}",
        if args.no_log {
            "off (--no-log)"
        } else {
            "info, one line per review to /dev/null (as dbward webhook logs by default)"
        }
    );
    handler_cost(&shared_snapshot, args.rounds.max(1));
    if args.handler_only {
        return;
    }
    println!(
        "\nclosed loop, {:?} per run in {} slices alternating with the baseline, after {:?} warm-up; \
         latency as the client sees it",
        args.duration, args.slices, args.warmup
    );
    println!(
        "{:<9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>7} {:>11}   dbward/baseline",
        "endpoint", "clients", "req/s", "p50", "p99", "p99.9", "errors", "server CPU/req"
    );
    client_runtime.block_on(async {
        for &clients in &args.clients {
            let slice = args.duration / args.slices.max(1);
            let mut base = Figures::default();
            let mut real = Figures::default();
            let mut floor = Figures::default();
            let mut judged = Figures::default();
            for i in 0..args.slices.max(1) {
                let warmup = if i == 0 { args.warmup } else { Duration::ZERO };
                if args.only.as_deref() != Some("dbward") {
                    base.merge(
                        closed_loop(
                            &client,
                            clients,
                            requests.clone(),
                            |_| "/baseline",
                            warmup,
                            slice,
                        )
                        .await,
                    );
                }
                if args.only.as_deref() != Some("baseline") {
                    real.merge(
                        closed_loop(&client, clients, requests.clone(), |p| p, warmup, slice).await,
                    );
                }
                if args.breakdown && args.only.is_none() {
                    judged.merge(
                        closed_loop(
                            &client,
                            clients,
                            requests.clone(),
                            judge_only_path,
                            warmup,
                            slice,
                        )
                        .await,
                    );
                    floor.merge(
                        closed_loop(
                            &client,
                            clients,
                            requests.clone(),
                            |_| "/parse-only",
                            warmup,
                            slice,
                        )
                        .await,
                    );
                }
            }
            match args.only.as_deref() {
                Some("dbward") => println!("{}", real.row("dbward", &clients.to_string())),
                Some(_) => println!("{}", base.row("baseline", &clients.to_string())),
                None => {
                    let ratio = real.rate() / base.rate();
                    println!("{}", base.row("baseline", &clients.to_string()));
                    println!("{}   {ratio:.2}", real.row("dbward", &clients.to_string()));
                    if args.breakdown {
                        let ratio = floor.rate() / base.rate();
                        println!("{}   {ratio:.2}", floor.row("parse", &clients.to_string()));
                        let ratio = judged.rate() / base.rate();
                        println!("{}   {ratio:.2}", judged.row("judge", &clients.to_string()));
                    }
                }
            }
        }
        if args.rate > 0 {
            println!(
                "\nopen loop, {} reviews/s offered for {:?} over 32 keep-alive connections; \
                 latency from the time each request was due",
                args.rate, args.open_duration
            );
            println!(
                "{:<9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>7} {:>11}",
                "endpoint", "rate", "req/s", "p50", "p99", "p99.9", "errors", "server CPU/req"
            );
            let mut base = open_loop(
                &client,
                args.rate,
                requests.clone(),
                |_| "/baseline",
                args.open_duration,
            )
            .await;
            println!("{}", base.row("baseline", &args.rate.to_string()));
            let mut real = open_loop(
                &client,
                args.rate,
                requests.clone(),
                |p| p,
                args.open_duration,
            )
            .await;
            println!("{}", real.row("dbward", &args.rate.to_string()));
        }
    });

    let _ = stop.send(true);
    let _ = server_runtime.block_on(server);
}
