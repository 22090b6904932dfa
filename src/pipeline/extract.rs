//! Extraction: every scope of a source read page by page into the staging tables, with the
//! reading and the writing overlapped, then totalled in one streaming pass.
//!
//! Why it is shaped this way (docs/PERFORMANCE.md): a page's round trip to the peer and its
//! transaction in the store used to take turns, one page at a time. Here, per scope, a
//! *fetcher* (a task of its own, so that it runs beside the thread that stages) requests pages
//! (several at once where the peer announced its total pages and pages are addressed by
//! number) and hands them, in order, to a *stager*, which writes
//! whatever has arrived as one transaction with the scope's checkpoint. Independent scopes
//! (Genesys organizations, CCC services) run side by side, a few at a time.
//!
//! What does not change: pages are checked and staged in the order the peer lists them, each
//! page is requested exactly once, and a checkpoint never claims a page whose records it did
//! not commit, so a crash or a signal anywhere resumes at the last committed page.

use super::{App, Interrupted, SimulatedCrash};
use crate::domain::{Period, SourceName, SourceStats, StagedRecord, UsageQuantity};
use crate::shutdown::Shutdown;
use crate::sources::{Page, Source};
use crate::store::{Claim, PageBody, PageToStage, StageAt};
use compute::Aggregator;
use futures_util::{StreamExt as _, TryStreamExt as _};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;
use tracing::{Instrument as _, info, info_span, instrument, warn};

use super::compute;

/// A source's counts over its extraction: the pages counter and its HTTP client's figures
/// are read before and after, so that what earlier sources or months did is not counted.
pub(super) struct Watch {
    pages: u64,
    http: crate::http::StatsSnapshot,
    started: std::time::Instant,
}

impl Watch {
    pub(super) fn start(source: &Source, pages: &AtomicU64) -> Watch {
        Watch {
            pages: pages.load(Ordering::SeqCst),
            http: source.http_stats(),
            started: std::time::Instant::now(),
        }
    }

    /// The source's counts so far (its records are filled in once they are totalled).
    pub(super) fn finish(self, source: &Source, pages: &AtomicU64) -> SourceStats {
        let http = source.http_stats().since(self.http);
        SourceStats {
            source: source.name().to_string(),
            records: 0,
            pages: pages.load(Ordering::SeqCst).saturating_sub(self.pages),
            requests: http.requests,
            retries: http.retries,
            rate_limited: http.rate_limited,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error: None,
        }
    }
}

/// A warning for each source that read no records where the period before had some: an
/// expired credential or a changed scope often answers with an empty list, not an error.
pub(super) async fn empty_source_warnings(
    app: &App,
    period: Period,
    stats: &[SourceStats],
) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    for s in stats.iter().filter(|s| s.error.is_none() && s.records == 0) {
        let previous = period.previous();
        let before = app
            .store
            .source_activity(&SourceName::new(s.source.as_str()), previous)
            .await?;
        if before > 0 {
            warnings.push(format!(
                "source {} returned no records for {period}, where {previous} had {before}:                  check its credentials and scopes (sources.{}) before trusting this month",
                s.source, s.source
            ));
        }
    }
    Ok(warnings)
}

/// Records per staging transaction at most: large enough that commits are rare, small enough
/// that a transaction stays short and a batch's memory small.
const STAGE_RECORDS: usize = 5_000;

/// Fetched pages waiting for the stager, per scope: the fetcher runs at most this far ahead.
const QUEUE_PAGES: usize = 32;

/// Extracts every scope of a source into the staging tables, resuming an unfinished
/// extraction at its checkpoint, then sums what is staged.
///
/// `pages_staged` counts the pages this run staged across its sources, for the
/// `crash_after_pages` fault.
#[instrument(name = "source", skip_all, fields(source = %source.name()))]
pub(super) async fn extract(
    app: &App,
    source: &Arc<Source>,
    period: Period,
    run_id: i64,
    pages_staged: &AtomicU64,
) -> anyhow::Result<Vec<UsageQuantity>> {
    let name = source.name();
    let mut scopes = futures_util::stream::iter(source.scopes().into_iter().enumerate())
        .map(|(index, scope)| async move {
            let result =
                extract_scope(app, source, &scope, period, run_id, pages_staged, None).await;
            (index, scope, result)
        })
        .buffer_unordered(source.scopes_at_once());
    // Scopes finish in any order; the error reported is that of the first scope in the
    // configured order, so that the same failure reads the same way every night.
    let mut errors = std::collections::BTreeMap::new();
    let mut totalled = HashMap::new();
    while let Some((index, scope, result)) = scopes.next().await {
        let e = match result {
            Ok(read) => {
                totalled.insert(scope, read);
                continue;
            }
            Err(e) => e,
        };
        // A crash or a stop ends the source at once; the scopes still running are dropped,
        // which rolls back their open transaction: their checkpoints stay where they were.
        if e.downcast_ref::<SimulatedCrash>().is_some() || e.downcast_ref::<Interrupted>().is_some()
        {
            return Err(e);
        }
        errors.insert(index, (scope, e));
    }
    drop(scopes);
    let mut errors = errors.into_values();
    if let Some((_, first)) = errors.next() {
        for (scope, e) in errors {
            warn!(%scope, error = %format!("{e:#}"), "another scope of the source failed too; its checkpoint is kept");
        }
        return Err(first);
    }
    // The staged records are this run's extraction's: it restarted or resumed every scope, and
    // the writer lease keeps any other run out. Checked, because totalling another run's records
    // would bill what this run did not read.
    for scope in source.scopes() {
        let owner = app
            .store
            .checkpoint(name, &scope, period)
            .await?
            .map(|cp| cp.run_id);
        anyhow::ensure!(
            owner == Some(run_id),
            "extracting {name} ({scope}) for {period}: the staged records belong to run {} now, not to this run {run_id}; another tally wrote the ledger without the writer lease — run again",
            owner
                .map(|o| o.to_string())
                .unwrap_or_else(|| "none".into())
        );
    }
    // A scope this run read from its first page to its last, meeting no record key twice, was
    // totalled as it was staged; the others (resumed, or with a record listed twice) are
    // totalled from what is staged.
    let mut total = Aggregator::new(&app.settings.billing.limits);
    for scope in source.scopes() {
        match totalled.remove(&scope).flatten() {
            Some(read) => total.merge(read),
            None => total_from_store(app, name, period, Some(&scope), &mut total).await?,
        }
    }
    Ok(total.finish())
}

/// The totals of everything staged for `name` and `period`, read back from the store.
pub(super) async fn total_staged(
    app: &App,
    name: &SourceName,
    period: Period,
) -> anyhow::Result<Vec<UsageQuantity>> {
    let mut total = Aggregator::new(&app.settings.billing.limits);
    total_from_store(app, name, period, None, &mut total).await?;
    Ok(total.finish())
}

/// Adds the staged records of `name` and `period` (one scope, or all) to `total`, each record
/// key of a scope once, at its last listing. Two streaming passes over the staged pages, so
/// that memory holds a small hash per record, not its key: the first finds which hashes occur
/// more than once; the second adds every record whose hash is unique and, for the few others,
/// tells a record listed again (skipped) from two keys that share a hash (both added) by their
/// keys.
async fn total_from_store(
    app: &App,
    name: &SourceName,
    period: Period,
    scope: Option<&str>,
    total: &mut Aggregator,
) -> anyhow::Result<()> {
    use std::hash::BuildHasher as _;
    let hasher = std::collections::hash_map::RandomState::new();
    let hash = |scope: &str, key: &str| hasher.hash_one((scope, key));
    let mut seen = HashSet::new();
    let mut twice = HashSet::new();
    app.store
        .for_each_staged_page(name, period, scope, |scope, _, records| {
            for r in &records {
                let h = hash(scope, &r.record_key);
                if !seen.insert(h) {
                    twice.insert(h);
                }
            }
            Ok(())
        })
        .await?;
    drop(seen);
    let mut met: HashSet<(String, String)> = HashSet::new();
    app.store
        .for_each_staged_page(name, period, scope, |scope, _, records| {
            // Last page first and, within a page, last record first: a key's first listing met
            // is its last one, the one that counts.
            for r in records.iter().rev() {
                if twice.contains(&hash(scope, &r.record_key))
                    && !met.insert((scope.to_owned(), r.record_key.clone()))
                {
                    continue;
                }
                total.add(&r.record_key, &r.customer_key, &r.item, r.quantity);
            }
            Ok(())
        })
        .await
}

/// A scope's records totalled as they are staged. A key met twice in the scope (a listing
/// that moved while it was read) gives the totals up: which of its listings counts is settled
/// when the staged pages are read back. Keys are held as hashes (a false alarm only costs that
/// read back), appended as they come and checked once at the end by sorting them: a hash set
/// of a million keys costs a cache miss per record and twice the memory while it grows.
struct Totalling {
    aggregator: Aggregator,
    keys: Vec<u64>,
    hasher: std::collections::hash_map::RandomState,
}

impl Totalling {
    fn new(app: &App) -> Totalling {
        Totalling {
            aggregator: Aggregator::new(&app.settings.billing.limits),
            keys: Vec::new(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn add(&mut self, records: &[StagedRecord]) {
        use std::hash::BuildHasher as _;
        for r in records {
            self.keys.push(self.hasher.hash_one(r.record_key.as_str()));
            self.aggregator
                .add(&r.record_key, &r.customer_key, &r.item, r.quantity);
        }
    }

    /// The totals, unless a key was met twice.
    fn finish(mut self, scope: &str) -> Option<Aggregator> {
        self.keys.sort_unstable();
        if self.keys.windows(2).any(|pair| pair[0] == pair[1]) {
            info!(%scope, "a record is listed twice: the scope is totalled from the store");
            return None;
        }
        Some(self.aggregator)
    }
}

/// One scope: resumes at its checkpoint (or starts afresh), then fetches and stages side by
/// side until the last page is committed.
///
/// A scope extracted before is read again in full but, while its pages are the same as those
/// staged (by fingerprint), only its checkpoint is written: an unchanged month costs the reading.
///
/// With a `claim` (a worker's unit of a round), every staging transaction also checks that the
/// unit is still this worker's, and the last one settles it done.
///
/// Returns the scope's totals when this run read all of it and met no record twice (see
/// [`Totalling`]); `None` when they must be read back from the store.
pub(super) async fn extract_scope(
    app: &App,
    source: &Arc<Source>,
    scope: &str,
    period: Period,
    run_id: i64,
    pages_staged: &AtomicU64,
    claim: Option<&Claim>,
) -> anyhow::Result<Option<Aggregator>> {
    let name = source.name();
    let checkpoint = app.store.checkpoint(name, scope, period).await?;
    let (cursor, pages_before, rereading) = match checkpoint {
        Some(cp) if !cp.complete => {
            info!(%scope, pages = cp.pages, records = cp.records, "resuming an unfinished extraction at its checkpoint");
            (cp.cursor, cp.pages, cp.rereading)
        }
        Some(_) => {
            app.store.begin_reread(name, scope, period, run_id).await?;
            (None, 0, true)
        }
        None => {
            app.store
                .restart_extraction(name, scope, period, run_id)
                .await?;
            (None, 0, false)
        }
    };
    let known = if rereading {
        app.store.page_fingerprints(name, scope, period).await?
    } else {
        HashMap::new()
    };
    let (pages, arrived) = mpsc::channel(QUEUE_PAGES);
    let first_page = u64::try_from(pages_before).unwrap_or(0) + 1;
    // The fetcher is a task of its own, so that requesting and checking pages runs on another
    // thread than staging them (the pipeline's future is driven by one thread); aborted if
    // this scope's extraction is dropped half way (a crash or a stop of another scope).
    let fetcher = {
        let (shutdown, source, scope) =
            (app.shutdown.clone(), Arc::clone(source), scope.to_owned());
        FetchTask::spawn(async move {
            fetch_scope(
                &shutdown, &source, &scope, period, cursor, first_page, pages,
            )
            .await
        })
    };
    let at = StageAt {
        source: name,
        scope,
        period,
        run_id,
        claim,
    };
    let totalling = (pages_before == 0).then(|| Totalling::new(app));
    let stager = Stager {
        app,
        at: &at,
        pages_before,
        pages_staged,
        known,
        totalling,
    };
    let stager = stager.run(arrived);
    let (fetched, staged) = tokio::join!(fetcher.finish(), stager);
    // The stager's failure is the cause when both failed: the fetcher stopped because the
    // stager stopped taking pages.
    let (pages, records, totalled) = staged?;
    if let Err(e) = fetched {
        // A list that changed while it was read cannot be resumed: its pages so far are set
        // aside, so that the next run reads one snapshot from page 1.
        if e.downcast_ref::<crate::sources::paging::ReadAgain>()
            .is_some()
        {
            app.store
                .restart_extraction(name, scope, period, run_id)
                .await?;
        }
        if e.downcast_ref::<Interrupted>().is_some() {
            return Err(e);
        }
        return Err(e.context(format!("extracting {name} ({scope}) for {period}")));
    }
    info!(%scope, pages, records, "extraction complete");
    Ok(totalled)
}

/// Requests `scope`'s pages from `cursor` on and sends each, checked, in the peer's order.
/// Where the peer announced its total pages, later pages are requested several at once; each
/// page is still requested once and checked against the pages before it. Ends when the last
/// page is sent, at the first error, or when the receiver is gone.
///
/// Each request runs in a `page` span (`scope`, `page`: the page's number in the scope's list,
/// from 1 at `first_page`), so that its retries and waits are logged with the page they are for.
async fn fetch_scope(
    shutdown: &Shutdown,
    source: &Source,
    scope: &str,
    period: Period,
    mut cursor: Option<String>,
    first_page: u64,
    pages: mpsc::Sender<Page>,
) -> anyhow::Result<()> {
    let mut number = first_page;
    loop {
        if shutdown.requested() {
            return Err(Interrupted.into());
        }
        let page = source
            .fetch_page(scope, period, cursor.as_deref())
            .instrument(info_span!("page", %scope, page = number))
            .await?;
        number += 1;
        crate::observe::progress::page_read(page.records.len());
        let next = page.next_cursor.clone();
        if pages.send(page).await.is_err() {
            return Ok(());
        }
        let Some(next) = next else { return Ok(()) };
        cursor = Some(next);
        let Some((ahead, at_once)) = cursor.as_deref().and_then(|c| source.pages_ahead(c)) else {
            continue;
        };
        let mut fetched = futures_util::stream::iter(ahead)
            .map(|page| {
                source
                    .fetch_numbered(scope, period, page)
                    .instrument(info_span!("page", %scope, page))
            })
            .buffered(at_once);
        while let Some(numbered) = fetched.try_next().await? {
            if shutdown.requested() {
                return Err(Interrupted.into());
            }
            let page = source.accept(cursor.as_deref(), numbered)?;
            number += 1;
            crate::observe::progress::page_read(page.records.len());
            let next = page.next_cursor.clone();
            if pages.send(page).await.is_err() {
                return Ok(());
            }
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
        // The pages announced are read and the last of them named a next one: the peer has more
        // than it said; the checks of the next page say so, page by page.
    }
}

/// A scope's fetcher running as a task, aborted when dropped before it ends, so that no request
/// outlives the extraction that wanted it.
struct FetchTask(tokio::task::JoinHandle<anyhow::Result<()>>);

impl FetchTask {
    /// Spawns `fetch` in the current span, with the run's task-local values a task does not
    /// inherit: its HTTP deadline, the pace it shares with other workers, and the progress it
    /// counts pages into.
    fn spawn(fetch: impl Future<Output = anyhow::Result<()>> + Send + 'static) -> FetchTask {
        let deadline = crate::http::current_deadline();
        let shared_pace = crate::http::current_shared_pace();
        let progress = crate::observe::Progress::current();
        let work = async move {
            match progress {
                Some(progress) => progress.scope(fetch).await,
                None => fetch.await,
            }
        };
        let work = async move {
            match shared_pace {
                Some(shared) => crate::http::with_shared_pace(shared, work).await,
                None => work.await,
            }
        };
        let work = async move {
            match deadline {
                Some(deadline) => crate::http::with_deadline(deadline, work).await,
                None => work.await,
            }
        };
        FetchTask(tokio::spawn(work.in_current_span()))
    }

    /// What the fetcher ended with; a fetcher that panicked is an error of the scope, not a
    /// panic of the run.
    async fn finish(mut self) -> anyhow::Result<()> {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(e) => Err(anyhow::anyhow!("the page fetcher stopped: {e}")),
        }
    }
}

impl Drop for FetchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Writes a scope's pages as they arrive, totalling them on the way where it can.
struct Stager<'a> {
    app: &'a App,
    at: &'a StageAt<'a>,
    pages_before: i64,
    /// Pages this run staged across its sources, for the `crash_after_pages` fault.
    pages_staged: &'a AtomicU64,
    /// The staged pages' fingerprints while a re-read goes on (empty once a page differed).
    known: HashMap<i64, String>,
    totalling: Option<Totalling>,
}

impl Stager<'_> {
    /// Everything that has arrived (up to [`STAGE_RECORDS`] records) goes in one transaction
    /// with the checkpoint past its last page. Returns the pages and records staged, and the
    /// scope's totals if they were kept on the way.
    async fn run(
        mut self,
        mut arrived: mpsc::Receiver<Page>,
    ) -> anyhow::Result<(u64, u64, Option<Aggregator>)> {
        let (app, at) = (self.app, self.at);
        let crash_after = app.faults.crash_after_pages;
        let mut pages = 0u64;
        let mut records = 0u64;
        let mut batch: Vec<Page> = Vec::new();
        while let Some(page) = arrived.recv().await {
            batch.push(page);
            // The `crash_after_pages` fault stops after exactly that many pages: a batch never
            // crosses it.
            let room = crash_after.map_or(u64::MAX, |limit| {
                limit.saturating_sub(self.pages_staged.load(Ordering::SeqCst))
            });
            let mut held: usize = batch.iter().map(|p| p.records.len()).sum();
            while held < STAGE_RECORDS && (batch.len() as u64) < room {
                match arrived.try_recv() {
                    Ok(page) => {
                        held += page.records.len();
                        batch.push(page);
                    }
                    Err(_) => break,
                }
            }
            let first = self
                .pages_before
                .saturating_add(i64::try_from(pages).unwrap_or(i64::MAX))
                .saturating_add(1);
            let to_stage: Vec<PageToStage<'_>> = batch
                .iter()
                .zip(first..)
                .map(|(page, number)| PageToStage {
                    page: number,
                    records: &page.records,
                    next_cursor: page.next_cursor.as_deref(),
                })
                .collect();
            let kept = self.unchanged(&to_stage);
            app.store.stage_at(at, &to_stage, kept).await?;
            if let Some(totalling) = &mut self.totalling {
                batch.iter().for_each(|page| totalling.add(&page.records));
            }
            let before = pages / 10;
            pages += batch.len() as u64;
            records += held as u64;
            let total = self
                .pages_staged
                .fetch_add(batch.len() as u64, Ordering::SeqCst)
                + batch.len() as u64;
            batch.clear();
            if pages / 10 > before {
                info!(scope = %at.scope, pages, records, "extracting");
            }
            if let Some(limit) = crash_after
                && total >= limit
            {
                return Err(SimulatedCrash(format!("after {limit} staged pages")).into());
            }
        }
        Ok((
            pages,
            records,
            self.totalling
                .and_then(|totalling| totalling.finish(at.scope)),
        ))
    }

    /// How many of the batch's first pages are staged exactly so already (a re-read whose
    /// fingerprints match). The first page that differs ends the re-read.
    fn unchanged(&mut self, pages: &[PageToStage<'_>]) -> usize {
        if self.known.is_empty() {
            return 0;
        }
        let kept = pages
            .iter()
            .take_while(|p| self.known.get(&p.page) == Some(&PageBody::fingerprint_of(p.records)))
            .count();
        if kept < pages.len() {
            info!(scope = %self.at.scope, page = pages[kept].page, "the listing differs from what is staged from this page on: staging it again");
            self.known.clear();
        }
        kept
    }
}

/// A dry run's extraction: the same pages, kept in memory, nothing written. Records are
/// de-duplicated by (scope, record key) as the staging table does.
#[instrument(name = "source", skip_all, fields(source = %source.name()))]
pub(super) async fn extract_in_memory(
    app: &App,
    source: &Source,
    period: Period,
    pages_read: &AtomicU64,
) -> anyhow::Result<Vec<UsageQuantity>> {
    let name = source.name();
    let mut seen: HashMap<(String, String), StagedRecord> = HashMap::new();
    for scope in source.scopes() {
        let (pages, mut arrived) = mpsc::channel(QUEUE_PAGES);
        let fetcher = fetch_scope(&app.shutdown, source, &scope, period, None, 1, pages);
        let keeper = async {
            while let Some(page) = arrived.recv().await {
                pages_read.fetch_add(1, Ordering::SeqCst);
                for record in page.records {
                    seen.insert((scope.clone(), record.record_key.clone()), record);
                }
            }
        };
        let (fetched, ()) = tokio::join!(fetcher, keeper);
        fetched.map_err(|e| {
            if e.downcast_ref::<Interrupted>().is_some() {
                e
            } else {
                e.context(format!("extracting {name} ({scope}) for {period}"))
            }
        })?;
    }
    let mut aggregator = Aggregator::new(&app.settings.billing.limits);
    for r in seen.values() {
        aggregator.add(&r.record_key, &r.customer_key, &r.item, r.quantity);
    }
    Ok(aggregator.finish())
}
