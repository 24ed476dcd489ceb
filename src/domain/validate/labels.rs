//! Kubernetes labels: `[prefix/]name` keys and `name` values, at most 64 labels a record.

use super::{FieldViolation, check_length, quote};
use crate::domain::Labels;

/// The most labels a record may carry.
pub const MAX_LABELS: usize = 64;

/// Longest Kubernetes label name (and value).
const MAX_LABEL_NAME_CHARS: usize = 63;

/// Longest Kubernetes label-key prefix (a DNS subdomain).
const MAX_LABEL_PREFIX_CHARS: usize = 253;

/// Longest valid label key, `prefix/name`; longer keys are cut when shown in a field path.
const MAX_LABEL_KEY_CHARS: usize = MAX_LABEL_PREFIX_CHARS + 1 + MAX_LABEL_NAME_CHARS;

/// Checks labels (at most 64, Kubernetes label syntax); `field` is the path of the map.
///
/// A label's violations have the path `field["key"]`; a key too long to be valid is cut in the
/// path.
pub fn validate_labels(field: &str, labels: &Labels) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    if labels.len() > MAX_LABELS {
        violations.push(FieldViolation::new(
            field,
            format!(
                "has {} labels, more than the {MAX_LABELS} allowed",
                labels.len()
            ),
        ));
    }
    for (key, value) in labels {
        let path = format!("{field}[{}]", quote(key, MAX_LABEL_KEY_CHARS));
        for problem in label_key_problems(key) {
            violations.push(FieldViolation::new(&path, format!("key {problem}")));
        }
        if !value.is_empty()
            && let Err(problem) = check_label_name(value)
        {
            violations.push(FieldViolation::new(&path, format!("value {problem}")));
        }
    }
    violations
}

/// The problems of a label key: `[prefix/]name`, the prefix a DNS subdomain.
fn label_key_problems(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if name.contains('/') {
        return vec![
            "must be a name with an optional DNS-subdomain prefix and a single '/' (prefix/name)"
                .into(),
        ];
    }
    let mut problems = Vec::new();
    if let Some(prefix) = prefix
        && let Err(problem) = check_dns_subdomain(prefix)
    {
        problems.push(format!("prefix {problem}"));
    }
    if let Err(problem) = check_label_name(name) {
        problems.push(format!("name {problem}"));
    }
    problems
}

/// Checks a label name (or non-empty value): at most 63 characters of
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
fn check_label_name(name: &str) -> Result<(), String> {
    check_length(name, MAX_LABEL_NAME_CHARS)?;
    let bytes = name.as_bytes();
    let well_formed = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if well_formed {
        Ok(())
    } else {
        Err(
            "must consist of ASCII letters, digits, '-', '_' and '.', and start and end with a \
             letter or digit"
                .into(),
        )
    }
}

/// Checks a DNS subdomain (RFC 1123), as Kubernetes does for label-key prefixes.
fn check_dns_subdomain(s: &str) -> Result<(), String> {
    check_length(s, MAX_LABEL_PREFIX_CHARS)?;
    let well_formed = s.split('.').all(|part| {
        let bytes = part.as_bytes();
        bytes.first().is_some_and(is_lower_alphanumeric)
            && bytes.last().is_some_and(is_lower_alphanumeric)
            && bytes.iter().all(|b| is_lower_alphanumeric(b) || *b == b'-')
    });
    if well_formed {
        Ok(())
    } else {
        Err(
            "must be a DNS subdomain: '.'-separated parts of lowercase letters, digits and '-', \
             each starting and ending with a letter or digit"
                .into(),
        )
    }
}

/// Whether `b` is a lowercase ASCII letter or a digit.
fn is_lower_alphanumeric(b: &u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::domain::validate::fixtures::{fields, labels_of, valid_request, violations};

    fn label_fields(labels: &Labels) -> Vec<String> {
        validate_labels("labels", labels)
            .into_iter()
            .map(|v| v.field)
            .collect()
    }

    #[test]
    fn sixty_four_labels_are_accepted_and_sixty_five_are_not() {
        let mut labels: Labels = (0..64).map(|i| (format!("key-{i}"), "v".into())).collect();
        assert!(validate_labels("labels", &labels).is_empty());
        labels.insert("one-more".into(), "v".into());
        let violations = validate_labels("labels", &labels);
        assert_eq!(fields(&violations), BTreeSet::from(["labels"]));
        assert_eq!(violations.len(), 1);
        assert!(
            violations[0].description.contains("65"),
            "{}",
            violations[0]
        );
    }

    #[test]
    fn a_key_prefix_may_have_253_characters_but_not_254() {
        let longest = format!("{}.example.com", "a".repeat(241));
        assert_eq!(longest.len(), 253);
        assert!(validate_labels("labels", &labels_of(&[(&format!("{longest}/x"), "")])).is_empty());

        let key = format!("a{longest}/x");
        assert_eq!(
            label_fields(&labels_of(&[(&key, "")])),
            vec![format!("labels[{key:?}]")]
        );
    }

    #[test]
    fn label_names_and_values_may_have_63_characters_but_not_64() {
        let n63 = "n".repeat(63);
        let n64 = "n".repeat(64);
        let ok = labels_of(&[(&n63, &n63), (&format!("example.com/{n63}"), "v")]);
        assert!(validate_labels("labels", &ok).is_empty());
        assert_eq!(
            label_fields(&labels_of(&[(&n64, "v")])),
            vec![format!("labels[{n64:?}]")]
        );
        assert_eq!(
            label_fields(&labels_of(&[("k", &n64)])),
            vec!["labels[\"k\"]"]
        );
    }

    #[test]
    fn label_keys_follow_the_kubernetes_syntax() {
        for key in [
            "a",
            "app",
            "A_b.c-D9",
            "example.com/app",
            "k8s.io/x",
            "a-b.c/d",
            "0/0",
        ] {
            assert!(
                validate_labels("labels", &labels_of(&[(key, "v")])).is_empty(),
                "{key:?} was refused"
            );
        }
        for key in [
            "",
            "/x",
            "example.com/",
            "a/b/c",
            "-a",
            "a-",
            "_a",
            "a.",
            "a b",
            "é",
            "Example.com/x",
            "exa_mple.com/x",
            ".example.com/x",
            "example..com/x",
            "-example.com/x",
            "example-.com/x",
        ] {
            assert_eq!(
                label_fields(&labels_of(&[(key, "v")])),
                vec![format!("labels[{key:?}]")],
                "{key:?}"
            );
        }
    }

    #[test]
    fn label_values_are_empty_or_follow_the_name_syntax() {
        for value in ["", "v", "v1.2_3-x", "V"] {
            assert!(
                validate_labels("labels", &labels_of(&[("k", value)])).is_empty(),
                "{value:?} was refused"
            );
        }
        for value in ["-v", "v-", "v ", "v/1", "é", ".", "a:b"] {
            let violations = validate_labels("labels", &labels_of(&[("k", value)]));
            assert_eq!(
                fields(&violations),
                BTreeSet::from(["labels[\"k\"]"]),
                "{value:?}"
            );
            assert!(violations[0].description.starts_with("value"), "{value:?}");
        }
    }

    #[test]
    fn a_key_with_a_bad_prefix_and_a_bad_name_reports_both() {
        let violations = validate_labels("labels", &labels_of(&[("Bad/-bad-", "v")]));
        let descriptions: Vec<_> = violations.iter().map(|v| v.description.as_str()).collect();
        assert_eq!(violations.len(), 2, "{descriptions:?}");
        assert!(descriptions[0].starts_with("key prefix"));
        assert!(descriptions[1].starts_with("key name"));
    }

    #[test]
    fn a_key_too_long_to_be_valid_is_cut_in_its_path() {
        let key = "k".repeat(10_000);
        let violations = validate_labels("labels", &labels_of(&[(&key, "v")]));
        assert_eq!(violations.len(), 1);
        assert!(
            violations[0].field.len() < 400,
            "{}",
            violations[0].field.len()
        );
        assert!(violations[0].field.starts_with("labels[\"kkk"));
    }

    #[test]
    fn label_violations_in_a_request_name_the_key() {
        let mut req = valid_request();
        req.labels.insert("bad key".into(), "-bad value".into());
        let violations = violations(req);
        assert_eq!(fields(&violations), BTreeSet::from(["labels[\"bad key\"]"]));
        assert_eq!(violations.len(), 2, "the key and the value are both wrong");
    }
}
