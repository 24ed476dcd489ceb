//! Who wrote a record: the identity of a write's caller, as records (`created_by`, `updated_by`)
//! and log lines carry it. `crate::security::auth` finds it; nothing a client sends names it.

use std::fmt;

use sha2::{Digest, Sha256};

/// How many hex digits of a token's SHA-256 name it: enough to tell an operator's tokens apart,
/// far too few to guess the token from.
const TOKEN_DIGEST_HEX_DIGITS: usize = 12;

/// The identity of a caller: `cert:<name>` (the client certificate name that granted its role),
/// `token:<the first 12 hex digits of the bearer token's SHA-256>` (never the token), or
/// `anonymous` (no credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(String);

impl Caller {
    /// A caller that presented no credentials.
    pub fn anonymous() -> Self {
        Self("anonymous".to_owned())
    }

    /// A caller known by the client certificate name `name`. Control characters (which a
    /// certificate's common name may hold) are escaped, so that the identity cannot break a log
    /// line or a table.
    pub fn certificate(name: &str) -> Self {
        let mut identity = String::from("cert:");
        for c in name.chars() {
            if c.is_control() {
                identity.extend(c.escape_default());
            } else {
                identity.push(c);
            }
        }
        Self(identity)
    }

    /// A caller known by its bearer token, named by the start of the token's SHA-256 (what
    /// `printf %s TOKEN | sha256sum` prints).
    pub fn token(token: &[u8]) -> Self {
        let digest = hex::encode(Sha256::digest(token));
        Self(format!("token:{}", &digest[..TOKEN_DIGEST_HEX_DIGITS]))
    }

    /// The identity, as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_named_by_the_start_of_its_sha256_as_sha256sum_prints_it() {
        // `printf %s admin-3f9c1d0e8b7a | sha256sum` prints 7b37b11e03077203fd84...
        let caller = Caller::token(b"admin-3f9c1d0e8b7a");
        assert_eq!(caller.as_str(), "token:7b37b11e0307");
    }

    #[test]
    fn a_certificate_name_is_kept_with_its_control_characters_escaped() {
        assert_eq!(
            Caller::certificate("ws-manager").as_str(),
            "cert:ws-manager"
        );
        assert_eq!(
            Caller::certificate("evil\nname").as_str(),
            "cert:evil\\nname"
        );
        assert_eq!(Caller::anonymous().to_string(), "anonymous");
    }
}
