//! Instance networking in the agent's network namespace: the instance bridge
//! (created when missing) and one persistent TAP device per instance attached
//! to it. Every operation is idempotent.
//!
//! The launch path creates a new TAP, attaches it to the bridge and brings it
//! up with three ioctls ([`ensure_tap`]: `TUNSETIFF` + `TUNSETPERSIST` on
//! `/dev/net/tun`, `SIOCBRADDIF`, `SIOCSIFFLAGS`), no child processes. Rare
//! paths (bridge set-up once per agent and subnet, a TAP that already exists,
//! deletion, listing) use iproute2 (`ip`).

use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::error::{Error, Result};
use crate::types::InstanceId;

async fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| Error::io("running ip", e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: format!("ip {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn not_found(e: &Error) -> bool {
    matches!(e, Error::Command { stderr, .. }
        if stderr.contains("does not exist") || stderr.contains("Cannot find device"))
}

/// The TAP name of an instance: `<prefix><hex of sha256(id)>`, 15 characters
/// at most, stable across agent restarts.
pub fn tap_name(prefix: &str, id: &InstanceId) -> String {
    let h = hex::encode(Sha256::digest(id.as_str().as_bytes()));
    let n = 15usize.saturating_sub(prefix.len()).min(11);
    format!("{prefix}{}", &h[..n])
}

/// The TAP name of an instance's interface at `device_index`: the
/// primary's ([`tap_name`]) for 0, else the same scheme over
/// `<id>#<index>` (15 characters at most, stable).
pub fn tap_name_at(prefix: &str, id: &InstanceId, device_index: u32) -> String {
    if device_index == 0 {
        return tap_name(prefix, id);
    }
    let h = hex::encode(Sha256::digest(
        format!("{}#{device_index}", id.as_str()).as_bytes(),
    ));
    let n = 15usize.saturating_sub(prefix.len()).min(11);
    format!("{prefix}{}", &h[..n])
}

/// The MAC of an instance: locally administered `02:4e:42:xx:xx:xx`.
pub fn mac_for(id: &InstanceId) -> String {
    let h = Sha256::digest(id.as_str().as_bytes());
    format!("02:4e:42:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

/// True when the link exists.
pub async fn link_exists(name: &str) -> Result<bool> {
    match ip(&["link", "show", "dev", name]).await {
        Ok(_) => Ok(true),
        Err(e) if not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates the bridge when missing, makes sure it carries `gateway/prefix`
/// (added when missing; other addresses, e.g. the configured one or those of
/// other subnets, stay) and brings it up.
pub async fn ensure_bridge(name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<()> {
    ensure_bridge_link(name).await?;
    let shown = ip(&["-j", "-4", "addr", "show", "dev", name]).await?;
    if !has_address(&shown, gateway, prefix)? {
        let cidr = format!("{gateway}/{prefix}");
        match ip(&["addr", "add", &cidr, "dev", name]).await {
            Ok(_) => {}
            // Added by someone else in the meantime.
            Err(Error::Command { stderr, .. }) if stderr.contains("File exists") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates the bridge when missing and brings it up.
pub async fn ensure_bridge_link(name: &str) -> Result<()> {
    if !link_exists(name).await? {
        match ip(&["link", "add", "name", name, "type", "bridge"]).await {
            Ok(_) => {}
            // Another task created it in the meantime.
            Err(Error::Command { stderr, .. }) if stderr.contains("File exists") => {}
            Err(e) => return Err(e),
        }
    }
    ip(&["link", "set", "dev", name, "up"]).await?;
    Ok(())
}

/// True when `ip -j addr show` output lists `addr/prefix`.
fn has_address(json: &str, addr: Ipv4Addr, prefix: u8) -> Result<bool> {
    let links: Vec<serde_json::Value> =
        serde_json::from_str(json).map_err(|source| Error::Json {
            context: "ip -j addr show".into(),
            source,
        })?;
    let want = addr.to_string();
    Ok(links
        .iter()
        .filter_map(|l| l.get("addr_info").and_then(|a| a.as_array()))
        .flatten()
        .any(|a| {
            a.get("local").and_then(|l| l.as_str()) == Some(want.as_str())
                && a.get("prefixlen").and_then(|p| p.as_u64()) == Some(u64::from(prefix))
        }))
}

/// Creates the TAP when missing, attaches it to `bridge` and brings it up.
/// A new TAP takes the ioctl path ([`ioctl::create_attached_tap`]); one that
/// exists already (a repeat after a crash or a restart) is re-attached with
/// `ip`, which is idempotent where `SIOCBRADDIF` is not.
pub async fn ensure_tap(name: &str, bridge: &str) -> Result<()> {
    let (n, b) = (name.to_string(), bridge.to_string());
    let created = tokio::task::spawn_blocking(move || ioctl::create_attached_tap(&n, &b))
        .await
        .map_err(|e| Error::io("TAP set-up task", std::io::Error::other(e)))??;
    if created {
        return Ok(());
    }
    ip(&["link", "set", "dev", name, "master", bridge]).await?;
    ip(&["link", "set", "dev", name, "up"]).await?;
    Ok(())
}

/// Creates the TAP when missing as a routed port (no bridge; a TAP left on
/// the bridge is taken off it) and brings it up. The VPC data plane
/// (`host::vpc`) adds its sysctls, rule, route and filters.
pub async fn ensure_routed_tap(name: &str) -> Result<()> {
    let n = name.to_string();
    let created = tokio::task::spawn_blocking(move || ioctl::create_tap(&n, None))
        .await
        .map_err(|e| Error::io("TAP set-up task", std::io::Error::other(e)))??;
    if created {
        return Ok(());
    }
    ip(&["link", "set", "dev", name, "nomaster"]).await?;
    ip(&["link", "set", "dev", name, "up"]).await?;
    Ok(())
}

/// The ioctls of the TAP fast path. They act in the calling thread's network
/// namespace (the agent's), like `ip` would.
///
/// A TAP stays attached to every open descriptor of the `/dev/net/tun` file
/// that created it, and a child the agent forks while that descriptor is
/// open holds a copy until it execs (close-on-exec only closes at exec): the
/// VMM's own `TUNSETIFF` then fails with `EBUSY` (seen in bursts, where VMMs
/// are spawned while other TAPs are made). So the descriptor lives only in a
/// short-lived thread with a private descriptor table (`unshare(CLONE_FILES)`),
/// which no fork of another thread copies.
pub mod ioctl {
    use std::os::fd::AsRawFd;

    use crate::error::{Error, Result};

    /// Linux `IFNAMSIZ`: names are at most 15 bytes plus NUL.
    const IFNAMSIZ: usize = 16;

    /// `SIOCBRADDIF` from `<linux/sockios.h>` (not in the libc crate for
    /// glibc targets): add the interface `ifr_ifindex` to the bridge.
    const SIOCBRADDIF: libc::c_ulong = 0x89a2;

    /// `struct ifreq` (40 bytes) with its union used as `ifr_flags`.
    #[repr(C)]
    struct IfReqFlags {
        name: [u8; IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }

    /// `struct ifreq` (40 bytes) with its union used as `ifr_ifindex`.
    #[repr(C)]
    struct IfReqIndex {
        name: [u8; IFNAMSIZ],
        ifindex: libc::c_int,
        _pad: [u8; 20],
    }

    fn name_bytes(name: &str) -> Result<[u8; IFNAMSIZ]> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.bytes().any(|b| b == 0 || b == b'/') {
            return Err(Error::ConfigInvalid(format!(
                "invalid interface name {name:?}"
            )));
        }
        let mut out = [0u8; IFNAMSIZ];
        out[..name.len()].copy_from_slice(name.as_bytes());
        Ok(out)
    }

    /// The error of the ioctl that just failed (errno read before anything
    /// else can change it).
    fn os_err(what: &str, name: &str) -> Error {
        let errno = std::io::Error::last_os_error();
        Error::io(format!("{what} on {name}"), errno)
    }

    /// Interface index of `name`, `None` when no such interface exists.
    pub fn index_of(name: &str) -> Result<Option<u32>> {
        let sock = probe_socket()?;
        match rustix::net::netdevice::name_to_index(&sock, name) {
            Ok(i) => Ok(Some(i)),
            Err(rustix::io::Errno::NODEV) => Ok(None),
            Err(e) => Err(Error::io(format!("SIOCGIFINDEX on {name}"), e.into())),
        }
    }

    /// A datagram socket for interface ioctls (never bound, sends nothing).
    fn probe_socket() -> Result<std::os::fd::OwnedFd> {
        rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            None,
        )
        .map_err(|e| Error::io("creating an ioctl socket", e.into()))
    }

    /// Creates the TAP `name` as persistent: it outlives the descriptor, which
    /// is closed on return. Runs on a thread of its own (see the module doc).
    fn create_persistent_tap(name: &str, tap_name: [u8; IFNAMSIZ]) -> Result<()> {
        // SAFETY: this thread exists only for this call: after taking a
        // private copy of the descriptor table it opens exactly one
        // descriptor (/dev/net/tun), closes it before returning, and hands no
        // descriptor to any other thread, so no thread ever observes a
        // descriptor of the other table.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FILES) }
            .map_err(|e| Error::io("unsharing the descriptor table", e.into()))?;
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| Error::io("opening /dev/net/tun", e))?;
        let mut req = IfReqFlags {
            name: tap_name,
            flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        // SAFETY: `tun` is an open /dev/net/tun descriptor; TUNSETIFF reads
        // and may write back a 40-byte `struct ifreq`, and `req` is a live,
        // exclusively borrowed `#[repr(C)]` value of that size and layout.
        // The result is checked.
        if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(os_err("TUNSETIFF", name));
        }
        // SAFETY: TUNSETPERSIST takes its argument by value; no memory is
        // passed. The result is checked.
        if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
            return Err(os_err("TUNSETPERSIST", name));
        }
        Ok(())
    }

    /// Creates the persistent TAP `name`, attaches it to `bridge` and brings
    /// it up. Returns `Ok(false)` without touching anything when `name`
    /// exists already (the caller then takes the idempotent path).
    pub fn create_attached_tap(name: &str, bridge: &str) -> Result<bool> {
        create_tap(name, Some(bridge))
    }

    /// Creates the persistent TAP `name`, attaches it to `bridge` when
    /// given and brings it up; `Ok(false)` when it exists already.
    pub fn create_tap(name: &str, bridge: Option<&str>) -> Result<bool> {
        let tap_name = name_bytes(name)?;
        let bridge_name = bridge.map(name_bytes).transpose()?;
        if index_of(name)?.is_some() {
            return Ok(false);
        }
        // In its own thread with a private descriptor table (module doc);
        // the thread shares the caller's network namespace.
        let n = name.to_string();
        std::thread::Builder::new()
            .name("nubis-tap".into())
            .spawn(move || create_persistent_tap(&n, tap_name))
            .map_err(|e| Error::io("starting the TAP thread", e))?
            .join()
            .map_err(|_| {
                Error::io(
                    format!("TAP thread for {name} panicked"),
                    std::io::ErrorKind::Other.into(),
                )
            })??;
        let index = index_of(name)?.ok_or_else(|| {
            Error::io(
                format!("TAP {name} vanished after creation"),
                std::io::ErrorKind::NotFound.into(),
            )
        })?;
        let sock = probe_socket()?;
        if let (Some(bridge_name), Some(bridge)) = (bridge_name, bridge) {
            let mut add = IfReqIndex {
                name: bridge_name,
                ifindex: libc::c_int::try_from(index).unwrap_or(libc::c_int::MAX),
                _pad: [0; 20],
            };
            // SAFETY: SIOCBRADDIF reads a 40-byte `struct ifreq` (bridge name
            // and `ifr_ifindex`); `add` is a live `#[repr(C)]` value of that
            // layout. The result is checked.
            if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCBRADDIF, &mut add) } < 0 {
                let errno = std::io::Error::last_os_error();
                return Err(Error::io(
                    format!("setting the master of {name} to {bridge} (SIOCBRADDIF)"),
                    errno,
                ));
            }
        }
        let mut flags = IfReqFlags {
            name: tap_name,
            flags: 0,
            _pad: [0; 22],
        };
        // SAFETY: SIOCGIFFLAGS writes `ifr_flags` of the 40-byte `struct
        // ifreq` `flags`, a live exclusively borrowed `#[repr(C)]` value.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut flags) } < 0 {
            return Err(os_err("SIOCGIFFLAGS", name));
        }
        flags.flags |= libc::IFF_UP as libc::c_short;
        // SAFETY: SIOCSIFFLAGS reads the same live 40-byte `struct ifreq`.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut flags) } < 0 {
            return Err(os_err("SIOCSIFFLAGS", name));
        }
        Ok(true)
    }
}

/// Deletes the TAP; a missing one is fine.
pub async fn delete_tap(name: &str) -> Result<()> {
    match ip(&["link", "del", "dev", name]).await {
        Ok(_) => Ok(()),
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Names of all links starting with `prefix` (for orphan clean-up).
pub async fn list_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let out = ip(&["-j", "link", "show"]).await?;
    let links: Vec<serde_json::Value> =
        serde_json::from_str(&out).map_err(|source| Error::Json {
            context: "ip -j link show".into(),
            source,
        })?;
    Ok(links
        .iter()
        .filter_map(|l| l.get("ifname").and_then(|n| n.as_str()))
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs_are_stable_and_valid() {
        let id = InstanceId::new("i-0123456789abcdef0").unwrap();
        let t = tap_name("nbt", &id);
        assert_eq!(t, tap_name("nbt", &id));
        assert!(t.len() <= 15 && t.starts_with("nbt"));
        assert_ne!(t, tap_name("nbt", &InstanceId::new("i-2").unwrap()));
        let m = mac_for(&id);
        assert_eq!(m.len(), 17);
        assert!(m.starts_with("02:4e:42:"));
        // Secondary interfaces: the same scheme, one name per device index.
        assert_eq!(tap_name_at("nbt", &id, 0), t);
        let names: std::collections::BTreeSet<String> =
            (0..8).map(|n| tap_name_at("nbt", &id, n)).collect();
        assert_eq!(names.len(), 8);
        assert!(names.iter().all(|n| n.len() <= 15 && n.starts_with("nbt")));
        assert_eq!(tap_name_at("nbt", &id, 3), tap_name_at("nbt", &id, 3));
    }

    #[test]
    fn addresses_are_found_by_address_and_prefix() {
        let json = r#"[{"ifindex":3,"ifname":"nbbr0","addr_info":[
            {"family":"inet","local":"10.200.0.1","prefixlen":24},
            {"family":"inet","local":"10.77.0.1","prefixlen":16}]}]"#;
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(has_address(json, a("10.200.0.1"), 24).unwrap());
        assert!(has_address(json, a("10.77.0.1"), 16).unwrap());
        assert!(!has_address(json, a("10.77.0.1"), 24).unwrap());
        assert!(!has_address(json, a("10.78.0.1"), 16).unwrap());
        assert!(!has_address("[]", a("10.200.0.1"), 24).unwrap());
        assert!(has_address("not json", a("10.200.0.1"), 24).is_err());
    }
}
