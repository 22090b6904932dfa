//! `tally check-config --reach` for the billable users API: signs in and reads page 1 of the
//! current month with one person per page, so that a wrong token, account or URL shows before
//! the night's run, at the cost of one small request.

use super::BillableUsers;
use crate::domain::Period;

impl BillableUsers {
    /// One signed-in read (page 1, `per_page=1`, of `period`); what it saw, or why it failed.
    pub async fn reach(&self, period: Period) -> anyhow::Result<String> {
        let page = self.client.fetch(&self.account, period, 1, 1).await?;
        Ok(match page.total_entries {
            Some(total) => format!("signed in; {total} billable people in {period}"),
            None => format!("signed in; page 1 of {period} read"),
        })
    }
}
