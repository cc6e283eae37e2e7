//! Test-only helpers shared by every Nubis test suite (a dev-dependency, never
//! linked into a shipped binary):
//!
//! - the prerequisite policy: a test whose prerequisite (KVM, etcd, an image,
//!   root) is missing prints `SKIPPED` and passes, unless `NUBIS_REQUIRE_KVM=1`
//!   (CI), where it fails ([`prerequisite`]);
//! - where things are: the workspace root and the guest image directory;
//! - free loopback ports;
//! - [`Etcd`]: a throw-away single-member etcd on free loopback ports in a
//!   temporary directory, ready (it has a leader) when returned and killed
//!   when dropped, also when the test panics.

mod etcd;

use std::path::PathBuf;

pub use etcd::{etcd_binary, etcd_healthy, Etcd, EtcdTlsFiles};

/// True when tests must fail rather than skip on a missing prerequisite
/// (`NUBIS_REQUIRE_KVM=1`).
pub fn require_prereqs() -> bool {
    std::env::var("NUBIS_REQUIRE_KVM").is_ok_and(|v| v == "1")
}

/// Reports a missing prerequisite: panics when [`require_prereqs`] holds,
/// otherwise prints why the test is not run and returns `false`. Returns
/// `true` when `ok`.
pub fn prerequisite(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    assert!(
        !require_prereqs(),
        "prerequisite missing and NUBIS_REQUIRE_KVM=1: {what}"
    );
    eprintln!("SKIPPED (prerequisite missing: {what}); set NUBIS_REQUIRE_KVM=1 to make this fatal");
    false
}

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// Where guest images are built: `$NUBIS_IMAGE_DIR` or `<root>/target/images`.
/// A relative `NUBIS_IMAGE_DIR` is taken relative to the workspace root, as
/// `deploy/images/build.sh` does.
pub fn image_dir() -> PathBuf {
    match std::env::var_os("NUBIS_IMAGE_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target/images"),
    }
}

/// A loopback TCP port that was free a moment ago (another process may take
/// it before the caller binds it: callers that spawn servers retry).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prerequisite_met_is_true_and_missing_follows_the_policy() {
        assert!(prerequisite(true, "anything"));
        let missing = std::panic::catch_unwind(|| prerequisite(false, "nothing"));
        if require_prereqs() {
            assert!(missing.is_err(), "must fail under NUBIS_REQUIRE_KVM=1");
        } else {
            assert!(matches!(missing, Ok(false)));
        }
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml"))
            .expect("read the workspace Cargo.toml");
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn free_ports_can_be_bound() {
        let p = free_port().expect("free port");
        assert_ne!(p, 0);
        std::net::TcpListener::bind(("127.0.0.1", p)).expect("bind the free port");
    }
}
