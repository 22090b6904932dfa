//! The few places where Postgres and SQLite differ for tally's queries, behind the same names, so
//! that each store method is written once and compiled for both (see `with_backend!`).
//!
//! The differences: how a `Decimal` is stored (NUMERIC in Postgres, its exact string in SQLite),
//! how a writing transaction starts (SQLite takes the write lock up front), and what a
//! migration needs around it (SQLite rebuilds a table with foreign keys off).

use anyhow::Context;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Row, Sqlite, SqlitePool, Transaction};
use std::str::FromStr;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("src/store/migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("src/store/migrations/sqlite");

/// Postgres: decimals go in and out as NUMERIC.
pub(super) struct Pg;

impl Pg {
    /// The Postgres schema (`migrations/postgres`).
    pub(super) fn migrator() -> &'static Migrator {
        &POSTGRES_MIGRATIONS
    }

    /// A decimal as bound to a NUMERIC column (scale kept: 12.50 stays 12.50).
    pub(super) fn dec(value: Decimal) -> Decimal {
        value
    }

    /// A transaction for writing. Postgres locks rows as statements touch them.
    pub(super) async fn begin(pool: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
        pool.begin().await
    }

    /// Postgres changes constraints in place: nothing to set around a migration.
    pub(super) async fn foreign_keys(_: &mut sqlx::PgConnection, _on: bool) -> sqlx::Result<()> {
        Ok(())
    }
}

/// SQLite: decimals go in and out as their exact string, never as REAL.
pub(super) struct Lite;

impl Lite {
    /// The SQLite schema (`migrations/sqlite`): the same tables, SQLite types.
    pub(super) fn migrator() -> &'static Migrator {
        &SQLITE_MIGRATIONS
    }

    /// A decimal as bound to a TEXT column: its exact string, e.g. "12.50".
    pub(super) fn dec(value: Decimal) -> String {
        value.to_string()
    }

    /// A transaction for writing. `BEGIN IMMEDIATE` takes the write lock at once, so that a
    /// transaction that reads before it writes cannot fail with SQLITE_BUSY halfway through when
    /// another connection wrote in between; waiting for the lock is bounded by the busy timeout.
    pub(super) async fn begin(pool: &SqlitePool) -> sqlx::Result<Transaction<'static, Sqlite>> {
        pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// Foreign keys off (or back on) on the migration's connection. SQLite changes a table's
    /// constraints only by rebuilding it (copy, drop, rename), which its documentation says to do
    /// with foreign keys off; the pragma cannot change inside the migration's transaction, so it
    /// is set around it.
    pub(super) async fn foreign_keys(
        conn: &mut sqlx::SqliteConnection,
        on: bool,
    ) -> sqlx::Result<()> {
        use sqlx::Executor;
        conn.execute(if on {
            "PRAGMA foreign_keys = ON"
        } else {
            "PRAGMA foreign_keys = OFF"
        })
        .await
        .map(|_| ())
    }
}

/// Typed column access with the column's name in every error, for both row types.
pub(super) trait Columns {
    fn text(&self, col: &str) -> anyhow::Result<String>;
    fn opt_text(&self, col: &str) -> anyhow::Result<Option<String>>;
    fn int(&self, col: &str) -> anyhow::Result<i64>;
    fn opt_int(&self, col: &str) -> anyhow::Result<Option<i64>>;
    fn int32(&self, col: &str) -> anyhow::Result<i32>;
    fn flag(&self, col: &str) -> anyhow::Result<bool>;
    fn decimal(&self, col: &str) -> anyhow::Result<Decimal>;
    fn time(&self, col: &str) -> anyhow::Result<DateTime<Utc>>;
    fn opt_time(&self, col: &str) -> anyhow::Result<Option<DateTime<Utc>>>;
    fn opt_json(&self, col: &str) -> anyhow::Result<Option<serde_json::Value>>;
}

/// Implements [`Columns`] for one row type; only the decimal column differs.
macro_rules! impl_columns {
    ($row:ty, $decimal:expr) => {
        impl Columns for $row {
            fn text(&self, col: &str) -> anyhow::Result<String> {
                self.try_get(col)
                    .with_context(|| format!("reading text column {col}"))
            }
            fn opt_text(&self, col: &str) -> anyhow::Result<Option<String>> {
                self.try_get(col)
                    .with_context(|| format!("reading text column {col}"))
            }
            fn int(&self, col: &str) -> anyhow::Result<i64> {
                self.try_get(col)
                    .with_context(|| format!("reading integer column {col}"))
            }
            fn opt_int(&self, col: &str) -> anyhow::Result<Option<i64>> {
                self.try_get(col)
                    .with_context(|| format!("reading integer column {col}"))
            }
            fn int32(&self, col: &str) -> anyhow::Result<i32> {
                self.try_get(col)
                    .with_context(|| format!("reading integer column {col}"))
            }
            fn flag(&self, col: &str) -> anyhow::Result<bool> {
                self.try_get(col)
                    .with_context(|| format!("reading boolean column {col}"))
            }
            fn decimal(&self, col: &str) -> anyhow::Result<Decimal> {
                let read: fn(&Self, &str) -> anyhow::Result<Decimal> = $decimal;
                read(self, col).with_context(|| format!("reading decimal column {col}"))
            }
            fn time(&self, col: &str) -> anyhow::Result<DateTime<Utc>> {
                self.try_get(col)
                    .with_context(|| format!("reading timestamp column {col}"))
            }
            fn opt_time(&self, col: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
                self.try_get(col)
                    .with_context(|| format!("reading timestamp column {col}"))
            }
            fn opt_json(&self, col: &str) -> anyhow::Result<Option<serde_json::Value>> {
                self.try_get::<Option<Json<serde_json::Value>>, _>(col)
                    .map(|json| json.map(|json| json.0))
                    .with_context(|| format!("reading JSON column {col}"))
            }
        }
    };
}

impl_columns!(PgRow, |row, col| Ok(row.try_get::<Decimal, _>(col)?));

impl_columns!(SqliteRow, |row, col| {
    let text: String = row.try_get(col)?;
    Decimal::from_str(&text).with_context(|| format!("{text:?} is not an exact decimal"))
});
