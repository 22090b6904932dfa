//! The writer lease: one process at a time writes the ledger or pushes (`tally run`, `approve`,
//! `push`, the daemon's runs), so that two runs can neither send a line twice nor take each
//! other's staged records away. Readers (`lines`, `runs`) and dry runs take no lease.
//!
//! Postgres: a session-level advisory lock, held by a connection taken out of the pool for as long
//! as the lock lives, so that the lock ends with the session: on drop, or when the process dies
//! and the server sees the socket close.
//!
//! SQLite: an OS file lock (`flock`) on `<database file>.writer-lock` next to the database. The
//! database is one machine's, and the OS drops the lock when the process dies, so a crashed runner
//! never leaves a stale lock behind (which a lock row in the database would).

use anyhow::Context;
use sqlx::{Connection, PgConnection, PgPool};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

/// The advisory lock key of the writer lease: "tally_rn" in ASCII, so that it is recognisable in
/// `pg_locks` and unlikely to collide with another application's key in the same database.
const RUNNER_LOCK_KEY: i64 = 0x7461_6c6c_795f_726e;

/// Held while a process writes the ledger; released on drop (or when the process dies).
#[derive(Debug)]
pub struct WriterLease {
    held: Held,
}

/// This machine's name, for naming a lease's holder. Read from the kernel (Linux) or `HOSTNAME`:
/// a crate for one string read is not worth a dependency, and a wrong name only makes a message
/// less helpful.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

#[derive(Debug)]
enum Held {
    /// The session holding the advisory lock; `None` once released.
    Postgres(Option<PgConnection>),
    /// The open lock file; closing it releases the lock.
    Sqlite(#[allow(dead_code)] File),
}

impl WriterLease {
    /// Tries the Postgres advisory lock on a connection of its own.
    pub(super) async fn try_postgres(pool: &PgPool) -> anyhow::Result<Option<WriterLease>> {
        // Detached: the connection must never go back to the pool while it holds the lock,
        // or another task of this process would silently share the lock's session.
        let mut conn = pool
            .acquire()
            .await
            .context("taking a connection for the writer lease")?
            .detach();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RUNNER_LOCK_KEY)
            .fetch_one(&mut conn)
            .await
            .context("trying the writer lease's advisory lock (pg_try_advisory_lock)")?;
        if locked {
            Ok(Some(WriterLease {
                held: Held::Postgres(Some(conn)),
            }))
        } else {
            // Best effort: the session ends with the connection either way.
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// Tries the lock file next to the SQLite database.
    pub(super) fn try_sqlite(database: &Path) -> anyhow::Result<Option<WriterLease>> {
        let mut path = database.as_os_str().to_owned();
        path.push(".writer-lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| {
                format!(
                    "opening the writer lease's lock file {}",
                    Path::new(&path).display()
                )
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(WriterLease {
                held: Held::Sqlite(file),
            })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(err)) => Err(err).with_context(|| {
                format!(
                    "locking the writer lease's lock file {}",
                    Path::new(&path).display()
                )
            }),
        }
    }

    /// Waits for the lock file that serialises migrations of one SQLite database across
    /// processes (SQLite has no migration lock of its own: two processes starting on a fresh file
    /// would both create the tables). Held until the returned file is dropped.
    pub(super) async fn sqlite_migration_lock(database: &Path) -> anyhow::Result<File> {
        let mut path = database.as_os_str().to_owned();
        path.push(".migrate-lock");
        let path = std::path::PathBuf::from(path);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening the migration lock file {}", path.display()))?;
        tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .context("waiting for the migration lock")?
            .with_context(|| format!("locking the migration lock file {}", path.display()))
    }

    /// Releases the lock now and waits until it is released (drop releases it in the
    /// background).
    pub async fn release(mut self) -> anyhow::Result<()> {
        if let Held::Postgres(conn) = &mut self.held
            && let Some(conn) = conn.take()
        {
            unlock_and_close(conn)
                .await
                .context("releasing the writer lease's advisory lock")?;
        }
        // A SQLite lock file is unlocked when `self` drops here.
        Ok(())
    }
}

async fn unlock_and_close(mut conn: PgConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(RUNNER_LOCK_KEY)
        .execute(&mut conn)
        .await?;
    conn.close().await
}

impl Drop for WriterLease {
    fn drop(&mut self) {
        let Held::Postgres(conn) = &mut self.held else {
            return;
        };
        let Some(conn) = conn.take() else {
            return;
        };
        // Unlocking needs a round trip, which drop cannot wait for: do it in the background.
        // Without a runtime (or if the task never runs), dropping the connection closes its
        // socket, the session ends and Postgres releases the lock all the same.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(err) = unlock_and_close(conn).await {
                        tracing::warn!(error = %err, "releasing the writer lease failed; it ends with the session");
                    }
                });
            }
            Err(_) => drop(conn),
        }
    }
}
