//! The multi-step launch and tear-down of an instance's host resources,
//! each step idempotent so that repeating after a crash converges:
//! directory + spec, image check, root disk, bridge + address + TAP, cgroup,
//! then the VMM process. Failures map to typed state reasons.

use crate::config::Addressing;
use crate::context::HostContext;
use crate::error::Error;
use crate::host::cgroup::{Cgroups, IoMax, IoOutcome};
use crate::host::vmm_process::{VmmApi, VmmLaunch, VmmProcess};
use crate::host::{disk, image, tap};
use crate::layout::{off_runtime, write_json, ExtraPort, InstanceDir, NetAlloc};
use crate::runtime::{ReasonCode, StateReason};
use crate::timeline::Timeline;
use crate::types::InstanceSpec;
use nubis_imds::ImdsConfig;

fn reason(code: ReasonCode, e: impl std::fmt::Display) -> StateReason {
    StateReason::new(code, e.to_string())
}

/// Error chain as one line (for reasons shown to operators).
pub fn chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Prepares directory, disk, network and cgroup; returns the VMM launch.
pub async fn prepare(
    ctx: &HostContext,
    spec: &InstanceSpec,
    dir: &InstanceDir,
) -> Result<VmmLaunch, StateReason> {
    prepare_timed(ctx, spec, dir, &mut Timeline::begin()).await
}

/// [`prepare`], marking each step's end on `tl`. At most
/// `instances.max_parallel_launches` instances prepare at once; the file
/// work (spec, image check, disk) runs on the blocking pool so that a burst
/// of launches prepares side by side without stalling the runtime.
pub async fn prepare_timed(
    ctx: &HostContext,
    spec: &InstanceSpec,
    dir: &InstanceDir,
    tl: &mut Timeline,
) -> Result<VmmLaunch, StateReason> {
    let internal = |e: Error| reason(ReasonCode::InternalError, chain(&e));
    let _slot = ctx
        .launch_slots
        .acquire()
        .await
        .map_err(|e| reason(ReasonCode::InternalError, e))?;
    tl.mark("queued");
    {
        let (dir, spec) = (dir.clone(), spec.clone());
        tokio::task::spawn_blocking(move || {
            dir.create()?;
            write_json(&dir.spec(), &spec)
        })
        .await
        .map_err(|e| reason(ReasonCode::InternalError, e))?
        .map_err(internal)?;
    }
    tl.mark("dir");

    // Image: present and every checksum right. Unchanged files (same inode,
    // size, mtime and ctime) are not hashed again (see `image::DigestCache`).
    let loaded = {
        let (image_dir, name) = (ctx.config.image_dir.clone(), spec.image.clone());
        let digests = ctx.digests.clone();
        tokio::task::spawn_blocking(move || image::load_cached(&image_dir, &name, &digests))
            .await
            .map_err(|e| reason(ReasonCode::InternalError, e))?
    };
    let img = loaded.map_err(|e| match e {
        Error::Image { ref problem, .. } if problem.starts_with("not found") => {
            reason(ReasonCode::ImageNotFound, chain(&e))
        }
        _ => reason(ReasonCode::ImageInvalid, chain(&e)),
    })?;
    if let Some(want) = &spec.image_manifest_sha256 {
        if !want.eq_ignore_ascii_case(&img.manifest_sha256) {
            return Err(reason(
                ReasonCode::ImageInvalid,
                format!(
                    "image {} has manifest sha256 {}, the assignment wants {want}",
                    img.name, img.manifest_sha256
                ),
            ));
        }
    }
    if let Some(min) = img.requires.min_memory_mib {
        if spec.memory_mib < min {
            return Err(reason(
                ReasonCode::MemoryInvalid,
                format!(
                    "image {} needs at least {min} MiB, instance has {}",
                    img.name, spec.memory_mib
                ),
            ));
        }
    }
    tl.mark("image");

    // Root disk.
    let disk_path = dir.disk();
    let (src, dst, mib, id) = (
        img.disk.clone(),
        disk_path.clone(),
        ctx.config.instances.blank_disk_mib,
        spec.id.clone(),
    );
    let grow_to = spec.root_volume_gib.map(|g| u64::from(g) << 30);
    let made = tokio::task::spawn_blocking(move || {
        match src {
            Some(src) => disk::clone_disk(&src, &dst),
            None => disk::create_blank(&dst, mib, &id),
        }?;
        // The requested root volume size: grown on every prepare (a no-op
        // once done), never shrunk below the image's own size.
        match grow_to {
            Some(bytes) => disk::grow(&dst, bytes).map(|_| ()),
            None => Ok(()),
        }
    })
    .await
    .map_err(|e| reason(ReasonCode::InternalError, e))?;
    made.map_err(|e| reason(ReasonCode::DiskSetupFailed, chain(&e)))?;
    tl.mark("disk");

    let net = match &spec.vpc {
        Some(vpc) => prepare_routed_port(ctx, spec, dir, vpc, tl).await?,
        None => prepare_bridge_port(ctx, spec, dir, tl).await?,
    };
    tl.mark("tap");

    // cgroup.
    let mem = (spec.memory_mib + ctx.config.instances.vmm_memory_overhead_mib) * 1024 * 1024;
    ctx.cgroups
        .create(&spec.id, spec.vcpus, mem)
        .map_err(|e| reason(ReasonCode::CgroupSetupFailed, chain(&e)))?;
    let limits = crate::types::DeviceLimits::effective(spec, &ctx.config.limits);
    let io = IoMax {
        rbps: limits.io_read_bps,
        wbps: limits.io_write_bps,
        riops: limits.io_read_iops,
        wiops: limits.io_write_iops,
    };
    match ctx.cgroups.set_io_max(&spec.id, &disk_path, &io) {
        Ok(IoOutcome::Unlimited) => {}
        Ok(IoOutcome::Set(line)) => tracing::debug!(instance = %spec.id, %line, "io.max set"),
        Ok(IoOutcome::Skipped(why)) => {
            tracing::warn!(instance = %spec.id, %why, "disk I/O limits ([limits] io_*) not applied")
        }
        Err(e) => return Err(reason(ReasonCode::CgroupSetupFailed, chain(&e))),
    }
    tl.mark("cgroup");

    // The image's own identity/network arguments are placeholders: ours win.
    let mut cmdline: String = img
        .cmdline
        .split_whitespace()
        .filter(|a| !["nubis.id=", "ip=", "gw="].iter().any(|p| a.starts_with(p)))
        .collect::<Vec<_>>()
        .join(" ");
    if !spec.cmdline_extra.contains("nubis.id=") {
        cmdline.push_str(&format!(" nubis.id={}", spec.id));
    }
    cmdline.push_str(&format!(" ip={}/{} gw={}", net.ip, net.prefix, net.gateway));
    cmdline.push_str(&extra_cmdline(&net.extra));
    if !spec.cmdline_extra.is_empty() {
        cmdline.push(' ');
        cmdline.push_str(&spec.cmdline_extra);
    }
    let metadata = match metadata_of(spec, &net) {
        Some(md) => {
            let path = dir.metadata();
            off_runtime(move || write_json(&path, &md)).map_err(internal)?;
            Some(dir.metadata())
        }
        None => None,
    };
    tl.mark("metadata");
    Ok(VmmLaunch {
        binary: ctx.config.vmm_binary.clone(),
        kernel: img.kernel,
        initrd: img.initrd,
        cmdline: cmdline.trim().to_string(),
        vcpus: spec.vcpus,
        memory_mib: spec.memory_mib,
        disk: disk_path,
        extra_nets: net
            .extra
            .iter()
            .map(|x| (x.tap.clone(), x.mac.clone()))
            .collect(),
        net: Some((net.tap, net.mac)),
        serial: dir.console(),
        serial_max_bytes: ctx.config.instances.console_max_bytes,
        api_socket: dir.api_socket(),
        stdout: dir.stdout(),
        stderr: dir.stderr(),
        metadata,
        limits,
    })
}

/// The legacy network: bridge with the spec's gateway (or the node's
/// default), an address from the node's range unless the spec has one, a
/// TAP on the bridge and its anti-spoofing rules.
async fn prepare_bridge_port(
    ctx: &HostContext,
    spec: &InstanceSpec,
    dir: &InstanceDir,
    tl: &mut Timeline,
) -> Result<NetAlloc, StateReason> {
    let net_fail = |e: Error| reason(ReasonCode::NetworkSetupFailed, chain(&e));
    let default = ctx.addressing.map(|a| (a.gateway, a.prefix));
    let subnet = spec
        .network(default)
        .map_err(|why| reason(ReasonCode::NetworkSetupFailed, why))?;
    let net = {
        let _g = ctx.net_lock.lock().await;
        // Allocation from the node's range (no address in the spec, so no
        // spec subnet either) uses the configured range.
        let plan = Addressing {
            gateway: subnet.gateway,
            prefix: subnet.prefix,
            first: ctx.addressing.map_or(subnet.gateway, |a| a.first),
            last: ctx.addressing.map_or(subnet.gateway, |a| a.last),
        };
        ctx.ensure_bridge_for(plan.gateway, plan.prefix)
            .await
            .map_err(net_fail)?;
        let mac = spec.mac.clone().unwrap_or_else(|| tap::mac_for(&spec.id));
        let name = tap::tap_name(&ctx.config.network.tap_prefix, &spec.id);
        match ctx.layout.existing_net(&spec.id).map_err(net_fail)? {
            Some(n) => n,
            None => {
                // Choose under the lock; record (a synced write) outside it,
                // the address reserved meanwhile, so a burst's allocations do
                // not queue behind each other's fsync.
                let reserved = ctx.reserved_ips();
                let n = ctx
                    .layout
                    .choose_net(&spec.id, &plan, mac, name, spec.ip, &reserved)
                    .map_err(net_fail)?;
                ctx.reserve_ip(n.ip);
                drop(_g);
                let (path, rec) = (dir.net(), n.clone());
                let written = tokio::task::spawn_blocking(move || write_json(&path, &rec)).await;
                // Under the lock: an allocator either sees the reservation
                // or (after this) the recorded net.json.
                let _g = ctx.net_lock.lock().await;
                ctx.release_ip(n.ip);
                written
                    .map_err(|e| reason(ReasonCode::InternalError, e))?
                    .map_err(net_fail)?;
                n
            }
        }
    };
    tl.mark("net");
    if let Err(e) = tap::ensure_tap(&net.tap, &ctx.config.network.bridge).await {
        // Maybe the bridge went away under us: set it up again next time.
        ctx.forget_bridge();
        return Err(net_fail(e));
    }
    // Rules for the new TAP before the VMM can send anything: until then its
    // frames are dropped as coming from a TAP without rules.
    ctx.firewall.sync(&ctx.layout, false).await.map_err(|e| {
        reason(
            ReasonCode::NetworkSetupFailed,
            format!("firewall: {}", chain(&e)),
        )
    })?;
    Ok(net)
}

/// A VPC instance's network: its address from the spec (VPCs may overlap,
/// so no range or uniqueness check against other instances), a routed TAP
/// (not on the bridge) and the VPC data plane's rule, route and filters for
/// it, in place before the VMM can send anything.
async fn prepare_routed_port(
    ctx: &HostContext,
    spec: &InstanceSpec,
    dir: &InstanceDir,
    vpc: &crate::types::VpcAttachment,
    tl: &mut Timeline,
) -> Result<NetAlloc, StateReason> {
    let net_fail = |e: Error| reason(ReasonCode::NetworkSetupFailed, chain(&e));
    let subnet = spec
        .network(None)
        .map_err(|why| reason(ReasonCode::NetworkSetupFailed, why))?;
    let ip = subnet.ip.ok_or_else(|| {
        reason(
            ReasonCode::NetworkSetupFailed,
            "a VPC instance's spec names no address",
        )
    })?;
    let prefix = &ctx.config.network.tap_prefix;
    let extra = extra_ports(spec, prefix);
    let net = match ctx.layout.existing_net(&spec.id).map_err(net_fail)? {
        Some(n) if n.extra == extra => n,
        found => {
            // New, or its secondary interfaces changed while it was
            // stopped: the TAPs of interfaces that went are removed before
            // the record stops naming them (a crash in between removes
            // them again).
            if let Some(old) = &found {
                for x in old.extra.iter().filter(|x| !extra.contains(x)) {
                    tap::delete_tap(&x.tap).await.map_err(net_fail)?;
                }
            }
            let n = NetAlloc {
                extra,
                ..found.unwrap_or_else(|| NetAlloc {
                    ip,
                    prefix: subnet.prefix,
                    gateway: subnet.gateway,
                    mac: spec.mac.clone().unwrap_or_else(|| tap::mac_for(&spec.id)),
                    tap: tap::tap_name(prefix, &spec.id),
                    vpc: Some(vpc.clone()),
                    extra: Vec::new(),
                })
            };
            let (path, rec) = (dir.net(), n.clone());
            off_runtime(move || write_json(&path, &rec)).map_err(net_fail)?;
            n
        }
    };
    tl.mark("net");
    tap::ensure_routed_tap(&net.tap).await.map_err(net_fail)?;
    for x in &net.extra {
        tap::ensure_routed_tap(&x.tap).await.map_err(net_fail)?;
    }
    ctx.vpc.sync(&ctx.layout, false).await.map_err(|e| {
        reason(
            ReasonCode::NetworkSetupFailed,
            format!("VPC data plane: {}", chain(&e)),
        )
    })?;
    Ok(net)
}

/// The routed ports of `spec`'s secondary interfaces.
pub fn extra_ports(spec: &InstanceSpec, tap_prefix: &str) -> Vec<ExtraPort> {
    spec.extra_networks
        .iter()
        .map(|x| ExtraPort {
            device_index: x.device_index,
            ip: x.ip,
            prefix: x.prefix_len,
            gateway: x.gateway,
            mac: x.mac.to_ascii_lowercase(),
            tap: tap::tap_name_at(tap_prefix, &spec.id, x.device_index),
            vpc: x.vpc.clone(),
        })
        .collect()
}

/// The guest's command-line arguments for its secondary interfaces:
/// `nubis.net<N>=<ip>/<prefix>,<gateway>` for the N-th virtio-net device
/// after the primary one (N from 1, in device-index order, as the VMM's
/// `--net` devices are).
pub fn extra_cmdline(extra: &[ExtraPort]) -> String {
    extra
        .iter()
        .enumerate()
        .map(|(n, x)| format!(" nubis.net{}={}/{},{}", n + 1, x.ip, x.prefix, x.gateway))
        .collect()
}

/// What the instance's metadata service serves: the control plane's data
/// with the instance's own address and MAC, and its secondary interfaces.
pub fn metadata_of(spec: &InstanceSpec, net: &NetAlloc) -> Option<ImdsConfig> {
    let mut md = spec.metadata.clone()?;
    let m = &mut md.metadata;
    m.instance_id = spec.id.to_string();
    m.local_ipv4 = net.ip.to_string();
    m.mac = net.mac.to_ascii_lowercase();
    m.extra_interfaces = spec
        .extra_networks
        .iter()
        .map(|x| nubis_imds::InterfaceMetadata {
            device_number: x.device_index,
            interface_id: x.interface_id.clone(),
            mac: x.mac.to_ascii_lowercase(),
            local_ipv4: x.ip.to_string(),
            security_group_ids: x.vpc.security_group_ids.clone(),
            subnet_id: x.vpc.subnet_id.clone(),
            subnet_cidr: x.vpc.subnet_cidr.clone(),
            vpc_id: x.vpc.vpc_id.clone(),
        })
        .collect();
    if m.hostname.is_empty() {
        let dashed = net.ip.to_string().replace('.', "-");
        m.hostname = format!("ip-{dashed}.{}.compute.internal", m.region);
    }
    Some(md)
}

/// Brings a running instance's metadata service up to date with `spec`
/// (ModifyInstanceMetadataOptions, or an agent restarted meanwhile):
/// rewrites `metadata.json` when it differs and has the VMM reread it.
/// Idempotent; a no-op when nothing changed.
pub async fn sync_metadata(spec: &InstanceSpec, dir: &InstanceDir) -> Result<bool, Error> {
    let Some(net) = crate::layout::read_json::<NetAlloc>(&dir.net())? else {
        return Ok(false);
    };
    let Some(want) = metadata_of(spec, &net) else {
        return Ok(false);
    };
    let path = dir.metadata();
    let have = crate::layout::read_json::<ImdsConfig>(&path).ok().flatten();
    if have.as_ref() == Some(&want) {
        return Ok(false);
    }
    let p = path.clone();
    let instance_dir = dir.path().to_path_buf();
    off_runtime(move || {
        write_json(&p, &want)?;
        // The new copy is the agent's: hand it back to the VMM's uid.
        crate::host::jail::give_to_owner_of(&p, &instance_dir)
    })?;
    VmmApi::new(dir.api_socket())
        .call(nubis_vmm_api::Action::ReloadMetadata)
        .await?;
    Ok(true)
}

/// Spawns the VMM into the instance's cgroup and records it in `vmm.json`.
pub fn spawn(
    ctx: &HostContext,
    spec: &InstanceSpec,
    dir: &InstanceDir,
    launch: &VmmLaunch,
) -> Result<VmmProcess, StateReason> {
    let sock_len = launch.api_socket.as_os_str().len();
    if sock_len >= 108 {
        return Err(reason(
            ReasonCode::VmmSpawnFailed,
            format!("API socket path is {sock_len} bytes; Unix sockets allow 107"),
        ));
    }
    // A fresh console log per boot; the previous one is kept as .1.
    let console = dir.console();
    if console.exists() {
        let _ = std::fs::rename(&console, console.with_extension("log.1"));
    }
    let _ = std::fs::remove_file(&launch.api_socket);
    let procs = match ctx.cgroups.open_procs(&spec.id) {
        Ok(p) => p,
        Err(e) => return Err(reason(ReasonCode::CgroupSetupFailed, chain(&e))),
    };
    let jail = if ctx.config.jail.enabled {
        let files = crate::host::jail::JailFiles {
            state_dir: &ctx.config.state_dir,
            instances: dir.path().parent().unwrap_or(&ctx.config.state_dir),
            dir: dir.path(),
            disk: &launch.disk,
            console: &console,
            metadata: launch.metadata.as_deref(),
            tap: launch.net.as_ref().map(|(tap, _)| tap.as_str()),
            extra_taps: launch
                .extra_nets
                .iter()
                .map(|(tap, _)| tap.as_str())
                .collect(),
            console_max_bytes: launch.serial_max_bytes,
            binary: &launch.binary,
            kernel: &launch.kernel,
            initrd: launch.initrd.as_deref(),
        };
        let j = off_runtime(|| crate::host::jail::prepare(&ctx.config.jail, &files))
            .map_err(|e| reason(ReasonCode::VmmSpawnFailed, format!("jail: {}", chain(&e))))?;
        Some(j)
    } else {
        None
    };
    // Fork + exec (and the move into the cgroup between them, which can
    // take a kernel RCU grace period) off the runtime threads.
    let p = off_runtime(|| VmmProcess::spawn(launch, procs, jail))
        .map_err(|e| reason(ReasonCode::VmmSpawnFailed, chain(&e)))?;
    if let Err(e) = off_runtime(|| write_json(&dir.vmm(), p.record())) {
        // Without the record a restarted agent finds the VMM by its socket.
        tracing::error!(instance = %spec.id, error = %e, "cannot record VMM");
    }
    tracing::info!(instance = %spec.id, pid = p.record().pid, "VMM started");
    Ok(p)
}

/// Removes TAP, cgroup and directory. Idempotent.
pub async fn destroy(
    ctx: &HostContext,
    spec: &InstanceSpec,
    dir: &InstanceDir,
) -> Result<(), Error> {
    // Anything left in the cgroup is ours (a VMM that escaped tracking).
    kill_cgroup(&ctx.cgroups, spec);
    let name = tap::tap_name(&ctx.config.network.tap_prefix, &spec.id);
    let recorded = crate::layout::read_json::<crate::layout::NetAlloc>(&dir.net())
        .ok()
        .flatten();
    let routed = recorded.as_ref().is_some_and(|n| n.vpc.is_some());
    for t in recorded
        .map(|n| std::iter::once(n.tap).chain(n.extra.into_iter().map(|x| x.tap)))
        .into_iter()
        .flatten()
        .chain(std::iter::once(name))
    {
        tap::delete_tap(&t).await?;
    }
    ctx.cgroups.remove(&spec.id).await?;
    dir.remove()?;
    // The TAP's rules go with it; a failure is retried by the reconcile loop.
    if let Err(e) = ctx.firewall.sync(&ctx.layout, false).await {
        tracing::warn!(instance = %spec.id, error = %chain(&e), "firewall: cannot remove the instance's rules");
    }
    // Its VPC's routes, rules and filters (all of the VPC when it was the
    // last instance here); a failure is retried by the reconcile loop.
    if routed {
        if let Err(e) = ctx.vpc.sync(&ctx.layout, false).await {
            tracing::warn!(instance = %spec.id, error = %chain(&e), "VPC data plane: cannot remove the instance's port");
        }
    }
    Ok(())
}

fn kill_cgroup(cg: &Cgroups, spec: &InstanceSpec) {
    for pid in cg.pids(&spec.id) {
        if let Some(p) = rustix::process::Pid::from_raw(pid) {
            tracing::warn!(instance = %spec.id, pid, "killing leftover process in cgroup");
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ExtraNetwork, ImageName, InstanceId, VpcAttachment};

    #[test]
    fn secondary_interfaces_become_ports_and_guest_arguments() {
        let vpc = VpcAttachment {
            vni: 7,
            vpc_id: "vpc-1".into(),
            subnet_id: "subnet-2".into(),
            subnet_cidr: "10.0.2.0/24".into(),
            security_group_ids: vec!["sg-db".into()],
        };
        let extra = |index: u32, ip: &str| ExtraNetwork {
            device_index: index,
            interface_id: format!("eni-{index}"),
            ip: ip.parse().unwrap(),
            prefix_len: 24,
            gateway: "10.0.2.1".parse().unwrap(),
            mac: "02:4E:0A:00:02:0A".into(),
            vpc: vpc.clone(),
        };
        let spec = InstanceSpec {
            id: InstanceId::new("i-1").unwrap(),
            image: ImageName::new("hello").unwrap(),
            vcpus: 1,
            memory_mib: 64,
            cmdline_extra: String::new(),
            ip: None,
            prefix_len: None,
            gateway: None,
            mac: None,
            image_manifest_sha256: None,
            metadata: None,
            root_volume_gib: None,
            limits: None,
            vpc: Some(vpc.clone()),
            extra_networks: vec![extra(1, "10.0.2.10"), extra(3, "10.0.2.11")],
        };
        let ports = extra_ports(&spec, "nbt");
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].tap, tap::tap_name_at("nbt", &spec.id, 1));
        assert_eq!(ports[1].tap, tap::tap_name_at("nbt", &spec.id, 3));
        assert_eq!(ports[0].mac, "02:4e:0a:00:02:0a");
        // Numbered by position (the guest's virtio-net order), not index.
        assert_eq!(
            extra_cmdline(&ports),
            " nubis.net1=10.0.2.10/24,10.0.2.1 nubis.net2=10.0.2.11/24,10.0.2.1"
        );
        assert_eq!(extra_cmdline(&[]), "");
    }
}
