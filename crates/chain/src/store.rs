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
    pub async fn user_index(&self, user_id: Uuid) -> anyhow::Result<u32> {
        for attempt in 0..200u64 {
            if let Some(idx) =
                self.query_int("SELECT idx FROM chain_address_indexes WHERE user_id = $1", user_id).await?
            {
                return Ok(u32::try_from(idx)?);
            }
            // Two first requests at once may pick the same index: one insert wins, the other retries.
            let now = clock::now();
            let inserted = match &self.db {
                Database::Postgres(pool) => {
                    let c = pool.get().await?;
                    c.execute(
                        "INSERT INTO chain_address_indexes (user_id, idx, created_at)
                         SELECT $1, COALESCE(MAX(idx) + 1, 0), $2 FROM chain_address_indexes ON CONFLICT DO NOTHING",
                        &[&user_id, &now],
                    )
                    .await?
                }
                Database::Sqlite(pool) => {
                    pool.call(move |c| {
                        c.execute(
                            "INSERT INTO chain_address_indexes (user_id, idx, created_at)
                             SELECT ?1, COALESCE(MAX(idx) + 1, 0), ?2 FROM chain_address_indexes WHERE true ON CONFLICT DO NOTHING",
                            rusqlite::params![user_id.to_string(), to_text(now)],
                        )
                        .map_err(anyhow::Error::from)
                    })
                    .await? as u64
                }
            };
            if inserted == 0 {
                // Another user took that index: wait a little (longer each time) and take the next.
                tokio::time::sleep(std::time::Duration::from_millis(1 + attempt % 10)).await;
            }
        }
        anyhow::bail!("could not assign a deposit address index to user {user_id}")
    }

    async fn query_int(&self, sql: &'static str, id: Uuid) -> anyhow::Result<Option<i64>> {
        Ok(match &self.db {
            Database::Postgres(pool) => pool.get().await?.query_opt(sql, &[&id]).await?.map(|r| r.get(0)),
            Database::Sqlite(pool) => {
                pool.call(move |c| {
                    use rusqlite::OptionalExtension;
                    c.query_row(&sql.replace('$', "?"), [id.to_string()], |r| r.get(0))
                        .optional()
                        .map_err(anyhow::Error::from)
                })
                .await?
            }
        })
    }

    /// Records the user's address on a chain (idempotent).
    pub async fn save_address(&self, chain: &str, address: &str, user_id: Uuid, idx: u32) -> anyhow::Result<()> {
        let now = clock::now();
        let sql = "INSERT INTO chain_addresses (chain, address, user_id, idx, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
        match &self.db {
            Database::Postgres(pool) => {
                pool.get().await?.execute(sql, &[&chain, &address, &user_id, &i64::from(idx), &now]).await?;
            }
            Database::Sqlite(pool) => {
                let p = (chain.to_string(), address.to_string(), user_id.to_string(), i64::from(idx), to_text(now));
                pool.call(move |c| {
                    c.execute(&sql.replace('$', "?"), rusqlite::params![p.0, p.1, p.2, p.3, p.4])
                        .map_err(anyhow::Error::from)
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Every deposit address on a chain, with its user.
    pub async fn addresses(&self, chain: &str) -> anyhow::Result<HashMap<String, Uuid>> {
        let rows =
            self.rows("SELECT address, user_id FROM chain_addresses WHERE chain = $1", chain.to_string(), 2).await?;
        rows.into_iter().map(|r| Ok((text(&r[0])?, uuid(&r[1])?))).collect()
    }

    /// The last block processed on a chain, with its hash.
    pub async fn cursor(&self, chain: &str) -> anyhow::Result<Option<(i64, String)>> {
        let rows = self
            .rows("SELECT block_number, block_hash FROM chain_cursors WHERE chain = $1", chain.to_string(), 2)
            .await?;
        rows.first().map(|r| Ok((int(&r[0])?, text(&r[1])?))).transpose()
    }

    /// The kept hashes of processed blocks, highest first.
    pub async fn recent_blocks(&self, chain: &str) -> anyhow::Result<Vec<(i64, String)>> {
        let rows = self
            .rows("SELECT number, hash FROM chain_blocks WHERE chain = $1 ORDER BY number DESC", chain.to_string(), 2)
            .await?;
        rows.iter().map(|r| Ok((int(&r[0])?, text(&r[1])?))).collect()
    }

    async fn rows(&self, sql: &'static str, key: String, cols: usize) -> anyhow::Result<Vec<Vec<Value>>> {
        Ok(match &self.db {
            Database::Postgres(pool) => {
                let rows = pool.get().await?.query(sql, &[&key]).await?;
                rows.iter().map(|r| (0..cols).map(|i| pg_value(r, i)).collect()).collect::<anyhow::Result<_>>()?
            }
            Database::Sqlite(pool) => {
                pool.call(move |c| {
                    let mut st = c.prepare(&sql.replace('$', "?"))?;
                    let rows = st.query_map([key], |r| (0..cols).map(|i| sqlite_value(r, i)).collect())?;
                    rows.collect::<Result<Vec<Vec<Value>>, _>>().map_err(anyhow::Error::from)
                })
                .await?
            }
        })
    }

    /// Records a scanned range in one transaction: the deposits in it (new ones with a
    /// `wallet.deposit_seen` event; one seen before on a block a reorg removed comes back to
    /// `seen`, or to `credited` if it had been credited), the hashes of its blocks, and the cursor
    /// at its last block. Blocks older than `keep` below it are forgotten. The deposits that were new.
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
        let chain = chain.to_string();
        // Decided here, written below: which deposits are new (and their events).
        let mut fresh = Vec::new();
        let mut known = Vec::new();
        for d in deposits {
            match self.deposit_by_key(&chain, &d.tx_hash, d.transfer_index).await? {
                None => {
                    let row = ChainDeposit {
                        id: Uuid::now_v7(),
                        chain: chain.clone(),
                        seen: d,
                        status: DepositStatus::Seen,
                        deposit_id: None,
                        created_at: now,
                        updated_at: now,
                    };
                    let event = NewEvent::of("wallet.deposit_seen", 1, wallet::service::TOPIC, row.id, &data(&row))?;
                    fresh.push((row, event));
                }
                Some(existing) => known.push((existing.id, d)),
            }
        }
        let upsert_known = "UPDATE chain_deposits SET block_number = $2, block_hash = $3, updated_at = $4, log_index = $5,
             status = CASE status WHEN 'dropped' THEN 'seen' WHEN 'reorged' THEN 'credited' ELSE status END WHERE id = $1";
        let insert = format!(
            "INSERT INTO chain_deposits ({DEPOSIT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'seen', NULL, $11, $11, $12)"
        );
        let cursor = "INSERT INTO chain_cursors (chain, block_number, block_hash, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (chain) DO UPDATE SET block_number = excluded.block_number, block_hash = excluded.block_hash, updated_at = excluded.updated_at";
        let block = "INSERT INTO chain_blocks (chain, number, hash) VALUES ($1, $2, $3)
             ON CONFLICT (chain, number) DO UPDATE SET hash = excluded.hash";
        let prune = "DELETE FROM chain_blocks WHERE chain = $1 AND number <= $2";
        let forget = last - keep;
        match &self.db {
            Database::Postgres(pool) => {
                let mut c = pool.get().await?;
                let tx = c.transaction().await?;
                for (row, event) in &fresh {
                    let d = &row.seen;
                    tx.execute(
                        insert.as_str(),
                        &[
                            &row.id,
                            &chain,
                            &d.tx_hash,
                            &d.log_index,
                            &d.block_number,
                            &d.block_hash,
                            &d.address,
                            &d.user_id,
                            &d.currency,
                            &d.amount,
                            &now,
                            &d.transfer_index,
                        ],
                    )
                    .await?;
                    outbox::insert_pg(&tx, ctx, event).await?;
                }
                for (id, d) in &known {
                    tx.execute(upsert_known, &[id, &d.block_number, &d.block_hash, &now, &d.log_index]).await?;
                }
                for (n, h) in &blocks {
                    tx.execute(block, &[&chain, n, h]).await?;
                }
                tx.execute(cursor, &[&chain, &last, &last_hash, &now]).await?;
                tx.execute(prune, &[&chain, &forget]).await?;
                tx.commit().await?;
            }
            Database::Sqlite(pool) => {
                let (fresh, ctx) = (fresh.clone(), ctx.clone());
                pool.call(move |c| {
                    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let q = |s: &str| s.replace('$', "?");
                    for (row, event) in &fresh {
                        let d = &row.seen;
                        tx.execute(
                            &q(&insert),
                            rusqlite::params![
                                row.id.to_string(),
                                chain,
                                d.tx_hash,
                                d.log_index,
                                d.block_number,
                                d.block_hash,
                                d.address,
                                d.user_id.to_string(),
                                d.currency,
                                d.amount.to_string(),
                                to_text(now),
                                d.transfer_index
                            ],
                        )?;
                        outbox::insert_sqlite(&tx, &ctx, event)?;
                    }
                    for (id, d) in &known {
                        tx.execute(
                            &q(upsert_known),
                            rusqlite::params![id.to_string(), d.block_number, d.block_hash, to_text(now), d.log_index],
                        )?;
                    }
                    for (n, h) in &blocks {
                        tx.execute(&q(block), rusqlite::params![chain, n, h])?;
                    }
                    tx.execute(&q(cursor), rusqlite::params![chain, last, last_hash, to_text(now)])?;
                    tx.execute(&q(prune), rusqlite::params![chain, forget])?;
                    tx.commit().map_err(anyhow::Error::from)
                })
                .await?;
            }
        }
        outbox::notify_written();
        Ok(fresh.into_iter().map(|(row, _)| row).collect())
    }

    /// Undoes everything above block `fork` (the last block both branches share, whose hash is
    /// `fork_hash`): its deposits are dropped, or flagged if they were credited; the cursor moves
    /// back to `fork`.
    pub async fn rewind(&self, chain: &str, fork: i64, fork_hash: &str) -> anyhow::Result<Rewound> {
        let now = clock::now();
        let above = self
            .deposits_where("chain = $1 AND block_number > $2 AND status IN ('seen', 'credited')", chain, fork)
            .await?;
        // No hash: back to before the start block, where the watcher starts with no cursor.
        let to_start = fork_hash.is_empty();
        let statements = [
            "UPDATE chain_deposits SET status = CASE status WHEN 'credited' THEN 'reorged' ELSE 'dropped' END, updated_at = $3
             WHERE chain = $1 AND block_number > $2 AND status IN ('seen', 'credited')",
            "DELETE FROM chain_blocks WHERE chain = $1 AND number > $2",
            "UPDATE chain_cursors SET block_number = $2, block_hash = $4, updated_at = $3 WHERE chain = $1",
            "DELETE FROM chain_cursors WHERE chain = $1",
        ];
        let chain_s = chain.to_string();
        let fork_hash = fork_hash.to_string();
        match &self.db {
            Database::Postgres(pool) => {
                let mut c = pool.get().await?;
                let tx = c.transaction().await?;
                tx.execute(statements[0], &[&chain_s, &fork, &now]).await?;
                tx.execute(statements[1], &[&chain_s, &fork]).await?;
                if to_start {
                    tx.execute(statements[3], &[&chain_s]).await?;
                } else {
                    tx.execute(statements[2], &[&chain_s, &fork, &now, &fork_hash]).await?;
                }
                tx.commit().await?;
            }
            Database::Sqlite(pool) => {
                pool.call(move |c| {
                    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let q = |s: &str| s.replace('$', "?");
                    tx.execute(&q(statements[0]), rusqlite::params![chain_s, fork, to_text(now)])?;
                    tx.execute(&q(statements[1]), rusqlite::params![chain_s, fork])?;
                    if to_start {
                        tx.execute(&q(statements[3]), rusqlite::params![chain_s])?;
                    } else {
                        tx.execute(&q(statements[2]), rusqlite::params![chain_s, fork, to_text(now), fork_hash])?;
                    }
                    tx.commit().map_err(anyhow::Error::from)
                })
                .await?;
            }
        }
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
    pub async fn creditable(&self, chain: &str, max_block: i64) -> anyhow::Result<Vec<ChainDeposit>> {
        self.deposits_where("chain = $1 AND block_number <= $2 AND status = 'seen'", chain, max_block).await
    }

    /// Marks a seen deposit credited (by the ledger's deposit `deposit_id`); false if it is no
    /// longer `seen` (a reorg dropped it meanwhile).
    pub async fn mark_credited(&self, id: Uuid, deposit_id: Uuid) -> anyhow::Result<bool> {
        let now = clock::now();
        let sql = "UPDATE chain_deposits SET status = 'credited', deposit_id = $2, updated_at = $3 WHERE id = $1 AND status = 'seen'";
        let n = match &self.db {
            Database::Postgres(pool) => pool.get().await?.execute(sql, &[&id, &deposit_id, &now]).await?,
            Database::Sqlite(pool) => {
                pool.call(move |c| {
                    c.execute(
                        &sql.replace('$', "?"),
                        rusqlite::params![id.to_string(), deposit_id.to_string(), to_text(now)],
                    )
                    .map_err(anyhow::Error::from)
                })
                .await? as u64
            }
        };
        Ok(n == 1)
    }

    async fn deposit_by_key(
        &self,
        chain: &str,
        tx_hash: &str,
        transfer_index: i64,
    ) -> anyhow::Result<Option<ChainDeposit>> {
        let sql = format!(
            "SELECT {DEPOSIT_COLS} FROM chain_deposits WHERE chain = $1 AND tx_hash = $2 AND transfer_index = $3"
        );
        let rows = match &self.db {
            Database::Postgres(pool) => {
                let rows = pool.get().await?.query(sql.as_str(), &[&chain, &tx_hash, &transfer_index]).await?;
                pg_rows(&rows, DEPOSIT_NCOLS)?
            }
            Database::Sqlite(pool) => {
                let (chain, tx_hash) = (chain.to_string(), tx_hash.to_string());
                pool.call(move |c| {
                    let mut st = c.prepare(&sql.replace('$', "?"))?;
                    let rows = st.query_map(rusqlite::params![chain, tx_hash, transfer_index], |r| {
                        (0..DEPOSIT_NCOLS).map(|i| sqlite_value(r, i)).collect()
                    })?;
                    rows.collect::<Result<Vec<Vec<Value>>, _>>().map_err(anyhow::Error::from)
                })
                .await?
            }
        };
        rows.first().map(|r| deposit(r)).transpose()
    }

    async fn deposits_where(&self, condition: &str, chain: &str, n: i64) -> anyhow::Result<Vec<ChainDeposit>> {
        let sql = format!("SELECT {DEPOSIT_COLS} FROM chain_deposits WHERE {condition} ORDER BY block_number, id");
        let rows = match &self.db {
            Database::Postgres(pool) => {
                pg_rows(&pool.get().await?.query(sql.as_str(), &[&chain, &n]).await?, DEPOSIT_NCOLS)?
            }
            Database::Sqlite(pool) => {
                let chain = chain.to_string();
                pool.call(move |c| {
                    let mut st = c.prepare(&sql.replace('$', "?"))?;
                    let rows = st.query_map(rusqlite::params![chain, n], |r| {
                        (0..DEPOSIT_NCOLS).map(|i| sqlite_value(r, i)).collect()
                    })?;
                    rows.collect::<Result<Vec<Vec<Value>>, _>>().map_err(anyhow::Error::from)
                })
                .await?
            }
        };
        rows.iter().map(|r| deposit(r)).collect()
    }

    /// A page of deposits, newest first: a user's (or everyone's, for admins), of one status or all,
    /// before the id `before`.
    pub async fn list(
        &self,
        user_id: Option<Uuid>,
        status: Option<DepositStatus>,
        before: Option<Uuid>,
        limit: i64,
    ) -> anyhow::Result<Vec<ChainDeposit>> {
        let mut conditions = vec!["true".to_string()];
        let mut params: Vec<String> = Vec::new();
        if let Some(u) = user_id {
            params.push(u.to_string());
            conditions.push(format!("user_id = ${}", params.len()));
        }
        if let Some(s) = status {
            params.push(s.as_str().to_string());
            conditions.push(format!("status = ${}", params.len()));
        }
        if let Some(b) = before {
            params.push(b.to_string());
            conditions.push(format!("id < ${}", params.len()));
        }
        let sql = format!(
            "SELECT {DEPOSIT_COLS} FROM chain_deposits WHERE {} ORDER BY id DESC LIMIT {limit}",
            conditions.join(" AND ")
        );
        let rows = match &self.db {
            Database::Postgres(pool) => {
                // Ids compare as UUIDs in PostgreSQL: cast the text parameters.
                let sql = sql.replace("user_id = $", "user_id::text = $").replace("id < $", "id::text < $");
                let c = pool.get().await?;
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                pg_rows(&c.query(sql.as_str(), &refs).await?, DEPOSIT_NCOLS)?
            }
            Database::Sqlite(pool) => {
                pool.call(move |c| {
                    let mut st = c.prepare(&sql.replace('$', "?"))?;
                    let rows = st.query_map(rusqlite::params_from_iter(params.iter()), |r| {
                        (0..DEPOSIT_NCOLS).map(|i| sqlite_value(r, i)).collect()
                    })?;
                    rows.collect::<Result<Vec<Vec<Value>>, _>>().map_err(anyhow::Error::from)
                })
                .await?
            }
        };
        rows.iter().map(|r| deposit(r)).collect()
    }

    /// How many deposits have a status (for the flagged-after-a-reorg gauge).
    pub async fn count(&self, status: DepositStatus) -> anyhow::Result<i64> {
        let rows =
            self.rows("SELECT COUNT(*) FROM chain_deposits WHERE status = $1", status.as_str().to_string(), 1).await?;
        rows.first().map_or(Ok(0), |r| int(&r[0]))
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

fn deposit(r: &[Value]) -> anyhow::Result<ChainDeposit> {
    let status = text(&r[10])?;
    Ok(ChainDeposit {
        id: uuid(&r[0])?,
        chain: text(&r[1])?,
        seen: SeenDeposit {
            tx_hash: text(&r[2])?,
            transfer_index: int(&r[14])?,
            log_index: int(&r[3])?,
            block_number: int(&r[4])?,
            block_hash: text(&r[5])?,
            address: text(&r[6])?,
            user_id: uuid(&r[7])?,
            currency: text(&r[8])?,
            amount: text(&r[9])?.parse()?,
        },
        status: DepositStatus::parse(&status).ok_or_else(|| anyhow::anyhow!("unknown deposit status {status}"))?,
        deposit_id: opt_text(&r[11]).map(|t| t.parse()).transpose()?,
        created_at: from_text(&text(&r[12])?)?,
        updated_at: from_text(&text(&r[13])?)?,
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
