//! One page of a list endpoint's ids, on either backend.

/// A value a list filter compares a column with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterValue {
    Uuid(uuid::Uuid),
    Text(String),
}

impl From<uuid::Uuid> for FilterValue {
    fn from(u: uuid::Uuid) -> Self {
        Self::Uuid(u)
    }
}

impl From<String> for FilterValue {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<&str> for FilterValue {
    fn from(s: &str) -> Self {
        Self::Text(s.to_string())
    }
}

/// One page of a list endpoint's ids, newest first (UUIDv7 ids sort by time), on either backend:
/// `IdPage::new("orders", "status <> 'deleted'").eq("user_id", f.user_id)...page(f.before, f.limit)`.
/// Column names and conditions are the caller's constants; values are always bound parameters.
#[derive(Debug, Clone)]
pub struct IdPage {
    table: &'static str,
    base: &'static str,
    conds: Vec<(&'static str, &'static str, FilterValue)>,
    before: Option<uuid::Uuid>,
    limit: i64,
}

impl IdPage {
    /// `base` is a condition every row must meet (`"true"` for none).
    pub fn new(table: &'static str, base: &'static str) -> Self {
        Self { table, base, conds: Vec::new(), before: None, limit: 50 }
    }

    /// `column = value`, when there is a value.
    pub fn eq(self, column: &'static str, value: Option<impl Into<FilterValue>>) -> Self {
        self.cond(column, "=", value)
    }

    /// `column <> value`, when there is a value.
    pub fn ne(self, column: &'static str, value: Option<impl Into<FilterValue>>) -> Self {
        self.cond(column, "<>", value)
    }

    fn cond(mut self, column: &'static str, op: &'static str, value: Option<impl Into<FilterValue>>) -> Self {
        if let Some(v) = value {
            self.conds.push((column, op, v.into()));
        }
        self
    }

    /// Ids before the cursor's, at most `limit` (1 to 1000).
    pub fn page(mut self, before: Option<uuid::Uuid>, limit: i64) -> Self {
        self.before = before;
        self.limit = limit.clamp(1, 1000);
        self
    }

    fn sql(&self, placeholder: &str) -> String {
        let mut sql = format!("SELECT id FROM {} WHERE {}", self.table, self.base);
        let mut n = 0;
        for (column, op, _) in &self.conds {
            n += 1;
            sql.push_str(&format!(" AND {column} {op} {placeholder}{n}"));
        }
        if self.before.is_some() {
            sql.push_str(&format!(" AND id < {placeholder}{}", n + 1));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", self.limit));
        sql
    }

    /// Runs it on PostgreSQL.
    pub async fn fetch_pg(&self, client: &impl tokio_postgres::GenericClient) -> anyhow::Result<Vec<uuid::Uuid>> {
        use tokio_postgres::types::ToSql;
        let mut params: Vec<&(dyn ToSql + Sync)> = self
            .conds
            .iter()
            .map(|(_, _, v)| match v {
                FilterValue::Uuid(u) => u as &(dyn ToSql + Sync),
                FilterValue::Text(s) => s,
            })
            .collect();
        if let Some(b) = &self.before {
            params.push(b);
        }
        let rows = client.query(&self.sql("$"), &params).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Runs it on SQLite (ids stored as text).
    pub fn fetch_sqlite(&self, c: &rusqlite::Connection) -> anyhow::Result<Vec<uuid::Uuid>> {
        let mut params: Vec<String> = self
            .conds
            .iter()
            .map(|(_, _, v)| match v {
                FilterValue::Uuid(u) => u.to_string(),
                FilterValue::Text(s) => s.clone(),
            })
            .collect();
        params.extend(self.before.map(|b| b.to_string()));
        let mut st = c.prepare_cached(&self.sql("?"))?;
        let rows = st.query_map(rusqlite::params_from_iter(params.iter()), |r| r.get::<_, String>(0))?;
        rows.map(|r| Ok(r?.parse()?)).collect()
    }
}
