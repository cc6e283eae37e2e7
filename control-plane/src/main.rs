//! `nubis-control-plane`: the Compute API, EC2 gateway, scheduler and reconcilers.

use clap::Parser;

/// The Nubis control plane. Stateless replica over etcd: serves the Compute
/// gRPC API and the EC2 Query gateway, schedules instances onto node agents.
#[derive(Debug, Parser)]
#[command(name = "nubis-control-plane", version)]
struct Args {
    /// Path to the TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
}

fn main() {
    let _args = Args::parse();
    eprintln!("nubis-control-plane: not implemented yet");
    std::process::exit(2);
}
