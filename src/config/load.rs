//! Reading the layers — files, then `TALLY__...` variables, then `DATABASE_URL` — so that one
//! pass finds every problem of every layer, each named by where it came from: `file:key` for a
//! value read from a file, the variable's name for a value read from the environment.
//!
//! Why not the `config` crate's own `try_deserialize`: it stops at the first wrong key and names
//! no origin for an unknown one, so four problems took several runs and a typo in a variable
//! was blamed on `config/default.toml`. Here every layer is collected on its own, its values
//! relabelled with their origin, merged by the crate, and deserialized again and again, each
//! wrong key reported and left out, until what is left reads.

use super::{SECRET_KEYS, Settings};
use crate::problem::{ConfigError, Problem, env_var_for};
use config::{Map, Value, ValueKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The prefix of the variables tally reads (`TALLY__SECTION__KEY`).
const ENV_PREFIX: &str = "TALLY";

/// A deserialization gives up after this many wrong keys: past it, the rest of the listing
/// would be the consequences of the first ones.
const MAX_KEY_PROBLEMS: usize = 64;

/// The configuration as read: the settings (with every wrong key left out, so that the checks
/// that follow still see the rest), every problem of the layers, and notes worth telling.
#[derive(Debug)]
pub struct Loaded {
    /// `None` when what is left could not be read at all.
    pub settings: Option<Settings>,
    pub problems: Vec<Problem>,
    /// Things that are not wrong but that an operator should know (a missing environment layer).
    pub notes: Vec<String>,
}

impl Loaded {
    /// The settings when nothing is wrong, else every problem.
    pub fn into_result(self) -> Result<Settings, ConfigError> {
        match self.settings {
            Some(settings) if self.problems.is_empty() => Ok(settings),
            _ => Err(ConfigError(self.problems)),
        }
    }
}

/// One layer's values, relabelled with the origin an operator edits.
#[derive(Debug, Clone)]
pub(super) struct Layer(Map<String, Value>);

impl config::Source for Layer {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        Ok(self.0.clone())
    }
}

impl Settings {
    /// Loads the layers: `file` alone if given, else `config/default.toml` then
    /// `config/$TALLY_ENV.toml` (if it exists); then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_all(file).into_result()
    }

    /// [`Settings::load`], keeping going past problems: every problem of every layer, and the
    /// settings without the wrong keys (for `tally check-config`, which checks the rest too).
    pub fn load_all(file: Option<&Path>) -> Loaded {
        let mut files = Vec::new();
        let mut notes = Vec::new();
        match file {
            Some(path) => {
                if !path.is_file() {
                    return Loaded {
                        settings: None,
                        problems: vec![Problem::new(
                            path.display().to_string(),
                            "no such configuration file (check --config)",
                        )],
                        notes,
                    };
                }
                files.push(path.to_path_buf());
            }
            None => {
                let default = PathBuf::from("config/default.toml");
                if default.is_file() {
                    files.push(default);
                }
                if let Ok(env) = std::env::var("TALLY_ENV") {
                    let path = PathBuf::from(format!("config/{env}.toml"));
                    if path.is_file() {
                        files.push(path);
                    } else {
                        // A mounted config/ without the environment's overlay (a container's
                        // TALLY_ENV=production) is a complete configuration all the same.
                        notes.push(format!(
                            "TALLY_ENV={env}: {} does not exist, so only config/default.toml \
                             and the environment are read",
                            path.display()
                        ));
                    }
                }
            }
        }
        let mut loaded = Self::load_files_all(&files, true);
        loaded.notes.extend(notes);
        loaded
    }

    /// Loads the given files in order, then (if `with_env`) the `TALLY__...` variables and
    /// `DATABASE_URL`.
    pub fn load_files(files: &[PathBuf], with_env: bool) -> Result<Settings, ConfigError> {
        Self::load_files_all(files, with_env).into_result()
    }

    /// [`Settings::load_files`], keeping going past problems.
    pub fn load_files_all(files: &[PathBuf], with_env: bool) -> Loaded {
        let mut problems = Vec::new();
        let mut layers = Vec::new();
        for path in files {
            let name = path.display().to_string();
            let source = config::File::from(path.as_path()).format(config::FileFormat::Toml);
            if let Some(layer) = file_layer(&name, source, &mut problems) {
                layers.push(layer);
            }
        }
        if with_env {
            layers.extend(env_layers(&mut problems));
        }
        let mut loaded = merge(layers, problems);
        if let Some(settings) = &mut loaded.settings {
            settings.loaded_from = files.to_vec();
        }
        loaded
    }

    /// Where a key's value came from (`config/default.toml:general.timezone`, or
    /// `TALLY__GENERAL__TIMEZONE`), for a problem found after loading; `None` for a key no
    /// layer set (a default, or a missing value).
    pub fn origin_of(&self, key: &str) -> Option<&str> {
        self.origins.get(key).map(String::as_str)
    }

    /// The problems found by the checks after loading, each named by the origin of its key
    /// where a layer set it (a problem of a missing key, or of a file's row, stays as it is).
    pub fn attribute(&self, problems: Vec<Problem>) -> Vec<Problem> {
        problems
            .into_iter()
            .map(|p| match self.origin_of(&p.at) {
                Some(origin) => Problem::new(origin, p.message),
                None => p,
            })
            .collect()
    }
}

/// A file's values, or its problem: a file that does not parse is left out, the others are
/// still read. Secrets in it are reported here, naming the file to edit.
pub(super) fn file_layer<S>(name: &str, source: S, problems: &mut Vec<Problem>) -> Option<Layer>
where
    S: config::Source + Send + Sync + 'static,
{
    let map = match config::Config::builder()
        .add_source(source)
        .build()
        .and_then(|c| config::Source::collect(&c))
    {
        Ok(map) => map,
        Err(e) => {
            problems.push(Problem::new(name, file_error(&e)));
            return None;
        }
    };
    find_secrets(&map, "", name, problems);
    let label = |key: &str| format!("{name}:{key}");
    Some(Layer(relabel_map(map, "", &label)))
}

/// The `TALLY__...` variables, one layer each (labelled with its own name), then
/// `DATABASE_URL`.
fn env_layers(problems: &mut Vec<Problem>) -> Vec<Layer> {
    let mut layers = Vec::new();
    let prefix = format!("{ENV_PREFIX}__").to_lowercase();
    let mut vars: Vec<(String, std::ffi::OsString)> = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value)))
        .filter(|(name, _)| name.to_lowercase().starts_with(&prefix))
        .collect();
    vars.sort();
    for (name, value) in vars {
        let Ok(value) = value.into_string() else {
            problems.push(Problem::new(&name, "is not UTF-8 text"));
            continue;
        };
        let one = Map::from([(name.clone(), value)]);
        let collected = config::Source::collect(
            &config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(one)),
        );
        match collected {
            Ok(map) => layers.push(Layer(relabel_map(map, "", &|_| name.clone()))),
            Err(e) => problems.push(Problem::new(&name, e.to_string())),
        }
    }
    if let Ok(url) = std::env::var("DATABASE_URL")
        && !url.trim().is_empty()
    {
        let origin = "DATABASE_URL".to_owned();
        layers.push(Layer(Map::from([(
            "database.url".to_owned(),
            Value::new(Some(&origin), ValueKind::String(url)),
        )])));
    }
    layers
}

/// The layers merged (the last winning), deserialized with every wrong key reported and left
/// out.
pub(super) fn merge(layers: Vec<Layer>, mut problems: Vec<Problem>) -> Loaded {
    let mut builder = config::Config::builder();
    for layer in layers {
        builder = builder.add_source(layer);
    }
    let mut root = match builder.build().and_then(|c| config::Source::collect(&c)) {
        Ok(root) => root,
        Err(e) => {
            problems.push(Problem::new("configuration", e.to_string()));
            return Loaded {
                settings: None,
                problems,
                notes: Vec::new(),
            };
        }
    };
    let origins = origins(&root);
    let mut settings = None;
    for _ in 0..MAX_KEY_PROBLEMS {
        let value = Value::new(None, ValueKind::Table(root.clone()));
        match value.try_deserialize::<Settings>() {
            Ok(mut read) => {
                read.origins = origins.clone();
                settings = Some(read);
                break;
            }
            Err(e) => {
                let wrong = wrong_key(&e);
                let at = origin_at(&origins, &wrong.report)
                    .or_else(|| origin_at(&origins, &wrong.remove))
                    .unwrap_or_else(|| {
                        if wrong.report.is_empty() {
                            "configuration".to_owned()
                        } else {
                            wrong.report.clone()
                        }
                    });
                problems.push(Problem::new(
                    at,
                    format!("{} (see docs/CONFIG.md for every key)", wrong.message),
                ));
                if !remove(&mut root, &wrong.remove) {
                    break;
                }
            }
        }
    }
    Loaded {
        settings,
        problems,
        notes: Vec::new(),
    }
}

/// A deserialization error's key: the one to name and the one to leave out (a table missing a
/// field is left out whole), with the message without the crate's key and origin suffix.
struct WrongKey {
    report: String,
    remove: String,
    message: String,
}

fn wrong_key(e: &config::ConfigError) -> WrongKey {
    let (key, message) = match e {
        config::ConfigError::Type {
            key,
            unexpected,
            expected,
            ..
        } => (
            key.clone().unwrap_or_default(),
            format!("invalid type: {unexpected}, expected {expected}"),
        ),
        config::ConfigError::At { error, key, .. } => {
            (key.clone().unwrap_or_default(), error.to_string())
        }
        config::ConfigError::NotFound(key) => {
            // The crate writes `accounts[1]id` for the `id` of `accounts[1]`.
            let key = dotted(key);
            let (parent, field) = match key.rfind(['.', '[']) {
                Some(at) if key.as_bytes()[at] == b'.' => (&key[..at], &key[at + 1..]),
                _ => ("", key.as_str()),
            };
            return WrongKey {
                report: key.clone(),
                remove: parent.to_owned(),
                message: format!("missing field `{field}`"),
            };
        }
        other => (String::new(), other.to_string()),
    };
    let join = |field: &str| {
        if key.is_empty() {
            field.to_owned()
        } else {
            format!("{key}.{field}")
        }
    };
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    if let Some(field) = quoted("unknown field `") {
        let at = join(&field);
        WrongKey {
            report: at.clone(),
            remove: at,
            message,
        }
    } else if let Some(field) = quoted("missing field `") {
        WrongKey {
            report: join(&field),
            remove: key.clone(),
            message,
        }
    } else {
        WrongKey {
            report: key.clone(),
            remove: key,
            message,
        }
    }
}

/// A key path with a dot after every `]` that a key follows (`a[1]id` → `a[1].id`).
fn dotted(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    let mut after_index = false;
    for c in key.chars() {
        if after_index && c != '.' && c != '[' {
            out.push('.');
        }
        after_index = c == ']';
        out.push(c);
    }
    out
}

/// The crate's message of a file that does not parse, without the absolute path it prepends.
fn file_error(e: &config::ConfigError) -> String {
    match e {
        config::ConfigError::FileParse { cause, .. } => cause.to_string(),
        other => other.to_string(),
    }
}

/// Every value of `map` given `label(key)` as its origin, recursively.
fn relabel_map(
    map: Map<String, Value>,
    prefix: &str,
    label: &dyn Fn(&str) -> String,
) -> Map<String, Value> {
    map.into_iter()
        .map(|(key, value)| {
            let path = join_key(prefix, &key);
            let value = relabel(value, &path, label);
            (key, value)
        })
        .collect()
}

fn relabel(value: Value, path: &str, label: &dyn Fn(&str) -> String) -> Value {
    let origin = label(path);
    let kind = match value.kind {
        ValueKind::Table(map) => ValueKind::Table(relabel_map(map, path, label)),
        ValueKind::Array(items) => ValueKind::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| relabel(v, &format!("{path}[{i}]"), label))
                .collect(),
        ),
        other => other,
    };
    Value::new(Some(&origin), kind)
}

fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The origin of the key at `path`: its own, or for a table that only its keys carry an origin
/// for, the file of its first key (`file:path`) or the variable that set it.
fn origin_at(origins: &BTreeMap<String, String>, path: &str) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    if let Some(origin) = origins.get(path) {
        return Some(origin.clone());
    }
    let (key, origin) = origins
        .range(path.to_owned()..)
        .take_while(|(key, _)| key.starts_with(path))
        .find(|(key, _)| matches!(key.as_bytes().get(path.len()), Some(b'.' | b'[')))?;
    Some(match origin.strip_suffix(&format!(":{key}")) {
        Some(file) => format!("{file}:{path}"),
        None => origin.clone(),
    })
}

/// Every key's origin (`billing.accounts[0].id` → `config/x.toml:billing.accounts[0].id`).
fn origins(root: &Map<String, Value>) -> BTreeMap<String, String> {
    fn walk(value: &Value, path: String, out: &mut BTreeMap<String, String>) {
        match &value.kind {
            ValueKind::Table(map) => {
                for (key, inner) in map {
                    walk(inner, join_key(&path, key), out);
                }
            }
            ValueKind::Array(items) => {
                for (i, inner) in items.iter().enumerate() {
                    walk(inner, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
        if let Some(origin) = value.origin() {
            out.insert(path, origin.to_owned());
        }
    }
    let mut out = BTreeMap::new();
    for (key, value) in root {
        walk(value, key.clone(), &mut out);
    }
    out
}

/// Leaves the key at `path` (`a.b[2].c`) out of the tree; false when there is no such key.
fn remove(root: &mut Map<String, Value>, path: &str) -> bool {
    let mut kind = ValueKind::Table(std::mem::take(root));
    let removed = remove_in(&mut kind, &segments(path));
    if let ValueKind::Table(map) = kind {
        *root = map;
    }
    removed
}

fn remove_in(kind: &mut ValueKind, segments: &[Segment]) -> bool {
    match (segments, kind) {
        ([Segment::Key(key)], ValueKind::Table(map)) => map.remove(key).is_some(),
        ([Segment::Index(i)], ValueKind::Array(items)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        ([Segment::Key(key), rest @ ..], ValueKind::Table(map)) if !rest.is_empty() => map
            .get_mut(key)
            .is_some_and(|v| remove_in(&mut v.kind, rest)),
        ([Segment::Index(i), rest @ ..], ValueKind::Array(items)) if !rest.is_empty() => items
            .get_mut(*i)
            .is_some_and(|v| remove_in(&mut v.kind, rest)),
        _ => false,
    }
}

enum Segment {
    Key(String),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            if open > 0 {
                out.push(Segment::Key(rest[..open].to_owned()));
            }
            rest = &rest[open..];
            while let Some(close) = rest.find(']') {
                if let Ok(i) = rest[1..close].parse() {
                    out.push(Segment::Index(i));
                }
                rest = &rest[close + 1..];
            }
        } else {
            out.push(Segment::Key(rest.to_owned()));
        }
    }
    out
}

/// Reports every secret-named key found in a configuration file.
fn find_secrets(map: &Map<String, Value>, prefix: &str, file: &str, problems: &mut Vec<Problem>) {
    for (key, inner) in map {
        let path = join_key(prefix, key);
        if SECRET_KEYS.contains(&key.as_str()) {
            problems.push(Problem::new(
                format!("{file}:{path}"),
                format!(
                    "secrets are read from the environment only: remove it from the file and set {}",
                    env_var_for(&path)
                ),
            ));
        } else if let ValueKind::Table(table) = &inner.kind {
            find_secrets(table, &path, file, problems);
        } else if let ValueKind::Array(items) = &inner.kind {
            for (i, item) in items.iter().enumerate() {
                if let ValueKind::Table(table) = &item.kind {
                    find_secrets(table, &format!("{path}[{i}]"), file, problems);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;

    fn problems(text: &str) -> Vec<String> {
        match Settings::from_toml("t.toml", text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn every_wrong_key_is_reported_at_file_and_key_and_the_rest_still_read() {
        let found = problems(
            "[sorces]\nx = 1\n\
             [general]\nshutdown_timeout_secs = \"soon\"\n\
             [billing]\nrounding = \"up\"\n\
             [[billing.accounts]]\nid = \"A\"\ncurency = \"EUR\"\n\
             [[billing.accounts]]\ncurrency = \"EUR\"\n",
        );
        let all = found.join("\n");
        for expected in [
            "t.toml:sorces: unknown field `sorces`",
            "t.toml:general.shutdown_timeout_secs: invalid type: string \"soon\", expected an integer",
            "t.toml:billing.rounding: ",
            "t.toml:billing.accounts[0].curency: unknown field `curency`",
            // A table missing a required key is named by its key, and left out whole.
            "t.toml:billing.accounts[1]: missing field `id`",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "missing {expected:?} in:\n{all}"
            );
        }
        assert_eq!(found.len(), 5, "{all}");
    }

    #[test]
    fn what_is_left_after_the_wrong_keys_is_read_and_each_key_keeps_its_origin() {
        let loaded = {
            let mut problems = Vec::new();
            let source = config::File::from_str(
                "[general]\ntimezone = \"Mars\"\nshutdown_timeout_secs = -1\n",
                config::FileFormat::Toml,
            );
            let layers = super::file_layer("t.toml", source, &mut problems)
                .into_iter()
                .collect();
            super::merge(layers, problems)
        };
        assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
        let settings = loaded.settings.expect("the rest is read");
        assert_eq!(settings.general.timezone, "Mars");
        assert_eq!(
            settings.origin_of("general.timezone"),
            Some("t.toml:general.timezone")
        );
        let attributed = settings.attribute(settings.validate());
        assert!(
            attributed
                .iter()
                .any(|p| p.at == "t.toml:general.timezone" && p.message.contains("Mars")),
            "{attributed:?}"
        );
    }

    #[test]
    fn a_file_that_does_not_parse_is_one_problem_naming_the_file() {
        let found = problems("[general\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("t.toml: "), "{found:?}");
    }
}
