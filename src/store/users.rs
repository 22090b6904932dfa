//! The review page's users, sessions and failed sign-ins (`tally user`, `tally serve`). The
//! store keeps only what cannot sign anyone in: argon2id hashes of passwords and SHA-256 hashes
//! of session tokens; hashing and checking them is `web::auth`'s.

use super::dialect::{self, Columns};
use super::{Backend, Store};
use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};

/// What a user of the review page may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads periods, lines and exports.
    Viewer,
    /// Also approves drafts and pushes approved lines.
    Approver,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "approver" => Some(Role::Approver),
            _ => None,
        }
    }
}

/// A user as `tally user list` shows it (never the hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewUser {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// A signed-in session, found by its token's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewSession {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// Failed sign-ins in a row for one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailures {
    pub count: u32,
    pub last: DateTime<Utc>,
}

fn role(row: &impl Columns) -> anyhow::Result<Role> {
    let text = row.text("role")?;
    Role::parse(&text).ok_or_else(|| anyhow!("column role holds {text:?}, not a role"))
}

impl Store {
    /// Adds a user; refuses a name that exists (remove it first).
    pub async fn add_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
    ) -> anyhow::Result<()> {
        let inserted = with_backend!(self, |pool, D| {
            sqlx::query(
                "INSERT INTO review_users (name, role, password_hash, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(role.as_str())
            .bind(password_hash)
            .bind(Utc::now())
            .execute(pool)
            .await
            .with_context(|| format!("add_user: inserting {name:?} into review_users"))?
            .rows_affected()
        });
        if inserted == 0 {
            bail!(
                "there is already a user {name:?}: `tally user remove {name}` first to replace it"
            );
        }
        Ok(())
    }

    /// Every user, by name.
    pub async fn users(&self) -> anyhow::Result<Vec<ReviewUser>> {
        with_backend!(self, |pool, D| {
            let rows = sqlx::query("SELECT name, role, created_at FROM review_users ORDER BY name")
                .fetch_all(pool)
                .await
                .context("users: reading review_users")?;
            rows.iter()
                .map(|row| {
                    Ok(ReviewUser {
                        name: row.text("name")?,
                        role: role(row)?,
                        created_at: row.time("created_at")?,
                    })
                })
                .collect()
        })
    }

    /// Removes a user and its sessions; `false` when there was none of that name.
    pub async fn remove_user(&self, name: &str) -> anyhow::Result<bool> {
        with_backend!(self, |pool, D| {
            let mut tx = D::begin(pool)
                .await
                .context("remove_user: starting a transaction")?;
            sqlx::query("DELETE FROM review_sessions WHERE user_name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("remove_user: ending the sessions of {name:?}"))?;
            let removed = sqlx::query("DELETE FROM review_users WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .with_context(|| format!("remove_user: deleting {name:?}"))?
                .rows_affected();
            tx.commit().await.context("remove_user: committing")?;
            Ok(removed == 1)
        })
    }

    /// The stored password hash and role of `name`, if there is such a user.
    pub async fn user_credentials(&self, name: &str) -> anyhow::Result<Option<(String, Role)>> {
        with_backend!(self, |pool, D| {
            let row = sqlx::query("SELECT password_hash, role FROM review_users WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await
                .with_context(|| format!("user_credentials: reading {name:?}"))?;
            row.map(|row| Ok((row.text("password_hash")?, role(&row)?)))
                .transpose()
        })
    }

    /// Records a new session of `user` under its token's hash.
    pub async fn create_session(
        &self,
        token_hash: &str,
        user: &str,
        csrf: &str,
        expires_at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            sqlx::query(
                "INSERT INTO review_sessions (token_hash, user_name, csrf, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token_hash)
            .bind(user)
            .bind(csrf)
            .bind(Utc::now())
            .bind(expires_at)
            .execute(pool)
            .await
            .with_context(|| format!("create_session: a session of {user:?}"))?;
            Ok(())
        })
    }

    /// The session under `token_hash` with its user's current role (expired or not: the caller
    /// compares `expires_at`).
    pub async fn session(&self, token_hash: &str) -> anyhow::Result<Option<ReviewSession>> {
        with_backend!(self, |pool, D| {
            let row = sqlx::query(
                "SELECT s.user_name, u.role, s.csrf, s.expires_at FROM review_sessions s \
                 JOIN review_users u ON u.name = s.user_name WHERE s.token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await
            .context("session: reading review_sessions")?;
            row.map(|row| {
                Ok(ReviewSession {
                    user: row.text("user_name")?,
                    role: role(&row)?,
                    csrf: row.text("csrf")?,
                    expires_at: row.time("expires_at")?,
                })
            })
            .transpose()
        })
    }

    /// Ends a session (sign-out, or found expired).
    pub async fn delete_session(&self, token_hash: &str) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            sqlx::query("DELETE FROM review_sessions WHERE token_hash = $1")
                .bind(token_hash)
                .execute(pool)
                .await
                .context("delete_session: deleting from review_sessions")?;
            Ok(())
        })
    }

    /// The failed sign-ins in a row of `name`, if any.
    pub async fn login_failures(&self, name: &str) -> anyhow::Result<Option<LoginFailures>> {
        with_backend!(self, |pool, D| {
            let row = sqlx::query(
                "SELECT failures, last_failed_at FROM review_login_failures WHERE user_name = $1",
            )
            .bind(name)
            .fetch_optional(pool)
            .await
            .with_context(|| format!("login_failures: reading {name:?}"))?;
            row.map(|row| {
                Ok(LoginFailures {
                    count: u32::try_from(row.int("failures")?).unwrap_or(u32::MAX),
                    last: row.time("last_failed_at")?,
                })
            })
            .transpose()
        })
    }

    /// Counts one more failed sign-in of `name`; returns the failures in a row now.
    pub async fn record_login_failure(&self, name: &str) -> anyhow::Result<LoginFailures> {
        let now = Utc::now();
        let count: i64 = with_backend!(self, |pool, D| {
            sqlx::query_scalar(
                "INSERT INTO review_login_failures (user_name, failures, last_failed_at) \
                 VALUES ($1, 1, $2) ON CONFLICT (user_name) DO UPDATE \
                 SET failures = review_login_failures.failures + 1, last_failed_at = $2 \
                 RETURNING failures",
            )
            .bind(name)
            .bind(now)
            .fetch_one(pool)
            .await
            .with_context(|| format!("record_login_failure: counting a failure of {name:?}"))?
        });
        Ok(LoginFailures {
            count: u32::try_from(count).unwrap_or(u32::MAX),
            last: now,
        })
    }

    /// Forgets the failed sign-ins of `name` (after a successful one).
    pub async fn clear_login_failures(&self, name: &str) -> anyhow::Result<()> {
        with_backend!(self, |pool, D| {
            sqlx::query("DELETE FROM review_login_failures WHERE user_name = $1")
                .bind(name)
                .execute(pool)
                .await
                .with_context(|| format!("clear_login_failures: {name:?}"))?;
            Ok(())
        })
    }
}
