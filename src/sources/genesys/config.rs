//! `[sources.genesys]`: the settings of the Genesys Cloud billing connector and their checks.

use crate::http::HttpSettings;
use crate::problem::Problem;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// Longest wait between two polls of a report still `InProgress`: polling backs off from
/// `poll_interval_ms` up to this (or up to `poll_interval_ms` when that is larger).
pub const MAX_POLL_INTERVAL_MS: u64 = 30_000;

/// `[sources.genesys]`.
///
/// ```toml
/// [sources.genesys]
/// region = "mypurecloud.ie"
/// [sources.genesys.orgs.acme]
/// org_id = "4c7a4b6e-9f0a-4a8e-8d53-2f6c1b0f9e11"
/// client_id = "a1b2c3d4-..."
/// # client_secret: TALLY__SOURCES__GENESYS__ORGS__ACME__CLIENT_SECRET
/// [sources.genesys.licenses]
/// "Genesys Cloud CX 3" = "Contact centre agent (CX 3)"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesysSettings {
    /// Whether the source is read at all; `false` keeps its configuration without using it
    /// (e.g. while an OAuth client is being replaced).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The region's host, e.g. `mypurecloud.com` (default), `mypurecloud.ie`,
    /// `usw2.pure.cloud`: the API is `https://api.<region>`, the login `https://login.<region>`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Replaces `https://api.<region>` (the simulator: `http://127.0.0.1:PORT`).
    #[serde(default)]
    pub api_base_url: Option<String>,
    /// Replaces `https://login.<region>` (the simulator: `http://127.0.0.1:PORT`).
    #[serde(default)]
    pub login_base_url: Option<String>,
    /// One OAuth client (client credentials grant) per customer organization, keyed by a short
    /// name made of lower-case letters, digits and single underscores (it is part of the
    /// environment variable that carries the secret). Each org is one scope of the source.
    #[serde(default)]
    pub orgs: BTreeMap<String, GenesysOrg>,
    /// Usage name (`usages[].name`, exactly as Genesys spells it) → license type in the pricing
    /// table. A usage whose name is not here is reported as an exception, never dropped.
    #[serde(default)]
    pub licenses: BTreeMap<String, String>,
    /// First wait (milliseconds) before asking again for a report that is `InProgress`; later
    /// waits double, up to 30 s.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How long (seconds) one org's report may stay `InProgress` before the org's part of the
    /// run fails with a message to re-run later.
    #[serde(default = "default_max_wait_secs")]
    pub max_wait_secs: u64,
    /// Organizations extracted side by side, 1..=32 (default 4); each has its own OAuth client
    /// and checkpoint. Set 1 to ask for one organization's report at a time.
    #[serde(default = "crate::sources::default_scopes_at_once")]
    pub scopes_at_once: u32,
    /// Timeouts and retries for this peer (token and API requests alike).
    #[serde(default)]
    pub http: HttpSettings,
}

/// `[sources.genesys.orgs.<name>]`: one customer organization and its OAuth client.
///
/// `org_id` and `client_id` default to empty so that an org whose name is spelled differently
/// in a file and in the environment shows up in `validate` with every key it lacks, rather
/// than as a bare deserialization error.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesysOrg {
    /// The organization's id (a UUID); it is the customer key of every record of the org.
    #[serde(default)]
    pub org_id: String,
    /// The OAuth client's id (client credentials grant, created in the org's Genesys admin).
    #[serde(default)]
    pub client_id: String,
    /// The OAuth client's secret. Set it ONLY through the environment variable
    /// `TALLY__SOURCES__GENESYS__ORGS__<NAME>__CLIENT_SECRET`; `Debug` shows it redacted.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
}

fn default_enabled() -> bool {
    true
}

fn default_region() -> String {
    "mypurecloud.com".to_owned()
}

fn default_poll_interval_ms() -> u64 {
    2_000
}

fn default_max_wait_secs() -> u64 {
    300
}

impl GenesysSettings {
    /// Every problem at once, each naming its full key (`at` is `sources.genesys`).
    ///
    /// A disabled source is still checked, except for its secrets. A secret written in a
    /// configuration file is refused earlier, when the file is read (`config::load_files`),
    /// with the variable to set instead.
    pub fn validate(&self, at: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let key = |field: &str| format!("{at}.{field}");

        if let Err(message) = check_region(&self.region) {
            problems.push(Problem::new(key("region"), message));
        }
        for (field, value) in [
            ("api_base_url", &self.api_base_url),
            ("login_base_url", &self.login_base_url),
        ] {
            if let Some(url) = value
                && let Err(message) = crate::http::check_base_url(
                    url,
                    "e.g. http://127.0.0.1:8084 for the simulator",
                    "client secrets come from the environment",
                )
            {
                problems.push(Problem::new(key(field), message));
            }
        }

        if self.orgs.is_empty() {
            problems.push(Problem::new(
                key("orgs"),
                "no organization is configured: add a [sources.genesys.orgs.<name>] table \
                 with org_id and client_id for each customer organization",
            ));
        }
        let mut seen_ids: HashMap<String, &str> = HashMap::new();
        for (name, org) in &self.orgs {
            let org_at = format!("{at}.orgs.{name}");
            if let Err(message) = check_org_name(name) {
                problems.push(Problem::new(org_at.clone(), message));
            }
            match parse_org_id(&org.org_id) {
                Ok(id) => {
                    if let Some(first) = seen_ids.insert(id.clone(), name) {
                        problems.push(Problem::new(
                            format!("{org_at}.org_id"),
                            format!(
                                "{id} is also the org_id of orgs.{first}: one organization \
                                 would be read (and billed) twice"
                            ),
                        ));
                    }
                }
                Err(message) => {
                    problems.push(Problem::new(format!("{org_at}.org_id"), message));
                }
            }
            if org.client_id.trim().is_empty() {
                problems.push(Problem::new(
                    format!("{org_at}.client_id"),
                    "is missing: set the id of the org's OAuth client (client credentials grant)",
                ));
            }
            if self.enabled {
                let env = secret_env_var(at, name);
                match &org.client_secret {
                    None => problems.push(Problem::new(
                        format!("{org_at}.client_secret"),
                        format!("is missing: set the environment variable {env}"),
                    )),
                    Some(secret) if secret.expose_secret().trim().is_empty() => {
                        problems.push(Problem::new(
                            format!("{org_at}.client_secret"),
                            format!("is empty: set the environment variable {env}"),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }

        if self.licenses.is_empty() {
            problems.push(Problem::new(
                key("licenses"),
                "no usage name is mapped to a license type: every usage would be an exception; \
                 add e.g. \"Genesys Cloud CX 3\" = \"<license type in the pricing table>\"",
            ));
        }
        for (name, license) in &self.licenses {
            if name.trim().is_empty() {
                problems.push(Problem::new(
                    key("licenses"),
                    "has an empty usage name; use the name exactly as Genesys reports it",
                ));
            } else if license.trim().is_empty() {
                problems.push(Problem::new(
                    format!("{at}.licenses.{name:?}"),
                    "is empty: name the license type as in the pricing table",
                ));
            }
        }

        if self.poll_interval_ms == 0 || self.poll_interval_ms > 600_000 {
            problems.push(Problem::new(
                key("poll_interval_ms"),
                format!(
                    "is {}, must be between 1 and 600000 (default 2000)",
                    self.poll_interval_ms
                ),
            ));
        }
        if self.max_wait_secs == 0 || self.max_wait_secs > 86_400 {
            problems.push(Problem::new(
                key("max_wait_secs"),
                format!(
                    "is {}, must be between 1 and 86400 (default 300)",
                    self.max_wait_secs
                ),
            ));
        }
        problems.extend(crate::sources::check_scopes_at_once(
            self.scopes_at_once,
            key("scopes_at_once"),
        ));
        problems.extend(self.http.validate(at));
        problems
    }

    /// `https://api.<region>`, or `api_base_url` when set.
    pub fn api_url(&self) -> String {
        self.api_base_url
            .as_deref()
            .map(|u| u.trim().to_owned())
            .unwrap_or_else(|| format!("https://api.{}", self.region.trim()))
    }

    /// `https://login.<region>`, or `login_base_url` when set.
    pub fn login_url(&self) -> String {
        self.login_base_url
            .as_deref()
            .map(|u| u.trim().to_owned())
            .unwrap_or_else(|| format!("https://login.{}", self.region.trim()))
    }
}

/// The environment variable that carries org `name`'s client secret:
/// `TALLY__SOURCES__GENESYS__ORGS__ACME__CLIENT_SECRET` for `sources.genesys` and `acme`.
pub fn secret_env_var(at: &str, name: &str) -> String {
    crate::problem::env_var_for(&format!("{at}.orgs.{name}.client_secret"))
}

/// The org id in its canonical spelling (lower case, hyphenated), or why it is not a UUID.
/// Braces and upper case are accepted, as systems print the same GUID in several spellings.
pub fn parse_org_id(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(
            "is missing: set the organization's id (a UUID, Admin > Organization Settings)"
                .to_owned(),
        );
    }
    let bare = trimmed
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(trimmed);
    let groups: Vec<&str> = bare.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let hex = groups
        .iter()
        .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()));
    if lengths != [8, 4, 4, 4, 12] || !hex {
        return Err(format!(
            "{text:?} is not a UUID; expected e.g. 4c7a4b6e-9f0a-4a8e-8d53-2f6c1b0f9e11"
        ));
    }
    Ok(bare.to_ascii_lowercase())
}

/// Org names are part of an environment variable name, which the `config` crate reads in
/// lower case and splits at `__`: anything else could never receive its secret.
fn check_org_name(name: &str) -> Result<(), String> {
    let allowed = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if name.is_empty()
        || !allowed
        || name.starts_with('_')
        || name.ends_with('_')
        || name.contains("__")
    {
        return Err(format!(
            "org name {name:?} must be lower-case letters, digits and single underscores \
             (e.g. acme_nordic), because its client secret comes from the environment variable \
             {}",
            secret_env_var("sources.genesys", "<name>")
        ));
    }
    Ok(())
}

/// `Ok` when `region` is a bare host such as `mypurecloud.ie`.
fn check_region(region: &str) -> Result<(), String> {
    let region = region.trim();
    let example = "e.g. mypurecloud.com, mypurecloud.ie or usw2.pure.cloud";
    if region.is_empty() {
        return Err(format!("is empty; {example}"));
    }
    let host_like = region
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && region.contains('.')
        && !region.starts_with('.')
        && !region.ends_with('.');
    if !host_like {
        return Err(format!(
            "{region:?} is not a region host (no scheme, no path, no api./login. prefix); {example}"
        ));
    }
    if region.starts_with("api.") || region.starts_with("login.") {
        return Err(format!(
            "{region:?} starts with api. or login.: give the region only; {example}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: &str = "sources.genesys";

    fn valid() -> GenesysSettings {
        GenesysSettings {
            enabled: true,
            region: "mypurecloud.ie".into(),
            api_base_url: None,
            login_base_url: None,
            orgs: [(
                "acme".to_owned(),
                GenesysOrg {
                    org_id: "4C7A4B6E-9F0A-4A8E-8D53-2F6C1B0F9E11".into(),
                    client_id: "client-acme".into(),
                    client_secret: Some(SecretString::from("s3cret-acme")),
                },
            )]
            .into(),
            licenses: [("Genesys Cloud CX 3".to_owned(), "CX 3 agent".to_owned())].into(),
            poll_interval_ms: 2_000,
            max_wait_secs: 300,
            scopes_at_once: 4,
            http: HttpSettings::default(),
        }
    }

    #[test]
    fn valid_settings_have_no_problems_and_urls_follow_the_region() {
        let settings = valid();
        assert_eq!(settings.validate(AT), vec![]);
        assert_eq!(settings.api_url(), "https://api.mypurecloud.ie");
        assert_eq!(settings.login_url(), "https://login.mypurecloud.ie");
        let overridden = GenesysSettings {
            api_base_url: Some("http://127.0.0.1:9".into()),
            login_base_url: Some("http://127.0.0.1:8".into()),
            ..valid()
        };
        assert_eq!(overridden.api_url(), "http://127.0.0.1:9");
        assert_eq!(overridden.login_url(), "http://127.0.0.1:8");
    }

    #[test]
    fn org_ids_are_canonical_uuids() {
        assert_eq!(
            parse_org_id("{4C7A4B6E-9F0A-4A8E-8D53-2F6C1B0F9E11}").unwrap(),
            "4c7a4b6e-9f0a-4a8e-8d53-2f6c1b0f9e11"
        );
        for bad in [
            "",
            "acme",
            "4c7a4b6e9f0a4a8e8d532f6c1b0f9e11",
            "4c7a4b6e-9f0a-4a8e-8d53-2f6c1b0f9e1x",
        ] {
            assert!(parse_org_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn org_names_must_reach_their_environment_variable() {
        for good in ["acme", "acme_nordic", "org2"] {
            assert!(check_org_name(good).is_ok(), "{good}");
        }
        for bad in [
            "Acme",
            "acme-nordic",
            "acme__x",
            "_acme",
            "acme_",
            "",
            "a b",
        ] {
            assert!(check_org_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let shown = format!("{:?}", valid());
        assert!(!shown.contains("s3cret-acme"), "{shown}");
    }

    #[test]
    fn defaults_apply_and_unknown_keys_are_refused() {
        let settings: GenesysSettings = serde_json::from_value(serde_json::json!({
            "orgs": {"acme": {"org_id": "4c7a4b6e-9f0a-4a8e-8d53-2f6c1b0f9e11", "client_id": "c"}},
        }))
        .unwrap();
        assert!(settings.enabled);
        assert_eq!(settings.region, "mypurecloud.com");
        assert_eq!(settings.poll_interval_ms, 2_000);
        assert_eq!(settings.max_wait_secs, 300);
        assert_eq!(settings.http, HttpSettings::default());
        assert!(settings.orgs["acme"].client_secret.is_none());

        let typo = serde_json::from_value::<GenesysSettings>(serde_json::json!({
            "orgs": {"acme": {"orgid": "x"}},
        }));
        assert!(typo.unwrap_err().to_string().contains("orgid"));
    }

    /// The `config` crate lower-cases environment keys and splits them at `__`: the secret
    /// variable must land in the org's table that the file declared.
    #[test]
    fn the_secret_variable_reaches_the_org_table_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("genesys.toml");
        std::fs::write(
            &path,
            "[orgs.acme_nordic]\norg_id = \"4c7a4b6e-9f0a-4a8e-8d53-2f6c1b0f9e11\"\n\
             client_id = \"c\"\n[licenses]\n\"Genesys Cloud CX 3\" = \"CX 3 agent\"\n",
        )
        .unwrap();
        let env: config::Map<String, String> = [(
            secret_env_var("sources.genesys", "acme_nordic").replace("SOURCES__GENESYS__", ""),
            "from-env".to_owned(),
        )]
        .into();
        let settings: GenesysSettings = config::Config::builder()
            .add_source(config::File::from(path.as_path()).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("TALLY")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(env)),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .unwrap();
        let org = &settings.orgs["acme_nordic"];
        assert_eq!(
            org.client_secret.as_ref().unwrap().expose_secret(),
            "from-env"
        );
        // Usage names keep their case and spaces when read from a file.
        assert!(settings.licenses.contains_key("Genesys Cloud CX 3"));
        assert_eq!(settings.validate(AT), vec![]);
    }
}
