//! What a push reads from the ledger: the queue of revisions to send or resolve, and the
//! revisions themselves a few hundred at a time.
//!
//! The queue is ids and billing systems only, in the order the push takes them, so that a push
//! of a period's ten thousand lines does not hold ten thousand revisions (each with its
//! calculation trace and evidence) on top of whatever the run that called it holds: a push
//! reads the revisions of the next chunk of ids when it gets to them (docs/PERFORMANCE.md).

use super::dialect::Columns;
use super::{Backend, LINE_COLUMNS, Store, dialect, rows};
use crate::domain::{BillingAccount, LedgerLine, Period, SourceName};
use anyhow::Context;
use sqlx::QueryBuilder;
use std::collections::HashMap;

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

impl PushScope<'_> {
    /// An empty list of sources or of ids selects nothing (SQL has no empty `IN ()`).
    fn selects_nothing(&self) -> bool {
        self.sources.is_some_and(|sources| sources.is_empty())
            || self.ids.is_some_and(|ids| ids.is_empty())
    }
}

/// One revision waiting in a push's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: i64,
    /// The billing system it goes to.
    pub sink: String,
}

/// `SELECT <columns> FROM ledger_lines WHERE <the revisions a push takes in scope>`, for either
/// backend (a macro, not a function: the builder's bind types differ by backend).
macro_rules! push_select {
    ($columns:expr, $period:expr, $scope:expr) => {{
        let scope: &PushScope<'_> = $scope;
        let mut select = QueryBuilder::new(format!(
            "SELECT {} FROM ledger_lines WHERE status IN ('approved', 'pushing') AND period = ",
            $columns
        ));
        select.push_bind($period.to_string());
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
        select
    }};
}

impl Store {
    /// Revisions of the period that are `approved` or `pushing`, within `scope`, ordered by line
    /// key then revision: what a push must send or resolve. An empty list of sources or of ids
    /// selects nothing.
    pub async fn lines_to_push(
        &self,
        period: Period,
        scope: &PushScope<'_>,
    ) -> anyhow::Result<Vec<LedgerLine>> {
        if scope.selects_nothing() {
            return Ok(Vec::new());
        }
        with_backend!(self, |pool, D| {
            let mut select = push_select!(LINE_COLUMNS, period, scope);
            select.push(" ORDER BY line_key, revision");
            let what = format!("lines_to_push: reading ledger_lines of {period}");
            rows::lines(select.build().fetch(pool), &what).await
        })
    }

    /// The revisions [`Store::lines_to_push`] selects, as ids and billing systems only, in the
    /// order a push takes them: every `pushing` revision first (it is resolved before anything
    /// new is sent), then by line key and revision.
    pub async fn push_queue(
        &self,
        period: Period,
        scope: &PushScope<'_>,
    ) -> anyhow::Result<Vec<Queued>> {
        if scope.selects_nothing() {
            return Ok(Vec::new());
        }
        with_backend!(self, |pool, D| {
            let mut select = push_select!("id, sink", period, scope);
            select.push(
                " ORDER BY CASE WHEN status = 'pushing' THEN 0 ELSE 1 END, line_key, revision",
            );
            let rows = select
                .build()
                .fetch_all(pool)
                .await
                .with_context(|| format!("push_queue: reading ledger_lines of {period}"))?;
            rows.iter()
                .map(|row| {
                    Ok(Queued {
                        id: row.int("id")?,
                        sink: row.text("sink")?,
                    })
                })
                .collect()
        })
    }

    /// The revisions of `ids` (of the period) still `approved` or `pushing`, in the order of
    /// `ids`: the next chunk of a push's queue. A revision that left those states since the
    /// queue was read is not returned.
    pub async fn queued_lines(
        &self,
        period: Period,
        ids: &[i64],
    ) -> anyhow::Result<Vec<LedgerLine>> {
        let scope = PushScope {
            ids: Some(ids),
            ..PushScope::default()
        };
        let mut lines = self.lines_to_push(period, &scope).await?;
        let position: HashMap<i64, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        lines.sort_by_key(|line| position.get(&line.id).copied().unwrap_or(usize::MAX));
        Ok(lines)
    }
}
