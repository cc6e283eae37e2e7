//! The fixed instance-type catalogue. Names follow EC2; sizes are Nubis' own
//! and deliberately small (the hello guest needs a few MiB). Documented in
//! docs/compute-api.md. Also owns DescribeInstanceTypes' filtering and
//! paging ([`describe`]), shared by the gRPC and EC2 edges.

use crate::domain::filters::{any_matches, check as check_filters, Filter};
use crate::domain::instances::{decode_token, encode_token};
use crate::error::{Error, Result};

/// One instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceType {
    /// EC2-style name.
    pub name: &'static str,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory.
    pub memory_mib: u32,
}

/// Every type Nubis offers.
pub const CATALOGUE: &[InstanceType] = &[
    InstanceType {
        name: "t3.nano",
        vcpus: 1,
        memory_mib: 64,
    },
    InstanceType {
        name: "t3.micro",
        vcpus: 1,
        memory_mib: 128,
    },
    InstanceType {
        name: "t3.small",
        vcpus: 1,
        memory_mib: 256,
    },
    InstanceType {
        name: "t3.medium",
        vcpus: 2,
        memory_mib: 512,
    },
    InstanceType {
        name: "t3.large",
        vcpus: 2,
        memory_mib: 1024,
    },
    InstanceType {
        name: "c5.large",
        vcpus: 2,
        memory_mib: 1024,
    },
    InstanceType {
        name: "c5.xlarge",
        vcpus: 4,
        memory_mib: 2048,
    },
    InstanceType {
        name: "m5.large",
        vcpus: 2,
        memory_mib: 2048,
    },
    InstanceType {
        name: "m5.xlarge",
        vcpus: 4,
        memory_mib: 4096,
    },
];

/// Looks a type up by name.
pub fn find(name: &str) -> Option<&'static InstanceType> {
    CATALOGUE.iter().find(|t| t.name == name)
}

/// Filter names DescribeInstanceTypes understands.
pub const FILTERS: &[&str] = &[
    "instance-type",
    "vcpu-info.default-vcpus",
    "memory-info.size-in-mib",
];

/// One page of DescribeInstanceTypes: the types named in `names` (all when
/// empty) that pass every filter, in catalogue order, at most `max_results`
/// (0 = all; otherwise 5..=100, as EC2) after the type `next_token` names.
/// Returns the page and the token for the next one (None on the last page).
pub fn describe(
    names: &[String],
    filters: &[Filter],
    max_results: u32,
    next_token: Option<&str>,
) -> Result<(Vec<&'static InstanceType>, Option<String>)> {
    check_filters(filters, FILTERS)?;
    if let Some(missing) = names.iter().find(|n| find(n).is_none()) {
        return Err(Error::invalid_code(
            "InvalidInstanceType",
            format!("the following supplied instance types do not exist: [{missing}]"),
        ));
    }
    if max_results != 0 && !(5..=100).contains(&max_results) {
        return Err(Error::invalid("MaxResults must be between 5 and 100"));
    }
    if max_results == 0 && next_token.is_some() {
        return Err(Error::invalid("NextToken requires MaxResults"));
    }
    let matching: Vec<&'static InstanceType> = CATALOGUE
        .iter()
        .filter(|t| names.is_empty() || names.iter().any(|n| n == t.name))
        .filter(|t| filters.iter().all(|f| type_matches(t, f)))
        .collect();
    let start = match next_token {
        None => 0,
        Some(tok) => {
            let last = decode_token(tok)?;
            match CATALOGUE.iter().position(|t| t.name == last) {
                // Resume after the last type handed out, wherever it is now.
                Some(pos) => matching
                    .iter()
                    .position(|t| CATALOGUE.iter().position(|c| c == *t) > Some(pos))
                    .unwrap_or(matching.len()),
                None => {
                    return Err(Error::invalid_code(
                        "InvalidNextToken",
                        "the NextToken is not valid",
                    ));
                }
            }
        }
    };
    let rest = &matching[start..];
    if max_results == 0 || rest.len() <= max_results as usize {
        return Ok((rest.to_vec(), None));
    }
    let page = rest[..max_results as usize].to_vec();
    let token = page.last().map(|t| encode_token(t.name));
    Ok((page, token))
}

fn type_matches(t: &InstanceType, f: &Filter) -> bool {
    match f.name.as_str() {
        "instance-type" => any_matches(&f.values, &[t.name]),
        "vcpu-info.default-vcpus" => any_matches(&f.values, &[&t.vcpus.to_string()]),
        "memory-info.size-in-mib" => any_matches(&f.values, &[&t.memory_mib.to_string()]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, v: &str) -> Filter {
        Filter {
            name: name.into(),
            values: vec![v.into()],
        }
    }

    #[test]
    fn all_types_in_one_page_by_default() {
        let (page, next) = describe(&[], &[], 0, None).unwrap();
        assert_eq!(page.len(), CATALOGUE.len());
        assert!(next.is_none());
    }

    #[test]
    fn pages_cover_every_type_once() {
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (page, next) = describe(&[], &[], 5, token.as_deref()).unwrap();
            assert!(page.len() <= 5 && !page.is_empty());
            seen.extend(page.iter().map(|t| t.name));
            match next {
                Some(n) => token = Some(n),
                None => break,
            }
        }
        let all: Vec<_> = CATALOGUE.iter().map(|t| t.name).collect();
        assert_eq!(seen, all);
    }

    #[test]
    fn names_and_filters_narrow() {
        let (page, _) = describe(&["t3.micro".into()], &[], 0, None).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].memory_mib, 128);
        let (page, _) = describe(&[], &[f("vcpu-info.default-vcpus", "4")], 0, None).unwrap();
        assert!(page.iter().all(|t| t.vcpus == 4) && page.len() == 2);
        let (page, _) = describe(&[], &[f("instance-type", "t3.*")], 0, None).unwrap();
        assert_eq!(page.len(), 5);
    }

    #[test]
    fn bad_input_is_refused() {
        let code = |r: Result<_>| match r {
            Err(Error::InvalidInput { code, .. }) => code.into_owned(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(describe(&["x9.huge".into()], &[], 0, None)),
            "InvalidInstanceType"
        );
        assert_eq!(code(describe(&[], &[], 4, None)), "InvalidParameterValue");
        assert_eq!(code(describe(&[], &[], 101, None)), "InvalidParameterValue");
        assert_eq!(code(describe(&[], &[], 5, Some("!!"))), "InvalidNextToken");
        assert_eq!(
            code(describe(&[], &[], 5, Some(&encode_token("nope")))),
            "InvalidNextToken"
        );
        assert_eq!(
            code(describe(&[], &[f("hypervisor", "nitro")], 0, None)),
            "InvalidParameterValue"
        );
    }
}
