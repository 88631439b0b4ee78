//! Rate limits (DESIGN D6): GCRA per principal on `/v1` and per client IP on sign-in. Shared by
//! every instance when a [`SharedLimiter`] is configured (Redis); in-process otherwise, and
//! in-process as the fallback while the shared one does not answer (limits then hold per instance).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base::ErrorCode;

use crate::error::ApiError;
use crate::principal::Principal;
use crate::proxies::TrustedProxies;

/// A rate: `per_minute` sustained, `burst` at once. `per_minute == 0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    /// Microseconds between two requests at the sustained rate. Microseconds, not milliseconds: above
    /// 60,000 a minute the interval is under a millisecond (and was 0, a division by zero later).
    pub fn emission_us(self) -> u64 {
        (60_000_000 / u64::from(self.per_minute.max(1))).max(1)
    }

    /// How far ahead of the sustained rate a burst may run, in microseconds.
    pub fn tolerance_us(self) -> u64 {
        self.emission_us().saturating_mul(u64::from(self.burst.max(1) - 1))
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

/// GCRA on a theoretical arrival time `tat` (µs); returns the decision and the new tat to store.
pub fn gcra(rate: Rate, tat: Option<u64>, now: u64) -> (Decision, Option<u64>) {
    let (t, tau) = (rate.emission_us(), rate.tolerance_us());
    let tat = tat.unwrap_or(now).max(now);
    if tat - now > tau {
        return (Decision { allowed: false, remaining: 0, retry_after_ms: (tat - tau - now).div_ceil(1000) }, None);
    }
    let new_tat = tat.saturating_add(t);
    let remaining = tau.saturating_add(t).saturating_sub(new_tat - now) / t;
    (Decision { allowed: true, remaining, retry_after_ms: (new_tat - now).div_ceil(1000) }, Some(new_tat))
}

/// Limits that every instance shares (Redis, in crate `redis-backend`).
#[async_trait::async_trait]
pub trait SharedLimiter: Send + Sync {
    async fn check(&self, key: &str, rate: Rate) -> anyhow::Result<Decision>;
}

/// The limiter of this process.
pub struct Limiter {
    pub principal: Rate,
    pub signin: Rate,
    local: moka::sync::Cache<String, u64>,
    shared: Option<Box<dyn SharedLimiter>>,
    epoch: Instant,
    /// Whose `X-Forwarded-For` names the client.
    trusted: TrustedProxies,
}

impl Limiter {
    /// `shared`: limits all instances share (in-process without it, and while it fails);
    /// `trusted`: the proxies whose `X-Forwarded-For` names the client (sign-in limits are per client).
    pub fn new(
        principal: Rate,
        signin: Rate,
        shared: Option<Box<dyn SharedLimiter>>,
        trusted: TrustedProxies,
    ) -> Arc<Self> {
        Arc::new(Self {
            principal,
            signin,
            local: moka::sync::Cache::builder().max_capacity(1_000_000).time_to_idle(Duration::from_secs(3600)).build(),
            shared,
            epoch: Instant::now(),
            trusted,
        })
    }

    fn check_local(&self, key: &str, rate: Rate) -> Decision {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
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

    /// Decides for `key` under `rate`: shared when configured and answering, in-process otherwise.
    pub async fn check(&self, key: &str, rate: Rate) -> Decision {
        if let Some(shared) = &self.shared {
            match shared.check(key, rate).await {
                Ok(d) => return d,
                Err(e) => {
                    metrics::counter!("rate_limit_fallbacks_total").increment(1);
                    tracing::debug!(error = format!("{e:#}"), "shared rate limit failed; limiting in process");
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
        ApiError::new(ErrorCode::RateLimited, "too many requests; retry after the Retry-After delay").into_response()
    };
    headers(res.headers_mut(), rate, d);
    res
}

/// Per principal, on routes behind the token middleware.
pub async fn per_principal(State(limiter): State<Arc<Limiter>>, req: Request, next: Next) -> Response {
    let key = match req.extensions().get::<Principal>() {
        // Services calling each other are the platform's own traffic, bounded by the users' limits
        // upstream; one shared budget for all of them would fail claims under load.
        Some(p) if p.roles.contains(&crate::principal::Role::Service) => return next.run(req).await,
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
        .map_or_else(|| "unknown".to_string(), |c| client_key(limiter.trusted.client_ip(c.0.ip(), req.headers())));
    let rate = limiter.signin;
    limit(&limiter, "signin", format!("ip:{ip}"), rate, req, next).await
}

/// What a client address is limited as: an IPv4 address itself, an IPv6 address by its /64 (one
/// subscriber gets a whole /64 and could otherwise rotate through it).
fn client_key(ip: std::net::IpAddr) -> String {
    use std::net::IpAddr;
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("{}/64", std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_eq!(key("2001:db8:1:2::9"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("198.51.100.4"), "198.51.100.4");
        assert_eq!(key("::ffff:198.51.100.4"), "198.51.100.4");
    }

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
        let (d, _) = gcra(rate, tat, 1_000_000);
        assert!(d.allowed, "one more after one emission interval");
    }

    /// Every rate the configuration accepts (0 is "off" and never reaches here; 1 to 1,000,000 a
    /// minute, bursts of 1 to 1,000,000) decides without a panic, and the sustained rate holds.
    #[test]
    fn gcra_holds_at_the_extremes_of_the_settings() {
        for per_minute in [1, 59_999, 60_000, 60_001, 120_000, 1_000_000] {
            for burst in [1, 2, 1_000_000] {
                let rate = Rate { per_minute, burst };
                let (mut tat, mut allowed) = (None, 0u64);
                // One simulated second, one request every microsecond.
                for now in 0..1_000_000u64 {
                    let (d, t) = gcra(rate, tat, now);
                    if d.allowed {
                        allowed += 1;
                        tat = t;
                    }
                }
                let sustained = u64::from(per_minute).div_ceil(60);
                let most = sustained + u64::from(burst);
                assert!(allowed >= 1 && allowed <= most, "{per_minute}/min burst {burst}: {allowed} in a second");
            }
        }
    }
}
