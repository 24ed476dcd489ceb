//! What is measured: the read scenarios on one server ([`Reads`]), PutSpec, and at scale the
//! ListSpecs pages and reads while the sweeper deletes; per backend ([`bench_backend`]) or
//! against a server elsewhere ([`bench_target`]). Each returns its section of the report.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;
use prost::Message;
use spec_provider::domain::{PageToken, SpecId};
use spec_provider::proto::registryfacade::GetImageSpecResponse;
use spec_provider::proto::specprovider::v1::spec_admin_client::SpecAdminClient;
use spec_provider::proto::specprovider::v1::{DeleteSpecRequest, PutSpecRequest};

use crate::accounting::{load_average, peak_rss};
use crate::args::{Args, FIXED_RATE_LENGTH, HOT_IDS};
use crate::client::{check_ok, get_ok, list_ok};
use crate::measure::{Outcome, Request, Rounds, Until, in_rounds, measure, request};
use crate::pacing::Pace;
use crate::report::{TABLE_HEAD, listed, median};
use crate::servers::{Scratch, Server, fill, record_id, settings, typical_spec};

/// Expired records the sweeper scenario has deleted.
const SWEPT_RECORDS: u64 = 100_000;

/// Rounds of the sweeper scenario, each a window of reads without a sweep, then one while the
/// sweeper deletes `SWEPT_RECORDS / SWEEP_ROUNDS` expired records. On this VM one stall of a few
/// tens of milliseconds sets the p99 of the window it falls in, so one window with a sweep
/// against one without compared the stalls more than the sweeper; the median of the rounds'
/// ratios does not depend on a single stall (docs/benchmarks-history.md).
const SWEEP_ROUNDS: u32 = 5;

/// The absent id of the "one id" scenario.
const ONE_UNKNOWN_ID: &str = "unknown-probe";

/// A tiny fast pseudo-random sequence, so that tasks spread their ids without a shared RNG.
fn spread(task: usize, n: u64, modulo: u64) -> u64 {
    let mut x = (task as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ n.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    x % modulo
}

/// The answer to GetImageSpec for every filled record, as the server sends it.
fn found_answer() -> Bytes {
    GetImageSpecResponse {
        spec: Some(typical_spec(0)),
    }
    .encode_to_vec()
    .into()
}

/// GetImageSpec of a random one of the first `ids` filled records, for request `n` of `task`;
/// true if the answer is `found` ([`found_answer`]).
fn get_stored(
    server: &Server,
    found: &Bytes,
    task: usize,
    n: u64,
    ids: u64,
) -> impl Future<Output = bool> + Send + use<> {
    get_ok(
        server.grpc(task),
        record_id(spread(task, n, ids)),
        Some(found.clone()),
    )
}

/// The read scenarios on one server (and on one without a cache, if any): closed loop, taking
/// turns in rounds, and cache hits at fixed rates.
struct Reads {
    check: Rounds,
    hit: Rounds,
    unknown: Rounds,
    /// One absent id again and again: how issue 25 measured the unknown-id path.
    unknown_one: Rounds,
    never_seen: Rounds,
    /// On the server without a cache; none with `--target`.
    uncached: Option<Rounds>,
    /// On a server without a cache on a second database of [`HOT_IDS`] records, when the first
    /// holds more: the same scenario as `uncached`, the store's size the only difference.
    uncached_small: Option<Rounds>,
    /// How many records the first database holds.
    records: u64,
    half_peak: Outcome,
    third_peak: Outcome,
}

impl Reads {
    /// Measures them; `records` are stored (`record_id(0..records)`, answered with
    /// [`found_answer`]). `small`, if any, is a server without a cache on a database of
    /// `record_id(0..HOT_IDS)`.
    async fn measure(
        args: &Args,
        cached: &Arc<Server>,
        uncached: Option<&Arc<Server>>,
        small: Option<&Arc<Server>>,
        records: u64,
    ) -> anyhow::Result<Self> {
        let hot = HOT_IDS.min(records);
        let found = found_answer();
        // The read scenarios take turns, in rounds: on a machine whose speed drifts (a shared
        // VM) each of them gets its share of the fast and the slow moments, and each ratio is
        // the median of its per-round ratios.
        let mut reads: Vec<(&str, Request)> = vec![
            ("Health/Check (floor)", {
                let server = cached.clone();
                request(move |task, _| check_ok(server.grpc(task)))
            }),
            ("GetImageSpec, cache hit", {
                let (server, found) = (cached.clone(), found.clone());
                request(move |task, n| get_stored(&server, &found, task, n, hot))
            }),
            ("GetImageSpec, unknown id (1000 ids, negative cache)", {
                let server = cached.clone();
                request(move |task, n| {
                    let id = format!("unknown-{}", spread(task, n, HOT_IDS));
                    get_ok(server.grpc(task), id, None)
                })
            }),
            ("GetImageSpec, unknown id (one id, negative cache)", {
                let server = cached.clone();
                request(move |task, _| get_ok(server.grpc(task), ONE_UNKNOWN_ID.to_owned(), None))
            }),
            ("GetImageSpec, unknown id (never repeated)", {
                let server = cached.clone();
                let next = Arc::new(AtomicU64::new(0));
                // Each absent id sorts right after a random stored one, so that the lookups
                // spread over the whole id index as a real workload's do, not on its last page.
                request(move |task, n| {
                    let id = format!(
                        "{}-absent-{}",
                        record_id(spread(task, n, records)),
                        next.fetch_add(1, Ordering::Relaxed)
                    );
                    get_ok(server.grpc(task), id, None)
                })
            }),
        ];
        // Random stored ids out of `ids`, on a server without a cache.
        let read_any = |server: &Arc<Server>, ids: u64| {
            let (server, found) = (server.clone(), found.clone());
            request(move |task, n| get_stored(&server, &found, task, n, ids))
        };
        if let Some(server) = uncached {
            reads.push((
                "GetImageSpec, cache off (random over all records)",
                read_any(server, records),
            ));
            if let Some(small) = small {
                reads.push((
                    "GetImageSpec, cache off, a second database of 1000 records",
                    read_any(small, HOT_IDS),
                ));
            }
        }
        let mut outcomes = in_rounds(
            reads,
            args.rounds,
            args.duration,
            args.concurrency,
            args.print_windows,
        )
        .await
        .into_iter();
        let mut next = || outcomes.next().context("an outcome per scenario");
        let (check, hit, unknown, unknown_one, never_seen) =
            (next()?, next()?, next()?, next()?, next()?);
        let uncached = outcomes.next();
        let uncached_small = outcomes.next();

        // Cache hits at a fixed rate: half of the peak (the target), and a third of it (where
        // the cores are less busy: see "Why p99 at half of the peak" in docs/benchmarks.md).
        let mut at_rate = Vec::new();
        for (share, divisor) in [("half", 2.0), ("a third of", 3.0)] {
            let rate = hit.total.rps() / divisor;
            let (server, found) = (cached.clone(), found.clone());
            at_rate.push(
                measure(
                    &format!("GetImageSpec, cache hit, at {share} peak ({rate:.0}/s)"),
                    Until::Elapsed(args.duration * FIXED_RATE_LENGTH),
                    args.concurrency,
                    Pace::Rate(rate),
                    args.print_windows,
                    move |task, n| get_stored(&server, &found, task, n, hot),
                )
                .await,
            );
        }
        let [half_peak, third_peak] = <[Outcome; 2]>::try_from(at_rate)
            .map_err(|_| anyhow::anyhow!("two rates, two outcomes"))?;
        Ok(Self {
            check,
            hit,
            unknown,
            unknown_one,
            never_seen,
            uncached,
            uncached_small,
            records,
            half_peak,
            third_peak,
        })
    }

    /// Their rows of the table, in its order.
    fn rows(&self) -> Vec<&Outcome> {
        let mut rows = vec![
            &self.check.total,
            &self.hit.total,
            &self.half_peak,
            &self.third_peak,
            &self.unknown.total,
            &self.unknown_one.total,
            &self.never_seen.total,
        ];
        rows.extend(self.uncached.as_ref().map(|rounds| &rounds.total));
        rows.extend(self.uncached_small.as_ref().map(|rounds| &rounds.total));
        rows
    }

    /// The paragraph under the table: ratios to Health/Check, p99 at the fixed rates.
    fn summary(&self, rounds: u32) -> String {
        let ratios = |of: &Rounds| {
            let ratios = of.ratios_to(&self.check);
            let servers = if of.total.server_cpu.is_zero() {
                String::new()
            } else {
                format!(
                    ", by the servers' alone: {:.2}",
                    self.check.total.server_cpu_us() / of.total.server_cpu_us()
                )
            };
            format!(
                "**{:.2}** (rounds: {}; by CPU time per request: {:.2}{servers})",
                median(&ratios),
                listed(&ratios),
                self.check.total.cpu_us() / of.total.cpu_us(),
            )
        };
        let uncached = self
            .uncached
            .as_ref()
            .map(|rounds| format!("; cache off {}", ratios(rounds)))
            .unwrap_or_default();
        // The same uncached read on both databases, in the same rounds: how much dearer a read
        // is at `records` than at 1,000 (above 1: dearer).
        let scale = match (&self.uncached, &self.uncached_small) {
            (Some(big), Some(small)) => {
                let ratios = small.ratios_to(big);
                format!(
                    " Uncached GetImageSpec at {} records / at {HOT_IDS} (a second database, in \
                     the same rounds), time per read (the inverse of throughput), median of the \
                     rounds: **{:.2}** (rounds: {}); by the servers' CPU time per request: \
                     {:.2}; p50: {:.2}.",
                    self.records,
                    median(&ratios),
                    listed(&ratios),
                    big.total.server_cpu_us() / small.total.server_cpu_us(),
                    big.total.ms(0.5) / small.total.ms(0.5),
                )
            }
            _ => String::new(),
        };
        format!(
            "\nRatios to Health/Check, median of {rounds} rounds: cache hit {}; unknown id \
             (1000 ids, negative cache) {}; unknown id (one id, negative cache) {}{uncached}. \
             p99 of cached GetImageSpec at half peak: **{:.2} ms** ({:.2} ms counted from when \
             each request was due, the load generator's timer included); meanwhile a bare \
             thread woke from 1 ms sleeps {:.2} ms late at p99, {:.2} ms at most. At a third of \
             peak: p99 **{:.2} ms**.{scale}\n",
            ratios(&self.hit),
            ratios(&self.unknown),
            ratios(&self.unknown_one),
            self.half_peak.ms(0.99),
            self.half_peak.due_ms(0.99),
            self.half_peak.wakeup_ms(0.99),
            self.half_peak.wakeup_ms(1.0),
            self.third_peak.ms(0.99),
        )
    }
}

/// Everything on `backend`: servers started on `servers` (their runtime), on a scratch database.
pub(crate) async fn bench_backend(
    args: &Args,
    servers: &tokio::runtime::Handle,
    backend: &str,
) -> anyhow::Result<String> {
    eprintln!("{backend}:");
    let (scratch, url) = Scratch::create(backend, &args.database_url).await?;
    // The cached server first: it applies the migrations the fill needs.
    let cached = Arc::new(Server::start(servers, settings(&url, true), args.channels).await?);
    let uncached = Arc::new(Server::start(servers, settings(&url, false), args.channels).await?);
    let filled = fill(&url, "bench-", args.records, None).await?;
    eprintln!("  filled {} records in {filled:.1?}", args.records);
    let records = args.records.max(1);
    // With more than HOT_IDS records, a second database of HOT_IDS, read without a cache in the
    // same rounds as the first: whether a read costs more at scale, measured in one run rather
    // than by two runs minutes apart on a VM whose speed drifts.
    let small = if records > HOT_IDS {
        let (scratch, url) = Scratch::create(backend, &args.database_url).await?;
        let server = Arc::new(Server::start(servers, settings(&url, false), args.channels).await?);
        fill(&url, "bench-", HOT_IDS, None).await?;
        Some((scratch, server))
    } else {
        None
    };
    let reads = Reads::measure(
        args,
        &cached,
        Some(&uncached),
        small.as_ref().map(|(_, server)| server),
        records,
    )
    .await?;
    if let Some((scratch, server)) = small {
        drop(server);
        scratch.drop_database().await?;
    }

    let spec = typical_spec(1);
    let server = cached.clone();
    let put = measure(
        "PutSpec (new ids)",
        Until::Elapsed(args.duration),
        args.concurrency,
        Pace::Closed,
        args.print_windows,
        move |task, n| {
            let request = PutSpecRequest {
                id: format!("put-{task}-{n}"),
                spec: Some(spec.clone()),
                ..PutSpecRequest::default()
            };
            let channel = server.channel(task);
            async move {
                let answer = SpecAdminClient::new(channel).put_spec(request).await;
                if let Err(status) = &answer
                    && n == 0
                    && task == 0
                {
                    eprintln!("  PutSpec failed: {status:?}");
                }
                answer.is_ok()
            }
        },
    )
    .await;
    let mut section = String::new();
    writeln!(section, "### {backend}, {} records\n", args.records)?;
    writeln!(section, "Filled in {filled:.1?}.\n")?;
    section.push_str(TABLE_HEAD);
    for outcome in reads.rows().into_iter().chain([&put]) {
        writeln!(section, "{}", outcome.row())?;
    }
    writeln!(section, "{}", reads.summary(args.rounds))?;

    if args.scale {
        section.push_str(&scale(args, servers, &url, &uncached, records).await?);
    }
    writeln!(
        section,
        "Process peak resident memory so far (servers and load generator): {}; load average \
         after this backend: {}.\n",
        peak_rss(),
        load_average(),
    )?;
    drop(cached);
    drop(uncached);
    scratch.drop_database().await?;
    Ok(section)
}

/// `--target`: the read scenarios that need no access to the database, against a server that
/// runs in a process of its own (on another machine, the server's cores are its own). The
/// records are stored, and deleted afterwards, through SpecAdmin.
pub(crate) async fn bench_target(args: &Args, target: &str) -> anyhow::Result<String> {
    eprintln!("{target}:");
    let addr = tokio::net::lookup_host(target)
        .await
        .with_context(|| format!("--target {target}: not an address"))?
        .next()
        .with_context(|| format!("--target {target}: no address"))?;
    let bearer = args.token.as_ref().map(|token| format!("Bearer {token}"));
    let authorization = bearer
        .as_deref()
        .map(tonic::codegen::http::HeaderValue::from_str)
        .transpose()
        .context("--token holds characters a token cannot have")?;
    let server = Arc::new(
        Server::connect(addr, None, None, args.channels, authorization)
            .await
            .with_context(|| format!("connecting to {addr}"))?,
    );
    let admin_authorization: Option<tonic::metadata::AsciiMetadataValue> = bearer
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("--token holds characters a token cannot have")?;
    let admin = SpecAdminClient::with_interceptor(
        server.channel(0),
        move |mut request: tonic::Request<()>| {
            if let Some(value) = &admin_authorization {
                request
                    .metadata_mut()
                    .insert("authorization", value.clone());
            }
            Ok(request)
        },
    );

    let started = Instant::now();
    let spec = typical_spec(0);
    let failed = for_each_record(|n| {
        let mut admin = admin.clone();
        let request = PutSpecRequest {
            id: record_id(n),
            spec: Some(spec.clone()),
            // Gone within the hour even if this run does not get to delete them.
            ttl: Some(pbjson_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            ..PutSpecRequest::default()
        };
        async move { admin.put_spec(request).await }
    })
    .await;
    if let Some(status) = failed.first() {
        anyhow::bail!(
            "storing the records through SpecAdmin failed: {} ({:?}); a server with admin \
             credentials needs --token",
            status.message(),
            status.code()
        );
    }
    let filled = started.elapsed();
    eprintln!("  stored {HOT_IDS} records through SpecAdmin in {filled:.1?}");

    let reads = Reads::measure(args, &server, None, None, HOT_IDS).await?;

    let failed = for_each_record(|n| {
        let mut admin = admin.clone();
        let request = DeleteSpecRequest {
            id: record_id(n),
            allow_missing: true,
            ..DeleteSpecRequest::default()
        };
        async move { admin.delete_spec(request).await }
    })
    .await;
    if !failed.is_empty() {
        eprintln!(
            "  {} of the records could not be deleted; their ttl removes them",
            failed.len()
        );
    }

    let mut section = String::new();
    writeln!(
        section,
        "### {target}, {HOT_IDS} records (stored through SpecAdmin in {filled:.1?})\n"
    )?;
    section.push_str(TABLE_HEAD);
    for outcome in reads.rows() {
        writeln!(section, "{}", outcome.row())?;
    }
    writeln!(section, "{}", reads.summary(args.rounds))?;
    writeln!(
        section,
        "Load generator's peak resident memory: {}.\n",
        peak_rss()
    )?;
    Ok(section)
}

/// Makes `call(n)` for each of the `HOT_IDS` records, 16 at a time; the errors.
async fn for_each_record<F, Fut, T>(call: F) -> Vec<tonic::Status>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    futures::stream::iter(0..HOT_IDS)
        .map(call)
        .buffer_unordered(16)
        .filter_map(|result| std::future::ready(result.err()))
        .collect()
        .await
}

/// ListSpecs first vs last page, and uncached reads while the sweeper (of a server started on
/// `servers`) deletes expired records.
async fn scale(
    args: &Args,
    servers: &tokio::runtime::Handle,
    url: &str,
    uncached: &Arc<Server>,
    records: u64,
) -> anyhow::Result<String> {
    let duration = Until::Elapsed(args.duration);
    // The first and the last page take turns, in rounds, as the read scenarios do: measured one
    // after the other, they compared two moments of this VM as much as two pages.
    let after =
        SpecId::parse(&record_id(records.saturating_sub(101))).map_err(anyhow::Error::msg)?;
    let last_token = PageToken::new(after, "", &Default::default()).encode();
    let list = |page_token: String| {
        let server = uncached.clone();
        request(move |task, _| list_ok(server.channel(task), page_token.clone()))
    };
    let mut pages = in_rounds(
        vec![
            ("ListSpecs, first page (100 ids)", list(String::new())),
            ("ListSpecs, last page (100 ids)", list(last_token)),
        ],
        args.rounds,
        args.duration,
        8,
        args.print_windows,
    )
    .await
    .into_iter();
    let (first, last) = pages
        .next()
        .zip(pages.next())
        .context("an outcome per page")?;
    // The last page's time per request over the first's (the inverse of their throughputs).
    let page_ratios = first.ratios_to(&last);

    // Reads at half of what 16 readers reach, without and while the sweeper deletes, in rounds
    // (`SWEEP_ROUNDS`).
    let readers = 16;
    let found = found_answer();
    let read = move |server: Arc<Server>| {
        let found = found.clone();
        move |task: usize, n: u64| get_stored(&server, &found, task, n, records)
    };
    let peak = measure(
        "GetImageSpec, cache off, 16 readers, peak",
        duration.clone(),
        readers,
        Pace::Closed,
        args.print_windows,
        read(uncached.clone()),
    )
    .await;
    let rate = peak.rps() / 2.0;
    // The sweeper's server, with a 100 ms interval, so that each round's sweep starts as soon as
    // its records expire.
    let mut sweeping = settings(url, true);
    sweeping.sweeper.interval = Duration::from_millis(100);
    if let Some(size) = args.sweeper_batch_size {
        sweeping.sweeper.batch_size = size;
    }
    if let Some(pause) = args.sweeper_batch_pause {
        sweeping.sweeper.batch_pause = pause;
    }
    let (batch_size, batch_pause) = (sweeping.sweeper.batch_size, sweeping.sweeper.batch_pause);
    let sweeper = Server::start(servers, sweeping, 1).await?;
    let per_round = SWEPT_RECORDS / u64::from(SWEEP_ROUNDS);
    // The measurement of a window without a sweep: at least as long as the sweep's pauses add
    // up to, so that both windows' p99 are over about as many requests: over a longer window,
    // one stall of the VM weighs less, which would flatter a slowly paced sweep.
    let shortest = args.duration * FIXED_RATE_LENGTH / SWEEP_ROUNDS;
    let pauses = batch_pause * u32::try_from(per_round.div_ceil(u64::from(batch_size)))?;
    let quiet = shortest.max(pauses);
    // The warm-up `measure` gives it (a fifth of it).
    let warm_up = quiet / 5;
    // A quiet window: its warm-up and measurement.
    let window = quiet + warm_up;
    let (mut before, mut during): (Option<Outcome>, Option<Outcome>) = (None, None);
    let (mut ratios, mut due_ratios) = (Vec::new(), Vec::new());
    let mut swept = Duration::ZERO;
    for round in 0..SWEEP_ROUNDS {
        // This round's records expire once they are stored and settled and the window without
        // a sweep is over, so that both windows read the same table.
        let expire_in = window + Duration::from_secs(10);
        let expire = chrono::Utc::now() + chrono::Duration::from_std(expire_in)?;
        let expire_at = Instant::now() + expire_in;
        let filled = fill(url, &format!("expired-{round}-"), per_round, Some(expire)).await?;
        eprintln!("  filled {per_round} records expiring in {expire_in:?} in {filled:.1?}");
        anyhow::ensure!(
            Instant::now() + window + warm_up < expire_at,
            "the fill outlasted its margin; the sweep would start during the window without, \
             or the warm-up before it"
        );
        let quiet_reads = measure(
            &format!("GetImageSpec, cache off, {rate:.0}/s, no sweep"),
            Until::Elapsed(quiet),
            readers,
            Pace::Rate(rate),
            args.print_windows,
            read(uncached.clone()),
        )
        .await;
        // The readers warm up as long as before the window without a sweep (they have been idle
        // since), and are measured from the expiry on.
        tokio::time::sleep_until((expire_at - warm_up).into()).await;
        let done = Arc::new(AtomicBool::new(false));
        let during_name = format!("GetImageSpec, cache off, {rate:.0}/s, while sweeping");
        let stop = Until::Flag {
            from: expire_at,
            flag: done.clone(),
        };
        let during_read = read(uncached.clone());
        let print_windows = args.print_windows;
        let sweep_reads = tokio::spawn(async move {
            measure(
                &during_name,
                stop,
                readers,
                Pace::Rate(rate),
                print_windows,
                during_read,
            )
            .await
        });
        let target = (u64::from(round) + 1) * per_round;
        loop {
            let deleted = sweeper
                .metric("spec_provider_sweeper_deleted_total")
                .await
                .unwrap_or(0.0);
            if deleted >= target as f64 {
                break;
            }
            anyhow::ensure!(
                expire_at.elapsed() < Duration::from_secs(600),
                "the sweep took over 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        swept += expire_at.elapsed();
        done.store(true, Ordering::Relaxed);
        let sweep_reads = sweep_reads.await?;
        ratios.push(sweep_reads.ms(0.99) / quiet_reads.ms(0.99));
        due_ratios.push(sweep_reads.due_ms(0.99) / quiet_reads.due_ms(0.99));
        for (all, this) in [(&mut before, quiet_reads), (&mut during, sweep_reads)] {
            match all {
                Some(all) => all.absorb(this),
                None => *all = Some(this),
            }
        }
    }
    drop(sweeper);
    let (before, during) = before.zip(during).context("at least one round")?;

    let mut section = String::new();
    writeln!(section, "#### At scale: {records} records\n")?;
    section.push_str(TABLE_HEAD);
    for outcome in [&first.total, &last.total, &peak, &before, &during] {
        writeln!(section, "{}", outcome.row())?;
    }
    writeln!(
        section,
        "\nLast / first ListSpecs page, time per request (the inverse of throughput), median \
         of the rounds: **{:.2}** (rounds: {}; p50: {:.2}). The sweeper deleted {SWEPT_RECORDS} \
         expired records, {per_round} in each of {SWEEP_ROUNDS} rounds, in {swept:.1?} in all \
         from their expiry (batches of {batch_size} with {} between them, by a third server \
         with a 100 ms sweeper interval; the windows without a sweep {} each); read p99 while \
         sweeping / before, median of the rounds: **{:.2}** (rounds: {}; counted from when \
         each request was due: {:.2}); all rounds together: {:.2}; a bare thread woke from 1 ms \
         sleeps {:.2} / {:.2} ms late at p99 (before / while sweeping).\n",
        median(&page_ratios),
        listed(&page_ratios),
        last.total.ms(0.5) / first.total.ms(0.5),
        humantime::format_duration(batch_pause),
        humantime::format_duration(quiet),
        median(&ratios),
        listed(&ratios),
        median(&due_ratios),
        during.ms(0.99) / before.ms(0.99),
        before.wakeup_ms(0.99),
        during.wakeup_ms(0.99),
    )?;
    Ok(section)
}
