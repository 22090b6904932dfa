//! A configuration file's text read without touching the file system or the environment: the
//! configuration parser as a pure function, which the fuzz harness feeds arbitrary input.

use super::Settings;
use super::load::{file_layer, merge};
use crate::problem::ConfigError;

impl Settings {
    /// Reads one configuration file's text as [`Settings::load_files`] reads a file (secrets
    /// and unknown keys refused, every problem at `name:key`), without the environment; `name`
    /// stands for the file in problems. The configuration parser as a pure function, for the
    /// fuzz harness.
    pub fn from_toml(name: &str, text: &str) -> Result<Settings, ConfigError> {
        let mut problems = Vec::new();
        let source = config::File::from_str(text, config::FileFormat::Toml);
        let layers = file_layer(name, source, &mut problems)
            .into_iter()
            .collect();
        merge(layers, problems).into_result()
    }
}
