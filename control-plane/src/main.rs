//! `nubis-control-plane`: the Compute API, EC2 gateway, scheduler and reconcilers.

use anyhow::Context;
use clap::Parser;
use nubis_control_plane::config::Config;
use nubis_control_plane::server::Replica;

/// The Nubis control plane. A stateless replica over etcd: serves the Compute,
/// Admin and Node gRPC APIs (TCP and a Unix socket) and the EC2 Query gateway,
/// places instances on node agents, and (when elected) runs the node-loss and
/// garbage-collection loops. Several replicas may share one etcd.
///
/// Configuration is a TOML file (see docs/compute-api.md and
/// deploy/control-plane.example.toml).
#[derive(Debug, Parser)]
#[command(name = "nubis-control-plane", version)]
struct Args {
    /// Path to the TOML configuration file.
    #[arg(long, value_name = "FILE", env = "NUBIS_CP_CONFIG")]
    config: std::path::PathBuf,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init();
    }
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let cfg = Config::from_toml(&text).with_context(|| format!("in {}", args.config.display()))?;
    if args.check {
        println!("configuration OK");
        return Ok(());
    }
    let replica = Replica::start(cfg)
        .await
        .context("starting the control plane")?;
    tracing::info!(
        grpc = ?replica.grpc_addr,
        unix = ?replica.unix_socket,
        http = ?replica.http_addr,
        "control plane serving"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    replica.shutdown().await;
    Ok(())
}
