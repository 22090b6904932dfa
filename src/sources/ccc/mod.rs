//! The CCC secure-messaging source (docs/connectors/ccc.md): per service, its users page by page,
//! each user's usage in the month (one call per user, concurrently within a limit), one staged
//! record per billable user and one per configured metered quantity.
//!
//! - `config`: `[sources.ccc]` and its checks.
//! - `client`: sign-in, sessions, users and usage over the shared HTTP client, and what each
//!   refusal means.
//! - `usage`: who is billable and what is metered, as pure functions.
//! - `guid`: the one spelling of a GUID tally uses.

mod client;
mod config;
mod guid;
mod reach;
mod usage;

pub use client::{parse_usage_answer, parse_users_page};
pub use config::{
    CccSettings, DEFAULT_PAGE_SIZE, MAX_CONCURRENCY, MAX_PAGE_SIZE, PASSWORD_ENV, default_licenses,
};
pub use guid::normalize as normalize_guid;
pub use usage::{Metric, NO_GROUP};

use crate::domain::{LicenseType, Period, SourceName, StagedRecord};
use crate::http::HttpClient;
use crate::sources::Page;
use crate::sources::paging::{self, Progress};
use anyhow::{Context, anyhow};
use chrono::NaiveDate;
use client::PeriodType;
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::Value;
use std::collections::BTreeMap;
use usage::Totals;

/// The config key of this source; problems and messages name keys under it.
const AT: &str = "sources.ccc";

/// CCC's names for its paging, for messages.
const PAGING: paging::Vocabulary = paging::Vocabulary {
    total_entries: "totalItems",
    total_pages: "totalPages",
    current_page: "currentPage",
    next: "currentPage < totalPages",
    max_pages_key: "sources.ccc.max_pages_per_scope",
};

/// A configured CCC source. `Debug` shows no password or session.
#[derive(Debug)]
pub struct Ccc {
    name: SourceName,
    /// Canonical service GUIDs, in configured order: the scopes.
    services: Vec<String>,
    page_size: u32,
    max_pages: u32,
    concurrency: usize,
    scopes_at_once: u32,
    daily: bool,
    /// Lower-cased `groupType` → license type.
    licenses: BTreeMap<String, LicenseType>,
    /// Configured metered quantities and their license types.
    metered: BTreeMap<Metric, LicenseType>,
    client: client::Client,
}

impl Ccc {
    /// Checks `settings` (every problem at once) and builds the source, named `ccc`.
    pub fn new(settings: &CccSettings) -> anyhow::Result<Self> {
        crate::problem::ConfigError::check(settings.validate(AT))?;
        // `validate` has refused a missing password and bad GUIDs; these only keep the code
        // free of `expect`.
        let password = settings
            .password
            .clone()
            .ok_or_else(|| anyhow!("{AT}.password is missing: set {PASSWORD_ENV}"))?;
        let services = settings
            .services
            .iter()
            .map(|s| {
                guid::normalize(s).ok_or_else(|| anyhow!("{AT}.services: {s:?} is not a GUID"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let metered = settings
            .metered
            .iter()
            .map(|(name, license)| {
                Metric::parse(name)
                    .map(|m| (m, LicenseType::new(license.trim())))
                    .ok_or_else(|| anyhow!("{AT}.metered.{name} is not a metered quantity"))
            })
            .collect::<anyhow::Result<_>>()?;
        let http = HttpClient::new(&settings.http).context("building the HTTP client")?;
        Ok(Self {
            name: SourceName::new("ccc"),
            services,
            page_size: settings.page_size,
            max_pages: settings.max_pages_per_scope,
            concurrency: settings.concurrency as usize,
            scopes_at_once: settings.scopes_at_once,
            daily: settings.daily,
            licenses: settings
                .licenses
                .iter()
                .map(|(g, l)| (g.trim().to_lowercase(), LicenseType::new(l.trim())))
                .collect(),
            metered,
            client: client::Client::new(&settings.base_url, &settings.username, password, http)?,
        })
    }

    /// Requests, retries and 429s its HTTP client sent so far.
    pub fn http_stats(&self) -> crate::http::StatsSnapshot {
        self.client.http_stats()
    }

    pub fn name(&self) -> &SourceName {
        &self.name
    }

    /// How the customer map matches this source's customer keys: service GUIDs, ignoring case,
    /// dashes and braces (docs/connectors/ccc.md), so that the map may spell them as CCC's portal does.
    pub fn key_match(&self) -> crate::mapping::KeyMatch {
        crate::mapping::KeyMatch::Guid
    }

    /// The configured services, as canonical GUIDs (32 lower-case hex digits).
    pub fn scopes(&self) -> Vec<String> {
        self.services.clone()
    }

    /// Services extracted side by side (`scopes_at_once`, checked to be at least 1).
    pub fn scopes_at_once(&self) -> u32 {
        self.scopes_at_once
    }

    /// Fetches page `cursor` (a [`Progress`]: the page number and what the pages before it
    /// held; `None` is page 1) of service `scope`'s users and their usage in `period`, and
    /// stages the billable ones. `next_cursor` is the next page while `currentPage <
    /// totalPages`; the last page must bring the users read to `totalItems`.
    ///
    /// The page is checked against the list's totals before any usage is asked for, so that a
    /// page that cannot be billed costs one request, not one per user.
    ///
    /// A malformed user or a failed usage call fails the whole page: staging the others would
    /// under-bill silently, and the page is fetched again from its checkpoint.
    #[tracing::instrument(skip(self, period), fields(source = %self.name, period = %period))]
    pub async fn fetch_page(
        &self,
        scope: &str,
        period: Period,
        cursor: Option<&str>,
    ) -> anyhow::Result<Page> {
        let service = guid::normalize(scope)
            .ok_or_else(|| anyhow!("scope {scope:?} is not a service GUID"))?;
        let progress = Progress::parse(cursor)?;
        let page = progress.page;
        let raw = self.client.users(&service, page, self.page_size).await?;
        let served = raw.current_page.unwrap_or(u64::from(page));
        let answer = paging::Answer {
            url: raw.url.clone(),
            current_page: raw.current_page,
            entries: raw.results.len() as u64,
            total_entries: raw.total_items,
            total_pages: Some(raw.total_pages),
            next_page: (served < raw.total_pages).then_some(served + 1),
        };
        let next = paging::advance(progress, &answer, &PAGING, self.max_pages)?;
        let users = raw
            .results
            .into_iter()
            .enumerate()
            .map(|(index, user)| {
                usage::parse_user(user)
                    .map_err(|e| anyhow!("{}: the user at index {index} {e}", raw.url))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;

        let (period_type, days) = self.calls_for(period);
        // Owned calls and boxed `Send` futures: a stream of closures over borrowed data here
        // would make the whole run's future fail to prove `Send` for the daemon's scheduler.
        let calls: Vec<(usize, String, NaiveDate)> = users
            .iter()
            .enumerate()
            .flat_map(|(i, user)| days.iter().map(move |day| (i, user.guid.clone(), *day)))
            .collect();
        let service_ref = service.as_str();
        let answers: Vec<(usize, Value)> = stream::iter(calls)
            .map(
                |(i, user, day)| -> futures_util::future::BoxFuture<'_, anyhow::Result<(usize, Value)>> {
                    Box::pin(async move {
                        let usage = self
                            .client
                            .usage(service_ref, &user, period_type, day)
                            .await?;
                        Ok((i, usage))
                    })
                },
            )
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;

        let mut per_user: Vec<Vec<Value>> = vec![Vec::new(); users.len()];
        for (i, usage) in answers {
            per_user[i].push(usage);
        }
        let metered: Vec<Metric> = self.metered.keys().copied().collect();
        let mut records: Vec<StagedRecord> = Vec::new();
        for (user, usages) in users.iter().zip(per_user) {
            let totals =
                summarize(usages).map_err(|e| anyhow!("{}: user {} {e}", raw.url, user.guid))?;
            records.extend(usage::stage(&service, user, &totals, &metered));
        }
        let next_cursor = next.map(|n| n.to_string());
        tracing::debug!(
            page,
            users = users.len(),
            records = records.len(),
            next_cursor,
            "fetched a page of CCC users"
        );
        Ok(Page {
            records,
            next_cursor,
        })
    }

    /// A `groupType` is billed as its configured license type (ignoring case); a metered
    /// quantity as its configured one; anything else is not known (`None`).
    pub fn license_type(&self, item: &str) -> Option<LicenseType> {
        if let Some(metric) = Metric::parse(item)
            && item == metric.name()
        {
            return self.metered.get(&metric).cloned();
        }
        self.licenses.get(&item.trim().to_lowercase()).cloned()
    }

    /// The usage calls per user: the month's first day with `Monthly`, or every day with
    /// `Daily`.
    fn calls_for(&self, period: Period) -> (PeriodType, Vec<NaiveDate>) {
        if self.daily {
            let days = period
                .first_day()
                .iter_days()
                .take_while(|d| *d <= period.last_day())
                .collect();
            (PeriodType::Daily, days)
        } else {
            (PeriodType::Monthly, vec![period.first_day()])
        }
    }
}

/// A user's totals in the month and the evidence kept for them: the Monthly usage as sent, or
/// the sum of the Daily ones (31 usage objects per user would swamp the store).
fn summarize(usages: Vec<Value>) -> Result<Totals, String> {
    let mut totals = Totals::default();
    for usage in &usages {
        totals = totals
            .checked_add(Totals::from_usage(usage)?)
            .ok_or("has totals too large to add up")?;
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn settings() -> CccSettings {
        CccSettings {
            enabled: true,
            base_url: "https://api.secure-messaging.com/api".into(),
            username: "billing".into(),
            password: Some(SecretString::from("s3cret")),
            services: vec!["{6F9619FF-8B86-D011-B42D-00CF4FC964FF}".into()],
            page_size: 25,
            max_pages_per_scope: 100_000,
            concurrency: 8,
            scopes_at_once: 4,
            daily: false,
            licenses: default_licenses(),
            metered: BTreeMap::from([(
                "messages_sent".to_owned(),
                "Secure messaging – Messages".to_owned(),
            )]),
            http: crate::http::HttpSettings::default(),
        }
    }

    #[test]
    fn scopes_are_canonical_guids_and_items_map_to_license_types() {
        let source = Ccc::new(&settings()).unwrap();
        assert_eq!(source.name().as_str(), "ccc");
        assert_eq!(source.scopes(), ["6f9619ff8b86d011b42d00cf4fc964ff"]);
        assert_eq!(
            source.license_type("Professional"),
            Some(LicenseType::new("Secure messaging – Professional"))
        );
        assert_eq!(
            source.license_type("guest"),
            Some(LicenseType::new("Secure messaging – Guest"))
        );
        assert_eq!(
            source.license_type("messages_sent"),
            Some(LicenseType::new("Secure messaging – Messages"))
        );
        assert_eq!(source.license_type("attachment_bytes"), None);
        assert_eq!(source.license_type("Enterprise"), None);
        assert_eq!(source.license_type(NO_GROUP), None);
        let shown = format!("{source:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn a_missing_password_names_the_environment_variable() {
        let error = Ccc::new(&CccSettings {
            password: None,
            ..settings()
        })
        .unwrap_err();
        assert!(error.to_string().contains(PASSWORD_ENV), "{error}");
    }

    #[test]
    fn daily_mode_asks_for_every_day_of_the_month() {
        let source = Ccc::new(&CccSettings {
            daily: true,
            ..settings()
        })
        .unwrap();
        let (kind, days) = source.calls_for(Period::new(2028, 2).unwrap());
        assert_eq!(kind, PeriodType::Daily);
        assert_eq!(days.len(), 29);
        assert_eq!(days[28].to_string(), "2028-02-29");
        let monthly = Ccc::new(&settings()).unwrap();
        let (kind, days) = monthly.calls_for(Period::new(2026, 10).unwrap());
        assert_eq!((kind, days.len()), (PeriodType::Monthly, 1));
        assert_eq!(days[0].to_string(), "2026-10-01");
    }
}
