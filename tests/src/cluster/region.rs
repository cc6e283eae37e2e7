//! Region and zone names of the test cluster, as `deploy/quickstart.sh`
//! names them: the region from `NUBIS_QS_REGION` (default `nubis-local-1`),
//! zones `<region>a`, `<region>b`, `<region>c`. Operators name their regions
//! (`us-east-1`, `eu-central-1`) and SDK users expect those names, so tests
//! can run under any valid one.

/// The region when `NUBIS_QS_REGION` is not set (as `deploy/quickstart.sh`).
pub const DEFAULT_REGION: &str = "nubis-local-1";

/// Letters of the three zones: zone `<region><letter>`.
pub const ZONE_LETTERS: [char; 3] = ['a', 'b', 'c'];

/// Checks a region name as `deploy/quickstart.sh` does: lower-case ASCII
/// letters, digits and single hyphens, a letter first and a digit last (so
/// that `<region>a` reads as a zone, as in `us-east-1a`), at most 32 bytes.
pub fn check_region(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 32
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a region name: lower-case letters, digits and single hyphens, \
             a letter first, a digit last, at most 32 characters (e.g. us-east-1)"
        ))
    }
}

/// The region tests run in: `NUBIS_QS_REGION`, or [`DEFAULT_REGION`].
///
/// # Panics
/// When `NUBIS_QS_REGION` is set to a name [`check_region`] refuses: a test
/// run in a region the operator did not mean is worse than no run.
pub fn region() -> String {
    let name = std::env::var("NUBIS_QS_REGION").unwrap_or_else(|_| DEFAULT_REGION.to_string());
    if let Err(e) = check_region(&name) {
        panic!("NUBIS_QS_REGION: {e}");
    }
    name
}

/// Zone `letter` (`'a'`, `'b'` or `'c'`) of [`region`].
pub fn zone(letter: char) -> String {
    format!("{}{letter}", region())
}

/// The three zones of [`region`], in order.
pub fn zones() -> Vec<String> {
    ZONE_LETTERS.iter().map(|l| zone(*l)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_like_the_quickstart() {
        for good in ["nubis-local-1", "us-east-1", "eu-central-1", "a1", "x-y-9"] {
            assert_eq!(check_region(good), Ok(()), "{good}");
        }
        let long = format!("a{}1", "b".repeat(31));
        for bad in [
            "",
            "1",
            "us-east",
            "US-east-1",
            "us--east-1",
            "-us-1",
            "us-1-",
            "us east 1",
            "us_east_1",
            "us-east-1a!",
            &long,
        ] {
            let err = check_region(bad).expect_err(bad);
            assert!(err.contains("is not a region name"), "{err}");
        }
    }

    #[test]
    fn zones_append_a_letter_to_the_region() {
        // NUBIS_QS_REGION may be set by the caller; zones follow it either way.
        let r = region();
        assert_eq!(zones(), [format!("{r}a"), format!("{r}b"), format!("{r}c")]);
        assert_eq!(zone('b'), format!("{r}b"));
    }
}
