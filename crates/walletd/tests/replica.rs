//! Plain reads from a real streaming replica (DESIGN D7): a PostgreSQL primary of the test's own and
//! a replica made from it with `pg_basebackup`. Pausing the replica's replay makes "the replica lags"
//! exact instead of a matter of timing: a read without the token is stale, a read with it is not,
//! and nothing stale reaches the cache.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::time::Duration;

use serde_json::{Value, json};
use testkit::pg::{PrivatePostgres, batch, fresh_database};
use testkit::{Backend, TestApp, wait_until};

const TOKEN: &str = "x-consistency-token";

struct Cluster {
    primary: PrivatePostgres,
    replica: PrivatePostgres,
    app: TestApp,
    /// The test's database on the replica.
    replica_url: String,
}

/// A primary, its replica, and a walletd writing to the one and reading from the other.
async fn cluster() -> Cluster {
    let primary = PrivatePostgres::start();
    let replica = primary.replica();
    let url = fresh_database(&primary.url()).await;
    let name = url.rsplit('/').next().unwrap().to_string();
    let replica_url = format!("postgres://postgres@127.0.0.1:{}/{name}", replica.port);
    // The database reaches the replica by streaming.
    let arrived = wait_until(Duration::from_secs(30), || async { batch(&replica_url, "SELECT 1").await.is_ok() }).await;
    assert!(arrived, "the database did not reach the replica");
    let read_url = replica_url.clone();
    let app = TestApp::spawn_with(Backend::Postgres, |s| {
        s.database_url = Some(url);
        s.read_database_url = Some(read_url);
        s.read_wait = Duration::from_millis(300);
    })
    .await;
    Cluster { primary, replica, app, replica_url }
}

async fn sql(url: &str, statement: &str) {
    batch(url, statement).await.unwrap();
}

impl Cluster {
    async fn caught_up(&self) {
        let app = &self.app;
        let ok = wait_until(Duration::from_secs(20), || async {
            app.metric("db_replica_up", &["replica=\"supply\""]).await == 1.0
                && app.metric("db_replica_lag_bytes", &["replica=\"supply\""]).await == 0.0
        })
        .await;
        assert!(ok, "the replica did not catch up");
    }

    async fn read(&self, token: &str, id: &str, consistency: Option<&str>) -> (u16, Value) {
        let mut req = self.app.get(&format!("/v1/supplies/{id}"), token);
        if let Some(t) = consistency {
            req = req.header(TOKEN, t);
        }
        let res = req.send().await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
    }
}

fn token_of(res: &reqwest::Response) -> String {
    res.headers().get(TOKEN).expect("a write answers with a consistency token").to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_with_the_token_sees_the_write_and_a_lagging_replica_never_fills_the_cache() {
    let c = cluster().await;
    let app = &c.app;
    let user = app.new_unfunded_user().await;
    c.caught_up().await;
    sql(&c.replica_url, "SELECT pg_wal_replay_pause()").await;

    let res =
        app.post("/v1/supplies", &user.access).json(&json!({"currency": "USDC", "amount": "10"})).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let created = token_of(&res);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    // The replica has not replayed the insert: without the token the read is stale.
    assert_eq!(c.read(&user.access, &id, None).await.0, 404, "a plain read goes to the (paused) replica");
    // With it, the read waits for the replica, gives up after WALLETD_READ_WAIT_MS and reads the primary.
    let (status, body) = c.read(&user.access, &id, Some(&created)).await;
    assert_eq!((status, body["amount"].as_str()), (200, Some("10.000000")));
    assert!(app.metric("db_reads_total", &["target=\"primary\"", "reason=\"token_ahead\""]).await >= 1.0);

    let res =
        app.patch(&format!("/v1/supplies/{id}"), &user.access).json(&json!({"amount": "11"})).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let patched = token_of(&res);
    assert_ne!(patched, created);
    assert_eq!(c.read(&user.access, &id, Some(&patched)).await.1["amount"], "11.000000");
    // The list, too.
    let res = app.get("/v1/supplies", &user.access).header(TOKEN, &patched).send().await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["items"][0]["amount"], "11.000000");

    // Replay resumes: the stale 404 was not remembered, and the token is now served by the replica.
    sql(&c.replica_url, "SELECT pg_wal_replay_resume()").await;
    c.caught_up().await;
    let (status, body) = c.read(&user.access, &id, None).await;
    assert_eq!((status, body["amount"].as_str()), (200, Some("11.000000")), "nothing stale was cached");
    let before = app.metric("db_reads_total", &["target=\"replica\"", "reason=\"token_replayed\""]).await;
    assert_eq!(c.read(&user.access, &id, Some(&patched)).await.1["amount"], "11.000000");
    let after = app.metric("db_reads_total", &["target=\"replica\"", "reason=\"token_replayed\""]).await;
    assert_eq!(after, before + 1.0, "a replayed token is served by the replica");

    // A token that is not one is refused, naming the header.
    let res = app.get(&format!("/v1/supplies/{id}"), &user.access).header(TOKEN, "v1.zz").send().await.unwrap();
    let problem = testkit::assert_problem(res, 422, "VALIDATION_FAILED").await;
    assert_eq!(problem["errors"][0]["field"], "X-Consistency-Token");
    drop(c.primary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_primary_while_the_replica_is_down() {
    let c = cluster().await;
    let app = &c.app;
    let user = app.new_unfunded_user().await;
    c.caught_up().await;
    c.replica.stop();
    let down = wait_until(Duration::from_secs(20), || async {
        app.metric("db_replica_up", &["replica=\"supply\""]).await == 0.0
    })
    .await;
    assert!(down, "the replica's loss was not noticed");
    let id = app.create_supply(&user.access, "USDC", "5").await["id"].as_str().unwrap().to_string();
    let (status, body) = c.read(&user.access, &id, None).await;
    assert_eq!((status, body["amount"].as_str()), (200, Some("5.000000")));
    let res = app.get("/v1/supplies", &user.access).send().await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["items"][0]["id"], id.as_str());
    assert!(app.metric("db_reads_total", &["target=\"primary\"", "reason=\"replica_down\""]).await >= 2.0);
}
