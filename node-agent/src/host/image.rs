//! Local images: `<image_dir>/<name>/manifest.json` plus the files it names,
//! each checked against the sha256 the manifest records. Images are only
//! read, never modified.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::types::ImageName;

/// `manifest.json` as written by `deploy/images/build.sh`.
#[derive(Debug, Clone, Deserialize)]
struct RawManifest {
    name: Option<String>,
    kernel: String,
    #[serde(default)]
    initrd: Option<String>,
    #[serde(default)]
    disk: Option<String>,
    #[serde(default)]
    cmdline: String,
    #[serde(default)]
    requires: Requires,
    /// `{"file": "<sha256 hex>"}` or `{"file": {"sha256": ".."}}`.
    #[serde(default)]
    sha256: BTreeMap<String, serde_json::Value>,
    /// Alternative spelling: `{"file": {"sha256": "..", ...}}`.
    #[serde(default)]
    files: BTreeMap<String, serde_json::Value>,
}

/// Requirements recorded in a manifest.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Requires {
    /// Minimum guest memory.
    #[serde(default)]
    pub min_memory_mib: Option<u64>,
}

/// A verified image.
#[derive(Debug, Clone)]
pub struct Image {
    /// Name (directory).
    pub name: ImageName,
    /// Kernel file.
    pub kernel: PathBuf,
    /// Initrd, if any.
    pub initrd: Option<PathBuf>,
    /// Root disk to clone, if any.
    pub disk: Option<PathBuf>,
    /// Image's kernel command line.
    pub cmdline: String,
    /// Requirements.
    pub requires: Requires,
    /// sha256 of every file, by file name.
    pub digests: BTreeMap<String, String>,
    /// sha256 of `manifest.json` itself (the image's identity on the wire).
    pub manifest_sha256: String,
}

/// A manifest file name: relative, no `.`/`..` components.
fn file_name_ok(f: &str) -> bool {
    !f.is_empty()
        && !f.starts_with('/')
        && f.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn digest_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.to_ascii_lowercase()),
        serde_json::Value::Object(m) => m
            .get("sha256")
            .and_then(|s| s.as_str())
            .map(str::to_ascii_lowercase),
        _ => None,
    }
}

/// Remembers file digests by path and file identity (device, inode, size,
/// mtime and ctime, with nanoseconds), so neither launches nor periodic image
/// scans hash an unchanged file again. Any write to a file, or replacing it,
/// changes its ctime (which user space cannot set back) or its inode, so a
/// changed file is always hashed in full before it is used (digests of files
/// changed just before they were looked at are not kept: [`RACY_WINDOW`]).
#[derive(Debug, Default)]
pub struct DigestCache {
    known: std::sync::Mutex<BTreeMap<PathBuf, (FileKey, String)>>,
}

/// Device, inode, size, mtime (s, ns), ctime (s, ns).
type FileKey = (u64, u64, u64, i64, i64, i64, i64);

fn file_key(path: &Path) -> Result<FileKey> {
    use std::os::unix::fs::MetadataExt;
    let md =
        std::fs::metadata(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok((
        md.dev(),
        md.ino(),
        md.len(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec(),
    ))
}

/// A digest is only remembered for a file whose last change is at least this
/// much older than the look that found it. Kernels without fine-grained
/// timestamps (before 6.13, e.g. Debian 12's 6.1) stamp changes with a clock
/// that ticks every few milliseconds, so a same-size rewrite within the tick
/// of an earlier look leaves every field of [`FileKey`] unchanged; a change
/// made after a look that came a whole tick later always gets a newer stamp.
const RACY_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether the file with this key changed within [`RACY_WINDOW`] before
/// `seen` (the key's identity cannot vouch for its content yet).
fn racily_changed(key: &FileKey, seen: std::time::SystemTime) -> bool {
    let stamp = |s: i64, ns: i64| {
        std::time::Duration::new(
            u64::try_from(s).unwrap_or(0),
            u32::try_from(ns).unwrap_or(0),
        )
    };
    let newest = stamp(key.3, key.4).max(stamp(key.5, key.6));
    seen.duration_since(std::time::UNIX_EPOCH)
        .map_or(true, |now| now.saturating_sub(newest) < RACY_WINDOW)
}

impl DigestCache {
    /// sha256 of `path`, from the cache when the file is unchanged.
    pub fn sha256(&self, path: &Path) -> Result<String> {
        let key = file_key(path)?;
        let seen = std::time::SystemTime::now();
        {
            let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((k, d)) = known.get(path) {
                if *k == key {
                    return Ok(d.clone());
                }
            }
        }
        // Hash outside the lock (other images stay available meanwhile).
        let d = sha256_file(path)?;
        // Only remember the digest if the file did not change while hashing,
        // nor just before (see `RACY_WINDOW`).
        if file_key(path)? == key && !racily_changed(&key, seen) {
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            known.insert(path.to_path_buf(), (key, d.clone()));
        }
        Ok(d)
    }
}

/// Loads `<dir>/<name>/manifest.json` and verifies every file it names
/// (full hashing).
pub fn load_verified(image_dir: &Path, name: &ImageName) -> Result<Image> {
    load_with(image_dir, name, &sha256_file)
}

/// Like [`load_verified`], but files unchanged since `cache` last hashed them
/// are not hashed again (the launch path).
pub fn load_cached(image_dir: &Path, name: &ImageName, cache: &DigestCache) -> Result<Image> {
    load_with(image_dir, name, &|p| cache.sha256(p))
}

fn load_with(
    image_dir: &Path,
    name: &ImageName,
    hash: &dyn Fn(&Path) -> Result<String>,
) -> Result<Image> {
    let dir = image_dir.join(name.as_str());
    let problem = |p: String| Error::Image {
        name: name.to_string(),
        problem: p,
    };
    let mpath = dir.join("manifest.json");
    let text = match std::fs::read_to_string(&mpath) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(problem(format!("not found ({} missing)", mpath.display())))
        }
        Err(e) => return Err(Error::io(format!("reading {}", mpath.display()), e)),
    };
    let manifest_sha256 = hex::encode(Sha256::digest(text.as_bytes()));
    let raw: RawManifest = serde_json::from_str(&text).map_err(|source| Error::Json {
        context: mpath.display().to_string(),
        source,
    })?;
    if let Some(n) = &raw.name {
        if n != name.as_str() {
            return Err(problem(format!("manifest names it {n:?}")));
        }
    }
    let mut digests = BTreeMap::new();
    for (f, v) in raw.sha256.iter().chain(raw.files.iter()) {
        let d = digest_of(v).ok_or_else(|| problem(format!("no sha256 for {f}")))?;
        digests.insert(f.clone(), d);
    }
    let mut used: Vec<&str> = vec![raw.kernel.as_str()];
    used.extend(raw.initrd.as_deref());
    used.extend(raw.disk.as_deref());
    for f in &used {
        if !file_name_ok(f) {
            return Err(problem(format!("invalid file name {f:?}")));
        }
        if !digests.contains_key(*f) {
            return Err(problem(format!("manifest has no sha256 for {f}")));
        }
    }
    for (f, expected) in &digests {
        if !file_name_ok(f) {
            return Err(problem(format!("invalid file name {f:?}")));
        }
        let path = dir.join(f);
        if !path.exists() {
            return Err(problem(format!("file {f} missing")));
        }
        let actual = hash(&path)?;
        if &actual != expected {
            return Err(Error::ImageChecksum {
                name: name.to_string(),
                file: f.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(Image {
        name: name.clone(),
        kernel: dir.join(&raw.kernel),
        initrd: raw.initrd.as_ref().map(|f| dir.join(f)),
        disk: raw.disk.as_ref().map(|f| dir.join(f)),
        cmdline: raw.cmdline,
        requires: raw.requires,
        digests,
        manifest_sha256,
    })
}

/// Scans the image directory; returns every image that verifies and logs the
/// others.
pub fn scan(image_dir: &Path, cache: &DigestCache) -> Vec<Image> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(image_dir) else {
        tracing::warn!(dir = %image_dir.display(), "image directory unreadable");
        return out;
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("manifest.json").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for n in names {
        let Ok(name) = ImageName::new(n.clone()) else {
            tracing::warn!(image = n, "skipping image with invalid name");
            continue;
        };
        match load_with(image_dir, &name, &|p| cache.sha256(p)) {
            Ok(img) => out.push(img),
            Err(e) => tracing::warn!(image = n, error = %e, "skipping image"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_image(dir: &Path, kernel: &[u8], digest: Option<String>) {
        let d = dir.join("img");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("kernel"), kernel).unwrap();
        let digest = digest.unwrap_or_else(|| sha256_file(&d.join("kernel")).unwrap());
        let m = serde_json::json!({
            "name": "img", "kernel": "kernel", "initrd": null, "cmdline": "x",
            "requires": {"vmm": ["nubis-vmm"], "min_memory_mib": 16},
            "sha256": {"kernel": digest}
        });
        std::fs::write(d.join("manifest.json"), m.to_string()).unwrap();
    }

    #[test]
    fn verified_image_loads_and_is_scanned() {
        let t = tempfile::tempdir().unwrap();
        write_image(t.path(), b"kernel bytes", None);
        let img = load_verified(t.path(), &ImageName::new("img").unwrap()).unwrap();
        assert_eq!(img.kernel, t.path().join("img/kernel"));
        assert_eq!(img.requires.min_memory_mib, Some(16));
        let cache = DigestCache::default();
        assert_eq!(scan(t.path(), &cache).len(), 1);
        // A changed file is hashed again (size differs), and caught.
        std::fs::write(t.path().join("img/kernel"), b"kernel bytes!").unwrap();
        assert!(scan(t.path(), &cache).is_empty());
    }

    #[test]
    fn launches_use_the_cache_but_see_in_place_changes() {
        let t = tempfile::tempdir().unwrap();
        write_image(t.path(), b"kernel bytes", None);
        let name = ImageName::new("img").unwrap();
        let cache = DigestCache::default();
        // Just written: hashed, but not remembered (a same-size rewrite in
        // the same timestamp tick would look unchanged on older kernels).
        assert!(load_cached(t.path(), &name, &cache).is_ok());
        assert!(cache.known.lock().unwrap().is_empty());
        std::thread::sleep(RACY_WINDOW + std::time::Duration::from_millis(50));
        assert!(load_cached(t.path(), &name, &cache).is_ok());
        assert_eq!(cache.known.lock().unwrap().len(), 1);
        assert!(load_cached(t.path(), &name, &cache).is_ok());
        // Same size, mtime put back: the ctime still differs, so the changed
        // bytes are hashed and refused.
        let k = t.path().join("img/kernel");
        let mtime = std::fs::metadata(&k).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&k, b"kernel BYTES").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&k)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let e = load_cached(t.path(), &name, &cache).unwrap_err();
        assert!(matches!(e, Error::ImageChecksum { .. }), "{e}");
    }

    #[test]
    fn checksum_mismatch_and_missing_are_errors() {
        let t = tempfile::tempdir().unwrap();
        write_image(t.path(), b"kernel bytes", Some("00".repeat(32)));
        let e = load_verified(t.path(), &ImageName::new("img").unwrap()).unwrap_err();
        assert!(matches!(e, Error::ImageChecksum { .. }), "{e}");
        assert!(scan(t.path(), &DigestCache::default()).is_empty());
        let e = load_verified(t.path(), &ImageName::new("nope").unwrap()).unwrap_err();
        assert!(matches!(e, Error::Image { .. }), "{e}");
    }
}
