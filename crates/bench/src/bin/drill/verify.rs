//! The durability check after a failover: every acknowledged order and claim is in the database
//! (the new primary), and no order has two live claims.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::Report;

#[derive(Args, Debug)]
pub struct Verify {
    /// The PostgreSQL database to check (`postgres://user@host:port/db`).
    #[arg(long)]
    db: String,
    /// A drill's `--out` file: its `orders` (ids) and `claims` (`{id, order_id}`) were acknowledged.
    #[arg(long, required = true)]
    acked: Vec<PathBuf>,
}

impl Verify {
    pub async fn run(self) -> anyhow::Result<Report> {
        let (db, connection) = tokio_postgres::connect(&self.db, tokio_postgres::NoTls)
            .await
            .context("connecting to the database to verify")?;
        tokio::spawn(connection);
        let (mut orders, mut claims) = (Vec::new(), Vec::new());
        for path in &self.acked {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let acked: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            orders.extend(ids(&acked["orders"], |v| v.as_str())?);
            claims.extend(ids(&acked["claims"], |v| v["id"].as_str())?);
        }
        let orders_found = found(&db, "orders", &orders).await?;
        let claims_found = found(&db, "claims", &claims).await?;
        let doubles: Vec<Uuid> = db
            .query(
                "SELECT order_id FROM claims WHERE status IN ('pending', 'processed') GROUP BY order_id HAVING COUNT(*) > 1",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let lost = (orders.len() - orders_found) + (claims.len() - claims_found);
        println!(
            "verify: {orders_found} of {} acknowledged orders and {claims_found} of {} acknowledged claims found; {} orders with two live claims",
            orders.len(),
            claims.len(),
            doubles.len()
        );
        let failure = (lost > 0 || !doubles.is_empty())
            .then(|| format!("{lost} acknowledged writes lost, {} orders with two live claims", doubles.len()));
        Ok(Report {
            figures: json!({"drill": "verify", "orders": orders.len(), "orders_found": orders_found,
                "claims": claims.len(), "claims_found": claims_found, "lost": lost,
                "double_claims": doubles.iter().map(Uuid::to_string).collect::<Vec<_>>()}),
            failure,
        })
    }
}

/// How many of `ids` are in `table`.
async fn found(db: &tokio_postgres::Client, table: &str, ids: &[Uuid]) -> anyhow::Result<usize> {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE id = ANY($1)");
    Ok(db.query_one(&sql, &[&ids]).await?.get::<_, i64>(0) as usize)
}

/// The distinct ids of a JSON list, each picked out of its item by `pick`.
fn ids(list: &Value, pick: fn(&Value) -> Option<&str>) -> anyhow::Result<Vec<Uuid>> {
    let mut out: Vec<Uuid> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| pick(v).context("an item without an id")?.parse().context("not a UUID"))
        .collect::<anyhow::Result<_>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}
