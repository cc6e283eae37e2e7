//! Nubis' gRPC contracts, generated at build time from `proto/nubis/**.proto`,
//! plus the request signing and dialing code every client and server shares.
//!
//! - [`compute::v1`]: the tenant-facing Compute API (`nubis.compute.v1.Compute`)
//!   and the operator API (`nubis.compute.v1.Admin`).
//! - [`node::v1`]: the API between the control plane and node agents (`nubis.node.v1.Node`).
//! - [`auth`]: HMAC-SHA256 request signing (client interceptor + verifier).
//! - [`transport`]: connecting over TCP or a Unix socket (`unix:/path`).

#![allow(missing_debug_implementations)]

pub mod auth;
pub mod transport;

/// Tenant-facing API.
pub mod compute {
    /// Version 1.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("nubis.compute.v1");
    }
}

/// Auto Scaling groups, their policies and scheduled actions, launch templates.
pub mod autoscaling {
    /// Version 1.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("nubis.autoscaling.v1");
    }
}

/// Usage and invoices.
pub mod billing {
    /// Version 1.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("nubis.billing.v1");
    }
}

/// VPCs, subnets and security groups.
pub mod vpc {
    /// Version 1.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("nubis.vpc.v1");
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

/// The header carrying the EC2 error code (e.g. `InvalidInstanceID.NotFound`)
/// on every error status the control plane returns.
pub const ERROR_CODE_HEADER: &str = "x-nubis-error-code";
