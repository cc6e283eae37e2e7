//! Access-key secrets at rest: sealing and opening with the operator's key.
//!
//! HMAC verification (the gRPC signatures and EC2 SigV4) needs the plain
//! secret, so it cannot be stored as a hash. With `[auth] secrets_key_file`
//! set, each secret is stored sealed with AES-256-GCM (ring): a fresh 96-bit
//! nonce per seal, the access key id as associated data (a sealed secret
//! copied onto another key's record does not open), and the id of the
//! sealing key, so the operator can rotate that key: the new key goes in
//! `secrets_key_file`, the old one in `previous_secrets_key_files`, and every
//! replica reseals what it finds under an old key (or in plaintext) at start
//! ([`super::Domain::reseal_access_keys`]). Without a key file, secrets stay
//! in plaintext as before (the control plane logs a warning).
//!
//! Stored form: `nbs1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`, where the
//! key id is the first 8 hex digits of the key's SHA-256.

use std::path::Path;

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::config::AuthConfig;
use crate::error::{Error, Result};

const PREFIX: &str = "nbs1:";

/// One sealing key.
struct SealingKey {
    id: String,
    key: LessSafeKey,
}

impl SealingKey {
    fn from_bytes(bytes: &[u8; 32]) -> Result<Self> {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| Error::Internal("AES-256-GCM key".into()))?;
        Ok(Self {
            id: hex::encode(&Sha256::digest(bytes)[..4]),
            key: LessSafeKey::new(key),
        })
    }

    /// Reads a key file: 64 hex digits on the first line, readable by its
    /// owner only.
    fn load(path: &Path) -> Result<Self> {
        let bad = |why: String| {
            Error::invalid(format!(
                "configuration: auth: secrets key {}: {why}",
                path.display()
            ))
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(bad("readable by others than its owner (chmod 600)".into()));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let line = text.lines().next().unwrap_or("").trim();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(line, &mut bytes)
            .map_err(|_| bad("want 64 hex digits (e.g. `openssl rand -hex 32`)".into()))?;
        Self::from_bytes(&bytes)
    }
}

/// The sealing key and the keys it replaced.
pub struct SecretBox {
    current: Option<SealingKey>,
    previous: Vec<SealingKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("current", &self.current.as_ref().map(|k| &k.id))
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl SecretBox {
    /// No key: secrets are stored as they are.
    pub fn plaintext() -> Self {
        Self {
            current: None,
            previous: Vec::new(),
            rng: SystemRandom::new(),
        }
    }

    /// From raw keys (tests): the first seals, all open.
    pub fn from_keys(current: &[u8; 32], previous: &[[u8; 32]]) -> Result<Self> {
        Ok(Self {
            current: Some(SealingKey::from_bytes(current)?),
            previous: previous
                .iter()
                .map(SealingKey::from_bytes)
                .collect::<Result<_>>()?,
            rng: SystemRandom::new(),
        })
    }

    /// The keys `[auth]` names.
    pub fn load(cfg: &AuthConfig) -> Result<Self> {
        let current = cfg
            .secrets_key_file
            .as_deref()
            .map(SealingKey::load)
            .transpose()?;
        if current.is_none() && !cfg.previous_secrets_key_files.is_empty() {
            return Err(Error::invalid(
                "configuration: auth.previous_secrets_key_files needs auth.secrets_key_file",
            ));
        }
        let previous = cfg
            .previous_secrets_key_files
            .iter()
            .map(|p| SealingKey::load(p))
            .collect::<Result<_>>()?;
        Ok(Self {
            current,
            previous,
            rng: SystemRandom::new(),
        })
    }

    /// Whether secrets are sealed.
    pub fn seals(&self) -> bool {
        self.current.is_some()
    }

    /// The stored form of `secret`, the secret of access key `key_id`.
    pub fn seal(&self, key_id: &str, secret: &str) -> Result<String> {
        let Some(k) = &self.current else {
            return Ok(secret.to_string());
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| Error::Internal("no randomness for a nonce".into()))?;
        let mut data = secret.as_bytes().to_vec();
        k.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key_id.as_bytes()),
                &mut data,
            )
            .map_err(|_| Error::Internal("sealing a secret".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!(
            "{PREFIX}{}:{}",
            k.id,
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// The secret of access key `key_id` from its stored form. Plaintext
    /// (stored before a key was configured) is returned as it is.
    pub fn open(&self, key_id: &str, stored: &str) -> Result<String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let corrupt = |why: &str| Error::Internal(format!("access key {key_id}: {why}"));
        let (kid, b64) = rest
            .split_once(':')
            .ok_or_else(|| corrupt("malformed sealed secret"))?;
        let k = self
            .current
            .iter()
            .chain(&self.previous)
            .find(|k| k.id == kid)
            .ok_or_else(|| corrupt(&format!("sealed with key {kid}, which is not configured")))?;
        let mut data = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| corrupt("malformed sealed secret"))?;
        if data.len() < NONCE_LEN {
            return Err(corrupt("malformed sealed secret"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&data[..NONCE_LEN]);
        let plain = k
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key_id.as_bytes()),
                &mut data[NONCE_LEN..],
            )
            .map_err(|_| corrupt("sealed secret does not open (altered, or another key's)"))?;
        String::from_utf8(plain.to_vec()).map_err(|_| corrupt("sealed secret is not UTF-8"))
    }

    /// Whether `stored` should be rewritten: plaintext while a key is
    /// configured, or sealed with a key other than the current one.
    pub fn needs_reseal(&self, stored: &str) -> bool {
        let Some(k) = &self.current else {
            return false;
        };
        match stored.strip_prefix(PREFIX) {
            None => true,
            Some(rest) => rest.split_once(':').is_none_or(|(kid, _)| kid != k.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: [u8; 32] = [1; 32];
    const K2: [u8; 32] = [2; 32];

    #[test]
    fn sealed_secrets_open_only_for_their_key_id_and_key() {
        let b = SecretBox::from_keys(&K1, &[]).unwrap();
        let s = b.seal("NKIAAAAA", "the-secret").unwrap();
        assert!(s.starts_with("nbs1:") && !s.contains("the-secret"), "{s}");
        assert_eq!(b.open("NKIAAAAA", &s).unwrap(), "the-secret");
        // Two seals of one secret differ (fresh nonce).
        assert_ne!(s, b.seal("NKIAAAAA", "the-secret").unwrap());
        // Moved onto another key's record: does not open.
        assert!(b.open("NKIABBBB", &s).is_err());
        // Altered: does not open.
        let mut bytes = s.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(b
            .open("NKIAAAAA", &String::from_utf8(bytes).unwrap())
            .is_err());
        // Another key cannot open it, and says which key it needs.
        let other = SecretBox::from_keys(&K2, &[]).unwrap();
        let e = other.open("NKIAAAAA", &s).unwrap_err().to_string();
        assert!(e.contains("not configured"), "{e}");
    }

    #[test]
    fn rotation_opens_old_seals_and_asks_for_a_reseal() {
        let old = SecretBox::from_keys(&K1, &[]).unwrap();
        let s = old.seal("NKIAAAAA", "s3cret").unwrap();
        let rotated = SecretBox::from_keys(&K2, &[K1]).unwrap();
        assert_eq!(rotated.open("NKIAAAAA", &s).unwrap(), "s3cret");
        assert!(rotated.needs_reseal(&s));
        let resealed = rotated.seal("NKIAAAAA", "s3cret").unwrap();
        assert!(!rotated.needs_reseal(&resealed));
        // Plaintext from before any key: read as is, resealed.
        assert_eq!(rotated.open("NKIAAAAA", "plain").unwrap(), "plain");
        assert!(rotated.needs_reseal("plain"));
        // Without a key nothing is sealed or resealed.
        let none = SecretBox::plaintext();
        assert_eq!(none.seal("NKIAAAAA", "x").unwrap(), "x");
        assert!(!none.needs_reseal("x"));
    }

    #[test]
    fn key_files_must_be_private_and_well_formed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SealingKey::load(&p).err().unwrap().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(SealingKey::load(&p).is_ok());
        std::fs::write(&p, "not hex\n").unwrap();
        let e = SealingKey::load(&p).err().unwrap().to_string();
        assert!(e.contains("64 hex digits"), "{e}");
    }
}
