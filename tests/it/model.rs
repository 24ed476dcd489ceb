//! Model-based test of the stores: random sequences of puts, gets, deletes, lists and sweeps, at
//! explicit times, run against the real store and against a few lines of in-memory model, compared
//! after every step.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use spec_provider::domain::validate::{DurationInput, PutInput, ValidationRules, validate_put};
use spec_provider::domain::{Caller, DeleteCommand, Error, Labels, ListQuery, SpecId, micros_now};
use spec_provider::store::Store;

use crate::db::{Backend, TestDb};
use crate::fixtures::minimal_spec;

const IDS: [&str; 4] = ["a", "a-1", "b", "c"];

/// One step of a run. Times advance by `advance` seconds before the step.
#[derive(Debug, Clone)]
enum Op {
    Put {
        id: usize,
        variant: u32,
        team: Option<u8>,
        expected: Option<i64>,
        ttl: Option<i64>,
    },
    Get {
        id: usize,
    },
    Delete {
        id: usize,
        expected: Option<i64>,
        allow_missing: bool,
    },
    List {
        prefix: &'static str,
        team: Option<u8>,
        after: Option<usize>,
        limit: u32,
    },
    Sweep,
}

/// A step, and the seconds the clock advances before it.
fn op() -> impl Strategy<Value = (i64, Op)> {
    let id = 0..IDS.len();
    let team = prop::option::of(0u8..2);
    let expected = prop::option::of(0i64..4);
    let put = (
        id.clone(),
        0u32..3,
        team.clone(),
        expected.clone(),
        prop::option::of(1i64..60),
    )
        .prop_map(|(id, variant, team, expected, ttl)| Op::Put {
            id,
            variant,
            team,
            expected,
            ttl,
        });
    let delete = (id.clone(), expected, any::<bool>()).prop_map(|(id, expected, allow_missing)| {
        Op::Delete {
            id,
            expected,
            allow_missing,
        }
    });
    let list = (
        prop::sample::select(vec!["", "a", "a-", "b"]),
        team,
        prop::option::of(id.clone()),
        1u32..4,
    )
        .prop_map(|(prefix, team, after, limit)| Op::List {
            prefix,
            team,
            after,
            limit,
        });
    let op = prop_oneof![
        4 => put,
        2 => id.prop_map(|id| Op::Get { id }),
        2 => delete,
        2 => list,
        1 => Just(Op::Sweep),
    ];
    (0i64..30, op)
}

/// What the model keeps of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    variant: u32,
    team: Option<u8>,
    generation: i64,
    expire: Option<DateTime<Utc>>,
}

impl Model {
    fn live(&self, now: DateTime<Utc>) -> bool {
        self.expire.is_none_or(|expire| expire > now)
    }
}

/// A live record as both sides see it: spec variant, team label, generation, expiry.
type Seen = (u32, Option<u8>, i64, Option<DateTime<Utc>>);

/// The outcome of a step, in terms both sides can produce.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Record(Option<Seen>),
    Deleted(bool),
    Listed(Vec<(String, i64)>),
    Swept(u64),
    NotFound,
    AlreadyExists,
    Aborted,
}

fn team_labels(team: Option<u8>) -> Labels {
    team.map(|t| Labels::from([("team".to_owned(), t.to_string())]))
        .unwrap_or_default()
}

fn error_outcome(err: Error) -> Result<Outcome, TestCaseError> {
    match err {
        Error::NotFound { .. } => Ok(Outcome::NotFound),
        Error::AlreadyExists { .. } => Ok(Outcome::AlreadyExists),
        Error::Aborted { .. } => Ok(Outcome::Aborted),
        other => Err(TestCaseError::fail(format!("unexpected error {other:?}"))),
    }
}

/// The model's answer to `op` at `now`, applied to `state`.
fn model_step(state: &mut BTreeMap<&'static str, Model>, op: &Op, now: DateTime<Utc>) -> Outcome {
    match *op {
        Op::Put {
            id,
            variant,
            team,
            expected,
            ttl,
        } => {
            let expire = ttl.map(|ttl| now + Duration::seconds(ttl));
            let Some(current) = state.get(IDS[id]).filter(|r| r.live(now)).cloned() else {
                if expected.is_some_and(|g| g > 0) {
                    return Outcome::NotFound;
                }
                state.insert(
                    IDS[id],
                    Model {
                        variant,
                        team,
                        generation: 1,
                        expire,
                    },
                );
                return Outcome::Record(Some((variant, team, 1, expire)));
            };
            let same_spec = current.variant == variant;
            let changed = !same_spec || current.team != team;
            if changed {
                match expected {
                    None if same_spec => {}
                    None | Some(0) => return Outcome::AlreadyExists,
                    Some(g) if g == current.generation => {}
                    Some(_) => return Outcome::Aborted,
                }
            }
            let next = Model {
                variant,
                team,
                generation: current.generation + i64::from(changed),
                expire: expire.or(current.expire),
            };
            state.insert(IDS[id], next.clone());
            Outcome::Record(Some((
                next.variant,
                next.team,
                next.generation,
                next.expire,
            )))
        }
        Op::Get { id } => Outcome::Record(
            state
                .get(IDS[id])
                .filter(|r| r.live(now))
                .map(|r| (r.variant, r.team, r.generation, r.expire)),
        ),
        Op::Delete {
            id,
            expected,
            allow_missing,
        } => match state.get(IDS[id]).filter(|r| r.live(now)) {
            None if allow_missing => Outcome::Deleted(false),
            None => Outcome::NotFound,
            Some(r) if expected.is_some_and(|g| g != r.generation) => Outcome::Aborted,
            Some(_) => {
                state.remove(IDS[id]);
                Outcome::Deleted(true)
            }
        },
        Op::List {
            prefix,
            team,
            after,
            limit,
        } => Outcome::Listed(
            state
                .iter()
                .filter(|(id, r)| {
                    r.live(now)
                        && id.starts_with(prefix)
                        && after.is_none_or(|a| **id > IDS[a])
                        && (team.is_none() || r.team == team)
                })
                .take(limit as usize)
                .map(|(id, r)| ((*id).to_owned(), r.generation))
                .collect(),
        ),
        Op::Sweep => {
            let before = state.len();
            state.retain(|_, r| r.live(now));
            Outcome::Swept((before - state.len()) as u64)
        }
    }
}

/// The variant of `minimal_spec` a stored spec was made from.
fn variant_of(spec: &[u8]) -> u32 {
    use prost::Message;
    let spec = spec_provider::proto::registryfacade::ImageSpec::decode(spec).unwrap();
    spec.base_ref.rsplit_once('.').unwrap().1.parse().unwrap()
}

fn team_of(labels: &Labels) -> Option<u8> {
    labels.get("team").map(|t| t.parse().unwrap())
}

/// The store's answer to `op` at `now`.
async fn store_step(
    store: &dyn Store,
    op: &Op,
    now: DateTime<Utc>,
) -> Result<Outcome, TestCaseError> {
    let rules = ValidationRules {
        allow_http_urls: false,
        max_spec_bytes: 1 << 20,
    };
    match *op {
        Op::Put {
            id,
            variant,
            team,
            expected,
            ttl,
        } => {
            let cmd = validate_put(
                PutInput {
                    id: IDS[id].to_owned(),
                    spec: Some(minimal_spec(variant)),
                    labels: team_labels(team).into_iter().collect(),
                    expected_generation: expected,
                    ttl: ttl.map(|seconds| DurationInput { seconds, nanos: 0 }),
                },
                &rules,
                Caller::anonymous(),
            )
            .unwrap();
            match store.put(cmd, now).await {
                Ok(outcome) => {
                    let r = outcome.record;
                    Ok(Outcome::Record(Some((
                        variant_of(r.spec.as_deref().unwrap()),
                        team_of(&r.labels),
                        r.generation,
                        r.expire_time,
                    ))))
                }
                Err(err) => error_outcome(err),
            }
        }
        Op::Get { id } => {
            let got = store.get(&SpecId::parse(IDS[id]).unwrap(), now).await;
            match got {
                Ok(record) => Ok(Outcome::Record(record.map(|r| {
                    (
                        variant_of(r.spec.as_deref().unwrap()),
                        team_of(&r.labels),
                        r.generation,
                        r.expire_time,
                    )
                }))),
                Err(err) => error_outcome(err),
            }
        }
        Op::Delete {
            id,
            expected,
            allow_missing,
        } => {
            let cmd = DeleteCommand {
                id: SpecId::parse(IDS[id]).unwrap(),
                expected_generation: expected,
                allow_missing,
            };
            match store.delete(&cmd, now).await {
                Ok(deleted) => Ok(Outcome::Deleted(deleted)),
                Err(err) => error_outcome(err),
            }
        }
        Op::List {
            prefix,
            team,
            after,
            limit,
        } => {
            let query = ListQuery {
                after_id: after.map(|a| IDS[a].to_owned()),
                id_prefix: prefix.to_owned(),
                labels: team_labels(team),
                limit,
                include_spec: false,
            };
            let listed = store
                .list(&query, now)
                .await
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            Ok(Outcome::Listed(
                listed
                    .into_iter()
                    .map(|r| (r.id.into_string(), r.generation))
                    .collect(),
            ))
        }
        Op::Sweep => {
            let swept = store
                .delete_expired(now, 1000)
                .await
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            Ok(Outcome::Swept(swept))
        }
    }
}

/// Runs `cases` random runs of `steps` steps, each on a fresh database of `backend`.
fn store_matches_the_model(backend: Backend, cases: u32, steps: usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(op(), 1..=steps), |ops| {
            runtime.block_on(async {
                let db = TestDb::new(backend).await;
                let store: Arc<dyn Store> = db.store().await;
                let mut state = BTreeMap::new();
                let mut now = micros_now();
                for (i, (advance, op)) in ops.iter().enumerate() {
                    now += Duration::seconds(*advance);
                    let expected = model_step(&mut state, op, now);
                    let actual = store_step(store.as_ref(), op, now).await?;
                    if let (Outcome::Swept(actual), Outcome::Swept(most)) = (&actual, &expected) {
                        // A store may reclaim an expired row earlier (e.g. when a delete finds
                        // it), which no reader can tell: the sweep then finds fewer.
                        prop_assert!(
                            actual <= most,
                            "step {} swept {} > {}: {:?}",
                            i,
                            actual,
                            most,
                            ops
                        );
                    } else {
                        prop_assert_eq!(actual, expected, "step {} ({:?}) of {:?}", i, op, ops);
                    }
                }
                Ok(())
            })
        })
        .unwrap();
}

#[test]
fn the_sqlite_store_behaves_like_the_model() {
    store_matches_the_model(Backend::Sqlite, 32, 40);
}

#[test]
fn the_postgres_store_behaves_like_the_model() {
    store_matches_the_model(Backend::Postgres, 12, 40);
}
