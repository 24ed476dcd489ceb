//! The rules of PutSpec and DeleteSpec, as pure functions of the stored record and the request.
//!
//! Both stores read the current row inside a transaction, ask these functions what to do, and
//! write the answer in the same transaction; so the rules live here once.

use chrono::{DateTime, Utc};

use super::{DeleteCommand, Error, PutCommand, SpecRecord};

/// What a PutSpec does to the stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutDecision {
    /// Write a new record (over an expired row, if one is still stored).
    Create(SpecRecord),
    /// Overwrite the live record with this one.
    Update(SpecRecord),
    /// Nothing changes; this is the stored record.
    Unchanged(SpecRecord),
}

impl PutDecision {
    /// The record as it is once the decision is carried out.
    pub fn record(&self) -> &SpecRecord {
        match self {
            Self::Create(r) | Self::Update(r) | Self::Unchanged(r) => r,
        }
    }
}

/// Decides what a put does, given the stored row (expired or not) for its id.
///
/// - No live record: create at generation 1, unless `expected_generation` > 0 (NOT_FOUND).
/// - Same spec: success whatever `expected_generation` says, so a retried put never fails. New
///   labels are stored with generation + 1 (but if `expected_generation` is given, it must match:
///   a caller changing labels from a stale view is refused like any other stale write). A `ttl`
///   moves `expire_time` to `now + ttl` without touching the generation.
/// - Different spec: only with `expected_generation` equal to the stored generation.
///
/// The caller becomes `created_by` and `updated_by` of a new record, and `updated_by` of a
/// changed one, exactly when `update_time` moves: a put that changes nothing (a retry, an import
/// of what is stored) leaves both as they were, so that they name who really wrote.
pub fn decide_put(
    stored: Option<&SpecRecord>,
    cmd: PutCommand,
    now: DateTime<Utc>,
) -> Result<PutDecision, Error> {
    // Validation bounds the ttl to a year, but the rules do not rely on it to avoid an overflow.
    let expire_from_ttl = cmd
        .ttl
        .map(|ttl| {
            now.checked_add_signed(ttl)
                .ok_or_else(|| Error::invalid("ttl", "is too long: the expiry would overflow"))
        })
        .transpose()?;
    let Some(current) = stored.filter(|r| !r.is_expired(now)) else {
        if let Some(expected) = cmd.expected_generation.filter(|g| *g > 0) {
            return Err(Error::NotFound {
                message: format!(
                    "no spec with id {:?}, so expected_generation {expected} cannot match; use \
                     expected_generation 0 or leave it unset to create it",
                    cmd.id.as_str()
                ),
            });
        }
        let spec_digest = cmd.spec.digest().to_owned();
        return Ok(PutDecision::Create(SpecRecord {
            id: cmd.id,
            spec: Some(cmd.spec.into_bytes()),
            spec_digest,
            labels: cmd.labels,
            generation: 1,
            create_time: now,
            update_time: now,
            expire_time: expire_from_ttl,
            created_by: cmd.caller.as_str().to_owned(),
            updated_by: cmd.caller.as_str().to_owned(),
        }));
    };

    let same_spec = current.spec_digest == cmd.spec.digest()
        && current.spec.as_deref() == Some(cmd.spec.bytes());
    if !same_spec || current.labels != cmd.labels {
        check_expected_generation(current, cmd.expected_generation, same_spec)?;
    }

    let mut next = current.clone();
    if !same_spec {
        next.spec_digest = cmd.spec.digest().to_owned();
        next.spec = Some(cmd.spec.into_bytes());
    }
    let labels_changed = next.labels != cmd.labels;
    next.labels = cmd.labels;
    if !same_spec || labels_changed {
        next.generation += 1;
    }
    if let Some(expire) = expire_from_ttl {
        next.expire_time = Some(expire);
    }
    if next == *current {
        return Ok(PutDecision::Unchanged(next));
    }
    next.update_time = now;
    next.updated_by = cmd.caller.as_str().to_owned();
    Ok(PutDecision::Update(next))
}

/// Refuses a change to a live record unless `expected` names its generation.
fn check_expected_generation(
    current: &SpecRecord,
    expected: Option<i64>,
    same_spec: bool,
) -> Result<(), Error> {
    match expected {
        None if same_spec => Ok(()),
        None => Err(Error::AlreadyExists {
            message: format!(
                "spec {:?} already exists with a different spec (generation {}, {}); replacing a \
                 spec needs expected_generation set to the stored generation",
                current.id.as_str(),
                current.generation,
                current.spec_digest
            ),
        }),
        Some(0) => Err(Error::AlreadyExists {
            message: format!(
                "spec {:?} already exists (generation {}); expected_generation 0 means it must \
                 not exist yet",
                current.id.as_str(),
                current.generation
            ),
        }),
        Some(expected) if expected == current.generation => Ok(()),
        Some(expected) => Err(Error::Aborted {
            id: current.id.to_string(),
            expected,
            actual: current.generation,
        }),
    }
}

/// What a DeleteSpec does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteDecision {
    /// Delete the row.
    Delete,
    /// There is no live record and the caller allowed that: `deleted = false`.
    NothingToDelete,
}

/// Decides what a delete does, given the stored row (expired or not) for its id.
pub fn decide_delete(
    stored: Option<&SpecRecord>,
    cmd: &DeleteCommand,
    now: DateTime<Utc>,
) -> Result<DeleteDecision, Error> {
    let Some(current) = stored.filter(|r| !r.is_expired(now)) else {
        return if cmd.allow_missing {
            Ok(DeleteDecision::NothingToDelete)
        } else {
            Err(Error::not_found(cmd.id.as_str()))
        };
    };
    match cmd.expected_generation {
        Some(expected) if expected != current.generation => Err(Error::Aborted {
            id: current.id.to_string(),
            expected,
            actual: current.generation,
        }),
        _ => Ok(DeleteDecision::Delete),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::domain::{Caller, SpecId, ValidatedSpec};

    fn command(ttl: Option<Duration>) -> PutCommand {
        PutCommand {
            id: SpecId::parse("ws-1").unwrap(),
            spec: ValidatedSpec::from_normalized_bytes(vec![10, 1, b'x']),
            labels: Default::default(),
            expected_generation: None,
            ttl,
            caller: Caller::token(b"writer-1"),
        }
    }

    #[test]
    fn a_ttl_that_would_overflow_the_expiry_is_invalid_not_a_panic() {
        let now = crate::domain::micros_now();
        let err = decide_put(None, command(Some(Duration::MAX)), now).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(ref v) if v[0].field == "ttl"),
            "{err:?}"
        );
    }

    #[test]
    fn a_new_record_starts_at_generation_one_and_expires_after_its_ttl() {
        let now = crate::domain::micros_now();
        let decision = decide_put(None, command(Some(Duration::seconds(30))), now).unwrap();
        let PutDecision::Create(record) = decision else {
            panic!("expected a create, got {decision:?}");
        };
        assert_eq!(record.generation, 1);
        assert_eq!(record.create_time, now);
        assert_eq!(record.expire_time, Some(now + Duration::seconds(30)));
        assert_eq!(record.created_by, Caller::token(b"writer-1").as_str());
        assert_eq!(record.updated_by, record.created_by);
    }

    #[test]
    fn a_change_names_its_caller_and_a_put_that_changes_nothing_names_no_one() {
        let created = micros_now_record();
        let later = created.update_time + Duration::seconds(1);
        let by = |caller: &str, ttl| PutCommand {
            caller: Caller::certificate(caller),
            ..command(ttl)
        };

        let decision = decide_put(Some(&created), by("other", None), later).unwrap();
        assert_eq!(decision, PutDecision::Unchanged(created.clone()));

        // A refreshed expiry is a change (update_time moves), so it names its caller.
        let decision = decide_put(Some(&created), by("other", Some(Duration::hours(1))), later);
        let PutDecision::Update(updated) = decision.unwrap() else {
            panic!("expected an update");
        };
        assert_eq!(updated.updated_by, "cert:other");
        assert_eq!(updated.created_by, created.created_by);
        assert_eq!(updated.update_time, later);
    }

    /// A record `command` created just now.
    fn micros_now_record() -> SpecRecord {
        let now = crate::domain::micros_now();
        match decide_put(None, command(None), now).unwrap() {
            PutDecision::Create(record) => record,
            other => panic!("expected a create, got {other:?}"),
        }
    }
}
