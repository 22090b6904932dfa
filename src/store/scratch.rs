//! Throw-away Postgres databases, for the benchmark (and anything else that must not touch a
//! real database): created with a unique name, dropped afterwards.

use super::Store;
use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;

impl Store {
    /// Creates an empty database named `<prefix>_<random hex>` on the server of `server_url`
    /// (any database on it) and returns its URL.
    pub async fn create_scratch_database(server_url: &str, prefix: &str) -> anyhow::Result<String> {
        let options = PgConnectOptions::from_str(server_url)
            .context("DATABASE_URL is not a valid postgres:// URL")?;
        let name = format!("{prefix}_{:016x}", fastrand::u64(..));
        let mut conn = options
            .connect()
            .await
            .context("connecting to Postgres to create a scratch database")?;
        // The name is ours (a fixed prefix and hex digits): safe to splice.
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        conn.close().await.ok();
        Ok(options.database(&name).to_url_lossy().to_string())
    }

    /// Drops a database made by [`create_scratch_database`](Self::create_scratch_database).
    pub async fn drop_scratch_database(server_url: &str, database_url: &str) -> anyhow::Result<()> {
        let target = PgConnectOptions::from_str(database_url).context("invalid database URL")?;
        let name = target
            .get_database()
            .context("the scratch database URL names no database")?
            .to_owned();
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            anyhow::bail!("refusing to drop {name:?}: not a scratch database name");
        }
        let mut conn = PgConnectOptions::from_str(server_url)?
            .connect()
            .await
            .context("connecting to Postgres to drop a scratch database")?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("dropping database {name}"))?;
        conn.close().await.ok();
        Ok(())
    }
}
