//! Typed identifiers and the instance specification the agent receives from
//! the control plane (or the standalone desired-state file). All validation
//! of these outside inputs happens here.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        })
        && !s.starts_with('.')
}

/// An instance id such as `i-0123456789abcdef0` (lower-case, digits, `-_.`;
/// safe as a file and cgroup name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

impl InstanceId {
    /// Validates an id.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        if !valid_name(&s, 64) {
            return Err(Error::InvalidId {
                kind: "instance id",
                value: s,
                why: "must be 1-64 of [a-z0-9-_.], not starting with '.'",
            });
        }
        Ok(InstanceId(s))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InstanceId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        InstanceId::new(s)
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> String {
        id.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An image name (a directory under the image dir).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageName(String);

impl ImageName {
    /// Validates a name.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        if !valid_name(&s, 64) {
            return Err(Error::InvalidId {
                kind: "image name",
                value: s,
                why: "must be 1-64 of [a-z0-9-_.], not starting with '.'",
            });
        }
        Ok(ImageName(s))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ImageName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        ImageName::new(s)
    }
}

impl From<ImageName> for String {
    fn from(id: ImageName) -> String {
        id.0
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What to run: fixed for the life of the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// Instance id.
    pub id: InstanceId,
    /// Image to boot.
    pub image: ImageName,
    /// vCPUs (also the `cpu.max` quota in whole CPUs).
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Extra guest kernel command-line arguments (e.g. `nubis.disk_write=1`).
    #[serde(default)]
    pub cmdline_extra: String,
    /// Address chosen by the control plane (else allocated from the node's range).
    #[serde(default)]
    pub ip: Option<std::net::Ipv4Addr>,
    /// MAC chosen by the control plane (else derived from the id).
    #[serde(default)]
    pub mac: Option<String>,
    /// When set, the image's manifest.json must have this sha256.
    #[serde(default)]
    pub image_manifest_sha256: Option<String>,
}

impl InstanceSpec {
    /// Checks ranges and characters.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: &'static str| Error::InvalidId {
            kind: "instance spec",
            value: self.id.to_string(),
            why,
        };
        if self.vcpus == 0 || self.vcpus > 64 {
            return Err(bad("vcpus must be 1..=64"));
        }
        if self.memory_mib < 1 || self.memory_mib > 1 << 20 {
            return Err(bad("memory_mib must be 1..=1048576"));
        }
        if self.cmdline_extra.len() > 1024
            || !self
                .cmdline_extra
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b))
        {
            return Err(bad(
                "cmdline_extra must be at most 1024 printable ASCII bytes",
            ));
        }
        if let Some(m) = &self.mac {
            let parts: Vec<&str> = m.split(':').collect();
            let ok = parts.len() == 6
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                return Err(bad("mac must be aa:bb:cc:dd:ee:ff"));
            }
        }
        if let Some(h) = &self.image_manifest_sha256 {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("image_manifest_sha256 must be 64 hex digits"));
            }
        }
        Ok(())
    }
}

/// Desired lifecycle of an instance, as the control plane wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    /// Should be running.
    Running,
    /// Should exist, stopped.
    Stopped,
    /// Should be gone.
    Terminated,
    /// Reboot once when the generation is new, then keep running.
    Rebooting,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(InstanceId::new("i-0123456789abcdef0").is_ok());
        for bad in [
            "",
            "I-UPPER",
            "a/b",
            "..",
            ".hidden",
            "x y",
            &"a".repeat(65),
        ] {
            assert!(InstanceId::new(bad).is_err(), "{bad:?}");
        }
        let r: std::result::Result<InstanceId, _> = serde_json::from_str("\"../../etc\"");
        assert!(r.is_err());
    }

    #[test]
    fn spec_ranges_are_validated() {
        let mut s = InstanceSpec {
            id: InstanceId::new("i-1").unwrap(),
            image: ImageName::new("hello").unwrap(),
            vcpus: 1,
            memory_mib: 64,
            cmdline_extra: "nubis.disk_write=1".into(),
            ip: None,
            mac: None,
            image_manifest_sha256: None,
        };
        assert!(s.validate().is_ok());
        s.vcpus = 0;
        assert!(s.validate().is_err());
        s.vcpus = 1;
        s.cmdline_extra = "a\nb".into();
        assert!(s.validate().is_err());
        s.cmdline_extra = String::new();
        s.mac = Some("02:00:00:00:00".into());
        assert!(s.validate().is_err());
    }
}
