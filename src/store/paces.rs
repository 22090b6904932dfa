//! The pace of peers' unannounced rate limits, kept per round for its workers (`http::SharedPace`
//! is what they see of it): a row per (round, peer) with the least time between two request
//! starts and the start of the next. Taking a start moves it on by the pace in one statement, so
//! that workers taking starts at once get starts a pace apart, never the same one.
//!
//! Timed by the database's clock in epoch milliseconds, as leases are: workers on hosts whose
//! clocks differ keep one schedule. Postgres only, as rounds are.

use super::Store;
use anyhow::Context;
use std::time::Duration;

/// Now by the database's clock, in epoch milliseconds. `clock_timestamp()`, not `now()`: the
/// time of the statement, not of its transaction.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

impl Store {
    /// Takes the next start of a request to `peer` in `round`: how long from now the request
    /// waits (zero when its start has come). `None` while no worker of the round met the peer's
    /// limit.
    pub async fn take_pace_slot(
        &self,
        round: &str,
        peer: &str,
    ) -> anyhow::Result<Option<Duration>> {
        let pool = self.round_pool()?;
        let sql = format!(
            "UPDATE peer_paces SET next_start_ms = GREATEST(next_start_ms, {NOW_MS}) + pace_ms \
             WHERE round = $1 AND peer = $2 \
             RETURNING next_start_ms - pace_ms - {NOW_MS}"
        );
        let wait: Option<i64> = sqlx::query_scalar(&sql)
            .bind(round)
            .bind(peer)
            .fetch_optional(pool)
            .await
            .with_context(|| {
                format!("take_pace_slot: updating peer_paces of round {round:?}, peer {peer}")
            })?;
        Ok(wait.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
    }

    /// Records that a 429 of `peer` revealed `pace` between starts, its window reopening in
    /// `reopens_in`. Of what is recorded already and this, the slower pace and the later start
    /// are kept: a worker that learnt less never speeds up the others.
    pub async fn share_pace(
        &self,
        round: &str,
        peer: &str,
        pace: Duration,
        reopens_in: Duration,
    ) -> anyhow::Result<()> {
        let pool = self.round_pool()?;
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let sql = format!(
            "INSERT INTO peer_paces (round, peer, pace_ms, next_start_ms) \
             VALUES ($1, $2, $3, {NOW_MS} + $4) \
             ON CONFLICT (round, peer) DO UPDATE SET \
             pace_ms = GREATEST(peer_paces.pace_ms, excluded.pace_ms), \
             next_start_ms = GREATEST(peer_paces.next_start_ms, excluded.next_start_ms)"
        );
        sqlx::query(&sql)
            .bind(round)
            .bind(peer)
            .bind(millis(pace).max(1))
            // A year at most: the bound of any wait tally represents.
            .bind(millis(reopens_in).min(366 * 24 * 3_600_000))
            .execute(pool)
            .await
            .with_context(|| {
                format!("share_pace: writing peer_paces of round {round:?}, peer {peer}")
            })?;
        Ok(())
    }
}
