//! One function per request (PutSpec, GetSpec and GetImageSpec, ListSpecs, DeleteSpec) that turns
//! the fields a client sent into a validated domain command, or lists every violation.
//!
//! The inputs are plain structs, not the generated protobuf messages: `crate::api` converts one
//! into the other, so the rules here know nothing of the wire.

use chrono::TimeDelta;

use super::labels::validate_labels;
use super::spec::validate_owned_spec;
use super::{FieldViolation, ValidationRules, collect, required};
use crate::domain::{
    Caller, DEFAULT_PAGE_SIZE, DeleteCommand, Error, Labels, ListPage, ListQuery, MAX_PAGE_SIZE,
    PageToken, PutCommand, SpecId, ValidatedSpec, is_id_prefix,
};
use crate::proto::registryfacade::ImageSpec;

/// The shortest accepted `ttl`, in seconds.
pub const MIN_TTL_SECONDS: i64 = 1;

/// The longest accepted `ttl`, in seconds: 365 days.
pub const MAX_TTL_SECONDS: i64 = 365 * 24 * 60 * 60;

/// A duration as protobuf carries it: whole seconds, and nanoseconds of the same sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationInput {
    /// Whole seconds.
    pub seconds: i64,
    /// Nanoseconds, -999,999,999 to 999,999,999.
    pub nanos: i32,
}

/// The fields of a PutSpec request, as sent.
#[derive(Debug, Clone, Default)]
pub struct PutInput {
    /// The record's id.
    pub id: String,
    /// The spec to store.
    pub spec: Option<ImageSpec>,
    /// The labels the record is to carry.
    pub labels: Labels,
    /// The generation the caller believes is stored (0: must not exist).
    pub expected_generation: Option<i64>,
    /// How long the record lives from now.
    pub ttl: Option<DurationInput>,
}

/// The view a ListSpecs request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListView {
    /// Records without their spec (also what an unspecified view means).
    #[default]
    Basic,
    /// Records with their spec.
    Full,
    /// A number that names no view.
    Unknown(i32),
}

/// The fields of a ListSpecs request, as sent.
#[derive(Debug, Clone, Default)]
pub struct ListInput {
    /// Only ids starting with this; empty for all.
    pub id_prefix: String,
    /// Only records carrying every one of these pairs.
    pub labels: Labels,
    /// The most records a page may hold; 0 for the default.
    pub page_size: i32,
    /// Where the page starts: empty for the first page, else a previous page's token.
    pub page_token: String,
    /// Whether records carry their spec.
    pub view: ListView,
}

/// The fields of a DeleteSpec request, as sent.
#[derive(Debug, Clone, Default)]
pub struct DeleteInput {
    /// The record's id.
    pub id: String,
    /// The generation that must be stored for the delete to happen.
    pub expected_generation: Option<i64>,
    /// Whether deleting an absent record is a success rather than NOT_FOUND.
    pub allow_missing: bool,
}

/// The target of a VerifySpec request, as sent.
#[derive(Debug, Clone, Default)]
pub enum VerifyInput {
    /// Neither an id nor a spec.
    #[default]
    Missing,
    /// The id of a stored spec.
    Id(String),
    /// A spec to check without storing it.
    Spec(ImageSpec),
}

/// What a VerifySpec request checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyTarget {
    /// The spec stored under an id.
    Stored(SpecId),
    /// A spec given in the request, validated as PutSpec's is.
    Given(ValidatedSpec),
}

/// Validates a PutSpec request sent by `caller` into a command; `Error::InvalidArgument` lists
/// every violation.
pub fn validate_put(
    input: PutInput,
    rules: &ValidationRules,
    caller: Caller,
) -> Result<PutCommand, Error> {
    let mut violations = Vec::new();
    let id = collect(parse_id(&input.id), &mut violations);
    let spec = collect(
        match input.spec {
            // Taken by value so that a large direct layer is not copied.
            Some(spec) => validate_owned_spec("spec", spec, rules),
            None => Err(vec![required("spec")]),
        },
        &mut violations,
    );
    violations.extend(validate_labels("labels", &input.labels));
    violations.extend(check_expected_generation(input.expected_generation));
    let ttl = collect(
        validate_ttl("ttl", input.ttl).map_err(|v| vec![v]),
        &mut violations,
    );
    match (id, spec, ttl) {
        (Some(id), Some(spec), Some(ttl)) if violations.is_empty() => Ok(PutCommand {
            id,
            spec,
            labels: input.labels,
            expected_generation: input.expected_generation,
            ttl,
            caller,
        }),
        _ => Err(Error::InvalidArgument(violations)),
    }
}

/// Validates a VerifySpec request: a well-formed id, or a spec that passes PutSpec's validation.
pub fn validate_verify(input: VerifyInput, rules: &ValidationRules) -> Result<VerifyTarget, Error> {
    match input {
        VerifyInput::Id(id) => parse_id(&id).map(VerifyTarget::Stored),
        VerifyInput::Spec(spec) => {
            validate_owned_spec("spec", spec, rules).map(VerifyTarget::Given)
        }
        VerifyInput::Missing => Err(vec![FieldViolation::new(
            "target",
            "is required: set id (a stored spec) or spec (a spec to check without storing it)",
        )]),
    }
    .map_err(Error::InvalidArgument)
}

/// Validates the id of a GetSpec or GetImageSpec request.
pub fn validate_get(id: &str) -> Result<SpecId, Error> {
    parse_id(id).map_err(Error::InvalidArgument)
}

/// Validates a ListSpecs request into the store's query for one page.
pub fn validate_list(input: ListInput) -> Result<ListPage, Error> {
    let mut violations = validate_labels("labels", &input.labels);
    let page_size = match u32::try_from(input.page_size) {
        Ok(0) => DEFAULT_PAGE_SIZE,
        Ok(n) => n.min(MAX_PAGE_SIZE),
        Err(_) => {
            violations.push(negative("page_size", input.page_size.into()));
            0
        }
    };
    if !is_id_prefix(&input.id_prefix) {
        violations.push(FieldViolation::new(
            "id_prefix",
            "may only contain the characters of an id ([a-z0-9._-]) and be at most 200 long",
        ));
    }
    let include_spec = match input.view {
        ListView::Basic => false,
        ListView::Full => true,
        ListView::Unknown(view) => {
            violations.push(FieldViolation::new(
                "view",
                format!("{view} is not a SpecView"),
            ));
            false
        }
    };
    let after = if input.page_token.is_empty() {
        None
    } else {
        PageToken::decode(&input.page_token, &input.id_prefix, &input.labels)
            .map_err(|reason| violations.push(FieldViolation::new("page_token", reason)))
            .ok()
    };
    if !violations.is_empty() {
        return Err(Error::InvalidArgument(violations));
    }
    Ok(ListPage {
        query: ListQuery {
            after_id: after.map(|token| token.after_id.into_string()),
            id_prefix: input.id_prefix,
            labels: input.labels,
            // One more than a page tells whether another page follows.
            limit: page_size + 1,
            include_spec,
        },
        page_size,
    })
}

/// Validates a DeleteSpec request into a command.
pub fn validate_delete(input: DeleteInput) -> Result<DeleteCommand, Error> {
    let mut violations = Vec::new();
    let id = collect(parse_id(&input.id), &mut violations);
    violations.extend(check_expected_generation(input.expected_generation));
    match id {
        Some(id) if violations.is_empty() => Ok(DeleteCommand {
            id,
            expected_generation: input.expected_generation,
            allow_missing: input.allow_missing,
        }),
        _ => Err(Error::InvalidArgument(violations)),
    }
}

/// Checks an optional ttl (1 s to 365 days) and converts it; `field` is its path.
pub fn validate_ttl(
    field: &str,
    ttl: Option<DurationInput>,
) -> Result<Option<TimeDelta>, FieldViolation> {
    let Some(DurationInput { seconds, nanos }) = ttl else {
        return Ok(None);
    };
    let violation = |description: String| FieldViolation::new(field, description);
    if !(-999_999_999..=999_999_999).contains(&nanos) {
        return Err(violation(format!(
            "is malformed: nanos must be between -999999999 and 999999999, got {nanos}"
        )));
    }
    if (seconds > 0 && nanos < 0) || (seconds < 0 && nanos > 0) {
        return Err(violation(format!(
            "is malformed: seconds ({seconds}) and nanos ({nanos}) must have the same sign"
        )));
    }
    // With one sign for both parts (checked above), comparing (seconds, nanos) pairs
    // lexicographically orders them as the durations they denote.
    if (seconds, nanos) < (MIN_TTL_SECONDS, 0) {
        return Err(violation(format!(
            "must be at least {MIN_TTL_SECONDS}s, got {}",
            describe_duration(seconds, nanos)
        )));
    }
    if (seconds, nanos) > (MAX_TTL_SECONDS, 0) {
        return Err(violation(format!(
            "must be at most 365 days ({MAX_TTL_SECONDS}s), got {}",
            describe_duration(seconds, nanos)
        )));
    }
    u32::try_from(nanos)
        .ok()
        .and_then(|nanos| TimeDelta::new(seconds, nanos))
        .map(Some)
        .ok_or_else(|| violation("is out of range".into()))
}

/// The request's id, at the path `id`.
fn parse_id(raw: &str) -> Result<SpecId, Vec<FieldViolation>> {
    SpecId::parse(raw).map_err(|description| vec![FieldViolation::new("id", description)])
}

/// `expected_generation` names a generation, so it is not negative (0: no record).
fn check_expected_generation(expected: Option<i64>) -> Option<FieldViolation> {
    expected
        .filter(|generation| *generation < 0)
        .map(|generation| negative("expected_generation", generation))
}

/// The violation of a number that must not be negative.
fn negative(field: &str, value: i64) -> FieldViolation {
    FieldViolation::new(field, format!("must not be negative, got {value}"))
}

/// `seconds` and `nanos` as a short human-readable duration.
fn describe_duration(seconds: i64, nanos: i32) -> String {
    if nanos == 0 {
        format!("{seconds}s")
    } else {
        format!("{seconds}s and {nanos}ns")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;

    use super::*;
    use crate::domain::spec_digest;
    use crate::domain::validate::fixtures::{
        DIRECT_CONTENT, digest, direct, duration, fields, refused, remote_layer, request_with_spec,
        rules, stored_spec, the_only_violation, valid_request, valid_spec,
    };

    #[test]
    fn a_fully_valid_request_with_every_field_set_passes_and_normalizes_the_diff_id() {
        let original = valid_spec();
        let mut original_for_check = original.clone();
        assert!(remote_layer(&mut original_for_check, 0).diff_id.is_empty());

        let cmd = validate_put(valid_request(), &rules(), Caller::anonymous()).unwrap();

        let mut expected = original;
        let plain = remote_layer(&mut expected, 0);
        plain.diff_id = plain.digest.clone();
        assert_eq!(stored_spec(&cmd), expected);
        assert_eq!(cmd.spec.bytes(), expected.encode_to_vec());
        assert_eq!(cmd.spec.digest(), spec_digest(&expected.encode_to_vec()));
        assert_eq!(
            remote_layer(&mut stored_spec(&cmd), 1).diff_id,
            digest("unpacked"),
            "a compressed layer's diff_id is kept as sent"
        );
        assert_eq!(cmd.id.as_str(), "ws-0123");
        assert_eq!(
            cmd.labels,
            Labels::from([
                ("gitpod.io/owner".into(), "user-1".into()),
                ("tier".into(), String::new()),
            ])
        );
        assert_eq!(cmd.expected_generation, Some(0));
        assert_eq!(cmd.ttl, Some(TimeDelta::hours(1)));
    }

    #[test]
    fn the_same_spec_validates_to_the_same_bytes() {
        let first = validate_put(valid_request(), &rules(), Caller::anonymous()).unwrap();
        let second = validate_put(valid_request(), &rules(), Caller::anonymous()).unwrap();
        assert_eq!(first.spec, second.spec);
    }

    #[test]
    fn several_violations_in_one_request_are_all_reported_at_once() {
        let mut req = request_with_spec(|spec| {
            spec.base_ref.clear();
            remote_layer(spec, 0).digest = "sha256:nope".into();
            spec.content_layer[2] = direct(b"garbage".to_vec());
        });
        req.id = "Not An Id".into();
        req.labels.insert("bad key".into(), "ok".into());
        req.expected_generation = Some(-1);
        req.ttl = Some(duration(0, 0));

        let err = validate_put(req, &rules(), Caller::anonymous()).unwrap_err();
        let message = err.to_string();
        let Error::InvalidArgument(violations) = err else {
            panic!("expected InvalidArgument");
        };
        assert_eq!(
            fields(&violations),
            BTreeSet::from([
                "id",
                "spec.base_ref",
                "spec.content_layer[0].remote.digest",
                DIRECT_CONTENT,
                "labels[\"bad key\"]",
                "expected_generation",
                "ttl",
            ])
        );
        assert_eq!(violations.len(), 7, "{violations:?}");
        for violation in &violations {
            assert!(message.contains(&violation.field), "{message}");
        }
    }

    #[test]
    fn a_malformed_id_is_reported_at_id() {
        let mut req = valid_request();
        req.id = "Ws 1".into();
        assert_eq!(the_only_violation(req).field, "id");
    }

    #[test]
    fn a_missing_spec_is_required() {
        let mut req = valid_request();
        req.spec = None;
        let violation = the_only_violation(req);
        assert_eq!(violation, FieldViolation::new("spec", "is required"));
    }

    #[test]
    fn a_negative_expected_generation_is_rejected() {
        let mut req = valid_request();
        req.expected_generation = Some(-1);
        assert_eq!(the_only_violation(req).field, "expected_generation");
        for accepted in [None, Some(0), Some(7)] {
            let mut req = valid_request();
            req.expected_generation = accepted;
            let cmd = validate_put(req, &rules(), Caller::anonymous()).unwrap();
            assert_eq!(cmd.expected_generation, accepted);
        }
    }

    fn ttl(seconds: i64, nanos: i32) -> Result<Option<TimeDelta>, FieldViolation> {
        validate_ttl("ttl", Some(duration(seconds, nanos)))
    }

    #[test]
    fn a_ttl_of_exactly_one_second_or_exactly_365_days_is_accepted() {
        assert_eq!(ttl(1, 0), Ok(Some(TimeDelta::seconds(1))));
        assert_eq!(ttl(365 * 24 * 60 * 60, 0), Ok(Some(TimeDelta::days(365))));
        assert_eq!(
            ttl(10, 500_000_000),
            Ok(Some(TimeDelta::milliseconds(10_500)))
        );
    }

    #[test]
    fn a_ttl_just_outside_its_bounds_is_rejected() {
        for (seconds, nanos) in [
            (0, 999_999_999),
            (0, 0),
            (0, -1),
            (-1, 0),
            (MAX_TTL_SECONDS, 1),
            (MAX_TTL_SECONDS + 1, 0),
            (i64::MAX, 999_999_999),
            (i64::MIN, -999_999_999),
        ] {
            let violation = ttl(seconds, nanos).unwrap_err();
            assert_eq!(violation.field, "ttl", "{seconds}s {nanos}ns");
        }
    }

    #[test]
    fn a_malformed_ttl_is_rejected() {
        for (seconds, nanos) in [
            (5, 1_000_000_000),
            (5, -1_000_000_000),
            (5, i32::MAX),
            (-5, i32::MIN),
            (5, -1),
            (-5, 1),
        ] {
            let violation = ttl(seconds, nanos).unwrap_err();
            assert!(
                violation.description.starts_with("is malformed"),
                "{seconds}s {nanos}ns: {violation}"
            );
        }
    }

    #[test]
    fn a_ttl_is_optional_and_reported_at_ttl_in_a_request() {
        assert_eq!(validate_ttl("ttl", None), Ok(None));
        let mut req = valid_request();
        req.ttl = None;
        assert_eq!(
            validate_put(req, &rules(), Caller::anonymous())
                .unwrap()
                .ttl,
            None
        );

        let mut req = valid_request();
        req.ttl = Some(duration(MAX_TTL_SECONDS + 1, 0));
        assert_eq!(the_only_violation(req).field, "ttl");
    }

    // ---- ListSpecs, DeleteSpec and GetSpec ----

    #[test]
    fn a_list_request_reports_every_violation_at_once() {
        let input = ListInput {
            id_prefix: "WS".into(),
            labels: Labels::from([("bad key".into(), "v".into())]),
            page_size: -1,
            page_token: "not-a-token".into(),
            view: ListView::Unknown(7),
        };
        let violations = refused(validate_list(input));
        assert_eq!(
            fields(&violations),
            BTreeSet::from([
                "id_prefix",
                "labels[\"bad key\"]",
                "page_size",
                "page_token",
                "view"
            ])
        );
        let page_size = violations.iter().find(|v| v.field == "page_size").unwrap();
        assert_eq!(page_size.description, "must not be negative, got -1");
    }

    #[test]
    fn a_list_page_size_defaults_when_zero_and_is_clamped_to_the_maximum() {
        let page = |page_size| {
            validate_list(ListInput {
                page_size,
                ..ListInput::default()
            })
            .unwrap()
        };
        assert_eq!(page(0).page_size, DEFAULT_PAGE_SIZE);
        assert_eq!(page(7).page_size, 7);
        assert_eq!(page(5000).page_size, MAX_PAGE_SIZE);
        // One more than a page tells whether another page follows.
        assert_eq!(page(7).query.limit, 8);
        assert!(!page(7).query.include_spec);
    }

    #[test]
    fn a_list_page_token_carries_the_position_under_the_same_filters() {
        let labels = Labels::from([("team".into(), "a".into())]);
        let token = PageToken::new(SpecId::parse("ws-3").unwrap(), "ws", &labels).encode();
        let page = validate_list(ListInput {
            id_prefix: "ws".into(),
            labels,
            page_token: token,
            view: ListView::Full,
            ..ListInput::default()
        })
        .unwrap();
        assert_eq!(page.query.after_id.as_deref(), Some("ws-3"));
        assert!(page.query.include_spec);
    }

    #[test]
    fn a_delete_request_reports_every_violation_at_once() {
        let violations = refused(validate_delete(DeleteInput {
            id: "Not An Id".into(),
            expected_generation: Some(-2),
            allow_missing: true,
        }));
        assert_eq!(
            fields(&violations),
            BTreeSet::from(["id", "expected_generation"])
        );
        let cmd = validate_delete(DeleteInput {
            id: "ws-1".into(),
            expected_generation: Some(0),
            allow_missing: true,
        })
        .unwrap();
        assert_eq!(cmd.id.as_str(), "ws-1");
        assert_eq!(cmd.expected_generation, Some(0));
        assert!(cmd.allow_missing);
    }

    #[test]
    fn put_and_delete_word_a_negative_expected_generation_alike() {
        let mut put = valid_request();
        put.expected_generation = Some(-1);
        let put = the_only_violation(put);
        let delete = refused(validate_delete(DeleteInput {
            id: "ws-1".into(),
            expected_generation: Some(-1),
            allow_missing: false,
        }));
        assert_eq!(delete, vec![put]);
    }

    #[test]
    fn a_get_names_a_malformed_id_at_id() {
        assert_eq!(validate_get("ws-1").unwrap().as_str(), "ws-1");
        assert_eq!(
            refused(validate_get("")),
            vec![FieldViolation::new("id", "must not be empty")]
        );
    }
}
