//! State: runs, checkpoints, staged records, the ledger and exceptions. All SQL of tally lives
//! under this folder (queries here, schema in `migrations/`).
//!
//! One interface, two databases: Postgres in production (`DATABASE_URL` or `[database] url`)
//! and an embedded SQLite file by default, so that a newcomer needs no server. Both run the
//! same store test suite (`tests/store.rs`).
//!
//! Each method is written once: `with_backend!` compiles its body for both pools, and the few
//! dialect differences (how a decimal is stored, how a write transaction starts) live in
//! `dialect`. Row-to-domain conversions are in `rows`, the writer lease in `lock`.
//!
//! Exactly-once rests on what this module guarantees: a page and its checkpoint commit together;
//! a reconcile plan commits whole or not at all; a revision that may be in the billing system
//! (`pushing`, `pushed`) is never updated or deleted; every push transition is a conditional
//! update that fails loudly when the revision is not in the state it must leave.

mod dialect;
mod lock;
mod rows;
mod scratch;

pub use lock::{WriterLease, this_host};

use crate::domain::{
    BillingAccount, LedgerChange, LedgerLine, LicenseType, NewRevision, Period, RunException,
    RunStatus, RunSummary, SourceName, StagedRecord, Trigger,
};
use crate::reconcile::LineIdentity;
use anyhow::{Context, anyhow, bail, ensure};
use chrono::{DateTime, Utc};
use dialect::Columns;
use rust_decimal::Decimal;
use sqlx::migrate::Migrate;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{PgPool, QueryBuilder, SqlitePool};
use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// `postgres://...`
    Postgres(String),
    /// A SQLite file (created if missing, with its parent folder).
    Sqlite(std::path::PathBuf),
}

/// A run as `tally runs` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub trigger: Trigger,
    pub period: Period,
    /// The `--source` the run was limited to, if any.
    pub source_filter: Option<String>,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Present once the run has finished.
    pub summary: Option<RunSummary>,
}

/// How far extraction of one (source, scope, period) has got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Where the next page starts; `None` before the first page or after the last.
    pub cursor: Option<String>,
    /// True once the last page is staged.
    pub complete: bool,
    /// Pages staged since extraction (re)started.
    pub pages: i64,
    /// Records received since extraction (re)started, a record listed twice counted twice.
    pub records: i64,
    /// The run that staged the last page (or restarted the extraction).
    pub run_id: i64,
    pub updated_at: DateTime<Utc>,
}

/// The state store.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Postgres(PgPool),
    /// The file's path is kept for the runner lock file next to it.
    Sqlite {
        pool: SqlitePool,
        path: PathBuf,
    },
}

/// Runs `$body` on the store's backend: `$pool` is the concrete pool (`PgPool` or
/// `SqlitePool`) and `$d` the matching `dialect` (`Pg` or `Lite`). The body is written once and
/// compiled for both, so that no method body is duplicated by hand.
macro_rules! with_backend {
    ($store:expr, |$pool:ident, $d:ident| $body:block) => {
        match &$store.backend {
            Backend::Postgres(pool) => {
                let $pool = pool;
                #[allow(unused_imports)]
                use dialect::Pg as $d;
                $body
            }
            Backend::Sqlite { pool, .. } => {
                let $pool = pool;
                #[allow(unused_imports)]
                use dialect::Lite as $d;
                $body
            }
        }
    };
}

/// Says where a ledger revision is (key, revision, status) for an error message, or that it does
/// not exist. Used after a conditional update changed nothing.
macro_rules! describe_revision {
    ($executor:expr, $id:expr) => {{
        let id: i64 = $id;
        let row = sqlx::query("SELECT line_key, revision, status FROM ledger_lines WHERE id = $1")
            .bind(id)
            .fetch_optional($executor)
            .await
            .with_context(|| format!("reading the state of ledger revision {id}"))?;
        match row {
            Some(row) => format!(
                "revision {} of {}, status {}",
                row.int32("revision")?,
                row.text("line_key")?,
                row.text("status")?
            ),
            None => "there is no ledger revision with that id".to_owned(),
        }
    }};
}

/// Rows per multi-row INSERT. The widest row (a ledger revision) binds 25 values: 1,000 rows stay
/// below SQLite's 32,766 and Postgres' 65,535 bound parameters per statement.
const ROWS_PER_INSERT: usize = 1000;

/// The columns a [`LedgerLine`] is read from (`rows::line`).
const LINE_COLUMNS: &str = "id, line_key, period, billing_account, license_type, source, \
     revision, idempotency_key, quantity, amount, rate, currency, total_quantity, total_amount, \
     price_ref, trace, evidence_count, evidence_hash, sink, status, external_id, push_marker, \
     last_error, approved_by, approved_at, approval_note, run_id, created_at, updated_at, pushed_at";

/// The columns a [`RunException`] is read from (`rows::exception`).
const EXCEPTION_COLUMNS: &str = "period, source, kind, customer_key, item, billing_account, \
     license_type, quantity, record_count, message";

impl Store {
    /// Connects (creating a SQLite file and its folder if needed) and runs pending migrations.
    pub async fn connect(target: &DatabaseTarget) -> anyhow::Result<Store> {
        // SQLite: creating the file, switching it to WAL and migrating it are serialised across
        // processes by a lock file (SQLite answers "database is locked" at once to a second
        // process switching the journal mode, whatever the busy timeout).
        let mut sqlite_guard = None;
        let backend = match target {
            DatabaseTarget::Postgres(url) => {
                let options = PgConnectOptions::from_str(url)
                    .context("the database URL is not a valid postgres:// URL")?;
                // The URL may hold a password: errors name the server and database only.
                let place = format!(
                    "{}:{}/{}",
                    options.get_host(),
                    options.get_port(),
                    options.get_database().unwrap_or("(default database)")
                );
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options)
                    .await
                    .with_context(|| {
                        format!(
                            "connecting to Postgres at {place}: is it running, and the URL right?"
                        )
                    })?;
                Backend::Postgres(pool)
            }
            DatabaseTarget::Sqlite(path) => {
                if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(folder).await.with_context(|| {
                        format!(
                            "creating the folder of the SQLite database {}",
                            path.display()
                        )
                    })?;
                }
                sqlite_guard = Some(WriterLease::sqlite_migration_lock(path).await?);
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL, not WAL's usual NORMAL: a commit that a power cut could undo might be
                    // a `pushing` mark, and losing it would send a line twice.
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    // One writer at a time: others wait this long for the lock before failing.
                    .busy_timeout(Duration::from_secs(30));
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await
                    .with_context(|| format!("opening the SQLite database {}", path.display()))?;
                Backend::Sqlite {
                    pool,
                    path: path.clone(),
                }
            }
        };
        let store = Store { backend };
        store.migrate_locked().await?;
        drop(sqlite_guard);
        Ok(store)
    }

    /// Runs pending migrations; returns how many were applied.
    pub async fn migrate(&self) -> anyhow::Result<usize> {
        // Held until the end of the migration (Postgres takes its own lock inside).
        let _sqlite_guard = match &self.backend {
            Backend::Sqlite { path, .. } => Some(WriterLease::sqlite_migration_lock(path).await?),
            Backend::Postgres(_) => None,
        };
        self.migrate_locked().await
    }

    /// [`Self::migrate`] with SQLite's migration lock file already held by the caller.
    async fn migrate_locked(&self) -> anyhow::Result<usize> {
        let backend = self.backend();
        with_backend!(self, |pool, D| {
            let mut conn = pool
                .acquire()
                .await
                .with_context(|| format!("migrating the {backend} store: connecting"))?;
            // The migration lock is a session lock on Postgres: closing this connection
            // afterwards (instead of pooling it) releases it on every path, errors included.
            conn.close_on_drop();
            // Held around the count as well as the run, so that two processes starting on a
            // fresh database neither race to create `_sqlx_migrations` nor count each other's
            // work. The migrator takes the same (re-entrant) lock again inside.
            conn.lock()
                .await
                .with_context(|| format!("migrating the {backend} store: taking the lock"))?;
            conn.ensure_migrations_table()
                .await
                .with_context(|| format!("migrating the {backend} store: _sqlx_migrations"))?;
            let before = conn
                .list_applied_migrations()
                .await
                .with_context(|| format!("migrating the {backend} store: listing migrations"))?
                .len();
            D::foreign_keys(&mut conn, false)
                .await
                .with_context(|| format!("migrating the {backend} store: foreign keys off"))?;
            let migrated = D::migrator().run(&mut *conn).await;
            D::foreign_keys(&mut conn, true)
                .await
                .with_context(|| format!("migrating the {backend} store: foreign keys on"))?;
            migrated.with_context(|| format!("migrating the {backend} store"))?;
            let after = conn
                .list_applied_migrations()
                .await
                .with_context(|| format!("migrating the {backend} store: listing migrations"))?
                .len();
            conn.unlock()
                .await
                .with_context(|| format!("migrating the {backend} store: releasing the lock"))?;
            Ok(after.saturating_sub(before))
        })
    }

    /// `postgres` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite { .. } => "sqlite",
        }
    }

    // ---- runs -----------------------------------------------------------------------------

    /// Records a new run as `running`; returns its id.
    pub async fn start_run(
        &self,
        trigger: Trigger,
        period: Period,
        source_filter: Option<&str>,
    ) -> anyhow::Result<i64> {
        with_backend!(self, |pool, D| {
            sqlx::query_scalar(
                "INSERT INTO runs (triggered_by, period, source_filter, status, started_at, host, pid) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(trigger.as_str())
            .bind(period.to_string())
            .bind(source_filter)
            .bind(RunStatus::Running.as_str())
            .bind(Utc::now())
            .bind(this_host())
            .bind(i64::from(std::process::id()))
            .fetch_one(pool)
            .await
            .with_context(|| format!("start_run: inserting a run of {period} into runs"))
        })
    }

    /// Records the end of a run: its status and summary.
    pub async fn finish_run(&self, run_id: i64, summary: &RunSummary) -> anyhow::Result<()> {
        let done = with_backend!(self, |pool, D| {
            sqlx::query("UPDATE runs SET status = $2, summary = $3, finished_at = $4 WHERE id = $1")
                .bind(run_id)
                .bind(summary.status.as_str())
                .bind(Json(summary))
                .bind(Utc::now())
                .execute(pool)
                .await
                .with_context(|| format!("finish_run: updating run {run_id} in runs"))?
                .rows_affected()
        });
        ensure!(done == 1, "finish_run: there is no run {run_id}");
        Ok(())
    }

    /// The newest runs first.
    pub async fn runs(&self, limit: u32) -> anyhow::Result<Vec<RunRecord>> {
        with_backend!(self, |pool, D| {
            let found = sqlx::query(
                "SELECT id, triggered_by, period, source_filter, status, started_at, \
                 finished_at, summary FROM runs ORDER BY id DESC LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .context("runs: reading runs")?;
            found.iter().map(rows::run).collect()
        })
    }

    // ---- extraction -----------------------------------------------------------------------

    /// The checkpoint of (source, scope, period); `None` if its extraction never started.
    pub async fn checkpoint(
        &self,
        source: &SourceName,
        scope: &str,
        period: Period,
    ) -> anyhow::Result<Option<Checkpoint>> {
        with_backend!(self, |pool, D| {
            let found = sqlx::query(
                "SELECT next_cursor, complete, pages, records, run_id, updated_at \
                 FROM checkpoints WHERE source = $1 AND scope = $2 AND period = $3",
            )
            .bind(source.as_str())
            .bind(scope)
            .bind(period.to_string())
            .fetch_optional(pool)
            .await
            .with_context(|| format!("checkpoint: reading ({source}, {scope}, {period})"))?;
            found.as_ref().map(rows::checkpoint).transpose()
        })
    }

    /// Starts extraction of (source, scope, period) from scratch: in one transaction, deletes its
    /// staged records and sets its checkpoint to no cursor, not complete, 0 pages, owned by
    /// `run_id`.
    pub async fn restart_extraction(
        &self,
        source: &SourceName,
        scope: &str,
        period: Period,
        run_id: i64,
    ) -> anyhow::Result<()> {
        let what = || format!("restart_extraction of ({source}, {scope}, {period})");
        with_backend!(self, |pool, D| {
            let mut tx = D::begin(pool).await.with_context(what)?;
            sqlx::query(
                "DELETE FROM staged_records WHERE source = $1 AND scope = $2 AND period = $3",
            )
            .bind(source.as_str())
            .bind(scope)
            .bind(period.to_string())
            .execute(&mut *tx)
            .await
            .with_context(|| format!("{}: deleting staged_records", what()))?;
            sqlx::query(
                "INSERT INTO checkpoints \
                 (source, scope, period, next_cursor, complete, pages, records, run_id, updated_at) \
                 VALUES ($1, $2, $3, NULL, $4, 0, 0, $5, $6) \
                 ON CONFLICT (source, scope, period) DO UPDATE SET \
                 next_cursor = NULL, complete = excluded.complete, pages = 0, records = 0, \
                 run_id = excluded.run_id, updated_at = excluded.updated_at",
            )
            .bind(source.as_str())
            .bind(scope)
            .bind(period.to_string())
            .bind(false)
            .bind(run_id)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await
            .with_context(|| format!("{}: resetting checkpoints", what()))?;
            tx.commit()
                .await
                .with_context(|| format!("{}: committing", what()))
        })
    }

    /// Stages one page and moves the checkpoint past it, in ONE transaction: upserts the
    /// records (one multi-row statement per batch; a `record_key` already staged for the same
    /// source, scope and period is replaced, so it counts once), then sets the cursor to
    /// `next_cursor`, `complete` to `next_cursor.is_none()`, and adds to pages and records.
    pub async fn stage_page(
        &self,
        source: &SourceName,
        scope: &str,
        period: Period,
        run_id: i64,
        records: &[StagedRecord],
        next_cursor: Option<&str>,
    ) -> anyhow::Result<()> {
        let what = || format!("stage_page of ({source}, {scope}, {period})");
        let unique = last_of_each_key(records);
        let received = i64::try_from(records.len()).with_context(what)?;
        let period_text = period.to_string();
        with_backend!(self, |pool, D| {
            let mut tx = D::begin(pool).await.with_context(what)?;
            for batch in unique.chunks(ROWS_PER_INSERT) {
                let mut insert = QueryBuilder::new(
                    "INSERT INTO staged_records (source, scope, period, record_key, \
                     customer_key, item, quantity, payload, run_id) ",
                );
                insert.push_values(batch, |mut row, record| {
                    row.push_bind(source.as_str())
                        .push_bind(scope)
                        .push_bind(period_text.as_str())
                        .push_bind(record.record_key.as_str())
                        .push_bind(record.customer_key.as_str())
                        .push_bind(record.item.as_str())
                        .push_bind(D::dec(record.quantity))
                        .push_bind(Json(&record.payload))
                        .push_bind(run_id);
                });
                insert.push(
                    " ON CONFLICT (source, scope, period, record_key) DO UPDATE SET \
                     customer_key = excluded.customer_key, item = excluded.item, \
                     quantity = excluded.quantity, payload = excluded.payload, \
                     run_id = excluded.run_id",
                );
                insert
                    .build()
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("{}: upserting staged_records", what()))?;
            }
            sqlx::query(
                "INSERT INTO checkpoints \
                 (source, scope, period, next_cursor, complete, pages, records, run_id, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8) \
                 ON CONFLICT (source, scope, period) DO UPDATE SET \
                 next_cursor = excluded.next_cursor, complete = excluded.complete, \
                 pages = checkpoints.pages + 1, records = checkpoints.records + excluded.records, \
                 run_id = excluded.run_id, updated_at = excluded.updated_at",
            )
            .bind(source.as_str())
            .bind(scope)
            .bind(period_text.as_str())
            .bind(next_cursor)
            .bind(next_cursor.is_none())
            .bind(received)
            .bind(run_id)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await
            .with_context(|| format!("{}: moving the checkpoint", what()))?;
            tx.commit()
                .await
                .with_context(|| format!("{}: committing", what()))
        })
    }

    /// Staged records of `source` and `period` (all scopes) with id greater than `after_id`,
    /// ordered by id, at most `limit`: read page by page so memory stays flat.
    pub async fn staged_page(
        &self,
        source: &SourceName,
        period: Period,
        after_id: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<(i64, StagedRecord)>> {
        with_backend!(self, |pool, D| {
            let found = sqlx::query(
                "SELECT id, record_key, customer_key, item, quantity, payload \
                 FROM staged_records WHERE source = $1 AND period = $2 AND id > $3 \
                 ORDER BY id LIMIT $4",
            )
            .bind(source.as_str())
            .bind(period.to_string())
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .with_context(|| {
                format!("staged_page: reading staged_records of ({source}, {period}) after id {after_id}")
            })?;
            found.iter().map(rows::staged).collect()
        })
    }

    // ---- ledger ---------------------------------------------------------------------------

    /// Every revision of the period's lines (of one source, if given), ordered by line key
    /// then revision.
    pub async fn ledger_lines(
        &self,
        period: Period,
        source: Option<&SourceName>,
    ) -> anyhow::Result<Vec<LedgerLine>> {
        with_backend!(self, |pool, D| {
            let mut select = QueryBuilder::new(format!(
                "SELECT {LINE_COLUMNS} FROM ledger_lines WHERE period = "
            ));
            select.push_bind(period.to_string());
            if let Some(source) = source {
                select.push(" AND source = ").push_bind(source.as_str());
            }
            select.push(" ORDER BY line_key, revision");
            let found = select
                .build()
                .fetch_all(pool)
                .await
                .with_context(|| format!("ledger_lines: reading ledger_lines of {period}"))?;
            found.iter().map(rows::line).collect()
        })
    }

    /// Applies a reconcile plan in ONE transaction, batched: inserts, in-place updates and
    /// deletes of revisions not yet sent (an update or delete of a revision whose status is
    /// `pushing` or `pushed` is refused and rolls everything back), and replaces the
    /// exceptions of (period, source) for every source in `sources` with `exceptions`.
    ///
    /// Deletes go first, then updates, then inserts, so that a plan may delete a draft and insert
    /// a revision with the same key. Every exception must belong to `period` and to one of
    /// `sources` (else it would never be replaced and pile up): a plan that breaks this, or that
    /// writes a revision as `pushing` or `pushed`, is refused before anything is written.
    pub async fn apply_plan(
        &self,
        run_id: i64,
        period: Period,
        sources: &[SourceName],
        changes: &[LedgerChange],
        exceptions: &[RunException],
    ) -> anyhow::Result<()> {
        let plan = PlanRows::new(period, sources, changes, exceptions)?;
        let now = Utc::now();
        let period_text = period.to_string();
        with_backend!(self, |pool, D| {
            let mut tx = D::begin(pool)
                .await
                .with_context(|| format!("apply_plan for {period}: beginning the transaction"))?;

            for &id in &plan.deletes {
                let done = sqlx::query(
                    "DELETE FROM ledger_lines WHERE id = $1 AND status IN ('draft', 'approved')",
                )
                .bind(id)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("apply_plan: deleting ledger revision {id}"))?
                .rows_affected();
                if done == 0 {
                    let state = describe_revision!(&mut *tx, id);
                    bail!(
                        "apply_plan: refused to delete ledger revision {id} ({state}): only a \
                         draft or approved revision may be deleted; one the billing system may \
                         hold gets an adjustment instead. Nothing of the plan was written."
                    );
                }
            }

            for (id, row) in &plan.updates {
                let values = row.values;
                let done = sqlx::query(
                    "UPDATE ledger_lines SET quantity = $4, amount = $5, rate = $6, \
                     currency = $7, total_quantity = $8, total_amount = $9, price_ref = $10, \
                     trace = $11, evidence_count = $12, evidence_hash = $13, sink = $14, \
                     status = $15, run_id = $16, updated_at = $17, approved_by = $18, \
                     approved_at = $19, approval_note = $20 \
                     WHERE id = $1 AND line_key = $2 AND revision = $3 \
                     AND status IN ('draft', 'approved')",
                )
                .bind(*id)
                .bind(row.line_key.as_str())
                .bind(values.revision)
                .bind(D::dec(values.quantity))
                .bind(D::dec(values.amount))
                .bind(D::dec(values.rate))
                .bind(values.currency.code())
                .bind(D::dec(values.total_quantity))
                .bind(D::dec(values.total_amount))
                .bind(values.price_ref.as_str())
                .bind(Json(&values.trace))
                .bind(row.evidence_count)
                .bind(values.evidence.hash.as_str())
                .bind(values.sink.as_str())
                .bind(values.status.as_str())
                .bind(run_id)
                .bind(now)
                .bind(values.approval.as_ref().map(|a| a.by.as_str()))
                .bind(values.approval.as_ref().map(|a| a.at))
                .bind(values.approval.as_ref().and_then(|a| a.note.as_deref()))
                .execute(&mut *tx)
                .await
                .with_context(|| format!("apply_plan: updating ledger revision {id}"))?
                .rows_affected();
                if done == 0 {
                    let state = describe_revision!(&mut *tx, *id);
                    bail!(
                        "apply_plan: refused to update ledger revision {id} ({state}) as revision \
                         {} of {}: only a draft or approved revision of the same line may be \
                         updated in place; one the billing system may hold gets an adjustment \
                         instead. Nothing of the plan was written.",
                        values.revision,
                        row.line_key
                    );
                }
            }

            for batch in plan.inserts.chunks(ROWS_PER_INSERT) {
                let mut insert = QueryBuilder::new(
                    "INSERT INTO ledger_lines (line_key, period, billing_account, license_type, \
                     source, revision, idempotency_key, quantity, amount, rate, currency, \
                     total_quantity, total_amount, price_ref, trace, evidence_count, \
                     evidence_hash, sink, status, run_id, created_at, updated_at, approved_by, \
                     approved_at, approval_note) ",
                );
                insert.push_values(batch, |mut b, row| {
                    let values = row.values;
                    b.push_bind(row.line_key.as_str())
                        .push_bind(values.key.period.to_string())
                        .push_bind(values.key.billing_account.as_str())
                        .push_bind(values.key.license_type.as_str())
                        .push_bind(values.key.source.as_str())
                        .push_bind(values.revision)
                        .push_bind(row.idempotency_key.as_str())
                        .push_bind(D::dec(values.quantity))
                        .push_bind(D::dec(values.amount))
                        .push_bind(D::dec(values.rate))
                        .push_bind(values.currency.code())
                        .push_bind(D::dec(values.total_quantity))
                        .push_bind(D::dec(values.total_amount))
                        .push_bind(values.price_ref.as_str())
                        .push_bind(Json(&values.trace))
                        .push_bind(row.evidence_count)
                        .push_bind(values.evidence.hash.as_str())
                        .push_bind(values.sink.as_str())
                        .push_bind(values.status.as_str())
                        .push_bind(run_id)
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(values.approval.as_ref().map(|a| a.by.as_str()))
                        .push_bind(values.approval.as_ref().map(|a| a.at))
                        .push_bind(values.approval.as_ref().and_then(|a| a.note.as_deref()));
                });
                insert.build().execute(&mut *tx).await.with_context(|| {
                    format!(
                        "apply_plan: inserting {} ledger revisions (first: {})",
                        batch.len(),
                        batch[0].idempotency_key
                    )
                })?;
            }

            if !sources.is_empty() {
                let mut delete = QueryBuilder::new("DELETE FROM exceptions WHERE period = ");
                delete
                    .push_bind(period_text.as_str())
                    .push(" AND source IN (");
                let mut list = delete.separated(", ");
                for source in sources {
                    list.push_bind(source.as_str());
                }
                list.push_unseparated(")");
                delete
                    .build()
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("apply_plan: clearing exceptions of {period}"))?;
            }
            for batch in plan.exceptions.chunks(ROWS_PER_INSERT) {
                let mut insert = QueryBuilder::new(
                    "INSERT INTO exceptions (period, source, kind, customer_key, item, \
                     billing_account, license_type, quantity, record_count, message, run_id) ",
                );
                insert.push_values(batch, |mut b, (exception, record_count)| {
                    b.push_bind(period_text.as_str())
                        .push_bind(exception.source.as_str())
                        .push_bind(exception.kind.as_str())
                        .push_bind(exception.customer_key.as_str())
                        .push_bind(exception.item.as_str())
                        .push_bind(exception.billing_account.as_ref().map(|a| a.as_str()))
                        .push_bind(exception.license_type.as_ref().map(|l| l.as_str()))
                        .push_bind(D::dec(exception.quantity))
                        .push_bind(*record_count)
                        .push_bind(exception.message.as_str())
                        .push_bind(run_id);
                });
                insert
                    .build()
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("apply_plan: inserting exceptions of {period}"))?;
            }

            tx.commit()
                .await
                .with_context(|| format!("apply_plan for {period}: committing"))
        })
    }

    /// Revisions of the period that are `approved` or `pushing`, within `scope`, ordered by line
    /// key then revision: what a push must send or resolve. An empty list of sources or of ids
    /// selects nothing.
    pub async fn lines_to_push(
        &self,
        period: Period,
        scope: &PushScope<'_>,
    ) -> anyhow::Result<Vec<LedgerLine>> {
        if scope.sources.is_some_and(|sources| sources.is_empty())
            || scope.ids.is_some_and(|ids| ids.is_empty())
        {
            return Ok(Vec::new());
        }
        with_backend!(self, |pool, D| {
            let mut select = QueryBuilder::new(format!(
                "SELECT {LINE_COLUMNS} FROM ledger_lines WHERE status IN ('approved', 'pushing') \
                 AND period = "
            ));
            select.push_bind(period.to_string());
            if let Some(sources) = scope.sources {
                select.push(" AND source IN (");
                let mut list = select.separated(", ");
                for source in sources {
                    list.push_bind(source.as_str());
                }
                list.push_unseparated(")");
            }
            if let Some(customer) = scope.customer {
                select
                    .push(" AND billing_account = ")
                    .push_bind(customer.as_str());
            }
            if let Some(ids) = scope.ids {
                select.push(" AND id IN (");
                let mut list = select.separated(", ");
                for id in ids {
                    list.push_bind(*id);
                }
                list.push_unseparated(")");
            }
            select.push(" ORDER BY line_key, revision");
            let found = select
                .build()
                .fetch_all(pool)
                .await
                .with_context(|| format!("lines_to_push: reading ledger_lines of {period}"))?;
            found.iter().map(rows::line).collect()
        })
    }

    /// Phase one: `approved` → `pushing`, with the sink's marker. Fails if the revision is not
    /// `approved` any more (someone else got there first).
    pub async fn mark_pushing(&self, id: i64, marker: Option<&str>) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            let done = sqlx::query(
                "UPDATE ledger_lines SET status = 'pushing', push_marker = $2, updated_at = $3 \
                 WHERE id = $1 AND status = 'approved'",
            )
            .bind(id)
            .bind(marker)
            .bind(Utc::now())
            .execute(pool)
            .await
            .with_context(|| format!("mark_pushing: updating ledger revision {id}"))?
            .rows_affected();
            if done == 0 {
                let state = describe_revision!(pool, id);
                bail!(
                    "mark_pushing: ledger revision {id} is not approved ({state}); \
                     someone else got there first, or it was never approved"
                );
            }
            Ok(())
        })
    }

    /// Phase two: `pushing` → `pushed`, with the billing system's id and `pushed_at`; clears
    /// `last_error`.
    pub async fn mark_pushed(&self, id: i64, external_id: &str) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            let done = sqlx::query(
                "UPDATE ledger_lines SET status = 'pushed', external_id = $2, pushed_at = $3, \
                 updated_at = $3, last_error = NULL WHERE id = $1 AND status = 'pushing'",
            )
            .bind(id)
            .bind(external_id)
            .bind(Utc::now())
            .execute(pool)
            .await
            .with_context(|| format!("mark_pushed: updating ledger revision {id}"))?
            .rows_affected();
            if done == 0 {
                let state = describe_revision!(pool, id);
                bail!(
                    "mark_pushed: ledger revision {id} is not pushing ({state}); only a revision \
                     marked pushing (phase one) can be marked pushed"
                );
            }
            Ok(())
        })
    }

    /// `pushing` → `approved` once the billing system was read and surely does not hold the
    /// revision, so that it is sent again through phase one. Clears the marker of the push
    /// that did not happen.
    pub async fn reset_to_approved(&self, id: i64) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            let done = sqlx::query(
                "UPDATE ledger_lines SET status = 'approved', push_marker = NULL, updated_at = $2 \
                 WHERE id = $1 AND status = 'pushing'",
            )
            .bind(id)
            .bind(Utc::now())
            .execute(pool)
            .await
            .with_context(|| format!("reset_to_approved: updating ledger revision {id}"))?
            .rows_affected();
            if done == 0 {
                let state = describe_revision!(pool, id);
                bail!(
                    "reset_to_approved: ledger revision {id} is not pushing ({state}); only a \
                     revision left in phase one can be reset"
                );
            }
            Ok(())
        })
    }

    /// Keeps the last push error on the revision. Its status and `updated_at` are unchanged:
    /// `updated_at` of a `pushing` revision is when it was sent, which its settle time counts
    /// from.
    pub async fn record_push_error(&self, id: i64, error: &str) -> anyhow::Result<()> {
        let done = with_backend!(self, |pool, D| {
            sqlx::query("UPDATE ledger_lines SET last_error = $2 WHERE id = $1")
                .bind(id)
                .bind(error)
                .execute(pool)
                .await
                .with_context(|| format!("record_push_error: updating ledger revision {id}"))?
                .rows_affected()
        });
        ensure!(
            done == 1,
            "record_push_error: there is no ledger revision {id}"
        );
        Ok(())
    }

    /// `draft` → `approved` for the period (and one billing account, if given), recording who,
    /// when and why; returns the ids of exactly the revisions this call approved.
    pub async fn approve(
        &self,
        period: Period,
        customer: Option<&BillingAccount>,
        by: &str,
        note: Option<&str>,
    ) -> anyhow::Result<Vec<i64>> {
        let now = Utc::now();
        with_backend!(self, |pool, D| {
            let mut update =
                QueryBuilder::new("UPDATE ledger_lines SET status = 'approved', updated_at = ");
            update
                .push_bind(now)
                .push(", approved_at = ")
                .push_bind(now)
                .push(", approved_by = ")
                .push_bind(by)
                .push(", approval_note = ")
                .push_bind(note)
                .push(" WHERE status = 'draft' AND period = ")
                .push_bind(period.to_string());
            if let Some(customer) = customer {
                update
                    .push(" AND billing_account = ")
                    .push_bind(customer.as_str());
            }
            update.push(" RETURNING id");
            let mut ids: Vec<i64> = update
                .build_query_scalar()
                .fetch_all(pool)
                .await
                .with_context(|| format!("approve: approving drafts of {period}"))?;
            ids.sort_unstable();
            Ok(ids)
        })
    }

    /// How many draft revisions of the period (of some sources, if given) wait for approval.
    pub async fn count_drafts(
        &self,
        period: Period,
        sources: Option<&[SourceName]>,
    ) -> anyhow::Result<u64> {
        let lines = self.ledger_lines(period, None).await?;
        Ok(lines
            .iter()
            .filter(|l| l.status == crate::domain::LineStatus::Draft)
            .filter(|l| sources.is_none_or(|s| s.contains(&l.key.source)))
            .count() as u64)
    }

    /// For every line pushed in a period before `period`: the total it was pushed with in the
    /// latest such period (what approval rules compare with).
    pub async fn last_pushed_amounts(
        &self,
        period: Period,
    ) -> anyhow::Result<HashMap<LineIdentity, Decimal>> {
        let found: Vec<(String, String, String, String, Decimal)> =
            with_backend!(self, |pool, D| {
                let rows = sqlx::query(
                "SELECT period, billing_account, license_type, source, amount FROM ledger_lines \
                 WHERE period < $1 AND status = 'pushed' ORDER BY period",
            )
            .bind(period.to_string())
            .fetch_all(pool)
            .await
            .with_context(|| format!("last_pushed_amounts: reading pushed lines before {period}"))?;
                rows.iter()
                    .map(|row| {
                        Ok((
                            row.text("period")?,
                            row.text("billing_account")?,
                            row.text("license_type")?,
                            row.text("source")?,
                            row.decimal("amount")?,
                        ))
                    })
                    .collect::<anyhow::Result<_>>()?
            });
        // Ordered by period: a later period replaces an earlier one's total.
        let mut latest: HashMap<LineIdentity, (String, Decimal)> = HashMap::new();
        for (period, account, license, source, amount) in found {
            let identity = (
                BillingAccount::new(account),
                LicenseType::new(license),
                SourceName::new(source),
            );
            let entry = latest
                .entry(identity)
                .or_insert_with(|| (period.clone(), Decimal::ZERO));
            if entry.0 != period {
                *entry = (period, Decimal::ZERO);
            }
            entry.1 = entry
                .1
                .checked_add(amount)
                .context("last_pushed_amounts: a line's total overflows")?;
        }
        Ok(latest.into_iter().map(|(k, (_, v))| (k, v)).collect())
    }

    /// The period's current exceptions (of every source), ordered by source, kind, customer.
    pub async fn exceptions(&self, period: Period) -> anyhow::Result<Vec<RunException>> {
        with_backend!(self, |pool, D| {
            let found = sqlx::query(&format!(
                "SELECT {EXCEPTION_COLUMNS} FROM exceptions WHERE period = $1 \
                 ORDER BY source, kind, customer_key, item, id"
            ))
            .bind(period.to_string())
            .fetch_all(pool)
            .await
            .with_context(|| format!("exceptions: reading exceptions of {period}"))?;
            found.iter().map(rows::exception).collect()
        })
    }

    // ---- the writer lease -------------------------------------------------------------------

    /// Takes the writer lease for `command`, waiting up to `wait` for another holder to finish.
    /// Once held, runs left `running` by a process that died are marked `abandoned` (only the
    /// lease holder runs, so any other `running` run is dead). [`Busy`] names the holder when
    /// the wait ends first.
    pub async fn acquire_writer(
        &self,
        command: &str,
        wait: Duration,
    ) -> anyhow::Result<WriterLease> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(lease) = self.try_writer_lease().await? {
                self.record_lease_holder(command).await?;
                let abandoned = self.abandon_dead_runs().await?;
                for run in abandoned {
                    tracing::warn!(
                        run_id = run,
                        "a run whose process died was still marked running; marked abandoned"
                    );
                }
                return Ok(lease);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Busy {
                    holder: self.current_lease_holder().await,
                    waited: wait,
                }
                .into());
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(250))).await;
        }
    }

    /// The lease without waiting or bookkeeping; `None` when another holder has it (another
    /// process, or another holder in this one).
    pub async fn try_writer_lease(&self) -> anyhow::Result<Option<WriterLease>> {
        match &self.backend {
            Backend::Postgres(pool) => WriterLease::try_postgres(pool).await,
            Backend::Sqlite { path, .. } => WriterLease::try_sqlite(path),
        }
    }

    /// Notes the run the lease holder is doing, for a writer that finds the lease taken.
    pub async fn record_lease_run(&self, run_id: i64) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            sqlx::query("UPDATE writer_lease SET run_id = $1 WHERE id = 1")
                .bind(run_id)
                .execute(pool)
                .await
                .context("record_lease_run: updating writer_lease")?;
            Ok(())
        })
    }

    async fn record_lease_holder(&self, command: &str) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            sqlx::query(
                "INSERT INTO writer_lease (id, command, run_id, host, pid, since) \
                 VALUES (1, $1, NULL, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET \
                 command = excluded.command, run_id = NULL, host = excluded.host, \
                 pid = excluded.pid, since = excluded.since",
            )
            .bind(command)
            .bind(this_host())
            .bind(i64::from(std::process::id()))
            .bind(Utc::now())
            .execute(pool)
            .await
            .context("record_lease_holder: writing writer_lease")?;
            Ok(())
        })
    }

    /// Who holds (or last held) the writer lease.
    pub async fn lease_holder(&self) -> anyhow::Result<Option<LeaseHolder>> {
        with_backend!(self, |pool, D| {
            let row = sqlx::query(
                "SELECT command, run_id, host, pid, since FROM writer_lease WHERE id = 1",
            )
            .fetch_optional(pool)
            .await
            .context("lease_holder: reading writer_lease")?;
            row.map(|row| {
                Ok(LeaseHolder {
                    command: row.text("command")?,
                    run_id: row.opt_int("run_id")?,
                    host: row.text("host")?,
                    pid: row.int("pid")?,
                    since: row.time("since")?,
                })
            })
            .transpose()
        })
    }

    /// The holder of a lease found taken. It writes its row just after taking the lock, so a
    /// row that is missing, or left by a process of this host that is gone, is read again for a
    /// moment; `None` if it never shows.
    async fn current_lease_holder(&self) -> Option<LeaseHolder> {
        let host = this_host();
        for _ in 0..20 {
            if let Ok(Some(holder)) = self.lease_holder().await {
                let gone = holder.host == host
                    && std::path::Path::new("/proc/self").exists()
                    && !std::path::Path::new(&format!("/proc/{}", holder.pid)).exists();
                if !gone {
                    return Some(holder);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Marks every run still `running` as `abandoned`; returns their ids. Call only while
    /// holding the writer lease.
    async fn abandon_dead_runs(&self) -> anyhow::Result<Vec<i64>> {
        with_backend!(self, |pool, D| {
            sqlx::query_scalar(
                "UPDATE runs SET status = 'abandoned', finished_at = $1 \
                 WHERE status = 'running' RETURNING id",
            )
            .bind(Utc::now())
            .fetch_all(pool)
            .await
            .context("abandon_dead_runs: updating runs")
        })
    }
}

/// Which revisions a push takes.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushScope<'a> {
    /// Only these sources' lines (`None`: every source).
    pub sources: Option<&'a [SourceName]>,
    /// Only this billing account's lines.
    pub customer: Option<&'a BillingAccount>,
    /// Only these revisions (what an approval just approved).
    pub ids: Option<&'a [i64]>,
}

/// Who holds the writer lease, as the holder recorded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseHolder {
    pub command: String,
    pub run_id: Option<i64>,
    pub host: String,
    pub pid: i64,
    pub since: DateTime<Utc>,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`tally {}`", self.command)?;
        if let Some(run) = self.run_id {
            write!(f, " (run {run})")?;
        }
        write!(
            f,
            " on host {}, pid {}, since {}",
            self.host,
            self.pid,
            self.since.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// Another process writes the ledger (exit code 4).
#[derive(Debug, thiserror::Error)]
pub struct Busy {
    pub holder: Option<LeaseHolder>,
    pub waited: Duration,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.holder {
            Some(holder) => write!(f, "another tally is writing the ledger: {holder}")?,
            None => write!(f, "another tally is writing the ledger")?,
        }
        write!(
            f,
            "; waited {} s. Try again when it has finished, or wait for it with --wait SECS",
            self.waited.as_secs()
        )
    }
}

/// A page's records with each `record_key` once (its last occurrence wins, as a later listing
/// is the fresher one). Postgres refuses an upsert that touches the same row twice.
fn last_of_each_key(records: &[StagedRecord]) -> Vec<&StagedRecord> {
    let last: HashMap<&str, usize> = records
        .iter()
        .enumerate()
        .map(|(index, record)| (record.record_key.as_str(), index))
        .collect();
    records
        .iter()
        .enumerate()
        .filter(|(index, record)| last.get(record.record_key.as_str()) == Some(index))
        .map(|(_, record)| record)
        .collect()
}

/// A revision with the values computed from it that may fail, computed before the transaction.
struct RevisionRow<'a> {
    values: &'a NewRevision,
    line_key: String,
    idempotency_key: String,
    evidence_count: i64,
}

impl<'a> RevisionRow<'a> {
    fn new(values: &'a NewRevision) -> anyhow::Result<Self> {
        let line_key = values.key.to_string();
        ensure!(
            !values.status.is_sent(),
            "apply_plan: revision {} of {line_key} is planned as {}; the ledger writes only draft \
             or approved revisions (pushing and pushed are set by the push)",
            values.revision,
            values.status
        );
        Ok(RevisionRow {
            values,
            idempotency_key: values.key.idempotency_key(values.revision),
            evidence_count: i64::try_from(values.evidence.record_count).with_context(|| {
                format!("apply_plan: evidence count of {line_key} is too large")
            })?,
            line_key,
        })
    }
}

/// A reconcile plan checked and sorted into what each statement writes.
struct PlanRows<'a> {
    deletes: Vec<i64>,
    updates: Vec<(i64, RevisionRow<'a>)>,
    inserts: Vec<RevisionRow<'a>>,
    /// With the record count as stored (i64).
    exceptions: Vec<(&'a RunException, i64)>,
}

impl<'a> PlanRows<'a> {
    fn new(
        period: Period,
        sources: &[SourceName],
        changes: &'a [LedgerChange],
        exceptions: &'a [RunException],
    ) -> anyhow::Result<Self> {
        let mut plan = PlanRows {
            deletes: Vec::new(),
            updates: Vec::new(),
            inserts: Vec::new(),
            exceptions: Vec::with_capacity(exceptions.len()),
        };
        for change in changes {
            match change {
                LedgerChange::Insert(values) => plan.inserts.push(RevisionRow::new(values)?),
                LedgerChange::Update { id, values } => {
                    plan.updates.push((*id, RevisionRow::new(values)?))
                }
                LedgerChange::Delete { id } => plan.deletes.push(*id),
            }
        }
        for row in plan
            .inserts
            .iter()
            .chain(plan.updates.iter().map(|(_, row)| row))
        {
            ensure!(
                row.values.key.period == period,
                "apply_plan: revision {} of {} is not of the period {period} being applied",
                row.values.revision,
                row.line_key
            );
        }
        for exception in exceptions {
            if exception.period != period || !sources.contains(&exception.source) {
                return Err(anyhow!(
                    "apply_plan: an exception of ({}, {}) is outside the (period, sources) being \
                     replaced ({period}, [{}]); it would never be replaced by a later run",
                    exception.period,
                    exception.source,
                    sources
                        .iter()
                        .map(SourceName::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let record_count = i64::try_from(exception.record_count).with_context(|| {
                format!(
                    "apply_plan: record count of an exception of {} is too large",
                    exception.source
                )
            })?;
            plan.exceptions.push((exception, record_count));
        }
        Ok(plan)
    }
}
