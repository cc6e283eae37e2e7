//! `nubis`: the tenant and operator command line.

use clap::Parser;

/// Nubis command line: manage instances, images, key pairs and tags; operate
/// accounts and nodes.
#[derive(Debug, Parser)]
#[command(name = "nubis", version)]
struct Args {
    /// Named profile from ~/.config/nubis/config.toml.
    #[arg(long, env = "NUBIS_PROFILE", default_value = "default")]
    profile: String,
}

fn main() {
    let _args = Args::parse();
    eprintln!("nubis: not implemented yet");
    std::process::exit(2);
}
