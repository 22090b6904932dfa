//! Configuration: `config/default.toml`, overlaid by `config/<TALLY_ENV>.toml`, overlaid by
//! `TALLY__SECTION__KEY` environment variables (the `config` crate); `--config FILE` names
//! another file instead of the two in `config/`.
//!
//! Secrets (tokens, client secrets, passwords) are read from the environment only: a secret in
//! a file is a configuration error. Every section is `deny_unknown_fields`, and
//! [`Settings::validate`] reports every problem at once with the key's full path, so that bad
//! configuration fails at start-up and never halfway through a run. Every key is documented in
//! `docs/CONFIG.md`.

use crate::domain::{BillingAccount, Currency, RoundingMode};
use crate::problem::Problem;
use crate::sinks::activeplatform::ActivePlatformSettings;
use crate::sinks::file::FileSinkSettings;
use crate::sinks::rambase::RamBaseSettings;
use crate::sources::billable_users::BillableUsersSettings;
use crate::sources::ccc::CccSettings;
use crate::sources::genesys::GenesysSettings;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

mod from_text;
mod load;
mod log_level;
mod notify;
mod schedule;
mod serve;

pub use load::Loaded;
pub use notify::{NotifyEvent, NotifySettings, WEBHOOK_TOKEN_ENV, webhook_origin};
pub use schedule::{DEFAULT_JOB, DaemonSettings, Job, JobSettings, JobTask, ScheduleSettings};
pub use serve::ServeSettings;

/// Keys whose values are secrets: accepted from the environment only.
const SECRET_KEYS: &[&str] = &[
    "token",
    "client_secret",
    "password",
    "api_token",
    "webhook_token",
];

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub general: GeneralSettings,
    #[serde(default)]
    pub database: DatabaseSettings,
    #[serde(default)]
    pub billing: BillingSettings,
    #[serde(default)]
    pub schedule: ScheduleSettings,
    #[serde(default)]
    pub daemon: DaemonSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub push: PushSettings,
    #[serde(default)]
    pub sources: SourcesSettings,
    #[serde(default)]
    pub sinks: SinksSettings,
    /// `[notify]`: the webhook told when a run needs a person.
    #[serde(default)]
    pub notify: NotifySettings,
    /// `[serve]`: the accountants' review page (`tally serve`).
    #[serde(default)]
    pub serve: ServeSettings,
    /// The files the settings were read from, for messages (not a key).
    #[serde(skip)]
    pub loaded_from: Vec<PathBuf>,
    /// Each key's origin (`file:key` or the variable's name), for messages (not a key).
    #[serde(skip)]
    pub origins: std::collections::BTreeMap<String, String>,
}

/// The longest `general.run_deadline_secs`: beyond 30 days a deadline bounds nothing.
pub const MAX_RUN_DEADLINE_SECS: u64 = 30 * 24 * 3600;

/// `[general]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneralSettings {
    /// Folder for the SQLite state file and other local files (default `./data`).
    pub data_dir: PathBuf,
    /// The job's time zone (IANA name): billing periods are calendar months in this zone.
    pub timezone: String,
    /// After SIGTERM/SIGINT, how long the request in flight may take to finish before the
    /// process exits anyway.
    pub shutdown_timeout_secs: u64,
    /// How long a run may wait for peers' rate limits, counted from its start: a wait that
    /// would end later fails its source (or push) at once, keeping its checkpoint.
    pub run_deadline_secs: u64,
}

impl Default for GeneralSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            timezone: "UTC".into(),
            shutdown_timeout_secs: 45,
            run_deadline_secs: 21_600,
        }
    }
}

impl GeneralSettings {
    /// The billing zone. [`Settings::validate`] refuses a zone that does not parse, and every
    /// command that runs validates first (`App::build`), so UTC never stands in for it there.
    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone.parse().unwrap_or(chrono_tz::UTC)
    }
}

/// `[database]`
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `postgres://user@host:5432/db`; `DATABASE_URL` in the environment wins. Empty: an
    /// SQLite file `tally.db` in `general.data_dir`.
    pub url: Option<String>,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.url.as_deref().map(crate::http::redact_url))
            .finish()
    }
}

/// `[billing]`: what is billed, how it is priced, and where it goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingSettings {
    /// The pricing table (docs/PRICING.md).
    pub pricing_file: PathBuf,
    /// The customer map: `source,source_customer,billing_account`.
    pub customers_file: PathBuf,
    /// `half_up` (default) or `half_even`: how each line's amount is rounded, once.
    pub rounding: RoundingMode,
    /// The currency of every billing account not listed in `accounts`.
    pub default_currency: String,
    /// The billing system of every account not listed in `accounts` (`rambase` or `file`).
    pub default_sink: String,
    /// When true, lines wait as drafts until `tally approve` before they are pushed.
    pub require_approval: bool,
    /// Under `require_approval`, rules that approve steady or small lines without a person
    /// (`[[billing.approval_rules]]`); each approval is recorded as `rule:<name>`.
    pub approval_rules: Vec<crate::reconcile::approval::ApprovalRule>,
    /// Accounts whose currency or billing system differs from the defaults.
    pub accounts: Vec<AccountSettings>,
    /// `[billing.limits]`: quantities no real month has; above them, an exception.
    pub limits: crate::domain::QuantityLimits,
    /// `[billing.shrink_guard]`: credits of a source that answered far less wait for a person.
    pub shrink_guard: crate::reconcile::shrink::ShrinkGuard,
}

impl Default for BillingSettings {
    fn default() -> Self {
        Self {
            pricing_file: PathBuf::from("config/pricing.csv"),
            customers_file: PathBuf::from("config/customers.csv"),
            rounding: RoundingMode::HalfUp,
            default_currency: "EUR".into(),
            default_sink: "rambase".into(),
            require_approval: false,
            approval_rules: Vec::new(),
            accounts: Vec::new(),
            limits: Default::default(),
            shrink_guard: Default::default(),
        }
    }
}

/// `[[billing.accounts]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// The billing account id, as in the customer map; or the e-mail address of an
    /// ActivePlatform account (compared case-insensitively), which names that account however
    /// it was found (by e-mail or by attribute).
    pub id: String,
    /// Its currency (ISO 4217); default `billing.default_currency`, or for an account billed
    /// in ActivePlatform `sinks.activeplatform.currency`.
    pub currency: Option<String>,
    /// Its billing system; default `billing.default_sink`.
    pub sink: Option<String>,
}

impl BillingSettings {
    /// The entry of `accounts` for an account id, or for an e-mail address (compared
    /// case-insensitively: mail systems do).
    fn entry(&self, account: &str) -> Option<&AccountSettings> {
        self.accounts.iter().find(|a| a.id == account).or_else(|| {
            let email = account.trim();
            if !is_email(email) {
                return None;
            }
            self.accounts
                .iter()
                .find(|a| a.id.trim().eq_ignore_ascii_case(email))
        })
    }

    /// The currency `accounts` gives an account id or e-mail address, if it gives one.
    pub fn listed_currency(&self, account: &str) -> Option<Currency> {
        self.entry(account)?.currency.as_deref()?.parse().ok()
    }

    /// The currency an account is billed in: its own, else `default_currency`.
    pub fn currency_of(&self, account: &BillingAccount) -> Option<Currency> {
        self.listed_currency(account.as_str())
            .or_else(|| self.default_currency.parse().ok())
    }

    /// The billing system an account is billed in.
    pub fn sink_of(&self, account: &BillingAccount) -> &str {
        self.entry(account.as_str())
            .and_then(|a| a.sink.as_deref())
            .unwrap_or(&self.default_sink)
    }
}

/// Does `text` look like an e-mail address (`name@domain`, no spaces)? An account id with an
/// `@` in it is read as one. The customer map's rule, so that both files agree.
fn is_email(text: &str) -> bool {
    crate::mapping::is_email(text)
}

/// `[push]`: how carefully lines are pushed.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PushSettings {
    /// Seconds after sending before "the billing system does not hold it" is believed. Default:
    /// the longest request timeout of the configured billing systems plus 30 s.
    pub settle_secs: Option<u64>,
    /// Times a revision whose answer was uncertain and that is confirmed absent is sent again
    /// within one run (default 2).
    pub retries: Option<u32>,
    /// Seconds before the first such retry, doubled for each next one (default 2).
    pub retry_backoff_secs: Option<u64>,
}

impl PushSettings {
    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(2)
    }

    pub fn retry_backoff(&self) -> Duration {
        Duration::from_secs(self.retry_backoff_secs.unwrap_or(2))
    }

    /// The settle time, given the longest request timeout of the billing systems.
    pub fn settle(&self, longest_request_timeout: Duration) -> Duration {
        self.settle_secs
            .map(Duration::from_secs)
            .unwrap_or(longest_request_timeout + Duration::from_secs(30))
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` for people, `json` for log collectors (production).
    pub format: LogFormat,
    /// Default filter when `RUST_LOG` is not set, e.g. `info` or `tally=debug`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[sources.*]`: one table per source; a missing table means the source is not used.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesSettings {
    pub billable_users: Option<BillableUsersSettings>,
    pub ccc: Option<CccSettings>,
    pub genesys: Option<GenesysSettings>,
}

impl SourcesSettings {
    /// Every source tally has a connector for, by its table name.
    pub const ALL: &[&str] = &["billable_users", "ccc", "genesys"];

    /// Names of the configured sources.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.billable_users.is_some() {
            names.push("billable_users");
        }
        if self.ccc.is_some() {
            names.push("ccc");
        }
        if self.genesys.is_some() {
            names.push("genesys");
        }
        names
    }
}

/// `[sinks.*]`: one table per billing system; a missing table means it is not used.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksSettings {
    pub rambase: Option<RamBaseSettings>,
    pub activeplatform: Option<ActivePlatformSettings>,
    pub file: Option<FileSinkSettings>,
}

impl SinksSettings {
    /// Names of the configured billing systems.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.rambase.is_some() {
            names.push("rambase");
        }
        if self.activeplatform.is_some() {
            names.push("activeplatform");
        }
        if self.file.is_some() {
            names.push("file");
        }
        names
    }
}

impl Settings {
    /// Where the state lives: `database.url`, else the SQLite file in `general.data_dir`.
    pub fn database_target(&self) -> crate::store::DatabaseTarget {
        match self.database.url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => {
                if let Some(path) = url.strip_prefix("sqlite://") {
                    crate::store::DatabaseTarget::Sqlite(PathBuf::from(path))
                } else {
                    crate::store::DatabaseTarget::Postgres(url.to_owned())
                }
            }
            _ => crate::store::DatabaseTarget::Sqlite(self.general.data_dir.join("tally.db")),
        }
    }

    /// Checks everything that can be checked without reading other files or the network;
    /// every problem at once, each with its key's full path.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.general.timezone.parse::<chrono_tz::Tz>().is_err() {
            problems.push(Problem::new(
                "general.timezone",
                format!(
                    "unknown time zone {:?} (use an IANA name such as UTC or Europe/Oslo)",
                    self.general.timezone
                ),
            ));
        }
        if let Err(more) = self.schedule.jobs(&self.general.timezone) {
            problems.extend(more);
        }
        if let Err(problem) = self.daemon.address() {
            problems.push(problem);
        }
        if let Some(url) = self.database.url.as_deref() {
            let url = url.trim();
            if !(url.is_empty()
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite://"))
            {
                problems.push(Problem::new(
                    "database.url",
                    "expected postgres://... or sqlite://PATH (or leave it empty for the SQLite file in general.data_dir)",
                ));
            }
        }
        let billing = &self.billing;
        let mut rule_names = BTreeSet::new();
        for (i, rule) in billing.approval_rules.iter().enumerate() {
            let at = format!("billing.approval_rules[{i}]");
            problems.extend(rule.validate(&at));
            if !rule_names.insert(rule.name.as_str()) {
                problems.push(Problem::new(
                    format!("{at}.name"),
                    format!(
                        "{:?} names another rule too; each rule needs its own name",
                        rule.name
                    ),
                ));
            }
        }
        if !billing.approval_rules.is_empty() && !billing.require_approval {
            problems.push(Problem::new(
                "billing.approval_rules",
                "rules approve drafts, but billing.require_approval is false so every line is approved anyway: set require_approval = true or remove the rules",
            ));
        }
        problems.extend(billing.shrink_guard.validate());
        problems.extend(billing.limits.validate());
        if self.general.shutdown_timeout_secs == 0 {
            problems.push(Problem::new(
                "general.shutdown_timeout_secs",
                "is 0: give the request in flight at least a second to finish after SIGTERM",
            ));
        }
        if !(1..=MAX_RUN_DEADLINE_SECS).contains(&self.general.run_deadline_secs) {
            problems.push(Problem::new(
                "general.run_deadline_secs",
                format!(
                    "is {}: give a run between 1 s and {MAX_RUN_DEADLINE_SECS} s (30 days) to wait for peers' rate limits (default 21600, 6 hours)",
                    self.general.run_deadline_secs
                ),
            ));
        }
        if billing.default_currency.parse::<Currency>().is_err() {
            problems.push(Problem::new(
                "billing.default_currency",
                format!(
                    "unknown currency {:?} (expected an ISO 4217 code such as EUR)",
                    billing.default_currency
                ),
            ));
        }
        let sinks = self.sinks.names();
        let check_sink = |at: String, name: &str, problems: &mut Vec<Problem>| {
            if !sinks.contains(&name) {
                problems.push(Problem::new(
                    at,
                    format!(
                        "billing system {name:?} is not configured (configured: {}); add a [sinks.{name}] table or pick another",
                        if sinks.is_empty() { "none".to_owned() } else { sinks.join(", ") }
                    ),
                ));
            }
        };
        check_sink(
            "billing.default_sink".into(),
            &billing.default_sink,
            &mut problems,
        );
        let mut seen = BTreeSet::new();
        for (i, account) in billing.accounts.iter().enumerate() {
            let at = format!("billing.accounts[{i}]");
            if account.id.trim().is_empty() {
                problems.push(Problem::new(format!("{at}.id"), "must not be empty"));
            }
            let id = account.id.trim();
            if id.contains('@') && !is_email(id) {
                problems.push(Problem::new(
                    format!("{at}.id"),
                    format!(
                        "{:?} is neither an account id nor an e-mail address (name@domain): fix \
                         the address",
                        account.id
                    ),
                ));
            }
            // One e-mail address in two spellings is one account.
            let key = if is_email(id) {
                id.to_lowercase()
            } else {
                account.id.clone()
            };
            if !seen.insert(key) {
                problems.push(Problem::new(
                    format!("{at}.id"),
                    format!("account {:?} is listed twice", account.id),
                ));
            }
            if let Some(code) = &account.currency
                && code.parse::<Currency>().is_err()
            {
                problems.push(Problem::new(
                    format!("{at}.currency"),
                    format!("unknown currency {code:?}"),
                ));
            }
            if let Some(sink) = &account.sink {
                check_sink(format!("{at}.sink"), sink, &mut problems);
            }
        }
        if let Some(s) = &self.sources.billable_users {
            problems.extend(s.validate("sources.billable_users"));
        }
        if let Some(s) = &self.sources.ccc {
            problems.extend(s.validate("sources.ccc"));
        }
        if let Some(s) = &self.sources.genesys {
            problems.extend(s.validate("sources.genesys"));
        }
        let sources = self.sources.names();
        if sources.is_empty() {
            problems.push(Problem::new(
                "sources",
                format!(
                    "no source is configured; add a table for one of them: {}",
                    SourcesSettings::ALL
                        .iter()
                        .map(|s| format!("[sources.{s}]"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let enabled = [
            self.sources.billable_users.as_ref().map(|s| s.enabled),
            self.sources.ccc.as_ref().map(|s| s.enabled),
            self.sources.genesys.as_ref().map(|s| s.enabled),
        ];
        if !sources.is_empty() && !enabled.contains(&Some(true)) {
            problems.push(Problem::new(
                "sources",
                format!(
                    "every configured source is disabled, so nothing would ever be billed: set {}                      (or remove the line enabled = false)",
                    sources
                        .iter()
                        .map(|s| format!("sources.{s}.enabled = true"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ));
        }
        problems.extend(self.log.problems());
        problems.extend(self.notify.validate());
        problems.extend(self.serve.validate());
        if let Some(ap) = &self.sinks.activeplatform {
            for (i, name) in ap.lookup_sources.iter().enumerate() {
                if !sources.contains(&name.trim()) {
                    problems.push(Problem::new(
                        format!("sinks.activeplatform.lookup_sources[{i}]"),
                        format!(
                            "{name:?} is not a configured source (configured: {})",
                            sources.join(", ")
                        ),
                    ));
                }
            }
        }
        if let Some(s) = &self.sinks.rambase {
            problems.extend(s.validate("sinks.rambase"));
        }
        if let Some(s) = &self.sinks.activeplatform {
            problems.extend(s.validate("sinks.activeplatform"));
        }
        if let Some(s) = &self.sinks.file {
            problems.extend(s.validate("sinks.file"));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_in_a_file_is_refused_with_the_variable_to_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[sources.billable_users]\ntoken = \"abc\"\n").unwrap();
        let err = Settings::load_files(&[path], false).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sources.billable_users.token"), "{text}");
        assert!(
            text.contains("TALLY__SOURCES__BILLABLE_USERS__TOKEN"),
            "{text}"
        );
        assert!(
            !text.contains("abc"),
            "the secret itself must not be echoed: {text}"
        );
    }

    #[test]
    fn accounts_listed_by_email_match_any_spelling_and_bad_addresses_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.toml");
        std::fs::write(
            &path,
            "[[billing.accounts]]\nid = \"ap@initech.example\"\ncurrency = \"USD\"\n\
             [[billing.accounts]]\nid = \"2000041\"\ncurrency = \"NOK\"\n",
        )
        .unwrap();
        let settings = Settings::load_files(std::slice::from_ref(&path), false).unwrap();
        let billing = &settings.billing;
        let usd: Currency = "USD".parse().unwrap();
        assert_eq!(billing.listed_currency("AP@Initech.example"), Some(usd));
        assert_eq!(billing.listed_currency("2000041"), "NOK".parse().ok());
        assert_eq!(billing.listed_currency("2000057"), None);
        assert_eq!(
            billing.currency_of(&BillingAccount::new("2000057")),
            "EUR".parse().ok()
        );

        std::fs::write(
            &path,
            "[[billing.accounts]]\nid = \"ap@initech.example\"\n\
             [[billing.accounts]]\nid = \"AP@Initech.Example\"\n\
             [[billing.accounts]]\nid = \"billing@acme\"\n",
        )
        .unwrap();
        let problems = Settings::load_files(&[path], false).unwrap().validate();
        let all: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        let all = all.join("\n");
        assert!(
            all.contains("billing.accounts[1].id: account \"AP@Initech.Example\" is listed twice"),
            "{all}"
        );
        assert!(
            all.contains("billing.accounts[2].id: \"billing@acme\" is neither an account id nor an e-mail address"),
            "{all}"
        );
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[billing]\nrequire_aproval = true\n").unwrap();
        let err = Settings::load_files(&[path], false).unwrap_err();
        assert!(err.to_string().contains("require_aproval"), "{err}");
    }
}
