//! The chain tables (in the wallet's database, `crates/wallet/migrations/*/V3__chain_deposits.sql`):
//! deposit address indexes, the watcher's position and recent block hashes per chain, and the
//! deposits it has seen. One implementation for both backends: the statements are written once
//! with `$n` placeholders (SQLite reads them as `?n`); values cross as text where SQLite keeps
//! text.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use base::clock::{self, from_text, to_text};
use events::outbox::{self, EventContext, NewEvent};
use storage::Database;

/// A transfer to a deposit address, as the watcher reads it off a block.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenDeposit {
    pub tx_hash: String,
    /// Its place among the transaction's `Transfer` logs of the chain's tokens (-1 for the value of
    /// a plain transaction): with the hash, its key, which a reorg that mines the transaction in
    /// another block does not change.
    pub transfer_index: i64,
    /// Its log's place in the block (-1 for a plain transaction), as last seen.
    pub log_index: i64,
    pub block_number: i64,
    pub block_hash: String,
    pub address: String,
    pub user_id: Uuid,
    pub currency: String,
    pub amount: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DepositStatus {
    /// On the chain, not final yet.
    Seen,
    /// Final and credited to the user.
    Credited,
    /// Its block left the chain before it was final; never credited.
    Dropped,
    /// Credited, then removed by a reorg deeper than the confirmations: for an admin to look at.
    Reorged,
}

impl DepositStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seen => "seen",
            Self::Credited => "credited",
            Self::Dropped => "dropped",
            Self::Reorged => "reorged",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Seen, Self::Credited, Self::Dropped, Self::Reorged].into_iter().find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone)]
pub struct ChainDeposit {
    pub id: Uuid,
    pub chain: String,
    pub seen: SeenDeposit,
    pub status: DepositStatus,
    pub deposit_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// What a rewind changed: deposits dropped (never credited) and deposits flagged (credited).
#[derive(Debug, Default)]
pub struct Rewound {
    pub dropped: Vec<ChainDeposit>,
    pub flagged: Vec<ChainDeposit>,
}

/// Builds the data of a deposit event (the store cannot format amounts: it knows no assets).
pub type EventData = dyn Fn(&ChainDeposit) -> serde_json::Value + Send + Sync;

#[derive(Clone)]
pub struct ChainStore {
    db: Database,
}

const DEPOSIT_COLS: &str = "id, chain, tx_hash, log_index, block_number, block_hash, address, user_id, currency, amount, status, deposit_id, created_at, updated_at, transfer_index";
const DEPOSIT_NCOLS: usize = 15;

/// A row read from either backend, as text or integers.
enum Value {
    Text(Option<String>),
    Int(i64),
}

impl ChainStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The user's BIP-32 child index, assigned (the next free one) on first use.
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "chain.user_index"))]
    pub async fn user_index(&self, user_id: Uuid) -> anyhow::Result<u32> {
        let find = || {
            self.select(
                "SELECT idx FROM chain_address_indexes WHERE user_id = $1".into(),
                vec![Param::Uuid(user_id)],
                1,
            )
        };
        for attempt in 0..200u64 {
            if let Some(r) = find().await?.first() {
                return Ok(u32::try_from(r.int(0)?)?);
            }
            // Two first requests at once may pick the same index: one insert wins, the other
            // inserts nothing and takes the next index after a short wait (longer each time).
            self.transaction(
                vec![Statement::new(
                    "INSERT INTO chain_address_indexes (user_id, idx, created_at)
                     SELECT $1, COALESCE(MAX(idx) + 1, 0), $2 FROM chain_address_indexes WHERE true ON CONFLICT DO NOTHING",
                    vec![Param::Uuid(user_id), Param::Time(clock::now())],
                )],
                vec![],
                &EventContext::default(),
            )
            .await?;
            if find().await?.is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(1 + attempt % 10)).await;
            }
        }
        anyhow::bail!("could not assign a deposit address index to user {user_id}")
    }

    /// Records the user's address on a chain (idempotent).
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "chain.save_address"))]
    pub async fn save_address(&self, chain: &str, address: &str, user_id: Uuid, idx: u32) -> anyhow::Result<()> {
        let sql = "INSERT INTO chain_addresses (chain, address, user_id, idx, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
        let params = vec![
            Param::text(chain),
            Param::text(address),
            Param::Uuid(user_id),
            Param::Int(Some(i64::from(idx))),
            Param::Time(clock::now()),
        ];
        self.transaction(vec![Statement::new(sql, params)], vec![], &EventContext::default()).await
    }

    /// Every deposit address on a chain, with its user.
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "chain.addresses"))]
    pub async fn addresses(&self, chain: &str) -> anyhow::Result<HashMap<String, Uuid>> {
        let sql = "SELECT address, user_id FROM chain_addresses WHERE chain = $1";
        let rows = self.select(sql.into(), vec![Param::text(chain)], 2).await?;
        rows.iter().map(|r| Ok((r.text(0)?, r.uuid(1)?))).collect()
    }

    /// The last block processed on a chain, with its hash.
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "chain.cursor"))]
    pub async fn cursor(&self, chain: &str) -> anyhow::Result<Option<(i64, String)>> {
        let sql = "SELECT block_number, block_hash FROM chain_cursors WHERE chain = $1";
        let rows = self.select(sql.into(), vec![Param::text(chain)], 2).await?;
        rows.first().map(|r| Ok((r.int(0)?, r.text(1)?))).transpose()
    }

    /// The kept hashes of processed blocks, highest first.
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "chain.recent_blocks"))]
    pub async fn recent_blocks(&self, chain: &str) -> anyhow::Result<Vec<(i64, String)>> {
        let sql = "SELECT number, hash FROM chain_blocks WHERE chain = $1 ORDER BY number DESC";
        let rows = self.select(sql.into(), vec![Param::text(chain)], 2).await?;
        rows.iter().map(|r| Ok((r.int(0)?, r.text(1)?))).collect()
    }

    /// Records a scanned range in one transaction: the deposits in it (new ones with a
    /// `wallet.deposit_seen` event; one seen before on a block a reorg removed comes back to
    /// `seen`, or to `credited` if it had been credited), the hashes of its blocks, and the cursor
    /// at its last block. Blocks older than `keep` below it are forgotten. The deposits that were new.
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "chain.advance"))]
    pub async fn advance(
        &self,
        chain: &str,
        blocks: Vec<(i64, String)>,
        deposits: Vec<SeenDeposit>,
        keep: i64,
        ctx: &EventContext,
        data: &EventData,
    ) -> anyhow::Result<Vec<ChainDeposit>> {
        let Some((last, last_hash)) = blocks.last().cloned() else { return Ok(vec![]) };
        let now = clock::now();
        let mut statements = Vec::new();
        let (mut fresh, mut events) = (Vec::new(), Vec::new());
        for d in deposits {
            let known = self.deposits_where(
                "chain = $1 AND tx_hash = $2 AND transfer_index = $3",
                vec![Param::text(chain), Param::text(&d.tx_hash), Param::Int(Some(d.transfer_index))],
            );
            match known.await?.into_iter().next() {
                None => {
                    let row = ChainDeposit {
                        id: Uuid::now_v7(),
                        chain: chain.to_string(),
                        seen: d,
                        status: DepositStatus::Seen,
                        deposit_id: None,
                        created_at: now,
                        updated_at: now,
                    };
                    events.push(NewEvent::of("wallet.deposit_seen", 1, wallet::service::TOPIC, row.id, &data(&row))?);
                    let d = &row.seen;
                    statements.push(Statement::new(
                        format!(
                            "INSERT INTO chain_deposits ({DEPOSIT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'seen', NULL, $11, $11, $12)"
                        ),
                        vec![
                            Param::Uuid(row.id),
                            Param::text(chain),
                            Param::text(&d.tx_hash),
                            Param::Int(Some(d.log_index)),
                            Param::Int(Some(d.block_number)),
                            Param::text(&d.block_hash),
                            Param::text(&d.address),
                            Param::Uuid(d.user_id),
                            Param::text(&d.currency),
                            Param::Dec(d.amount),
                            Param::Time(now),
                            Param::Int(Some(d.transfer_index)),
                        ],
                    ));
                    fresh.push(row);
                }
                Some(existing) => statements.push(Statement::new(
                    "UPDATE chain_deposits SET block_number = $2, block_hash = $3, updated_at = $4, log_index = $5,
                     status = CASE status WHEN 'dropped' THEN 'seen' WHEN 'reorged' THEN 'credited' ELSE status END WHERE id = $1",
                    vec![
                        Param::Uuid(existing.id),
                        Param::Int(Some(d.block_number)),
                        Param::text(&d.block_hash),
                        Param::Time(now),
                        Param::Int(Some(d.log_index)),
                    ],
                )),
            }
        }
        for (n, h) in &blocks {
            statements.push(Statement::new(
                "INSERT INTO chain_blocks (chain, number, hash) VALUES ($1, $2, $3)
                 ON CONFLICT (chain, number) DO UPDATE SET hash = excluded.hash",
                vec![Param::text(chain), Param::Int(Some(*n)), Param::text(h)],
            ));
        }
        statements.push(Statement::new(
            "INSERT INTO chain_cursors (chain, block_number, block_hash, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (chain) DO UPDATE SET block_number = excluded.block_number, block_hash = excluded.block_hash, updated_at = excluded.updated_at",
            vec![Param::text(chain), Param::Int(Some(last)), Param::text(last_hash), Param::Time(now)],
        ));
        statements.push(Statement::new(
            "DELETE FROM chain_blocks WHERE chain = $1 AND number <= $2",
            vec![Param::text(chain), Param::Int(Some(last - keep))],
        ));
        self.transaction(statements, events, ctx).await?;
        Ok(fresh)
    }

    /// Undoes everything above block `fork` (the last block both branches share, whose hash is
    /// `fork_hash`): its deposits are dropped, or flagged if they were credited; the cursor moves
    /// back to `fork` (no hash: back to before the start block, where the watcher starts with no
    /// cursor).
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "chain.rewind"))]
    pub async fn rewind(&self, chain: &str, fork: i64, fork_hash: &str) -> anyhow::Result<Rewound> {
        let now = clock::now();
        let above = self
            .deposits_where(
                "chain = $1 AND block_number > $2 AND status IN ('seen', 'credited')",
                vec![Param::text(chain), Param::Int(Some(fork))],
            )
            .await?;
        let cursor = if fork_hash.is_empty() {
            Statement::new("DELETE FROM chain_cursors WHERE chain = $1", vec![Param::text(chain)])
        } else {
            Statement::new(
                "UPDATE chain_cursors SET block_number = $2, block_hash = $3, updated_at = $4 WHERE chain = $1",
                vec![Param::text(chain), Param::Int(Some(fork)), Param::text(fork_hash), Param::Time(now)],
            )
        };
        let statements = vec![
            Statement::new(
                "UPDATE chain_deposits SET status = CASE status WHEN 'credited' THEN 'reorged' ELSE 'dropped' END, updated_at = $3
                 WHERE chain = $1 AND block_number > $2 AND status IN ('seen', 'credited')",
                vec![Param::text(chain), Param::Int(Some(fork)), Param::Time(now)],
            ),
            Statement::new(
                "DELETE FROM chain_blocks WHERE chain = $1 AND number > $2",
                vec![Param::text(chain), Param::Int(Some(fork))],
            ),
            cursor,
        ];
        self.transaction(statements, vec![], &EventContext::default()).await?;
        let mut out = Rewound::default();
        for mut d in above {
            d.updated_at = now;
            if d.status == DepositStatus::Credited {
                d.status = DepositStatus::Reorged;
                out.flagged.push(d);
            } else {
                d.status = DepositStatus::Dropped;
                out.dropped.push(d);
            }
        }
        Ok(out)
    }

    /// Deposits seen (not yet credited) in blocks up to `max_block`.
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "chain.creditable"))]
    pub async fn creditable(&self, chain: &str, max_block: i64) -> anyhow::Result<Vec<ChainDeposit>> {
        let condition = "chain = $1 AND block_number <= $2 AND status = 'seen'";
        self.deposits_where(condition, vec![Param::text(chain), Param::Int(Some(max_block))]).await
    }

    /// Marks a seen deposit credited (by the ledger's deposit `deposit_id`); nothing if it is no
    /// longer `seen` (a reorg dropped it meanwhile).
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "chain.mark_credited"))]
    pub async fn mark_credited(&self, id: Uuid, deposit_id: Uuid) -> anyhow::Result<()> {
        let sql = "UPDATE chain_deposits SET status = 'credited', deposit_id = $2, updated_at = $3 WHERE id = $1 AND status = 'seen'";
        let params = vec![Param::Uuid(id), Param::Uuid(deposit_id), Param::Time(clock::now())];
        self.transaction(vec![Statement::new(sql, params)], vec![], &EventContext::default()).await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "chain.deposits_where"))]
    async fn deposits_where(&self, condition: &str, params: Vec<Param>) -> anyhow::Result<Vec<ChainDeposit>> {
        let sql = format!("SELECT {DEPOSIT_COLS} FROM chain_deposits WHERE {condition} ORDER BY block_number, id");
        self.select(sql, params, DEPOSIT_NCOLS).await?.iter().map(deposit).collect()
    }

    /// A page of deposits, newest first: a user's (or everyone's, for admins), of one status or all,
    /// before the id `before`.
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "chain.list"))]
    pub async fn list(
        &self,
        user_id: Option<Uuid>,
        status: Option<DepositStatus>,
        before: Option<Uuid>,
        limit: i64,
    ) -> anyhow::Result<Vec<ChainDeposit>> {
        let mut conditions = vec!["1 = 1".to_string()];
        let mut params = Vec::new();
        if let Some(u) = user_id {
            params.push(Param::Uuid(u));
            conditions.push(format!("user_id = ${}", params.len()));
        }
        if let Some(s) = status {
            params.push(Param::text(s.as_str()));
            conditions.push(format!("status = ${}", params.len()));
        }
        if let Some(b) = before {
            params.push(Param::Uuid(b));
            conditions.push(format!("id < ${}", params.len()));
        }
        let sql = format!(
            "SELECT {DEPOSIT_COLS} FROM chain_deposits WHERE {} ORDER BY id DESC LIMIT {limit}",
            conditions.join(" AND ")
        );
        self.select(sql, params, DEPOSIT_NCOLS).await?.iter().map(deposit).collect()
    }

    /// How many deposits have a status (for the flagged-after-a-reorg gauge).
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "chain.count"))]
    pub async fn count(&self, status: DepositStatus) -> anyhow::Result<i64> {
        let sql = "SELECT COUNT(*) FROM chain_deposits WHERE status = $1";
        let rows = self.select(sql.into(), vec![Param::text(status.as_str())], 1).await?;
        rows.first().map_or(Ok(0), |r| r.int(0))
    }
}

fn pg_value(r: &tokio_postgres::Row, i: usize) -> anyhow::Result<Value> {
    use tokio_postgres::types::Type;
    let ty = r.columns()[i].type_();
    Ok(if *ty == Type::INT8 {
        r.try_get::<_, Option<i64>>(i)?.map_or(Value::Text(None), Value::Int)
    } else if *ty == Type::INT4 {
        r.try_get::<_, Option<i32>>(i)?.map_or(Value::Text(None), |n| Value::Int(n.into()))
    } else if *ty == Type::UUID {
        Value::Text(r.try_get::<_, Option<Uuid>>(i)?.map(|u| u.to_string()))
    } else if *ty == Type::NUMERIC {
        Value::Text(r.try_get::<_, Option<Decimal>>(i)?.map(|d| d.to_string()))
    } else if *ty == Type::TIMESTAMPTZ {
        Value::Text(r.try_get::<_, Option<OffsetDateTime>>(i)?.map(to_text))
    } else {
        Value::Text(r.try_get(i)?)
    })
}

fn pg_rows(rows: &[tokio_postgres::Row], cols: usize) -> anyhow::Result<Vec<Vec<Value>>> {
    rows.iter().map(|r| (0..cols).map(|i| pg_value(r, i)).collect()).collect()
}

fn sqlite_value(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Value> {
    use rusqlite::types::ValueRef;
    Ok(match r.get_ref(i)? {
        ValueRef::Integer(n) => Value::Int(n),
        ValueRef::Null => Value::Text(None),
        ValueRef::Text(t) => Value::Text(Some(String::from_utf8_lossy(t).into_owned())),
        other => Value::Text(Some(format!("{other:?}"))),
    })
}

fn text(v: &Value) -> anyhow::Result<String> {
    match v {
        Value::Text(Some(t)) => Ok(t.clone()),
        Value::Int(n) => Ok(n.to_string()),
        Value::Text(None) => anyhow::bail!("unexpected NULL"),
    }
}

fn opt_text(v: &Value) -> Option<String> {
    match v {
        Value::Text(t) => t.clone(),
        Value::Int(n) => Some(n.to_string()),
    }
}

fn int(v: &Value) -> anyhow::Result<i64> {
    match v {
        Value::Int(n) => Ok(*n),
        other => Ok(text(other)?.parse()?),
    }
}

fn uuid(v: &Value) -> anyhow::Result<Uuid> {
    Ok(text(v)?.parse()?)
}

fn deposit(r: &Row) -> anyhow::Result<ChainDeposit> {
    let status = r.text(10)?;
    Ok(ChainDeposit {
        id: r.uuid(0)?,
        chain: r.text(1)?,
        seen: SeenDeposit {
            tx_hash: r.text(2)?,
            transfer_index: r.int(14)?,
            log_index: r.int(3)?,
            block_number: r.int(4)?,
            block_hash: r.text(5)?,
            address: r.text(6)?,
            user_id: r.uuid(7)?,
            currency: r.text(8)?,
            amount: r.decimal(9)?,
        },
        status: DepositStatus::parse(&status).ok_or_else(|| anyhow::anyhow!("unknown deposit status {status}"))?,
        deposit_id: r.opt_text(11).map(|t| t.parse()).transpose()?,
        created_at: r.time(12)?,
        updated_at: r.time(13)?,
    })
}

/// A statement parameter, typed for PostgreSQL and stored as text or an integer in SQLite.
#[derive(Debug, Clone)]
pub enum Param {
    Text(Option<String>),
    Int(Option<i64>),
    Uuid(Uuid),
    Dec(Decimal),
    Time(OffsetDateTime),
}

impl Param {
    pub fn text(s: impl Into<String>) -> Self {
        Self::Text(Some(s.into()))
    }

    fn pg(&self) -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
        match self {
            Self::Text(t) => Box::new(t.clone()),
            Self::Int(n) => Box::new(*n),
            Self::Uuid(u) => Box::new(*u),
            Self::Dec(d) => Box::new(*d),
            Self::Time(t) => Box::new(*t),
        }
    }

    fn sqlite(&self) -> rusqlite::types::Value {
        use rusqlite::types::Value as V;
        match self {
            Self::Text(t) => t.clone().map_or(V::Null, V::Text),
            Self::Int(n) => n.map_or(V::Null, V::Integer),
            Self::Uuid(u) => V::Text(u.to_string()),
            Self::Dec(d) => V::Text(d.to_string()),
            Self::Time(t) => V::Text(to_text(*t)),
        }
    }
}

/// One statement of a transaction, and the rows it must change (`None`: any number).
pub struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
    pub expect: Option<u64>,
}

impl Statement {
    pub fn new(sql: impl Into<String>, params: Vec<Param>) -> Self {
        Self { sql: sql.into(), params, expect: None }
    }

    /// Fails the transaction unless exactly `n` rows change (an optimistic check).
    pub fn expecting(mut self, n: u64) -> Self {
        self.expect = Some(n);
        self
    }
}

impl ChainStore {
    /// Runs the statements (written with `$n` placeholders) and the events in one transaction.
    pub async fn transaction(
        &self,
        statements: Vec<Statement>,
        events: Vec<NewEvent>,
        ctx: &EventContext,
    ) -> anyhow::Result<()> {
        let any_event = !events.is_empty();
        match &self.db {
            Database::Postgres(pool) => {
                let mut c = pool.get().await?;
                let tx = c.transaction().await?;
                for st in &statements {
                    let boxed: Vec<_> = st.params.iter().map(Param::pg).collect();
                    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        boxed.iter().map(|b| b.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                    let n = tx.execute(st.sql.as_str(), &refs).await?;
                    if let Some(want) = st.expect {
                        anyhow::ensure!(n == want, "expected {want} rows changed, not {n}: {}", st.sql);
                    }
                }
                for e in &events {
                    outbox::insert_pg(&tx, ctx, e).await?;
                }
                tx.commit().await?;
            }
            Database::Sqlite(pool) => {
                let ctx = ctx.clone();
                pool.call(move |c| {
                    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    for st in &statements {
                        let values: Vec<rusqlite::types::Value> = st.params.iter().map(Param::sqlite).collect();
                        let n = tx.execute(&st.sql.replace('$', "?"), rusqlite::params_from_iter(values))? as u64;
                        if let Some(want) = st.expect {
                            anyhow::ensure!(n == want, "expected {want} rows changed, not {n}: {}", st.sql);
                        }
                    }
                    for e in &events {
                        outbox::insert_sqlite(&tx, &ctx, e)?;
                    }
                    tx.commit().map_err(anyhow::Error::from)
                })
                .await?;
            }
        }
        if any_event {
            outbox::notify_written();
        }
        Ok(())
    }

    /// Rows of a query (written with `$n` placeholders), `cols` columns each.
    pub async fn select(&self, sql: String, params: Vec<Param>, cols: usize) -> anyhow::Result<Vec<Row>> {
        let rows = match &self.db {
            Database::Postgres(pool) => {
                let boxed: Vec<_> = params.iter().map(Param::pg).collect();
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    boxed.iter().map(|b| b.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                pg_rows(&pool.get().await?.query(sql.as_str(), &refs).await?, cols)?
            }
            Database::Sqlite(pool) => {
                pool.call(move |c| {
                    let values: Vec<rusqlite::types::Value> = params.iter().map(Param::sqlite).collect();
                    let mut st = c.prepare(&sql.replace('$', "?"))?;
                    let rows = st.query_map(rusqlite::params_from_iter(values), |r| {
                        (0..cols).map(|i| sqlite_value(r, i)).collect()
                    })?;
                    rows.collect::<Result<Vec<Vec<Value>>, _>>().map_err(anyhow::Error::from)
                })
                .await?
            }
        };
        Ok(rows.into_iter().map(Row).collect())
    }
}

/// A row read by [`ChainStore::select`].
pub struct Row(Vec<Value>);

impl Row {
    pub fn text(&self, i: usize) -> anyhow::Result<String> {
        text(&self.0[i])
    }

    pub fn opt_text(&self, i: usize) -> Option<String> {
        opt_text(&self.0[i])
    }

    pub fn int(&self, i: usize) -> anyhow::Result<i64> {
        int(&self.0[i])
    }

    pub fn opt_int(&self, i: usize) -> anyhow::Result<Option<i64>> {
        match &self.0[i] {
            Value::Text(None) => Ok(None),
            v => int(v).map(Some),
        }
    }

    pub fn uuid(&self, i: usize) -> anyhow::Result<Uuid> {
        uuid(&self.0[i])
    }

    pub fn decimal(&self, i: usize) -> anyhow::Result<Decimal> {
        Ok(text(&self.0[i])?.parse()?)
    }

    pub fn time(&self, i: usize) -> anyhow::Result<OffsetDateTime> {
        Ok(from_text(&text(&self.0[i])?)?)
    }

    pub fn opt_time(&self, i: usize) -> anyhow::Result<Option<OffsetDateTime>> {
        opt_text(&self.0[i]).map(|t| from_text(&t)).transpose().map_err(anyhow::Error::from)
    }
}
