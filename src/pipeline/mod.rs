//! Orchestration of a run: extract → map → price → reconcile → push, with the run recorded.
//!
//! The daemon, `tally run`, `tally demo` and the tests all call [`run`]. Extraction and pushing
//! do I/O; the stages between them are the pure functions of [`compute`] and
//! [`crate::reconcile`].

pub mod approve;
pub mod compute;
mod extract;
pub mod filter;
mod push;
mod resolve;
pub mod workers;
mod write;

pub use push::{PushOutcome, PushSettings, Pusher};

use crate::config::Settings;
use crate::domain::{
    LineStatus, Period, RunException, RunStatus, RunSummary, SourceFailure, SourceName,
    SourceStats, Trigger,
};
use crate::mapping::CustomerMap;
use crate::pricing::PricingTable;
use crate::problem::{ConfigError, Problem};
use crate::reconcile::{self, Action, Approvals, Plan};
use crate::shutdown::Shutdown;
use crate::sinks::Sink;
use crate::sources::Source;
use crate::store::{PushScope, RunRequest, Store};
use anyhow::Context as _;
use compute::Rules;
use filter::CustomerFilter;
use std::collections::HashMap;
use std::sync::Arc;
use tracing::{info, instrument, warn};

/// Everything a run needs, built and checked once at start-up.
#[derive(Debug)]
pub struct App {
    pub settings: Settings,
    pub store: Store,
    pub pricing: PricingTable,
    pub customers: CustomerMap,
    /// Shared, so that a scope's fetcher can run as a task of its own (`extract`).
    pub sources: Vec<Arc<Source>>,
    pub sinks: Vec<Sink>,
    /// Crash simulation for the tests; never set in production.
    pub faults: Faults,
    /// Set by SIGTERM/SIGINT: stop at the next safe point.
    pub shutdown: Shutdown,
}

/// Points where a test can make a run stop as a crash would, to prove that the next run
/// resumes to the same result.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Stop after staging this many pages (in total) of a run.
    pub crash_after_pages: Option<u64>,
    /// Stop after the billing system accepted this many revisions, before the ledger records
    /// them as pushed.
    pub crash_after_accepted_pushes: Option<u64>,
}

/// The files a configuration names, loaded and checked.
pub fn load_tables(settings: &Settings) -> Result<(PricingTable, CustomerMap), Vec<Problem>> {
    let pricing = PricingTable::load(&settings.billing.pricing_file);
    let customers = CustomerMap::load(&settings.billing.customers_file);
    match (pricing, customers) {
        (Ok(p), Ok(c)) => Ok((p, c)),
        (p, c) => Err(p.err().into_iter().chain(c.err()).flatten().collect()),
    }
}

/// Builds the sources and billing systems a configuration names.
pub fn build_connectors(settings: &Settings) -> Result<(Vec<Source>, Vec<Sink>), Vec<Problem>> {
    let mut problems = Vec::new();
    let mut sources = Vec::new();
    let mut sinks = Vec::new();
    if let Some(s) = &settings.sources.billable_users
        && s.enabled
    {
        match crate::sources::billable_users::BillableUsers::new(s) {
            Ok(source) => sources.push(Source::BillableUsers(source)),
            Err(e) => problems.push(Problem::new("sources.billable_users", format!("{e:#}"))),
        }
    }
    if let Some(s) = &settings.sources.ccc
        && s.enabled
    {
        match crate::sources::ccc::Ccc::new(s) {
            Ok(source) => sources.push(Source::Ccc(source)),
            Err(e) => problems.push(Problem::new("sources.ccc", format!("{e:#}"))),
        }
    }
    if let Some(s) = &settings.sources.genesys
        && s.enabled
    {
        match crate::sources::genesys::Genesys::new(s) {
            Ok(source) => sources.push(Source::Genesys(source)),
            Err(e) => problems.push(Problem::new("sources.genesys", format!("{e:#}"))),
        }
    }
    if let Some(s) = &settings.sinks.rambase {
        match crate::sinks::rambase::RamBase::new(s) {
            Ok(sink) => sinks.push(Sink::RamBase(sink)),
            Err(e) => problems.push(Problem::new("sinks.rambase", format!("{e:#}"))),
        }
    }
    if let Some(s) = &settings.sinks.activeplatform {
        match crate::sinks::activeplatform::ActivePlatform::new(s) {
            Ok(sink) => sinks.push(Sink::ActivePlatform(sink)),
            Err(e) => problems.push(Problem::new("sinks.activeplatform", format!("{e:#}"))),
        }
    }
    if let Some(s) = &settings.sinks.file {
        match crate::sinks::file::FileSink::new(s) {
            Ok(sink) => sinks.push(Sink::File(sink)),
            Err(e) => problems.push(Problem::new("sinks.file", format!("{e:#}"))),
        }
    }
    if problems.is_empty() {
        Ok((sources, sinks))
    } else {
        Err(problems)
    }
}

/// Every problem of a configuration: its keys, its files and its connectors. Empty when it
/// is good to run.
pub fn check(settings: &Settings) -> Vec<Problem> {
    prepare(settings).err().unwrap_or_default()
}

/// The configuration checked and turned into what a run uses, in one pass: its keys, then its
/// files and its connectors (each built once), or every problem found.
fn prepare(settings: &Settings) -> Result<Prepared, Vec<Problem>> {
    let mut problems = settings.validate();
    let tables = load_tables(settings);
    if let Err(more) = &tables {
        problems.extend(more.iter().cloned());
    }
    // Connectors are checked only once the keys are right: their messages would repeat them.
    if !problems.is_empty() {
        return Err(problems);
    }
    let (sources, sinks) = build_connectors(settings)?;
    let (pricing, customers) = tables?;
    Ok(Prepared {
        pricing,
        customers,
        sources,
        sinks,
    })
}

struct Prepared {
    pricing: PricingTable,
    customers: CustomerMap,
    sources: Vec<Source>,
    sinks: Vec<Sink>,
}

impl App {
    /// Checks the configuration, loads its files, builds its connectors and opens the store
    /// (running migrations). Any configuration problem fails here, before any work.
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        let Prepared {
            pricing,
            customers,
            sources,
            sinks,
        } = prepare(&settings).map_err(ConfigError)?;
        let store = Store::connect(&settings.database_target())
            .await
            .context("opening the state database")?;
        Ok(App {
            settings,
            store,
            pricing,
            customers,
            sources: sources.into_iter().map(Arc::new).collect(),
            sinks,
            faults: Faults::default(),
            shutdown: Shutdown::new(),
        })
    }

    /// The push of this configuration's billing systems.
    pub fn pusher(&self) -> Pusher<'_> {
        pusher(
            &self.settings,
            &self.store,
            &self.sinks,
            &self.faults,
            &self.shutdown,
        )
    }

    pub fn sink(&self, name: &str) -> Option<&Sink> {
        self.sinks.iter().find(|s| s.name() == name)
    }

    /// The configured source names.
    pub fn source_names(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.name().to_string()).collect()
    }
}

/// A push with `sinks` (which may be only some of the configured ones), behaving as `settings`
/// say.
pub fn pusher<'a>(
    settings: &'a Settings,
    store: &'a Store,
    sinks: &'a [Sink],
    faults: &'a Faults,
    shutdown: &'a Shutdown,
) -> Pusher<'a> {
    Pusher {
        store,
        sinks,
        settle: settings.push.settle(longest_sink_timeout(settings)),
        retries: settings.push.retries(),
        retry_backoff: settings.push.retry_backoff(),
        faults,
        shutdown,
    }
}

/// The longest request timeout of the configured billing systems: a request of a process that
/// died may be in flight that long.
fn longest_sink_timeout(settings: &Settings) -> std::time::Duration {
    let sinks = &settings.sinks;
    let secs = [
        sinks.rambase.as_ref().map(|s| s.http.timeout_secs),
        sinks.activeplatform.as_ref().map(|s| s.http.timeout_secs),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(crate::http::HttpSettings::default().timeout_secs);
    std::time::Duration::from_secs(secs)
}

/// Builds only the billing systems named (by their configured name): pushing needs the secrets
/// of the billing systems it pushes to, and no others.
pub fn build_sinks(settings: &Settings, names: &[&str]) -> Result<Vec<Sink>, Vec<Problem>> {
    let mut only = settings.clone();
    let sinks = &mut only.sinks;
    if !names.contains(&"rambase") {
        sinks.rambase = None;
    }
    if !names.contains(&"activeplatform") {
        sinks.activeplatform = None;
    }
    if !names.contains(&"file") {
        sinks.file = None;
    }
    only.sources = Default::default();
    build_connectors(&only).map(|(_, sinks)| sinks)
}

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub period: Period,
    /// Only this source (its configured name); all sources when `None`.
    pub source: Option<String>,
    /// Compute and show the plan; write nothing anywhere.
    pub dry_run: bool,
    pub trigger: Trigger,
    /// Only this customer's lines and exceptions: a billing account, or a source's customer
    /// key ([`filter::CustomerFilter`]); every customer when `None`.
    pub customer: Option<String>,
    /// Who asked for the run (`--by`), recorded with it; `None` for the schedule.
    pub requested_by: Option<String>,
}

/// What a run did, for the summary and the printed plan.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub summary: RunSummary,
    /// What the run planned; once the plan is written (any run but a dry run) its `changes`
    /// are left out: the ledger holds them.
    pub plan: Plan,
    pub exceptions: Vec<RunException>,
}

/// A run could not be started because of how it was asked (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// One run of the pipeline. Source failures do not abort the run: the other sources go on and
/// the run ends `failed`. An `Err` means the run itself could not go on (database down, a
/// simulated crash) — whatever was committed stays, and the next run resumes from it.
///
/// A run that writes must hold the store's writer lease (`Store::acquire_writer`), as every
/// command does: two runs at once would take each other's staged records and send lines twice.
/// A stop request (`app.shutdown`) ends the run `interrupted` at the next page or push.
///
/// Every wait for a peer's rate limit during the run ends by the run's deadline
/// (`general.run_deadline_secs` from now), or fails its source or push at once.
#[instrument(name = "run", skip_all, fields(period = %options.period, trigger = options.trigger.as_str(),
    dry_run = options.dry_run, run_id = tracing::field::Empty))]
pub async fn run(app: &App, options: &RunOptions) -> anyhow::Result<RunReport> {
    let deadline = crate::http::Deadline::after_secs(app.settings.general.run_deadline_secs);
    let result =
        crate::http::with_deadline(deadline, run_until_deadline(app, options, false, None)).await;
    notify(app, options, &result, false).await;
    result
}

/// [`run`], keeping every new or changed line a draft and pushing nothing: the daemon's sync of
/// the month to date. The month's normal run later approves (or leaves for a person, under
/// `require_approval`) and pushes those drafts in place, as revisions never sent.
#[instrument(skip_all, fields(period = %options.period, held = true))]
pub async fn run_holding_drafts(app: &App, options: &RunOptions) -> anyhow::Result<RunReport> {
    let deadline = crate::http::Deadline::after_secs(app.settings.general.run_deadline_secs);
    let result =
        crate::http::with_deadline(deadline, run_until_deadline(app, options, true, None)).await;
    notify(app, options, &result, true).await;
    result
}

/// The one place every run (tally run, the daemon) tells `[notify]`; never fails the run. A run
/// holding drafts leaves them waiting by design, so only its failure is news.
async fn notify(
    app: &App,
    options: &RunOptions,
    result: &anyhow::Result<RunReport>,
    holding_drafts: bool,
) {
    if options.dry_run || result.as_ref().is_err_and(|e| e.is::<UsageError>()) {
        return;
    }
    let mut settings = app.settings.notify.clone();
    if holding_drafts {
        settings
            .on
            .retain(|event| *event == crate::config::NotifyEvent::Failed);
    }
    let outcome = result.as_ref().map(|report| &report.summary);
    crate::notify::after_run(&settings, options.trigger, options.period, outcome).await;
}

/// The sources a run reads: `--source`, or every configured one.
fn selected_sources<'a>(
    app: &'a App,
    options: &RunOptions,
) -> Result<Vec<&'a Arc<Source>>, UsageError> {
    let Some(name) = &options.source else {
        return Ok(app.sources.iter().collect());
    };
    let found: Vec<&Arc<Source>> = app
        .sources
        .iter()
        .filter(|s| s.name().as_str() == name)
        .collect();
    if found.is_empty() {
        return Err(UsageError(format!(
            "source {name:?} is not configured here (no enabled [sources.{name}]); \
             configured sources: {}",
            app.source_names().join(", ")
        )));
    }
    Ok(found)
}

/// The run itself. With `round`, the sources were extracted by the round's workers
/// ([`workers`]): their staged records are totalled, not read again.
async fn run_until_deadline(
    app: &App,
    options: &RunOptions,
    hold_drafts: bool,
    round: Option<&str>,
) -> anyhow::Result<RunReport> {
    let selected = selected_sources(app, options)?;
    let period = options.period;
    let mut customer = match &options.customer {
        Some(asked) => Some(CustomerFilter::for_app(app, asked).await?),
        None => None,
    };
    // Accounts looked up in a billing system are cached for one run, not for the daemon's life.
    for sink in &app.sinks {
        sink.begin_run();
    }
    let run_id = if options.dry_run {
        None
    } else {
        let request = RunRequest {
            source: options.source.as_deref(),
            by: options.requested_by.as_deref(),
            customer: customer.as_ref().map(CustomerFilter::asked),
        };
        let id = app
            .store
            .start_requested_run(options.trigger, period, &request)
            .await?;
        app.store.record_lease_run(id).await?;
        // Every event of the run carries its id from here on (the span's `run_id`).
        tracing::Span::current().record("run_id", id);
        Some(id)
    };
    info!(run_id, sources = selected.len(), "run started");

    let mut failed_sources = Vec::new();
    let mut records_read = 0;
    let mut lines = Vec::new();
    let mut exceptions = Vec::new();
    let mut completed_sources: Vec<SourceName> = Vec::new();
    let pages_staged = std::sync::atomic::AtomicU64::new(0);
    let mut interrupted = false;
    let mut source_stats: Vec<SourceStats> = Vec::new();
    for source in &selected {
        let watch = extract::Watch::start(source, &pages_staged);
        let usage = match (run_id, round) {
            (Some(_), Some(round)) => workers::total_round(app, source, period, round).await,
            (Some(run_id), None) => {
                extract::extract(app, source, period, run_id, &pages_staged).await
            }
            (None, _) => extract::extract_in_memory(app, source, period, &pages_staged).await,
        };
        let mut stats = watch.finish(source, &pages_staged);
        let usage = match usage {
            Ok(usage) => usage,
            Err(e) => {
                if e.downcast_ref::<SimulatedCrash>().is_some() {
                    return Err(e);
                }
                if e.downcast_ref::<Interrupted>().is_some() {
                    warn!(source = %source.name(), "stopped during extraction; its checkpoint is kept and the next run resumes there");
                    stats.error = Some("stopped by a signal during extraction".into());
                    source_stats.push(stats);
                    interrupted = true;
                    break;
                }
                warn!(source = %source.name(), error = %format!("{e:#}"), "source failed; its checkpoint is kept and the other sources go on");
                stats.error = Some(format!("{e:#}"));
                source_stats.push(stats);
                failed_sources.push(SourceFailure {
                    source: source.name().to_string(),
                    error: format!("{e:#}"),
                });
                continue;
            }
        };
        stats.records = usage.iter().map(|u| u.record_count).sum::<u64>();
        records_read += stats.records;
        let directory = match resolve::resolve(app, source, &usage).await {
            Ok(directory) => directory,
            Err(e) => {
                warn!(source = %source.name(), error = %format!("{e:#}"), "looking up billing accounts failed; the source's lines wait for the next run");
                stats.error = Some(format!("{e:#}"));
                source_stats.push(stats);
                failed_sources.push(SourceFailure {
                    source: source.name().to_string(),
                    error: format!("{e:#}"),
                });
                continue;
            }
        };
        source_stats.push(stats);
        let rules = Rules {
            customers: &app.customers,
            pricing: &app.pricing,
            billing: &app.settings.billing,
            sinks: &app.sinks,
            directory: &directory,
        };
        let mut computed = compute::compute(
            source.name(),
            source.key_match(),
            &|item| source.license_type(item),
            period,
            usage,
            &rules,
        );
        if let Some(customer) = customer.as_mut() {
            customer.add_found(&directory, source.key_match());
            computed
                .lines
                .retain(|l| customer.matches_account(&l.key.billing_account));
            computed
                .exceptions
                .retain(|e| customer.matches_exception(e, source.key_match()));
        }
        if lines.is_empty() {
            // Most runs read one source, or the first source has the lines: no copy.
            lines = computed.lines;
        } else {
            lines.extend(computed.lines);
        }
        exceptions.extend(computed.exceptions);
        completed_sources.push(source.name().clone());
    }
    if interrupted {
        // Nothing is planned from a partial extraction: the next run resumes it.
        completed_sources.clear();
        lines.clear();
        exceptions.clear();
    }

    // The pages and records of the extraction are freed; planning holds the run's peak.
    crate::observe::memory::return_freed_memory();
    let pushed = write::pushed(app, period, customer.as_ref()).await?;
    let mut approvals = approvals(app, period).await?;
    if hold_drafts {
        // Every line waits as if for a person; no rule approves it yet.
        approvals.required = true;
        approvals.rules.clear();
    }
    // The lines move into the plan (their traces into the revisions planned): held once, and
    // written a batch at a time as they are planned.
    let planner = reconcile::Planner::new(lines, &completed_sources, &approvals, &pushed);
    let plan = match run_id {
        Some(run_id) if !interrupted => {
            let kept =
                filter::others_exceptions(app, period, &completed_sources, customer.as_ref())
                    .await?;
            let (sources, found) = (&completed_sources, &exceptions);
            let limit = customer.as_ref();
            write::plan_and_write(app, run_id, period, sources, limit, planner, found, kept).await?
        }
        // A dry run lists its plan; an interrupted run has nothing to plan (see above).
        _ => write::plan_only(app, period, customer.as_ref(), planner).await?,
    };
    exceptions.extend(plan.exceptions(period));
    let totals = plan.counts.totals.clone();
    let totals_error = plan.counts.total_too_large.map(|currency| {
        format!(
            "the period's {currency} total is too large to compute; check the lines with `tally lines --period {period}`"
        )
    });

    let mut errors = Vec::new();
    let mut lines_pushed = 0;
    let mut waiting_to_settle = 0;
    // A dry run counts the drafts its plan would leave.
    let mut waiting_approval = plan.counts.drafts;
    if run_id.is_some() && !completed_sources.is_empty() {
        if !hold_drafts {
            let outcome = match &customer {
                None => {
                    let scope = PushScope {
                        sources: Some(&completed_sources),
                        ..PushScope::default()
                    };
                    app.pusher().push_period(period, &scope).await?
                }
                Some(customer) => {
                    filter::push_customer(app, period, &completed_sources, customer).await?
                }
            };
            lines_pushed = outcome.pushed;
            errors = outcome.errors;
            waiting_to_settle = outcome.waiting;
            interrupted |= outcome.interrupted;
        }
        waiting_approval = match &customer {
            None => {
                app.store
                    .count_drafts(period, Some(&completed_sources))
                    .await?
            }
            Some(customer) => app
                .store
                .ledger_lines(period, None)
                .await?
                .iter()
                .filter(|l| {
                    l.status == LineStatus::Draft
                        && completed_sources.contains(&l.key.source)
                        && customer.matches_account(&l.key.billing_account)
                })
                .count() as u64,
        };
    }
    errors.extend(totals_error);
    if waiting_to_settle > 0 {
        errors.push(format!(
            "{waiting_to_settle} revision(s) were sent earlier and are not in the billing system yet; they are not sent again before their settle time (push.settle_secs) has passed: run again later"
        ));
    }

    let status = if interrupted {
        RunStatus::Interrupted
    } else if !failed_sources.is_empty() || !errors.is_empty() {
        RunStatus::Failed
    } else if !exceptions.is_empty() {
        RunStatus::CompletedWithExceptions
    } else {
        RunStatus::Completed
    };
    let warnings = extract::empty_source_warnings(app, period, &source_stats).await?;
    for warning in &warnings {
        warn!(%warning, "a source returned nothing");
    }
    let summary = RunSummary {
        run_id,
        status,
        period,
        dry_run: options.dry_run,
        records_read,
        lines_created: plan.count(Action::Create),
        lines_adjusted: plan.count(Action::Adjust) + plan.count(Action::Update),
        lines_unchanged: plan.count(Action::Unchanged),
        lines_pushed,
        lines_waiting_approval: waiting_approval,
        lines_back_to_review: plan.back_to_review(),
        lines_waiting_to_settle: waiting_to_settle,
        exceptions: exceptions.len() as u64,
        totals,
        totals_partial: !failed_sources.is_empty(),
        failed_sources,
        errors,
        sources: source_stats,
        warnings,
        customer: customer.as_ref().map(|c| c.asked().to_owned()),
    };
    if let Some(run_id) = run_id {
        app.store.finish_run(run_id, &summary).await?;
    }
    info!(run_id, status = %summary.status, records = summary.records_read, created = summary.lines_created,
        adjusted = summary.lines_adjusted, unchanged = summary.lines_unchanged, pushed = summary.lines_pushed,
        exceptions = summary.exceptions, "run finished");
    Ok(RunReport {
        summary,
        plan,
        exceptions,
    })
}

/// How this run's lines get approved: as configured, with the amounts the approval rules
/// compare with (read only when there are rules).
async fn approvals(app: &App, period: Period) -> anyhow::Result<Approvals> {
    let billing = &app.settings.billing;
    let previous = if billing.require_approval && !billing.approval_rules.is_empty() {
        app.store.last_pushed_amounts(period).await?
    } else {
        HashMap::new()
    };
    Ok(Approvals {
        required: billing.require_approval,
        rules: billing.approval_rules.clone(),
        previous,
        now: chrono::Utc::now(),
        shrink: billing.shrink_guard.clone(),
    })
}

/// A stop was requested (SIGTERM/SIGINT) during extraction.
#[derive(Debug, thiserror::Error)]
#[error("stopped by a signal")]
pub struct Interrupted;

/// A crash simulated by [`Faults`].
#[derive(Debug, thiserror::Error)]
#[error("simulated crash: {0}")]
pub struct SimulatedCrash(pub String);
