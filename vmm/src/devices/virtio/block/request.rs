//! Parsing and validation of virtio-block requests, independent of any I/O.
//!
//! A request is a descriptor chain: a 16-byte device-readable header (`type`, `ioprio`,
//! `sector`), data buffers (device-writable for `IN`/`GET_ID`, device-readable for `OUT`)
//! and, last, a device-writable status byte. The parser is framing-agnostic where the spec
//! asks for it (the header may span descriptors) and strict about everything else.

use std::io::Read;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::{Reader, Writer};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::SECTOR_SIZE;
use crate::devices::virtio::queue::{validate_chain, Chain, ChainError};

/// Size of the request header.
pub const HEADER_SIZE: usize = 16;
/// Length of the device id returned by `GET_ID`.
pub const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Read sectors into the guest (`VIRTIO_BLK_T_IN`).
    In,
    /// Write guest data to sectors (`VIRTIO_BLK_T_OUT`).
    Out,
    /// Make completed writes durable (`VIRTIO_BLK_T_FLUSH`).
    Flush,
    /// Return the device id string (`VIRTIO_BLK_T_GET_ID`).
    GetId,
}

/// A validated request; its buffers are ready for I/O.
pub struct Request<'a> {
    /// The operation.
    pub kind: RequestKind,
    /// First sector (only meaningful for `In`/`Out`).
    pub sector: u64,
    /// Bytes of data the request transfers (a multiple of 512 for `In`/`Out`).
    pub data_len: u32,
    /// Device-readable data following the header (`Out`).
    pub data_in: Reader<'a>,
    /// Device-writable data before the status byte (`In`, `GetId`).
    pub data_out: Writer<'a>,
    /// The status byte.
    pub status: Writer<'a>,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("kind", &self.kind)
            .field("sector", &self.sector)
            .field("data_len", &self.data_len)
            .finish_non_exhaustive()
    }
}

/// Why a request was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The descriptor chain itself is malformed.
    #[error("malformed descriptor chain")]
    Chain(#[source] ChainError),
    /// The last descriptor is not a device-writable buffer of at least one byte.
    #[error("no status descriptor")]
    MissingStatus,
    /// The device-readable part is shorter than the 16-byte header.
    #[error("request header too short ({len} bytes)")]
    HeaderTooShort {
        /// Readable bytes found.
        len: usize,
    },
    /// The request type is not one this device offers.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    /// Data buffers point the wrong way for the request type.
    #[error("{0}")]
    WrongDirection(&'static str),
    /// Read/write data length is not a multiple of 512 bytes (or is zero).
    #[error("data length {len} is not a positive multiple of 512")]
    BadDataLength {
        /// The length.
        len: u64,
    },
    /// The request reaches beyond the end of the disk.
    #[error("sectors {sector}+{sectors} beyond capacity {capacity}")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Number of sectors.
        sectors: u64,
        /// Disk capacity in sectors.
        capacity: u64,
    },
    /// The buffers could not be mapped (guest memory changed under us).
    #[error("request buffers not accessible")]
    Memory,
}

impl RequestError {
    /// The status to report to the guest, or `None` when the chain has no usable status byte.
    pub fn status(&self) -> Option<u8> {
        match self {
            RequestError::MissingStatus => None,
            RequestError::Chain(ChainError::Empty | ChainError::Unterminated) => None,
            RequestError::Unsupported(_) => Some(VIRTIO_BLK_S_UNSUPP as u8),
            _ => Some(VIRTIO_BLK_S_IOERR as u8),
        }
    }
}

/// The address of the status byte: the last byte of the chain's last descriptor, if that
/// descriptor is device-writable, non-empty and in guest memory. Used to report errors.
pub fn status_address(chain: Chain<'_>) -> Option<GuestAddress> {
    let mem = chain.memory();
    let mut last = None;
    for desc in chain.clone() {
        last = Some(desc);
    }
    let desc = last?;
    if desc.has_next() || !desc.is_write_only() || desc.len() == 0 {
        return None;
    }
    let addr = desc.addr().checked_add(u64::from(desc.len()) - 1)?;
    GuestMemoryBackend::address_in_range(mem, addr).then_some(addr)
}

/// Parses and validates the request in `chain` against a disk of `capacity` sectors.
pub fn parse_request<'a>(
    chain: Chain<'a>,
    mem: &'a GuestMemoryMmap,
    capacity: u64,
) -> Result<Request<'a>, RequestError> {
    let shape = validate_chain(chain.clone()).map_err(RequestError::Chain)?;
    if status_address(chain.clone()).is_none() {
        return Err(RequestError::MissingStatus);
    }
    let mut reader = chain
        .clone()
        .reader(mem)
        .map_err(|_| RequestError::Memory)?;
    let mut writer = chain.writer(mem).map_err(|_| RequestError::Memory)?;
    // The chain may have changed since validation: trust only the mapped buffers.
    let writable = writer.available_bytes();
    if writable == 0 || shape.writable == 0 {
        return Err(RequestError::MissingStatus);
    }
    let status = writer
        .split_at(writable - 1)
        .map_err(|_| RequestError::Memory)?;

    let readable = reader.available_bytes();
    if readable < HEADER_SIZE {
        return Err(RequestError::HeaderTooShort { len: readable });
    }
    let mut header = [0u8; HEADER_SIZE];
    reader
        .read_exact(&mut header)
        .map_err(|_| RequestError::Memory)?;
    let [t0, t1, t2, t3, _, _, _, _, s0, s1, s2, s3, s4, s5, s6, s7] = header;
    let request_type = u32::from_le_bytes([t0, t1, t2, t3]);
    let sector = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
    let extra_readable = reader.available_bytes();
    let data_writable = writer.available_bytes();

    let (kind, data_len) = match request_type {
        VIRTIO_BLK_T_IN => {
            if extra_readable != 0 {
                return Err(RequestError::WrongDirection(
                    "read request with device-readable data buffers",
                ));
            }
            (RequestKind::In, data_writable)
        }
        VIRTIO_BLK_T_OUT => {
            if data_writable != 0 {
                return Err(RequestError::WrongDirection(
                    "write request with device-writable data buffers",
                ));
            }
            (RequestKind::Out, extra_readable)
        }
        VIRTIO_BLK_T_FLUSH => {
            if extra_readable != 0 || data_writable != 0 {
                return Err(RequestError::WrongDirection(
                    "flush request with data buffers",
                ));
            }
            (RequestKind::Flush, 0)
        }
        VIRTIO_BLK_T_GET_ID => {
            if extra_readable != 0 {
                return Err(RequestError::WrongDirection(
                    "get-id request with device-readable data buffers",
                ));
            }
            (RequestKind::GetId, data_writable.min(ID_BYTES))
        }
        other => return Err(RequestError::Unsupported(other)),
    };

    if matches!(kind, RequestKind::In | RequestKind::Out) {
        let len = data_len as u64;
        if len == 0 || !len.is_multiple_of(SECTOR_SIZE) {
            return Err(RequestError::BadDataLength { len });
        }
        let sectors = len / SECTOR_SIZE;
        if sector.checked_add(sectors).is_none_or(|end| end > capacity) {
            return Err(RequestError::OutOfRange {
                sector,
                sectors,
                capacity,
            });
        }
    }
    let data_len = u32::try_from(data_len).map_err(|_| RequestError::BadDataLength {
        len: data_len as u64,
    })?;

    Ok(Request {
        kind,
        sector,
        data_len,
        data_in: reader,
        data_out: writer,
        status,
    })
}
