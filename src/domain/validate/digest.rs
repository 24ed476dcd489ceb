//! OCI digests: `algorithm:hex`, in the canonical forms registries and runtimes agree on.

use super::{MAX_QUOTED_CHARS, quote};

/// Checks a canonical OCI digest: `sha256:` and 64, or `sha512:` and 128, lowercase hex digits.
pub(super) fn check_digest(raw: &str) -> Result<(), String> {
    if raw.is_empty() {
        return Err("is required".into());
    }
    let canonical = match raw.split_once(':') {
        Some(("sha256", hex)) => is_lowercase_hex(hex, 64),
        Some(("sha512", hex)) => is_lowercase_hex(hex, 128),
        _ => false,
    };
    if canonical {
        Ok(())
    } else {
        Err(format!(
            "{} is not a canonical digest: use sha256: and 64 lowercase hex digits, or sha512: \
             and 128",
            quote(raw, MAX_QUOTED_CHARS)
        ))
    }
}

/// Whether `digest` is `sha256:` and 64 lowercase hex digits.
pub(crate) fn is_sha256_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| is_lowercase_hex(hex, 64))
}

/// Whether `s` is exactly `len` lowercase hex digits.
fn is_lowercase_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validate::fixtures::{remote_layer, request_with_spec, the_only_violation};

    #[test]
    fn digests_must_be_canonical() {
        for ok in [
            format!("sha256:{}", "0123456789abcdef".repeat(4)),
            format!("sha512:{}", "0123456789abcdef".repeat(8)),
        ] {
            assert_eq!(check_digest(&ok), Ok(()), "{ok}");
        }
        for bad in [
            String::new(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "a".repeat(65)),
            format!("sha256:{}", "g".repeat(64)),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha384:{}", "a".repeat(96)),
            format!("md5:{}", "a".repeat(32)),
            format!("SHA256:{}", "a".repeat(64)),
            format!("sha256{}", "a".repeat(64)),
            format!(" sha256:{}", "a".repeat(64)),
            format!("sha256:{} ", "a".repeat(64)),
        ] {
            assert!(check_digest(&bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_diff_id_must_be_a_canonical_digest_too() {
        let violation = the_only_violation(request_with_spec(|spec| {
            remote_layer(spec, 1).diff_id = format!("sha256:{}", "A".repeat(64));
        }));
        assert_eq!(violation.field, "spec.content_layer[1].remote.diff_id");
    }
}
