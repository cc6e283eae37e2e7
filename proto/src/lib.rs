//! Nubis' gRPC contracts, generated at build time from `proto/nubis/**.proto`.
//!
//! - [`compute::v1`]: the tenant-facing Compute API (`nubis.compute.v1.Compute`).
//! - [`node::v1`]: the API between the control plane and node agents (`nubis.node.v1.Node`).

#![allow(missing_debug_implementations)]

/// Tenant-facing API.
pub mod compute {
    /// Version 1.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("nubis.compute.v1");
    }
}

/// Control plane <-> node agent API.
pub mod node {
    /// Version 1.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("nubis.node.v1");
    }
}
