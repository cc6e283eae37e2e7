//! `nubis-agent`: the per-host node agent.

use clap::Parser;

/// The Nubis node agent: registers this host with the control plane and runs
/// one `nubis-vmm` process per instance placed here.
#[derive(Debug, Parser)]
#[command(name = "nubis-agent", version)]
struct Args {
    /// Path to the TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
}

fn main() {
    let _args = Args::parse();
    eprintln!("nubis-agent: not implemented yet");
    std::process::exit(2);
}
