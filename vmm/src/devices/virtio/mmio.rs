//! The virtio-mmio transport, version 2 ("modern", virtio 1.x), wrapping one
//! [`VirtioDevice`].
//!
//! It owns the register file, the queues, the queue and interrupt eventfds and the
//! device-status state machine:
//!
//! ```text
//!   0 --ACKNOWLEDGE--> ACK --DRIVER--> DRIVER --FEATURES_OK--> FEATURES_OK --DRIVER_OK--> LIVE
//!   any state --write 0--> 0 (reset)          any state --FAILED--> (driver gave up)
//!   LIVE --queue corruption--> LIVE|NEEDS_RESET (queues no longer processed)
//! ```
//!
//! Each step must be taken in order; a status write that skips or clears a step is ignored
//! (and logged). `FEATURES_OK` is refused (left clear, as the spec requires) unless the
//! driver accepted `VIRTIO_F_VERSION_1` and only offered features. Feature registers are
//! writable only in `DRIVER`, queue registers only in `FEATURES_OK` (before `DRIVER_OK`),
//! except that writing 0 to `QueueReady` stops a queue in any state.

use std::os::fd::RawFd;

use serde_json::json;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::{
    VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_CONFIG_GENERATION, VIRTIO_MMIO_DEVICE_FEATURES,
    VIRTIO_MMIO_DEVICE_FEATURES_SEL, VIRTIO_MMIO_DEVICE_ID, VIRTIO_MMIO_DRIVER_FEATURES,
    VIRTIO_MMIO_DRIVER_FEATURES_SEL, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INTERRUPT_STATUS,
    VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING, VIRTIO_MMIO_MAGIC_VALUE,
    VIRTIO_MMIO_QUEUE_AVAIL_HIGH, VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH,
    VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_MMIO_QUEUE_NUM,
    VIRTIO_MMIO_QUEUE_NUM_MAX, VIRTIO_MMIO_QUEUE_READY, VIRTIO_MMIO_QUEUE_SEL,
    VIRTIO_MMIO_QUEUE_USED_HIGH, VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_STATUS,
    VIRTIO_MMIO_VENDOR_ID, VIRTIO_MMIO_VERSION,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::queue::{LogLimiter, QueueContext, QueueCorruption};
use super::{Error, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};

/// "virt" in little endian.
const MMIO_MAGIC: u32 = 0x7472_6976;
/// The modern virtio-mmio layout.
const MMIO_VERSION: u32 = 2;
/// Vendor id reported to the guest ("NUBI").
const VENDOR_ID: u32 = 0x4942_554e;

/// The virtio-mmio transport of one device.
pub struct VirtioMmioDevice {
    device: Box<dyn VirtioDevice + Send>,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    interrupt_evt: EventFd,
    interrupt_status: u32,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    config_generation: u32,
    log: LogLimiter,
    interrupts: u64,
    resets: u64,
    corruptions: u64,
}

impl std::fmt::Debug for VirtioMmioDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioMmioDevice")
            .field("device", &self.device.name())
            .field("status", &self.status)
            .field("acked_features", &self.acked_features)
            .field("interrupt_status", &self.interrupt_status)
            .finish_non_exhaustive()
    }
}

impl VirtioMmioDevice {
    /// Wraps `device`; creates one eventfd per queue and the interrupt eventfd.
    pub fn new(device: Box<dyn VirtioDevice + Send>, mem: GuestMemoryMmap) -> Result<Self, Error> {
        let sizes = device.queue_max_sizes().to_vec();
        if sizes.is_empty() {
            return Err(Error::InvalidQueue(virtio_queue::Error::InvalidMaxSize));
        }
        let queues = sizes
            .iter()
            .map(|&max| Queue::new(max))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::InvalidQueue)?;
        let queue_evts = sizes
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::EventFd)?;
        let interrupt_evt = EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?;
        Ok(VirtioMmioDevice {
            device,
            mem,
            queues,
            queue_evts,
            interrupt_evt,
            interrupt_status: 0,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            config_generation: 0,
            log: LogLimiter::new(),
            interrupts: 0,
            resets: 0,
            corruptions: 0,
        })
    }

    /// The virtio device id (`VIRTIO_ID_*`).
    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// One eventfd per queue, signalled by KVM when the guest writes the queue index to
    /// `QueueNotify` (register each as an ioeventfd at base + 0x50, datamatch = index).
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// Written when the device raises its interrupt (register as irqfd on the device's GSI).
    pub fn interrupt_evt(&self) -> &EventFd {
        &self.interrupt_evt
    }

    /// Extra host fds to watch for readability (the TAP fd of a net device).
    pub fn extra_fds(&self) -> Vec<RawFd> {
        self.device.extra_fds()
    }

    /// Whether one of [`VirtioMmioDevice::extra_fds`] is watched edge-triggered
    /// (see [`VirtioDevice::edge_triggered`]).
    pub fn edge_triggered(&self, fd: RawFd) -> bool {
        self.device.edge_triggered(fd)
    }

    /// The device status register as the driver sees it.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The feature bits the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn offered_features(&self) -> u64 {
        self.device.device_features() | VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX
    }

    fn is_live(&self) -> bool {
        self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0
            && self.status & (VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED) == 0
    }

    /// Handles a guest read of the MMIO window at `offset`.
    pub fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.device
                .read_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        data.fill(0);
        if data.len() != 4 {
            self.guest_error(format_args!(
                "{}-byte register read at {offset:#x}",
                data.len()
            ));
            return;
        }
        let Ok(reg) = u32::try_from(offset) else {
            return;
        };
        let value = match reg {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size().into()),
            VIRTIO_MMIO_QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready().into()),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status,
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            _ => {
                self.guest_error(format_args!("read of unknown register {offset:#x}"));
                0
            }
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// Handles a guest write to the MMIO window at `offset`.
    pub fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            if self.status & VIRTIO_CONFIG_S_DRIVER == 0 {
                self.guest_error(format_args!("config write before DRIVER"));
                return;
            }
            self.device
                .write_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            self.guest_error(format_args!(
                "{}-byte register write at {offset:#x}",
                data.len()
            ));
            return;
        };
        let value = u32::from_le_bytes(bytes);
        let Ok(reg) = u32::try_from(offset) else {
            return;
        };
        match reg {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(value),
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            VIRTIO_MMIO_QUEUE_NUM
            | VIRTIO_MMIO_QUEUE_READY
            | VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH => self.write_queue_register(reg, value),
            VIRTIO_MMIO_QUEUE_NOTIFY => self.notify(value),
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt_status &= !value,
            VIRTIO_MMIO_STATUS => self.write_status(value),
            _ => self.guest_error(format_args!("write to unknown register {offset:#x}")),
        }
    }

    /// Processes queue `queue_index` after its eventfd fired (drains the eventfd).
    pub fn process_queue(&mut self, queue_index: usize) {
        if let Some(evt) = self.queue_evts.get(queue_index) {
            // EAGAIN just means nothing was pending: the work is done either way.
            let _ = evt.read();
        }
        if !self.is_live() || queue_index >= self.queues.len() {
            return;
        }
        self.with_context(|device, ctx| device.process_queue(ctx, queue_index));
    }

    /// Processes an extra fd (TAP readable).
    pub fn process_extra(&mut self, fd: RawFd) {
        if !self.is_live() {
            // Nobody to deliver to: let the device drain (and drop) what is pending.
            let mut used = vec![false; self.queues.len()];
            let mut ctx = QueueContext::new(
                &self.mem,
                &mut [],
                &mut used,
                &mut self.log,
                self.device.name(),
            );
            let _ = self.device.process_extra(&mut ctx, fd);
            return;
        }
        self.with_context(|device, ctx| device.process_extra(ctx, fd));
    }

    /// Transport and device counters.
    pub fn metrics(&self) -> serde_json::Value {
        let mut value = json!({
            "type": self.device.name(),
            "status": self.status,
            "needs_reset": self.status & VIRTIO_CONFIG_S_NEEDS_RESET != 0,
            "interrupts": self.interrupts,
            "resets": self.resets,
            "queue_corruptions": self.corruptions,
        });
        if let (Some(map), serde_json::Value::Object(dev)) =
            (value.as_object_mut(), self.device.metrics())
        {
            map.extend(dev);
        }
        value
    }

    fn with_context<F>(&mut self, f: F)
    where
        F: FnOnce(
            &mut (dyn VirtioDevice + Send),
            &mut QueueContext<'_>,
        ) -> Result<(), QueueCorruption>,
    {
        let mut used = vec![false; self.queues.len()];
        let name = self.device.name();
        let result = {
            let mut ctx =
                QueueContext::new(&self.mem, &mut self.queues, &mut used, &mut self.log, name);
            f(self.device.as_mut(), &mut ctx)
        };
        let mut notify = false;
        let mut corruption = result.err();
        for (index, _) in used.iter().enumerate().filter(|(_, u)| **u) {
            match self.queues[index].needs_notification(&self.mem) {
                Ok(true) => notify = true,
                Ok(false) => {}
                Err(source) => {
                    corruption.get_or_insert(QueueCorruption {
                        queue: index,
                        source,
                    });
                }
            }
        }
        if notify {
            self.raise_interrupt(VIRTIO_MMIO_INT_VRING);
        }
        if let Some(err) = corruption {
            self.set_needs_reset(&err);
        }
    }

    fn set_needs_reset(&mut self, err: &QueueCorruption) {
        self.corruptions += 1;
        tracing::error!(
            device = self.device.name(),
            error = %err,
            cause = %err.source,
            "virtio queue corrupt: device needs reset"
        );
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
        self.raise_interrupt(VIRTIO_MMIO_INT_CONFIG);
    }

    fn raise_interrupt(&mut self, bit: u32) {
        self.interrupt_status |= bit;
        self.interrupts += 1;
        if let Err(err) = self.interrupt_evt.write(1) {
            tracing::error!(device = self.device.name(), error = %err, "cannot signal interrupt");
        }
    }

    fn notify(&mut self, value: u32) {
        // Normally absorbed by the ioeventfd; without one, forward to the same path.
        match self.queue_evts.get(value as usize) {
            Some(evt) => {
                if let Err(err) = evt.write(1) {
                    tracing::error!(error = %err, "cannot signal queue eventfd");
                }
            }
            None => self.guest_error(format_args!("notify for unknown queue {value}")),
        }
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status & (VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK)
            != VIRTIO_CONFIG_S_DRIVER
        {
            let status = self.status;
            self.guest_error(format_args!(
                "driver features written in status {status:#x}"
            ));
            return;
        }
        let value = u64::from(value);
        match self.driver_features_sel {
            0 => self.acked_features = (self.acked_features & !0xffff_ffff) | value,
            1 => self.acked_features = (self.acked_features & 0xffff_ffff) | (value << 32),
            sel => self.guest_error(format_args!("driver features select {sel}")),
        }
    }

    fn write_queue_register(&mut self, reg: u32, value: u32) {
        // "To stop using the queue the driver MUST write zero to QueueReady and MUST read
        // the value back" (virtio 1.2, 4.2.2.3): allowed in any state, also when live.
        if reg == VIRTIO_MMIO_QUEUE_READY && value == 0 {
            if let Some(queue) = self.queues.get_mut(self.queue_sel as usize) {
                queue.set_ready(false);
            }
            return;
        }
        if self.status & (VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK)
            != VIRTIO_CONFIG_S_FEATURES_OK
        {
            let status = self.status;
            self.guest_error(format_args!(
                "queue register {reg:#x} written in status {status:#x}"
            ));
            return;
        }
        let sel = self.queue_sel;
        let Some(queue) = self.queues.get_mut(sel as usize) else {
            self.guest_error(format_args!(
                "queue register {reg:#x} for absent queue {sel}"
            ));
            return;
        };
        if queue.ready() && reg != VIRTIO_MMIO_QUEUE_READY {
            self.guest_error(format_args!(
                "queue {sel} register {reg:#x} written while ready"
            ));
            return;
        }
        match reg {
            VIRTIO_MMIO_QUEUE_NUM => match u16::try_from(value) {
                Ok(size) => match queue.try_set_size(size) {
                    Ok(()) => {}
                    Err(_) => self.guest_error(format_args!("queue {sel}: invalid size {value}")),
                },
                Err(_) => self.guest_error(format_args!("queue {sel}: invalid size {value}")),
            },
            VIRTIO_MMIO_QUEUE_READY => queue.set_ready(value == 1),
            VIRTIO_MMIO_QUEUE_DESC_LOW => queue.set_desc_table_address(Some(value), None),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => queue.set_desc_table_address(None, Some(value)),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => queue.set_avail_ring_address(Some(value), None),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => queue.set_avail_ring_address(None, Some(value)),
            VIRTIO_MMIO_QUEUE_USED_LOW => queue.set_used_ring_address(Some(value), None),
            VIRTIO_MMIO_QUEUE_USED_HIGH => queue.set_used_ring_address(None, Some(value)),
            _ => {}
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // NEEDS_RESET belongs to the device; drivers write back what they read.
        let value = value & !VIRTIO_CONFIG_S_NEEDS_RESET;
        let current = self.status & !VIRTIO_CONFIG_S_NEEDS_RESET;
        if value & current != current {
            self.guest_error(format_args!(
                "status {value:#x} clears bits of {current:#x} without reset"
            ));
            return;
        }
        let added = value & !current;
        if added & VIRTIO_CONFIG_S_FAILED != 0 {
            self.status |= VIRTIO_CONFIG_S_FAILED;
            tracing::warn!(device = self.device.name(), "driver set FAILED");
        }
        const STEPS: [u32; 4] = [
            VIRTIO_CONFIG_S_ACKNOWLEDGE,
            VIRTIO_CONFIG_S_DRIVER,
            VIRTIO_CONFIG_S_FEATURES_OK,
            VIRTIO_CONFIG_S_DRIVER_OK,
        ];
        let known = STEPS.iter().fold(VIRTIO_CONFIG_S_FAILED, |a, b| a | b);
        if added & !known != 0 {
            self.guest_error(format_args!("unknown status bits {:#x}", added & !known));
        }
        for (i, &step) in STEPS.iter().enumerate() {
            if added & step == 0 {
                continue;
            }
            let prerequisite = STEPS[..i].iter().fold(0, |a, b| a | b);
            if self.status & prerequisite != prerequisite {
                let status = self.status;
                self.guest_error(format_args!(
                    "status bit {step:#x} set out of order (status {status:#x})"
                ));
                return;
            }
            match step {
                VIRTIO_CONFIG_S_FEATURES_OK if !self.features_acceptable() => {
                    let (acked, offered) = (self.acked_features, self.offered_features());
                    self.guest_error(format_args!(
                        "features {acked:#x} refused (offered {offered:#x}, VERSION_1 required)"
                    ));
                    return;
                }
                VIRTIO_CONFIG_S_DRIVER_OK => {
                    self.status |= step;
                    self.activate();
                    continue;
                }
                _ => {}
            }
            self.status |= step;
        }
    }

    fn features_acceptable(&self) -> bool {
        self.acked_features & !self.offered_features() == 0
            && self.acked_features & VIRTIO_F_VERSION_1 != 0
    }

    fn activate(&mut self) {
        let event_idx = self.acked_features & VIRTIO_RING_F_EVENT_IDX != 0;
        for (index, queue) in self.queues.iter_mut().enumerate() {
            if !queue.ready() {
                continue;
            }
            if !queue.is_valid(&self.mem) {
                let err = QueueCorruption {
                    queue: index,
                    source: virtio_queue::Error::QueueNotReady,
                };
                tracing::warn!(
                    device = self.device.name(),
                    queue = index,
                    "queue layout invalid (size, alignment or outside guest memory)"
                );
                self.set_needs_reset(&err);
                return;
            }
            queue.set_event_idx(event_idx);
        }
        self.device.activate(self.acked_features);
        tracing::debug!(
            device = self.device.name(),
            features = self.acked_features,
            "virtio device activated"
        );
        // Buffers made available before DRIVER_OK were not processed: look now.
        for index in 0..self.queues.len() {
            if self.is_live() && self.queues[index].ready() {
                self.with_context(|device, ctx| device.process_queue(ctx, index));
            }
        }
    }

    fn reset(&mut self) {
        if self.status != 0 {
            self.resets += 1;
        }
        for queue in &mut self.queues {
            queue.reset();
        }
        self.device.reset();
        self.status = 0;
        self.interrupt_status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.queue_sel = 0;
    }

    fn guest_error(&mut self, what: std::fmt::Arguments<'_>) {
        if let Some(suppressed) = self.log.allow() {
            tracing::warn!(
                device = self.device.name(),
                suppressed,
                "guest driver error: {what}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{guest_memory, read32, Driver, DATA_START};
    use vm_memory::{Bytes, GuestAddress};

    /// A device with two queues that completes every chain with used length 7.
    #[derive(Debug, Default)]
    struct Fake {
        activated: Option<u64>,
        resets: u32,
        config: [u8; 8],
    }

    impl VirtioDevice for Fake {
        fn device_type(&self) -> u32 {
            42
        }
        fn name(&self) -> &'static str {
            "fake"
        }
        fn device_features(&self) -> u64 {
            (1 << 5) | (1 << 40)
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 8]
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = self.config.get(offset as usize + i).copied().unwrap_or(0);
            }
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            for (i, b) in data.iter().enumerate() {
                if let Some(c) = self.config.get_mut(offset as usize + i) {
                    *c = *b;
                }
            }
        }
        fn activate(&mut self, acked: u64) {
            self.activated = Some(acked);
        }
        fn process_queue(
            &mut self,
            ctx: &mut QueueContext<'_>,
            queue_index: usize,
        ) -> Result<(), QueueCorruption> {
            while let Some(chain) = ctx.pop(queue_index)? {
                ctx.complete(queue_index, chain.head_index(), 7)?;
            }
            Ok(())
        }
        fn reset(&mut self) {
            self.resets += 1;
            self.activated = None;
        }
        fn metrics(&self) -> serde_json::Value {
            json!({ "resets_seen": self.resets })
        }
    }

    fn new_dev() -> (VirtioMmioDevice, GuestMemoryMmap) {
        let mem = guest_memory();
        let dev = VirtioMmioDevice::new(Box::<Fake>::default(), mem.clone()).unwrap();
        (dev, mem)
    }

    fn w(dev: &mut VirtioMmioDevice, off: u64, v: u32) {
        dev.mmio_write(off, &v.to_le_bytes());
    }

    #[test]
    fn identification_registers() {
        let (mut dev, _) = new_dev();
        assert_eq!(read32(&mut dev, 0x00), 0x7472_6976);
        assert_eq!(read32(&mut dev, 0x04), 2);
        assert_eq!(read32(&mut dev, 0x08), 42);
        assert_eq!(dev.device_type(), 42);
        assert_eq!(read32(&mut dev, 0x0c), VENDOR_ID);
        assert_eq!(dev.queue_evts().len(), 2);
        // Sub-word register reads return zero, not garbage.
        let mut b = [0xffu8; 2];
        dev.mmio_read(0x00, &mut b);
        assert_eq!(b, [0, 0]);
    }

    #[test]
    fn feature_negotiation() {
        let (mut dev, _) = new_dev();
        // Device bit 5 and EVENT_IDX (bit 29) in the low word ...
        w(&mut dev, 0x14, 0);
        assert_eq!(read32(&mut dev, 0x10), (1 << 5) | (1 << 29));
        // ... VERSION_1 (bit 32) and device bit 40 in the high word.
        w(&mut dev, 0x14, 1);
        assert_eq!(read32(&mut dev, 0x10), 1 | (1 << 8));
        w(&mut dev, 0x14, 2);
        assert_eq!(read32(&mut dev, 0x10), 0);

        // Features cannot be written before DRIVER.
        w(&mut dev, 0x24, 1);
        w(&mut dev, 0x20, 1);
        assert_eq!(dev.acked_features(), 0);

        w(&mut dev, 0x70, 1);
        w(&mut dev, 0x70, 3);
        // Without VERSION_1, FEATURES_OK is refused.
        w(&mut dev, 0x24, 0);
        w(&mut dev, 0x20, 1 << 5);
        w(&mut dev, 0x70, 0xb);
        assert_eq!(read32(&mut dev, 0x70), 3);
        // An unoffered feature is refused too.
        w(&mut dev, 0x24, 1);
        w(&mut dev, 0x20, 1 | (1 << 3));
        w(&mut dev, 0x70, 0xb);
        assert_eq!(read32(&mut dev, 0x70), 3);
        // Offered features with VERSION_1: accepted.
        w(&mut dev, 0x20, 1 | (1 << 8));
        w(&mut dev, 0x70, 0xb);
        assert_eq!(read32(&mut dev, 0x70), 0xb);
        assert_eq!(dev.acked_features(), (1 << 5) | (1 << 32) | (1 << 40));
        // Frozen after FEATURES_OK.
        w(&mut dev, 0x24, 0);
        w(&mut dev, 0x20, 0);
        assert_eq!(dev.acked_features(), (1 << 5) | (1 << 32) | (1 << 40));
    }

    #[test]
    fn status_steps_must_be_taken_in_order() {
        let (mut dev, _) = new_dev();
        w(&mut dev, 0x70, 2); // DRIVER before ACKNOWLEDGE
        assert_eq!(read32(&mut dev, 0x70), 0);
        w(&mut dev, 0x70, 1);
        w(&mut dev, 0x70, 1 | 8); // FEATURES_OK before DRIVER
        assert_eq!(read32(&mut dev, 0x70), 1);
        w(&mut dev, 0x70, 3);
        w(&mut dev, 0x70, 3 | 4); // DRIVER_OK before FEATURES_OK
        assert_eq!(read32(&mut dev, 0x70), 3);
        w(&mut dev, 0x70, 1); // clearing a bit without reset
        assert_eq!(read32(&mut dev, 0x70), 3);
        w(&mut dev, 0x70, 3 | 0x80); // FAILED is always accepted
        assert_eq!(read32(&mut dev, 0x70), 0x83);
        w(&mut dev, 0x70, 0);
        assert_eq!(read32(&mut dev, 0x70), 0);
        // Several steps in one write are fine when in order.
        w(&mut dev, 0x70, 3);
        assert_eq!(read32(&mut dev, 0x70), 3);
    }

    #[test]
    fn queue_registers_and_ready() {
        let (mut dev, mem) = new_dev();
        // Before FEATURES_OK queue registers are ignored.
        w(&mut dev, 0x30, 0);
        w(&mut dev, 0x38, 8);
        w(&mut dev, 0x44, 1);
        assert_eq!(read32(&mut dev, 0x44), 0);
        w(&mut dev, 0x70, 1);
        w(&mut dev, 0x70, 3);
        w(&mut dev, 0x24, 1);
        w(&mut dev, 0x20, 1);
        w(&mut dev, 0x70, 0xb);
        assert_eq!(read32(&mut dev, 0x34), 16);
        w(&mut dev, 0x30, 1);
        assert_eq!(read32(&mut dev, 0x34), 8);
        w(&mut dev, 0x30, 7);
        assert_eq!(read32(&mut dev, 0x34), 0, "absent queue has max 0");
        w(&mut dev, 0x30, 0);
        w(&mut dev, 0x38, 3); // not a power of two: ignored
        w(&mut dev, 0x38, 32); // above max: ignored
        assert_eq!(dev.queues[0].size(), 16);
        w(&mut dev, 0x38, 4);
        assert_eq!(dev.queues[0].size(), 4);
        w(&mut dev, 0x80, 0x1_0000);
        w(&mut dev, 0x90, 0x1_1000);
        w(&mut dev, 0xa0, 0x1_2000);
        w(&mut dev, 0x44, 1);
        assert_eq!(read32(&mut dev, 0x44), 1);
        // Layout is frozen while ready.
        w(&mut dev, 0x38, 8);
        assert_eq!(dev.queues[0].size(), 4);
        w(&mut dev, 0x70, 0xf);
        assert_eq!(read32(&mut dev, 0x70), 0xf);
        assert!(dev.queues[0].is_valid(&mem));
        // Queue registers are frozen after DRIVER_OK ...
        w(&mut dev, 0x30, 1);
        w(&mut dev, 0x44, 1);
        assert_eq!(read32(&mut dev, 0x44), 0);
        w(&mut dev, 0x30, 0);
        w(&mut dev, 0x80, 0x5_0000);
        assert_eq!(dev.queues[0].desc_table(), 0x1_0000);
        // ... but a driver may stop a live queue by writing 0 to QueueReady.
        w(&mut dev, 0x44, 0);
        assert_eq!(read32(&mut dev, 0x44), 0);
        w(&mut dev, 0x44, 1);
        assert_eq!(read32(&mut dev, 0x44), 0, "no restart without reset");
        // Reset clears everything.
        w(&mut dev, 0x70, 0);
        w(&mut dev, 0x30, 0);
        assert_eq!(read32(&mut dev, 0x44), 0);
        assert_eq!(dev.queues[0].size(), 16);
        assert_eq!(dev.acked_features(), 0);
        assert_eq!(dev.metrics()["resets"], 1);
        assert_eq!(dev.metrics()["resets_seen"], 1);
    }

    #[test]
    fn invalid_queue_layout_at_driver_ok_needs_reset() {
        let (mut dev, _) = new_dev();
        w(&mut dev, 0x70, 1);
        w(&mut dev, 0x70, 3);
        w(&mut dev, 0x24, 1);
        w(&mut dev, 0x20, 1);
        w(&mut dev, 0x70, 0xb);
        w(&mut dev, 0x30, 0);
        w(&mut dev, 0x80, 0);
        w(&mut dev, 0x84, 0x10); // descriptor table at 64 GiB: outside guest memory
        w(&mut dev, 0x90, 0x1000);
        w(&mut dev, 0xa0, 0x2000);
        w(&mut dev, 0x44, 1);
        w(&mut dev, 0x70, 0xf);
        assert_eq!(read32(&mut dev, 0x70), 0x4f);
        assert_eq!(read32(&mut dev, 0x60), 2);
        assert_eq!(dev.interrupt_evt().read().unwrap(), 1);
        // The driver reading back NEEDS_RESET and writing it is harmless.
        w(&mut dev, 0x70, 0x4f);
        assert_eq!(read32(&mut dev, 0x70), 0x4f);
        w(&mut dev, 0x70, 0);
        assert_eq!(read32(&mut dev, 0x70), 0);
    }

    #[test]
    fn used_buffer_interrupt_and_ack() {
        let (mut dev, mem) = new_dev();
        let mut drv = Driver::activate(&mut dev, &mem, 0, 8);
        let acked = dev.acked_features();
        assert_eq!(acked, VIRTIO_F_VERSION_1);
        let head = drv.add_chain(1, &[(DATA_START, 16, true)]);
        // The guest's QueueNotify write (without ioeventfd) signals the queue eventfd.
        w(&mut dev, 0x50, 1);
        assert_eq!(dev.queue_evts()[1].read().unwrap(), 1);
        dev.queue_evts()[1].write(1).unwrap();
        dev.process_queue(1);
        // The eventfd was drained.
        assert!(dev.queue_evts()[1].read().is_err());
        assert_eq!(drv.take_used(1), vec![(u32::from(head), 7)]);
        assert_eq!(read32(&mut dev, 0x60), 1);
        assert_eq!(dev.interrupt_evt().read().unwrap(), 1);
        w(&mut dev, 0x64, 1);
        assert_eq!(read32(&mut dev, 0x60), 0);
        assert_eq!(dev.metrics()["interrupts"], 1);
        assert_eq!(dev.metrics()["type"], "fake");
    }

    #[test]
    fn event_idx_suppresses_notifications() {
        let (mut dev, mem) = new_dev();
        let mut drv = Driver::activate(&mut dev, &mem, VIRTIO_RING_F_EVENT_IDX, 8);
        assert_ne!(dev.acked_features() & VIRTIO_RING_F_EVENT_IDX, 0);
        // used_event (after the avail ring of queue 0, size 8) = 0: interrupt when used idx
        // moves past 0, i.e. for the first completion only.
        drv.add_chain(0, &[(DATA_START, 16, true)]);
        dev.process_queue(0);
        assert_eq!(dev.interrupt_evt().read().unwrap(), 1);
        drv.add_chain(0, &[(DATA_START, 16, true)]);
        dev.process_queue(0);
        assert!(dev.interrupt_evt().read().is_err(), "suppressed");
        assert_eq!(drv.take_used(0).len(), 2);
        // The device published avail_event = next_avail so the driver keeps notifying.
        let avail_event: u16 = mem
            .read_obj(GuestAddress(0x1_0000 + 0x8000 + 4 + 8 * 8))
            .unwrap();
        assert_eq!(avail_event, 2);
        // used_event = 2: the third completion (used idx 2 -> 3) interrupts.
        mem.write_obj(2u16, GuestAddress(0x1_0000 + 16 * 8 + 4 + 2 * 8))
            .unwrap();
        drv.add_chain(0, &[(DATA_START, 16, true)]);
        dev.process_queue(0);
        assert_eq!(dev.interrupt_evt().read().unwrap(), 1);
    }

    #[test]
    fn stopped_queue_is_not_processed() {
        let (mut dev, mem) = new_dev();
        let mut drv = Driver::activate(&mut dev, &mem, 0, 8);
        w(&mut dev, 0x30, 0);
        w(&mut dev, 0x44, 0);
        drv.add_chain(0, &[(DATA_START, 16, true)]);
        dev.process_queue(0);
        assert!(drv.take_used(0).is_empty());
        assert_eq!(dev.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        // The other queue keeps working.
        drv.add_chain(1, &[(DATA_START, 16, true)]);
        dev.process_queue(1);
        assert_eq!(drv.take_used(1).len(), 1);
    }

    #[test]
    fn avail_index_jump_needs_reset() {
        let (mut dev, mem) = new_dev();
        let mut drv = Driver::activate(&mut dev, &mem, 0, 8);
        drv.set_avail_idx(0, 100);
        dev.process_queue(0);
        assert_ne!(dev.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        assert_eq!(dev.metrics()["needs_reset"], true);
        assert_eq!(read32(&mut dev, 0x60), 2);
    }

    #[test]
    fn config_space_access() {
        let (mut dev, _) = new_dev();
        dev.mmio_write(0x102, &[9, 8]);
        let mut b = [0u8; 4];
        dev.mmio_read(0x100, &mut b);
        assert_eq!(b, [0; 4], "config writes before DRIVER are ignored");
        w(&mut dev, 0x70, 1);
        w(&mut dev, 0x70, 3);
        dev.mmio_write(0x102, &[9, 8]);
        dev.mmio_read(0x100, &mut b);
        assert_eq!(b, [0, 0, 9, 8]);
        assert_eq!(read32(&mut dev, 0xfc), 0);
    }

    #[test]
    fn processing_before_driver_ok_is_ignored() {
        let (mut dev, _) = new_dev();
        dev.process_queue(0);
        dev.process_queue(5);
        dev.process_extra(-1);
        assert_eq!(dev.status(), 0);
    }
}
