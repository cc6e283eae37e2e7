//! The command-line grammar (clap derive): global options and every
//! subcommand. Parsing only; behaviour lives in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Flags;
use crate::output::Format;

mod autoscaling;
pub use autoscaling::{
    AutoscalingCmd, CreateGroupArgs, GroupWaitArgs, PolicyKind, PutPolicyArgs, UpdateGroupArgs,
};

const ENV_HELP: &str = "\
Environment:
  NUBIS_PROFILE, NUBIS_CONFIG, NUBIS_ENDPOINT, NUBIS_REGION,
  NUBIS_ACCESS_KEY_ID, NUBIS_SECRET_ACCESS_KEY override the profile file
  (~/.config/nubis/config.toml); flags override the environment.

Exit status:
  0 ok, 1 internal error, 2 usage, 3 configuration, 4 control plane unreachable,
  5 authentication/authorization, 6 not found, 7 invalid request or state,
  8 insufficient capacity, 9 wait failed or timed out, 10 already exists.";

/// Nubis command line: run and manage microVM instances, images, key pairs and
/// tags; operate accounts and nodes.
#[derive(Debug, Parser)]
#[command(name = "nubis", version, after_help = ENV_HELP, propagate_version = true)]
pub struct Cli {
    /// Global options.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Profile in the config file [env: NUBIS_PROFILE] [default: default].
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Config file [env: NUBIS_CONFIG] [default: ~/.config/nubis/config.toml].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Control-plane gRPC endpoint, e.g. http://127.0.0.1:50051 [env: NUBIS_ENDPOINT].
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Region [env: NUBIS_REGION].
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// Access key id [env: NUBIS_ACCESS_KEY_ID].
    #[arg(long, global = true, value_name = "KEY")]
    pub access_key_id: Option<String>,
    /// Secret access key [env: NUBIS_SECRET_ACCESS_KEY].
    #[arg(long, global = true, value_name = "SECRET", hide_env_values = true)]
    pub secret_access_key: Option<String>,
    /// CA certificate (PEM) for an https:// endpoint [env: NUBIS_CA_FILE]
    /// [default: the system's trust store].
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<String>,
    /// Output format of read commands.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

impl GlobalArgs {
    /// The settings-relevant flags.
    pub fn flags(&self) -> Flags {
        Flags {
            config: self.config.clone(),
            profile: self.profile.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            ca_file: self.ca_file.clone(),
        }
    }
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save endpoint, region and credentials into a profile (the global
    /// --endpoint/--region/--access-key-id/--secret-access-key flags give the
    /// values; missing ones are asked for on a terminal).
    Configure(ConfigureArgs),
    /// Instances: run, list, describe, start, stop, reboot, terminate, console, wait.
    #[command(subcommand, visible_alias = "instance")]
    Instances(InstancesCmd),
    /// Availability zones.
    #[command(subcommand, visible_alias = "zone")]
    Zones(ListOnly),
    /// Instance types.
    #[command(subcommand, visible_alias = "type")]
    Types(ListOnly),
    /// Machine images.
    #[command(subcommand, visible_alias = "image")]
    Images(ImagesCmd),
    /// Key pairs.
    #[command(subcommand, visible_alias = "key")]
    Keys(KeysCmd),
    /// Tags on instances, images and key pairs.
    #[command(subcommand, visible_alias = "tag")]
    Tags(TagsCmd),
    /// VPCs (yours and the default one).
    #[command(subcommand, visible_alias = "vpc")]
    Vpcs(crate::commands::vpcs::VpcsCmd),
    /// Subnets of your VPCs.
    #[command(subcommand, visible_alias = "subnet")]
    Subnets(crate::commands::vpcs::SubnetsCmd),
    /// Security groups and their rules.
    #[command(subcommand, visible_alias = "sg")]
    SecurityGroups(crate::commands::vpcs::SecurityGroupsCmd),
    /// Elastic IPs: public addresses you allocate and associate.
    #[command(subcommand, visible_alias = "address")]
    Addresses(crate::commands::vpc_public::AddressesCmd),
    /// Internet gateways of your VPCs.
    #[command(subcommand, visible_alias = "internet-gateway")]
    InternetGateways(crate::commands::vpc_public::InternetGatewaysCmd),
    /// Route tables of your VPCs.
    #[command(subcommand, visible_alias = "route-table")]
    RouteTables(crate::commands::vpc_public::RouteTablesCmd),
    /// Elastic network interfaces (and instances' primary interfaces).
    #[command(subcommand, visible_alias = "network-interface")]
    NetworkInterfaces(crate::commands::vpc_enis::NetworkInterfacesCmd),
    /// Lifecycle events of instances (created, state changes, terminated).
    #[command(subcommand, visible_alias = "event")]
    Events(EventsCmd),
    /// Usage by the second and monthly invoices (your account; the operator:
    /// any account or all).
    #[command(subcommand)]
    Billing(BillingCmd),
    /// Auto Scaling groups, their launch templates, policies and scheduled
    /// actions.
    #[command(subcommand, visible_alias = "asg")]
    Autoscaling(AutoscalingCmd),
    /// Operator commands (need the operator credential).
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Print a shell completion script, e.g. `nubis completions bash > /etc/bash_completion.d/nubis`.
    Completions {
        /// Shell to generate for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `nubis configure`.
#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// Subcommand (without one: write the profile).
    #[command(subcommand)]
    pub action: Option<ConfigureAction>,
}

/// `nubis configure <action>`.
#[derive(Debug, Subcommand)]
pub enum ConfigureAction {
    /// Show the effective settings and where each comes from.
    List,
    /// Delete the profile named by --profile from the config file.
    Delete,
}

/// Nouns that can only be listed.
#[derive(Debug, Subcommand)]
pub enum ListOnly {
    /// List them.
    #[command(visible_alias = "ls")]
    List,
}

/// A state `wait` can wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WaitState {
    /// State `running` (the VMM runs; the guest may still be booting).
    Running,
    /// Running and the guest printed its ready line (instance status ok).
    Ready,
    /// State `stopped`.
    Stopped,
    /// State `terminated`.
    Terminated,
}

/// How long to wait, e.g. `90`, `90s`, `5m`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, mult) = match s.strip_suffix('m') {
        Some(n) => (n, 60),
        None => (s.strip_suffix('s').unwrap_or(s), 1),
    };
    match num.parse::<u64>() {
        Ok(n) if n > 0 && n <= 86_400 => Ok(std::time::Duration::from_secs(n * mult)),
        _ => Err(format!(
            "{s:?} is not a duration between 1s and 24h (examples: 90, 90s, 5m)"
        )),
    }
}

/// A polling interval, e.g. `200ms`, `1s`, `50` (milliseconds).
fn parse_poll(s: &str) -> Result<std::time::Duration, String> {
    let ms = if let Some(n) = s.strip_suffix("ms") {
        n.parse::<u64>().ok()
    } else if let Some(n) = s.strip_suffix('s') {
        n.parse::<u64>().ok().and_then(|v| v.checked_mul(1000))
    } else {
        s.parse::<u64>().ok()
    };
    match ms {
        Some(ms) if (5..=10_000).contains(&ms) => Ok(std::time::Duration::from_millis(ms)),
        _ => Err(format!(
            "{s:?} is not a polling interval between 5ms and 10s (examples: 200ms, 1s)"
        )),
    }
}

/// `--wait` options shared by mutating instance commands.
#[derive(Debug, Args, Clone)]
pub struct WaitArgs {
    /// Wait until the instances reach their target state, showing progress.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (with --wait).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// How often to poll the control plane while waiting (one small RPC per
    /// poll).
    #[arg(long, value_name = "INTERVAL", default_value = "50ms", value_parser = parse_poll)]
    pub poll_interval: std::time::Duration,
}

/// `nubis instances ...`.
#[derive(Debug, Subcommand)]
pub enum InstancesCmd {
    /// Launch instances.
    Run(Box<RunArgs>),
    /// List instances (optionally filtered).
    #[command(visible_alias = "ls")]
    List(ListInstancesArgs),
    /// Show instances by id.
    Describe {
        /// Instance ids.
        #[arg(required = true, value_name = "INSTANCE_ID", value_parser = instance_id)]
        ids: Vec<String>,
    },
    /// Start stopped instances.
    Start {
        /// Instance ids.
        #[arg(required = true, value_name = "INSTANCE_ID", value_parser = instance_id)]
        ids: Vec<String>,
        /// Wait options.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Stop running instances (their disks are kept).
    Stop {
        /// Instance ids.
        #[arg(required = true, value_name = "INSTANCE_ID", value_parser = instance_id)]
        ids: Vec<String>,
        /// Stop without a graceful guest shutdown.
        #[arg(long)]
        force: bool,
        /// Wait options.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Change an instance's metadata service options (applied to a running
    /// instance at once).
    ModifyMetadataOptions {
        /// Instance id.
        #[arg(value_name = "INSTANCE_ID", value_parser = instance_id)]
        id: String,
        /// The options to change.
        #[command(flatten)]
        metadata: MetadataOptionsArgs,
    },
    /// Reboot running instances.
    Reboot {
        /// Instance ids.
        #[arg(required = true, value_name = "INSTANCE_ID", value_parser = instance_id)]
        ids: Vec<String>,
    },
    /// Terminate instances (disks are deleted).
    Terminate {
        /// Instance ids.
        #[arg(required = true, value_name = "INSTANCE_ID", value_parser = instance_id)]
        ids: Vec<String>,
        /// Wait options.
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Print an instance's serial console output.
    Console {
        /// Instance id.
        #[arg(value_name = "INSTANCE_ID", value_parser = instance_id)]
        id: String,
        /// Ask the host for fresh output instead of the last stored copy.
        #[arg(long)]
        latest: bool,
    },
    /// Wait until instances reach a state.
    Wait {
        /// Instance ids.
        #[arg(required = true, value_name = "INSTANCE_ID", value_parser = instance_id)]
        ids: Vec<String>,
        /// The state to wait for.
        #[arg(long, value_enum, default_value_t = WaitState::Ready)]
        state: WaitState,
        /// Give up after this long.
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
        timeout: std::time::Duration,
        /// How often to poll the control plane (one small RPC per poll).
        #[arg(long, value_name = "INTERVAL", default_value = "50ms", value_parser = parse_poll)]
        poll_interval: std::time::Duration,
    },
}

/// Validates an instance id (`i-` + hex).
pub fn instance_id(s: &str) -> Result<String, String> {
    prefixed_id(s, "i-", "instance")
}

/// Validates an image id (`ami-` + hex).
pub fn image_id(s: &str) -> Result<String, String> {
    prefixed_id(s, "ami-", "image")
}

fn prefixed_id(s: &str, prefix: &str, what: &str) -> Result<String, String> {
    match s.strip_prefix(prefix) {
        Some(rest)
            if !rest.is_empty()
                && rest.len() <= 32
                && rest.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "{s:?} is not an {what} id (expected {prefix} followed by hex digits, e.g. {prefix}0123456789abcdef0)"
        )),
    }
}

/// A `KEY=VALUE` tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagArg {
    /// Key.
    pub key: String,
    /// Value (may be empty).
    pub value: String,
}

/// Parses `KEY=VALUE` (EC2 limits: key 1..=128 chars, value <= 256, no
/// `aws:` prefix).
pub fn tag_arg(s: &str) -> Result<TagArg, String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE (use KEY= for an empty value)"))?;
    tag_key(key)?;
    if value.chars().count() > 256 {
        return Err(format!(
            "tag value of {key:?} is longer than 256 characters"
        ));
    }
    Ok(TagArg {
        key: key.to_string(),
        value: value.to_string(),
    })
}

/// Validates a tag key.
pub fn tag_key(key: &str) -> Result<String, String> {
    if key.is_empty() || key.chars().count() > 128 {
        return Err(format!("tag key {key:?} must be 1 to 128 characters"));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(format!("tag key {key:?} uses the reserved prefix aws:"));
    }
    Ok(key.to_string())
}

/// Parses a zone-style name (lowercase letters, digits, dashes).
fn zone_name(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not an availability zone name (e.g. nubis-local-1a)"
        ))
    }
}

/// `nubis instances run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Image id (ami-...) or registered image name (e.g. hello).
    #[arg(long, short = 'i')]
    pub image: String,
    /// Instance type (see `nubis types list`).
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    pub instance_type: String,
    /// How many instances to launch (all or nothing).
    #[arg(long, short = 'n', default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,
    /// Availability zone; without it instances are spread over the zones.
    #[arg(long, visible_alias = "az", value_parser = zone_name)]
    pub zone: Option<String>,
    /// Tag for every instance, KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag_arg)]
    pub tags: Vec<TagArg>,
    /// File whose contents become the instances' user data (at most 16 KiB).
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// Key pair name.
    #[arg(long)]
    pub key_name: Option<String>,
    /// Idempotency token: retrying with the same token returns the same
    /// instances [default: a fresh random token per invocation].
    #[arg(long)]
    pub client_token: Option<String>,
    /// Root disk size in GiB (at least the image's; default: the image's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16384))]
    pub root_volume_gib: Option<u32>,
    /// Subnet (subnet-...); default: the default subnet of the zone the
    /// instance lands in.
    #[arg(long, value_name = "SUBNET_ID")]
    pub subnet: Option<String>,
    /// Security group (sg-..., repeatable, at most 16); default: the VPC's
    /// default group.
    #[arg(long = "security-group", value_name = "SG_ID")]
    pub security_groups: Vec<String>,
    /// Instance metadata service options.
    #[command(flatten)]
    pub metadata: MetadataOptionsArgs,
    /// Wait options (--wait waits until every instance is ready).
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Instance metadata service options (docs/imds.md); unset ones keep the
/// current value (EC2's defaults at launch).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MetadataOptionsArgs {
    /// IMDSv2 session tokens: `required` refuses requests without one.
    #[arg(long, value_parser = ["optional", "required"])]
    pub http_tokens: Option<String>,
    /// IP TTL of the metadata service's packets (1-64).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub http_put_response_hop_limit: Option<u32>,
    /// Whether the metadata service answers at all.
    #[arg(long, value_parser = ["enabled", "disabled"])]
    pub http_endpoint: Option<String>,
    /// Whether it also answers at fd00:ec2::254.
    #[arg(long, value_parser = ["enabled", "disabled"])]
    pub http_protocol_ipv6: Option<String>,
    /// Whether instance tags are served under meta-data/tags/instance/.
    #[arg(long, value_parser = ["enabled", "disabled"])]
    pub instance_metadata_tags: Option<String>,
}

/// `nubis instances list`.
#[derive(Debug, Args)]
pub struct ListInstancesArgs {
    /// Only instances in this state (repeatable).
    #[arg(long, value_name = "STATE", value_parser = ["pending", "running", "shutting-down",
          "terminated", "stopping", "stopped"])]
    pub state: Vec<String>,
    /// Only instances in this zone.
    #[arg(long, visible_alias = "az", value_parser = zone_name)]
    pub zone: Option<String>,
    /// Only instances with this tag, KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag_arg)]
    pub tags: Vec<TagArg>,
    /// Raw EC2 filter NAME=V1,V2 (repeatable), e.g. instance-type=t3.nano.
    #[arg(long = "filter", value_name = "NAME=VALUES")]
    pub filters: Vec<String>,
}

/// `nubis images ...`.
#[derive(Debug, Subcommand)]
pub enum ImagesCmd {
    /// List images visible to the account.
    #[command(visible_alias = "ls")]
    List,
    /// Register an image present on the hosts (by its directory name).
    Register {
        /// Image name.
        #[arg(long)]
        name: String,
        /// Name of the image directory on the hosts (default: the name).
        #[arg(long)]
        location: Option<String>,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
        /// Require hosts to have exactly this manifest (sha256 hex), or the
        /// path of a manifest.json to hash.
        #[arg(long, value_name = "SHA256|FILE")]
        manifest: Option<String>,
        /// Smallest memory (MiB) an instance of the image needs.
        #[arg(long, default_value_t = 0)]
        min_memory_mib: u32,
        /// Size of the image's root disk in GiB: the smallest root volume
        /// its instances may ask for (default: the manifest FILE's disk,
        /// rounded up; none when not known).
        #[arg(long)]
        root_volume_gib: Option<u32>,
        /// Visible to every account (operator only).
        #[arg(long)]
        public: bool,
    },
    /// Deregister an image.
    Deregister {
        /// Image id.
        #[arg(value_parser = image_id)]
        image_id: String,
    },
}

/// `nubis keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Create a key pair; prints the private key once (or writes it to --out).
    Create {
        /// Key name.
        name: String,
        /// Key type.
        #[arg(long, value_parser = ["ed25519", "rsa"], default_value = "ed25519")]
        key_type: String,
        /// Write the private key to this file (mode 0600) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Import an RSA or ed25519 public key (OpenSSH line or RFC 4716).
    Import {
        /// Key name.
        name: String,
        /// Public key file (e.g. ~/.ssh/id_ed25519.pub).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
    },
    /// List key pairs.
    #[command(visible_alias = "ls")]
    List,
    /// Delete a key pair.
    Delete {
        /// Key name.
        name: String,
    },
}

/// `nubis events ...`.
#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// List the events of a time range, oldest first (every page).
    #[command(visible_alias = "ls")]
    List {
        /// Start (inclusive): RFC 3339 UTC (`2026-12-01T00:00:00Z`, or a
        /// date `2026-12-01`), `now`, ms since the epoch, or an age such as
        /// `-24h`, `-30m`, `-7d`.
        #[arg(long, default_value = "-24h", allow_hyphen_values = true, value_parser = crate::commands::events::parse_time)]
        from: i64,
        /// End (exclusive), same forms as --from.
        #[arg(long, default_value = "now", allow_hyphen_values = true, value_parser = crate::commands::events::parse_time)]
        to: i64,
        /// Another account's events (operator only).
        #[arg(long)]
        account: Option<String>,
    },
}

/// Whose usage a billing command reads.
#[derive(Debug, Clone, clap::Args)]
pub struct BillingScope {
    /// Another account (operator only).
    #[arg(long, conflicts_with = "all_accounts")]
    pub account: Option<String>,
    /// Every account (operator only).
    #[arg(long)]
    pub all_accounts: bool,
}

/// `nubis billing ...`.
#[derive(Debug, Subcommand)]
pub enum BillingCmd {
    /// Billed usage (running seconds, 60 s minimum per start) and its cost.
    Usage {
        /// Start (inclusive), same forms as `nubis events list --from`.
        #[arg(long, default_value = "-24h", allow_hyphen_values = true, value_parser = crate::commands::events::parse_time)]
        from: i64,
        /// End (exclusive); without it, all usage billed so far.
        #[arg(long, allow_hyphen_values = true, value_parser = crate::commands::events::parse_time)]
        to: Option<i64>,
        /// One line per instance, instance type or zone.
        #[arg(long, value_enum, default_value = "instance")]
        group_by: GroupBy,
        #[command(flatten)]
        scope: BillingScope,
    },
    /// A calendar month's invoice (UTC), one line per instance type.
    Invoice {
        /// The month, YYYY-MM.
        #[arg(long)]
        month: String,
        #[command(flatten)]
        scope: BillingScope,
    },
}

/// `--group-by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// Per instance.
    Instance,
    /// Per instance type.
    Type,
    /// Per availability zone.
    Zone,
}

/// `nubis tags ...`.
#[derive(Debug, Subcommand)]
pub enum TagsCmd {
    /// Add or overwrite tags on resources.
    Add {
        /// Resource ids (i-, ami-, key-).
        #[arg(required = true)]
        resources: Vec<String>,
        /// Tag KEY=VALUE (repeatable, at least one).
        #[arg(long = "tag", required = true, value_name = "KEY=VALUE", value_parser = tag_arg)]
        tags: Vec<TagArg>,
    },
    /// Remove tags (by key) from resources.
    Remove {
        /// Resource ids.
        #[arg(required = true)]
        resources: Vec<String>,
        /// Tag key to remove (repeatable; without any, all tags are removed).
        #[arg(long = "key", value_name = "KEY", value_parser = tag_key)]
        keys: Vec<String>,
    },
    /// List tags.
    #[command(visible_alias = "ls")]
    List {
        /// Only tags of this resource (repeatable).
        #[arg(long = "resource", value_name = "ID")]
        resources: Vec<String>,
    },
}

/// `nubis admin ...`.
#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Tenant accounts.
    #[command(subcommand)]
    Accounts(AccountsCmd),
    /// Hosts running nubis-agent.
    #[command(subcommand)]
    Nodes(NodesCmd),
    /// Background tasks of the answering replica, and which replica leads.
    Tasks,
    /// The instance-type catalogue.
    #[command(subcommand)]
    InstanceTypes(InstanceTypesCmd),
    /// Per-account quotas (running-instances, vcpus, images, key-pairs).
    #[command(subcommand)]
    Quotas(QuotasCmd),
}

/// `nubis admin quotas ...`.
#[derive(Debug, Subcommand)]
pub enum QuotasCmd {
    /// One account's quotas: limit, default and usage.
    Get {
        /// Account id (12 digits).
        account_id: String,
    },
    /// Set one quota of an account (`--reset`: back to the default).
    Set {
        /// Account id (12 digits).
        account_id: String,
        /// running-instances | vcpus | images | key-pairs.
        name: String,
        /// The new limit.
        #[arg(required_unless_present = "reset", conflicts_with = "reset")]
        limit: Option<u64>,
        /// Use the configured default again.
        #[arg(long)]
        reset: bool,
    },
    /// Every account's quotas.
    #[command(visible_alias = "ls")]
    List,
}

/// `nubis admin instance-types ...`.
#[derive(Debug, Subcommand)]
pub enum InstanceTypesCmd {
    /// List every type (family, then size).
    #[command(visible_alias = "ls")]
    List,
    /// Create or replace a type (launched instances keep their size).
    Put {
        /// Name, `<family>.<size>` (e.g. `x1.large`).
        name: String,
        /// vCPUs.
        #[arg(long)]
        vcpus: u32,
        /// Memory in MiB.
        #[arg(long = "memory-mib")]
        memory_mib: u32,
        /// Device rate limits of its instances (none of these: the type has
        /// none, and the agents' `[limits]` apply).
        #[command(flatten)]
        limits: TypeLimitsArgs,
    },
    /// Delete a type (refused while instances of it are not terminated).
    #[command(visible_alias = "rm")]
    Delete {
        /// Name.
        name: String,
    },
}

/// `nubis admin instance-types put` limits, per instance; an omitted one
/// is unlimited once any is given.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct TypeLimitsArgs {
    /// Disk bytes per second (read + written).
    #[arg(long = "disk-bps")]
    pub disk_bps: Option<u64>,
    /// Disk operations per second.
    #[arg(long = "disk-iops")]
    pub disk_iops: Option<u64>,
    /// Network bytes per second the guest sends.
    #[arg(long = "net-tx-bps")]
    pub net_tx_bps: Option<u64>,
    /// Network frames per second the guest sends.
    #[arg(long = "net-tx-pps")]
    pub net_tx_pps: Option<u64>,
    /// Network bytes per second into the guest.
    #[arg(long = "net-rx-bps")]
    pub net_rx_bps: Option<u64>,
    /// Network frames per second into the guest.
    #[arg(long = "net-rx-pps")]
    pub net_rx_pps: Option<u64>,
}

/// `nubis admin accounts ...`.
#[derive(Debug, Subcommand)]
pub enum AccountsCmd {
    /// Create an account; prints its access key and secret (shown only once).
    Create {
        /// Account name.
        name: String,
    },
    /// List accounts.
    #[command(visible_alias = "ls")]
    List,
    /// Refuse every key of an account (its instances keep running).
    Disable {
        /// Account id (12 digits).
        account_id: String,
    },
    /// Accept an account's keys again.
    Enable {
        /// Account id (12 digits).
        account_id: String,
    },
    /// Remove a disabled account without instances, and its keys.
    Delete {
        /// Account id (12 digits).
        account_id: String,
    },
    /// An account's access keys: rotation and revocation.
    #[command(subcommand)]
    Keys(AccessKeysCmd),
}

/// `nubis admin accounts keys ...`.
#[derive(Debug, Subcommand)]
pub enum AccessKeysCmd {
    /// A second key for an account (at most two); prints its secret once.
    Create {
        /// Account id (12 digits).
        account_id: String,
    },
    /// An account's key ids (never secrets).
    #[command(visible_alias = "ls")]
    List {
        /// Account id (12 digits).
        account_id: String,
    },
    /// Revoke a key: refused by every replica from then on.
    Delete {
        /// Access key id.
        access_key_id: String,
    },
}

/// `nubis admin nodes ...`.
#[derive(Debug, Subcommand)]
pub enum NodesCmd {
    /// List nodes with capacity and state.
    #[command(visible_alias = "ls")]
    List {
        /// Only nodes of this zone.
        #[arg(long, visible_alias = "az", value_parser = zone_name)]
        zone: Option<String>,
    },
    /// Stop placing new instances on a node.
    Cordon {
        /// Node id.
        node_id: String,
    },
    /// Allow placements on a node again.
    Uncordon {
        /// Node id.
        node_id: String,
    },
    /// Cordon a node and stop its instances (start them again elsewhere).
    Drain {
        /// Node id.
        node_id: String,
        /// Stop without graceful guest shutdown.
        #[arg(long)]
        force: bool,
    },
    /// Confirm that a node whose lease expired is really gone: its instances
    /// are stopped even during a disruption (too many nodes lost at once).
    ConfirmLost {
        /// Node id.
        node_id: String,
    },
    /// Create a one-time enrolment token for one host; prints `ID:SECRET`
    /// (the secret is shown only once) for the agent's `[enrolment]`.
    Enrol {
        /// The host id the token may register (the agent's
        /// `<state_dir>/host-id`).
        #[arg(long)]
        host_id: String,
        /// The only zone the host may register in.
        #[arg(long, visible_alias = "az", value_parser = zone_name)]
        zone: Option<String>,
        /// Token lifetime in seconds (default: the control plane's
        /// `[nodes] enrolment_token_ttl_seconds`).
        #[arg(long)]
        ttl_seconds: Option<u32>,
    },
    /// Release a node held for approval (`[nodes] require_approval`).
    Approve {
        /// Node id.
        node_id: String,
    },
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
