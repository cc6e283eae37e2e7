//! Open-connection accounting shared by the TCP listeners (the EC2
//! gateway's [`crate::ec2::listener`] and the gRPC [`crate::grpc_listener`]):
//! at most `max_total` connections, at most `max_per_ip` from one client
//! address. A connection holds a [`Slot`] for as long as it is open,
//! handshakes included; dropping it gives the place back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections, in total and per client address.
#[derive(Debug)]
pub struct ConnTable {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl ConnTable {
    /// A table admitting `max_total` connections, `max_per_ip` per address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            max_total,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    /// A slot for a connection from `ip`, or `None` over a limit.
    /// IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_ip) = &mut *open;
        let mine = per_ip.get(&ip).copied().unwrap_or(0);
        if *total >= self.max_total || mine >= self.max_per_ip {
            return None;
        }
        *total += 1;
        per_ip.insert(ip, mine + 1);
        Some(Slot {
            table: self.clone(),
            ip,
        })
    }

    /// Open connections: (in total, from `ip`).
    pub fn open(&self, ip: IpAddr) -> (usize, usize) {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        (open.0, open.1.get(&ip.to_canonical()).copied().unwrap_or(0))
    }
}

/// A connection's place in the [`ConnTable`], given back on drop.
#[derive(Debug)]
pub struct Slot {
    table: Arc<ConnTable>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_ip) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_per_address_and_in_total_and_slots_come_back() {
        let t = Arc::new(ConnTable::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap_or(a);
        let b: IpAddr = "10.0.0.2".parse().unwrap_or(a);
        let c: IpAddr = "10.0.0.3".parse().unwrap_or(a);
        let a1 = t.admit(a);
        let a2 = t.admit(mapped);
        assert!(a1.is_some() && a2.is_some());
        assert!(t.admit(a).is_none(), "a third from one address");
        let b1 = t.admit(b);
        assert!(b1.is_some());
        assert!(t.admit(c).is_none(), "a fourth in total");
        assert_eq!(t.open(a), (3, 2));
        drop(a1);
        assert_eq!(t.open(a), (2, 1));
        assert!(t.admit(c).is_some());
        drop((a2, b1));
    }
}
