//! The Nubis node agent library: everything `nubis-agent` does, in layers.
//!
//! - [`config`]: the TOML configuration.
//! - [`types`]: typed ids and the instance spec (validated outside input).
//! - [`runtime`]: the lifecycle state machine and typed state reasons.
//! - [`host`]: disks, TAPs, cgroups, the VMM process and its API.
//! - [`layout`]: the state directory (per-instance files, IP allocation).
//! - [`context`]: host-wide resources shared by the instance tasks.
//! - [`launch`]: idempotent set-up and tear-down of an instance's resources.
//! - [`timeline`]: where a launch's time goes (logged per boot).
//! - [`instance`]: one task per instance, owning its state.
//! - [`reconcile`]: desired state -> instance commands; adoption at start-up.
//! - [`metrics`]: per-instance sampling, rollups, the metrics listener.
//! - [`client`]: the Node API client (registration, heartbeats, watch).
//! - [`standalone`]: desired state from a local JSON file (operator/debug).

pub mod client;
pub mod config;
pub mod context;
pub mod error;
pub mod failover;
pub mod host;
pub mod instance;
pub mod launch;
pub mod layout;
pub mod metrics;
pub mod reconcile;
pub mod runtime;
pub mod standalone;
pub mod timeline;
pub mod types;

pub use error::{Error, Result};
