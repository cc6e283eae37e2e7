//! The Nubis control plane: a stateless replica over etcd.
//!
//! Layers (each module says what it owns): [`api`] (thin gRPC handlers) ->
//! [`domain`] (validation, authorization, state machines) -> [`scheduler`]
//! (placement) -> [`store`] (etcd key schema and compare-and-swap
//! transactions). [`tasks`] is the background-task registry (leader-only
//! tasks under an etcd election). The EC2 Query gateway in [`ec2`] is a second edge over the same
//! domain layer. [`server`] wires everything for the binary and for tests;
//! [`sim`] is a simulated node agent speaking the Node API. [`ratelimit`]
//! holds the per-account token buckets both edges share; [`tls`] reads
//! server certificates; [`connlimit`] counts open connections for the TCP
//! listeners ([`grpc_listener`] is the gRPC one's accept side).

pub mod api;
pub mod cloudwatch;
pub mod config;
pub mod connlimit;
pub mod domain;
pub mod ec2;
pub mod error;
pub mod grpc_listener;
pub mod ids;
pub mod metrics;
pub mod ratelimit;
pub mod scheduler;
pub mod server;
pub mod sim;
pub mod store;
pub mod tasks;
pub mod tls;

pub use error::{Error, Result};
