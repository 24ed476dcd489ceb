//! Spec ids: the path component a registry facade takes from `<host>/remote/<id>`.

use std::fmt;

/// The longest id accepted.
pub const MAX_ID_LEN: usize = 200;

/// A valid spec id: 1–200 characters matching `[a-z0-9]+([._-][a-z0-9]+)*`, the grammar of an
/// image-reference path component. No other id could ever be pulled through a registry facade.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecId(String);

impl SpecId {
    /// Parses an id, or says in a sentence what is wrong with it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        super::validate::check_length(raw, MAX_ID_LEN)?;
        if !is_path_component(raw) {
            return Err(format!(
                "{raw:?} is not an image-reference path component: use lowercase letters and \
                 digits, separated by single '.', '_' or '-' characters \
                 ([a-z0-9]+([._-][a-z0-9]+)*)"
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for SpecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `s` matches `[a-z0-9]+([._-][a-z0-9]+)*`.
fn is_path_component(s: &str) -> bool {
    let mut previous_was_separator = true; // the first character must be alphanumeric
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => previous_was_separator = false,
            b'.' | b'_' | b'-' if !previous_was_separator => previous_was_separator = true,
            _ => return false,
        }
    }
    !previous_was_separator
}

/// Whether `prefix` could start some valid id: ids' characters only, at most `MAX_ID_LEN` long.
pub fn is_id_prefix(prefix: &str) -> bool {
    prefix.len() <= MAX_ID_LEN
        && prefix
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_workspace_instance_ids_and_path_components() {
        for ok in [
            "a",
            "0",
            "a1b2c3d4-5678-90ab-cdef-1234567890ab",
            "ws.prod_1-x",
            &"a".repeat(200),
        ] {
            assert!(SpecId::parse(ok).is_ok(), "{ok:?} should be valid");
        }
    }

    #[test]
    fn rejects_what_cannot_be_a_path_component() {
        let too_long = "a".repeat(201);
        let bad = [
            "", "A", "-a", "a-", "a--b", "a._b", "a/b", "a b", "é", ".", &too_long,
        ];
        let accepted: Vec<&str> = bad
            .into_iter()
            .filter(|id| SpecId::parse(id).is_ok())
            .collect();
        assert!(accepted.is_empty(), "{accepted:?} should be invalid");
    }

    #[test]
    fn prefixes_allow_trailing_separators_but_no_foreign_characters() {
        assert!(is_id_prefix(""));
        assert!(is_id_prefix("ws-"));
        assert!(!is_id_prefix("WS"));
        assert!(!is_id_prefix("a%"));
    }
}
