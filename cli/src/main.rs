//! `nubis`: the tenant and operator command line.
//!
//! Parses the command line (`cli`), resolves the profile (`config`), runs the
//! command (`commands/`) over a signed gRPC connection (`client`), renders the
//! answer (`output`), and maps failures to the documented exit codes (`error`).

mod cli;
mod client;
mod commands;
mod config;
mod error;
mod output;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(error::EXIT_INTERNAL);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => std::process::exit(error::EXIT_OK),
        Err(e) => {
            let chain = anyhow::Error::from(e);
            eprintln!("error: {chain:#}");
            if let Some(cli_err) = chain.downcast_ref::<error::CliError>() {
                if let Some(hint) = cli_err.hint() {
                    eprintln!("hint: {hint}");
                }
                std::process::exit(cli_err.exit_code());
            }
            std::process::exit(error::EXIT_INTERNAL);
        }
    }
}
