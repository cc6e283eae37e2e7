//! EC2 filters: `{name, values[]}`; a resource matches when every filter
//! has a matching value. Values may use `*` (any run) and `?` (one
//! character). Each resource kind declares the names it supports; an unknown
//! name is an error (`InvalidParameterValue`), checked before any read.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// One filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Name, e.g. `instance-state-name` or `tag:Name`.
    pub name: String,
    /// Accepted values (wildcards allowed).
    pub values: Vec<String>,
}

/// Checks that every filter name is supported (`tag:KEY` is accepted when
/// `tag:` is in `supported`).
pub fn check(filters: &[Filter], supported: &[&str]) -> Result<()> {
    for f in filters {
        let ok = if f.name.starts_with("tag:") {
            f.name.len() > 4 && supported.contains(&"tag:")
        } else {
            supported.contains(&f.name.as_str())
        };
        if !ok {
            return Err(Error::invalid(format!(
                "the filter '{}' is invalid (supported: {})",
                f.name,
                supported.join(", ")
            )));
        }
        if f.values.is_empty() {
            return Err(Error::invalid(format!(
                "the filter '{}' needs at least one value",
                f.name
            )));
        }
    }
    Ok(())
}

/// Glob match with `*` and `?`.
pub fn glob(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// True when any value matches any of `candidates`.
pub fn any_matches(values: &[String], candidates: &[&str]) -> bool {
    values.iter().any(|v| candidates.iter().any(|c| glob(v, c)))
}

/// Evaluates the tag filters (`tag:KEY`, `tag-key`, `tag-value`) against a
/// tag map. Returns `None` for a non-tag filter.
pub fn tag_filter(f: &Filter, tags: &BTreeMap<String, String>) -> Option<bool> {
    if let Some(key) = f.name.strip_prefix("tag:") {
        return Some(tags.get(key).is_some_and(|v| any_matches(&f.values, &[v])));
    }
    match f.name.as_str() {
        "tag-key" => Some(tags.keys().any(|k| any_matches(&f.values, &[k]))),
        "tag-value" => Some(tags.values().any(|v| any_matches(&f.values, &[v]))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globbing() {
        assert!(glob("run*", "running"));
        assert!(glob("*", ""));
        assert!(glob("t3.?ano", "t3.nano"));
        assert!(!glob("t3.?ano", "t3.micro"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
    }

    #[test]
    fn unknown_names_are_rejected() {
        let f = |n: &str| Filter {
            name: n.into(),
            values: vec!["x".into()],
        };
        assert!(check(&[f("instance-type")], &["instance-type"]).is_ok());
        assert!(check(&[f("tag:Name")], &["tag:"]).is_ok());
        assert!(check(&[f("tag:")], &["tag:"]).is_err());
        assert_eq!(
            check(&[f("bogus")], &["instance-type"]).unwrap_err().code(),
            "InvalidParameterValue"
        );
    }

    #[test]
    fn tags() {
        let mut t = BTreeMap::new();
        t.insert("Name".to_string(), "web-1".to_string());
        let f = Filter {
            name: "tag:Name".into(),
            values: vec!["web-*".into()],
        };
        assert_eq!(tag_filter(&f, &t), Some(true));
        let f = Filter {
            name: "tag-key".into(),
            values: vec!["Other".into()],
        };
        assert_eq!(tag_filter(&f, &t), Some(false));
    }
}
