//! Key pair actions: CreateKeyPair, ImportKeyPair, DescribeKeyPairs,
//! DeleteKeyPair. The domain generates and parses keys (RSA by default,
//! or ed25519) and computes EC2's fingerprints (domain::keymaterial).

use super::{domain_filters, dry_run_ok, tag_pairs, time_ms};
use crate::domain::model::KeyPair;
use crate::domain::{Caller, Domain};
use crate::ec2::error::Ec2Error;
use crate::ec2::requests::{
    CreateKeyPair, DeleteKeyPair, DescribeKeyPairs, ImportKeyPair, KeyType,
};
use crate::ec2::xml::XmlWriter;

/// CreateKeyPair: returns the private key once.
pub async fn create(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: CreateKeyPair,
) -> Result<String, Ec2Error> {
    let key_type = match r.key_type {
        None => "",
        Some(KeyType::Ed25519) => "ed25519",
        Some(KeyType::Rsa) => "rsa",
    };
    if r.dry_run {
        let account = caller.account()?;
        if d.keypair_by_name(&account, &r.key_name).await.is_ok() {
            return Err(duplicate(&r.key_name));
        }
        return dry_run_ok();
    }
    let (kp, private_key) = d
        .create_keypair(caller, &r.key_name, key_type, &tag_pairs(&r.tags))
        .await?;
    let mut w = XmlWriter::response("CreateKeyPair", rid);
    w.leaf("keyName", &kp.name);
    w.leaf("keyFingerprint", &kp.fingerprint);
    w.leaf("keyMaterial", private_key.trim_end());
    w.leaf("keyPairId", &kp.id);
    tag_set(&mut w, &kp);
    Ok(w.finish())
}

/// ImportKeyPair.
pub async fn import(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: ImportKeyPair,
) -> Result<String, Ec2Error> {
    if r.dry_run {
        let account = caller.account()?;
        if d.keypair_by_name(&account, &r.key_name).await.is_ok() {
            return Err(duplicate(&r.key_name));
        }
        return dry_run_ok();
    }
    let kp = d
        .import_keypair(
            caller,
            &r.key_name,
            r.public_key.as_bytes(),
            &tag_pairs(&r.tags),
        )
        .await?;
    let mut w = XmlWriter::response("ImportKeyPair", rid);
    w.leaf("keyName", &kp.name);
    w.leaf("keyFingerprint", &kp.fingerprint);
    w.leaf("keyPairId", &kp.id);
    tag_set(&mut w, &kp);
    Ok(w.finish())
}

/// DescribeKeyPairs.
pub async fn describe(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: DescribeKeyPairs,
) -> Result<String, Ec2Error> {
    let kps = d
        .describe_keypairs(
            caller,
            &r.key_names,
            &r.key_pair_ids,
            &domain_filters(r.filters),
        )
        .await?;
    if r.dry_run {
        return dry_run_ok();
    }
    let mut w = XmlWriter::response("DescribeKeyPairs", rid);
    w.list("keySet", &kps, |w, k| {
        w.leaf("keyPairId", &k.id);
        w.leaf("keyName", &k.name);
        w.leaf("keyFingerprint", &k.fingerprint);
        w.leaf("keyType", &k.key_type);
        if r.include_public_key {
            w.leaf("publicKey", &k.public_key);
        }
        w.time("createTime", time_ms(k.created_ms));
        tag_set(w, k);
    });
    Ok(w.finish())
}

/// DeleteKeyPair (idempotent, as EC2: deleting a missing key succeeds).
pub async fn delete(
    d: &Domain,
    caller: &Caller,
    rid: &str,
    r: DeleteKeyPair,
) -> Result<String, Ec2Error> {
    if r.dry_run {
        caller.account()?;
        return dry_run_ok();
    }
    d.delete_keypair(
        caller,
        r.key_name.as_deref().unwrap_or(""),
        r.key_pair_id.as_deref().unwrap_or(""),
    )
    .await?;
    let mut w = XmlWriter::response("DeleteKeyPair", rid);
    w.bool("return", true);
    w.leaf_opt("keyPairId", r.key_pair_id);
    Ok(w.finish())
}

fn duplicate(name: &str) -> Ec2Error {
    Ec2Error::new(
        crate::ec2::error::ErrorCode::InvalidKeyPairDuplicate,
        format!("The keypair '{name}' already exists."),
    )
}

fn tag_set(w: &mut XmlWriter, k: &KeyPair) {
    w.list("tagSet", &k.tags, |w, (k, v)| {
        w.leaf("key", k);
        w.leaf("value", v);
    });
}
