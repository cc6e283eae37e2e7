//! Builds a running microVM from a validated [`VmConfig`], in an order that
//! reports configuration problems before touching KVM: memory, kernel,
//! initrd, devices and their back-ends, command line and boot structures,
//! then the KVM VM, buses, interrupts, vCPUs, the API socket, and finally
//! the vCPU threads.

use std::os::fd::FromRawFd;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::api::ApiServer;
use crate::boot::{self, layout, regs};
use crate::config::{SerialOutput, VmConfig};
use crate::devices::i8042::{self, I8042};
use crate::devices::serial::{self, CappedFile, SerialDevice, SerialOut};
use crate::devices::virtio::net::{MetadataHandle, MetadataPort};
use crate::devices::virtio::{self, VirtioDevice, VirtioMmioDevice};
use crate::devices::{IrqLine, SharedDevice};
use crate::error::{Error, Result};
use crate::signals::SignalFd;
use crate::vmm::{VcpuHandle, VirtioSlot, Vmm};
use crate::vstate::memory::{self, GuestMem};
use crate::vstate::vcpu::{self, IoContext, Vcpu, VcpuThreadContext};
use crate::vstate::vm::Vm;

/// Offset of the QueueNotify register in a virtio-mmio window.
const VIRTIO_MMIO_QUEUE_NOTIFY: u64 = 0x50;

fn eventfd(what: &'static str) -> Result<EventFd> {
    EventFd::new(EFD_NONBLOCK).map_err(|e| Error::host(what, e))
}

fn device_err(device: String) -> impl FnOnce(virtio::Error) -> Error {
    move |source| Error::Device { device, source }
}

type Backends = Vec<(&'static str, Box<dyn VirtioDevice + Send>)>;

/// The virtio back-ends, in guest order: disks, network devices, one RNG;
/// and the handle of the metadata service when one is configured (on the
/// first network device).
fn virtio_backends(config: &VmConfig) -> Result<(Backends, Option<MetadataHandle>)> {
    let mut out: Backends = Vec::new();
    let mut metadata = match &config.metadata_file {
        Some(path) => Some(crate::config::load_metadata(path)?),
        None => None,
    };
    let mut handle = None;
    for (i, disk) in config.disks.iter().enumerate() {
        let name = || format!("disk{i} ({})", disk.path.display());
        let mut dev = virtio::block::Block::new(&disk.path, disk.read_only, disk.id.clone())
            .map_err(device_err(name()))?;
        dev.set_rate_limit(&disk.rate_limit)
            .map_err(device_err(name()))?;
        out.push(("block", Box::new(dev)));
    }
    for (i, net) in config.nets.iter().enumerate() {
        // Validated by VmConfig::validate; an unparsable MAC cannot get here.
        let mac = net.mac.as_deref().and_then(crate::config::parse_mac);
        let name = || format!("net{i} (tap={})", net.tap);
        let mut dev = match net.fd {
            Some(fd) => {
                // SAFETY: the fd was handed over by our parent for exactly
                // this use, and nothing else in this process owns it.
                let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
                virtio::net::Net::with_attached_fd(owned, &net.tap, mac)
                    .map_err(device_err(name()))?
            }
            None => virtio::net::Net::new(&net.tap, mac).map_err(device_err(name()))?,
        };
        dev.set_rate_limit(&net.rate_limit)
            .map_err(device_err(name()))?;
        dev.set_rx_rate_limit(&net.rx_rate_limit)
            .map_err(device_err(name()))?;
        if let Some(md) = metadata.take() {
            let (port, h) =
                MetadataPort::new(md, dev.mac()).map_err(|e| Error::host("metadata service", e))?;
            dev = dev.with_metadata(port);
            handle = Some(h);
        }
        out.push(("net", Box::new(dev)));
    }
    let rng = virtio::rng::Rng::new().map_err(device_err("rng".into()))?;
    out.push(("rng", Box::new(rng)));
    Ok((out, handle))
}

fn serial_output(config: &VmConfig) -> Result<SerialOut> {
    match &config.serial {
        SerialOutput::Stdout => Ok(Box::new(std::io::stdout())),
        SerialOutput::File(path) => CappedFile::open(path, config.serial_max_bytes)
            .map(|f| Box::new(f) as SerialOut)
            .map_err(|source| Error::SerialOutput {
                path: path.clone(),
                source,
            }),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Devices {
    io: IoContext,
    serial: Arc<Mutex<SerialDevice>>,
    i8042: Arc<Mutex<I8042>>,
    reset_evt: EventFd,
    virtio: Vec<VirtioSlot>,
}

fn wire_devices(
    vm: &Vm,
    mem: &GuestMem,
    out: SerialOut,
    backends: Vec<(&'static str, Box<dyn VirtioDevice + Send>)>,
) -> Result<Devices> {
    let overlap = |e: crate::devices::BusOverlap| Error::BootSetup {
        what: "device bus",
        source: Box::new(e),
    };
    let mut io = IoContext::default();

    let serial_irq = eventfd("serial irq")?;
    vm.register_irqfd(&serial_irq, layout::SERIAL_IRQ)?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(IrqLine(serial_irq), out)));
    io.pio
        .insert(
            serial::COM1_PORT,
            serial::PORT_COUNT,
            serial.clone() as SharedDevice,
        )
        .map_err(overlap)?;

    let reset_evt = eventfd("reset event")?;
    let kbd_irq = eventfd("i8042 irq")?;
    vm.register_irqfd(&kbd_irq, layout::I8042_KBD_IRQ)?;
    let reset_clone = reset_evt
        .try_clone()
        .map_err(|e| Error::host("reset event", e))?;
    let i8042 = Arc::new(Mutex::new(I8042::new(reset_clone, kbd_irq)));
    io.pio
        .insert(
            i8042::PORT_BASE,
            i8042::PORT_COUNT,
            i8042.clone() as SharedDevice,
        )
        .map_err(overlap)?;

    let mut slots = Vec::new();
    for (i, (kind, backend)) in backends.into_iter().enumerate() {
        let base = layout::virtio_mmio_addr(i);
        let irq = layout::VIRTIO_IRQ_FIRST + i as u32;
        let dev = VirtioMmioDevice::new(backend, mem.clone())
            .map_err(device_err(format!("{kind}{i}")))?;
        vm.register_irqfd(dev.interrupt_evt(), irq)?;
        for (q, evt) in dev.queue_evts().iter().enumerate() {
            vm.register_mmio_ioevent(evt, base + VIRTIO_MMIO_QUEUE_NOTIFY, q as u32)?;
        }
        let device = Arc::new(Mutex::new(dev));
        io.mmio
            .insert(
                base,
                virtio::MMIO_WINDOW_SIZE,
                device.clone() as SharedDevice,
            )
            .map_err(overlap)?;
        slots.push(VirtioSlot {
            device,
            kind,
            base,
            irq,
        });
    }
    Ok(Devices {
        io,
        serial,
        i8042,
        reset_evt,
        virtio: slots,
    })
}

/// Builds the VM and starts its vCPUs. Must be called before any other
/// thread exists (it blocks SIGTERM/SIGINT for the signalfd).
pub fn build(config: VmConfig) -> Result<Vmm> {
    let signals = SignalFd::new()?;
    let mem = memory::create(config.memory_mib)?;
    let kernel = boot::load_kernel(&mem, &config.kernel)?;
    let initrd = match &config.initrd {
        Some(path) => Some(boot::load_initrd(&mem, path, kernel.end)?),
        None => None,
    };
    let (backends, metadata) = virtio_backends(&config)?;
    let extras: Vec<String> = (0..backends.len())
        .map(|i| {
            format!(
                "virtio_mmio.device=4K@{:#x}:{}",
                layout::virtio_mmio_addr(i),
                layout::VIRTIO_IRQ_FIRST + i as u32
            )
        })
        .collect();
    let cmdline = boot::build_cmdline(config.cmdline.as_deref(), &extras)?;
    boot::configure(&mem, &kernel, &cmdline, initrd, config.vcpus)?;
    regs::write_tables(&mem, kernel.entry.protocol)?;
    let out = serial_output(&config)?;

    let vm = Vm::new(&mem, config.kvm_fd)?;
    if usize::from(config.vcpus) > vm.max_vcpus() {
        return Err(Error::Config(format!(
            "{} vCPUs requested, KVM allows {}",
            config.vcpus,
            vm.max_vcpus()
        )));
    }
    let devices = wire_devices(&vm, &mem, out, backends)?;
    let mut vcpus = Vec::new();
    for id in 0..config.vcpus {
        let entry = (id == 0).then_some(kernel.entry);
        vcpus.push(Vcpu::new(&vm, id, config.vcpus, entry)?);
    }

    let (api_tx, api_rx) = mpsc::channel();
    let api_evt = eventfd("API event")?;
    let api = match &config.api_socket {
        Some(path) => Some(ApiServer::start(
            path,
            api_tx,
            api_evt
                .try_clone()
                .map_err(|e| Error::host("API event", e))?,
        )?),
        None => None,
    };

    vcpu::install_kick_handler()?;
    let (report_tx, report_rx) = mpsc::channel();
    let vcpu_evt = eventfd("vCPU event")?;
    let io = Arc::new(devices.io);
    let mut handles = Vec::new();
    for v in vcpus {
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let metrics = v.metrics();
        let ctx = VcpuThreadContext {
            io: io.clone(),
            commands: cmd_rx,
            reports: report_tx.clone(),
            wake: vcpu_evt
                .try_clone()
                .map_err(|e| Error::host("vCPU event", e))?,
            mem: mem.clone(),
        };
        let thread = v.spawn(ctx)?;
        handles.push(VcpuHandle {
            commands: cmd_tx,
            thread: Some(thread),
            metrics,
            exited: false,
        });
    }
    tracing::info!(
        vcpus = config.vcpus,
        memory_mib = config.memory_mib,
        entry = format_args!("{:#x}", kernel.entry.addr),
        protocol = ?kernel.entry.protocol,
        devices = devices.virtio.len(),
        "microVM started"
    );
    let serial_metrics = crate::devices::lock(&devices.serial).metrics();
    let i8042_metrics = crate::devices::lock(&devices.i8042).metrics();
    Ok(Vmm {
        config,
        state: crate::state::VmState::Booting,
        started_at_unix_ms: unix_ms(),
        vm,
        vcpus: handles,
        vcpu_reports: report_rx,
        vcpu_evt,
        reset_evt: devices.reset_evt,
        i8042: devices.i8042,
        i8042_metrics,
        serial: devices.serial,
        serial_metrics,
        virtio: devices.virtio,
        api_requests: api_rx,
        api_evt,
        api,
        signals,
        metadata,
    })
}
