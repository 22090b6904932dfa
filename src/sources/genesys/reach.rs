//! `tally check-config --reach` for Genesys Cloud: an access token for every configured org and
//! nothing heavier (the billable-usage report is one large request), so that a wrong client id
//! or secret shows before the night's run.

use super::Genesys;

impl Genesys {
    /// Fetches each org's access token.
    pub async fn reach(&self) -> anyhow::Result<String> {
        for org in self.orgs.values() {
            self.client.token(org, true).await?;
        }
        Ok(format!(
            "an access token for each of {} org(s)",
            self.orgs.len()
        ))
    }
}
