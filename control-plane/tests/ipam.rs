//! IP address management against a real etcd with simulated agents: racing
//! placements on two replicas never claim one address twice; a full subnet
//! is `InsufficientInstanceCapacity`; reserved addresses are never handed
//! out; termination frees an address for re-use; an instance placed before
//! IPAM keeps its address and gets its claim on its first update.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use nubis_control_plane::domain::lifecycle::State;
use nubis_control_plane::domain::model::Instance;
use nubis_control_plane::domain::{Caller, Domain};
use nubis_control_plane::ids::SubnetId;
use nubis_control_plane::sim::{SimAgent, SimOptions};
use nubis_control_plane::store::Tx;
use support::*;

/// Every placed instance holds exactly the claim of its address, in its
/// subnet; no other claim exists; no address is reserved or doubled.
async fn claims_match(d: &Domain, c: &Caller) -> usize {
    let (all, _) = d
        .store()
        .list::<Instance>(&d.store().keys().all_instances())
        .await
        .unwrap();
    let mut want: HashMap<SubnetId, HashSet<(String, String)>> = HashMap::new();
    let mut ips = HashSet::new();
    for (_, i) in &all {
        let Some(net) = &i.value.network else {
            continue;
        };
        assert!(ips.insert(net.ip.clone()), "address {} doubled", net.ip);
        let host =
            u32::from(net.ip.parse::<Ipv4Addr>().unwrap()) & ((1 << (32 - net.prefix_len)) - 1);
        assert!(host >= 4, "reserved address {} handed out", net.ip);
        assert!(
            host < (1 << (32 - net.prefix_len)) - 1,
            "broadcast handed out"
        );
        want.entry(net.subnet_id.clone().unwrap())
            .or_default()
            .insert((net.ip.clone(), i.value.id.to_string()));
    }
    let mut n = 0;
    let subnets: Vec<SubnetId> = d
        .list_nodes(&Caller::Operator, None)
        .await
        .unwrap()
        .into_iter()
        .map(|v| SubnetId::for_block(v.node.ip_block))
        .collect();
    for s in subnets {
        let rec = d
            .subnet(&s)
            .await
            .unwrap()
            .expect("the node's subnet exists");
        assert_eq!(rec.id, s);
        let got: HashSet<(String, String)> = d
            .address_claims(&s)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.ip, c.instance_id.unwrap().to_string()))
            .collect();
        n += got.len();
        assert_eq!(got, want.remove(&s).unwrap_or_default(), "claims of {s}");
    }
    assert!(want.is_empty(), "claims in unknown subnets: {want:?}");
    let _ = c;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_placements_on_two_replicas_never_share_an_address() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.network.cidr = "10.0.0.0/16".into();
    cfg.network.node_prefix_len = 28; // 11 usable addresses per node
    let a = start(cfg.clone()).await;
    let b = start(cfg).await;
    let caller = account_without_vpc(&a.domain).await;
    let image = register_image(&a.domain).await;
    let mut agents = Vec::new();
    for h in 0..2 {
        let mut o = SimOptions::new(&format!("h{h}"), ZONES[0], 64, 65536);
        o.run_instances = false;
        agents.push(SimAgent::start(&endpoint(&a), enrol(), o).await.unwrap());
    }
    // 2 x 11 addresses; 8 calls of 3 want 24: some must fail for addresses
    // (vCPU and memory are plentiful).
    let mut tasks = Vec::new();
    for n in 0..8 {
        let d = if n % 2 == 0 {
            a.domain.clone()
        } else {
            b.domain.clone()
        };
        let (c, img) = (caller.clone(), image.clone());
        tasks.push(tokio::spawn(async move {
            d.run_instances(&c, nano_input(&img, 3)).await
        }));
    }
    let mut placed = 0;
    let mut full = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => placed += r.instances.len(),
            Err(e) => {
                assert_eq!(e.code(), "InsufficientInstanceCapacity", "{e}");
                full += 1;
            }
        }
    }
    assert_eq!(placed, 21, "seven calls of three fit in 22 addresses");
    assert_eq!(full, 1);
    assert_eq!(claims_match(&a.domain, &caller).await, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_subnet_refuses_and_termination_frees_the_address() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let mut cfg = config(&etcd);
    cfg.network.cidr = "10.0.0.0/24".into();
    cfg.network.node_prefix_len = 29; // 8 addresses, 5 reserved
    let cp = start(cfg).await;
    let d = cp.domain.clone();
    let caller = account_without_vpc(&d).await;
    let image = register_image(&d).await;
    let _agent = SimAgent::start(
        &endpoint(&cp),
        enrol(),
        SimOptions::new("h1", ZONES[0], 16, 16384),
    )
    .await
    .unwrap();

    let r = d
        .run_instances(&caller, nano_input(&image, 3))
        .await
        .unwrap();
    let mut ips: Vec<String> = r
        .instances
        .iter()
        .map(|i| i.network.clone().unwrap().ip)
        .collect();
    ips.sort();
    assert_eq!(ips, ["10.0.0.4", "10.0.0.5", "10.0.0.6"]);
    assert_eq!(
        r.instances[0].network.as_ref().unwrap().gateway,
        "10.0.0.1",
        "the agent's view is unchanged"
    );
    let err = d
        .run_instances(&caller, nano_input(&image, 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "InsufficientInstanceCapacity");
    assert_eq!(claims_match(&d, &caller).await, 3);

    // Terminated: the claim goes in the same transaction; the address is
    // handed out again.
    let victim = r
        .instances
        .iter()
        .find(|i| i.network.as_ref().unwrap().ip == "10.0.0.5")
        .unwrap()
        .id
        .to_string();
    wait_domain_state(&d, &caller, &victim, State::Running).await;
    d.terminate_instances(&caller, std::slice::from_ref(&victim))
        .await
        .unwrap();
    wait_domain_state(&d, &caller, &victim, State::Terminated).await;
    assert_eq!(claims_match(&d, &caller).await, 2);
    let again = d
        .run_instances(&caller, nano_input(&image, 1))
        .await
        .unwrap();
    assert_eq!(again.instances[0].network.as_ref().unwrap().ip, "10.0.0.5");
    assert_eq!(claims_match(&d, &caller).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_placed_before_ipam_keeps_its_address() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let d = cp.domain.clone();
    let caller = account_without_vpc(&d).await;
    let image = register_image(&d).await;
    let _agent = SimAgent::start(
        &endpoint(&cp),
        enrol(),
        SimOptions::new("h1", ZONES[0], 8, 8192),
    )
    .await
    .unwrap();
    let r = d
        .run_instances(&caller, nano_input(&image, 1))
        .await
        .unwrap();
    let id = r.instances[0].id.to_string();
    let placed = wait_domain_state(&d, &caller, &id, State::Running).await;
    let net = placed.network.clone().unwrap();
    let subnet = net.subnet_id.clone().unwrap();

    // Rewrite the records as today's main wrote them: no subnet in the
    // instance's network, no claim, no subnet record, host number 2 (the
    // first address before EC2's reservations), in the node's allocation.
    let store = d.store();
    let keys = store.keys().clone();
    let ikey = keys.instance(&placed.account, &placed.id);
    let mut raw: serde_json::Value =
        serde_json::from_slice(&store.get_raw(&ikey).await.unwrap().unwrap().0).unwrap();
    let old_ip = {
        let mut o = net.ip.parse::<Ipv4Addr>().unwrap().octets();
        o[3] = 2;
        Ipv4Addr::from(o).to_string()
    };
    let n = raw["network"].as_object_mut().unwrap();
    n.remove("subnet_id");
    n.insert("host".into(), 2.into());
    n.insert("ip".into(), old_ip.clone().into());
    raw.as_object_mut().unwrap().remove("event_seq");
    let node = placed.node_id.clone().unwrap();
    let akey = keys.node_alloc(&node);
    let mut alloc: serde_json::Value =
        serde_json::from_slice(&store.get_raw(&akey).await.unwrap().unwrap().0).unwrap();
    alloc["hosts"] = serde_json::json!([2]);
    let mut tx = Tx::new();
    tx.put_raw(&ikey, serde_json::to_vec(&raw).unwrap())
        .put_raw(&akey, serde_json::to_vec(&alloc).unwrap())
        .delete(&keys.address_claim(&subnet, &net.ip))
        .delete(&keys.subnet(&subnet));
    assert!(store.commit(tx).await.unwrap().is_some());
    assert!(d.address_claims(&subnet).await.unwrap().is_empty());

    // Its first update (a stop) adopts the address.
    d.stop_instances(&caller, std::slice::from_ref(&id), false)
        .await
        .unwrap();
    let i = d.instance(&caller, &id).await.unwrap().value;
    let n = i.network.clone().unwrap();
    assert_eq!(n.ip, old_ip, "the address is kept");
    assert_eq!(n.subnet_id.as_ref(), Some(&subnet));
    let claims = d.address_claims(&subnet).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(
        (claims[0].ip.as_str(), &claims[0].instance_id),
        (old_ip.as_str(), &Some(i.id.clone()))
    );
    let s = d
        .subnet(&subnet)
        .await
        .unwrap()
        .expect("subnet record recreated");
    assert_eq!(s.node_id.as_ref(), Some(&node));
    assert_eq!(s.availability_zone, ZONES[0]);

    // Stopped and started again: still that address, one claim; a new
    // instance gets an address of its own.
    wait_domain_state(&d, &caller, &id, State::Stopped).await;
    d.start_instances(&caller, std::slice::from_ref(&id))
        .await
        .unwrap();
    wait_domain_state(&d, &caller, &id, State::Running).await;
    let other = d
        .run_instances(&caller, nano_input(&image, 1))
        .await
        .unwrap();
    assert_ne!(other.instances[0].network.as_ref().unwrap().ip, old_ip);
    assert_eq!(d.address_claims(&subnet).await.unwrap().len(), 2);

    // Terminated: its claim goes.
    d.terminate_instances(&caller, std::slice::from_ref(&id))
        .await
        .unwrap();
    wait_domain_state(&d, &caller, &id, State::Terminated).await;
    let left = d.address_claims(&subnet).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].instance_id, Some(other.instances[0].id.clone()));
}
