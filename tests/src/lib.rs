//! Shared harness for Nubis' end-to-end tests: locating binaries and images,
//! and the `NUBIS_REQUIRE_KVM` policy (a missing prerequisite fails loudly in CI
//! instead of silently skipping).

use std::path::PathBuf;

pub mod cluster;

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

/// True when tests must fail rather than skip on a missing prerequisite.
pub fn require_prereqs() -> bool {
    std::env::var("NUBIS_REQUIRE_KVM").is_ok_and(|v| v == "1")
}

/// Reports a missing prerequisite: panics when [`require_prereqs`] holds,
/// otherwise prints why the test is not run and returns `false`.
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
