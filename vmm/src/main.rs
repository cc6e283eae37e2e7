//! `nubis-vmm`: runs one KVM microVM per process. See `docs/vmm.md`.

use clap::Parser;
use nubis_vmm::config::Cli;

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

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version exit 0; usage errors exit 2.
        Err(e) => e.exit(),
    };
    nubis_vmm::logger::StderrLogger::init_from_env("NUBIS_VMM_LOG");
    let code = match cli.into_config().and_then(nubis_vmm::run) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nubis-vmm: error: {}", report(&e));
            e.exit_code()
        }
    };
    std::process::exit(code);
}
