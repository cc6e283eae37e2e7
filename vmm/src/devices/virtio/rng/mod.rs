//! virtio-rng (entropy device, virtio id 4): one request queue whose device-writable
//! buffers are filled from the host's `getrandom`.

mod device;

pub use device::Rng;
