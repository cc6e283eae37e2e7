//! `nubis-vmm`: runs one KVM microVM per process. See `docs/vmm.md`.

use std::path::PathBuf;

use clap::Parser;
use nubis_vmm::config::Cli;
use nubis_vmm::exit_status;

fn report(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
        source = cause.source();
    }
    msg
}

/// Runs the VMM; returns the exit status and its reason in words.
fn run(cli: Cli, status_file: &mut Option<PathBuf>) -> (i32, String) {
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(e) => {
            let msg = report(&e);
            eprintln!("nubis-vmm: error: {msg}");
            return (e.exit_code(), msg);
        }
    };
    status_file.clone_from(&config.exit_status_file);
    // A panic on this thread is an internal error (status 1) that still
    // leaves its record; the panic message itself goes to stderr.
    let outcome = std::panic::catch_unwind(|| nubis_vmm::run(config));
    match outcome {
        Ok(Ok(reason)) => (reason.exit_code(), reason.describe()),
        Ok(Err(e)) => {
            let msg = report(&e);
            eprintln!("nubis-vmm: error: {msg}");
            (e.exit_code(), msg)
        }
        Err(_) => (1, "internal error: the VMM panicked".into()),
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version exit 0 (no record); usage errors exit 2.
            if e.use_stderr() {
                let msg = e.kind().to_string();
                if let Some(n) = exit_status::nonce_from_args(std::env::args_os().skip(1)) {
                    exit_status::set_nonce(&n);
                }
                let path = exit_status::path_from_args(std::env::args_os().skip(1));
                exit_status::record(path.as_deref(), e.exit_code(), &format!("usage: {msg}"));
            }
            e.exit()
        }
    };
    nubis_vmm::logger::StderrLogger::init_from_env("NUBIS_VMM_LOG");
    if let Some(n) = &cli.exit_status_nonce {
        exit_status::set_nonce(n);
    }
    let mut status_file = cli.exit_status_file();
    if let Some(path) = &status_file {
        if let Err(e) = exit_status::install_signal_handlers(path) {
            tracing::warn!(error = %e, "fatal signals will leave no exit-status record");
        }
    }
    let (code, reason) = run(cli, &mut status_file);
    exit_status::record(status_file.as_deref(), code, &reason);
    std::process::exit(code);
}
