//! virtio-net (virtio id 1) backed by a host TAP device: queue 0 receives (TAP -> guest),
//! queue 1 transmits (guest -> TAP). The only device feature is `VIRTIO_NET_F_MAC`; frames
//! carry the 12-byte virtio 1.x `virtio_net_hdr` on both sides, which the TAP (opened with
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, header size 12, no offloads) speaks natively.
//!
//! With instance metadata configured, frames for 169.254.169.254 /
//! fd00:ec2::254 never reach the TAP: the `imds` module answers them from
//! inside the VMM (docs/imds.md).
//!
//! The VMM never creates network interfaces: a TAP that does not exist is
//! [`Error::TapNotFound`](super::Error::TapNotFound) (exit status 6).

mod device;
mod imds;
mod tap;

pub use device::Net;
pub use imds::{MetadataHandle, MetadataPort};
pub use tap::Tap;

/// Size of `struct virtio_net_hdr_v1` (with `num_buffers`), the header every frame carries.
pub const VNET_HDR_LEN: usize = 12;
/// Largest Ethernet frame accepted (64 KiB IP packet plus Ethernet and VLAN headers).
pub const MAX_FRAME_LEN: usize = 65_550;
/// Smallest frame worth passing on: an Ethernet header.
pub const MIN_FRAME_LEN: usize = 14;
