//! Redis behind the interfaces that want one (DESIGN D5, D6): the cache every instance shares
//! ([`RedisCache`], a [`cache::SharedBackend`]) and rate limits every instance shares
//! ([`RedisLimiter`], a [`web::ratelimit::SharedLimiter`]). Connections are made lazily, so a Redis
//! that is down at start only makes reads slower, and every call has a timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use web::ratelimit::{Decision, Rate, SharedLimiter};

/// One lazily made connection manager with a timeout on every call.
struct Connection {
    client: redis::Client,
    manager: tokio::sync::Mutex<Option<ConnectionManager>>,
    timeout: Duration,
}

impl Connection {
    fn open(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("parsing the Redis URL")?;
        Ok(Self { client, manager: tokio::sync::Mutex::new(None), timeout })
    }

    async fn get(&self) -> anyhow::Result<ConnectionManager> {
        let mut guard = self.manager.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let c = tokio::time::timeout(self.timeout * 4, self.client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| anyhow::anyhow!("connecting to Redis timed out"))??;
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        let mut conn = self.get().await?;
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await;
        metrics::histogram!("redis_command_duration_seconds").record(start.elapsed().as_secs_f64());
        match result {
            Ok(r) => Ok(r?),
            Err(_) => anyhow::bail!("Redis call timed out after {:?}", self.timeout),
        }
    }

    async fn run_pipe(&self, pipe: &redis::Pipeline) -> anyhow::Result<()> {
        let mut conn = self.get().await?;
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn)).await;
        metrics::histogram!("redis_command_duration_seconds").record(start.elapsed().as_secs_f64());
        match result {
            Ok(r) => Ok(r?),
            Err(_) => anyhow::bail!("Redis pipeline timed out after {:?}", self.timeout),
        }
    }
}

/// The shared cache on Redis.
pub struct RedisCache(Connection);

impl RedisCache {
    /// The cache at `url` (`redis://host:port/db`), every call bounded by `timeout`.
    pub fn open(url: &str, timeout: Duration) -> anyhow::Result<Arc<cache::Cache>> {
        Ok(cache::Cache::shared(Box::new(Self(Connection::open(url, timeout)?))))
    }
}

#[async_trait]
impl cache::SharedBackend for RedisCache {
    async fn get_many(&self, keys: &[String]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        let mut cmd = redis::cmd("MGET");
        for k in keys {
            cmd.arg(k);
        }
        self.0.run(&cmd).await
    }

    async fn set_many(&self, entries: &[(String, Arc<[u8]>)], ttl: Duration) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        for (k, bytes) in entries {
            pipe.cmd("SET").arg(k).arg(&**bytes).arg("PX").arg(ttl.as_millis() as u64).ignore();
        }
        self.0.run_pipe(&pipe).await
    }

    async fn delete(&self, keys: &[String]) -> anyhow::Result<()> {
        let mut cmd = redis::cmd("DEL");
        for k in keys {
            cmd.arg(k);
        }
        self.0.run::<i64>(&cmd).await.map(|_| ())
    }

    async fn ping(&self) -> anyhow::Result<()> {
        self.0.run::<String>(&redis::cmd("PING")).await.map(|_| ())
    }
}

/// GCRA in one atomic script on Redis's clock (in microseconds, as `web::ratelimit::gcra`), so every
/// instance shares each key's budget; it answers the wait in milliseconds.
const SCRIPT: &str = r"
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tau then
  return {0, 0, math.ceil((tat - tau - now) / 1000)}
end
local new_tat = tat + t
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now + t) / 1000))
return {1, math.floor((tau + t - (new_tat - now)) / t), math.ceil((new_tat - now) / 1000)}
";

/// Rate limits shared through Redis.
pub struct RedisLimiter {
    conn: Connection,
    script: redis::Script,
}

impl RedisLimiter {
    pub fn open(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self { conn: Connection::open(url, timeout)?, script: redis::Script::new(SCRIPT) })
    }
}

#[async_trait]
impl SharedLimiter for RedisLimiter {
    async fn check(&self, key: &str, rate: Rate) -> anyhow::Result<Decision> {
        let mut manager = self.conn.get().await?;
        let mut invocation = self.script.key(format!("ratelimit:{key}"));
        invocation.arg(rate.emission_us()).arg(rate.tolerance_us());
        let (allowed, remaining, retry): (i64, i64, i64) =
            tokio::time::timeout(self.conn.timeout, invocation.invoke_async(&mut manager)).await??;
        Ok(Decision { allowed: allowed == 1, remaining: remaining.max(0) as u64, retry_after_ms: retry.max(0) as u64 })
    }
}
