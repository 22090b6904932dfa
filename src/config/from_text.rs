//! A configuration file's text read without touching the file system or the environment: the
//! configuration parser as a pure function, which the fuzz harness feeds arbitrary input.

use super::{Settings, find_secrets};
use crate::problem::{ConfigError, Problem};
use std::path::Path;

impl Settings {
    /// Reads one configuration file's text as [`Settings::load_files`] reads a file (secrets
    /// and unknown keys refused), without the environment; `name` stands for the file in
    /// problems. The configuration parser as a pure function, for the fuzz harness.
    pub fn from_toml(name: &str, text: &str) -> Result<Settings, ConfigError> {
        let file = || config::File::from_str(text, config::FileFormat::Toml);
        let built = config::Config::builder().add_source(file()).build();
        let value = built
            .and_then(|c| c.try_deserialize::<serde_json::Value>())
            .map_err(|e| ConfigError(vec![Problem::new(name, e.to_string())]))?;
        let mut problems = Vec::new();
        find_secrets(&value, "", Path::new(name), &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        config::Config::builder()
            .add_source(file())
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| {
                ConfigError(vec![Problem::new(
                    name,
                    format!("{e} (see docs/CONFIG.md for every key)"),
                )])
            })
    }
}
