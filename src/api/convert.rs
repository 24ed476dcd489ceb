//! Conversions between the protobuf messages and the domain: requests into the plain inputs that
//! `crate::domain::validate` checks, and records back into messages.

use chrono::{DateTime, Utc};
use prost::Message;

use crate::domain::validate::{
    DeleteInput, DurationInput, ListInput, ListView, PutInput, VerifyInput,
};
use crate::domain::verification::Report;
use crate::domain::{Error, SpecRecord};
use crate::proto::registryfacade::ImageSpec;
use crate::proto::specprovider::v1 as pb;

impl From<pb::PutSpecRequest> for PutInput {
    fn from(req: pb::PutSpecRequest) -> Self {
        Self {
            id: req.id,
            spec: req.spec,
            // Sorted by key, so that violations come out in the same order on every call.
            labels: req.labels.into_iter().collect(),
            expected_generation: req.expected_generation,
            ttl: req.ttl.map(|ttl| DurationInput {
                seconds: ttl.seconds,
                nanos: ttl.nanos,
            }),
        }
    }
}

impl From<pb::ListSpecsRequest> for ListInput {
    fn from(req: pb::ListSpecsRequest) -> Self {
        Self {
            id_prefix: req.id_prefix,
            labels: req.labels.into_iter().collect(),
            page_size: req.page_size,
            page_token: req.page_token,
            view: match pb::SpecView::try_from(req.view) {
                Ok(pb::SpecView::Unspecified | pb::SpecView::Basic) => ListView::Basic,
                Ok(pb::SpecView::Full) => ListView::Full,
                Err(_) => ListView::Unknown(req.view),
            },
        }
    }
}

impl From<pb::DeleteSpecRequest> for DeleteInput {
    fn from(req: pb::DeleteSpecRequest) -> Self {
        Self {
            id: req.id,
            expected_generation: req.expected_generation,
            allow_missing: req.allow_missing,
        }
    }
}

impl From<pb::VerifySpecRequest> for VerifyInput {
    fn from(req: pb::VerifySpecRequest) -> Self {
        match req.target {
            Some(pb::verify_spec_request::Target::Id(id)) => Self::Id(id),
            Some(pb::verify_spec_request::Target::Spec(spec)) => Self::Spec(spec),
            None => Self::Missing,
        }
    }
}

/// The protobuf form of a verification report.
pub(super) fn report_to_proto(report: Report) -> pb::VerifySpecResponse {
    pb::VerifySpecResponse {
        ok: report.ok,
        checks: report
            .checks
            .into_iter()
            .map(|check| pb::VerificationCheck {
                field: check.field,
                reference: check.reference,
                ok: check.ok,
                digest: check.digest.unwrap_or_default(),
                error: check.error.unwrap_or_default(),
            })
            .collect(),
    }
}

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
        created_by: record.created_by,
        updated_by: record.updated_by,
    })
}

/// A page of records and the token of the next one.
pub(super) fn list_response(
    records: Vec<SpecRecord>,
    next_page_token: String,
) -> Result<pb::ListSpecsResponse, Error> {
    Ok(pb::ListSpecsResponse {
        specs: records
            .into_iter()
            .map(record_to_proto)
            .collect::<Result<_, _>>()?,
        next_page_token,
    })
}
