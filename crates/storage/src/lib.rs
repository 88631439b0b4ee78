//! Database handles chosen by URL scheme (DESIGN D2): PostgreSQL through a deadpool pool, or
//! the embedded SQLite file; the per-service migration runner for both; list paging and leases.

pub mod lease;
pub mod page;
pub mod replica;
pub mod sqlite;
pub mod sweep;

pub use sweep::Sweep;

pub use lease::Lease;
pub use page::{FilterValue, IdPage};
pub use sqlite::SqlitePool;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

/// Pool settings.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub pool_size: usize,
    pub statement_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self { pool_size: 16, statement_timeout: Duration::from_secs(5), connect_timeout: Duration::from_secs(3) }
    }
}

/// The primary database of the running process.
#[derive(Clone)]
pub enum Database {
    Postgres(Pool),
    Sqlite(SqlitePool),
}

/// Declares a service's [`Migrations`] from its `migrations/postgres` and `migrations/sqlite`
/// folders: `storage::migrations!(MIGRATIONS, "supply");`
#[macro_export]
macro_rules! migrations {
    ($vis:vis $name:ident, $service:literal) => {
        mod embedded_migrations {
            pub mod postgres {
                refinery::embed_migrations!("migrations/postgres");
            }
            pub mod sqlite {
                refinery::embed_migrations!("migrations/sqlite");
            }
        }
        /// This service's migrations, one set per backend.
        $vis const $name: $crate::Migrations = $crate::Migrations {
            name: $service,
            postgres: embedded_migrations::postgres::migrations::runner,
            sqlite: embedded_migrations::sqlite::migrations::runner,
        };
    };
}

/// A service's embedded migrations, one set per backend.
pub struct Migrations {
    /// Names refinery's history table, so services migrate independently.
    pub name: &'static str,
    pub postgres: fn() -> refinery::Runner,
    pub sqlite: fn() -> refinery::Runner,
}

impl Database {
    /// Whether both handles are the same pool (clones of one connection).
    pub fn same_as(&self, other: &Database) -> bool {
        match (self, other) {
            (Self::Postgres(a), Self::Postgres(b)) => std::ptr::eq(a.manager(), b.manager()),
            (Self::Sqlite(a), Self::Sqlite(b)) => a.same_as(b),
            _ => false,
        }
    }

    /// Connects by scheme: `postgres://` / `postgresql://` or `sqlite://PATH` (`sqlite::memory:` is refused:
    /// each connection would see its own empty database).
    pub async fn connect(url: &str, opts: &DbOptions) -> anyhow::Result<Self> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                bail!("sqlite URL needs a file path, e.g. sqlite://data/walletd.db");
            }
            return Ok(Self::Sqlite(SqlitePool::open(&PathBuf::from(path))?));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut cfg: tokio_postgres::Config = url.parse().context("parsing the PostgreSQL URL")?;
            cfg.options(format!("-c statement_timeout={}", opts.statement_timeout.as_millis()));
            cfg.connect_timeout(opts.connect_timeout);
            if cfg.get_application_name().is_none() {
                cfg.application_name("walletd");
            }
            let mgr = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
            let pool = Pool::builder(mgr)
                .max_size(opts.pool_size)
                .runtime(Runtime::Tokio1)
                .create_timeout(Some(opts.connect_timeout))
                .wait_timeout(Some(opts.connect_timeout))
                .recycle_timeout(Some(opts.connect_timeout))
                .build()
                .context("building the PostgreSQL pool")?;
            return Ok(Self::Postgres(pool));
        }
        bail!("unsupported database URL scheme (use postgres:// or sqlite://)")
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> anyhow::Result<()> {
        match self {
            Self::Postgres(pool) => {
                let client = pool.get().await.context("getting a PostgreSQL connection")?;
                client.simple_query("SELECT 1").await.context("PostgreSQL did not answer")?;
            }
            Self::Sqlite(pool) => {
                pool.call(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(anyhow::Error::from)).await?;
            }
        }
        Ok(())
    }

    /// Applies one service's migrations. On PostgreSQL an advisory lock keeps concurrent starts
    /// from racing each other.
    pub async fn migrate(&self, m: &Migrations) -> anyhow::Result<()> {
        let table = format!("refinery_{}", m.name);
        match self {
            Self::Postgres(pool) => {
                let mut client = pool.get().await.context("connecting to migrate")?;
                client.execute("SELECT pg_advisory_lock(7007001)", &[]).await?;
                let mut runner = (m.postgres)();
                runner.set_migration_table_name(&table);
                let result = runner.run_async(&mut **client).await;
                client.execute("SELECT pg_advisory_unlock(7007001)", &[]).await?;
                result.with_context(|| format!("migrating {} on PostgreSQL", m.name))?;
            }
            Self::Sqlite(pool) => {
                let mut runner = (m.sqlite)();
                runner.set_migration_table_name(&table);
                let name = m.name;
                pool.call(move |conn| {
                    runner.run(conn).map(|_| ()).with_context(|| format!("migrating {name} on SQLite"))
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Pool usage for metrics: (size, available).
    pub fn pool_status(&self) -> Option<(usize, usize)> {
        match self {
            Self::Postgres(pool) => {
                let s = pool.status();
                Some((s.size, s.available))
            }
            Self::Sqlite(_) => None,
        }
    }
}

/// A database URL fit to print: the password replaced, whether it is in the user info
/// (`postgres://u:secret@h/db`) or a `password=` parameter (with or without `user@`, any case).
pub fn mask_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some((scheme, rest)) = url.split_once("://") {
        // The user info is in the authority, which ends at the path, query or fragment.
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if let Some((user, _)) = authority.rsplit_once('@').and_then(|(info, _)| info.split_once(':')) {
            let host_and_rest = &rest[authority.rfind('@').map_or(0, |i| i + 1)..];
            out = format!("{scheme}://{user}:****@{host_and_rest}");
        }
    }
    let mut from = 0;
    while let Some(i) = out[from..].to_ascii_lowercase().find("password=").map(|i| from + i) {
        let value = i + "password=".len();
        let end = out[value..].find(['&', ' ']).map_or(out.len(), |e| value + e);
        out.replace_range(value..end, "****");
        from = value + 4;
    }
    out
}

/// Maps a PostgreSQL error to "unique violation?".
pub fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords() {
        assert_eq!(mask_url("postgres://u:secret@h:5432/db"), "postgres://u:****@h:5432/db");
        assert_eq!(
            mask_url("postgres://u@h/db?password=x&sslmode=disable"),
            "postgres://u@h/db?password=****&sslmode=disable"
        );
        assert_eq!(mask_url("sqlite://data/w.db"), "sqlite://data/w.db");
        // A password parameter without `user@` (a finding of the security review: it printed as is).
        assert_eq!(
            mask_url("postgres://db.internal/walletd?password=s3cret"),
            "postgres://db.internal/walletd?password=****"
        );
        assert_eq!(
            mask_url("postgresql:///walletd?host=/run&PASSWORD=a&sslmode=disable&password=b"),
            "postgresql:///walletd?host=/run&PASSWORD=****&sslmode=disable&password=****"
        );
        assert_eq!(mask_url("postgres://u:p@h1,h2/db?password=x"), "postgres://u:****@h1,h2/db?password=****");
        assert_eq!(mask_url("postgres://u:p@h/db?application_name=a@b"), "postgres://u:****@h/db?application_name=a@b");
    }
}

/// PostgreSQL statements prepared once per connection (deadpool's statement cache) and then run
/// in one round trip each, instead of a prepare and an execute every time. For the hot write paths.
pub mod pg {
    use deadpool_postgres::GenericClient;
    use tokio_postgres::types::ToSql;
    use tokio_postgres::{Error, Row};

    pub async fn execute(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        let statement = c.prepare_cached(sql).await?;
        c.execute(&statement, params).await
    }

    pub async fn query_one(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error> {
        let statement = c.prepare_cached(sql).await?;
        c.query_one(&statement, params).await
    }

    pub async fn query(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Error> {
        let statement = c.prepare_cached(sql).await?;
        c.query(&statement, params).await
    }

    pub async fn query_opt(
        c: &impl GenericClient,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        let statement = c.prepare_cached(sql).await?;
        c.query_opt(&statement, params).await
    }
}
