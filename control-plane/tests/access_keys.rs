//! Access-key secrets at rest, key rotation and revocation, account
//! disable/enable/delete, against a real etcd with two replicas: what etcd
//! holds never contains a secret once a key is configured; a revoked key or a
//! disabled account is refused by both replicas at once (their caches follow
//! etcd); every refusal of bad input writes nothing.

#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use nubis_control_plane::sim::{SimAgent, SimOptions};
use nubis_proto::auth::Credentials;
use nubis_proto::compute::v1 as pb;
use support::*;

/// Writes a sealing key file (mode 0600) holding `byte` 32 times.
fn key_file(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{}\n", hex::encode([byte; 32]))).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// The raw value etcd holds for an access key.
async fn raw_key(etcd: &Etcd, prefix: &str, key_id: &str) -> Option<String> {
    let mut c = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
        .await
        .unwrap();
    let r = c
        .get(
            format!("{prefix}/v1/access-keys/{}", hex::encode(key_id)),
            None,
        )
        .await
        .unwrap();
    r.kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
}

/// Whether `creds` are accepted (a cheap signed Compute call).
async fn accepted(ep: &str, creds: &Credentials) -> Result<(), String> {
    let mut c = compute(ep, creds.clone()).await;
    c.describe_availability_zones(pb::DescribeAvailabilityZonesRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| ec2_code(&s))
}

async fn account_of(ep: &str, key_id: &str) -> String {
    let mut a = admin_client(ep).await;
    let accounts = a
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner()
        .accounts;
    accounts
        .into_iter()
        .find(|x| x.access_key_ids.iter().any(|k| k == key_id))
        .unwrap()
        .account_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_at_rest_and_the_sealing_key_rotates() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = config(&etcd).etcd.prefix.clone();

    // Before any key: plaintext (what older clusters hold).
    let cp = start(config(&etcd)).await;
    let old = tenant(&endpoint(&cp), "old").await;
    drop(cp);
    let raw = raw_key(&etcd, &prefix, &old.access_key_id).await.unwrap();
    assert!(raw.contains(&old.secret), "plaintext before a key: {raw}");

    // With a key: the replica reseals at start, new keys are sealed, both work.
    let k1 = key_file(dir.path(), "k1", 1);
    let mut cfg = config(&etcd);
    cfg.auth.secrets_key_file = Some(k1.clone());
    let cp = start(cfg).await;
    let ep = endpoint(&cp);
    let new = tenant(&ep, "new").await;
    for c in [&old, &new] {
        let raw = raw_key(&etcd, &prefix, &c.access_key_id).await.unwrap();
        assert!(!raw.contains(&c.secret), "secret in etcd: {raw}");
        assert!(raw.contains("nbs1:"), "{raw}");
        accepted(&ep, c).await.unwrap();
    }
    let sealed_k1 = raw_key(&etcd, &prefix, &new.access_key_id).await.unwrap();
    drop(cp);

    // A replica given a key that opens nothing stored refuses to start.
    let mut cfg = config(&etcd);
    cfg.auth.secrets_key_file = Some(key_file(dir.path(), "k9", 9));
    let e = match nubis_control_plane::server::Replica::start(cfg).await {
        Ok(_) => panic!("started with the wrong key"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("not configured"), "{e}");

    // Rotation: new key current, old key previous → resealed with the new one.
    let mut cfg = config(&etcd);
    cfg.auth.secrets_key_file = Some(key_file(dir.path(), "k2", 2));
    cfg.auth.previous_secrets_key_files = vec![k1];
    let cp = start(cfg).await;
    let ep = endpoint(&cp);
    let sealed_k2 = raw_key(&etcd, &prefix, &new.access_key_id).await.unwrap();
    assert_ne!(sealed_k1, sealed_k2, "not resealed");
    for c in [&old, &new] {
        accepted(&ep, c).await.unwrap();
    }
    drop(cp);

    // The old key file can go now.
    let mut cfg = config(&etcd);
    cfg.auth.secrets_key_file = Some(key_file(dir.path(), "k2b", 2));
    let cp = start(cfg).await;
    for c in [&old, &new] {
        accepted(&endpoint(&cp), c).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_and_revoke_and_accounts_disable_on_every_replica() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let r1 = start(config(&etcd)).await;
    let r2 = start(config(&etcd)).await;
    let (ep1, ep2) = (endpoint(&r1), endpoint(&r2));
    let first = tenant(&ep1, "acme").await;
    let account = account_of(&ep1, &first.access_key_id).await;
    let other = tenant(&ep1, "other").await;
    // Both replicas have the key cached.
    accepted(&ep1, &first).await.unwrap();
    accepted(&ep2, &first).await.unwrap();

    // Rotation: a second key; a third is refused.
    let mut a = admin_client(&ep1).await;
    let k2 = a
        .create_access_key(pb::CreateAccessKeyRequest {
            account_id: account.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let second = Credentials::new(k2.access_key_id.clone(), k2.secret_access_key);
    accepted(&ep2, &second).await.unwrap();
    let e = a
        .create_access_key(pb::CreateAccessKeyRequest {
            account_id: account.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "LimitExceeded");
    let listed = a
        .list_access_keys(pb::ListAccessKeysRequest {
            account_id: account.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_keys;
    assert_eq!(listed.len(), 2);

    // Revocation of the first key: refused by both replicas at once (replica
    // 2 had it cached), the second key still works; the same tenant's
    // resources are reachable with it.
    a.delete_access_key(pb::DeleteAccessKeyRequest {
        access_key_id: first.access_key_id.clone(),
    })
    .await
    .unwrap();
    eventually(
        std::time::Duration::from_secs(2),
        "revocation on replica 2",
        || async { (accepted(&ep2, &first).await == Err("AuthFailure".into())).then_some(()) },
    )
    .await;
    assert_eq!(accepted(&ep1, &first).await, Err("AuthFailure".into()));
    accepted(&ep1, &second).await.unwrap();

    // Disable: refused by both replicas, another account unaffected; enable.
    a.set_account_disabled(pb::SetAccountDisabledRequest {
        account_id: account.clone(),
        disabled: true,
    })
    .await
    .unwrap();
    eventually(
        std::time::Duration::from_secs(2),
        "disable on replica 2",
        || async { (accepted(&ep2, &second).await == Err("AuthFailure".into())).then_some(()) },
    )
    .await;
    assert_eq!(accepted(&ep1, &second).await, Err("AuthFailure".into()));
    accepted(&ep2, &other).await.unwrap();
    let shown = a
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner()
        .accounts;
    assert!(shown.iter().any(|x| x.account_id == account && x.disabled));
    a.set_account_disabled(pb::SetAccountDisabledRequest {
        account_id: account.clone(),
        disabled: false,
    })
    .await
    .unwrap();
    eventually(
        std::time::Duration::from_secs(2),
        "enable on replica 2",
        || async { accepted(&ep2, &second).await.ok() },
    )
    .await;

    // Tenants cannot manage keys or accounts, not even their own.
    let mut as_tenant = pb::admin_client::AdminClient::new(nubis_proto::auth::Signed::new(
        nubis_proto::transport::connect(&ep1).await.unwrap(),
        second.clone(),
    ));
    let e = as_tenant
        .create_access_key(pb::CreateAccessKeyRequest {
            account_id: account.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "UnauthorizedOperation");

    // Bad input: each refused with its code.
    let code = |r: Result<tonic::Response<pb::DeleteAccountResponse>, tonic::Status>| {
        ec2_code(&r.unwrap_err())
    };
    assert_eq!(
        code(
            a.delete_account(pb::DeleteAccountRequest {
                account_id: "12ab".into()
            })
            .await
        ),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(
            a.delete_account(pb::DeleteAccountRequest {
                account_id: "999999999999".into()
            })
            .await
        ),
        "InvalidAccount.NotFound"
    );
    let e = a
        .delete_access_key(pb::DeleteAccessKeyRequest {
            access_key_id: "NKIANOSUCHKEY0000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "InvalidAccessKeyId.NotFound");
    // Only a disabled account may be deleted.
    assert_eq!(
        code(
            a.delete_account(pb::DeleteAccountRequest {
                account_id: account.clone()
            })
            .await
        ),
        "IncorrectState"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_with_instances_cannot_be_deleted() {
    let Some(etcd) = start_etcd() else {
        return;
    };
    let cp = start(config(&etcd)).await;
    let ep = endpoint(&cp);
    let image = hello_image(&ep).await;
    let creds = tenant(&ep, "acme").await;
    let account = account_of(&ep, &creds.access_key_id).await;
    let _agent = SimAgent::start(&ep, enrol(), SimOptions::new("host-a", ZONES[0], 4, 1024))
        .await
        .unwrap();
    let mut c = compute(&ep, creds.clone()).await;
    let id = c
        .run_instances(run_req(&image, 1))
        .await
        .unwrap()
        .into_inner()
        .reservation
        .unwrap()
        .instances[0]
        .instance_id
        .clone();
    wait_state(&c, &id, "running").await;
    let mut a = admin_client(&ep).await;
    a.set_account_disabled(pb::SetAccountDisabledRequest {
        account_id: account.clone(),
        disabled: true,
    })
    .await
    .unwrap();
    let e = a
        .delete_account(pb::DeleteAccountRequest {
            account_id: account.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(ec2_code(&e), "DependencyViolation");
    assert!(e.message().contains(&id), "{e:?}");

    // The operator terminates the instance; then the account goes, and its
    // key with it.
    a.set_account_disabled(pb::SetAccountDisabledRequest {
        account_id: account.clone(),
        disabled: false,
    })
    .await
    .unwrap();
    let mut c = compute(&ep, creds.clone()).await;
    c.terminate_instances(pb::TerminateInstancesRequest {
        instance_ids: vec![id.clone()],
    })
    .await
    .unwrap();
    wait_state(&c, &id, "terminated").await;
    a.set_account_disabled(pb::SetAccountDisabledRequest {
        account_id: account.clone(),
        disabled: true,
    })
    .await
    .unwrap();
    a.delete_account(pb::DeleteAccountRequest {
        account_id: account.clone(),
    })
    .await
    .unwrap();
    assert_eq!(accepted(&ep, &creds).await, Err("AuthFailure".into()));
    let accounts = a
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner()
        .accounts;
    assert!(accounts.iter().all(|x| x.account_id != account));
}
