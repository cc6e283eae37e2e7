//! Instance networking in the agent's network namespace: the instance bridge
//! (created when missing) and one persistent TAP device per instance attached
//! to it. Uses iproute2 (`ip`); every operation is idempotent.

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
pub async fn ensure_tap(name: &str, bridge: &str) -> Result<()> {
    if !link_exists(name).await? {
        match ip(&["tuntap", "add", "dev", name, "mode", "tap"]).await {
            Ok(_) => {}
            Err(Error::Command { stderr, .. }) if stderr.contains("exists") => {}
            Err(e) => return Err(e),
        }
    }
    ip(&["link", "set", "dev", name, "master", bridge]).await?;
    ip(&["link", "set", "dev", name, "up"]).await?;
    Ok(())
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
