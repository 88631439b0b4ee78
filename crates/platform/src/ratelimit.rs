//! Rate limits (DESIGN D6): GCRA per principal on `/v1` and per client IP on sign-in. Shared
//! through Redis with one atomic script when configured; in-process otherwise, and in-process
//! as the fallback while Redis does not answer (limits then hold per instance).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Principal;
use crate::error::ApiError;

/// A rate: `per_minute` sustained, `burst` at once. `per_minute == 0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    fn emission_ms(self) -> u64 {
        60_000 / u64::from(self.per_minute.max(1))
    }

    fn tolerance_ms(self) -> u64 {
        self.emission_ms() * u64::from(self.burst.max(1) - 1)
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub remaining: u64,
    /// Until the next request would be allowed (when refused) or until the bucket is full again.
    pub retry_after_ms: u64,
}

/// GCRA on a theoretical arrival time `tat` (ms); returns the decision and the new tat to store.
pub fn gcra(rate: Rate, tat: Option<u64>, now: u64) -> (Decision, Option<u64>) {
    let (t, tau) = (rate.emission_ms(), rate.tolerance_ms());
    let tat = tat.unwrap_or(now).max(now);
    if tat - now > tau {
        return (Decision { allowed: false, remaining: 0, retry_after_ms: tat - tau - now }, None);
    }
    let new_tat = tat + t;
    let remaining = (tau + t).saturating_sub(new_tat - now) / t;
    (Decision { allowed: true, remaining, retry_after_ms: new_tat - now }, Some(new_tat))
}

const SCRIPT: &str = r"
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tau then
  return {0, 0, tat - tau - now}
end
local new_tat = tat + t
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now + t)
return {1, math.floor((tau + t - (new_tat - now)) / t), new_tat - now}
";

/// The limiter of this process.
pub struct Limiter {
    pub principal: Rate,
    pub signin: Rate,
    local: moka::sync::Cache<String, u64>,
    redis: Option<(redis::Client, tokio::sync::Mutex<Option<redis::aio::ConnectionManager>>, Duration)>,
    script: redis::Script,
    epoch: Instant,
    /// Whose `X-Forwarded-For` names the client.
    trusted: crate::http::TrustedProxies,
}

impl Limiter {
    /// `trusted`: the proxies whose `X-Forwarded-For` names the client (sign-in limits are per client).
    pub fn new(
        principal: Rate,
        signin: Rate,
        redis_url: Option<&str>,
        timeout: Duration,
        trusted: crate::http::TrustedProxies,
    ) -> anyhow::Result<Arc<Self>> {
        let redis = redis_url
            .map(|u| redis::Client::open(u).map(|c| (c, tokio::sync::Mutex::new(None), timeout)))
            .transpose()?;
        Ok(Arc::new(Self {
            principal,
            signin,
            local: moka::sync::Cache::builder().max_capacity(1_000_000).time_to_idle(Duration::from_secs(3600)).build(),
            redis,
            script: redis::Script::new(SCRIPT),
            epoch: Instant::now(),
            trusted,
        }))
    }

    fn check_local(&self, key: &str, rate: Rate) -> Decision {
        let now = self.epoch.elapsed().as_millis() as u64;
        let mut decision = None;
        self.local.entry(key.to_string()).and_compute_with(|current| {
            let (d, new_tat) = gcra(rate, current.map(|e| *e.value()), now);
            decision = Some(d);
            match new_tat {
                Some(t) => moka::ops::compute::Op::Put(t),
                None => moka::ops::compute::Op::Nop,
            }
        });
        decision.unwrap_or(Decision { allowed: true, remaining: 0, retry_after_ms: 0 })
    }

    async fn check_redis(&self, key: &str, rate: Rate) -> anyhow::Result<Decision> {
        let Some((client, conn, timeout)) = &self.redis else { anyhow::bail!("no Redis") };
        let mut manager = {
            let mut guard = conn.lock().await;
            match guard.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let c = tokio::time::timeout(*timeout * 4, client.get_connection_manager()).await??;
                    *guard = Some(c.clone());
                    c
                }
            }
        };
        let mut invocation = self.script.key(format!("ratelimit:{key}"));
        invocation.arg(rate.emission_ms()).arg(rate.tolerance_ms());
        let (allowed, remaining, retry): (i64, i64, i64) =
            tokio::time::timeout(*timeout, invocation.invoke_async(&mut manager)).await??;
        Ok(Decision { allowed: allowed == 1, remaining: remaining.max(0) as u64, retry_after_ms: retry.max(0) as u64 })
    }

    /// Decides for `key` under `rate`: Redis when configured and answering, in-process otherwise.
    pub async fn check(&self, key: &str, rate: Rate) -> Decision {
        if self.redis.is_some() {
            match self.check_redis(key, rate).await {
                Ok(d) => return d,
                Err(e) => {
                    metrics::counter!("rate_limit_fallbacks_total").increment(1);
                    tracing::debug!(error = format!("{e:#}"), "rate limit via Redis failed; limiting in process");
                }
            }
        }
        self.check_local(key, rate)
    }
}

fn headers(h: &mut HeaderMap, rate: Rate, d: Decision) {
    let secs = d.retry_after_ms.div_ceil(1000).max(u64::from(!d.allowed));
    let put = |h: &mut HeaderMap, name: &'static str, v: u64| {
        if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
            h.insert(name, v);
        }
    };
    put(h, "ratelimit-limit", u64::from(rate.burst));
    put(h, "ratelimit-remaining", d.remaining);
    put(h, "ratelimit-reset", secs);
    if !d.allowed {
        put(h, "retry-after", secs);
    }
}

async fn limit(limiter: &Limiter, scope: &'static str, key: String, rate: Rate, req: Request, next: Next) -> Response {
    if rate.per_minute == 0 {
        return next.run(req).await;
    }
    let d = limiter.check(&key, rate).await;
    let mut res = if d.allowed {
        next.run(req).await
    } else {
        metrics::counter!("rate_limit_rejections_total", "scope" => scope).increment(1);
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "too many requests; retry after the Retry-After delay",
        )
        .into_response()
    };
    headers(res.headers_mut(), rate, d);
    res
}

/// Per principal, on routes behind the token middleware.
pub async fn per_principal(State(limiter): State<Arc<Limiter>>, req: Request, next: Next) -> Response {
    let key = match req.extensions().get::<Principal>() {
        Some(p) => format!("user:{}", p.user_id),
        None => return next.run(req).await,
    };
    let rate = limiter.principal;
    limit(&limiter, "principal", key, rate, req, next).await
}

/// Per client IP (the peer address, or the client behind a trusted proxy), on sign-in routes.
pub async fn per_ip(State(limiter): State<Arc<Limiter>>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| limiter.trusted.client_ip(c.0.ip(), req.headers()).to_string());
    let rate = limiter.signin;
    limit(&limiter, "signin", format!("ip:{ip}"), rate, req, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_the_burst_then_the_rate() {
        let rate = Rate { per_minute: 60, burst: 3 };
        let mut tat = None;
        for i in 0..3 {
            let (d, t) = gcra(rate, tat, 0);
            assert!(d.allowed, "request {i}");
            tat = t;
        }
        let (d, _) = gcra(rate, tat, 0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 1000);
        let (d, _) = gcra(rate, tat, 1000);
        assert!(d.allowed, "one more after one emission interval");
    }
}
