//! Helpers shared by the integration tests: a fresh, empty database per test on either backend.
//!
//! Not every test file uses every helper, hence the `allow(dead_code)`s.

use tally::store::{DatabaseTarget, Store};

/// A new, empty Postgres database (`tally_test_<random hex>`) on the server of `DATABASE_URL`,
/// so that tests never see each other's rows; the store's migrations run when a test connects.
/// `scripts/test.sh` drops the leftovers of earlier runs.
///
/// Panics when `DATABASE_URL` is not set: a Postgres test that skips itself silently would let
/// the production backend go untested.
#[allow(dead_code)]
pub async fn fresh_postgres() -> DatabaseTarget {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: run the tests with scripts/test.sh \
             (or DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test)"
        )
    });
    let database = Store::create_scratch_database(&url, "tally_test")
        .await
        .unwrap_or_else(|err| {
            panic!("cannot create a test database on DATABASE_URL's server: {err:#}")
        });
    DatabaseTarget::Postgres(database)
}

/// A SQLite file inside `dir`, in a folder that does not exist yet (the store creates it).
#[allow(dead_code)]
pub fn fresh_sqlite(dir: &tempfile::TempDir) -> DatabaseTarget {
    DatabaseTarget::Sqlite(dir.path().join("state").join("tally.db"))
}

/// The repository's root (where `config/` and `tests/data/` are).
pub fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What a process printed, stdout then stderr, for assertions and failure messages.
pub fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The demo's configuration on `db`, pointed at `sims`, narrowed to one source and one billing
/// system: the billable users into RamBase (the demo's other systems are exercised by
/// tests/it/multi_source.rs).
pub fn billable_users_into_rambase(
    sims: &tally::sim::RunningSims,
    db: &DatabaseTarget,
) -> tally::config::Settings {
    let mut settings = tally::sim::demo_settings(std::path::Path::new("data")).unwrap();
    settings.database.url = Some(match db {
        DatabaseTarget::Postgres(url) => url.clone(),
        DatabaseTarget::Sqlite(path) => format!("sqlite://{}", path.display()),
    });
    tally::sim::point_at(&mut settings, sims);
    settings.sources.ccc = None;
    settings.sources.genesys = None;
    settings.sinks.activeplatform = None;
    settings
        .billing
        .accounts
        .retain(|a| a.sink.as_deref() != Some("activeplatform"));
    settings
}

/// A folder laid out like a checkout (the demo configuration and its tables), with
/// `config/test.toml` pointing at `sims` and at `database_url`, for running the real binary
/// with `--config`; the secrets go in the environment (`tally::sim::demo_secrets`).
#[allow(dead_code)]
pub fn demo_checkout(
    sims: &tally::sim::RunningSims,
    database_url: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("demo")).unwrap();
    for file in ["demo.toml", "demo/pricing.csv", "demo/customers.csv"] {
        std::fs::copy(repo().join("config").join(file), config.join(file)).unwrap();
    }
    let demo = std::fs::read_to_string(config.join("demo.toml"))
        .unwrap()
        .replace("http://127.0.0.1:8081/v1", &sims.billable_users_url)
        .replace("http://127.0.0.1:8082/", &sims.rambase_url)
        .replace("http://127.0.0.1:8083/api", &sims.ccc_url)
        .replace("http://127.0.0.1:8084", &sims.genesys_url)
        .replace("http://127.0.0.1:8085/", &sims.activeplatform_url)
        .replace(
            "[general]",
            &format!("[database]\nurl = \"{database_url}\"\n\n[general]"),
        );
    let path = config.join("test.toml");
    std::fs::write(&path, demo).unwrap();
    (dir, path)
}

/// The URL of a database target, as `database.url` or `DATABASE_URL` take it.
#[allow(dead_code)]
pub fn database_url(db: &DatabaseTarget) -> String {
    match db {
        DatabaseTarget::Postgres(url) => url.clone(),
        DatabaseTarget::Sqlite(path) => format!("sqlite://{}", path.display()),
    }
}
