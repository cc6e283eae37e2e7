//! Behaviour of `deploy/images/build.sh`: unknown names, caching by input hash,
//! manifests, failure reporting, and that the images CI built are up to date.
//!
//! The build/caching tests run a copy of build.sh in a throw-away tree with a tiny
//! shell-script image, so they are fast and never touch `target/images`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

fn build_sh() -> PathBuf {
    nubis_tests::workspace_root().join("deploy/images/build.sh")
}

fn run(script: &Path, args: &[&str]) -> Output {
    Command::new(script)
        .args(args)
        .env_remove("NUBIS_IMAGE_DIR")
        .output()
        .expect("run build.sh")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A throw-away repository layout: `<root>/deploy/images/{build.sh,toy/}`.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let images = dir.path().join("deploy/images");
        fs::create_dir_all(images.join("toy")).expect("mkdir");
        fs::copy(build_sh(), images.join("build.sh")).expect("copy build.sh");
        let s = Sandbox { dir };
        s.write_toy("toy-kernel-v1", r#""name":"toy""#);
        s
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn script(&self) -> PathBuf {
        self.root().join("deploy/images/build.sh")
    }

    fn out(&self) -> PathBuf {
        self.root().join("target/images/toy")
    }

    /// Writes the toy image's build-image.sh: a kernel file with `content`, a
    /// nested file, and a manifest.in.json starting with `name_field`.
    fn write_toy(&self, content: &str, name_field: &str) {
        let script = format!(
            "#!/bin/sh\nset -e\nprintf '%s' '{content}' > \"$1/kernel\"\nmkdir \"$1/extra\"\n\
             printf 'x' > \"$1/extra/blob\"\n\
             printf '%s' '{{{name_field},\"kernel\":\"kernel\",\"initrd\":null,\"cmdline\":\"c\",\
             \"requires\":{{\"vmm\":[\"elf-pvh\"],\"min_memory_mib\":16}}}}' > \"$1/manifest.in.json\"\n"
        );
        let path = self.root().join("deploy/images/toy/build-image.sh");
        fs::write(&path, script).expect("write build-image.sh");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

fn manifest(dir: &Path) -> serde_json::Value {
    let raw = fs::read_to_string(dir.join("manifest.json")).expect("read manifest.json");
    serde_json::from_str(&raw).expect("manifest.json is JSON")
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn unknown_image_is_rejected_with_the_known_names() {
    let o = run(&build_sh(), &["nosuchimage"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("build.sh: unknown image 'nosuchimage' (known: ") && err.contains("linux"),
        "{}",
        text(&o)
    );
}

#[test]
fn unknown_option_is_a_usage_error() {
    let o = run(&build_sh(), &["--frobnicate"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn builds_once_then_skips_until_an_input_changes() {
    let sb = Sandbox::new();

    let first = run(&sb.script(), &["toy"]);
    assert!(first.status.success(), "{}", text(&first));
    assert!(String::from_utf8_lossy(&first.stdout).contains("toy: building"));

    // manifest.json = manifest.in.json + file digests + inputs hash.
    let m = manifest(&sb.out());
    assert_eq!(m["name"], "toy");
    assert_eq!(m["kernel"], "kernel");
    assert_eq!(m["requires"]["min_memory_mib"], 16);
    let kernel = &m["files"]["kernel"];
    assert_eq!(kernel["size"], 13);
    assert_eq!(kernel["sha256"], sha256_hex(b"toy-kernel-v1"));
    assert_eq!(m["files"]["extra/blob"]["sha256"], sha256_hex(b"x"));
    assert!(m["files"].get("manifest.in.json").is_none(), "{m}");
    assert!(!sb.out().join("manifest.in.json").exists());
    let recorded = fs::read_to_string(sb.out().join(".input-hash")).expect("read .input-hash");
    assert_eq!(m["inputs_sha256"], recorded.trim());

    // Same inputs: nothing to do, from any working directory.
    let again = Command::new(sb.script())
        .arg("toy")
        .current_dir("/")
        .env_remove("NUBIS_IMAGE_DIR")
        .output()
        .expect("run build.sh");
    assert!(again.status.success(), "{}", text(&again));
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.contains(&format!(
            "toy: up to date (inputs {}), nothing to do",
            &recorded.trim()[..12]
        )),
        "{}",
        text(&again)
    );
    let check = run(&sb.script(), &["--check"]);
    assert!(check.status.success(), "{}", text(&check));

    // Documentation is not a build input.
    fs::write(sb.root().join("deploy/images/toy/README.md"), "# toy\n").expect("write");
    let check = run(&sb.script(), &["--check", "toy"]);
    assert!(check.status.success(), "{}", text(&check));

    // A changed input file rebuilds; --check notices first.
    sb.write_toy("toy-kernel-v2!", r#""name":"toy""#);
    let check = run(&sb.script(), &["--check", "toy"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(String::from_utf8_lossy(&check.stdout).contains("toy: needs a rebuild"));
    let rebuilt = run(&sb.script(), &[]);
    assert!(rebuilt.status.success(), "{}", text(&rebuilt));
    let m2 = manifest(&sb.out());
    assert_eq!(m2["files"]["kernel"]["size"], 14);
    assert_ne!(m2["inputs_sha256"], m["inputs_sha256"]);

    // No temporary or old folders are left next to the output.
    let leftovers: Vec<_> = fs::read_dir(sb.root().join("target/images"))
        .expect("read images dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "toy" && !n.ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_bad_manifest_fails_and_keeps_the_previous_image() {
    let sb = Sandbox::new();
    let ok = run(&sb.script(), &["toy"]);
    assert!(ok.status.success(), "{}", text(&ok));

    sb.write_toy("toy-kernel-v2", r#""name":"other""#);
    let bad = run(&sb.script(), &["toy"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("\"name\" must be 'toy'"),
        "{}",
        text(&bad)
    );
    let kept = fs::read(sb.out().join("kernel")).expect("previous kernel kept");
    assert_eq!(kept, b"toy-kernel-v1");
}

#[test]
fn a_failing_image_script_is_reported() {
    let sb = Sandbox::new();
    let path = sb.root().join("deploy/images/toy/build-image.sh");
    fs::write(&path, "#!/bin/sh\necho broken >&2\nexit 7\n").expect("write");
    let o = run(&sb.script(), &["toy"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("toy: build-image.sh failed (exit 7)"),
        "{}",
        text(&o)
    );
    assert!(!sb.out().exists());
}

#[test]
fn a_missing_build_dependency_exits_3_and_names_it() {
    let sb = Sandbox::new();
    fs::write(
        sb.root().join("deploy/images/toy/build-deps"),
        "# not installable through apt\nnubis-no-such-tool-x1 -\n",
    )
    .expect("write build-deps");
    let o = run(&sb.script(), &["toy"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("missing build dependency 'nubis-no-such-tool-x1'"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_folder_without_build_image_sh_is_not_an_image() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.root().join("deploy/images/later")).expect("mkdir");
    let o = run(&sb.script(), &["later"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(
            "unknown image 'later' (known: toy) (deploy/images/later has no build-image.sh yet)"
        ),
        "{}",
        text(&o)
    );
    let all = run(&sb.script(), &[]);
    assert!(all.status.success(), "{}", text(&all));
    assert!(String::from_utf8_lossy(&all.stdout).contains("later: no build-image.sh yet, skipped"));
}

/// After CI's image build step, a second build of the real images does nothing.
/// Outside CI a stale image (someone edited its inputs) is reported and skipped;
/// with `NUBIS_REQUIRE_KVM=1` (CI, right after `build.sh`) it fails.
#[test]
fn built_images_are_up_to_date() {
    let dir = nubis_tests::image_dir();
    let built = ["linux", "hello", "debian"]
        .into_iter()
        .filter(|n| dir.join(n).join("manifest.json").is_file())
        .collect::<Vec<_>>();
    if !nubis_tests::prerequisite(
        built.contains(&"linux"),
        "target/images/linux (run deploy/images/build.sh)",
    ) {
        return;
    }
    for name in built {
        let o = Command::new(build_sh())
            .args(["--check", name])
            .output()
            .expect("run build.sh --check");
        let up_to_date =
            String::from_utf8_lossy(&o.stdout).contains(&format!("{name}: up to date"));
        assert_eq!(o.status.success(), up_to_date, "{}", text(&o));
        nubis_tests::prerequisite(
            up_to_date,
            &format!("target/images/{name} up to date (run deploy/images/build.sh {name})"),
        );
    }
}
