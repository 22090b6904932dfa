//! `[sinks.rambase]`: where RamBase is, which plan item each line is billed on, and the checks
//! of those settings at start-up.

use super::*;

/// `[sinks.rambase]`: where RamBase is and which plan item each line is billed on.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RamBaseSettings {
    /// API root, e.g. `https://api.rambase.net/` (the simulator: `http://127.0.0.1:PORT/`).
    pub base_url: String,
    /// OAuth client id of the API client registered in RamBase.
    pub client_id: String,
    /// OAuth client secret. Set it ONLY through the environment variable
    /// `TALLY__SINKS__RAMBASE__CLIENT_SECRET`; it is redacted in `Debug` and never logged.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// The company database (`$db`); omitted when the client has a single company.
    #[serde(default)]
    pub db: Option<String>,
    /// The plan item each (billing account, license type) is billed on.
    #[serde(default)]
    pub items: Vec<RamBaseItem>,
    /// `"YYYY-MM"` → the recurring invoice period id that month's usage is registered on, for
    /// every plan that has no period id of its own for the month in `mapping_file`.
    #[serde(default)]
    pub period_ids: BTreeMap<String, u64>,
    /// A CSV table of plan items and of each plan's own period id per month, with the header
    /// `billing_account,license_type,plan_id,item_id,month,period_id` (docs/CONFIG.md). Read
    /// and checked at start-up; a relative path is read from the directory tally runs in.
    #[serde(default)]
    pub mapping_file: Option<PathBuf>,
    /// Timeouts and retries of the RamBase client.
    #[serde(default)]
    pub http: HttpSettings,
}

impl fmt::Debug for RamBaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RamBaseSettings")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("db", &self.db)
            .field("items", &self.items)
            .field("period_ids", &self.period_ids)
            .field("mapping_file", &self.mapping_file)
            .field("http", &self.http)
            .finish()
    }
}

/// One entry of `[[sinks.rambase.items]]`: a customer's license type and the RamBase
/// recurring invoice plan item its usage is registered on.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RamBaseItem {
    /// The billing account as lines carry it (the RamBase customer).
    pub billing_account: String,
    /// The license type as the mapping rules and pricing table name it.
    pub license_type: String,
    /// The customer's recurring invoice plan id (≥ 100000).
    pub plan_id: u64,
    /// The item on that plan (≥ 1) whose usage this license type is.
    pub item_id: u64,
}

impl RamBaseSettings {
    /// Every problem at once, each with its full key path under `at` (`sinks.rambase`).
    pub fn validate(&self, at: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        match reqwest::Url::parse(&self.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            Ok(_) | Err(_) => problems.push(Problem::new(
                format!("{at}.base_url"),
                format!(
                    "{:?} is not an http(s) URL; expected e.g. \"https://api.rambase.net/\"",
                    self.base_url
                ),
            )),
        }
        if self.client_id.trim().is_empty() {
            problems.push(Problem::new(
                format!("{at}.client_id"),
                "is empty: set the OAuth client id of tally's RamBase API client",
            ));
        }
        if self
            .client_secret
            .as_ref()
            .is_none_or(|s| s.expose_secret().trim().is_empty())
        {
            problems.push(Problem::new(
                format!("{at}.client_secret"),
                format!("is missing: set the environment variable {CLIENT_SECRET_ENV}"),
            ));
        }
        if self.db.as_deref().is_some_and(|db| db.trim().is_empty()) {
            problems.push(Problem::new(
                format!("{at}.db"),
                "is empty: remove it or name the company database",
            ));
        }
        let mut keys = HashSet::new();
        let mut targets: HashMap<(u64, u64), usize> = HashMap::new();
        for (i, item) in self.items.iter().enumerate() {
            let here = format!("{at}.items[{i}]");
            if item.billing_account.trim().is_empty() {
                problems.push(Problem::new(format!("{here}.billing_account"), "is empty"));
            }
            if item.license_type.trim().is_empty() {
                problems.push(Problem::new(format!("{here}.license_type"), "is empty"));
            }
            if item.plan_id < 100_000 {
                problems.push(Problem::new(
                    format!("{here}.plan_id"),
                    format!(
                        "{} is not a RamBase recurring invoice plan id (they are ≥ 100000)",
                        item.plan_id
                    ),
                ));
            }
            if item.item_id < 1 {
                problems.push(Problem::new(
                    format!("{here}.item_id"),
                    "0 is not a RamBase plan item id (they are ≥ 1)",
                ));
            }
            if !keys.insert((&item.billing_account, &item.license_type)) {
                problems.push(Problem::new(
                    here.clone(),
                    format!(
                        "billing account {:?} with license type {:?} is configured twice; keep one entry",
                        item.billing_account, item.license_type
                    ),
                ));
            }
            // tally recognises its own usages by plan item (RamBase has no idempotency key), so
            // two kinds of line sharing one item would make recovery after a crash ambiguous.
            if let Some(first) = targets.insert((item.plan_id, item.item_id), i) {
                problems.push(Problem::new(
                    here,
                    format!(
                        "plan {} item {} is also used by {at}.items[{first}]; each (billing account, \
                         license type) needs its own plan item so that tally can tell its usages apart",
                        item.plan_id, item.item_id
                    ),
                ));
            }
        }
        for (key, id) in &self.period_ids {
            let here = format!("{at}.period_ids.{key:?}");
            match key.parse::<Period>() {
                Ok(p) if p.to_string() == *key => {}
                _ => problems.push(Problem::new(
                    here.clone(),
                    format!("{key:?} is not a month: expected YYYY-MM, e.g. \"2026-10\""),
                )),
            }
            if *id < 100_000 {
                problems.push(Problem::new(
                    here,
                    format!(
                        "{id} is not a RamBase recurring invoice period id (they are ≥ 100000)"
                    ),
                ));
            }
        }
        if self
            .mapping_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            problems.push(Problem::new(
                format!("{at}.mapping_file"),
                "is empty: remove it or name the CSV file, e.g. \"config/rambase.csv\"",
            ));
        }
        problems.extend(self.http.validate(at));
        problems
    }

    /// The plan items and period ids lines are billed on: `items` and `period_ids` with the
    /// mapping file (read here). Every problem of the file at once, at `file:row:column`,
    /// including a row that contradicts `items`.
    pub(super) fn plans(&self) -> Result<Plans, Vec<Problem>> {
        let mut items: HashMap<(String, String), (u64, u64)> = self
            .items
            .iter()
            .map(|i| {
                (
                    (i.billing_account.clone(), i.license_type.clone()),
                    (i.plan_id, i.item_id),
                )
            })
            .collect();
        let mut file_periods = HashMap::new();
        if let Some(path) = &self.mapping_file {
            let file = mapping::MappingFile::load(path, &self.items)?;
            items.extend(
                file.items
                    .into_iter()
                    .map(|i| ((i.billing_account, i.license_type), (i.plan_id, i.item_id))),
            );
            file_periods = file.periods;
        }
        Ok(Plans {
            items,
            file_periods,
            period_ids: self.period_ids.clone(),
            mapping_file: self.mapping_file.clone(),
        })
    }
}
