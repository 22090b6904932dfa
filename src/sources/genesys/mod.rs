//! The Genesys Cloud (PureCloud) billing source (docs/connectors/genesys.md): per configured org,
//! the month's billable-usage report, one staged record per usage (charge) name.
//!
//! - `config`: `[sources.genesys]` and its checks.
//! - `client`: tokens and the report request over the shared HTTP client, and what each
//!   refusal means.
//! - `report`: the report's shape, the month's date range, and staging (pure).
//!
//! Choices where the contract is open:
//! - The month's range is taken in UTC (`2026-10` → `[2026-10-01T00:00:00Z,
//!   2026-11-01T00:00:00Z)`): Genesys bills by UTC month, whatever the job's time zone.
//! - A usage name listed twice in one report is summed into one record (see
//!   [`report::stage_usages`]).
//! - A report is not paged: every scope is one page, and `next_cursor` is always `None`.

mod client;
mod config;
mod reach;
mod report;

pub use config::{GenesysOrg, GenesysSettings, MAX_POLL_INTERVAL_MS, parse_org_id, secret_env_var};
pub use report::parse_report;
pub use report::{COMPLETE, IN_PROGRESS, month_range};

use crate::domain::{LicenseType, Period, SourceName, StagedRecord};
use crate::http::{HttpClient, redact_url};
use crate::sources::Page;
use anyhow::{Context, anyhow, bail};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// The config key of this source; problems and messages name keys under it.
const AT: &str = "sources.genesys";

/// A configured Genesys Cloud source. `Debug` shows the client secrets redacted.
#[derive(Debug)]
pub struct Genesys {
    name: SourceName,
    /// Org name (the scope) → its OAuth client and token.
    orgs: BTreeMap<String, client::OrgClient>,
    /// Usage name → license type.
    licenses: BTreeMap<String, LicenseType>,
    poll_interval: Duration,
    max_wait: Duration,
    scopes_at_once: u32,
    client: client::Client,
}

impl Genesys {
    /// Checks `settings` (every problem at once) and builds the source, named `genesys`.
    pub fn new(settings: &GenesysSettings) -> anyhow::Result<Self> {
        crate::problem::ConfigError::check(settings.validate(AT))?;
        let mut orgs = BTreeMap::new();
        for (name, org) in &settings.orgs {
            let env = secret_env_var(AT, name);
            // `validate` has refused a missing secret and a bad org id; this only keeps the
            // code free of `expect`.
            let secret = org
                .client_secret
                .clone()
                .ok_or_else(|| anyhow!("{AT}.orgs.{name}.client_secret is missing: set {env}"))?;
            let org_id =
                parse_org_id(&org.org_id).map_err(|e| anyhow!("{AT}.orgs.{name}.org_id: {e}"))?;
            orgs.insert(
                name.clone(),
                client::OrgClient::new(name, org_id, &org.client_id, secret, env),
            );
        }
        let licenses = settings
            .licenses
            .iter()
            .map(|(usage, license)| (usage.clone(), LicenseType::new(license.trim())))
            .collect();
        let http = HttpClient::new(&settings.http).context("building the HTTP client")?;
        Ok(Self {
            name: SourceName::new("genesys"),
            orgs,
            licenses,
            poll_interval: Duration::from_millis(settings.poll_interval_ms),
            max_wait: Duration::from_secs(settings.max_wait_secs),
            scopes_at_once: settings.scopes_at_once,
            client: client::Client::new(&settings.api_url(), &settings.login_url(), http)?,
        })
    }

    /// Requests, retries and 429s its HTTP client sent so far.
    pub fn http_stats(&self) -> crate::http::StatsSnapshot {
        self.client.http_stats()
    }

    pub fn name(&self) -> &SourceName {
        &self.name
    }

    /// One scope per configured org: their names, sorted.
    pub fn scopes(&self) -> Vec<String> {
        self.orgs.keys().cloned().collect()
    }

    /// Orgs extracted side by side (`scopes_at_once`, checked to be at least 1).
    pub fn scopes_at_once(&self) -> u32 {
        self.scopes_at_once
    }

    /// Fetches org `scope`'s billable usage of `period`: asks for the month's report, waits
    /// while it is `InProgress` (polling with backoff, at most `max_wait_secs`), and stages one
    /// record per usage name. The report is not paged: `cursor` must be `None`, and
    /// `next_cursor` is `None`.
    ///
    /// A malformed usage fails the whole org: staging the others would under-bill silently.
    #[tracing::instrument(skip(self, period), fields(source = %self.name, period = %period))]
    pub async fn fetch_page(
        &self,
        scope: &str,
        period: Period,
        cursor: Option<&str>,
    ) -> anyhow::Result<Page> {
        if let Some(cursor) = cursor {
            bail!(
                "cursor {cursor:?} for genesys org {scope}: a Genesys report is one page, so \
                 there is no cursor to resume from; the checkpoint is corrupt"
            );
        }
        let org = self.orgs.get(scope).ok_or_else(|| {
            anyhow!(
                "genesys has no org {scope:?} (configured: {}); check [sources.genesys.orgs]",
                self.scopes().join(", ")
            )
        })?;
        let (start, end) = month_range(period);
        let url = self.client.report_url(&start, &end);
        let shown = redact_url(url.as_str());

        let started = Instant::now();
        let mut wait = self.poll_interval;
        let mut requests = 0u32;
        let report = loop {
            let report = self.client.report(org, &url).await?;
            requests += 1;
            match report.status.as_str() {
                COMPLETE => break report,
                IN_PROGRESS => {}
                other => bail!(
                    "GET {shown}: the report's status is {other:?}, expected \
                     {IN_PROGRESS:?} or {COMPLETE:?} (docs/connectors/genesys.md)"
                ),
            }
            let waited = started.elapsed();
            if waited >= self.max_wait {
                bail!(
                    "GET {shown}: the billable-usage report of org {scope} for {period} was \
                     still {IN_PROGRESS} after {} s ({requests} requests); Genesys is still \
                     computing it: re-run the period later, or raise {AT}.max_wait_secs",
                    self.max_wait.as_secs()
                );
            }
            let pause = wait.min(self.max_wait - waited);
            tracing::debug!(
                org = scope,
                wait_ms = pause.as_millis() as u64,
                "report in progress; asking again"
            );
            tokio::time::sleep(pause).await;
            wait =
                (wait * 2).min(Duration::from_millis(MAX_POLL_INTERVAL_MS).max(self.poll_interval));
        };

        report::check_range(&report, &start, &end).map_err(|e| anyhow!("GET {shown}: {e}"))?;
        let records: Vec<StagedRecord> = report::stage_usages(&report.usages, &org.org_id)
            .map_err(|e| {
                let id = report.id.as_deref().unwrap_or("without an id");
                anyhow!("GET {shown} (org {scope}, report {id}): {e}")
            })?;
        tracing::debug!(
            org = scope,
            report_id = report.id.as_deref().unwrap_or(""),
            count = records.len(),
            requests,
            "fetched the billable-usage report"
        );
        Ok(Page {
            records,
            next_cursor: None,
        })
    }

    /// The configured license type of a usage name (exact spelling); `None` for a name not in
    /// `[sources.genesys.licenses]`, which makes the record an exception.
    pub fn license_type(&self, item: &str) -> Option<LicenseType> {
        self.licenses.get(item).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn settings() -> GenesysSettings {
        GenesysSettings {
            enabled: true,
            region: "mypurecloud.ie".into(),
            api_base_url: None,
            login_base_url: None,
            orgs: [
                ("zeta", "00000000-0000-0000-0000-00000000000b"),
                ("acme", "00000000-0000-0000-0000-00000000000A"),
            ]
            .into_iter()
            .map(|(name, id)| {
                (
                    name.to_owned(),
                    GenesysOrg {
                        org_id: id.into(),
                        client_id: format!("client-{name}"),
                        client_secret: Some(SecretString::from(format!("s3cret-{name}"))),
                    },
                )
            })
            .collect(),
            licenses: [("Genesys Cloud CX 3".to_owned(), "CX 3 agent".to_owned())].into(),
            poll_interval_ms: 2_000,
            max_wait_secs: 300,
            scopes_at_once: 4,
            http: crate::http::HttpSettings::default(),
        }
    }

    #[test]
    fn scopes_are_the_sorted_org_names_and_licenses_map_exactly() {
        let source = Genesys::new(&settings()).unwrap();
        assert_eq!(source.name().as_str(), "genesys");
        assert_eq!(source.scopes(), ["acme", "zeta"]);
        assert_eq!(
            source.license_type("Genesys Cloud CX 3"),
            Some(LicenseType::new("CX 3 agent"))
        );
        assert_eq!(source.license_type("genesys cloud cx 3"), None);
        assert_eq!(
            source.orgs["acme"].org_id,
            "00000000-0000-0000-0000-00000000000a"
        );
        let shown = format!("{source:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn a_missing_secret_names_the_environment_variable() {
        let mut settings = settings();
        settings.orgs.get_mut("acme").unwrap().client_secret = None;
        let error = Genesys::new(&settings).unwrap_err().to_string();
        assert!(
            error.contains("TALLY__SOURCES__GENESYS__ORGS__ACME__CLIENT_SECRET"),
            "{error}"
        );
    }
}
