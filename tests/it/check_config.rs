//! `tally check-config` and the start-up check of every command, as an operator meets them: a
//! customer map whose rows can never match, a `log.level` that tracing would half ignore, and a
//! configuration whose every source is disabled are refused with exit 2, every problem at once,
//! each naming its file:row:column or key and what to do.

use crate::common::{repo, text};
use std::path::Path;
use std::process::{Command, Output};
use tally::mapping::{CustomerMap, KeyMatch, key_form};
use tally::sim;

/// A folder laid out like a checkout: the demo configuration and its tables.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("demo")).unwrap();
    for file in ["demo.toml", "demo/pricing.csv", "demo/customers.csv"] {
        std::fs::copy(repo().join("config").join(file), config.join(file)).unwrap();
    }
    dir
}

/// `tally <args> --config config/demo.toml` in `dir`, with every demo secret set (so that the
/// only problems are the ones a test makes) and no database.
fn tally(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .current_dir(dir)
        .args(args)
        .args(["--config", "config/demo.toml"])
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .envs(sim::demo_secrets())
        .output()
        .unwrap()
}

fn edit(dir: &Path, file: &str, change: impl FnOnce(String) -> String) {
    let path = dir.join("config").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, change(text)).unwrap();
}

/// The problems of a refused configuration, one `  - ` line each.
fn problems(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("  - "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_demo_configuration_is_valid() {
    let dir = workspace();
    let output = tally(dir.path(), &["check-config"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("configuration is valid"));
}

#[test]
fn customer_map_rows_that_can_never_match_are_refused_all_at_once() {
    let dir = workspace();
    edit(dir.path(), "demo/customers.csv", |mut map| {
        map.push_str(
            // row 9 (after the demo's 7 rows): a source tally has no connector for
            "hubspot,Acme Corporation,ACME-001\n\
             ccc,A1C3E5F7-0B2D-4E6F-8A1C-3E5F7A9B000,ACME-001\n\
             genesys,globex-org,GLOBEX-002\n\
             billable_users,Hooli Labs,billing@\n\
             ccc,{a1c3e5f7-0b2d-4e6f-8a1c-3e5f7a9b0001},GLOBEX-002\n",
        );
        map
    });
    let output = tally(dir.path(), &["check-config"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let all = text(&output);
    let at = "config/demo/customers.csv";
    for expected in [
        format!(
            "{at}:9:source: unknown source \"hubspot\": a row must name one of billable_users, ccc, genesys"
        ),
        format!(
            "{at}:10:source_customer: \"A1C3E5F7-0B2D-4E6F-8A1C-3E5F7A9B000\" is not a CCC service GUID"
        ),
        format!("{at}:11:source_customer: \"globex-org\" is not a Genesys Cloud organization id"),
        format!(
            "{at}:12:billing_account: \"billing@\" is neither an account id nor an e-mail address"
        ),
        // The same service in another spelling, for another account: both rows are named.
        format!(
            "{at}:6:source_customer: source \"ccc\" customer \"A1C3E5F7-0B2D-4E6F-8A1C-3E5F7A9B0001\" \
             is mapped twice: also on row 13 as \"{{a1c3e5f7-0b2d-4e6f-8a1c-3e5f7a9b0001}}\" to account GLOBEX-002"
        ),
        format!(
            "{at}:13:source_customer: source \"ccc\" customer \"{{a1c3e5f7-0b2d-4e6f-8a1c-3e5f7a9b0001}}\""
        ),
    ] {
        assert!(all.contains(&expected), "missing {expected:?} in:\n{all}");
    }
    assert_eq!(
        problems(&output).len(),
        6,
        "one problem per bad row:\n{all}"
    );
}

#[test]
fn a_command_that_runs_refuses_the_same_map_before_any_work() {
    let dir = workspace();
    edit(dir.path(), "demo/customers.csv", |map| {
        map + "hubspot,Acme Corporation,ACME-001\n"
    });
    let output = tally(dir.path(), &["run", "--period", "2026-10", "--dry-run"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("config/demo/customers.csv:9:source: unknown source \"hubspot\""),
        "{}",
        text(&output)
    );
    assert!(
        !dir.path().join("data/tally.db").exists(),
        "nothing is written on bad configuration"
    );
}

#[test]
fn a_log_level_with_bad_directives_is_refused_with_the_others() {
    let dir = workspace();
    edit(dir.path(), "demo.toml", |toml| {
        toml.replace("level = \"warn\"", "level = \"tally=loud,,==\"")
            .replacen("timezone = \"UTC\"", "timezone = \"Mars/Olympus\"", 1)
    });
    let output = tally(dir.path(), &["check-config"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let all = text(&output);
    for expected in [
        "log.level: directive 1 \"tally=loud\" is not valid",
        "log.level: directive 2 of \"tally=loud,,==\" is empty (a stray comma)",
        "log.level: directive 3 \"==\" is not valid",
        // All at once: another key's problem is listed too.
        "general.timezone: unknown time zone \"Mars/Olympus\"",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    assert!(
        all.contains("e.g. \"info,tally=debug\""),
        "says what to write: {all}"
    );

    // A command that only reads the ledger refuses it too.
    let lines = tally(dir.path(), &["lines", "--period", "2026-10"]);
    assert_eq!(lines.status.code(), Some(2), "{}", text(&lines));
    assert!(text(&lines).contains("log.level: directive 1 \"tally=loud\""));
}

#[test]
fn a_good_log_level_with_several_directives_is_accepted() {
    let dir = workspace();
    edit(dir.path(), "demo.toml", |toml| {
        toml.replace(
            "level = \"warn\"",
            "level = \"warn,tally=debug,tally::http=trace\"",
        )
    });
    let output = tally(dir.path(), &["check-config"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[test]
fn a_configuration_whose_every_source_is_disabled_is_refused() {
    let dir = workspace();
    edit(dir.path(), "demo.toml", |toml| {
        let mut toml = toml;
        for source in ["billable_users", "ccc", "genesys"] {
            toml = toml.replace(
                &format!("[sources.{source}]\n"),
                &format!("[sources.{source}]\nenabled = false\n"),
            );
        }
        toml
    });
    let output = tally(dir.path(), &["check-config"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let all = text(&output);
    assert!(
        all.contains(
            "sources: every configured source is disabled, so nothing would ever be billed: set \
             sources.billable_users.enabled = true or sources.ccc.enabled = true or \
             sources.genesys.enabled = true"
        ),
        "{all}"
    );

    // One enabled source is enough.
    edit(dir.path(), "demo.toml", |toml| {
        toml.replacen("[sources.ccc]\nenabled = false\n", "[sources.ccc]\n", 1)
    });
    let output = tally(dir.path(), &["check-config"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

/// A CCC service or Genesys org written in any spelling in the map is found under the key the
/// source stages (its canonical spelling), and a billable users organization only as written.
#[test]
fn the_lookup_matches_every_spelling_the_validation_accepts() {
    let guid = "A1C3E5F7-0B2D-4E6F-8A1C-3E5F7A9B0001";
    let org = "5d6f2b1e-3c4a-4e8b-9a01-ac0e00000001";
    let map = CustomerMap::from_reader(
        "customers.csv",
        format!(
            "source,source_customer,billing_account\n\
             ccc, {{{guid}}} ,ACME-001\n\
             genesys,{{{}}},GLOBEX-002\n\
             billable_users,Initech,INITECH-003\n",
            org.to_uppercase()
        )
        .as_bytes(),
    )
    .unwrap();
    // What the sources stage: CCC's canonical GUID, Genesys's canonical org id.
    let ccc_key = tally::sources::ccc::normalize_guid(guid).unwrap();
    let genesys_key = tally::sources::genesys::parse_org_id(org).unwrap();
    let how = |source: &str| key_form(source).unwrap().key_match();
    assert_eq!(
        map.lookup("ccc", &ccc_key, how("ccc")).map(|a| a.as_str()),
        Some("ACME-001")
    );
    assert_eq!(
        map.lookup("genesys", &genesys_key, how("genesys"))
            .map(|a| a.as_str()),
        Some("GLOBEX-002")
    );
    assert_eq!(
        map.lookup("billable_users", "Initech", how("billable_users"))
            .map(|a| a.as_str()),
        Some("INITECH-003")
    );
    assert_eq!(
        map.lookup("billable_users", "INITECH", KeyMatch::Exact),
        None
    );
}

/// The customer map's list of sources and their key comparison agree with the connectors the
/// configuration builds: a source added to one and not the other would never match.
#[test]
fn the_map_knows_every_source_and_compares_keys_as_the_source_does() {
    use secrecy::SecretString;
    let names: Vec<&str> = tally::mapping::SOURCES.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, tally::config::SourcesSettings::ALL);

    let mut settings =
        tally::config::Settings::load_files(&[repo().join("config/demo.toml")], false).unwrap();
    let sources = &mut settings.sources;
    let secret = || Some(SecretString::from("s"));
    sources.billable_users.as_mut().unwrap().token = secret();
    sources.ccc.as_mut().unwrap().password = secret();
    for org in sources.genesys.as_mut().unwrap().orgs.values_mut() {
        org.client_secret = secret();
    }
    settings.sinks = Default::default();
    let (built, _) = tally::pipeline::build_connectors(&settings).unwrap();
    assert_eq!(built.len(), 3, "the demo has every source");
    for source in &built {
        let name = source.name().as_str();
        assert_eq!(
            key_form(name).map(|f| f.key_match()),
            Some(source.key_match()),
            "{name}"
        );
    }
}

/// `tally check-config` in `dir` with the demo secrets but `without` one, and `extra`
/// variables set.
fn check_with_env(dir: &Path, without: &str, extra: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .current_dir(dir)
        .args(["--config", "config/demo.toml", "check-config"])
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .envs(
            sim::demo_secrets()
                .into_iter()
                .filter(|(k, _)| k != without),
        )
        .envs(extra.iter().copied())
        .output()
        .unwrap()
}

/// Four problems of four kinds — an unknown key in the file, a value from the environment that
/// does not parse, a missing secret and a bad pricing row — are listed in one run, each where
/// it came from: the file and key, the variable, the key and the variable to set, the file's
/// row and column.
#[test]
fn four_problems_of_files_environment_and_keys_are_listed_in_one_run_with_their_origin() {
    let dir = workspace();
    edit(dir.path(), "demo.toml", |toml| {
        toml.replacen("[billing]\n", "[billing]\nrequire_aproval = true\n", 1)
    });
    edit(dir.path(), "demo/pricing.csv", |csv| {
        let mut lines: Vec<String> = csv.lines().map(str::to_owned).collect();
        // Row 2's unit_price (column 8) becomes a word.
        let mut cells: Vec<String> = lines[1].split(',').map(str::to_owned).collect();
        cells[7] = "ten".into();
        lines[1] = cells.join(",");
        lines.join("\n") + "\n"
    });
    let output = check_with_env(
        dir.path(),
        "TALLY__SOURCES__CCC__PASSWORD",
        &[("TALLY__GENERAL__SHUTDOWN_TIMEOUT_SECS", "soon")],
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let found = problems(&output);
    let all = found.join("\n");
    assert_eq!(found.len(), 4, "exactly the four problems:\n{all}");
    for expected in [
        "config/demo.toml:billing.require_aproval: unknown field `require_aproval`",
        "TALLY__GENERAL__SHUTDOWN_TIMEOUT_SECS: invalid type: string \"soon\", expected an integer",
        "sources.ccc.password: is missing: set the environment variable TALLY__SOURCES__CCC__PASSWORD",
        "config/demo/pricing.csv:2:unit_price: unit_price \"ten\" is not a decimal number",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "missing {expected:?} in:\n{all}"
        );
    }
}

/// A typo in a variable's name is the variable's problem, not the file's: the file is right.
#[test]
fn a_typo_in_a_variable_is_blamed_on_the_variable_and_a_value_it_overrides_too() {
    let dir = workspace();
    let output = check_with_env(
        dir.path(),
        "",
        &[
            ("TALLY__SOURCES__CCC__PASWORD", "x"),
            ("TALLY__GENERAL__TIMEZONE", "Mars/Olympus"),
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    let found = problems(&output);
    let all = found.join("\n");
    assert_eq!(found.len(), 2, "{all}");
    assert!(
        found[0].starts_with("TALLY__SOURCES__CCC__PASWORD: unknown field `pasword`"),
        "{all}"
    );
    // A value the environment set wrongly is named by its variable, found by the checks.
    assert!(
        found[1].starts_with("TALLY__GENERAL__TIMEZONE: unknown time zone \"Mars/Olympus\""),
        "{all}"
    );
    assert!(!all.contains("config/demo.toml"), "{all}");
}

/// A `config/` without the file `TALLY_ENV` names (a container's mount without
/// production.toml) is read without it, with a note, instead of refusing to start.
#[test]
fn a_missing_environment_layer_is_a_note_not_an_error() {
    let dir = workspace();
    std::fs::copy(
        dir.path().join("config/demo.toml"),
        dir.path().join("config/default.toml"),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .current_dir(dir.path())
        .arg("check-config")
        .env_remove("DATABASE_URL")
        .env_remove("TALLY_CONFIG")
        .env("TALLY_ENV", "production")
        .envs(sim::demo_secrets())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains(
            "note: TALLY_ENV=production: config/production.toml does not exist, so only \
             config/default.toml and the environment are read"
        ),
        "{}",
        text(&output)
    );
}

/// The demo configuration in `dir` pointed at running simulators.
fn point_demo_at(dir: &Path, sims: &sim::RunningSims) {
    edit(dir, "demo.toml", |demo| {
        demo.replace("http://127.0.0.1:8081/v1", &sims.billable_users_url)
            .replace("http://127.0.0.1:8082/", &sims.rambase_url)
            .replace("http://127.0.0.1:8083/api", &sims.ccc_url)
            .replace("http://127.0.0.1:8084", &sims.genesys_url)
            .replace("http://127.0.0.1:8085/", &sims.activeplatform_url)
    });
}

/// `--reach` signs in to all five peers of the demo and reads a little of each: every peer is
/// `ok`, exit 0, and nothing is run (no state database appears).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reach_signs_in_to_every_peer_and_writes_nothing() {
    let dir = workspace();
    let settings = sim::demo_settings(&dir.path().join("data")).unwrap();
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    point_demo_at(dir.path(), &sims);
    let path = dir.path().to_owned();
    let output = tokio::task::spawn_blocking(move || tally(&path, &["check-config", "--reach"]))
        .await
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    for peer in [
        "sources.billable_users",
        "sources.ccc",
        "sources.genesys",
        "sinks.rambase",
        "sinks.activeplatform",
    ] {
        assert!(
            all.lines()
                .any(|l| l.starts_with(peer) && l[peer.len()..].trim_start().starts_with("ok")),
            "{peer} is not ok in:\n{all}"
        );
    }
    assert!(
        !dir.path().join("data/tally.db").exists(),
        "nothing is written"
    );
}

/// A wrong secret is named by its peer, with what to check, and never shown; exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reach_names_the_peer_whose_secret_is_wrong_and_exits_1() {
    let dir = workspace();
    let settings = sim::demo_settings(&dir.path().join("data")).unwrap();
    let sims = sim::start_sims(&settings, None, sim::SimPorts::ANY)
        .await
        .unwrap();
    point_demo_at(dir.path(), &sims);
    let path = dir.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tally"))
            .current_dir(&path)
            .args(["--config", "config/demo.toml", "check-config", "--reach"])
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .envs(sim::demo_secrets())
            .env(
                "TALLY__SINKS__RAMBASE__CLIENT_SECRET",
                "not-the-secret-4711",
            )
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    let rambase = all
        .lines()
        .find(|l| l.starts_with("sinks.rambase"))
        .unwrap_or_else(|| panic!("no line for RamBase in:\n{all}"));
    assert!(rambase.contains("FAILED"), "{all}");
    assert!(
        rambase.contains("TALLY__SINKS__RAMBASE__CLIENT_SECRET"),
        "{all}"
    );
    assert!(rambase.contains(&sims.rambase_url), "the URL asked: {all}");
    assert!(!all.contains("not-the-secret-4711"), "{all}");
    for peer in [
        "sources.billable_users",
        "sources.ccc",
        "sinks.activeplatform",
    ] {
        assert!(
            all.lines()
                .any(|l| l.starts_with(peer) && l.contains(" ok (")),
            "{peer} is still ok:\n{all}"
        );
    }
}
