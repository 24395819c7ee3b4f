//! The `dbward` command line: argument structs per concern, each a few lines of wiring.

pub mod controller;
pub mod crds;
pub mod reconcile;
pub mod run;
pub mod validate;
pub mod webhook;

/// The processes' logging: `RUST_LOG` (default `info`) to stdout, colours only on a terminal.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
}
