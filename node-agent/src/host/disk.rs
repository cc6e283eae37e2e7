//! Instance root disks: a writable clone of the image disk (reflink through
//! `FICLONE` where the filesystem supports it, else a sparse copy), or a
//! blank sparse raw disk whose sector 0 names the instance. Each disk is
//! built under a temporary name and renamed into place, so a crash half-way
//! leaves either no disk or a complete one. The image is never written.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::types::InstanceId;

/// Sector size of the raw disks.
pub const SECTOR: usize = 512;

/// How a disk was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOrigin {
    /// The disk already existed (idempotent repeat).
    Existing,
    /// Reflinked from the image.
    Reflink,
    /// Sparse byte copy of the image.
    SparseCopy,
    /// Blank disk with a header.
    Blank,
}

/// The 512-byte header written to sector 0 of blank disks.
pub fn blank_header(id: &InstanceId) -> [u8; SECTOR] {
    let mut s = [0u8; SECTOR];
    let text = format!("NUBIS-DISK v1 instance={id}\n");
    let n = text.len().min(SECTOR);
    s[..n].copy_from_slice(&text.as_bytes()[..n]);
    s
}

fn tmp_path(dst: &Path) -> std::path::PathBuf {
    let mut name = dst
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    dst.with_file_name(name)
}

fn sparse_copy(src: &mut File, dst: &mut File) -> std::io::Result<()> {
    let len = src.metadata()?.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            dst.seek(SeekFrom::Current(n as i64))?;
        } else {
            dst.write_all(&buf[..n])?;
        }
        off += n as u64;
    }
    dst.set_len(len)?;
    Ok(())
}

/// Clones `src` (an image disk) to `dst`. Idempotent: an existing `dst` is kept.
pub fn clone_disk(src: &Path, dst: &Path) -> Result<DiskOrigin> {
    if dst.exists() {
        return Ok(DiskOrigin::Existing);
    }
    let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
    let tmp = tmp_path(dst);
    let mut s = File::open(src).map_err(|e| Error::io(ctx("opening image disk", src), e))?;
    let mut d = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io(ctx("creating", &tmp), e))?;
    let origin = match rustix::fs::ioctl_ficlone(&d, &s) {
        Ok(()) => DiskOrigin::Reflink,
        Err(_) => {
            sparse_copy(&mut s, &mut d).map_err(|e| Error::io(ctx("copying to", &tmp), e))?;
            DiskOrigin::SparseCopy
        }
    };
    d.sync_all()
        .map_err(|e| Error::io(ctx("syncing", &tmp), e))?;
    std::fs::rename(&tmp, dst).map_err(|e| Error::io(ctx("renaming to", dst), e))?;
    Ok(origin)
}

/// Creates a sparse raw disk of `size_mib` whose sector 0 holds
/// [`blank_header`]. Idempotent: an existing `dst` is kept.
pub fn create_blank(dst: &Path, size_mib: u64, id: &InstanceId) -> Result<DiskOrigin> {
    if dst.exists() {
        return Ok(DiskOrigin::Existing);
    }
    let tmp = tmp_path(dst);
    let io = |e| Error::io(format!("creating blank disk {}", tmp.display()), e);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io)?;
    f.set_len(size_mib * 1024 * 1024).map_err(io)?;
    f.write_all(&blank_header(id)).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, dst)
        .map_err(|e| Error::io(format!("renaming to {}", dst.display()), e))?;
    Ok(DiskOrigin::Blank)
}

/// Grows the raw disk at `path` to `bytes` by extending the file (sparse:
/// the new space takes no blocks until written). Never shrinks: a disk
/// already that large or larger is left as it is, so repeating (relaunch,
/// restart, agent restart) changes nothing. Returns whether it grew.
pub fn grow(path: &Path, bytes: u64) -> Result<bool> {
    let io = |e| {
        Error::io(
            format!("growing disk {} to {bytes} bytes", path.display()),
            e,
        )
    };
    let f = OpenOptions::new().write(true).open(path).map_err(io)?;
    if f.metadata().map_err(io)?.len() >= bytes {
        return Ok(false);
    }
    f.set_len(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(true)
}

/// Reads sector `n` of a raw disk.
pub fn read_sector(path: &Path, n: u64) -> Result<[u8; SECTOR]> {
    let io = |e| Error::io(format!("reading sector {n} of {}", path.display()), e);
    let mut f = File::open(path).map_err(io)?;
    f.seek(SeekFrom::Start(n * SECTOR as u64)).map_err(io)?;
    let mut s = [0u8; SECTOR];
    f.read_exact(&mut s).map_err(io)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn blank_disk_is_sparse_with_header_and_idempotent() {
        let t = tempfile::tempdir().unwrap();
        let id = InstanceId::new("i-abc").unwrap();
        let p = t.path().join("disk.raw");
        assert_eq!(create_blank(&p, 8, &id).unwrap(), DiskOrigin::Blank);
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.len(), 8 << 20);
        assert!(
            md.blocks() * 512 < 1 << 20,
            "not sparse: {} blocks",
            md.blocks()
        );
        let s0 = read_sector(&p, 0).unwrap();
        assert!(s0.starts_with(b"NUBIS-DISK v1 instance=i-abc\n"));
        // Repeating keeps the (possibly guest-modified) disk.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all_at(b"X", 600)
            .unwrap();
        assert_eq!(create_blank(&p, 8, &id).unwrap(), DiskOrigin::Existing);
        assert_eq!(read_sector(&p, 1).unwrap()[88], b'X');
        assert!(!tmp_path(&p).exists());
    }

    #[test]
    fn clone_copies_sparse_and_leaves_source_alone() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("img.raw");
        let mut f = File::create(&src).unwrap();
        f.set_len(4 << 20).unwrap();
        f.write_all(b"image-data").unwrap();
        drop(f);
        let before = std::fs::read(&src).unwrap();
        let dst = t.path().join("disk.raw");
        let o = clone_disk(&src, &dst).unwrap();
        assert!(matches!(o, DiskOrigin::Reflink | DiskOrigin::SparseCopy));
        assert_eq!(std::fs::read(&dst).unwrap(), before);
        std::fs::write(&dst, b"changed").unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), before);
        assert_eq!(clone_disk(&src, &dst).unwrap(), DiskOrigin::Existing);
    }

    #[test]
    fn grow_is_sparse_never_shrinks_and_keeps_data() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("img.raw");
        std::fs::write(&src, b"image-data").unwrap();
        let dst = t.path().join("disk.raw");
        clone_disk(&src, &dst).unwrap();
        assert!(grow(&dst, 64 << 20).unwrap());
        let md = std::fs::metadata(&dst).unwrap();
        assert_eq!(md.len(), 64 << 20);
        assert!(
            md.blocks() * 512 < 1 << 20,
            "not sparse: {} blocks",
            md.blocks()
        );
        assert!(std::fs::read(&dst).unwrap().starts_with(b"image-data"));
        // Again, or smaller: nothing changes.
        assert!(!grow(&dst, 64 << 20).unwrap());
        assert!(!grow(&dst, 1 << 20).unwrap());
        assert_eq!(std::fs::metadata(&dst).unwrap().len(), 64 << 20);
        assert!(grow(&t.path().join("missing.raw"), 1 << 20).is_err());
    }

    use std::os::unix::fs::FileExt;
}
