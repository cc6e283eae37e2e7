//! Input validation shared by the domain modules: names, tags, tokens, user
//! data, counts. Every check returns an EC2-coded error and runs before
//! anything is written.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Largest user data accepted (raw bytes), as EC2.
pub const MAX_USER_DATA: usize = 16 * 1024;
/// Largest MaxCount of one RunInstances call. Calls of more than
/// [`BATCH`](crate::domain::launch::BATCH) instances are written in several
/// transactions ([`reservations`](crate::domain::reservations)); this bounds
/// one call's work and response (EC2 bounds it by account quotas).
pub const MAX_COUNT: u32 = 500;
/// Tags per resource.
pub const MAX_TAGS: usize = 50;

/// A conservative identifier: ASCII letters, digits, `-`, `_`, `.`, 1..=max.
pub fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// ClientToken: 1..=64 printable ASCII.
pub fn client_token(s: &str) -> Result<()> {
    if s.len() > 64 || !s.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(Error::invalid(
            "ClientToken must be at most 64 printable ASCII characters",
        ));
    }
    Ok(())
}

/// User data size.
pub fn user_data(data: &[u8]) -> Result<()> {
    if data.len() > MAX_USER_DATA {
        return Err(Error::invalid(format!(
            "user data is {} bytes; at most {MAX_USER_DATA} are allowed",
            data.len()
        )));
    }
    Ok(())
}

/// True for keys of the `aws:` namespace (EC2's and Nubis' own tags, e.g.
/// `aws:autoscaling:groupName`): users may not set or delete them, and they
/// do not count against [`MAX_TAGS`].
pub fn is_system_tag(key: &str) -> bool {
    key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:"))
}

/// Tags that count against [`MAX_TAGS`] (all but the `aws:` ones).
pub fn user_tag_count<'a>(keys: impl IntoIterator<Item = &'a String>) -> usize {
    keys.into_iter().filter(|k| !is_system_tag(k)).count()
}

/// One tag (EC2 limits: key 1..=128, value 0..=256, no `aws:` prefix).
pub fn tag(key: &str, value: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid("Tag key must not be empty"));
    }
    if key.chars().count() > 128 {
        return Err(Error::invalid(
            "Tag key exceeds the maximum length of 128 characters",
        ));
    }
    if value.chars().count() > 256 {
        return Err(Error::invalid(
            "Tag value exceeds the maximum length of 256 characters",
        ));
    }
    if is_system_tag(key) {
        return Err(Error::invalid(
            "Tag keys starting with 'aws:' are reserved for internal use",
        ));
    }
    if key.chars().any(|c| c.is_control()) || value.chars().any(|c| c.is_control()) {
        return Err(Error::invalid("tags may not contain control characters"));
    }
    Ok(())
}

/// A set of tags; duplicates are an error. Returns them as a map.
pub fn tags(list: &[(String, String)]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in list {
        tag(k, v)?;
        if out.insert(k.clone(), v.clone()).is_some() {
            return Err(Error::invalid(format!("duplicate tag key {k:?}")));
        }
    }
    if out.len() > MAX_TAGS {
        return Err(Error::invalid_code(
            "TagLimitExceeded",
            format!("The maximum number of Tags for a resource has been reached ({MAX_TAGS})"),
        ));
    }
    Ok(out)
}

/// Key pair names: 1..=255 printable ASCII.
pub fn key_name(s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Error::invalid(
            "key pair names must be 1 to 255 printable ASCII characters",
        ));
    }
    Ok(())
}

/// MinCount/MaxCount.
pub fn counts(min: u32, max: u32) -> Result<()> {
    if min == 0 {
        return Err(Error::invalid("MinCount must be at least 1"));
    }
    if max < min {
        return Err(Error::invalid("MaxCount must be at least MinCount"));
    }
    if max > MAX_COUNT {
        return Err(Error::invalid_code(
            "InstanceLimitExceeded",
            format!("at most {MAX_COUNT} instances per RunInstances call"),
        ));
    }
    Ok(())
}

/// MaxResults for paged describes: 0 (unpaged) or 5..=1000.
pub fn max_results(n: u32) -> Result<()> {
    if n != 0 && !(5..=1000).contains(&n) {
        return Err(Error::invalid("MaxResults must be between 5 and 1000"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks() {
        assert!(is_name("nubis-local-1a", 64));
        assert!(!is_name("a b", 64));
        assert!(client_token("abc-123").is_ok());
        assert!(client_token(&"x".repeat(65)).is_err());
        assert!(client_token("a b").is_err());
        assert!(user_data(&vec![0; MAX_USER_DATA]).is_ok());
        assert!(user_data(&vec![0; MAX_USER_DATA + 1]).is_err());
        assert!(counts(0, 1).is_err());
        assert!(counts(2, 1).is_err());
        assert!(counts(1, MAX_COUNT + 1).is_err());
        assert!(counts(1, MAX_COUNT).is_ok());
        assert!(tags(&[("a".into(), "1".into()), ("a".into(), "2".into())]).is_err());
        assert!(tags(&[("aws:x".into(), "1".into())]).is_err());
        assert!(max_results(3).is_err() && max_results(0).is_ok() && max_results(5).is_ok());
    }
}
