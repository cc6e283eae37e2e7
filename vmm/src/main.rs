//! `nubis-vmm`: runs one KVM microVM per process.

use clap::Parser;

/// Runs one KVM microVM: kernel, initrd, serial console, virtio-block,
/// virtio-net and virtio-rng devices over virtio-mmio.
#[derive(Debug, Parser)]
#[command(name = "nubis-vmm", version)]
struct Args {
    /// Guest kernel: ELF vmlinux (PVH or 64-bit entry) or bzImage.
    #[arg(long, value_name = "PATH")]
    kernel: Option<std::path::PathBuf>,
}

fn main() {
    let _args = Args::parse();
    eprintln!("nubis-vmm: not implemented yet");
    std::process::exit(2);
}
