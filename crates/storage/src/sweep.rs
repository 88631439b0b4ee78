//! Rows past their use, deleted by a periodic job: each crate declares what of its tables may go
//! (a [`Sweep`]), walletd runs them all every `WALLETD_CLEANUP_INTERVAL_SECS`.

use std::time::Duration;

use time::OffsetDateTime;

use crate::Database;

/// One deletion: rows older than `now - keep`, by a statement per backend whose only parameter
/// (`$1` / `?1`) is that cutoff.
#[derive(Debug, Clone, Copy)]
pub struct Sweep {
    /// What the metrics and the log call it (the table, usually).
    pub name: &'static str,
    pub postgres: &'static str,
    pub sqlite: &'static str,
    pub keep: Duration,
}

impl Sweep {
    /// The same sweep keeping rows for `keep` (a setting).
    pub const fn keeping(self, keep: Duration) -> Self {
        Self { keep, ..self }
    }
}

impl Database {
    /// Runs one sweep as of `now`; the number of rows it deleted.
    pub async fn sweep(&self, sweep: &Sweep, now: OffsetDateTime) -> anyhow::Result<u64> {
        let cutoff = now - sweep.keep;
        match self {
            Self::Postgres(pool) => {
                let client = pool.get().await?;
                Ok(client.execute(sweep.postgres, &[&cutoff]).await?)
            }
            Self::Sqlite(pool) => {
                let (sql, cutoff) = (sweep.sqlite, base::clock::to_text(cutoff));
                let removed = pool.call(move |c| c.execute(sql, [cutoff]).map_err(anyhow::Error::from)).await?;
                Ok(removed as u64)
            }
        }
    }
}
