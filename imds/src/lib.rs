//! Instance metadata service (IMDSv1/IMDSv2) for one instance.
//!
//! This crate owns everything a guest can see at `169.254.169.254` and
//! `fd00:ec2::254`: the metadata document of one instance
//! ([`InstanceMetadata`]), its access options ([`MetadataOptions`]), the HTTP
//! layer ([`handle_http`], a pure function over one parsed request) with the
//! IMDSv2 session tokens ([`TokenStore`]), and the frame-level [`Responder`]
//! that a VMM puts on its virtio-net transmit path: it answers ARP and
//! neighbour solicitations for the metadata address and runs a small TCP/IP
//! stack (smoltcp) whose packets go back into the guest only. It holds the
//! data of one instance, so a guest can only ever read its own (see
//! docs/imds.md).
//!
//! Nothing a guest sends is trusted: requests are bounded (16 KiB), slow
//! requests time out, and the token store is bounded.

mod http;
mod metadata;
mod responder;

pub use http::{handle_http, parse_request, ParseError, Request, Response, TokenStore};
pub use metadata::{
    HttpTokens, ImdsConfig, InstanceMetadata, InterfaceMetadata, MetadataOptions, PublicKey,
};
pub use responder::{Responder, METADATA_IPV4, METADATA_IPV6, RESPONDER_MAC};
