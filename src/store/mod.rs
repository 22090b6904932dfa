//! State: runs, checkpoints, staged records, the ledger and exceptions. All SQL of tally lives
//! under this folder: `runs`, `extraction`, `ledger`, `push_batch`, `lease`, `jobs` (the
//! daemon's ticks and closed months), `rounds` (workers sharing a night), `users` and `review`
//! (the review page's users, sessions and reads) hold the queries by concern, `migrations/` the
//! schema; this file opens and migrates the store.
//!
//! One interface, two databases: Postgres in production (`DATABASE_URL` or `[database] url`)
//! and an embedded SQLite file by default, so that a newcomer needs no server. Both run the
//! same store test suite (`tests/it/store.rs`).
//!
//! Each method is written once: `with_backend!` compiles its body for both pools, and the few
//! dialect differences (how a decimal is stored, how a write transaction starts) live in
//! `dialect`. Row-to-domain conversions are in `rows`; the writer lease's lock in `lock`.
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
pub use rounds::{Claim, LostUnit, RoundProgress, UnitRecord};

use crate::domain::{Period, RunStatus, RunSummary, Trigger};
use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrate;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
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
    /// Who asked for it (`--by`, or the login name); `None` for a scheduled run.
    pub requested_by: Option<String>,
    /// The `--customer` the run was limited to, if any.
    pub customer_filter: Option<String>,
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
    /// A complete extraction being read again ([`Store::begin_reread`]): the staged pages past
    /// the checkpoint are the earlier run's, to be compared, not yet this run's.
    pub rereading: bool,
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

mod apply;
mod extraction;
mod jobs;
mod lease;
mod ledger;
mod paces;
mod page_body;
mod push_batch;
mod push_list;
mod review;
mod rounds;
mod runs;
mod users;

pub use apply::PlanFeed;
pub use extraction::{PageToStage, StageAt};
pub use jobs::{ClosedPeriod, JobLastRun, JobTick, TickClaim};
pub use lease::{Busy, LeaseHolder};
pub use ledger::PastException;
pub use page_body::PageBody;
pub use push_list::{PushScope, Queued};
pub use runs::RunRequest;
pub use users::{LoginFailures, ReviewSession, ReviewUser, Role};

/// Rows per multi-row INSERT. The widest row (a ledger revision) binds 26 values, so SQLite's
/// 32,766 and Postgres' 65,535 bound parameters would allow 1,000; fewer, because a statement's
/// bound values and encoded message are held while it runs (5 MB at 1,000 revisions with their
/// traces), and past a few hundred rows a statement saves no time that counts.
const ROWS_PER_INSERT: usize = 250;

/// The columns a [`LedgerLine`] is read from (`rows::line`).
const LINE_COLUMNS: &str = "id, line_key, period, billing_account, license_type, source, \
     revision, idempotency_key, quantity, amount, rate, currency, total_quantity, total_amount, \
     price_ref, trace, evidence_count, evidence_hash, evidence_sample, sink, status, external_id, push_marker, \
     last_error, approved_by, approved_at, approval_note, run_id, created_at, updated_at, pushed_at";

/// [`LINE_COLUMNS`] as reconcile needs them (`Store::ledger_to_plan`): no evidence sample (two
/// evidences are compared by count and fingerprint) and no calculation trace of a revision
/// already sent (only an unsent revision's trace is compared with the line computed now).
/// Those two are most of a revision's memory, and a run plans a period's every revision. Nor
/// what only the push and the people reading the ledger use: the idempotency key (empty), the
/// billing system's id, the push marker and the last error (none), 1.5 MB of text at 10,000
/// lines.
const PLAN_COLUMNS: &str = "id, line_key, period, billing_account, license_type, source, \
     revision, '' AS idempotency_key, quantity, amount, rate, currency, total_quantity, \
     total_amount, price_ref, \
     CASE WHEN status IN ('pushing', 'pushed') THEN NULL ELSE trace END AS trace, \
     evidence_count, evidence_hash, NULL AS evidence_sample, sink, status, NULL AS external_id, \
     NULL AS push_marker, NULL AS last_error, approved_by, approved_at, approval_note, run_id, \
     created_at, updated_at, pushed_at";

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
}
