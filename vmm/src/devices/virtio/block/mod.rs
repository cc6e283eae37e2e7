//! virtio-block (virtio id 2) backed by a raw image file: read, write, flush and get-id
//! requests, an optional read-only mode (`VIRTIO_BLK_F_RO`: writes fail with
//! `VIRTIO_BLK_S_IOERR`) and `VIRTIO_BLK_F_FLUSH` mapped to `fdatasync`.
//!
//! [`request`] parses and validates requests without doing I/O; [`Block`] executes them.

mod device;
pub mod request;

pub use device::Block;

/// Bytes per virtio-block sector (the unit of `capacity` and of request sector numbers).
pub const SECTOR_SIZE: u64 = 512;
