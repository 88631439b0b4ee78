//! The embedded SQLite backend: one connection in WAL mode, used from blocking threads.
//!
//! One connection serialises writers, which is what SQLite does anyway; it also makes every
//! transaction here `IMMEDIATE` in effect, so read-modify-write sequences are atomic.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rusqlite::Connection;

/// A shareable handle to the SQLite database.
#[derive(Clone)]
pub struct SqlitePool {
    conn: Arc<Mutex<Connection>>,
}

impl SqlitePool {
    /// Whether both handles are the same connection.
    pub fn same_as(&self, other: &SqlitePool) -> bool {
        Arc::ptr_eq(&self.conn, &other.conn)
    }

    /// Opens (creating if needed) the database file and its parent directory, both private to the
    /// owner when walletd creates them (mode 0700 and 0600; SQLite gives its -wal and -shm files the
    /// database file's mode).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        let created = !path.exists();
        let conn = Connection::open(path).with_context(|| format!("opening SQLite database {}", path.display()))?;
        if created {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("making {} private", path.display()))?;
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
        )
        .context("configuring SQLite")?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn call<R, E>(&self, f: impl FnOnce(&mut Connection) -> Result<R, E> + Send + 'static) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<anyhow::Error> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic inside a closure cannot leave a transaction open: rusqlite rolls back on drop.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| E::from(anyhow::anyhow!("SQLite task failed: {e}")))?
    }
}

/// Creates `dir` and its missing parents with mode 0700 (an existing directory keeps its mode).
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// `?{first}, ?{first+1}, ...`: `count` numbered placeholders for an `IN (...)` list.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_from_the_first() {
        assert_eq!(super::placeholders(2, 3), "?2, ?3, ?4");
        assert_eq!(super::placeholders(1, 0), "");
    }
}
