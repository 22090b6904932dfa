//! `tally check-config --reach` for ActivePlatform: one page of one account, so that a wrong
//! API token or URL shows before the night's run. Nothing is written.

use super::ActivePlatform;
use crate::http::Idempotency;
use secrecy::ExposeSecret;

impl ActivePlatform {
    /// Reads page 1 of the accounts with `per_page=1`.
    pub async fn reach(&self) -> anyhow::Result<String> {
        let url = self.v1_url("accounts.json");
        let query = [
            ("api_token", self.token.expose_secret()),
            ("page", "1"),
            ("per_page", "1"),
        ];
        self.http
            .send_json::<Vec<serde_json::Value>, _>(Idempotency::Idempotent, |client| {
                client.get(url.clone()).query(&query)
            })
            .await
            .map_err(|e| anyhow::anyhow!("{}", self.describe(&e)))?;
        Ok("read one page of accounts".to_owned())
    }
}
