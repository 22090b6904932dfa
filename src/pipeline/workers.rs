//! Workers that share a night: several `tally run --worker` processes, on one machine or many,
//! split a period's extraction between them through the Postgres they share, and the period is
//! priced, reconciled and pushed once, after every unit is settled.
//!
//! Why no coordinator of tally's own: a coordinator is one more process to keep alive, and the
//! database already gives everything needed — rows claimed with `FOR UPDATE SKIP LOCKED`,
//! leases timed by one clock, and the writer lease for the one step that must happen once
//! (`store::rounds`). A worker:
//!
//! 1. starts a run of its own and joins the round, registering its units (one per source scope);
//! 2. claims units one at a time and extracts each (resuming at its checkpoint when another
//!    worker left it unfinished), its heartbeat renewing the lease meanwhile, and the pace of a
//!    peer's unannounced rate limit kept for the whole round (`RoundPace`, `store::paces`);
//! 3. when nothing is left to claim, waits until every unit is done or failed, and finishes its
//!    own run with what it extracted;
//! 4. then takes the writer lease: the first to get it prices the round from the staged records
//!    and records the round finished; the others find it finished and leave.
//!
//! A worker that is killed stops renewing; once its lease runs out, another claims its unit and
//! resumes at the last committed page. A worker paused past its lease finds its next staging
//! transaction refused (the fence), so two workers never write one unit. The finishing step is
//! an ordinary run over the staged records, so if its worker dies half way, the next worker to
//! take the lease runs it again, and the ledger makes that push nothing twice.

use super::extract::{self, Watch};
use super::{App, Interrupted, RunOptions, RunReport, SimulatedCrash, UsageError};
use crate::domain::{Period, RunStatus, RunSummary, SourceFailure, SourceStats, UsageQuantity};
use crate::sources::Source;
use crate::store::{Busy, LostUnit, RunRequest, Store};
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tracing::{info, instrument, warn};

/// How a worker shares its round.
#[derive(Debug, Clone)]
pub struct RoundOptions {
    /// The round's name: every worker of one night gives the same one.
    pub round: String,
    /// How long a unit stays a worker's without its heartbeat; a dead worker's unit is claimed
    /// again after that long.
    pub lease: Duration,
    /// How often a worker with nothing to claim looks again.
    pub poll: Duration,
}

impl RoundOptions {
    /// The round of `period` started on `today` (UTC), the name the workers of one night agree
    /// on without being told: `2026-10@2026-11-03`.
    pub fn default_name(period: Period, today: chrono::NaiveDate) -> String {
        format!("{period}@{today}")
    }
}

/// What one worker did.
#[derive(Debug, Clone)]
pub struct WorkerReport {
    pub round: String,
    /// The worker's own run: the units it extracted, and its status.
    pub worker: RunSummary,
    /// Units this worker extracted to the end.
    pub units: u64,
    /// The run that priced, reconciled and pushed the round, when this worker did it.
    pub priced: Option<RunReport>,
    /// The run of another worker that did, when it did.
    pub priced_by: Option<i64>,
}

/// One worker of `round`, from joining to leaving. `Err` as for [`super::run`]: the worker
/// could not go on (database down, a simulated crash); its unit is claimed again by another.
#[instrument(name = "worker", skip_all, fields(round = %round.round, period = %options.period, run_id = tracing::field::Empty))]
pub async fn run_worker(
    app: &App,
    options: &RunOptions,
    round: &RoundOptions,
) -> anyhow::Result<WorkerReport> {
    if options.dry_run || options.customer.is_some() {
        return Err(UsageError(
            "--worker runs the whole period for real: it takes neither --dry-run nor --customer"
                .into(),
        )
        .into());
    }
    if app.store.backend() != "postgres" {
        return Err(UsageError(
            "workers that share a night need Postgres (database.url = \"postgres://…\"): an \
             SQLite file cannot be shared by other machines and cannot skip locked rows; run \
             without --worker"
                .into(),
        )
        .into());
    }
    let deadline = crate::http::Deadline::after_secs(app.settings.general.run_deadline_secs);
    crate::http::with_deadline(deadline, work(app, options, round)).await
}

async fn work(
    app: &App,
    options: &RunOptions,
    round: &RoundOptions,
) -> anyhow::Result<WorkerReport> {
    let store = &app.store;
    let period = options.period;
    let selected = super::selected_sources(app, options)?;
    let units: Vec<_> = selected
        .iter()
        .flat_map(|s| {
            s.scopes()
                .into_iter()
                .map(|scope| (s.name().clone(), scope))
        })
        .collect();
    let names: Vec<String> = selected.iter().map(|s| s.name().to_string()).collect();
    for sink in &app.sinks {
        sink.begin_run();
    }
    let request = RunRequest {
        source: options.source.as_deref(),
        by: options.requested_by.as_deref(),
        customer: None,
    };
    let run_id = store
        .start_requested_run(options.trigger, period, &request)
        .await?;
    tracing::Span::current().record("run_id", run_id);
    store
        .join_round(&round.round, period, run_id, round.lease, &units)
        .await?;
    info!(run_id, units = units.len(), "joined the round");
    let heartbeat = Heartbeat::start(store.clone(), round, run_id);
    // The pace a 429 of an unannounced limit reveals is the round's, not this worker's: the
    // others read the same peers (docs/OPERATIONS.md, "Workers that share a night").
    let pace: Arc<dyn crate::http::SharedPace> = Arc::new(RoundPace {
        store: store.clone(),
        round: round.round.clone(),
    });

    let pages = AtomicU64::new(0);
    let mut stats: BTreeMap<String, SourceStats> = BTreeMap::new();
    let mut failures: Vec<SourceFailure> = Vec::new();
    let mut extracted = 0u64;
    let mut interrupted = false;
    loop {
        if app.shutdown.requested() {
            interrupted = true;
            break;
        }
        let claim = store
            .claim_unit(&round.round, run_id, round.lease, &names)
            .await?;
        let Some(claim) = claim else {
            let progress = store.round_progress(&round.round).await?;
            if progress.finished_by.is_some() || progress.settled() {
                break;
            }
            tokio::time::sleep(round.poll).await;
            continue;
        };
        let Some(source) = selected.iter().find(|s| *s.name() == claim.source) else {
            // claim_unit only hands out units of `names`.
            anyhow::bail!(
                "claimed a unit of {}, which is not configured here",
                claim.source
            );
        };
        info!(source = %claim.source, scope = %claim.scope, attempt = claim.attempts, "claimed a unit");
        let watch = Watch::start(source, &pages);
        let extraction = extract::extract_scope(
            app,
            source,
            &claim.scope,
            period,
            run_id,
            &pages,
            Some(&claim),
        );
        let result = crate::http::with_shared_pace(Arc::clone(&pace), extraction).await;
        let mut unit = watch.finish(source, &pages);
        match result {
            // The round is totalled once, from the store, by its pricing run.
            Ok(_) => {
                extracted += 1;
                unit.records = store
                    .checkpoint(source.name(), &claim.scope, period)
                    .await?
                    .map_or(0, |cp| u64::try_from(cp.records).unwrap_or(0));
            }
            Err(e) if e.downcast_ref::<SimulatedCrash>().is_some() => return Err(e),
            Err(e) if e.downcast_ref::<LostUnit>().is_some() => {
                warn!(error = %e, "another worker took this unit over; going on with the next");
            }
            Err(e) if e.downcast_ref::<Interrupted>().is_some() => {
                // Back to pending at once: another worker resumes it at its checkpoint.
                store.release_unit(&claim, None).await?;
                unit.error = Some("stopped by a signal during extraction".into());
                interrupted = true;
            }
            Err(e) => {
                let error = format!("{e:#}");
                warn!(source = %claim.source, scope = %claim.scope, %error, "unit failed; its checkpoint is kept and the round prices the source as failed");
                store.release_unit(&claim, Some(&error)).await?;
                unit.error = Some(error.clone());
                failures.push(SourceFailure {
                    source: claim.source.to_string(),
                    error,
                });
            }
        }
        merge(&mut stats, unit);
        if interrupted {
            break;
        }
    }
    drop(heartbeat);
    let status = if interrupted {
        RunStatus::Interrupted
    } else if failures.is_empty() {
        RunStatus::Completed
    } else {
        RunStatus::Failed
    };
    let worker = worker_summary(run_id, period, status, stats, failures);
    store.finish_run(run_id, &worker).await?;
    store.leave_round(run_id).await?;
    info!(run_id, units = extracted, status = %status, "extraction of the round done here");
    let mut report = WorkerReport {
        round: round.round.clone(),
        worker,
        units: extracted,
        priced: None,
        priced_by: None,
    };
    if interrupted {
        return Ok(report);
    }
    finish(app, options, round, &mut report).await?;
    Ok(report)
}

/// Step 4: waits for the round to be settled, then prices it once under the writer lease, or
/// finds that another worker did.
async fn finish(
    app: &App,
    options: &RunOptions,
    round: &RoundOptions,
    report: &mut WorkerReport,
) -> anyhow::Result<()> {
    let store = &app.store;
    loop {
        let progress = store.round_progress(&round.round).await?;
        if let Some(by) = progress.finished_by {
            report.priced_by = Some(by);
            return Ok(());
        }
        if app.shutdown.requested() {
            return Ok(());
        }
        if !progress.settled() {
            // Settled units stay settled; this is a round finished meanwhile, read again.
            tokio::time::sleep(round.poll).await;
            continue;
        }
        let lease = match store.acquire_writer("run --worker", Duration::ZERO).await {
            Ok(lease) => lease,
            Err(e) if e.downcast_ref::<Busy>().is_some() => {
                tokio::time::sleep(round.poll).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(by) = store.round_progress(&round.round).await?.finished_by {
            report.priced_by = Some(by);
            return Ok(());
        }
        info!("every unit of the round is settled: pricing, reconciling and pushing it");
        let priced = price_round(app, options, &round.round).await?;
        if let Some(run_id) = priced.summary.run_id {
            store.finish_round(&round.round, run_id).await?;
        }
        drop(lease);
        report.priced = Some(priced);
        return Ok(());
    }
}

/// The round's one pricing run: an ordinary run over what the workers staged, told as any run
/// is (`[notify]`).
async fn price_round(app: &App, options: &RunOptions, round: &str) -> anyhow::Result<RunReport> {
    let result = super::run_until_deadline(app, options, false, Some(round)).await;
    super::notify(app, options, &result, false).await;
    result
}

/// The totals of `source` as the round's workers staged them, once every one of its units is
/// done: a failed unit fails the source (its lines wait, as after any failed extraction), and a
/// scope staged last by a run that did not hold its unit means another tally wrote it outside
/// the round.
pub(super) async fn total_round(
    app: &App,
    source: &Source,
    period: Period,
    round: &str,
) -> anyhow::Result<Vec<UsageQuantity>> {
    let name = source.name();
    let units = app.store.round_units(round).await?;
    for scope in source.scopes() {
        let Some(unit) = units
            .iter()
            .find(|u| u.source == name.as_str() && u.scope == scope)
        else {
            anyhow::bail!(
                "{name} ({scope}) is not a unit of round {round:?}: its workers were started with \
                 another configuration; give every worker of a round the same one"
            );
        };
        match unit.state.as_str() {
            "done" => {}
            "failed" => anyhow::bail!(
                "extracting {name} ({scope}) for {period} failed in round {round:?}: {}",
                unit.error.as_deref().unwrap_or("no error recorded")
            ),
            state => anyhow::bail!("{name} ({scope}) of round {round:?} is {state}, not done"),
        }
        let checkpoint = app.store.checkpoint(name, &scope, period).await?;
        let by = checkpoint
            .as_ref()
            .filter(|cp| cp.complete)
            .map(|cp| cp.run_id);
        anyhow::ensure!(
            by.is_some() && by == unit.holder_run,
            "{name} ({scope}) for {period}: the staged records are not those round {round:?} \
             extracted (last staged by run {}, the round's unit by run {}); another tally \
             extracted it outside the round — run the round again under a new --round",
            by.map_or_else(|| "none".into(), |r| r.to_string()),
            unit.holder_run
                .map_or_else(|| "none".into(), |r| r.to_string()),
        );
    }
    extract::total_staged(app, name, period).await
}

/// Adds a unit's counts to its source's.
fn merge(stats: &mut BTreeMap<String, SourceStats>, unit: SourceStats) {
    let into = stats
        .entry(unit.source.clone())
        .or_insert_with(|| SourceStats {
            source: unit.source.clone(),
            ..SourceStats::default()
        });
    into.records += unit.records;
    into.pages += unit.pages;
    into.requests += unit.requests;
    into.retries += unit.retries;
    into.rate_limited += unit.rate_limited;
    into.duration_ms = into.duration_ms.saturating_add(unit.duration_ms);
    if unit.error.is_some() {
        into.error = unit.error;
    }
}

/// A worker's run as `tally runs` shows it: what it extracted; its lines are the pricing run's.
fn worker_summary(
    run_id: i64,
    period: Period,
    status: RunStatus,
    stats: BTreeMap<String, SourceStats>,
    failed_sources: Vec<SourceFailure>,
) -> RunSummary {
    let sources: Vec<SourceStats> = stats.into_values().collect();
    RunSummary {
        run_id: Some(run_id),
        status,
        period,
        dry_run: false,
        records_read: sources.iter().map(|s| s.records).sum(),
        lines_created: 0,
        lines_adjusted: 0,
        lines_unchanged: 0,
        lines_pushed: 0,
        lines_waiting_approval: 0,
        lines_back_to_review: 0,
        lines_waiting_to_settle: 0,
        exceptions: 0,
        totals: BTreeMap::new(),
        totals_partial: !failed_sources.is_empty(),
        failed_sources,
        errors: Vec::new(),
        sources,
        warnings: Vec::new(),
        customer: None,
    }
}

/// Renews the worker's leases every third of their length until dropped. A renewal that fails
/// (the database away for a moment) is logged; the fence keeps a lease that ran out meanwhile
/// from being written through.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(store: Store, round: &RoundOptions, run_id: i64) -> Heartbeat {
        let (name, lease) = (round.round.clone(), round.lease);
        Heartbeat(tokio::spawn(async move {
            let mut every = tokio::time::interval(lease / 3);
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(e) = store.renew_leases(&name, run_id, lease).await {
                    warn!(error = %format!("{e:#}"), "renewing this worker's leases failed; trying again");
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The pace of the peers a round's workers read, kept in the store for all of them.
struct RoundPace {
    store: Store,
    round: String,
}

impl crate::http::SharedPace for RoundPace {
    fn take_slot<'a>(&'a self, peer: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Duration>>> {
        Box::pin(self.store.take_pace_slot(&self.round, peer))
    }

    fn share<'a>(
        &'a self,
        peer: &'a str,
        pace: Duration,
        reopens_in: Duration,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(self.store.share_pace(&self.round, peer, pace, reopens_in))
    }
}
