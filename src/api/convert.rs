//! Conversions between the domain's records and the protobuf messages.

use chrono::{DateTime, Utc};
use prost::Message;

use crate::domain::{Error, SpecRecord};
use crate::proto::registryfacade::ImageSpec;
use crate::proto::specprovider::v1 as pb;

/// Decodes a stored spec. Stored bytes were encoded by us, so a failure is an internal error.
pub(super) fn decode_spec(bytes: &[u8]) -> Result<ImageSpec, Error> {
    ImageSpec::decode(bytes)
        .map_err(|e| Error::Internal(anyhow::Error::new(e).context("decoding a stored spec")))
}

/// A protobuf timestamp.
pub(super) fn timestamp(t: DateTime<Utc>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos())
            .expect("sub-second nanoseconds are below 10^9 and fit in an i32"),
    }
}

/// The protobuf form of a record (with its spec when the record carries one).
pub(super) fn record_to_proto(record: SpecRecord) -> Result<pb::SpecRecord, Error> {
    Ok(pb::SpecRecord {
        spec: record.spec.as_deref().map(decode_spec).transpose()?,
        id: record.id.into_string(),
        labels: record.labels.into_iter().collect(),
        generation: record.generation,
        spec_digest: record.spec_digest,
        create_time: Some(timestamp(record.create_time)),
        update_time: Some(timestamp(record.update_time)),
        expire_time: record.expire_time.map(timestamp),
    })
}
