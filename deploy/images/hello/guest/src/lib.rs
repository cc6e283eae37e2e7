//! Pure logic of the Nubis `hello` test guest, kept free of the platform so
//! it can be unit tested on the host (`cargo test --lib`): command-line
//! parsing, the MP table, HTTP request parsing, the disk pattern, the frames of the spoofing
//! test mode and the user-data lines of the probe and stream test modes.
//! The freestanding binary (`src/main.rs`) wires it to the machine.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod cmdline;
pub mod http;
pub mod keyboard;
pub mod mptable;
pub mod probe;
pub mod spoof;

/// Sector 1 after `nubis.disk_write=1`: `NUBIS-DISK-WRITE <id>\n`, zero padded.
pub fn disk_write_pattern(id: &str) -> [u8; 512] {
    let mut sector = [0u8; 512];
    let text = alloc::format!("NUBIS-DISK-WRITE {id}\n");
    let n = text.len().min(512);
    sector[..n].copy_from_slice(&text.as_bytes()[..n]);
    sector
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> alloc::string::String {
    use core::fmt::Write;
    let mut s = alloc::string::String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn pattern_and_hex() {
        let s = super::disk_write_pattern("i-9");
        assert_eq!(&s[..19], b"NUBIS-DISK-WRITE i-");
        assert_eq!(&s[19..21], b"9\n");
        assert!(s[21..].iter().all(|b| *b == 0));
        assert_eq!(super::hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
