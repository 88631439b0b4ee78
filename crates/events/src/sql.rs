//! Statements written once for both backends: PostgreSQL's `$n` placeholders (SQLite gets `?n`) and
//! parameters bound as each backend stores them (UUIDs as text on SQLite).

use uuid::Uuid;

use storage::Database;

/// A statement parameter.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Int(i64),
    Uuid(Uuid),
    Text(String),
}

impl Param {
    pub(crate) fn pg(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Param::Int(i) => i,
            Param::Uuid(u) => u,
            Param::Text(t) => t,
        }
    }

    pub(crate) fn sqlite(self) -> rusqlite::types::Value {
        match self {
            Param::Int(i) => i.into(),
            Param::Uuid(u) => u.to_string().into(),
            Param::Text(t) => t.into(),
        }
    }
}

/// `sql` for SQLite: `$n` placeholders become `?n`.
pub(crate) fn for_sqlite(sql: &str) -> String {
    sql.replace('$', "?")
}

/// Runs a statement; returns the rows it changed.
pub(crate) async fn execute(db: &Database, sql: &str, params: Vec<Param>) -> anyhow::Result<u64> {
    match db {
        Database::Postgres(pool) => {
            let bound: Vec<_> = params.iter().map(Param::pg).collect();
            Ok(pool.get().await?.execute(sql, &bound).await?)
        }
        Database::Sqlite(pool) => {
            let sql = for_sqlite(sql);
            let params: Vec<_> = params.into_iter().map(Param::sqlite).collect();
            pool.call(move |c| {
                let n = c.execute(&sql, rusqlite::params_from_iter(params))?;
                Ok::<_, anyhow::Error>(n as u64)
            })
            .await
        }
    }
}
