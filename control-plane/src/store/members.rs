//! Keeps the etcd client's balanced channel to members that answer.
//!
//! `etcd-client` spreads requests over every endpoint it was given and does
//! not drop one whose member died (etcdv3/etcd-client#39): with one of three
//! members down, a share of the requests fails with "tcp connect error",
//! although the cluster has its quorum. This task probes each member's client
//! port every [`PROBE_INTERVAL`] (a TCP connect, [`PROBE_TIMEOUT`]), removes
//! the endpoint of a member that does not answer from the channel and adds it
//! back once it answers again. The last endpoint in the channel is never
//! removed (with every member down, requests fail either way and the first
//! member to return must be reachable at once).

use std::time::Duration;

use etcd_client::Client;
use tokio::task::JoinHandle;

/// How often each member is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How long a probe waits for the TCP handshake.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

/// A change to the channel's endpoint set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Stop routing requests to endpoint `i`.
    Remove(usize),
    /// Route requests to endpoint `i` again.
    Add(usize),
}

/// Which endpoints to remove and add, given which are in the channel now and
/// which answered the last probe. Dead ones leave while at least one
/// endpoint stays in the channel; live ones come back.
pub fn plan(in_channel: &[bool], alive: &[bool]) -> Vec<Change> {
    let mut remaining = in_channel.iter().filter(|&&c| c).count();
    let mut out = Vec::new();
    // Additions first, so a returning member can replace a departing one.
    for (i, (&inside, &up)) in in_channel.iter().zip(alive).enumerate() {
        if up && !inside {
            out.push(Change::Add(i));
            remaining += 1;
        }
    }
    for (i, (&inside, &up)) in in_channel.iter().zip(alive).enumerate() {
        if inside && !up && remaining > 1 {
            out.push(Change::Remove(i));
            remaining -= 1;
        }
    }
    out
}

/// `host:port` of an endpoint URL (`http://h:p`, `https://h:p/`, or `h:p`).
pub fn authority(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(endpoint);
    rest.split('/').next().unwrap_or(rest)
}

async fn probe(endpoint: &str) -> bool {
    matches!(
        tokio::time::timeout(
            PROBE_TIMEOUT,
            tokio::net::TcpStream::connect(authority(endpoint))
        )
        .await,
        Ok(Ok(_))
    )
}

/// Starts the prober for `endpoints` (the list the client was connected
/// with); `None` for a single endpoint, where there is nothing to choose.
pub fn spawn(client: Client, endpoints: Vec<String>) -> Option<JoinHandle<()>> {
    if endpoints.len() < 2 {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut in_channel = vec![true; endpoints.len()];
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let alive = probe_all(&endpoints).await;
            for change in plan(&in_channel, &alive) {
                match change {
                    Change::Remove(i) => match client.remove_endpoint(&endpoints[i]).await {
                        Ok(()) => {
                            in_channel[i] = false;
                            tracing::warn!(endpoint = %endpoints[i], "etcd member unreachable; no requests routed to it");
                        }
                        Err(e) => {
                            tracing::warn!(endpoint = %endpoints[i], error = %e, "removing an etcd endpoint failed")
                        }
                    },
                    Change::Add(i) => match client.add_endpoint(&endpoints[i]).await {
                        Ok(()) => {
                            in_channel[i] = true;
                            tracing::info!(endpoint = %endpoints[i], "etcd member reachable again");
                        }
                        Err(e) => {
                            tracing::warn!(endpoint = %endpoints[i], error = %e, "adding an etcd endpoint failed")
                        }
                    },
                }
            }
        }
    }))
}

/// Probes every endpoint at once.
async fn probe_all(endpoints: &[String]) -> Vec<bool> {
    let mut set = tokio::task::JoinSet::new();
    for (i, e) in endpoints.iter().enumerate() {
        let e = e.clone();
        set.spawn(async move { (i, probe(&e).await) });
    }
    let mut alive = vec![false; endpoints.len()];
    while let Some(r) = set.join_next().await {
        if let Ok((i, up)) = r {
            alive[i] = up;
        }
    }
    alive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_members_leave_and_return_but_one_endpoint_always_stays() {
        // One of three dies.
        assert_eq!(
            plan(&[true, true, true], &[true, false, true]),
            [Change::Remove(1)]
        );
        // Nothing to do while the channel matches.
        assert!(plan(&[true, false, true], &[true, false, true]).is_empty());
        // It returns.
        assert_eq!(
            plan(&[true, false, true], &[true, true, true]),
            [Change::Add(1)]
        );
        // All die: the last one in the channel stays.
        assert_eq!(
            plan(&[true, true, true], &[false, false, false]),
            [Change::Remove(0), Change::Remove(1)]
        );
        assert!(plan(&[false, false, true], &[false, false, false]).is_empty());
        // The only one left dies as another returns: swap.
        assert_eq!(
            plan(&[false, false, true], &[true, false, false]),
            [Change::Add(0), Change::Remove(2)]
        );
    }

    #[test]
    fn authority_of_endpoint_urls() {
        assert_eq!(authority("http://127.0.0.1:2379"), "127.0.0.1:2379");
        assert_eq!(
            authority("https://etcd1.example:2379/"),
            "etcd1.example:2379"
        );
        assert_eq!(authority("10.0.0.1:2379"), "10.0.0.1:2379");
    }

    #[tokio::test]
    async fn a_listening_port_is_alive_and_a_closed_one_is_not() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = format!("http://{}", l.local_addr().unwrap());
        let down = {
            let d = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", d.local_addr().unwrap())
        };
        assert_eq!(probe_all(&[up, down]).await, [true, false]);
    }
}
