//! The hello guest's console lines as tests read them: `NUBIS-PROBE`,
//! `NUBIS-STREAM` and `NUBIS-BULK` (deploy/images/hello/README.md, "Console")
//! split into their `key=value` fields, and the views tests use of them.

use std::collections::BTreeMap;

/// The `key=value` fields of every complete console line that starts with
/// `tag` (e.g. `NUBIS-PROBE`), in order. A last line without its newline is
/// still being written (the console log grows as the guest prints) and is
/// left for the next read.
pub fn fields<'a>(console: &'a str, tag: &str) -> Vec<BTreeMap<&'a str, &'a str>> {
    let complete = &console[..console.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix(tag)?.strip_prefix(' ')?;
            Some(
                rest.split_whitespace()
                    .filter_map(|w| w.split_once('='))
                    .collect(),
            )
        })
        .collect()
}

/// One `NUBIS-PROBE` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub seq: u64,
    pub result: String,
    /// `ms=` (absent for `timeout` / `no-route`).
    pub ms: Option<f64>,
    pub peer: Option<String>,
}

/// The probe results of `check` (`icmp`, `http:80`, ...) towards `dst`, in
/// console order.
pub fn probes(console: &str, dst: &str, check: &str) -> Vec<Probe> {
    fields(console, "NUBIS-PROBE")
        .into_iter()
        .filter(|kv| kv.get("dst") == Some(&dst) && kv.get("check") == Some(&check))
        .map(|kv| Probe {
            seq: kv.get("seq").and_then(|s| s.parse().ok()).unwrap_or(0),
            result: kv.get("result").unwrap_or(&"").to_string(),
            ms: kv.get("ms").and_then(|s| s.parse().ok()),
            peer: kv.get("peer").map(|p| p.to_string()),
        })
        .collect()
}

/// The state of the newest `NUBIS-STREAM` line towards `dst`.
pub fn stream_state(console: &str, dst: &str) -> Option<String> {
    fields(console, "NUBIS-STREAM")
        .into_iter()
        .rev()
        .find(|kv| kv.get("dst") == Some(&dst))
        .map(|kv| kv.get("state").unwrap_or(&"").to_string())
}

/// The `NUBIS-BULK` line (a `nubis-bulk` fetch ended).
#[derive(Debug, Clone, PartialEq)]
pub struct Bulk {
    /// Body bytes received.
    pub bytes: u64,
    /// From the connect to the last byte.
    pub ms: f64,
    pub result: String,
}

impl Bulk {
    /// Throughput of the body in Mbit/s.
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / (self.ms.max(0.001) * 1000.0)
    }
}

/// The `NUBIS-BULK` line towards `dst`, once the fetch has ended.
pub fn bulk(console: &str, dst: &str) -> Option<Bulk> {
    fields(console, "NUBIS-BULK")
        .into_iter()
        .find(|kv| kv.get("dst") == Some(&dst))
        .map(|kv| Bulk {
            bytes: kv.get("bytes").and_then(|s| s.parse().ok()).unwrap_or(0),
            ms: kv.get("ms").and_then(|s| s.parse().ok()).unwrap_or(0.0),
            result: kv.get("result").unwrap_or(&"").to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "NUBIS-GUEST-READY i-1\n\
        NUBIS-PROBE seq=1 dst=10.0.0.2 check=icmp result=timeout\n\
        NUBIS-PROBE seq=2 dst=10.0.0.2 check=icmp result=ok ms=0.512\n\
        NUBIS-PROBE seq=2 dst=10.0.0.2 check=http:80 result=ok ms=3.250 peer=i-a\n\
        NUBIS-PROBE seq=2 dst=10.0.0.9 check=icmp result=ok ms=1.000\n\
        NUBIS-PROBES seq=9 dst=10.0.0.2 check=icmp result=ok\n\
        NUBIS-STREAM dst=10.0.0.2 bytes=0 state=connecting\n\
        NUBIS-STREAM dst=10.0.0.3 bytes=10 state=flowing\n\
        NUBIS-STREAM dst=10.0.0.2 bytes=99 state=stalled\n\
        NUBIS-BULK dst=10.0.0.2 bytes=1000000 ms=2000.000 result=ok\n";

    #[test]
    fn probe_lines() {
        let icmp = probes(CONSOLE, "10.0.0.2", "icmp");
        assert_eq!(icmp.len(), 2);
        assert_eq!(
            (icmp[0].seq, icmp[0].result.as_str(), icmp[0].ms),
            (1, "timeout", None)
        );
        assert_eq!((icmp[1].seq, icmp[1].ms), (2, Some(0.512)));
        let http = probes(CONSOLE, "10.0.0.2", "http:80");
        assert_eq!(http[0].peer.as_deref(), Some("i-a"));
        assert!(probes(CONSOLE, "10.0.0.2", "tcp:80").is_empty());
    }

    #[test]
    fn stream_and_bulk_lines() {
        assert_eq!(
            stream_state(CONSOLE, "10.0.0.2").as_deref(),
            Some("stalled")
        );
        assert_eq!(
            stream_state(CONSOLE, "10.0.0.3").as_deref(),
            Some("flowing")
        );
        assert_eq!(stream_state(CONSOLE, "10.0.0.4"), None);
        let b = bulk(CONSOLE, "10.0.0.2").expect("bulk line");
        assert_eq!((b.bytes, b.result.as_str()), (1_000_000, "ok"));
        assert!((b.mbit_per_s() - 4.0).abs() < 1e-9);
        assert_eq!(bulk(CONSOLE, "10.0.0.3"), None);
    }

    #[test]
    fn a_half_written_last_line_is_not_read_yet() {
        let partial = format!("{CONSOLE}NUBIS-PROBE seq=3 dst=10.0.0.2 check=icmp result=o");
        assert_eq!(probes(&partial, "10.0.0.2", "icmp").len(), 2);
        let whole = format!("{partial}k ms=0.400\n");
        let icmp = probes(&whole, "10.0.0.2", "icmp");
        assert_eq!((icmp.len(), icmp[2].result.as_str()), (3, "ok"));
        assert!(fields("NUBIS-BULK dst=10.0.0.2 bytes=1", "NUBIS-BULK").is_empty());
    }
}
