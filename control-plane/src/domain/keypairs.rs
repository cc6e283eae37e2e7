//! Key pairs: CreateKeyPair generates an ed25519 key (the private key is
//! returned once, in OpenSSH format, and never stored); ImportKeyPair takes
//! an OpenSSH public key line. Fingerprints are `SHA256:<base64>` of the
//! public key blob, as `ssh-keygen -l` prints them. Agents receive the
//! public key in the assignment spec.

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::domain::filters::{self, Filter};
use crate::domain::model::{now_ms, KeyPair};
use crate::domain::{validation, Caller, Domain};
use crate::error::{Error, Result};
use crate::ids::{AccountId, KeyPairId};

/// Filter names DescribeKeyPairs supports.
pub const KEYPAIR_FILTERS: &[&str] = &[
    "key-name",
    "key-pair-id",
    "fingerprint",
    "tag:",
    "tag-key",
    "tag-value",
];

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn fingerprint(blob: &[u8]) -> String {
    let d = Sha256::digest(blob);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(d)
    )
}

/// Generates an ed25519 key: (public key line, OpenSSH private key, fingerprint).
pub fn generate_ed25519(comment: &str) -> (String, String, String) {
    let seed: [u8; 32] = rand::random();
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    let pk = sk.verifying_key().to_bytes();
    let mut blob = Vec::new();
    put_string(&mut blob, b"ssh-ed25519");
    put_string(&mut blob, &pk);

    let check: u32 = rand::random();
    let mut private = Vec::new();
    private.extend_from_slice(&check.to_be_bytes());
    private.extend_from_slice(&check.to_be_bytes());
    put_string(&mut private, b"ssh-ed25519");
    put_string(&mut private, &pk);
    let mut keypair = seed.to_vec();
    keypair.extend_from_slice(&pk);
    put_string(&mut private, &keypair);
    put_string(&mut private, comment.as_bytes());
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }

    let mut file = b"openssh-key-v1\0".to_vec();
    put_string(&mut file, b"none");
    put_string(&mut file, b"none");
    put_string(&mut file, b"");
    file.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut file, &blob);
    put_string(&mut file, &private);
    let body = B64.encode(&file);
    let mut pem = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for chunk in body.as_bytes().chunks(70) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    (
        format!("ssh-ed25519 {} {comment}", B64.encode(&blob)),
        pem,
        fingerprint(&blob),
    )
}

/// Parses an OpenSSH public key line: (type, normalized line, fingerprint).
pub fn parse_public_key(material: &[u8]) -> Result<(String, String, String)> {
    let bad = || {
        Error::invalid_code(
            "InvalidKey.Format",
            "the key is not a valid OpenSSH public key",
        )
    };
    let text = std::str::from_utf8(material).map_err(|_| bad())?.trim();
    let mut parts = text.split_whitespace();
    let kind = parts.next().ok_or_else(bad)?;
    let data = parts.next().ok_or_else(bad)?;
    let key_type = match kind {
        "ssh-ed25519" => "ed25519",
        "ssh-rsa" => "rsa",
        "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521" => "ecdsa",
        _ => return Err(bad()),
    };
    let blob = B64.decode(data).map_err(|_| bad())?;
    if blob.len() < 4 {
        return Err(bad());
    }
    let n = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
    if blob.len() < 4 + n || &blob[4..4 + n] != kind.as_bytes() {
        return Err(bad());
    }
    Ok((
        key_type.to_string(),
        format!("{kind} {data}"),
        fingerprint(&blob),
    ))
}

fn not_found(what: &str) -> Error {
    Error::not_found(
        "InvalidKeyPair.NotFound",
        format!("the key pair '{what}' does not exist"),
    )
}

impl Domain {
    /// A key pair by name.
    pub async fn keypair_by_name(&self, account: &AccountId, name: &str) -> Result<KeyPair> {
        self.store
            .keypairs()
            .get(account, name)
            .await?
            .map(|v| v.value)
            .ok_or_else(|| not_found(name))
    }

    async fn insert_keypair(&self, account: &AccountId, kp: &KeyPair) -> Result<()> {
        if !self.store.keypairs().create(account, kp).await? {
            return Err(Error::AlreadyExists {
                code: "InvalidKeyPair.Duplicate".into(),
                message: format!("the key pair '{}' already exists", kp.name),
            });
        }
        Ok(())
    }

    /// CreateKeyPair: returns the record and the private key (OpenSSH).
    pub async fn create_keypair(
        &self,
        caller: &Caller,
        name: &str,
        key_type: &str,
        tags: &[(String, String)],
    ) -> Result<(KeyPair, String)> {
        let account = caller.account()?;
        validation::key_name(name)?;
        let tags = validation::tags(tags)?;
        match key_type {
            "" | "ed25519" => {}
            "rsa" => {
                return Err(Error::invalid(
                    "CreateKeyPair supports KeyType ed25519; import RSA keys with ImportKeyPair",
                ))
            }
            other => return Err(Error::invalid(format!("unknown key type '{other}'"))),
        }
        let (public_key, private_key, fp) = generate_ed25519(name);
        let kp = KeyPair {
            id: KeyPairId::generate(),
            name: name.to_string(),
            fingerprint: fp,
            key_type: "ed25519".into(),
            public_key,
            tags,
            created_ms: now_ms(),
        };
        self.insert_keypair(&account, &kp).await?;
        Ok((kp, private_key))
    }

    /// ImportKeyPair.
    pub async fn import_keypair(
        &self,
        caller: &Caller,
        name: &str,
        material: &[u8],
        tags: &[(String, String)],
    ) -> Result<KeyPair> {
        let account = caller.account()?;
        validation::key_name(name)?;
        let tags = validation::tags(tags)?;
        let (key_type, public_key, fp) = parse_public_key(material)?;
        let kp = KeyPair {
            id: KeyPairId::generate(),
            name: name.to_string(),
            fingerprint: fp,
            key_type,
            public_key,
            tags,
            created_ms: now_ms(),
        };
        self.insert_keypair(&account, &kp).await?;
        Ok(kp)
    }

    /// DescribeKeyPairs.
    pub async fn describe_keypairs(
        &self,
        caller: &Caller,
        names: &[String],
        ids: &[String],
        filters: &[Filter],
    ) -> Result<Vec<KeyPair>> {
        let account = caller.account()?;
        filters::check(filters, KEYPAIR_FILTERS)?;
        let mut pids = Vec::new();
        for i in ids {
            pids.push(KeyPairId::parse(i)?);
        }
        let all = self.store.keypairs().of(&account).collect().await?;
        let all: Vec<KeyPair> = all.into_iter().map(|(_, v)| v.value).collect();
        for n in names {
            if !all.iter().any(|k| &k.name == n) {
                return Err(not_found(n));
            }
        }
        for i in &pids {
            if !all.iter().any(|k| &k.id == i) {
                return Err(not_found(i.as_str()));
            }
        }
        Ok(all
            .into_iter()
            .filter(|k| names.is_empty() || names.contains(&k.name))
            .filter(|k| pids.is_empty() || pids.contains(&k.id))
            .filter(|k| filters.iter().all(|f| keypair_matches(k, f)))
            .collect())
    }

    /// DeleteKeyPair (by name or id; deleting a missing key succeeds, as EC2).
    pub async fn delete_keypair(&self, caller: &Caller, name: &str, id: &str) -> Result<()> {
        let account = caller.account()?;
        let name = if !name.is_empty() {
            name.to_string()
        } else if !id.is_empty() {
            let id = KeyPairId::parse(id)?;
            let all = self.store.keypairs().of(&account).collect().await?;
            match all.into_iter().find(|(_, v)| v.value.id == id) {
                Some((_, v)) => v.value.name,
                None => return Ok(()),
            }
        } else {
            return Err(Error::missing("KeyName"));
        };
        self.store.keypairs().delete(&account, &name).await
    }
}

fn keypair_matches(k: &KeyPair, f: &Filter) -> bool {
    if let Some(m) = filters::tag_filter(f, &k.tags) {
        return m;
    }
    match f.name.as_str() {
        "key-name" => filters::any_matches(&f.values, &[&k.name]),
        "key-pair-id" => filters::any_matches(&f.values, &[k.id.as_str()]),
        "fingerprint" => filters::any_matches(&f.values, &[&k.fingerprint]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_through_import() {
        let (public, private, fp) = generate_ed25519("test");
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
        let (t, line, fp2) = parse_public_key(public.as_bytes()).unwrap();
        assert_eq!(t, "ed25519");
        assert_eq!(fp, fp2);
        assert!(public.starts_with(&line));
        assert!(fp.starts_with("SHA256:"));
    }

    #[test]
    fn bad_keys_are_rejected() {
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-ed25519 !!!",
            "ssh-dss AAAA",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIA==",
        ] {
            assert_eq!(
                parse_public_key(bad.as_bytes()).unwrap_err().code(),
                "InvalidKey.Format",
                "{bad}"
            );
        }
    }
}
