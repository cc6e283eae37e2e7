//! The virtio-block device model: owns the image file and executes validated requests.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::RawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::json;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use vm_memory::{Bytes, GuestMemoryMmap};

use super::request::{parse_request, status_address, Request, RequestKind, ID_BYTES};
use super::SECTOR_SIZE;
use crate::devices::ratelimit::{RateLimitConfig, RateLimiter};
use crate::devices::virtio::queue::{QueueContext, QueueCorruption};
use crate::devices::virtio::{Error, VirtioDevice};

/// Queue size offered to the driver.
const QUEUE_SIZE: u16 = 256;
/// Data segments per request advertised in `seg_max` (the queue size minus header and
/// status descriptors). Without `VIRTIO_BLK_F_SEG_MAX`, Linux uses one segment per request.
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Bounce-buffer size: data moves between the file and guest memory in chunks of this.
const CHUNK: usize = 128 * 1024;

#[derive(Debug, Default)]
struct Metrics {
    requests: u64,
    reads: u64,
    writes: u64,
    flushes: u64,
    get_ids: u64,
    bytes_read: u64,
    bytes_written: u64,
    errors: u64,
}

/// A virtio-block device backed by a raw image file.
#[derive(Debug)]
pub struct Block {
    file: File,
    path: PathBuf,
    read_only: bool,
    capacity: u64,
    id: [u8; ID_BYTES],
    queue_sizes: [u16; 1],
    buf: Vec<u8>,
    metrics: Metrics,
    limiter: Option<RateLimiter>,
}

impl Block {
    /// Opens the raw image at `path` (read-only if `read_only`). `id` is what `GET_ID`
    /// returns (at most 20 printable ASCII bytes); by default it is derived from the file's
    /// device and inode numbers, stable across VMM restarts.
    pub fn new(path: &Path, read_only: bool, id: Option<String>) -> Result<Block, Error> {
        if let Some(id) = &id {
            if id.is_empty() || id.len() > ID_BYTES || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::InvalidDiskId { id: id.clone() });
            }
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| Error::DiskOpen {
                path: path.to_path_buf(),
                source,
            })?;
        let read_err = |source| Error::DiskRead {
            path: path.to_path_buf(),
            source,
        };
        let meta = file.metadata().map_err(read_err)?;
        let ft = meta.file_type();
        if !(ft.is_file() || ft.is_block_device()) {
            return Err(Error::DiskUnusable {
                path: path.to_path_buf(),
                reason: "not a regular file or block device",
            });
        }
        let size = file.seek(SeekFrom::End(0)).map_err(read_err)?;
        let capacity = size / SECTOR_SIZE;
        if capacity == 0 {
            return Err(Error::DiskUnusable {
                path: path.to_path_buf(),
                reason: "smaller than one 512-byte sector",
            });
        }
        if size % SECTOR_SIZE != 0 {
            tracing::warn!(
                path = %path.display(),
                size,
                "disk image size is not a multiple of 512: the tail is not visible to the guest"
            );
        }
        // Prove the image is readable now, not at the guest's first request.
        let mut first = [0u8; SECTOR_SIZE as usize];
        file.read_exact_at(&mut first, 0).map_err(read_err)?;
        let id_string = id.unwrap_or_else(|| format!("{:x}{:x}", meta.dev(), meta.ino()));
        let mut id_bytes = [0u8; ID_BYTES];
        let n = id_string.len().min(ID_BYTES);
        id_bytes[..n].copy_from_slice(&id_string.as_bytes()[..n]);
        Ok(Block {
            file,
            path: path.to_path_buf(),
            read_only,
            capacity,
            id: id_bytes,
            queue_sizes: [QUEUE_SIZE],
            buf: Vec::new(),
            metrics: Metrics::default(),
            limiter: None,
        })
    }

    /// Limits the guest's requests (bytes read + written, and requests) to `cfg`.
    pub fn set_rate_limit(&mut self, cfg: &RateLimitConfig) -> Result<(), Error> {
        self.limiter = RateLimiter::new(cfg).map_err(|source| Error::RateLimiter { source })?;
        Ok(())
    }

    /// Disk capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Executes a validated request; returns the status and the bytes written into guest
    /// buffers before the status byte.
    fn execute(&mut self, req: &mut Request<'_>) -> (u8, u32) {
        let result = match req.kind {
            RequestKind::In => self.read(req).map(|()| req.data_len),
            RequestKind::Out => self.write(req).map(|()| 0),
            RequestKind::Flush => {
                self.metrics.flushes += 1;
                self.file.sync_data().map(|()| 0)
            }
            RequestKind::GetId => {
                self.metrics.get_ids += 1;
                let n = req.data_len as usize;
                req.data_out.write_all(&self.id[..n]).map(|()| req.data_len)
            }
        };
        match result {
            Ok(written) => (VIRTIO_BLK_S_OK as u8, written),
            Err(err) => {
                self.metrics.errors += 1;
                tracing::warn!(path = %self.path.display(), kind = ?req.kind, sector = req.sector,
                    error = %err, "disk request failed");
                (VIRTIO_BLK_S_IOERR as u8, 0)
            }
        }
    }

    fn read(&mut self, req: &mut Request<'_>) -> std::io::Result<()> {
        self.metrics.reads += 1;
        let mut offset = req.sector * SECTOR_SIZE;
        let mut left = req.data_len as usize;
        self.buf.resize(CHUNK.min(left), 0);
        while left > 0 {
            let n = left.min(CHUNK);
            let chunk = &mut self.buf[..n];
            self.file.read_exact_at(chunk, offset)?;
            req.data_out.write_all(chunk)?;
            offset += n as u64;
            left -= n;
            self.metrics.bytes_read += n as u64;
        }
        Ok(())
    }

    fn write(&mut self, req: &mut Request<'_>) -> std::io::Result<()> {
        self.metrics.writes += 1;
        if self.read_only {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "write to a read-only disk",
            ));
        }
        let mut offset = req.sector * SECTOR_SIZE;
        let mut left = req.data_len as usize;
        self.buf.resize(CHUNK.min(left), 0);
        while left > 0 {
            let n = left.min(CHUNK);
            let chunk = &mut self.buf[..n];
            req.data_in.read_exact(chunk)?;
            self.file.write_all_at(chunk, offset)?;
            offset += n as u64;
            left -= n;
            self.metrics.bytes_written += n as u64;
        }
        Ok(())
    }

    fn handle_chain(
        &mut self,
        ctx: &mut QueueContext<'_>,
        queue_index: usize,
        chain: crate::devices::virtio::queue::Chain<'_>,
        mem: &GuestMemoryMmap,
    ) -> u32 {
        self.metrics.requests += 1;
        let status_at = status_address(chain.clone());
        match parse_request(chain, mem, self.capacity) {
            Ok(mut req) => {
                let (status, written) = self.execute(&mut req);
                if req.status.write_all(&[status]).is_err() {
                    // Mapped a moment ago; only a concurrent change of guest memory gets here.
                    self.metrics.errors += 1;
                    return 0;
                }
                written + 1
            }
            Err(err) => {
                self.metrics.errors += 1;
                ctx.guest_error(queue_index, format_args!("{err}: {}", source_chain(&err)));
                match (err.status(), status_at) {
                    (Some(status), Some(addr)) if mem.write_obj(status, addr).is_ok() => 1,
                    _ => 0,
                }
            }
        }
    }
}

fn source_chain(err: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(&e.to_string());
        out.push_str("; ");
        cur = e.source();
    }
    out
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn name(&self) -> &'static str {
        "block"
    }

    fn device_features(&self) -> u64 {
        let mut features = (1u64 << VIRTIO_BLK_F_FLUSH) | (1 << VIRTIO_BLK_F_SEG_MAX);
        if self.read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        features
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_blk_config: `capacity` (le64 at 0) and `seg_max` (le32 at 12); the
        // other fields belong to features not offered and read as zero.
        let mut config = [0u8; 16];
        config[..8].copy_from_slice(&self.capacity.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| config.get(o).copied())
                .unwrap_or(0);
        }
    }

    fn activate(&mut self, _acked_features: u64) {}

    fn process_queue(
        &mut self,
        ctx: &mut QueueContext<'_>,
        queue_index: usize,
    ) -> Result<(), QueueCorruption> {
        let mem = ctx.mem();
        loop {
            if self.limiter.as_mut().is_some_and(|l| l.blocked()) {
                // The limiter's timer resumes the queue (process_extra).
                break;
            }
            let Some(chain) = ctx.pop(queue_index)? else {
                break;
            };
            let head = chain.head_index();
            let before = self.metrics.bytes_read + self.metrics.bytes_written;
            let used = self.handle_chain(ctx, queue_index, chain, mem);
            ctx.complete(queue_index, head, used)?;
            if let Some(l) = &mut self.limiter {
                l.consume(self.metrics.bytes_read + self.metrics.bytes_written - before);
            }
        }
        Ok(())
    }

    fn extra_fds(&self) -> Vec<RawFd> {
        self.limiter.iter().map(|l| l.fd()).collect()
    }

    fn process_extra(
        &mut self,
        ctx: &mut QueueContext<'_>,
        fd: RawFd,
    ) -> Result<(), QueueCorruption> {
        match &mut self.limiter {
            Some(l) if l.fd() == fd => l.on_timer(),
            _ => return Ok(()),
        }
        if ctx.is_ready(0) {
            self.process_queue(ctx, 0)?;
        }
        Ok(())
    }

    fn reset(&mut self) {}

    fn metrics(&self) -> serde_json::Value {
        let m = &self.metrics;
        json!({
            "path": self.path.display().to_string(),
            "read_only": self.read_only,
            "capacity_sectors": self.capacity,
            "requests": m.requests,
            "reads": m.reads,
            "writes": m.writes,
            "flushes": m.flushes,
            "get_ids": m.get_ids,
            "bytes_read": m.bytes_read,
            "bytes_written": m.bytes_written,
            "errors": m.errors,
            "throttled": self.limiter.as_ref().map_or(0, |l| l.throttled()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{
        guest_memory, read32, Driver, RawDesc, DATA_START, F_NEXT, F_WRITE,
    };
    use crate::devices::virtio::VirtioMmioDevice;
    use virtio_bindings::virtio_blk::{
        VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
        VIRTIO_BLK_T_OUT,
    };
    use vm_memory::GuestAddress;

    const HDR: u64 = DATA_START;
    const DATA: u64 = DATA_START + 0x1000;
    const STATUS: u64 = DATA_START + 0x800;
    /// 320 KiB: a whole-disk request spans three bounce-buffer chunks.
    const SECTORS: u64 = 640;

    struct Setup {
        _file: tempfile::NamedTempFile,
        path: PathBuf,
        mem: GuestMemoryMmap,
        dev: VirtioMmioDevice,
        drv: Driver,
    }

    fn image() -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..SECTORS * SECTOR_SIZE)
            .map(|i| (i / SECTOR_SIZE) as u8 ^ (i as u8))
            .collect();
        f.write_all(&data).unwrap();
        f
    }

    fn setup(read_only: bool) -> Setup {
        setup_limited(read_only, &RateLimitConfig::default())
    }

    fn setup_limited(read_only: bool, limit: &RateLimitConfig) -> Setup {
        let file = image();
        let path = file.path().to_path_buf();
        let mut block = Block::new(&path, read_only, Some("nubis-disk-0".into())).unwrap();
        block.set_rate_limit(limit).unwrap();
        let mem = guest_memory();
        let mut dev = VirtioMmioDevice::new(Box::new(block), mem.clone()).unwrap();
        let drv = Driver::activate(&mut dev, &mem, u64::MAX, 16);
        Setup {
            _file: file,
            path,
            mem,
            dev,
            drv,
        }
    }

    fn header(mem: &GuestMemoryMmap, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&h, GuestAddress(HDR)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    }

    fn status(mem: &GuestMemoryMmap) -> u8 {
        mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    /// Runs one request and returns (used len, status byte).
    fn run(s: &mut Setup, bufs: &[(u64, u32, bool)]) -> (u32, u8) {
        let head = s.drv.add_chain(0, bufs);
        s.dev.process_queue(0);
        let used = s.drv.take_used(0);
        assert_eq!(used.len(), 1, "exactly one completion");
        assert_eq!(used[0].0, u32::from(head));
        (used[0].1, status(&s.mem))
    }

    fn expected(sector: u64, len: usize) -> Vec<u8> {
        let start = sector * SECTOR_SIZE;
        (start..start + len as u64)
            .map(|i| (i / SECTOR_SIZE) as u8 ^ (i as u8))
            .collect()
    }

    #[test]
    fn config_space_reports_capacity_and_features() {
        let mut s = setup(false);
        let mut cap = [0u8; 8];
        s.dev.mmio_read(0x100, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), SECTORS);
        let mut hi = [0u8; 4];
        s.dev.mmio_read(0x104, &mut hi);
        assert_eq!(hi, [0; 4]);
        assert_eq!(read32(&mut s.dev, 0x108), 0, "size_max not offered");
        assert_eq!(read32(&mut s.dev, 0x10c), SEG_MAX);
        assert_ne!(s.dev.acked_features() & (1 << VIRTIO_BLK_F_SEG_MAX), 0);
        let mut past = [0xaau8; 4];
        s.dev.mmio_read(0x200, &mut past);
        assert_eq!(past, [0; 4]);
        assert_eq!(read32(&mut s.dev, 0x08), VIRTIO_ID_BLOCK);
        let acked = s.dev.acked_features();
        assert_ne!(acked & (1 << VIRTIO_BLK_F_FLUSH), 0);
        assert_eq!(acked & (1 << VIRTIO_BLK_F_RO), 0);
    }

    #[test]
    fn bandwidth_limit_caps_throughput_and_the_timer_resumes_the_queue() {
        use crate::devices::ratelimit::BucketConfig;
        const RATE: u64 = 256 * 1024;
        const REQ: u32 = 16 * 1024;
        const N: usize = 12;
        let limit = RateLimitConfig {
            bandwidth: BucketConfig {
                rate: RATE,
                burst: Some(64 * 1024),
            },
            ops: BucketConfig::default(),
        };
        let mut s = setup_limited(false, &limit);
        let fds = s.dev.extra_fds();
        assert_eq!(fds.len(), 1, "the limiter's timer is watched");
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        let start = std::time::Instant::now();
        // At most five chains (15 of the 16 descriptors) in flight.
        let mut submitted = 0;
        let top_up = |s: &mut Setup, submitted: &mut usize, done: usize| {
            while *submitted - done < 5 && *submitted < N {
                s.drv
                    .add_chain(0, &[(HDR, 16, false), (DATA, REQ, true), (STATUS, 1, true)]);
                *submitted += 1;
            }
        };
        top_up(&mut s, &mut submitted, 0);
        s.dev.process_queue(0);
        let mut done = s.drv.take_used(0).len();
        // The 64 KiB burst: four requests (a fifth on the microseconds refilled
        // meanwhile, which puts the bucket in debt), then the queue waits.
        assert!((4..=5).contains(&done), "burst: {done} served");
        // A guest kick while throttled serves nothing more.
        top_up(&mut s, &mut submitted, done);
        s.dev.process_queue(0);
        assert_eq!(s.drv.take_used(0).len(), 0, "kick while throttled");
        let mut timer_wakeups = 0;
        while done < N {
            let mut pfd = libc::pollfd {
                fd: fds[0],
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
            assert_eq!(n, 1, "timer never fired; {done} of {N} served");
            timer_wakeups += 1;
            s.dev.process_extra(fds[0]);
            done += s.drv.take_used(0).len();
            top_up(&mut s, &mut submitted, done);
            s.dev.process_queue(0); // the guest's kick
            done += s.drv.take_used(0).len();
        }
        let elapsed = start.elapsed().as_secs_f64();
        // 128 KiB beyond the burst at 256 KiB/s takes 0.5 s (minus at most
        // one request of debt: 16 KiB = 62.5 ms).
        assert!(elapsed >= 0.43, "served {N} requests in {elapsed:.3} s");
        assert!(elapsed < 3.0, "too slow: {elapsed:.3} s");
        assert!(timer_wakeups >= 7, "{timer_wakeups} timer wake-ups");
        let m = s.dev.metrics();
        assert_eq!(m["bytes_read"], u64::from(REQ) * N as u64);
        assert!(m["throttled"].as_u64().unwrap() >= 7, "{m}");
    }

    #[test]
    fn reads_sectors_into_guest_memory() {
        let mut s = setup(false);
        header(&s.mem, VIRTIO_BLK_T_IN, 2);
        // Data split over two descriptors.
        let (used, st) = run(
            &mut s,
            &[
                (HDR, 16, false),
                (DATA, 512, true),
                (DATA + 0x4000, 512, true),
                (STATUS, 1, true),
            ],
        );
        assert_eq!(st, VIRTIO_BLK_S_OK as u8);
        assert_eq!(used, 1025);
        let mut got = vec![0u8; 1024];
        s.mem
            .read_slice(&mut got[..512], GuestAddress(DATA))
            .unwrap();
        s.mem
            .read_slice(&mut got[512..], GuestAddress(DATA + 0x4000))
            .unwrap();
        assert_eq!(got, expected(2, 1024));
        let m = s.dev.metrics();
        assert_eq!(m["bytes_read"], 1024);
        assert_eq!(m["reads"], 1);
    }

    #[test]
    fn large_read_crosses_bounce_buffer_chunks() {
        let mut s = setup(false);
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        let len = (SECTORS * SECTOR_SIZE) as u32;
        let (used, st) = run(
            &mut s,
            &[(HDR, 16, false), (DATA, len, true), (STATUS, 1, true)],
        );
        assert_eq!((used, st), (len + 1, VIRTIO_BLK_S_OK as u8));
        assert!(len as usize > 2 * CHUNK);
        let mut got = vec![0u8; len as usize];
        s.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, expected(0, len as usize));

        // And a whole-disk write, split over two descriptors at an odd boundary.
        let pattern: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        s.mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
        header(&s.mem, VIRTIO_BLK_T_OUT, 0);
        let (used, st) = run(
            &mut s,
            &[
                (HDR, 16, false),
                (DATA, 1000, false),
                (DATA + 1000, len - 1000, false),
                (STATUS, 1, true),
            ],
        );
        assert_eq!((used, st), (1, VIRTIO_BLK_S_OK as u8));
        assert_eq!(std::fs::read(&s.path).unwrap(), pattern);
    }

    #[test]
    fn writes_reach_the_file_and_flush_succeeds() {
        let mut s = setup(false);
        header(&s.mem, VIRTIO_BLK_T_OUT, 5);
        s.mem
            .write_slice(&[0x5a; 1024], GuestAddress(DATA))
            .unwrap();
        let (used, st) = run(
            &mut s,
            &[(HDR, 16, false), (DATA, 1024, false), (STATUS, 1, true)],
        );
        assert_eq!((used, st), (1, VIRTIO_BLK_S_OK as u8));
        let on_disk = std::fs::read(&s.path).unwrap();
        assert_eq!(&on_disk[5 * 512..7 * 512], &[0x5a; 1024][..]);
        assert_eq!(&on_disk[4 * 512..5 * 512], &expected(4, 512)[..]);
        assert_eq!(&on_disk[7 * 512..8 * 512], &expected(7, 512)[..]);

        header(&s.mem, VIRTIO_BLK_T_FLUSH, 0);
        let (used, st) = run(&mut s, &[(HDR, 16, false), (STATUS, 1, true)]);
        assert_eq!((used, st), (1, VIRTIO_BLK_S_OK as u8));
        let m = s.dev.metrics();
        assert_eq!(m["bytes_written"], 1024);
        assert_eq!(m["flushes"], 1);
        assert_eq!(m["errors"], 0);
    }

    #[test]
    fn get_id_returns_the_configured_id() {
        let mut s = setup(false);
        header(&s.mem, VIRTIO_BLK_T_GET_ID, 0);
        let (used, st) = run(
            &mut s,
            &[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)],
        );
        assert_eq!((used, st), (21, VIRTIO_BLK_S_OK as u8));
        let mut id = [0u8; 20];
        s.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id[..12], b"nubis-disk-0");
        assert_eq!(&id[12..], &[0u8; 8]);
    }

    #[test]
    fn read_only_disk_rejects_writes() {
        let mut s = setup(true);
        assert_ne!(s.dev.acked_features() & (1 << VIRTIO_BLK_F_RO), 0);
        header(&s.mem, VIRTIO_BLK_T_OUT, 0);
        s.mem.write_slice(&[0x77; 512], GuestAddress(DATA)).unwrap();
        let (used, st) = run(
            &mut s,
            &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
        );
        assert_eq!((used, st), (1, VIRTIO_BLK_S_IOERR as u8));
        assert_eq!(
            &std::fs::read(&s.path).unwrap()[..512],
            &expected(0, 512)[..]
        );
        // Reads still work.
        header(&s.mem, VIRTIO_BLK_T_IN, 1);
        let (_, st) = run(
            &mut s,
            &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)],
        );
        assert_eq!(st, VIRTIO_BLK_S_OK as u8);
    }

    #[test]
    fn out_of_range_and_bad_lengths_get_ioerr() {
        let mut s = setup(false);
        let cases: &[(u32, u64, u32)] = &[
            (VIRTIO_BLK_T_IN, SECTORS, 512),      // starts at the end
            (VIRTIO_BLK_T_IN, SECTORS - 1, 1024), // runs past the end
            (VIRTIO_BLK_T_IN, u64::MAX, 512),     // sector arithmetic overflow
            (VIRTIO_BLK_T_OUT, u64::MAX / 512, 512),
            (VIRTIO_BLK_T_IN, 0, 100), // not a multiple of 512
            (VIRTIO_BLK_T_OUT, 0, 513),
        ];
        for &(kind, sector, len) in cases {
            header(&s.mem, kind, sector);
            let write = kind == VIRTIO_BLK_T_IN;
            let (used, st) = run(
                &mut s,
                &[(HDR, 16, false), (DATA, len, write), (STATUS, 1, true)],
            );
            assert_eq!(
                (used, st),
                (1, VIRTIO_BLK_S_IOERR as u8),
                "kind {kind} sector {sector} len {len}"
            );
        }
        // A zero-length read is rejected too.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        let (_, st) = run(&mut s, &[(HDR, 16, false), (STATUS, 1, true)]);
        assert_eq!(st, VIRTIO_BLK_S_IOERR as u8);
        assert_eq!(s.dev.metrics()["errors"], 7);
        assert_eq!(s.dev.metrics()["needs_reset"], false);
    }

    #[test]
    fn unsupported_type_gets_unsupp() {
        let mut s = setup(false);
        header(&s.mem, 11, 0); // DISCARD, not offered
        let (used, st) = run(
            &mut s,
            &[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)],
        );
        assert_eq!((used, st), (1, VIRTIO_BLK_S_UNSUPP as u8));
    }

    #[test]
    fn malformed_chains_are_contained() {
        let mut s = setup(false);
        // Header too short: IOERR.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            run(
                &mut s,
                &[(HDR, 8, false), (DATA, 512, true), (STATUS, 1, true)]
            ),
            (1, VIRTIO_BLK_S_IOERR as u8)
        );
        // Header split across two descriptors is legal framing.
        assert_eq!(
            run(
                &mut s,
                &[
                    (HDR, 8, false),
                    (HDR + 8, 8, false),
                    (DATA, 512, true),
                    (STATUS, 1, true)
                ]
            ),
            (513, VIRTIO_BLK_S_OK as u8)
        );
        // Missing status descriptor: dropped with used length 0, status untouched.
        header(&s.mem, VIRTIO_BLK_T_OUT, 0);
        assert_eq!(
            run(&mut s, &[(HDR, 16, false), (DATA, 512, false)]),
            (0, 0xff)
        );
        // Wrong direction: read request with device-readable data.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            run(
                &mut s,
                &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]
            ),
            (1, VIRTIO_BLK_S_IOERR as u8)
        );
        // Wrong direction: write request with device-writable data.
        header(&s.mem, VIRTIO_BLK_T_OUT, 0);
        assert_eq!(
            run(
                &mut s,
                &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]
            ),
            (1, VIRTIO_BLK_S_IOERR as u8)
        );
        // Header marked device-writable: readable part is empty.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            run(
                &mut s,
                &[(HDR, 16, true), (DATA, 512, true), (STATUS, 1, true)]
            ),
            (1, VIRTIO_BLK_S_IOERR as u8)
        );
        // Readable after writable.
        assert_eq!(
            run(
                &mut s,
                &[
                    (HDR, 16, false),
                    (DATA, 512, true),
                    (DATA + 0x1000, 16, false),
                    (STATUS, 1, true)
                ]
            ),
            (1, VIRTIO_BLK_S_IOERR as u8)
        );
        // Data buffer outside guest memory.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            run(
                &mut s,
                &[(HDR, 16, false), (1 << 40, 512, true), (STATUS, 1, true)]
            ),
            (1, VIRTIO_BLK_S_IOERR as u8)
        );
        // Buffer straddling the end of guest memory.
        let end = crate::devices::virtio::testing::MEM_SIZE as u64;
        assert_eq!(
            run(
                &mut s,
                &[(HDR, 16, false), (end - 256, 512, true), (STATUS, 1, true)]
            ),
            (1, VIRTIO_BLK_S_IOERR as u8)
        );
        // Status byte outside guest memory: nothing to report into.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        assert_eq!(
            run(
                &mut s,
                &[(HDR, 16, false), (DATA, 512, true), (1 << 40, 1, true)]
            ),
            (0, 0xff)
        );
        // The device is still healthy.
        assert_eq!(s.dev.status() & 0x40, 0);
        header(&s.mem, VIRTIO_BLK_T_IN, 3);
        assert_eq!(
            run(
                &mut s,
                &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]
            ),
            (513, VIRTIO_BLK_S_OK as u8)
        );
    }

    #[test]
    fn descriptor_loop_is_dropped_and_device_continues() {
        let mut s = setup(false);
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        // 0 -> 1 -> 0 -> ... never ends.
        s.drv.write_descs(
            0,
            0,
            &[
                RawDesc {
                    addr: HDR,
                    len: 16,
                    flags: F_NEXT,
                    next: 1,
                },
                RawDesc {
                    addr: DATA,
                    len: 512,
                    flags: F_NEXT | F_WRITE,
                    next: 0,
                },
            ],
        );
        s.drv.publish(0, 0);
        // Next index beyond the queue.
        s.drv.write_descs(
            0,
            2,
            &[RawDesc {
                addr: HDR,
                len: 16,
                flags: F_NEXT,
                next: 999,
            }],
        );
        s.drv.publish(0, 2);
        s.dev.process_queue(0);
        assert_eq!(s.drv.take_used(0), vec![(0, 0), (2, 0)]);
        assert_eq!(status(&s.mem), 0xff);
        assert_eq!(s.dev.status() & 0x40, 0);
        assert_eq!(s.dev.metrics()["errors"], 2);
        // A good request afterwards (descriptors 3..) is served.
        s.drv.write_descs(
            0,
            3,
            &[
                RawDesc {
                    addr: HDR,
                    len: 16,
                    flags: F_NEXT,
                    next: 4,
                },
                RawDesc {
                    addr: DATA,
                    len: 512,
                    flags: F_NEXT | F_WRITE,
                    next: 5,
                },
                RawDesc {
                    addr: STATUS,
                    len: 1,
                    flags: F_WRITE,
                    next: 0,
                },
            ],
        );
        s.drv.publish(0, 3);
        s.dev.process_queue(0);
        assert_eq!(s.drv.take_used(0), vec![(3, 513)]);
        assert_eq!(status(&s.mem), VIRTIO_BLK_S_OK as u8);
    }

    #[test]
    fn bad_indirect_tables_are_dropped() {
        let mut s = setup(false);
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        const F_INDIRECT: u16 = 4;
        // Table length not a multiple of 16.
        s.drv.write_descs(
            0,
            0,
            &[RawDesc {
                addr: DATA_START + 0x2000,
                len: 17,
                flags: F_INDIRECT,
                next: 0,
            }],
        );
        s.drv.publish(0, 0);
        // A table whose entry is itself indirect (forbidden nesting).
        let table = DATA_START + 0x3000;
        let nested = [RawDesc {
            addr: table,
            len: 32,
            flags: F_INDIRECT,
            next: 0,
        }];
        s.drv.write_descs(
            0,
            1,
            &[RawDesc {
                addr: table,
                len: 16,
                flags: F_INDIRECT,
                next: 0,
            }],
        );
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&nested[0].addr.to_le_bytes());
        raw[8..12].copy_from_slice(&nested[0].len.to_le_bytes());
        raw[12..14].copy_from_slice(&nested[0].flags.to_le_bytes());
        s.mem.write_slice(&raw, GuestAddress(table)).unwrap();
        s.drv.publish(0, 1);
        // A table outside guest memory.
        s.drv.write_descs(
            0,
            2,
            &[RawDesc {
                addr: 1 << 40,
                len: 64,
                flags: F_INDIRECT,
                next: 0,
            }],
        );
        s.drv.publish(0, 2);
        s.dev.process_queue(0);
        assert_eq!(s.drv.take_used(0), vec![(0, 0), (1, 0), (2, 0)]);
        assert_eq!(status(&s.mem), 0xff);
        assert_eq!(s.dev.status() & 0x40, 0);
    }

    #[test]
    fn head_index_beyond_queue_marks_needs_reset() {
        let mut s = setup(false);
        s.drv.publish(0, 500);
        s.dev.process_queue(0);
        assert_ne!(s.dev.status() & 0x40, 0, "NEEDS_RESET");
        assert_ne!(read32(&mut s.dev, 0x60) & 2, 0, "config-change interrupt");
        // Processing stops until reset.
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        s.drv
            .add_chain(0, &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
        s.dev.process_queue(0);
        assert!(s.drv.take_used(0).is_empty());
        assert_eq!(s.dev.metrics()["queue_corruptions"], 1);
        // After a reset and re-initialisation the device works again.
        let mut drv = Driver::activate(&mut s.dev, &s.mem, u64::MAX, 16);
        assert_eq!(s.dev.status() & 0x40, 0);
        header(&s.mem, VIRTIO_BLK_T_IN, 0);
        let head = drv.add_chain(0, &[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
        s.dev.process_queue(0);
        assert_eq!(drv.take_used(0), vec![(u32::from(head), 513)]);
    }

    #[test]
    fn open_errors_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.img");
        let err = Block::new(&missing, false, None).unwrap_err();
        assert!(matches!(err, Error::DiskOpen { .. }), "{err:?}");
        assert_eq!(err.exit_status(), 7);

        let empty = dir.path().join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        let err = Block::new(&empty, true, None).unwrap_err();
        assert!(matches!(err, Error::DiskUnusable { .. }), "{err:?}");

        let err = Block::new(dir.path(), true, None).unwrap_err();
        assert!(
            matches!(err, Error::DiskUnusable { .. } | Error::DiskOpen { .. }),
            "{err:?}"
        );
        assert_eq!(err.exit_status(), 7);

        let img = image();
        for bad in ["", "this-id-is-longer-than-20", "has space", "ünï"] {
            let err = Block::new(img.path(), true, Some(bad.into())).unwrap_err();
            assert!(matches!(err, Error::InvalidDiskId { .. }), "{bad}: {err:?}");
        }
        // Default id: stable for the same file.
        let a = Block::new(img.path(), true, None).unwrap();
        let b = Block::new(img.path(), true, None).unwrap();
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, [0u8; ID_BYTES]);
        assert_eq!(a.capacity(), SECTORS);
    }
}
