//! Loading a guest: kernel image (ELF vmlinux or bzImage), initrd, command
//! line, and the boot structures for the chosen protocol (PVH
//! `hvm_start_info` + memory map, or Linux `boot_params` with an E820 map),
//! plus the MP table, CPUID and MSR set-up of [`cpuid`], [`msr`], [`mptable`].

pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, KernelLoader};
use linux_loader::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use vm_memory::{Bytes, GuestAddress};

use crate::error::{Error, Result};
use crate::vstate::memory::{self, GuestMem};
use layout::MemoryKind;

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootProtocol {
    /// PVH: 32-bit protected mode, paging off, `%ebx` = `hvm_start_info`.
    Pvh,
    /// Linux 64-bit boot protocol: long mode, identity-mapped, `%rsi` = zero page.
    Linux64,
}

/// Where and how the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryPoint {
    /// Guest-physical entry address.
    pub addr: u64,
    /// Protocol the kernel is entered with.
    pub protocol: BootProtocol,
}

/// Kernel image formats we recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KernelFormat {
    Elf,
    BzImage,
}

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const BZIMAGE_MAGIC_OFFSET: u64 = 0x202;
const BZIMAGE_MAGIC: [u8; 4] = *b"HdrS";
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
/// `boot_params.hdr.type_of_loader`: "undefined" loader.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// Offset of the 64-bit entry from a bzImage's protected-mode load address.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
const XLF_KERNEL_64: u16 = 1;

fn kernel_read_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::KernelRead {
        path: path.to_path_buf(),
        source,
    }
}

fn sniff(path: &Path, file: &mut File) -> Result<KernelFormat> {
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_ok() && magic == ELF_MAGIC {
        return Ok(KernelFormat::Elf);
    }
    if file.seek(SeekFrom::Start(BZIMAGE_MAGIC_OFFSET)).is_ok()
        && file.read_exact(&mut magic).is_ok()
        && magic == BZIMAGE_MAGIC
    {
        return Ok(KernelFormat::BzImage);
    }
    Err(Error::KernelFormat {
        path: path.to_path_buf(),
    })
}

/// Highest guest-physical end of an ELF's loadable segments, so that a
/// kernel larger than guest memory is reported as such (exit 5) rather than
/// as a malformed image.
fn elf_load_end(file: &mut File) -> Option<u64> {
    use linux_loader::elf::{Elf64_Ehdr, Elf64_Phdr, PT_LOAD};
    use vm_memory::ByteValued;
    let mut ehdr = Elf64_Ehdr::default();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_exact(ehdr.as_mut_slice()).ok()?;
    file.seek(SeekFrom::Start(ehdr.e_phoff)).ok()?;
    let mut end = 0u64;
    for _ in 0..ehdr.e_phnum.min(256) {
        let mut phdr = Elf64_Phdr::default();
        file.read_exact(phdr.as_mut_slice()).ok()?;
        if phdr.p_type == PT_LOAD {
            end = end.max(phdr.p_paddr.checked_add(phdr.p_memsz)?);
        }
    }
    Some(end)
}

/// What [`load_kernel`] found.
#[derive(Debug)]
pub struct LoadedKernel {
    /// Entry point.
    pub entry: EntryPoint,
    /// First byte after the kernel.
    pub end: u64,
    /// bzImage setup header, to be copied into the zero page.
    setup_header: Option<linux_loader::loader::bootparam::setup_header>,
}

/// Loads the kernel at `path` into `mem`.
pub fn load_kernel(mem: &GuestMem, path: &Path) -> Result<LoadedKernel> {
    let mut file = File::open(path).map_err(kernel_read_err(path))?;
    let format = sniff(path, &mut file)?;
    let mem_end = memory::low_ram_end(mem);
    let load_err = |source| Error::KernelLoad {
        path: path.to_path_buf(),
        source,
    };
    match format {
        KernelFormat::Elf => {
            if let Some(needed) = elf_load_end(&mut file) {
                if needed > mem_end {
                    return Err(Error::KernelTooBig {
                        needed,
                        available: mem_end,
                    });
                }
            }
            let result = Elf::load(
                mem,
                None,
                &mut file,
                Some(GuestAddress(layout::HIMEM_START)),
            )
            .map_err(load_err)?;
            let entry = match result.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => EntryPoint {
                    addr: addr.0,
                    protocol: BootProtocol::Pvh,
                },
                _ => EntryPoint {
                    addr: result.kernel_load.0,
                    protocol: BootProtocol::Linux64,
                },
            };
            Ok(LoadedKernel {
                entry,
                end: result.kernel_end,
                setup_header: None,
            })
        }
        KernelFormat::BzImage => {
            let size = file.metadata().map_err(kernel_read_err(path))?.len();
            if layout::HIMEM_START + size > mem_end {
                return Err(Error::KernelTooBig {
                    needed: layout::HIMEM_START + size,
                    available: mem_end,
                });
            }
            let result = BzImage::load(
                mem,
                None,
                &mut file,
                Some(GuestAddress(layout::HIMEM_START)),
            )
            .map_err(load_err)?;
            let hdr = result.setup_header.ok_or_else(|| Error::KernelFormat {
                path: path.to_path_buf(),
            })?;
            if hdr.boot_flag != KERNEL_BOOT_FLAG_MAGIC
                || hdr.header != KERNEL_HDR_MAGIC
                || hdr.xloadflags & XLF_KERNEL_64 == 0
            {
                return Err(Error::KernelNot64Bit {
                    path: path.to_path_buf(),
                });
            }
            Ok(LoadedKernel {
                entry: EntryPoint {
                    addr: result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
                    protocol: BootProtocol::Linux64,
                },
                end: result.kernel_end,
                setup_header: Some(hdr),
            })
        }
    }
}

/// An initrd placed in guest memory.
#[derive(Debug, Clone, Copy)]
pub struct Initrd {
    /// Guest-physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Loads the initrd page-aligned at the top of low RAM, above the kernel.
pub fn load_initrd(mem: &GuestMem, path: &Path, kernel_end: u64) -> Result<Initrd> {
    let read_err = |source| Error::InitrdRead {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if !file.metadata().map_err(read_err)?.is_file() {
        return Err(read_err(std::io::Error::other("not a regular file")));
    }
    let top = memory::low_ram_end(mem);
    let floor = kernel_end.max(layout::HIMEM_START);
    let available = top.saturating_sub(floor);
    if size == 0 || size > available {
        return Err(Error::InitrdTooLarge {
            path: path.to_path_buf(),
            size,
            available,
        });
    }
    let addr = (top - size) & !0xfff;
    if addr < floor {
        return Err(Error::InitrdTooLarge {
            path: path.to_path_buf(),
            size,
            available,
        });
    }
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| read_err(std::io::Error::other(e)))?;
    Ok(Initrd { addr, size })
}

/// Builds the guest command line: the configured one (or the default),
/// `console=ttyS0` unless a console is named, then `extra` entries.
pub fn build_cmdline(base: Option<&str>, extra: &[String]) -> Result<Cmdline> {
    let mut cmdline = Cmdline::new(layout::CMDLINE_MAX_SIZE).map_err(Error::Cmdline)?;
    let base = base.unwrap_or(crate::config::DEFAULT_CMDLINE).trim();
    if !base.is_empty() {
        cmdline.insert_str(base).map_err(Error::Cmdline)?;
    }
    if !base.split_whitespace().any(|w| w.starts_with("console=")) {
        cmdline
            .insert_str("console=ttyS0")
            .map_err(Error::Cmdline)?;
    }
    for e in extra {
        cmdline.insert_str(e).map_err(Error::Cmdline)?;
    }
    Ok(cmdline)
}

fn boot_err<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> Error {
    move |e| Error::BootSetup {
        what,
        source: Box::new(e),
    }
}

/// Writes the command line, the MP table and the boot-protocol structures.
pub fn configure(
    mem: &GuestMem,
    kernel: &LoadedKernel,
    cmdline: &Cmdline,
    initrd: Option<Initrd>,
    vcpus: u8,
) -> Result<()> {
    load_cmdline(mem, GuestAddress(layout::CMDLINE_START), cmdline)
        .map_err(boot_err("command line"))?;
    let cmdline_len = cmdline
        .as_cstring()
        .map_err(Error::Cmdline)?
        .as_bytes_with_nul()
        .len();
    mptable::write(mem, vcpus)?;
    let mem_size: u64 = memory_size(mem);
    match kernel.entry.protocol {
        BootProtocol::Pvh => configure_pvh(mem, initrd, mem_size),
        BootProtocol::Linux64 => configure_zero_page(mem, kernel, cmdline_len, initrd, mem_size),
    }
}

fn memory_size(mem: &GuestMem) -> u64 {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    mem.iter().map(|r| r.len()).sum()
}

fn configure_pvh(mem: &GuestMem, initrd: Option<Initrd>, mem_size: u64) -> Result<()> {
    use linux_loader::start_info::{
        XEN_HVM_MEMMAP_TYPE_RAM, XEN_HVM_MEMMAP_TYPE_RESERVED, XEN_HVM_START_MAGIC_VALUE,
    };
    let memmap: Vec<hvm_memmap_table_entry> = layout::memory_map(mem_size)
        .into_iter()
        .map(|(addr, size, kind)| hvm_memmap_table_entry {
            addr,
            size,
            type_: match kind {
                MemoryKind::Ram => XEN_HVM_MEMMAP_TYPE_RAM,
                MemoryKind::Reserved => XEN_HVM_MEMMAP_TYPE_RESERVED,
            },
            reserved: 0,
        })
        .collect();
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: layout::CMDLINE_START,
        memmap_paddr: layout::PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    if let Some(initrd) = initrd {
        info.nr_modules = 1;
        info.modlist_paddr = layout::PVH_MODLIST_START;
        let module = hvm_modlist_entry {
            paddr: initrd.addr,
            size: initrd.size,
            ..Default::default()
        };
        mem.write_obj(module, GuestAddress(layout::PVH_MODLIST_START))
            .map_err(boot_err("PVH module list"))?;
    }
    let mut params = BootParams::new(&info, GuestAddress(layout::PVH_INFO_START));
    params.set_sections(&memmap, GuestAddress(layout::PVH_MEMMAP_START));
    PvhBootConfigurator::write_bootparams::<GuestMem>(&params, mem)
        .map_err(boot_err("PVH start info"))
}

fn configure_zero_page(
    mem: &GuestMem,
    kernel: &LoadedKernel,
    cmdline_len: usize,
    initrd: Option<Initrd>,
    mem_size: u64,
) -> Result<()> {
    let mut params = boot_params::default();
    if let Some(hdr) = kernel.setup_header {
        params.hdr = hdr;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = 0x0100_0000;
    }
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.cmd_line_ptr = layout::CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    let map = layout::memory_map(mem_size);
    for (i, (addr, size, kind)) in map.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: match kind {
                MemoryKind::Ram => E820_RAM,
                MemoryKind::Reserved => E820_RESERVED,
            },
        };
    }
    params.e820_entries = map.len() as u8;
    let bp = BootParams::new(&params, GuestAddress(layout::ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams::<GuestMem>(&bp, mem).map_err(boot_err("zero page"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rejects_garbage_kernel() {
        let mem = memory::create(32).unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        let err = load_kernel(&mem, f.path()).unwrap_err();
        assert!(matches!(err, Error::KernelFormat { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 3);
        let err = load_kernel(&mem, Path::new("/nonexistent/kernel")).unwrap_err();
        assert_eq!(err.exit_code(), 3);
    }

    #[test]
    fn truncated_elf_is_malformed() {
        let mem = memory::create(32).unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&ELF_MAGIC).unwrap();
        f.write_all(&[0u8; 20]).unwrap();
        let err = load_kernel(&mem, f.path()).unwrap_err();
        assert_eq!(err.exit_code(), 3, "{err:?}");
    }

    #[test]
    fn cmdline_gets_console_and_extras() {
        let c = build_cmdline(
            Some("quiet"),
            &["virtio_mmio.device=4K@0xd0000000:5".into()],
        )
        .unwrap();
        let s = c.as_cstring().unwrap().into_string().unwrap();
        assert_eq!(s, "quiet console=ttyS0 virtio_mmio.device=4K@0xd0000000:5");
        let c = build_cmdline(Some("console=hvc0"), &[]).unwrap();
        assert_eq!(
            c.as_cstring().unwrap().into_string().unwrap(),
            "console=hvc0"
        );
        assert!(build_cmdline(Some(&"x".repeat(3000)), &[]).is_err());
    }

    #[test]
    fn initrd_too_large_and_placement() {
        let mem = memory::create(16).unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![7u8; 17 << 20]).unwrap();
        let err = load_initrd(&mem, f.path(), layout::HIMEM_START).unwrap_err();
        assert_eq!(err.exit_code(), 4);
        let mut small = tempfile::NamedTempFile::new().unwrap();
        small.write_all(&[9u8; 5000]).unwrap();
        let initrd = load_initrd(&mem, small.path(), 2 << 20).unwrap();
        assert_eq!(initrd.addr % 4096, 0);
        assert!(initrd.addr + initrd.size <= 16 << 20);
        let b: u8 = mem.read_obj(GuestAddress(initrd.addr + 4999)).unwrap();
        assert_eq!(b, 9);
        assert_eq!(
            load_initrd(&mem, Path::new("/nope"), 0)
                .unwrap_err()
                .exit_code(),
            4
        );
    }

    #[test]
    fn pvh_start_info_written() {
        let mem = memory::create(32).unwrap();
        let kernel = LoadedKernel {
            entry: EntryPoint {
                addr: 0x100000,
                protocol: BootProtocol::Pvh,
            },
            end: 0x200000,
            setup_header: None,
        };
        let cmdline = build_cmdline(None, &[]).unwrap();
        let initrd = Initrd {
            addr: 0x300000,
            size: 77,
        };
        configure(&mem, &kernel, &cmdline, Some(initrd), 2).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(layout::PVH_INFO_START)).unwrap();
        assert_eq!(info.magic, 0x336ec578);
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.memmap_entries, 3);
        let m: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((m.paddr, m.size), (0x300000, 77));
        let e: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(info.memmap_paddr + 2 * 24))
            .unwrap();
        assert_eq!((e.addr, e.addr + e.size), (layout::HIMEM_START, 32 << 20));
    }

    #[test]
    fn zero_page_written() {
        let mem = memory::create(32).unwrap();
        let kernel = LoadedKernel {
            entry: EntryPoint {
                addr: 0x1000000,
                protocol: BootProtocol::Linux64,
            },
            end: 0x1200000,
            setup_header: None,
        };
        let cmdline = build_cmdline(Some("a=b"), &[]).unwrap();
        configure(&mem, &kernel, &cmdline, None, 1).unwrap();
        let bp: boot_params = mem.read_obj(GuestAddress(layout::ZERO_PAGE_START)).unwrap();
        assert_eq!(bp.hdr.type_of_loader, 0xff);
        let ptr = bp.hdr.cmd_line_ptr;
        assert_eq!(ptr, layout::CMDLINE_START as u32);
        assert_eq!(bp.e820_entries, 3);
        let mut buf = [0u8; 20];
        mem.read_slice(&mut buf, GuestAddress(layout::CMDLINE_START))
            .unwrap();
        assert!(buf.starts_with(b"a=b console=ttyS0\0"));
    }
}
