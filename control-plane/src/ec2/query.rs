//! The EC2 Query form: decoding and typed reading of parameters.
//!
//! Owns decoding an `application/x-www-form-urlencoded` body into a flat map
//! (strict UTF-8, no duplicate keys, bounded sizes) and the [`Reader`] that
//! turns EC2's flattened names (`InstanceId.N`, `Filter.N.Value.M`,
//! `TagSpecification.N.Tag.M.Key`) into typed values, recording which
//! parameters were consumed so that anything left over is answered with
//! `UnknownParameter`. The per-action request types live in
//! [`super::requests`].

use std::collections::{BTreeMap, BTreeSet};

use super::error::{Ec2Error, ErrorCode};

/// Most parameters one request may carry.
pub const MAX_PARAMS: usize = 2_000;
/// Longest parameter name.
pub const MAX_KEY_LEN: usize = 256;
/// Largest list index accepted in `Name.N`.
pub const MAX_INDEX: u32 = 1_000;

/// Decodes a form body into a map. Rejects invalid percent-encoding results
/// that are not UTF-8, empty or overlong names, repeated names and more than
/// [`MAX_PARAMS`] pairs.
pub fn parse_form(body: &[u8]) -> Result<BTreeMap<String, String>, Ec2Error> {
    let mut map = BTreeMap::new();
    for pair in body.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let k = decode(k)?;
        let v = decode(v)?;
        if k.is_empty() {
            return Err(invalid_request("empty parameter name"));
        }
        if k.len() > MAX_KEY_LEN {
            return Err(invalid_request("parameter name too long"));
        }
        if map.len() >= MAX_PARAMS {
            return Err(invalid_request("too many parameters"));
        }
        if map.contains_key(&k) {
            return Err(Ec2Error::invalid_value(format!(
                "The parameter {k} was given more than once"
            )));
        }
        map.insert(k, v);
    }
    Ok(map)
}

fn invalid_request(msg: &str) -> Ec2Error {
    Ec2Error::new(
        ErrorCode::InvalidRequest,
        format!("Malformed request body: {msg}"),
    )
}

fn decode(raw: &[u8]) -> Result<String, Ec2Error> {
    let plus: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
    String::from_utf8(bytes).map_err(|_| invalid_request("parameter is not valid UTF-8"))
}

/// A name/values filter (`Filter.N.Name`, `Filter.N.Value.M`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Filter name, e.g. `instance-state-name` or `tag:Name`.
    pub name: String,
    /// Accepted values (any may match).
    pub values: Vec<String>,
}

/// A key/value tag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tag {
    /// Tag key (1..=128 characters, not starting with `aws:`).
    pub key: String,
    /// Tag value (0..=256 characters).
    pub value: String,
}

/// Reads typed parameters from a decoded form, remembering which were used.
#[derive(Debug)]
pub struct Reader {
    map: BTreeMap<String, String>,
    used: BTreeSet<String>,
}

impl Reader {
    /// A reader over `map`.
    pub fn new(map: BTreeMap<String, String>) -> Self {
        Self {
            map,
            used: BTreeSet::new(),
        }
    }

    /// The value of `key`, if present (marks it used).
    pub fn opt(&mut self, key: &str) -> Option<String> {
        let v = self.map.get(key).cloned();
        if v.is_some() {
            self.used.insert(key.to_owned());
        }
        v
    }

    /// The value of `key`; `MissingParameter` when absent or empty.
    pub fn required(&mut self, key: &str) -> Result<String, Ec2Error> {
        match self.opt(key) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(Ec2Error::missing(key)),
        }
    }

    /// An integer in `min..=max`.
    pub fn int(&mut self, key: &str, min: u32, max: u32) -> Result<Option<u32>, Ec2Error> {
        let Some(v) = self.opt(key) else {
            return Ok(None);
        };
        match v.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(Ec2Error::invalid_value(format!(
                "Value ({v}) for parameter {key} is invalid. Expected an integer from {min} to {max}."
            ))),
        }
    }

    /// A boolean, exactly `true` or `false` (EC2 is case-insensitive here).
    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, Ec2Error> {
        let Some(v) = self.opt(key) else {
            return Ok(None);
        };
        match v.to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(Ec2Error::invalid_value(format!(
                "Value ({v}) for parameter {key} is invalid. Expected: 'true' or 'false'."
            ))),
        }
    }

    /// `DryRun`, defaulting to false.
    pub fn dry_run(&mut self) -> Result<bool, Ec2Error> {
        Ok(self.bool("DryRun")?.unwrap_or(false))
    }

    /// The distinct indices `N` of keys `prefix.N` and `prefix.N.*`, sorted.
    pub fn indices(&self, prefix: &str) -> Result<Vec<u32>, Ec2Error> {
        let start = format!("{prefix}.");
        let mut out = BTreeSet::new();
        for k in self.map.range(start.clone()..).map(|(k, _)| k) {
            let Some(rest) = k.strip_prefix(&start) else {
                break;
            };
            let seg = rest.split('.').next().unwrap_or("");
            out.insert(parse_index(k, seg)?);
        }
        Ok(out.into_iter().collect())
    }

    /// A list `prefix.1`, `prefix.2`, ... of at most `max` strings.
    pub fn list(&mut self, prefix: &str, max: usize) -> Result<Vec<String>, Ec2Error> {
        let idx = self.indices(prefix)?;
        if idx.len() > max {
            return Err(Ec2Error::invalid_value(format!(
                "The parameter {prefix} accepts at most {max} values"
            )));
        }
        let mut out = Vec::with_capacity(idx.len());
        for n in idx {
            let key = format!("{prefix}.{n}");
            // A nested key under a scalar list (`InstanceId.1.X`) stays unused
            // and is reported as unknown by `finish`.
            if let Some(v) = self.opt(&key) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// `Filter.N.Name` / `Filter.N.Value.M`. With `Some(allowed)`, names must
    /// be in `allowed` (or be `tag:KEY` when `allowed` contains `tag:`); with
    /// `None` the layer below checks the names.
    pub fn filters(&mut self, allowed: Option<&[&str]>) -> Result<Vec<Filter>, Ec2Error> {
        let idx = self.indices("Filter")?;
        if idx.len() > 50 {
            return Err(Ec2Error::invalid_value("At most 50 filters may be given"));
        }
        let mut out = Vec::with_capacity(idx.len());
        for n in idx {
            let name = self.required(&format!("Filter.{n}.Name"))?;
            let known = match allowed {
                None => name.len() <= 128,
                Some(allowed) => {
                    allowed.contains(&name.as_str())
                        || (allowed.contains(&"tag:") && name.len() > 4 && name.starts_with("tag:"))
                }
            };
            if !known {
                return Err(Ec2Error::invalid_value(format!(
                    "The filter '{name}' is invalid"
                )));
            }
            let values = self.list(&format!("Filter.{n}.Value"), 200)?;
            if values.is_empty() {
                return Err(Ec2Error::invalid_value(format!(
                    "The filter '{name}' must have at least one value"
                )));
            }
            out.push(Filter { name, values });
        }
        Ok(out)
    }

    /// Tags `prefix.N.Key` / `prefix.N.Value`; a missing value is empty.
    pub fn tags(&mut self, prefix: &str) -> Result<Vec<Tag>, Ec2Error> {
        Ok(self
            .tag_keys(prefix, true)?
            .into_iter()
            .map(|(key, value)| Tag {
                key,
                value: value.unwrap_or_default(),
            })
            .collect())
    }

    /// Tags whose values may be absent (for `DeleteTags`).
    pub fn tag_keys(
        &mut self,
        prefix: &str,
        check_key: bool,
    ) -> Result<Vec<(String, Option<String>)>, Ec2Error> {
        let idx = self.indices(prefix)?;
        if idx.len() > 50 {
            if check_key {
                // More tags than one resource may have (CreateTags, RunInstances).
                return Err(crate::error::Error::invalid_code(
                    "TagLimitExceeded",
                    "The maximum number of Tags for a resource has been reached (50)",
                )
                .into());
            }
            return Err(Ec2Error::invalid_value("At most 50 tags may be given"));
        }
        let mut out = Vec::with_capacity(idx.len());
        let mut seen = BTreeSet::new();
        for n in idx {
            let key = self.required(&format!("{prefix}.{n}.Key"))?;
            let value = self.opt(&format!("{prefix}.{n}.Value"));
            validate_tag(&key, value.as_deref(), check_key)?;
            if !seen.insert(key.clone()) {
                return Err(Ec2Error::invalid_value(format!(
                    "Duplicate tag key '{key}'"
                )));
            }
            out.push((key, value));
        }
        Ok(out)
    }

    /// `TagSpecification.N.ResourceType` + `.Tag.M.*`: the tags for
    /// `resource_type`; any other resource type is rejected.
    pub fn tag_specifications(&mut self, resource_type: &str) -> Result<Vec<Tag>, Ec2Error> {
        let mut out = Vec::new();
        for n in self.indices("TagSpecification")? {
            let rt = self.required(&format!("TagSpecification.{n}.ResourceType"))?;
            if rt != resource_type {
                return Err(Ec2Error::invalid_value(format!(
                    "'{rt}' is not a valid taggable resource type for this operation."
                )));
            }
            out.extend(self.tags(&format!("TagSpecification.{n}.Tag"))?);
        }
        let mut keys = BTreeSet::new();
        if let Some(dup) = out.iter().find(|t| !keys.insert(t.key.as_str())) {
            return Err(Ec2Error::invalid_value(format!(
                "Duplicate tag key '{}'",
                dup.key
            )));
        }
        if out.len() > 50 {
            return Err(crate::error::Error::invalid_code(
                "TagLimitExceeded",
                "The maximum number of Tags for a resource has been reached (50)",
            )
            .into());
        }
        Ok(out)
    }

    /// Every parameter named `prefix` or `prefix.*` (marks them used), in
    /// name order: for parameter groups answered as a whole.
    pub fn take_prefix(&mut self, prefix: &str) -> Vec<(String, String)> {
        let dotted = format!("{prefix}.");
        let found: Vec<(String, String)> = self
            .map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| k.as_str() == prefix || k.starts_with(&dotted))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, _) in &found {
            self.used.insert(k.clone());
        }
        found
    }

    /// Fails with `UnknownParameter` if any parameter was not read.
    pub fn finish(self) -> Result<(), Ec2Error> {
        match self.map.keys().find(|k| !self.used.contains(*k)) {
            None => Ok(()),
            Some(k) => Err(Ec2Error::new(
                ErrorCode::UnknownParameter,
                format!("The parameter {k} is not recognized"),
            )),
        }
    }
}

fn parse_index(key: &str, seg: &str) -> Result<u32, Ec2Error> {
    let ok = !seg.is_empty()
        && seg.len() <= 4
        && seg.bytes().all(|b| b.is_ascii_digit())
        && !seg.starts_with('0');
    match seg.parse::<u32>() {
        Ok(n) if ok && n <= MAX_INDEX => Ok(n),
        _ => Err(Ec2Error::invalid_value(format!(
            "The parameter {key} has an invalid list index"
        ))),
    }
}

fn truncate_key(key: &str) -> String {
    key.chars().take(128).collect()
}

/// Checks a tag key (1..=128 chars, no `aws:` prefix when `check_key`) and value (<= 256).
pub fn validate_tag(key: &str, value: Option<&str>, check_key: bool) -> Result<(), Ec2Error> {
    let n = key.chars().count();
    if n == 0 {
        return Err(Ec2Error::invalid_value("Tag key must not be empty"));
    }
    if n > 128 {
        return Err(Ec2Error::invalid_value(
            "Tag key exceeds the maximum length of 128 characters",
        ));
    }
    if check_key && key.to_ascii_lowercase().starts_with("aws:") {
        return Err(Ec2Error::invalid_value(format!(
            "Value ( {} ) for parameter key is invalid. Tag keys starting with 'aws:' are reserved for internal use",
            truncate_key(key)
        )));
    }
    if value.is_some_and(|v| v.chars().count() > 256) {
        return Err(Ec2Error::invalid_value(
            "Tag value exceeds the maximum length of 256 characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(body: &str) -> Reader {
        Reader::new(parse_form(body.as_bytes()).unwrap())
    }

    #[test]
    fn form_decoding_is_strict() {
        let m = parse_form(b"A=1&B=a%20b+c&C=&D&&E=%3D%26").unwrap();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "a b c");
        assert_eq!(m["C"], "");
        assert_eq!(m["D"], "");
        assert_eq!(m["E"], "=&");
        assert_eq!(
            parse_form(b"A=1&A=2").unwrap_err().code,
            ErrorCode::InvalidParameterValue
        );
        assert_eq!(
            parse_form(b"A=%FF").unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            parse_form(b"=x").unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        let many: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("K{i}=v")).collect();
        assert_eq!(
            parse_form(many.join("&").as_bytes()).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn lists_come_back_in_index_order() {
        let mut r = reader("InstanceId.10=c&InstanceId.2=b&InstanceId.1=a&InstanceIdX=z");
        assert_eq!(r.list("InstanceId", 100).unwrap(), ["a", "b", "c"]);
        assert_eq!(r.finish().unwrap_err().code, ErrorCode::UnknownParameter);
        for bad in [
            "InstanceId.0=a",
            "InstanceId.01=a",
            "InstanceId.x=a",
            "InstanceId.1001=a",
        ] {
            let r = reader(bad);
            assert_eq!(
                r.indices("InstanceId").unwrap_err().code,
                ErrorCode::InvalidParameterValue
            );
        }
        let mut r = reader("InstanceId.1=a&InstanceId.2=b");
        assert!(r.list("InstanceId", 1).is_err());
    }

    #[test]
    fn filters_and_tags() {
        let mut r = reader(
            "Filter.1.Name=tag%3AName&Filter.1.Value.1=a&Filter.1.Value.2=b&\
             Filter.2.Name=instance-state-name&Filter.2.Value.1=running",
        );
        let f = r.filters(Some(&["instance-state-name", "tag:"])).unwrap();
        assert_eq!(
            f,
            [
                Filter {
                    name: "tag:Name".into(),
                    values: vec!["a".into(), "b".into()]
                },
                Filter {
                    name: "instance-state-name".into(),
                    values: vec!["running".into()]
                },
            ]
        );
        r.finish().unwrap();
        let mut r = reader("Filter.1.Name=bogus&Filter.1.Value.1=a");
        assert_eq!(
            r.filters(Some(&["tag:"])).unwrap_err().code,
            ErrorCode::InvalidParameterValue
        );
        let mut r = reader("Filter.1.Value.1=a");
        assert_eq!(
            r.filters(Some(&["tag:"])).unwrap_err().code,
            ErrorCode::MissingParameter
        );
        let mut r = reader("Filter.1.Name=tag%3Ax");
        assert!(r.filters(Some(&["tag:"])).is_err());

        let mut r = reader(
            "TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=Name&\
             TagSpecification.1.Tag.1.Value=web1&TagSpecification.1.Tag.2.Key=env",
        );
        let t = r.tag_specifications("instance").unwrap();
        assert_eq!(
            t[0],
            Tag {
                key: "Name".into(),
                value: "web1".into()
            }
        );
        assert_eq!(
            t[1],
            Tag {
                key: "env".into(),
                value: String::new()
            }
        );
        r.finish().unwrap();
        let mut r = reader("TagSpecification.1.ResourceType=volume&TagSpecification.1.Tag.1.Key=a");
        assert!(r.tag_specifications("instance").is_err());
        let mut r = reader("Tag.1.Key=aws%3Ax&Tag.1.Value=1");
        assert!(r.tags("Tag").is_err());
        let mut r = reader("Tag.1.Key=a&Tag.2.Key=a");
        assert!(r.tags("Tag").is_err());
        let long = "k".repeat(129);
        let mut r = reader(&format!("Tag.1.Key={long}"));
        assert!(r.tags("Tag").is_err());
    }

    #[test]
    fn scalars_are_checked() {
        let mut r = reader("MinCount=0&MaxCount=x&DryRun=TRUE&Force=maybe");
        assert!(r.int("MinCount", 1, 100).is_err());
        assert!(r.int("MaxCount", 1, 100).is_err());
        assert!(r.dry_run().unwrap());
        assert!(r.bool("Force").is_err());
        assert_eq!(
            r.required("Nope").unwrap_err().code,
            ErrorCode::MissingParameter
        );
    }
}
