//! ListSpecs page tokens: opaque to clients, they carry the keyset position (the last id of the
//! previous page) and a fingerprint of the filters, so a token cannot be reused with other filters.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::{Labels, SpecId};

const VERSION: u8 = 1;
const FINGERPRINT_LEN: usize = 16;

/// Where the next page starts, for which filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    /// The last id of the previous page; the next page starts after it.
    pub after_id: SpecId,
    fingerprint: [u8; FINGERPRINT_LEN],
}

impl PageToken {
    /// The token for the page after `after_id`, under these filters.
    pub fn new(after_id: SpecId, id_prefix: &str, labels: &Labels) -> Self {
        Self {
            after_id,
            fingerprint: fingerprint(id_prefix, labels),
        }
    }

    /// The token as the string clients pass back.
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(1 + FINGERPRINT_LEN + self.after_id.as_str().len());
        raw.push(VERSION);
        raw.extend_from_slice(&self.fingerprint);
        raw.extend_from_slice(self.after_id.as_str().as_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Reads a token a client passed back, checking it was made for these filters. The error is a
    /// sentence for the client.
    pub fn decode(token: &str, id_prefix: &str, labels: &Labels) -> Result<Self, String> {
        const MALFORMED: &str = "is not a page token returned by ListSpecs";
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| MALFORMED.to_owned())?;
        let (version, rest) = raw.split_first().ok_or(MALFORMED)?;
        if *version != VERSION || rest.len() <= FINGERPRINT_LEN {
            return Err(MALFORMED.to_owned());
        }
        let (stored_fingerprint, id) = rest.split_at(FINGERPRINT_LEN);
        let id = std::str::from_utf8(id).map_err(|_| MALFORMED.to_owned())?;
        let after_id = SpecId::parse(id).map_err(|_| MALFORMED.to_owned())?;
        if stored_fingerprint != fingerprint(id_prefix, labels) {
            return Err(
                "was issued for a request with other filters (id_prefix, labels); \
                        send the same filters, or start again without a page_token"
                    .to_owned(),
            );
        }
        Ok(Self::new(after_id, id_prefix, labels))
    }
}

fn fingerprint(id_prefix: &str, labels: &Labels) -> [u8; FINGERPRINT_LEN] {
    // Length-prefixed fields, so that no two different filter sets hash the same input.
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(id_prefix.as_bytes());
    for (key, value) in labels {
        field(key.as_bytes());
        field(value.as_bytes());
    }
    let digest = hasher.finalize();
    let mut out = [0; FINGERPRINT_LEN];
    out.copy_from_slice(&digest[..FINGERPRINT_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validate::fixtures::labels_of as labels;

    #[test]
    fn a_token_round_trips_under_the_same_filters() {
        let l = labels(&[("team", "a")]);
        let token = PageToken::new(SpecId::parse("ws-1").unwrap(), "ws", &l);
        let decoded = PageToken::decode(&token.encode(), "ws", &l).unwrap();
        assert_eq!(decoded, token);
        assert_eq!(decoded.after_id.as_str(), "ws-1");
    }

    #[test]
    fn a_token_is_refused_with_other_filters() {
        let token = PageToken::new(SpecId::parse("ws-1").unwrap(), "ws", &Labels::new()).encode();
        let err = PageToken::decode(&token, "wt", &Labels::new()).unwrap_err();
        assert!(err.contains("other filters"), "{err}");
        let err = PageToken::decode(&token, "ws", &labels(&[("a", "b")])).unwrap_err();
        assert!(err.contains("other filters"), "{err}");
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        for junk in [
            "",
            "!!!",
            "AQ",
            "x",
            &"A".repeat(500),
            "AAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(
                PageToken::decode(junk, "", &Labels::new()).is_err(),
                "{junk:?}"
            );
        }
    }
}
