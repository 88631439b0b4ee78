//! A service's connection to another service over gRPC ([`Peer`]): a bearer token of role
//! `service` on every call, a deadline on every call, retries with backoff for what is idempotent,
//! and a circuit breaker, all counted in metrics:
//!
//! - `rpc_client_requests_total{peer, method, outcome}` (`ok`, the gRPC code's name, or `open` when
//!   the breaker refused the call without trying);
//! - `rpc_client_request_duration_seconds{peer, method}`;
//! - `rpc_client_retries_total{peer, method}`;
//! - `rpc_client_breaker_open{peer}` (1 while calls fail fast).

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Where a peer's bearer tokens come from (walletd mints them from the shared signing key).
pub trait TokenSource: Send + Sync {
    fn token(&self) -> anyhow::Result<String>;
}

/// How a peer is called.
#[derive(Debug, Clone, Copy)]
pub struct PeerOptions {
    /// Every call's deadline (sent as `grpc-timeout`, enforced here too).
    pub deadline: Duration,
    /// Attempts for an idempotent call (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubled each retry.
    pub backoff: Duration,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long an open breaker fails calls fast before it lets one through again.
    pub breaker_cooldown: Duration,
}

impl Default for PeerOptions {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(5),
            attempts: 3,
            backoff: Duration::from_millis(50),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(2),
        }
    }
}

/// Whether a call may be repeated with the same effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotent {
    Yes,
    No,
}

/// Another service, reached over gRPC.
pub struct Peer {
    name: &'static str,
    channel: Channel,
    tokens: Arc<dyn TokenSource>,
    opts: PeerOptions,
    breaker: Mutex<Breaker>,
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// A call that did not get an answer from the peer's service layer.
#[derive(Debug)]
pub enum CallError {
    Open { peer: &'static str },
    Status { peer: &'static str, method: &'static str, code: Code, message: String },
}

impl From<CallError> for anyhow::Error {
    /// An outage (or an open breaker) becomes [`base::Unreachable`]: a request answers 503 and an
    /// event waits for the service instead of being parked.
    fn from(e: CallError) -> Self {
        if is_outage(e.code()) { anyhow::Error::new(base::Unreachable(e.to_string())) } else { anyhow::anyhow!("{e}") }
    }
}

impl CallError {
    /// The gRPC code (`Unavailable` when the breaker is open).
    pub fn code(&self) -> Code {
        match self {
            CallError::Open { .. } => Code::Unavailable,
            CallError::Status { code, .. } => *code,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Open { peer } => write!(f, "{peer} service: circuit open after repeated failures; failing fast"),
            CallError::Status { peer, method, code, message } => {
                write!(f, "{peer} service {method}: {code:?}: {message}")
            }
        }
    }
}

/// A failure that says the peer cannot answer now (rather than that it refused or failed the
/// request): not there, too slow, or shedding load. INTERNAL is a fault of the request or the peer's
/// code: an ordinary error (an event meeting it is parked after its retries, as any other).
fn is_outage(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted)
}

impl Peer {
    /// A peer at `addr` (`http://host:port`); connects on first use and reconnects by itself.
    pub fn new(
        name: &'static str,
        addr: &str,
        tokens: Arc<dyn TokenSource>,
        opts: PeerOptions,
    ) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| anyhow::anyhow!("{name} service address {addr:?}: {e}"))?
            .connect_timeout(opts.deadline.min(Duration::from_secs(2)))
            .timeout(opts.deadline)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30));
        // Exported from the start, so "closed" is a value and not a missing series.
        metrics::gauge!("rpc_client_breaker_open", "peer" => name).set(0.0);
        Ok(Self { name, channel: endpoint.connect_lazy(), tokens, opts, breaker: Mutex::new(Breaker::default()) })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// `message` as a request: the service token and the deadline.
    pub fn request<M>(&self, message: M) -> Result<tonic::Request<M>, Status> {
        let mut req = tonic::Request::new(message);
        let token = self.tokens.token().map_err(|e| Status::internal(format!("no service token: {e:#}")))?;
        let value =
            format!("Bearer {token}").parse().map_err(|_| Status::internal("a service token that is not ASCII"))?;
        req.metadata_mut().insert("authorization", value);
        // The caller's trace goes on in the called service.
        if let Some(tp) = base::trace::current().and_then(|t| t.parse().ok()) {
            req.metadata_mut().insert("traceparent", tp);
        }
        req.set_timeout(self.opts.deadline);
        Ok(req)
    }

    /// Calls `method` through `call` (given a channel, it makes one attempt), under the breaker,
    /// retrying an idempotent call that met an outage.
    pub async fn call<T, F, Fut>(&self, method: &'static str, idempotent: Idempotent, call: F) -> Result<T, CallError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let attempts = if idempotent == Idempotent::Yes { self.opts.attempts.max(1) } else { 1 };
        let mut backoff = self.opts.backoff;
        let mut last = None;
        for attempt in 1..=attempts {
            if !self.admit() {
                metrics::counter!("rpc_client_requests_total", "peer" => self.name, "method" => method, "outcome" => "open")
                    .increment(1);
                return Err(last.unwrap_or(CallError::Open { peer: self.name }));
            }
            let start = Instant::now();
            let outcome = tokio::time::timeout(self.opts.deadline, call(self.channel.clone())).await;
            metrics::histogram!("rpc_client_request_duration_seconds", "peer" => self.name, "method" => method)
                .record(start.elapsed().as_secs_f64());
            let status = match outcome {
                Ok(Ok(res)) => {
                    self.record(true);
                    metrics::counter!("rpc_client_requests_total", "peer" => self.name, "method" => method, "outcome" => "ok")
                        .increment(1);
                    return Ok(res.into_inner());
                }
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded("deadline passed"),
            };
            let code = status.code();
            let outcome = format!("{code:?}");
            metrics::counter!("rpc_client_requests_total", "peer" => self.name, "method" => method, "outcome" => outcome)
                .increment(1);
            self.record(!is_outage(code));
            let err = CallError::Status { peer: self.name, method, code, message: status.message().to_string() };
            if !is_outage(code) || attempt == attempts {
                return Err(err);
            }
            tracing::debug!(peer = self.name, method, attempt, error = %err, "retrying an idempotent call");
            metrics::counter!("rpc_client_retries_total", "peer" => self.name, "method" => method).increment(1);
            last = Some(err);
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        Err(last.unwrap_or(CallError::Open { peer: self.name }))
    }

    /// Whether a call may go out now: closed, or open long enough to let one through.
    fn admit(&self) -> bool {
        let b = self.breaker.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        b.open_until.is_none_or(|until| Instant::now() >= until)
    }

    fn record(&self, healthy: bool) {
        let mut b = self.breaker.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if healthy {
            if b.open_until.take().is_some() {
                tracing::info!(peer = self.name, "circuit closed: the service answers again");
                metrics::gauge!("rpc_client_breaker_open", "peer" => self.name).set(0.0);
            }
            b.failures = 0;
            return;
        }
        b.failures += 1;
        if b.failures >= self.opts.breaker_failures {
            if b.open_until.is_none() {
                tracing::warn!(peer = self.name, failures = b.failures, "circuit open: failing calls fast");
                metrics::gauge!("rpc_client_breaker_open", "peer" => self.name).set(1.0);
            }
            b.open_until = Some(Instant::now() + self.opts.breaker_cooldown);
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    struct Fixed;

    impl TokenSource for Fixed {
        fn token(&self) -> anyhow::Result<String> {
            Ok("token".into())
        }
    }

    /// A port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(1, |a| a.port())
    }

    async fn health(peer: &Peer, idempotent: Idempotent) -> Result<(), CallError> {
        peer.call("Check", idempotent, |ch| {
            let req = peer.request(tonic_health::pb::HealthCheckRequest { service: String::new() });
            async move { tonic_health::pb::health_client::HealthClient::new(ch).check(req?).await }
        })
        .await
        .map(|_| ())
    }

    #[tokio::test]
    async fn an_unreachable_peer_is_retried_when_idempotent_then_failed_fast_by_the_breaker() {
        let opts = PeerOptions {
            deadline: Duration::from_secs(2),
            attempts: 3,
            backoff: Duration::from_millis(1),
            breaker_failures: 4,
            breaker_cooldown: Duration::from_secs(3600),
        };
        let addr = format!("http://127.0.0.1:{}", closed_port());
        let peer = Peer::new("test", &addr, Arc::new(Fixed), opts).expect("a valid address");
        // Idempotent: three attempts, each an outage.
        let err = health(&peer, Idempotent::Yes).await.expect_err("nothing listens");
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert_eq!(peer.breaker.lock().map(|b| b.failures).unwrap_or_default(), 3);
        // Not idempotent: one attempt, which opens the breaker (the fourth failure in a row).
        health(&peer, Idempotent::No).await.expect_err("nothing listens");
        assert!(!peer.admit(), "the breaker is open");
        let fast = health(&peer, Idempotent::Yes).await.expect_err("the breaker answers");
        assert!(matches!(fast, CallError::Open { .. }), "{fast}");
        // An outage reaches callers as Unreachable: a request answers 503, an event waits.
        let e: anyhow::Error = fast.into();
        assert!(e.chain().any(|c| c.downcast_ref::<base::Unreachable>().is_some()));
    }
}
