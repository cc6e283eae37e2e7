//! Command implementations, one module per noun. Each turns parsed arguments
//! into API calls and renders the answer with `output`.

pub mod accounts;
pub mod admin;
pub mod autoscaling;
pub mod billing;
pub mod configure;
pub mod events;
pub mod images;
pub mod instance_types;
pub mod instances;
pub mod keys;
pub mod tags;
pub mod tasks;
pub mod vpc_enis;
pub mod vpc_public;
pub mod vpcs;
pub mod wait;
pub mod zones;

use std::collections::BTreeMap;

use nubis_proto::compute::v1 as pb;

use crate::cli::{Cli, Command, TagArg};
use crate::client::Client;
use crate::config::{self, Settings};
use crate::error::CliError;
use crate::output::Format;

/// What every command gets: resolved settings and the output format.
#[derive(Debug)]
pub struct Ctx {
    /// Resolved settings.
    pub settings: Settings,
    /// `--output`.
    pub format: Format,
}

impl Ctx {
    /// Connects to the control plane.
    pub async fn client(&self) -> Result<Client, CliError> {
        Client::connect(&self.settings).await
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let env = |k: &str| std::env::var(k).ok();
    let flags = cli.global.flags();
    match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            let mut out = std::io::stdout();
            clap_complete::generate(shell, &mut cmd, "nubis", &mut out);
            Ok(())
        }
        Command::Configure(args) => configure::run(args, &flags, &env, cli.global.output),
        command => {
            let settings = config::resolve(&flags, &env)?;
            let ctx = Ctx {
                settings,
                format: cli.global.output,
            };
            match command {
                Command::Instances(c) => instances::run(&ctx, c).await,
                Command::Zones(_) => zones::zones(&ctx).await,
                Command::Types(_) => zones::types(&ctx).await,
                Command::Images(c) => images::run(&ctx, c).await,
                Command::Keys(c) => keys::run(&ctx, c).await,
                Command::Tags(c) => tags::run(&ctx, c).await,
                Command::Events(c) => events::run(&ctx, c).await,
                Command::Vpcs(c) => vpcs::vpcs(&ctx, c).await,
                Command::Subnets(c) => vpcs::subnets(&ctx, c).await,
                Command::SecurityGroups(c) => vpcs::security_groups(&ctx, c).await,
                Command::Addresses(c) => vpc_public::addresses(&ctx, c).await,
                Command::InternetGateways(c) => vpc_public::internet_gateways(&ctx, c).await,
                Command::RouteTables(c) => vpc_public::route_tables(&ctx, c).await,
                Command::NetworkInterfaces(c) => vpc_enis::network_interfaces(&ctx, c).await,
                Command::Billing(c) => billing::run(&ctx, c).await,
                Command::Autoscaling(c) => autoscaling::run(&ctx, c).await,
                Command::Admin(c) => admin::run(&ctx, c).await,
                Command::Completions { .. } | Command::Configure(_) => Ok(()),
            }
        }
    }
}

/// Tags as protobuf messages.
pub fn pb_tags(tags: &[TagArg]) -> Vec<pb::Tag> {
    tags.iter()
        .map(|t| pb::Tag {
            key: t.key.clone(),
            value: t.value.clone(),
        })
        .collect()
}

/// Tags as a sorted map (the JSON shape of `tags` fields).
pub fn tag_map(tags: &[pb::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect()
}

/// A filter with one value.
pub fn filter(name: &str, values: &[&str]) -> pb::Filter {
    pb::Filter {
        name: name.to_string(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

/// Reads a local file the user named, mapping errors to a clear message.
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}
