//! The background tasks: the read cache following the store's changes, the database watch
//! (migrations, then health), the sweeper of expired records, the spec counters, all three paced
//! by one periodic-task helper ([`Pacer`]), and the reloading of TLS and token files.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use crate::api::ApiState;
use crate::cache::SpecCache;
use crate::config::{DatabaseSettings, Settings, SweeperSettings};
use crate::domain::micros_now;
use crate::metrics::Metrics;
use crate::security::auth::SharedCredentials;
use crate::security::tls::ReloadingTls;
use crate::security::watch_files;
use crate::store::Store;

/// What the background tasks work on.
pub(super) struct Background<'a> {
    /// The whole configuration.
    pub settings: &'a Settings,
    /// The store, instrumented.
    pub store: &'a Arc<dyn Store>,
    /// The handlers' state, which the database watch marks ready.
    pub state: &'a ApiState,
    /// The health the database watch moves.
    pub health: &'a Health,
    /// The metrics the sweeper and the counter move.
    pub metrics: &'a Metrics,
    /// The read cache, kept coherent with the store's changes.
    pub cache: &'a SpecCache,
    /// The TLS files to reload, with TLS on.
    pub tls: Option<&'a Arc<ReloadingTls>>,
    /// The token files to reload.
    pub credentials: &'a SharedCredentials,
}

impl Background<'_> {
    /// Spawns every background task. They stop at `cancel`, and when the set is dropped.
    pub(super) fn spawn(self, cancel: &CancellationToken) -> JoinSet<()> {
        let settings = self.settings;
        let mut tasks = JoinSet::new();
        tasks.spawn({
            let (cache, store, cancel) = (self.cache.clone(), self.store.clone(), cancel.clone());
            async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = cache.follow(store) => {}
                }
            }
        });
        tasks.spawn(watch_database(
            self.store.clone(),
            self.state.clone(),
            self.health.clone(),
            settings.database.clone(),
            settings.health.check_interval,
            cancel.clone(),
        ));
        tasks.spawn(sweep_expired(
            self.store.clone(),
            self.state.clone(),
            settings.sweeper.clone(),
            self.metrics.sweeper_deleted.clone(),
            cancel.clone(),
        ));
        tasks.spawn(count_specs(
            self.store.clone(),
            self.state.clone(),
            SpecGauges {
                stored: self.metrics.specs_stored.clone(),
                expired: self.metrics.specs_expired.clone(),
            },
            settings.metrics.refresh_interval,
            cancel.clone(),
        ));
        if let Some(tls) = self.tls.cloned() {
            tasks.spawn(watch_files(
                tls.paths(),
                settings.tls.reload_interval,
                cancel.clone(),
                move || tls.reload(),
            ));
        }
        if !self.credentials.paths().is_empty() {
            let credentials = self.credentials.clone();
            tasks.spawn(watch_files(
                credentials.paths(),
                settings.tls.reload_interval,
                cancel.clone(),
                move || credentials.reload(),
            ));
        }
        tasks
    }
}

/// The longest wait before trying again while the database does not answer.
const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// How a periodic task is paced.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    /// The wait before the first round.
    pub first_round_after: Duration,
    /// The wait after a round that succeeded.
    pub interval: Duration,
    /// The wait after a round that failed (or could not run yet).
    pub after_failure: Duration,
}

impl Pace {
    /// Every `interval`, and sooner (at most [`MAX_RETRY_INTERVAL`] later) after a failure, so
    /// that what waits for the database sees it answer soon after it does.
    fn retrying_sooner(interval: Duration) -> Self {
        Self {
            first_round_after: Duration::ZERO,
            interval,
            after_failure: interval.min(MAX_RETRY_INTERVAL),
        }
    }
}

/// Paces the rounds of a periodic task: `while pacer.next_round().await { ...; pacer.finished(ok) }`.
pub(super) struct Pacer {
    pace: Pace,
    cancel: CancellationToken,
    /// The wait before the next round.
    wait: Duration,
}

impl Pacer {
    /// Rounds paced by `pace` until `cancel`.
    pub(super) fn new(pace: Pace, cancel: CancellationToken) -> Self {
        Self {
            wait: pace.first_round_after,
            pace,
            cancel,
        }
    }

    /// Waits until the next round is due; `false` once cancelled, when the task ends.
    pub(super) async fn next_round(&mut self) -> bool {
        self.pause(self.wait).await
    }

    /// Records whether the round succeeded, which sets the wait before the next.
    pub(super) fn finished(&mut self, succeeded: bool) {
        self.wait = if succeeded {
            self.pace.interval
        } else {
            self.pace.after_failure
        };
    }

    /// Waits `duration` within a round; `false` when cancelled meanwhile.
    pub(super) async fn pause(&self, duration: Duration) -> bool {
        tokio::select! {
            () = self.cancel.cancelled() => false,
            () = tokio::time::sleep(duration) => true,
        }
    }
}

/// Applies migrations once the database answers, then checks it every `interval`: health is
/// SERVING exactly while the checks pass.
async fn watch_database(
    store: Arc<dyn Store>,
    state: ApiState,
    health: Health,
    database: DatabaseSettings,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut migrated = !database.run_migrations;
    let mut serving = None;
    let mut pacer = Pacer::new(Pace::retrying_sooner(interval), cancel);
    while pacer.next_round().await {
        let check = async {
            if !migrated {
                store.migrate().await?;
                migrated = true;
                tracing::info!(backend = store.backend(), "database migrations applied");
            }
            store.ping().await
        };
        let ok = match check.await {
            Ok(()) => {
                state.mark_ready();
                if serving != Some(true) {
                    tracing::info!("database answers: SERVING");
                }
                true
            }
            Err(err) => {
                if serving != Some(false) {
                    tracing::warn!(
                        error = format!("{:#}", anyhow::Error::new(err)),
                        "database check failed: NOT_SERVING until it answers"
                    );
                }
                false
            }
        };
        health.set(ok).await;
        serving = Some(ok);
        pacer.finished(ok);
    }
}

/// Deletes expired records every `settings.interval`, in batches of `settings.batch_size` with
/// `settings.batch_pause` between them. Expired records are already invisible; this only
/// reclaims their space. A failed sweep is tried again the next interval.
async fn sweep_expired(
    store: Arc<dyn Store>,
    state: ApiState,
    settings: SweeperSettings,
    deleted_total: prometheus::IntCounter,
    cancel: CancellationToken,
) {
    let pace = Pace {
        first_round_after: settings.interval,
        interval: settings.interval,
        after_failure: settings.interval,
    };
    let mut pacer = Pacer::new(pace, cancel);
    while pacer.next_round().await {
        if !state.is_ready() {
            continue;
        }
        let mut deleted = 0;
        let swept = loop {
            match store
                .delete_expired(micros_now(), settings.batch_size)
                .await
            {
                Ok(n) => {
                    deleted += n;
                    deleted_total.inc_by(n);
                    if n < u64::from(settings.batch_size) {
                        break true;
                    }
                    // More to delete: pace the batches, so reads get the database in between.
                    if !pacer.pause(settings.batch_pause).await {
                        break true;
                    }
                }
                Err(err) => {
                    tracing::warn!(
                        error = format!("{:#}", anyhow::Error::new(err)),
                        "sweeping expired specs failed; retrying next interval"
                    );
                    break false;
                }
            }
        };
        if deleted > 0 {
            tracing::info!(deleted, "swept expired specs");
        }
        pacer.finished(swept);
    }
}

/// The gauges [`count_specs`] sets.
struct SpecGauges {
    /// `spec_provider_specs_stored`.
    stored: prometheus::IntGauge,
    /// `spec_provider_specs_expired`.
    expired: prometheus::IntGauge,
}

/// Counts the live specs into `spec_provider_specs_stored`, and the expired ones the sweeper has
/// not deleted yet into `spec_provider_specs_expired`, every `interval`, once the database is
/// ready (checked more often until then, so that the gauges do not read 0 for a whole interval
/// after start-up). A failed count keeps the last value: the database check reports the outage.
async fn count_specs(
    store: Arc<dyn Store>,
    state: ApiState,
    gauges: SpecGauges,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut pacer = Pacer::new(Pace::retrying_sooner(interval), cancel);
    while pacer.next_round().await {
        let counted = state.is_ready()
            && match store.count(micros_now()).await {
                Ok(counts) => {
                    let set = |gauge: &prometheus::IntGauge, count: u64| {
                        gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
                    };
                    set(&gauges.stored, counts.live);
                    set(&gauges.expired, counts.expired);
                    true
                }
                Err(err) => {
                    tracing::debug!(
                        error = format!("{:#}", anyhow::Error::new(err)),
                        "counting the stored specs failed; keeping the last count"
                    );
                    false
                }
            };
        pacer.finished(counted);
    }
}
