//! The service-management "Billable Users" source (docs/connectors/billable-users.md): one account's
//! billable people per month, one staged record per (person, organization).
//!
//! - `config`: `[sources.billable_users]` and its checks, including `format` (`json`/`csv`)
//!   and the credentials (a personal token, or OAuth client credentials).
//! - `client`: one page over the shared HTTP client, and what each refusal means.
//! - `oauth`: client credentials exchanged for 1-hour access tokens, cached and renewed.
//! - `json_form`: the JSON array of people, read for the two fields a record needs (no I/O).
//! - `csv_form`: the CSV export of the same list, read into rows (no I/O).
//! - `link`: the `Link` header, which says where the next page is.
//!
//! What was read is checked against the `X-Pagination-*` totals by [`crate::sources::paging`].
//!
//! Both forms stage the same records (key, customer, item, quantity) for the same people.

mod client;
mod config;
pub mod csv_form;
mod json_form;
mod link;
mod oauth;
mod reach;

pub use config::{
    BillableUsersSettings, CLIENT_SECRET_ENV, Credentials, Format, MAX_PER_PAGE, TOKEN_ENV,
};

use crate::domain::{LicenseType, Period, SourceName, StagedRecord};
use crate::http::HttpClient;
use crate::sources::Page;
use crate::sources::paging::{self, Progress};
use anyhow::{Context, anyhow, bail};
use rust_decimal::Decimal;

/// The config key of this source; problems and messages name keys under it.
const AT: &str = "sources.billable_users";

/// The `item` of every staged person; mapping turns it into the configured license type.
pub const ITEM: &str = "billable_user";

/// A configured Billable Users source. `Debug` shows the token redacted.
#[derive(Debug)]
pub struct BillableUsers {
    name: SourceName,
    /// The only scope: the account sent as `X-4me-Account`.
    account: String,
    per_page: u32,
    max_pages: u32,
    concurrency: usize,
    license_type: LicenseType,
    client: client::Client,
}

/// The API's names for its paging, for messages.
const PAGING: paging::Vocabulary = paging::Vocabulary {
    total_entries: "X-Pagination-Total-Entries",
    total_pages: "X-Pagination-Total-Pages",
    current_page: "X-Pagination-Current-Page",
    next: "the Link header's rel=\"next\"",
    max_pages_key: "sources.billable_users.max_pages_per_scope",
};

impl BillableUsers {
    /// Checks `settings` (every problem at once) and builds the source, named `billable_users`.
    pub fn new(settings: &BillableUsersSettings) -> anyhow::Result<Self> {
        crate::problem::ConfigError::check(settings.validate(AT))?;
        // `validate` has refused missing or doubled credentials; this only keeps the code free
        // of `expect`.
        let auth = match settings.credentials() {
            Some(Credentials::Token(token)) => client::Auth::Token(token.clone()),
            Some(Credentials::ClientCredentials {
                client_id,
                client_secret,
                oauth_url,
            }) => client::Auth::ClientCredentials(oauth::OAuthClient::new(
                oauth_url,
                client_id,
                client_secret.clone(),
            )?),
            None => bail!(
                "{AT}: set exactly one of the token ({TOKEN_ENV}) or OAuth client credentials \
                 (client_id, oauth_url and {CLIENT_SECRET_ENV})"
            ),
        };
        let http = HttpClient::new(&settings.http).context("building the HTTP client")?;
        Ok(Self {
            name: SourceName::new("billable_users"),
            account: settings.account.trim().to_owned(),
            per_page: settings.per_page,
            max_pages: settings.max_pages_per_scope,
            concurrency: usize::try_from(settings.concurrency).unwrap_or(1).max(1),
            license_type: LicenseType::new(settings.license_type.trim()),
            client: client::Client::new(&settings.base_url, settings.format, auth, http)?,
        })
    }

    /// Requests, retries and 429s its HTTP client sent so far.
    pub fn http_stats(&self) -> crate::http::StatsSnapshot {
        self.client.http_stats()
    }

    pub fn name(&self) -> &SourceName {
        &self.name
    }

    /// One scope: the configured account.
    pub fn scopes(&self) -> Vec<String> {
        vec![self.account.clone()]
    }

    /// Fetches the page at `cursor` (a [`Progress`]: the page number and what the pages
    /// before it held; `None` is page 1) of `scope`'s billable people in `period`.
    /// `next_cursor` names the page the `Link` header's `rel="next"` names, which must be the
    /// next one; the last page must bring the entries read to `X-Pagination-Total-Entries`.
    ///
    /// A malformed person fails the whole page: staging the others would under-bill silently.
    pub async fn fetch_page(
        &self,
        scope: &str,
        period: Period,
        cursor: Option<&str>,
    ) -> anyhow::Result<Page> {
        let progress = Progress::parse(cursor)?;
        let fetched = self.fetch_numbered(scope, period, progress.page).await?;
        self.accept(cursor, fetched)
    }

    /// The pages after `cursor`'s that may be requested before `cursor`'s page is checked:
    /// known once page 1 has announced `X-Pagination-Total-Pages`, up to that total and
    /// `max_pages_per_scope`; `None` when the total is unknown.
    pub fn pages_ahead(&self, cursor: &str) -> Option<std::ops::RangeInclusive<u32>> {
        let progress = Progress::parse(Some(cursor)).ok()?;
        let total = u32::try_from(progress.total_pages?).unwrap_or(u32::MAX);
        let last = total.min(self.max_pages);
        (progress.page <= last).then_some(progress.page..=last)
    }

    /// How many pages [`Self::pages_ahead`] may have in flight at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Requests page `page` and reads its people: the I/O half of [`Self::fetch_page`],
    /// which may run ahead of the pages before it.
    #[tracing::instrument(skip(self, period), fields(source = %self.name, period = %period))]
    pub async fn fetch_numbered(
        &self,
        scope: &str,
        period: Period,
        page: u32,
    ) -> anyhow::Result<Numbered> {
        let raw = self
            .client
            .fetch(scope, period, page, self.per_page)
            .await?;
        let url = &raw.url;
        let records = match raw.body {
            client::Body::Json(people) => people
                .into_iter()
                .enumerate()
                .map(|(index, person)| {
                    stage(person).map_err(|e| anyhow!("{url}: the record at index {index} {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            client::Body::Csv(body) => {
                stage_csv(&body, raw.total_entries).map_err(|e| anyhow!("GET {url}: {e}"))?
            }
        };
        Ok(Numbered {
            page,
            records,
            answer: paging::Answer {
                url: raw.url,
                current_page: raw.current_page,
                // Each person (a JSON element or a CSV row) is one entry and one record.
                entries: 0,
                total_entries: raw.total_entries,
                total_pages: raw.total_pages,
                next_page: raw.next_page,
            },
        })
    }

    /// Checks a fetched page against what the pages before it announced (`cursor`, the
    /// progress up to it) and names the page after it: the in-order half of
    /// [`Self::fetch_page`].
    pub fn accept(&self, cursor: Option<&str>, fetched: Numbered) -> anyhow::Result<Page> {
        let progress = Progress::parse(cursor)?;
        anyhow::ensure!(
            fetched.page == progress.page,
            "page {} was fetched where page {} was due; this is a defect of tally, nothing was staged",
            fetched.page,
            progress.page
        );
        let mut answer = fetched.answer;
        answer.entries = fetched.records.len() as u64;
        let next = paging::advance(progress, &answer, &PAGING, self.max_pages)?;
        tracing::debug!(
            page = progress.page,
            count = fetched.records.len(),
            next_page = answer.next_page,
            "fetched a page of billable users"
        );
        Ok(Page {
            records: fetched.records,
            next_cursor: next.map(|n| n.to_string()),
        })
    }

    /// `billable_user` is billed as the configured license type; nothing else is known.
    pub fn license_type(&self, item: &str) -> Option<LicenseType> {
        (item == ITEM).then(|| self.license_type.clone())
    }
}

/// A page requested by number, read but not yet checked against the pages before it.
#[derive(Debug)]
pub struct Numbered {
    page: u32,
    records: Vec<StagedRecord>,
    answer: paging::Answer,
}

/// One person of the JSON form as a staged record (see [`person_record`]).
fn stage(person: json_form::Person) -> Result<StagedRecord, String> {
    let (id, organization) = person.0?;
    Ok(person_record(id, organization))
}

/// The people of one CSV page as staged records.
///
/// A body with no header row at all is accepted as an empty page only when the peer said the
/// month has no entries: otherwise an empty answer would silently bill nobody.
fn stage_csv(
    body: &[u8],
    total_entries: Option<u64>,
) -> Result<Vec<StagedRecord>, csv_form::CsvError> {
    let rows = match csv_form::parse(body) {
        Err(csv_form::CsvError::Empty) if total_entries == Some(0) => Vec::new(),
        other => other?,
    };
    Ok(rows
        .into_iter()
        .map(|row| person_record(row.id, row.organization))
        .collect())
}

/// One person as a staged record keyed `{id}@{organization}`: a person listed twice for the
/// same organization gets the same key, so the store counts them once. Both forms go through
/// here, so they cannot stage the same person differently.
fn person_record(id: u64, organization: String) -> StagedRecord {
    StagedRecord {
        record_key: format!("{id}@{organization}"),
        // Exact, as docs/connectors/billable-users.md says: mapping rules match the organization as the API spells it.
        customer_key: organization,
        item: ITEM.to_owned(),
        quantity: Decimal::ONE,
    }
}

pub use client::parse_next_page;

/// A JSON page's body staged as [`BillableUsers::fetch_page`] stages it: the page parser as a
/// pure function of its bytes, for the fuzz harness.
pub fn parse_json_page(body: &[u8]) -> Result<Vec<StagedRecord>, String> {
    let people: Vec<json_form::Person> =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON array of people: {e}"))?;
    people
        .into_iter()
        .enumerate()
        .map(|(index, person)| {
            stage(person).map_err(|e| format!("the record at index {index} {e}"))
        })
        .collect()
}

/// A CSV page's body staged as [`BillableUsers::fetch_page`] stages it, for the fuzz harness.
pub fn parse_csv_page(
    body: &[u8],
    total_entries: Option<u64>,
) -> Result<Vec<StagedRecord>, String> {
    stage_csv(body, total_entries).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use serde_json::json;

    fn person_from(value: &serde_json::Value) -> json_form::Person {
        serde_json::from_value(value.clone()).unwrap()
    }

    fn settings() -> BillableUsersSettings {
        BillableUsersSettings {
            enabled: true,
            base_url: "https://api.example.com/v1".into(),
            account: "wdc".into(),
            token: Some(SecretString::from("s3cret-token")),
            client_id: None,
            client_secret: None,
            oauth_url: None,
            per_page: 100,
            max_pages_per_scope: 100_000,
            concurrency: 4,
            license_type: "Service desk user".into(),
            format: Format::Json,
            http: crate::http::HttpSettings::default(),
        }
    }

    #[test]
    fn a_person_is_staged_under_id_at_organization() {
        let person =
            json!({"id": 552, "organization": "Microsoft Corporation", "name": "Abbie Lindt"});
        let record = stage(person_from(&person)).unwrap();
        assert_eq!(record.record_key, "552@Microsoft Corporation");
        assert_eq!(record.customer_key, "Microsoft Corporation");
        assert_eq!(record.item, "billable_user");
        assert_eq!(record.quantity, Decimal::ONE);
    }

    #[test]
    fn a_malformed_person_names_the_field() {
        for (person, field) in [
            (json!({"organization": "A"}), "`id`"),
            (json!({"id": "552", "organization": "A"}), "`id`"),
            (json!({"id": 1.5, "organization": "A"}), "`id`"),
            (json!({"id": 552}), "`organization`"),
            (json!({"id": 552, "organization": " "}), "`organization`"),
            (json!({"id": 552, "organization": null}), "`organization`"),
            (json!([552]), "object"),
        ] {
            let error = stage(person_from(&person)).unwrap_err();
            assert!(error.contains(field), "{person}: {error}");
        }
    }

    #[test]
    fn a_csv_row_and_a_json_person_stage_the_same_record() {
        let json = stage(person_from(
            &json!({"id": 70, "organization": "=Widget, \"IT\"", "name": "A"}),
        ))
        .unwrap();
        let body = "id,name,organization\r\n70,A,\"\t=Widget, \"\"IT\"\"\"\r\n";
        let csv = stage_csv(body.as_bytes(), None).unwrap();
        assert_eq!(csv.len(), 1);
        let strip = |r: &StagedRecord| {
            (
                r.record_key.clone(),
                r.customer_key.clone(),
                r.item.clone(),
                r.quantity,
            )
        };
        assert_eq!(strip(&csv[0]), strip(&json));
        assert_eq!(csv[0].customer_key, "=Widget, \"IT\"");
    }

    #[test]
    fn an_empty_csv_body_is_an_empty_page_only_when_the_month_has_no_entries() {
        assert_eq!(stage_csv(b"", Some(0)).unwrap(), vec![]);
        assert_eq!(
            stage_csv(b"", Some(3)).unwrap_err(),
            csv_form::CsvError::Empty
        );
        assert_eq!(stage_csv(b"", None).unwrap_err(), csv_form::CsvError::Empty);
    }

    #[test]
    fn the_source_has_one_scope_and_one_item() {
        let source = BillableUsers::new(&settings()).unwrap();
        assert_eq!(source.name().as_str(), "billable_users");
        assert_eq!(source.scopes(), vec!["wdc".to_owned()]);
        assert_eq!(
            source.license_type("billable_user"),
            Some(LicenseType::new("Service desk user"))
        );
        assert_eq!(source.license_type("something_else"), None);
        let shown = format!("{source:?}");
        assert!(!shown.contains("s3cret-token"), "{shown}");
    }

    #[test]
    fn a_missing_token_names_the_environment_variable() {
        let error = BillableUsers::new(&BillableUsersSettings {
            token: None,
            ..settings()
        })
        .unwrap_err();
        assert!(error.to_string().contains(TOKEN_ENV), "{error}");
    }

    #[test]
    fn a_source_with_client_credentials_never_shows_the_secret() {
        let source = BillableUsers::new(&BillableUsersSettings {
            token: None,
            client_id: Some("tally-app".into()),
            client_secret: Some(SecretString::from("cl1ent-s3cret")),
            oauth_url: Some("https://oauth.example.com".into()),
            ..settings()
        })
        .unwrap();
        let shown = format!("{source:?}");
        assert!(!shown.contains("cl1ent-s3cret"), "{shown}");
        assert!(shown.contains("oauth.example.com"), "{shown}");
    }
}
