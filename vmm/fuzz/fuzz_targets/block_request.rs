//! Well-framed virtio-block requests with arbitrary header, sector, lengths and directions
//! (see `nubis_vmm::devices::virtio::testing::fuzz_block_request`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nubis_vmm::devices::virtio::testing::fuzz_block_request(data);
});
