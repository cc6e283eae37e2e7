//! `nubis-agent`: the per-host node agent binary (argument parsing, logging,
//! signal handling; everything else lives in the library).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// The Nubis node agent: registers this host with the control plane (its
/// availability zone, capacity and images), heartbeats under an etcd-backed
/// lease, and runs one `nubis-vmm` process per instance placed here, with a
/// cloned root disk, a TAP device on the instance bridge, a cgroup v2 group
/// and a capped console log. VMMs outlive agent restarts: a restarted agent
/// re-adopts them.
///
/// Configuration is a TOML file (see docs/agent.md and
/// deploy/agent.example.toml). With `standalone = true` the agent reads its
/// desired state from <state_dir>/desired.json and writes
/// <state_dir>/status.json instead of talking to a control plane (for
/// operators and tests).
///
/// Log filter: NUBIS_LOG (or RUST_LOG), e.g. `info` or `nubis_agent=debug`.
#[derive(Debug, Parser)]
#[command(name = "nubis-agent", version)]
struct Args {
    /// Path to the TOML configuration file.
    #[arg(long, value_name = "FILE", env = "NUBIS_AGENT_CONFIG")]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Validate the configuration, print it and exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("NUBIS_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let sub = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for log files or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match args.log_format {
        LogFormat::Text => sub.init(),
        LogFormat::Json => sub.json().init(),
    }
    let config = nubis_agent::config::Config::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    if args.check_config {
        println!("{config:#?}");
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run(config))
}

async fn run(config: nubis_agent::config::Config) -> anyhow::Result<()> {
    let standalone = config.standalone;
    let (agent, changed) = nubis_agent::reconcile::Agent::start(config)
        .await
        .context("starting the agent")?;
    tracing::info!(host_id = agent.host_id(), standalone, "nubis-agent started");
    let work = async {
        if standalone {
            nubis_agent::standalone::run(agent.clone(), changed).await;
            Ok(())
        } else {
            nubis_agent::client::run(agent.clone(), changed).await
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        r = work => r.context("agent loop")?,
        _ = term.recv() => tracing::info!("SIGTERM: exiting; VMMs keep running"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: exiting; VMMs keep running"),
    }
    Ok(())
}
