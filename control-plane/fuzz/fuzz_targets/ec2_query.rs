//! Feeds arbitrary bytes to the EC2 Query form decoder and the typed request
//! parser: they must never panic, and every rejection must be a client error
//! (4xx) with a code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nubis_control_plane::ec2::{query, requests::Request};

fuzz_target!(|data: &[u8]| {
    match query::parse_form(data).and_then(Request::parse) {
        Ok(req) => {
            assert!(!req.action().is_empty());
        }
        Err(e) => {
            assert!(e.status().is_client_error(), "{e}");
            assert!(!e.code.as_str().is_empty());
            let xml = e.to_xml("fuzz");
            assert!(xml.starts_with("<?xml"));
        }
    }
});
