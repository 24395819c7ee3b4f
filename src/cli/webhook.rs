//! `dbward webhook`, `dbward certs` and `dbward webhook-config`: wiring to
//! `crate::runtime::webhook`, `crate::certs` and `crate::webhook_config`.

use std::process::ExitCode;

use crate::certs::{self, CertsArgs};
use crate::runtime::webhook::{self, WebhookCommand};
use crate::webhook_config::{self, WebhookConfigArgs};

pub fn run_webhook(args: WebhookCommand) -> ExitCode {
    super::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(format_args!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(webhook::run_webhook(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

pub fn run_certs(args: CertsArgs) -> ExitCode {
    certs::run_certs(args).map_or_else(fail, |()| ExitCode::SUCCESS)
}

pub fn run_webhook_config(args: WebhookConfigArgs) -> ExitCode {
    webhook_config::run_webhook_config(args).map_or_else(fail, |()| ExitCode::SUCCESS)
}

fn fail(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(2)
}
