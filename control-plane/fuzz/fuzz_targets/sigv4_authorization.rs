//! Feeds arbitrary strings to the SigV4 `Authorization` header parser: it
//! must never panic, and what it accepts must be well formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nubis_control_plane::ec2::sigv4::Authorization;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(a) = Authorization::parse(s) {
            assert_eq!(a.signature.len(), 32);
            assert_eq!(a.date.len(), 8);
            assert!(a.signed_headers.iter().any(|h| h == "host"));
        }
    }
});
