//! The Nubis control plane: a stateless replica over etcd.
//!
//! Layers (each module says what it owns): `api` (thin gRPC handlers) ->
//! `domain` (validation, authorization, state machines, scheduling) ->
//! `store` (etcd key schema and compare-and-swap transactions). The EC2 Query
//! gateway in [`ec2`] is a second edge over the same domain layer.

pub mod ec2;
