//! The Nubis `hello` test guest: a freestanding PVH kernel that brings up the
//! serial console, virtio-blk and virtio-net (virtio-mmio), prints the
//! console lines of its contract (deploy/images/hello/README.md), answers
//! ICMP echo and serves HTTP on port 80.
//!
//! A tiny CPL0 stub ([`boot`]) sets up the machine and drops to CPL3, where
//! all of this code runs natively even under PVM-backed KVM (ring-0 code is
//! interpreted there). Ring 3 asks ring 0 for port I/O via `int 0x80`.
#![no_std]
#![no_main]

extern crate alloc;

mod blk;
mod boot;
mod devices;
mod heap;
mod imds;
mod mem;
mod net;
mod netdev;
mod prober;
mod sys;

use nubis_hello_guest::cmdline;

const PVH_START_MAGIC: u32 = 0x336e_c578;
const MAX_CMDLINE: usize = 4096;

/// Reads the kernel command line from the PVH start info.
fn read_cmdline() -> Result<&'static str, &'static str> {
    // SAFETY: written once by the boot stub before ring 3 started.
    let info = unsafe { core::ptr::read_volatile(&raw const boot::pvh_start_info) } as usize;
    if info == 0 || !info.is_multiple_of(8) {
        return Err("no PVH start info");
    }
    // SAFETY: the VMM passed this address of a `hvm_start_info` in RAM,
    // which is identity mapped; the fields read are within its 56 bytes.
    let (magic, cmdline) = unsafe {
        (
            core::ptr::read_volatile(info as *const u32),
            core::ptr::read_volatile((info + 24) as *const u64),
        )
    };
    if magic != PVH_START_MAGIC {
        return Err("bad PVH start info magic");
    }
    if cmdline == 0 {
        return Ok("");
    }
    if cmdline >= 0x1_0000_0000 - MAX_CMDLINE as u64 {
        return Err("command line above 4 GiB");
    }
    let base = cmdline as usize as *const u8;
    let mut len = 0;
    // SAFETY: the command line lies in identity-mapped low memory; reading is
    // bounded to MAX_CMDLINE bytes.
    while len < MAX_CMDLINE && unsafe { core::ptr::read_volatile(base.add(len)) } != 0 {
        len += 1;
    }
    // SAFETY: the `len` bytes just scanned are readable and not written again.
    let bytes = unsafe { core::slice::from_raw_parts(base, len) };
    match core::str::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            console!(
                "NUBIS-ERROR command line is not UTF-8 after byte {}, ignoring the rest",
                e.valid_up_to()
            );
            // SAFETY: valid_up_to bytes are valid UTF-8.
            Ok(unsafe { core::str::from_utf8_unchecked(&bytes[..e.valid_up_to()]) })
        }
    }
}

/// Ring-3 entry point, reached by `iretq` from the boot stub.
#[no_mangle]
extern "C" fn rust_main() -> ! {
    sys::init_idt();
    sys::init_platform();
    heap::init();
    let (hz, tsc_source) = sys::tsc_hz();
    console!(
        "hello: nubis test guest starting (tsc {} MHz, {:?})",
        hz / 1_000_000,
        tsc_source
    );

    let line = match read_cmdline() {
        Ok(line) => line,
        Err(why) => {
            console!("NUBIS-ERROR {why}: no command line");
            ""
        }
    };
    let cfg = cmdline::parse(line);
    for problem in &cfg.problems {
        console!("NUBIS-ERROR {problem}");
    }
    let id = cfg.id();

    let found = devices::probe(&cfg.devices);
    let mut disks = found.block.into_iter();
    // Kept (never dropped) until the reset: see `blk::Disk`.
    let _disk = match disks.next() {
        Some(disk) => blk::check(disk, cfg.disk_write, id),
        None if cfg.disk_write => {
            console!("NUBIS-ERROR nubis.disk_write=1 but there is no virtio-blk device");
            None
        }
        None => None,
    };
    for extra in disks {
        console!("hello: extra virtio-blk at {:#x} not used", extra.at.addr);
    }
    let mut nics = found.net.into_iter();
    let server = match (nics.next(), cfg.ip) {
        (Some(nic), Some(ip)) => net::up(nic, ip, cfg.gw, hz),
        (Some(nic), None) => {
            console!(
                "hello: virtio-net at {:#x} not used: no valid ip= on the command line",
                nic.at.addr
            );
            None
        }
        (None, Some(_)) => {
            console!("NUBIS-ERROR ip= given but there is no virtio-net device");
            None
        }
        (None, None) => None,
    };
    // `nubis.net<N>=`: the N-th virtio-net device after the first.
    let mut server = server;
    let mut extra_nics = 0;
    for (n, extra) in nics.enumerate() {
        extra_nics = n + 1;
        let want = cfg.extra_nets.iter().find(|x| usize::from(x.n) == n + 1);
        match (server.as_mut(), want) {
            (Some(s), Some(net)) => s.add_port(extra, *net, hz),
            _ => console!("hello: extra virtio-net at {:#x} not used", extra.at.addr),
        }
    }
    for net in cfg
        .extra_nets
        .iter()
        .filter(|x| usize::from(x.n) > extra_nics)
    {
        console!(
            "NUBIS-ERROR nubis.net{}= given but there is no virtio-net device for it",
            net.n
        );
    }
    console!("NUBIS-CPUS {}", cpus());

    console!("NUBIS-GUEST-READY {id}");
    if cfg.reset {
        sys::reset(hz);
    }
    let idle = sys::init_idle();
    let mut keyboard = sys::Keyboard::init(idle);
    if cfg.burn {
        console!("NUBIS-BURN");
        burn(&mut keyboard);
        console!("NUBIS-CTRL-ALT-DEL");
        sys::reset(hz);
    }
    // `server` stays alive (never dropped) until the reset: see `blk::Disk`.
    if let Some(server) = server.as_mut() {
        server.listen_all();
        if cfg.imds != Some(false) {
            server.imds_boot(hz);
        }
        if cfg.imds_bench > 0 {
            server.imds_bench(cfg.imds_bench, hz);
        }
        if let Some(ip) = cfg.ip {
            server.arm_probes(ip, cfg.gw, hz);
        }
        if let (Some(claim), Some(ip)) = (cfg.spoof, cfg.ip) {
            server.arm_spoof(ip, claim);
        }
        if server.serve(id, hz, idle, &mut keyboard) == net::Stop::HttpReset {
            sys::reset(hz);
        }
    } else {
        // Nothing to serve: sleep, waking only for the keyboard.
        while !keyboard.poll() {
            sys::halt();
        }
    }
    console!("NUBIS-CTRL-ALT-DEL");
    sys::reset(hz)
}

/// Reads `len` bytes of low guest memory.
fn low_memory(addr: u64, len: usize) -> &'static [u8] {
    // SAFETY: only called for ranges below 1 MiB (BIOS data, EBDA, ROM) or a
    // table a floating pointer placed there, all identity mapped and never
    // written by this guest.
    unsafe { core::slice::from_raw_parts(addr as usize as *const u8, len) }
}

/// CPUs listed in the MP table; 1 if there is none (or it is malformed).
fn cpus() -> u32 {
    use nubis_hello_guest::mptable;
    let ebda = u16::from_le_bytes([low_memory(0x40e, 2)[0], low_memory(0x40e, 2)[1]]);
    let Some(floating) = mptable::search_ranges(ebda)
        .iter()
        .find_map(|&(addr, len)| mptable::find_floating(low_memory(addr, len)))
    else {
        return 1;
    };
    if floating.config == 0 {
        // A default configuration (MP spec chapter 5): two processors.
        return if floating.default_config != 0 { 2 } else { 1 };
    }
    let at = u64::from(floating.config);
    if !(0x400..0x10_0000 - 44).contains(&at) {
        console!("NUBIS-ERROR MP configuration table at {at:#x} is outside low memory");
        return 1;
    }
    let Some(len) = mptable::config_len(low_memory(at, 44)) else {
        console!("NUBIS-ERROR MP configuration table at {at:#x} is malformed");
        return 1;
    };
    if at + len as u64 > 0x10_0000 {
        console!("NUBIS-ERROR MP configuration table at {at:#x} is malformed");
        return 1;
    }
    match mptable::count_cpus(low_memory(at, len)) {
        Some(n) if n > 0 => n,
        _ => {
            console!("NUBIS-ERROR MP configuration table at {at:#x} is malformed");
            1
        }
    }
}

/// Busy-loops at CPL3 (native speed, no exits) until Ctrl-Alt-Del; looks
/// at the keyboard every few million iterations (one CPL0 service call).
fn burn(keyboard: &mut sys::Keyboard) {
    let mut x: u64 = 0;
    loop {
        for i in 0..(1u64 << 22) {
            x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        if keyboard.poll() {
            return;
        }
    }
}

/// Sleeps forever without burning CPU (no timer is armed).
fn halt_forever() -> ! {
    loop {
        sys::halt();
    }
}

/// CPU exception taken at CPL3, bounced here by the boot stub's fault path.
#[no_mangle]
extern "C" fn fault_entry(vector: u64, error: u64, rip: u64, cr2: u64) -> ! {
    console!(
        "NUBIS-ERROR cpu exception vector={vector} error={error:#x} rip={rip:#x} cr2={cr2:#x}"
    );
    halt_forever()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console!("NUBIS-ERROR panic: {info}");
    halt_forever()
}
