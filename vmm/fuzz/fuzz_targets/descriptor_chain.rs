//! Arbitrary descriptor tables and available rings fed to a virtio-block device over the
//! virtio-mmio transport (see `nubis_vmm::devices::virtio::testing::fuzz_descriptor_chain`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nubis_vmm::devices::virtio::testing::fuzz_descriptor_chain(data);
});
