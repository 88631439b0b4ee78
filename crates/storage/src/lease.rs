//! Leases in the database: at most one process at a time does a named job (the outbox relay, an
//! embedded-log consumer group). The holder renews its lease while it works; when it dies, another
//! process takes the job over once the lease has lapsed.

use std::time::Duration;

use base::clock;

use crate::Database;

/// One process's claim on a named job.
#[derive(Clone)]
pub struct Lease {
    db: Database,
    name: String,
    holder: String,
    ttl: Duration,
}

impl Lease {
    /// `ttl`: how long the lease lasts without renewal.
    pub fn new(db: Database, name: impl Into<String>, ttl: Duration) -> Self {
        Self { db, name: name.into(), holder: uuid::Uuid::now_v7().to_string(), ttl }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// How long the lease lasts without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes or renews the lease; false while another live process holds it.
    pub async fn take(&self) -> anyhow::Result<bool> {
        let (now, until) = (clock::now(), clock::now() + self.ttl);
        let held = match &self.db {
            Database::Postgres(pool) => pool
                .get()
                .await?
                .query_opt(
                    "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                     WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < $4
                     RETURNING holder",
                    &[&self.name, &self.holder, &until, &now],
                )
                .await?
                .is_some(),
            Database::Sqlite(pool) => {
                let (name, holder) = (self.name.clone(), self.holder.clone());
                pool.call(move |c| {
                    use rusqlite::OptionalExtension;
                    let row: Option<String> = c
                        .query_row(
                            "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
                             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                             WHERE leases.holder = excluded.holder OR leases.expires_at < ?4
                             RETURNING holder",
                            rusqlite::params![name, holder, clock::to_text(until), clock::to_text(now)],
                            |r| r.get(0),
                        )
                        .optional()?;
                    Ok::<_, anyhow::Error>(row.is_some())
                })
                .await?
            }
        };
        Ok(held)
    }

    /// Gives the lease up (on a clean stop), so another process need not wait for it to lapse.
    pub async fn release(&self) -> anyhow::Result<()> {
        match &self.db {
            Database::Postgres(pool) => {
                pool.get()
                    .await?
                    .execute("DELETE FROM leases WHERE name = $1 AND holder = $2", &[&self.name, &self.holder])
                    .await?;
            }
            Database::Sqlite(pool) => {
                let (name, holder) = (self.name.clone(), self.holder.clone());
                pool.call(move |c| {
                    c.execute("DELETE FROM leases WHERE name = ?1 AND holder = ?2", [name, holder])
                        .map_err(anyhow::Error::from)
                })
                .await?;
            }
        }
        Ok(())
    }
}
