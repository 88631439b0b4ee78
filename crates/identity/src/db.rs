//! Users, sign-in nonces and refresh-token families, on either backend.

use anyhow::Context;
use time::OffsetDateTime;
use uuid::Uuid;

use std::sync::Arc;
use std::time::Duration;

use base::clock::{self, Clock};
use storage::Database;

/// A user as stored.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: Uuid,
    pub address: String,
    pub created_at: OffsetDateTime,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live; it is now spent and `new_hash` replaces it.
    Rotated {
        user_id: Uuid,
    },
    /// The token was already spent or revoked: its whole family is now revoked.
    Reused,
    Expired,
    Unknown,
}

/// What the clean-up job deletes of identity: nonces past their expiry, and sessions (whole
/// refresh-token families, so that a spent token of a live session is still recognised) whose every
/// token has expired.
pub const SWEEPS: [storage::Sweep; 2] = [
    storage::Sweep {
        name: "auth_nonces",
        postgres: "DELETE FROM auth_nonces WHERE expires_at < $1",
        sqlite: "DELETE FROM auth_nonces WHERE expires_at < ?1",
        keep: Duration::ZERO,
    },
    storage::Sweep {
        name: "refresh_tokens",
        postgres: "DELETE FROM refresh_tokens WHERE family_id IN
                   (SELECT family_id FROM refresh_tokens GROUP BY family_id HAVING MAX(expires_at) < $1)",
        sqlite: "DELETE FROM refresh_tokens WHERE family_id IN
                 (SELECT family_id FROM refresh_tokens GROUP BY family_id HAVING MAX(expires_at) < ?1)",
        keep: Duration::ZERO,
    },
];

/// Identity storage over the process's database.
#[derive(Clone)]
pub struct IdentityStore {
    db: Database,
    clock: Arc<dyn Clock>,
}

struct TokenState {
    family: Uuid,
    user_id: Uuid,
    expires_at: OffsetDateTime,
    spent: bool,
    session_started_at: OffsetDateTime,
}

impl IdentityStore {
    /// `clock`: what "expired" is measured against (nonces, refresh tokens).
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    /// Stores a nonce issued for `address` with the exact message that carries it.
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "identity.create_nonce"))]
    pub async fn create_nonce(
        &self,
        nonce: &str,
        address: &str,
        message: &str,
        expires_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        match &self.db {
            Database::Postgres(pool) => {
                let c = pool.get().await?;
                c.execute(
                    "INSERT INTO auth_nonces (nonce, address, message, expires_at) VALUES ($1, $2, $3, $4)",
                    &[&nonce, &address, &message, &expires_at],
                )
                .await?;
            }
            Database::Sqlite(pool) => {
                let (nonce, address, message) = (nonce.to_string(), address.to_string(), message.to_string());
                pool.call(move |c| {
                    c.execute(
                        "INSERT INTO auth_nonces (nonce, address, message, expires_at) VALUES (?1, ?2, ?3, ?4)",
                        rusqlite::params![nonce, address, message, clock::to_text(expires_at)],
                    )?;
                    Ok::<_, anyhow::Error>(())
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Spends a nonce issued for `address` with exactly `message`; false when it is unknown, spent,
    /// expired, or the message is not the text it was issued with.
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "identity.consume_nonce"))]
    pub async fn consume_nonce(&self, nonce: &str, address: &str, message: &str) -> anyhow::Result<bool> {
        let now = self.clock.now();
        let n = match &self.db {
            Database::Postgres(pool) => pool
                .get()
                .await?
                .execute(
                    "DELETE FROM auth_nonces WHERE nonce = $1 AND address = $2 AND expires_at > $3 AND message = $4",
                    &[&nonce, &address, &now, &message],
                )
                .await?,
            Database::Sqlite(pool) => {
                let (nonce, address, message) = (nonce.to_string(), address.to_string(), message.to_string());
                pool.call(move |c| {
                    c.execute(
                        "DELETE FROM auth_nonces WHERE nonce = ?1 AND address = ?2 AND expires_at > ?3 AND message = ?4",
                        rusqlite::params![nonce, address, clock::to_text(now), message],
                    )
                    .map(|n| n as u64)
                    .map_err(anyhow::Error::from)
                })
                .await?
            }
        };
        Ok(n == 1)
    }

    /// The user with this (checksummed) address, created on first sight.
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "identity.upsert_user"))]
    pub async fn upsert_user(&self, address: &str) -> anyhow::Result<UserRow> {
        let (id, now) = (Uuid::now_v7(), self.clock.now());
        match &self.db {
            Database::Postgres(pool) => {
                let c = pool.get().await?;
                c.execute(
                    "INSERT INTO users (id, address, created_at) VALUES ($1, $2, $3) ON CONFLICT (address) DO NOTHING",
                    &[&id, &address, &now],
                )
                .await?;
                let r =
                    c.query_one("SELECT id, address, created_at FROM users WHERE address = $1", &[&address]).await?;
                Ok(UserRow { id: r.get(0), address: r.get(1), created_at: r.get(2) })
            }
            Database::Sqlite(pool) => {
                let address = address.to_string();
                pool.call(move |c| {
                    c.execute(
                        "INSERT INTO users (id, address, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (address) DO NOTHING",
                        rusqlite::params![id.to_string(), address, clock::to_text(now)],
                    )?;
                    let (id, address, at): (String, String, String) = c.query_row(
                        "SELECT id, address, created_at FROM users WHERE address = ?1",
                        [&address],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )?;
                    Ok(UserRow { id: id.parse()?, address, created_at: clock::from_text(&at)? })
                })
                .await
            }
        }
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "identity.get_user"))]
    pub async fn get_user(&self, id: Uuid) -> anyhow::Result<Option<UserRow>> {
        match &self.db {
            Database::Postgres(pool) => {
                let client = pool.get().await?;
                let r =
                    storage::pg::query_opt(&client, "SELECT id, address, created_at FROM users WHERE id = $1", &[&id])
                        .await?;
                Ok(r.map(|r| UserRow { id: r.get(0), address: r.get(1), created_at: r.get(2) }))
            }
            Database::Sqlite(pool) => {
                pool.call(move |c| {
                    use rusqlite::OptionalExtension;
                    let row: Option<(String, String)> = c
                        .query_row("SELECT address, created_at FROM users WHERE id = ?1", [id.to_string()], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .optional()?;
                    row.map(|(address, at)| Ok(UserRow { id, address, created_at: clock::from_text(&at)? })).transpose()
                })
                .await
            }
        }
    }

    /// Stores the hash of the first refresh token of a new session, `family`.
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "identity.insert_refresh"))]
    pub async fn insert_refresh(
        &self,
        hash: &str,
        family: Uuid,
        user_id: Uuid,
        expires_at: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        match &self.db {
            Database::Postgres(pool) => {
                pool.get()
                    .await?
                    .execute(
                        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at, session_started_at)
                         VALUES ($1, $2, $3, $4, $5, $4)",
                        &[&hash, &family, &user_id, &now, &expires_at],
                    )
                    .await?;
            }
            Database::Sqlite(pool) => {
                let hash = hash.to_string();
                pool.call(move |c| {
                    c.execute(
                        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at, session_started_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?4)",
                        rusqlite::params![hash, family.to_string(), user_id.to_string(), clock::to_text(now), clock::to_text(expires_at)],
                    )?;
                    Ok::<_, anyhow::Error>(())
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Spends `old_hash` and stores `new_hash` in its family, atomically. Presenting a spent token
    /// revokes the whole family (a stolen token was used twice). A session older than
    /// `session_max` is over (expired); the new token never outlives it.
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "identity.rotate_refresh"))]
    pub async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expires: OffsetDateTime,
        session_max: Duration,
    ) -> anyhow::Result<Rotation> {
        let now = self.clock.now();
        match &self.db {
            Database::Postgres(pool) => {
                let mut c = pool.get().await?;
                let tx = c.transaction().await?;
                let row = tx
                    .query_opt(
                        "SELECT family_id, user_id, expires_at, rotated_at IS NOT NULL OR revoked_at IS NOT NULL,
                                COALESCE(session_started_at, created_at)
                         FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
                        &[&old_hash],
                    )
                    .await?;
                let Some(r) = row else {
                    return Ok(Rotation::Unknown);
                };
                let st = TokenState {
                    family: r.get(0),
                    user_id: r.get(1),
                    expires_at: r.get(2),
                    spent: r.get(3),
                    session_started_at: r.get(4),
                };
                let outcome = decide(&st, now, session_max);
                let (started, new_expires) =
                    (st.session_started_at, new_expires.min(st.session_started_at + session_max));
                match outcome {
                    Rotation::Reused => {
                        tx.execute(
                            "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
                            &[&st.family, &now],
                        )
                        .await?;
                    }
                    Rotation::Rotated { .. } => {
                        tx.execute(
                            "UPDATE refresh_tokens SET rotated_at = $2 WHERE token_hash = $1",
                            &[&old_hash, &now],
                        )
                        .await?;
                        tx.execute(
                            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at, session_started_at)
                             VALUES ($1, $2, $3, $4, $5, $6)",
                            &[&new_hash, &st.family, &st.user_id, &now, &new_expires, &started],
                        )
                        .await?;
                    }
                    Rotation::Expired | Rotation::Unknown => {}
                }
                tx.commit().await.context("committing refresh rotation")?;
                Ok(outcome)
            }
            Database::Sqlite(pool) => {
                let (old_hash, new_hash) = (old_hash.to_string(), new_hash.to_string());
                pool.call(move |c| {
                    use rusqlite::OptionalExtension;
                    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let row: Option<(String, String, String, bool, String)> = tx
                        .query_row(
                            "SELECT family_id, user_id, expires_at, rotated_at IS NOT NULL OR revoked_at IS NOT NULL,
                                    COALESCE(session_started_at, created_at)
                             FROM refresh_tokens WHERE token_hash = ?1",
                            [&old_hash],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                        )
                        .optional()?;
                    let Some((family, user, exp, spent, started)) = row else { return Ok(Rotation::Unknown) };
                    let st = TokenState {
                        family: family.parse()?,
                        user_id: user.parse()?,
                        expires_at: clock::from_text(&exp)?,
                        spent,
                        session_started_at: clock::from_text(&started)?,
                    };
                    let outcome = decide(&st, now, session_max);
                    let new_expires = new_expires.min(st.session_started_at + session_max);
                    let now_text = clock::to_text(now);
                    match outcome {
                        Rotation::Reused => {
                            tx.execute(
                                "UPDATE refresh_tokens SET revoked_at = ?2 WHERE family_id = ?1 AND revoked_at IS NULL",
                                rusqlite::params![family, now_text],
                            )?;
                        }
                        Rotation::Rotated { .. } => {
                            tx.execute("UPDATE refresh_tokens SET rotated_at = ?2 WHERE token_hash = ?1", rusqlite::params![old_hash, now_text])?;
                            tx.execute(
                                "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at, session_started_at)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                rusqlite::params![new_hash, family, user, now_text, clock::to_text(new_expires), started],
                            )?;
                        }
                        Rotation::Expired | Rotation::Unknown => {}
                    }
                    tx.commit()?;
                    Ok::<_, anyhow::Error>(outcome)
                })
                .await
            }
        }
    }

    /// Revokes the family of this token (logout). Unknown tokens are ignored.
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "identity.revoke_family"))]
    pub async fn revoke_family(&self, hash: &str) -> anyhow::Result<()> {
        let now = self.clock.now();
        match &self.db {
            Database::Postgres(pool) => {
                pool.get()
                    .await?
                    .execute(
                        "UPDATE refresh_tokens SET revoked_at = $2 WHERE revoked_at IS NULL
                         AND family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
                        &[&hash, &now],
                    )
                    .await?;
            }
            Database::Sqlite(pool) => {
                let hash = hash.to_string();
                pool.call(move |c| {
                    c.execute(
                        "UPDATE refresh_tokens SET revoked_at = ?2 WHERE revoked_at IS NULL
                         AND family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = ?1)",
                        rusqlite::params![hash, clock::to_text(now)],
                    )?;
                    Ok::<_, anyhow::Error>(())
                })
                .await?;
            }
        }
        Ok(())
    }
}

fn decide(st: &TokenState, now: OffsetDateTime, session_max: Duration) -> Rotation {
    if st.spent {
        Rotation::Reused
    } else if st.expires_at <= now || st.session_started_at + session_max <= now {
        Rotation::Expired
    } else {
        Rotation::Rotated { user_id: st.user_id }
    }
}
