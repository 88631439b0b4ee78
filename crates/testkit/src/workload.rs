//! A random concurrent money workload: deposits, transfers, orders, item changes, cancels, claims
//! and releases from many clients at once, against a walletd whose address may change under it
//! (a `kill -9` and a restart). It records what every 2xx answer promised, and [`unreflected`] checks
//! afterwards that the ledger and the orders hold each promise.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Actor {
    pub token: String,
    pub id: Uuid,
}

impl From<&crate::Session> for Actor {
    fn from(s: &crate::Session) -> Self {
        Self { token: s.access.clone(), id: s.user_id }
    }
}

/// What a 2xx answer promised.
#[derive(Debug, Clone)]
pub enum Acked {
    Deposit {
        reference: String,
    },
    Transfer {
        id: String,
        from: usize,
    },
    /// An order created or changed: it exists at this version or a later one.
    Order {
        id: String,
        owner: usize,
        version: i64,
    },
    Cancel {
        id: String,
        owner: usize,
    },
    Claim {
        id: String,
        by: usize,
    },
    Release {
        id: String,
        by: usize,
    },
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every answer's status.
    pub statuses: Vec<u16>,
    /// Requests that got no answer (the server went away under them).
    pub unanswered: usize,
    pub acked: Vec<Acked>,
}

impl Outcome {
    pub fn count(&self, range: std::ops::Range<u16>) -> usize {
        self.statuses.iter().filter(|s| range.contains(s)).count()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} operations: {} 2xx, {} 4xx, {} 5xx, {} unanswered",
            self.statuses.len() + self.unanswered,
            self.count(200..300),
            self.count(400..500),
            self.count(500..600),
            self.unanswered
        )
    }
}

/// The workload: `clients` clients of `steps` operations each, as `users` (funded and with USDC
/// supply), deposits by `admin`, against the walletd at `base` (the latest address sent on its
/// channel). `done` counts finished operations, for whoever wants to act in the middle.
pub struct Workload<'a> {
    pub http: &'a reqwest::Client,
    pub base: watch::Receiver<String>,
    pub admin: &'a str,
    pub users: &'a [Actor],
    pub clients: u64,
    pub steps: usize,
    pub done: &'a AtomicUsize,
}

/// A small deterministic generator (xorshift), so a failing workload can be replayed by its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn pick(list: &Mutex<Vec<(usize, String)>>, rng: &mut Rng) -> Option<(usize, String)> {
    let list = list.lock().unwrap();
    (!list.is_empty()).then(|| list[rng.below(list.len())].clone())
}

enum Op {
    Deposit(String),
    Transfer(usize),
    Order(usize),
    Change { owner: usize, id: String, cancel: bool },
    Claim(usize),
    Release { by: usize, id: String },
}

impl Workload<'_> {
    /// Runs every client to its end.
    pub async fn run(&self) -> Outcome {
        let orders: Mutex<Vec<(usize, String)>> = Mutex::default();
        let claims: Mutex<Vec<(usize, String)>> = Mutex::default();
        let per_client = futures::future::join_all((0..self.clients).map(|c| self.client(c, &orders, &claims))).await;
        let mut all = Outcome::default();
        for o in per_client {
            all.statuses.extend(o.statuses);
            all.unanswered += o.unanswered;
            all.acked.extend(o.acked);
        }
        all
    }

    async fn client(
        &self,
        client: u64,
        orders: &Mutex<Vec<(usize, String)>>,
        claims: &Mutex<Vec<(usize, String)>>,
    ) -> Outcome {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (client + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let mut out = Outcome::default();
        let users = self.users;
        for step in 0..self.steps {
            let who = rng.below(users.len());
            let me = &users[who];
            let amount = format!("{}.{:02}", 1 + rng.below(40), rng.below(100));
            let items =
                json!([{"product_id": "p", "product_name": "n", "price": amount, "quantity": 1 + rng.below(3)}]);
            let (op, method, path, token, body) = match rng.below(10) {
                0 => {
                    let reference = format!("w-{client}-{step}");
                    let body = json!({"user_id": me.id, "currency": "USDC", "amount": amount, "reference": reference});
                    (Op::Deposit(reference), "POST", "/v1/admin/deposits".to_string(), self.admin, body)
                }
                1 | 2 => {
                    let to = &users[(who + 1 + rng.below(users.len() - 1)) % users.len()];
                    let body = json!({"to_user_id": to.id, "currency": "USDC", "amount": amount});
                    (Op::Transfer(who), "POST", "/v1/wallet/transfers".into(), me.token.as_str(), body)
                }
                3 | 4 => {
                    let body = json!({"currency": "USDC", "items": items});
                    (Op::Order(who), "POST", "/v1/orders".into(), me.token.as_str(), body)
                }
                5 | 6 => {
                    let Some((owner, id)) = pick(orders, &mut rng) else { continue };
                    let cancel = rng.below(3) == 0;
                    let body = if cancel { json!({"status": "cancelled"}) } else { json!({"items": items}) };
                    let path = format!("/v1/orders/{id}");
                    (Op::Change { owner, id, cancel }, "PATCH", path, users[owner].token.as_str(), body)
                }
                7 | 8 => {
                    let Some((_, id)) = pick(orders, &mut rng) else { continue };
                    (Op::Claim(who), "POST", format!("/v1/orders/{id}/claim"), me.token.as_str(), Value::Null)
                }
                _ => {
                    let Some((by, id)) = pick(claims, &mut rng) else { continue };
                    let path = format!("/v1/claims/{id}/release");
                    (Op::Release { by, id }, "POST", path, users[by].token.as_str(), Value::Null)
                }
            };
            let answer = self.send(method, &path, token, &body).await;
            self.done.fetch_add(1, Ordering::Relaxed);
            let Some((status, answer)) = answer else {
                out.unanswered += 1;
                continue;
            };
            out.statuses.push(status);
            if !(200..300).contains(&status) {
                continue;
            }
            let id = || answer["id"].as_str().unwrap_or_default().to_string();
            let version = answer["version"].as_i64().unwrap_or_default();
            out.acked.push(match op {
                Op::Deposit(reference) => Acked::Deposit { reference },
                Op::Transfer(from) => Acked::Transfer { id: id(), from },
                Op::Order(owner) => {
                    orders.lock().unwrap().push((owner, id()));
                    Acked::Order { id: id(), owner, version }
                }
                Op::Change { owner, id, cancel: true } => Acked::Cancel { id, owner },
                Op::Change { owner, id, cancel: false } => Acked::Order { id, owner, version },
                Op::Claim(by) => {
                    claims.lock().unwrap().push((by, id()));
                    Acked::Claim { id: id(), by }
                }
                Op::Release { by, id } => Acked::Release { id, by },
            });
        }
        out
    }

    /// Sends one request to the current address; `None` when no answer came (the server went away):
    /// then waits (up to a minute) for a new address before the client goes on.
    async fn send(&self, method: &str, path: &str, token: &str, body: &Value) -> Option<(u16, Value)> {
        let base = self.base.borrow().clone();
        let url = format!("{base}{path}");
        let req = match method {
            "PATCH" => self.http.patch(url),
            _ => self.http.post(url),
        };
        let req = if body.is_null() { req } else { req.json(body) };
        match req.bearer_auth(token).send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                Some((status, res.json().await.unwrap_or(Value::Null)))
            }
            Err(_) => {
                let mut rx = self.base.clone();
                let _ = tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|b| *b != base)).await;
                None
            }
        }
    }
}

async fn get(http: &reqwest::Client, base: &str, token: &str, path: &str) -> (u16, Value) {
    let res = http.get(format!("{base}{path}")).bearer_auth(token).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The promises of `acked` that the system does not keep: a deposit or transfer not in the ledger,
/// an order missing or older than an answer gave, a cancel, claim or release that is not there.
pub async fn unreflected(
    http: &reqwest::Client,
    base: &str,
    users: &[Actor],
    db: &storage::Database,
    acked: &[Acked],
) -> Vec<String> {
    let references: std::collections::HashSet<String> =
        text_rows(db, "SELECT reference FROM wallet_deposits").await.into_iter().map(|r| r.0).collect();
    let mut missing = Vec::new();
    for a in acked {
        let problem = match a {
            Acked::Deposit { reference } => (!references.contains(reference)).then_some("not in the ledger"),
            Acked::Transfer { id, from } => {
                let (status, _) = get(http, base, &users[*from].token, &format!("/v1/wallet/transfers/{id}")).await;
                (status != 200).then_some("not in the ledger")
            }
            Acked::Order { id, owner, version } => {
                let (status, o) = get(http, base, &users[*owner].token, &format!("/v1/orders/{id}")).await;
                (status != 200 || o["version"].as_i64().unwrap_or_default() < *version).then_some("lost or older")
            }
            Acked::Cancel { id, owner } => {
                let (_, o) = get(http, base, &users[*owner].token, &format!("/v1/orders/{id}")).await;
                (o["status"] != "cancelled").then_some("not cancelled")
            }
            Acked::Claim { id, by } => {
                let (status, _) = get(http, base, &users[*by].token, &format!("/v1/claims/{id}")).await;
                (status != 200).then_some("lost")
            }
            Acked::Release { id, by } => {
                let (_, c) = get(http, base, &users[*by].token, &format!("/v1/claims/{id}")).await;
                (c["status"] != "released").then_some("not released")
            }
        };
        if let Some(p) = problem {
            missing.push(format!("{a:?}: {p}"));
        }
    }
    missing
}

/// Orders whose hold does not match their state: pending or claimed with a pending hold of their
/// amount, completed with a posted one, cancelled or deleted with a voided one.
pub async fn mismatched_holds(db: &storage::Database) -> Vec<String> {
    let sql = "SELECT CAST(o.id AS TEXT), o.status, CAST(o.amount AS TEXT), h.status, CAST(h.amount AS TEXT)
               FROM orders o LEFT JOIN wallet_holds h ON h.id = o.hold_id";
    let d = |s: &str| s.parse::<Decimal>().unwrap();
    text_rows(db, sql)
        .await
        .into_iter()
        .filter(|(_, status, amount, hold_status, hold_amount)| {
            let expected = match status.as_deref() {
                Some("pending" | "claimed") => "pending",
                Some("completed") => "posted",
                _ => "voided",
            };
            hold_status.as_deref() != Some(expected)
                || (expected == "pending" && hold_amount.as_deref().map(d) != amount.as_deref().map(d))
        })
        .map(|(id, status, amount, hs, ha)| format!("{id} {status:?} {amount:?}: hold {hs:?} {ha:?}"))
        .collect()
}

type Row = (String, Option<String>, Option<String>, Option<String>, Option<String>);

/// Rows of up to five text columns (the first not null), on either backend.
async fn text_rows(db: &storage::Database, sql: &'static str) -> Vec<Row> {
    match db {
        storage::Database::Postgres(pool) => {
            let rows = pool.get().await.unwrap().query(sql, &[]).await.unwrap();
            rows.iter()
                .map(|r| {
                    let col = |i: usize| (i < r.len()).then(|| r.get::<_, Option<String>>(i)).flatten();
                    (r.get(0), col(1), col(2), col(3), col(4))
                })
                .collect()
        }
        storage::Database::Sqlite(pool) => pool
            .call(move |c| {
                let mut st = c.prepare(sql)?;
                let n = st.column_count();
                let rows = st.query_map([], |r| {
                    let col = |i: usize| if i < n { r.get::<_, Option<String>>(i) } else { Ok(None) };
                    Ok((r.get(0)?, col(1)?, col(2)?, col(3)?, col(4)?))
                })?;
                rows.collect::<Result<Vec<_>, _>>().map_err(anyhow::Error::from)
            })
            .await
            .unwrap(),
    }
}
