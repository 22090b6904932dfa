//! `tally check-config --reach` for RamBase: an access token, then one usage of one configured
//! plan item's period (`$top=1`), so that wrong credentials, a wrong `db` or a plan that does
//! not exist show before the night's run. Nothing is written.

use super::{CallError, RamBase, Target, describe};
use crate::http::Idempotency;

impl RamBase {
    /// Signs in and reads one usage of the first configured plan item that has a period id.
    pub async fn reach(&self) -> anyhow::Result<String> {
        self.token(true).await.map_err(anyhow::Error::msg)?;
        let Some(target) = self.first_target() else {
            return Ok("signed in (no plan item with a period id to read)".to_owned());
        };
        let mut url = self.usages_url(target, None);
        let query = url.query().unwrap_or_default().replacen(
            &format!("$top={}", super::PAGE_SIZE),
            "$top=1",
            1,
        );
        url.set_query(Some(&query));
        match self
            .call(Idempotency::Idempotent, |client, token| {
                client
                    .get(url.clone())
                    .bearer_auth(token)
                    .header(reqwest::header::ACCEPT, "application/json")
            })
            .await
        {
            Ok(_) => Ok(format!("signed in; read {target}")),
            Err(CallError::Http(e)) => anyhow::bail!("{}", describe(&e, Some(target))),
            Err(CallError::Token(message)) => anyhow::bail!("{message}"),
        }
    }

    /// The lowest configured plan item with the lowest period id it can be billed in.
    fn first_target(&self) -> Option<Target> {
        let plans = &self.plans;
        let mut items: Vec<(u64, u64)> = plans.items.values().copied().collect();
        items.sort_unstable();
        items.into_iter().find_map(|(plan_id, item_id)| {
            let own = plans
                .file_periods
                .iter()
                .filter(|((plan, _), _)| *plan == plan_id)
                .map(|(_, id)| *id)
                .min();
            let period_id = own.or_else(|| plans.period_ids.values().copied().min())?;
            Some(Target {
                plan_id,
                item_id,
                period_id,
            })
        })
    }
}
