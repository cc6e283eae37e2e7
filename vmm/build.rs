//! Link options for the `nubis-vmm` binary only. One VMM process runs per
//! microVM, so the pages its loader touches are per-VM memory overhead
//! (docs/benchmarks.md, VMM section).
//!
//! Packed relative relocations (`-z pack-relative-relocs`, DT_RELR): a PIE's
//! relative relocations shrink from 24 bytes each (`.rela.dyn`, ~90 KiB here,
//! all read by the dynamic loader at start) to a bitmap of about 1 KiB. This
//! needs glibc 2.36 or newer at run time; the linker then records the
//! `GLIBC_ABI_DT_RELR` version, so an older loader refuses the binary with a
//! clear message instead of misbehaving. It is only used when the C library
//! we link against offers that version.

use std::path::Path;

const LIBC_PATHS: [&str; 4] = [
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/lib64/libc.so.6",
    "/usr/lib64/libc.so.6",
];

fn libc_has_dt_relr() -> bool {
    LIBC_PATHS.iter().any(|p| {
        std::fs::read(Path::new(p)).is_ok_and(|bytes| {
            bytes
                .windows(b"GLIBC_ABI_DT_RELR".len())
                .any(|w| w == b"GLIBC_ABI_DT_RELR")
        })
    })
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|v| v == "linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|v| v == "gnu");
    if linux_gnu && libc_has_dt_relr() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
