//! Records as stored, and the commands and queries the store carries out.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound, Utc};
use sha2::{Digest, Sha256};

use super::{Caller, PageToken, SpecId};

/// A record's labels, ordered by key so that equal maps compare and encode equally.
pub type Labels = BTreeMap<String, String>;

/// An image spec that passed validation, in its normalized protobuf encoding.
///
/// Only [`super::validate`] makes one, so holding one proves the spec is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedSpec {
    bytes: Vec<u8>,
    digest: String,
}

impl ValidatedSpec {
    /// Wraps bytes that `validate` has checked and normalized.
    pub(super) fn from_normalized_bytes(bytes: Vec<u8>) -> Self {
        let digest = spec_digest(&bytes);
        Self { bytes, digest }
    }

    /// The protobuf encoding of the normalized spec: what is stored and served.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `sha256:<hex>` of [`Self::bytes`].
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The encoding, consuming the spec.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// `sha256:<lowercase hex>` of an encoded spec.
pub fn spec_digest(encoded_spec: &[u8]) -> String {
    sha256_digest(encoded_spec)
}

/// `sha256:<lowercase hex>` of `bytes`: an OCI digest.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The current time, truncated to the microsecond: the precision both databases keep, so a
/// timestamp reads back exactly as it was written.
pub fn micros_now() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(Duration::microseconds(1))
        .expect("truncating the current time to microseconds cannot overflow")
}

/// A stored spec with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecRecord {
    /// The record's id.
    pub id: SpecId,
    /// The spec's protobuf encoding; `None` when a listing asked for the basic view.
    pub spec: Option<Vec<u8>>,
    /// `sha256:<hex>` of the spec's encoding.
    pub spec_digest: String,
    /// The record's labels.
    pub labels: Labels,
    /// 1 at creation, one more on every change of spec or labels.
    pub generation: i64,
    /// When the record was created.
    pub create_time: DateTime<Utc>,
    /// When the record last changed.
    pub update_time: DateTime<Utc>,
    /// When the record stops being served; `None` for never.
    pub expire_time: Option<DateTime<Utc>>,
    /// Who created the record (a [`Caller`]; `unknown` for records created before identities
    /// were recorded).
    pub created_by: String,
    /// Who last changed it, when `update_time` last moved (likewise).
    pub updated_by: String,
}

impl SpecRecord {
    /// Whether the record has expired at `now` (and so is invisible).
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expire_time.is_some_and(|expire| expire <= now)
    }
}

/// A validated PutSpec request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutCommand {
    /// The record's id.
    pub id: SpecId,
    /// The spec to store.
    pub spec: ValidatedSpec,
    /// The labels the record will carry.
    pub labels: Labels,
    /// The generation the caller believes is stored (0: must not exist).
    pub expected_generation: Option<i64>,
    /// How long the record lives from now; `None` keeps the current expiry (never, for a new one).
    pub ttl: Option<Duration>,
    /// Who is writing: the record's `updated_by` if the put changes it, and its `created_by`
    /// too if it creates it.
    pub caller: Caller,
}

/// A validated DeleteSpec request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteCommand {
    /// The record's id.
    pub id: SpecId,
    /// The generation that must be stored for the delete to happen.
    pub expected_generation: Option<i64>,
    /// Whether deleting an absent record is a success (`deleted = false`) rather than NOT_FOUND.
    pub allow_missing: bool,
}

/// One page's worth of a listing, in the store's terms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    /// Only ids strictly greater than this one (the keyset position).
    pub after_id: Option<String>,
    /// Only ids starting with this; empty for all.
    pub id_prefix: String,
    /// Only records carrying every one of these pairs.
    pub labels: Labels,
    /// The most records to return.
    pub limit: u32,
    /// Whether records carry their spec.
    pub include_spec: bool,
}

/// `page_size` when a ListSpecs request leaves it 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// The largest page ListSpecs hands out; larger `page_size` values are clamped to this.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// A validated ListSpecs request: the store's query, and the size of the page it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// What to ask the store: one record more than a page, to tell whether another follows.
    pub query: ListQuery,
    /// How many records the page holds at most.
    pub page_size: u32,
}

impl ListPage {
    /// Cuts what the store answered to [`Self::query`] to the page, with the token of the next
    /// page (empty when no other page follows).
    pub fn cut(&self, mut records: Vec<SpecRecord>) -> (Vec<SpecRecord>, String) {
        let page_size = usize::try_from(self.page_size).unwrap_or(usize::MAX);
        if records.len() <= page_size {
            return (records, String::new());
        }
        records.truncate(page_size);
        let last = records.last().expect("a page of at least one record");
        let token = PageToken::new(last.id.clone(), &self.query.id_prefix, &self.query.labels);
        (records, token.encode())
    }
}

/// What a PutSpec did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// The record as stored after the put.
    pub record: SpecRecord,
    /// Whether anything was written (false for an idempotent repeat).
    pub changed: bool,
}
