//! One-off generator of the wave-1 record fixtures
//! (control-plane/tests/fixtures/records/v0/): every record type as the
//! unchanged wave-1 code serialises it. Run on the wave-1 tree only:
//! `cargo run -p nubis-control-plane --example dump_v0_records -- <dir>`.

use std::collections::BTreeMap;

use nubis_control_plane::domain::lifecycle::{Desired, Phase, State};
use nubis_control_plane::domain::model::*;
use nubis_control_plane::domain::reservations::{PendingReservation, PendingState};
use nubis_control_plane::ids::*;

fn main() -> anyhow::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("output dir"));
    std::fs::create_dir_all(&dir)?;
    let write = |name: &str, v: serde_json::Value| -> anyhow::Result<()> {
        std::fs::write(dir.join(format!("{name}.json")), serde_json::to_vec(&v)?)?;
        Ok(())
    };
    let account = AccountId::parse("123456789012")?;
    let iid = InstanceId::parse("i-0123456789abcdef0")?;
    let rid = ReservationId::parse("r-0123456789abcdef0")?;
    let ami = ImageId::parse("ami-0123456789abcdef0")?;
    let node = NodeId::parse("node-0123456789abcdef0")?;
    let net = NetworkAssignment {
        host: 2,
        ip: "10.200.0.2".into(),
        prefix_len: 24,
        gateway: "10.200.0.1".into(),
        mac: "02:00:0a:c8:00:02".into(),
    };
    let mut tags = BTreeMap::new();
    tags.insert("Name".to_string(), "web-1".to_string());
    let instance = Instance {
        id: iid.clone(),
        account: account.clone(),
        reservation_id: rid.clone(),
        launch_index: 0,
        image_id: ami.clone(),
        image_location: "hello".into(),
        image_sha256: "ab".repeat(32),
        instance_type: "t3.micro".into(),
        vcpus: 2,
        memory_mib: 1024,
        state: State::Running,
        state_reason: Some(StateReason::new("pending", "pending")),
        state_transition_reason: String::new(),
        availability_zone: "nubis-1a".into(),
        node_id: Some(node.clone()),
        network: Some(net.clone()),
        launch_time_ms: 1_764_990_000_000,
        key_name: Some("my-key".into()),
        tags: tags.clone(),
        client_token: "token-1".into(),
        desired: Desired::Running,
        generation: 3,
        force: false,
        observed: Some(Observed {
            phase: Phase::Ready,
            generation: 3,
            since_ms: 1_764_990_000_500,
            ready_ms: 1_764_990_000_900,
            reason: None,
        }),
        terminated_ms: None,
    };
    write("instance", serde_json::to_value(&instance)?)?;
    let stopped = Instance {
        state: State::Stopped,
        desired: Desired::Stopped,
        state_reason: Some(StateReason::new(
            "Client.UserInitiatedShutdown",
            "Client.UserInitiatedShutdown: User initiated shutdown",
        )),
        state_transition_reason: "User initiated (2026-12-06 02:00:00 GMT)".into(),
        key_name: None,
        observed: None,
        ..instance.clone()
    };
    write("instance-stopped", serde_json::to_value(&stopped)?)?;
    let terminated = Instance {
        state: State::Terminated,
        desired: Desired::Terminated,
        node_id: None,
        network: None,
        terminated_ms: Some(1_764_990_100_000),
        ..instance.clone()
    };
    write("instance-terminated", serde_json::to_value(&terminated)?)?;
    let assignment = Assignment {
        instance_id: iid.clone(),
        account: account.clone(),
        desired: Desired::Running,
        generation: 3,
        force: false,
        image_name: "hello".into(),
        image_sha256: "ab".repeat(32),
        instance_type: "t3.micro".into(),
        vcpus: 2,
        memory_mib: 1024,
        user_data_b64: "aGVsbG8=".into(),
        network: net.clone(),
        cmdline_extra: String::new(),
        ssh_public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOx my-key".into(),
    };
    write("assignment", serde_json::to_value(&assignment)?)?;
    let n = Node {
        id: node.clone(),
        host_id: "host-a".into(),
        availability_zone: "nubis-1a".into(),
        capacity: Resources {
            vcpus: 16,
            memory_mib: 65536,
        },
        images: vec![NodeImage {
            name: "hello".into(),
            manifest_sha256: "ab".repeat(32),
        }],
        agent_version: "0.1.0".into(),
        cordoned: false,
        draining: false,
        registered_ms: 1_764_980_000_000,
        lease_id: 7_587_883_220_014_514_436,
        credential_key_id: "NKIA0123456789ABCDEF".into(),
        ip_block: 0,
    };
    write("node", serde_json::to_value(&n)?)?;
    write(
        "node-alloc",
        serde_json::to_value(NodeAlloc {
            used: Resources {
                vcpus: 2,
                memory_mib: 1024,
            },
            instances: 1,
            hosts: vec![2],
        })?,
    )?;
    write(
        "node-alive",
        serde_json::to_value(NodeAlive {
            lease_id: 7_587_883_220_014_514_436,
            heartbeat_ms: 1_764_990_000_000,
            usage: Resources {
                vcpus: 2,
                memory_mib: 1024,
            },
            running: 1,
        })?,
    )?;
    write("node-host", serde_json::to_value(&node)?)?;
    write("ip-block", serde_json::to_value(&node)?)?;
    write(
        "client-token",
        serde_json::to_value(ClientTokenRecord {
            reservation_id: rid.clone(),
            instance_ids: vec![iid.clone()],
            request_hash: "cd".repeat(32),
            created_ms: 1_764_990_000_000,
        })?,
    )?;
    write(
        "pending-reservation",
        serde_json::to_value(PendingReservation {
            reservation_id: rid.clone(),
            account: account.clone(),
            state: PendingState::Placing,
            image_id: ami.clone(),
            instance_type: "t3.micro".into(),
            availability_zone: Some("nubis-1a".into()),
            tags: tags.clone(),
            key_name: None,
            client_token: Some("token-2".into()),
            min_count: 50,
            max_count: 100,
            request_hash: "ef".repeat(32),
            created_ms: 1_764_990_000_000,
            instance_ids: vec![iid.clone()],
            shortfall: String::new(),
        })?,
    )?;
    write(
        "account",
        serde_json::to_value(Account {
            id: account.clone(),
            name: "alice".into(),
            created_ms: 1_764_900_000_000,
            access_key_ids: vec!["AKIA0123456789ABCDEF".into()],
        })?,
    )?;
    write(
        "access-key-tenant",
        serde_json::to_value(AccessKey {
            key_id: "AKIA0123456789ABCDEF".into(),
            secret: "s3cr3t".into(),
            principal: Principal::Tenant {
                account: account.clone(),
            },
            created_ms: 1_764_900_000_000,
        })?,
    )?;
    write(
        "access-key-node",
        serde_json::to_value(AccessKey {
            key_id: "NKIA0123456789ABCDEF".into(),
            secret: "n0d3".into(),
            principal: Principal::Node { node: node.clone() },
            created_ms: 1_764_980_000_000,
        })?,
    )?;
    write(
        "image",
        serde_json::to_value(Image {
            id: ami.clone(),
            name: "hello".into(),
            description: "hello guest".into(),
            image_location: "hello".into(),
            manifest_sha256: "ab".repeat(32),
            owner: AccountId::operator(),
            public: true,
            architecture: "x86_64".into(),
            created_ms: 1_764_900_000_000,
            min_memory_mib: 64,
            tags: tags.clone(),
        })?,
    )?;
    write(
        "keypair",
        serde_json::to_value(KeyPair {
            id: KeyPairId::parse("key-0123456789abcdef0")?,
            name: "my-key".into(),
            fingerprint: "SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into(),
            key_type: "ed25519".into(),
            public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOx my-key".into(),
            tags: BTreeMap::new(),
            created_ms: 1_764_900_000_000,
        })?,
    )?;
    write(
        "console",
        serde_json::to_value(ConsoleRecord {
            request_id: "req-1".into(),
            output_b64: "aGVsbG8K".into(),
            captured_ms: 1_764_990_000_000,
        })?,
    )?;
    write(
        "console-request",
        serde_json::to_value(ConsoleRequest {
            request_id: "req-1".into(),
            instance_id: iid.clone(),
            max_bytes: 65536,
        })?,
    )?;
    Ok(())
}
