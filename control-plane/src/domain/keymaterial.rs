//! Key material: generating RSA and ed25519 key pairs, parsing imported
//! public keys (OpenSSH lines and RFC 4716 `SSH2 PUBLIC KEY` blocks) with a
//! strict, bounded reader of the SSH wire format, and computing fingerprints
//! the way EC2 does:
//!
//! - RSA, created: SHA-1 of the DER PKCS#8 private key, colon-separated hex
//!   (`openssl pkcs8 -topk8 -nocrypt -outform DER | openssl sha1 -c`).
//! - RSA, imported: MD5 of the DER SubjectPublicKeyInfo, colon-separated hex.
//!   EC2's documentation calls this "the MD5 public key fingerprint as
//!   specified in section 4 of RFC 4716", but the value EC2 returns (and the
//!   command its documentation gives to check it,
//!   `ssh-keygen -e -m PKCS8 | openssl pkey -pubin -outform DER | openssl md5 -c`)
//!   hashes the DER public key, not the SSH wire blob that `ssh-keygen -l -E md5`
//!   hashes. We return what EC2 returns.
//! - ed25519 (created or imported): base64 of the SHA-256 of the SSH wire
//!   blob, with `=` padding and no `SHA256:` prefix, as EC2 shows it
//!   (`ssh-keygen -l` prints the same digest as `SHA256:` + unpadded base64).
//!
//! Nothing here touches the store; the domain's key pair operations
//! (`keypairs.rs`) call in.

use base64::Engine as _;
use md5::Md5;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Size of generated RSA keys (EC2's size).
pub const RSA_GENERATED_BITS: usize = 2048;
/// Smallest imported RSA modulus accepted (EC2 accepts 1024-bit keys).
pub const RSA_MIN_BITS: usize = 1024;
/// Largest imported RSA modulus accepted.
pub const RSA_MAX_BITS: usize = 16384;
/// Imported key material larger than this is refused before parsing.
pub const MAX_MATERIAL: usize = 16 * 1024;

/// Key algorithm of a key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    Ed25519,
}

impl KeyKind {
    /// The EC2 `KeyType` value.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Rsa => "rsa",
            KeyKind::Ed25519 => "ed25519",
        }
    }
}

/// A generated key pair; the private key is returned once and never stored.
#[derive(Debug)]
pub struct GeneratedKey {
    pub kind: KeyKind,
    /// OpenSSH public key line (`ssh-rsa AAAA... comment`).
    pub public_line: String,
    /// PEM: PKCS#1 `RSA PRIVATE KEY` for rsa, `OPENSSH PRIVATE KEY` for ed25519.
    pub private_pem: String,
    pub fingerprint: String,
}

/// An imported public key.
#[derive(Debug, PartialEq, Eq)]
pub struct ImportedKey {
    pub kind: KeyKind,
    /// Normalized OpenSSH public key line (`<type> <base64 blob>`), as the
    /// metadata service serves it.
    pub public_line: String,
    pub fingerprint: String,
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// SSH `mpint` of a non-negative integer: big-endian, a leading zero byte
/// when the high bit is set, empty for zero.
fn put_mpint(out: &mut Vec<u8>, n: &BigUint) {
    let mut bytes = n.to_bytes_be();
    if bytes == [0] {
        bytes.clear();
    }
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    put_string(out, &bytes);
}

fn colon_hex(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ed25519_fingerprint(blob: &[u8]) -> String {
    B64.encode(Sha256::digest(blob))
}

fn rsa_blob(key: &RsaPublicKey) -> Vec<u8> {
    let mut blob = Vec::new();
    put_string(&mut blob, b"ssh-rsa");
    put_mpint(&mut blob, key.e());
    put_mpint(&mut blob, key.n());
    blob
}

fn rsa_import_fingerprint(key: &RsaPublicKey) -> Result<String> {
    let der = key
        .to_public_key_der()
        .map_err(|e| Error::KeyMaterial("encode RSA public", Box::new(e)))?;
    Ok(colon_hex(&Md5::digest(der.as_bytes())))
}

/// Generates a 2048-bit RSA key (CPU-bound prime search: call it off the
/// async executor).
pub fn generate_rsa(comment: &str) -> Result<GeneratedKey> {
    let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_GENERATED_BITS)
        .map_err(|e| Error::KeyMaterial("generate RSA", Box::new(e)))?;
    let pkcs8 = key
        .to_pkcs8_der()
        .map_err(|e| Error::KeyMaterial("encode RSA private", Box::new(e)))?;
    let pem = key
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|e| Error::KeyMaterial("encode RSA private", Box::new(e)))?;
    let blob = rsa_blob(&key.to_public_key());
    Ok(GeneratedKey {
        kind: KeyKind::Rsa,
        public_line: format!("ssh-rsa {} {comment}", B64.encode(&blob)),
        private_pem: pem.to_string(),
        fingerprint: colon_hex(&Sha1::digest(pkcs8.as_bytes())),
    })
}

/// Generates an ed25519 key: (public key line, OpenSSH private key,
/// EC2 fingerprint).
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
        ed25519_fingerprint(&blob),
    )
}

fn bad(why: &str) -> Error {
    Error::invalid_code(
        "InvalidKey.Format",
        format!("Key is not in valid OpenSSH public key format: {why}"),
    )
}

/// A strict reader of the SSH wire format (RFC 4251 section 5): every
/// length is checked against what is left, nothing can panic.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn string(&mut self) -> Result<&'a [u8]> {
        let (len, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("truncated"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > rest.len() {
            return Err(bad("truncated"));
        }
        let (s, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(s)
    }

    /// A positive `mpint` (negative values and non-minimal encodings are
    /// refused).
    fn positive_mpint(&mut self) -> Result<BigUint> {
        let b = self.string()?;
        match b {
            [] => Err(bad("zero RSA parameter")),
            [first, ..] if first & 0x80 != 0 => Err(bad("negative RSA parameter")),
            [0, second, ..] if second & 0x80 == 0 => Err(bad("non-minimal RSA parameter")),
            [0] => Err(bad("zero RSA parameter")),
            _ => Ok(BigUint::from_bytes_be(b)),
        }
    }

    fn finish(&self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(bad("trailing data after the key"))
        }
    }
}

/// The key type named in a public key, refusing the ones EC2 refuses.
fn kind_of(name: &[u8]) -> Result<KeyKind> {
    match name {
        b"ssh-rsa" => Ok(KeyKind::Rsa),
        b"ssh-ed25519" => Ok(KeyKind::Ed25519),
        b"ssh-dss" => Err(bad("DSA keys are not supported")),
        n if n.starts_with(b"ecdsa-sha2-") => Err(bad("ECDSA keys are not supported")),
        _ => Err(bad("unknown key type")),
    }
}

/// Parses a public key blob in SSH wire format.
fn parse_blob(blob: &[u8]) -> Result<ImportedKey> {
    let mut w = Wire(blob);
    let kind = kind_of(w.string()?)?;
    let fingerprint = match kind {
        KeyKind::Ed25519 => {
            if w.string()?.len() != 32 {
                return Err(bad("an ed25519 key is 32 bytes"));
            }
            w.finish()?;
            ed25519_fingerprint(blob)
        }
        KeyKind::Rsa => {
            let e = w.positive_mpint()?;
            let n = w.positive_mpint()?;
            w.finish()?;
            let bits = n.bits();
            if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
                return Err(bad(&format!(
                    "RSA keys must have {RSA_MIN_BITS} to {RSA_MAX_BITS} bits, this one has {bits}"
                )));
            }
            let key = RsaPublicKey::new_with_max_size(n, e, RSA_MAX_BITS)
                .map_err(|e| bad(&format!("invalid RSA key ({e})")))?;
            rsa_import_fingerprint(&key)?
        }
    };
    Ok(ImportedKey {
        kind,
        public_line: format!("{} {}", kind_name(kind), B64.encode(blob)),
        fingerprint,
    })
}

fn kind_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Rsa => "ssh-rsa",
        KeyKind::Ed25519 => "ssh-ed25519",
    }
}

const RFC4716_BEGIN: &str = "---- BEGIN SSH2 PUBLIC KEY ----";
const RFC4716_END: &str = "---- END SSH2 PUBLIC KEY ----";

/// The base64 body of an RFC 4716 public key file (headers, including
/// continued ones, are skipped).
fn rfc4716_body(text: &str) -> Result<String> {
    let mut lines = text.lines().map(str::trim_end);
    if lines.next().map(str::trim) != Some(RFC4716_BEGIN) {
        return Err(bad("missing RFC 4716 begin line"));
    }
    let mut body = String::new();
    let mut in_headers = true;
    let mut continued = false;
    for line in lines {
        if line.trim() == RFC4716_END {
            if body.is_empty() || continued {
                return Err(bad("empty RFC 4716 key"));
            }
            return Ok(body);
        }
        if continued {
            continued = line.ends_with('\\');
            continue;
        }
        if in_headers {
            if let Some((tag, _)) = line.split_once(':') {
                if tag.is_empty() || tag.len() > 64 || !tag.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(bad("invalid RFC 4716 header"));
                }
                continued = line.ends_with('\\');
                continue;
            }
            in_headers = false;
        }
        body.push_str(line.trim());
    }
    Err(bad("missing RFC 4716 end line"))
}

/// Parses imported public key material: an OpenSSH public key line
/// (`ssh-rsa`/`ssh-ed25519` `<base64>` `[comment]`) or an RFC 4716 block.
pub fn parse_public_key(material: &[u8]) -> Result<ImportedKey> {
    if material.len() > MAX_MATERIAL {
        return Err(bad("too long"));
    }
    let text = std::str::from_utf8(material)
        .map_err(|_| bad("not text"))?
        .trim();
    if text.starts_with("----") {
        let body = rfc4716_body(text)?;
        let blob = B64.decode(body).map_err(|_| bad("invalid base64"))?;
        return parse_blob(&blob);
    }
    let mut parts = text.split_whitespace();
    let (Some(kind), Some(data)) = (parts.next(), parts.next()) else {
        return Err(bad("expected '<type> <base64 key> [comment]'"));
    };
    kind_of(kind.as_bytes())?;
    let blob = B64.decode(data).map_err(|_| bad("invalid base64"))?;
    let key = parse_blob(&blob)?;
    if kind_name(key.kind) != kind {
        return Err(bad("the key type does not match the key data"));
    }
    Ok(key)
}

#[cfg(test)]
#[path = "keymaterial_tests.rs"]
mod tests;
