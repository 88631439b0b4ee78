//! The vocabulary every walletd crate shares, with no I/O: exact amounts of registered assets, the
//! clock, the stable error codes clients see, and the outcome of an idempotent step.

pub mod clock;
pub mod error_code;
pub mod money;
pub mod trace;

pub use clock::Clock;
pub use error_code::ErrorCode;

/// How an idempotent step between services went (reserving supply, marking an order claimed, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Done now or before.
    Done,
    /// Cannot be done; the reason is recorded where the caller keeps it (a failed claim).
    Refused(String),
}

/// Another service (or the broker between them) did not answer: not a fault of the request or the
/// event, so a request answers 503 and an event is retried until the service is back, never parked.
#[derive(Debug, Clone)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unreachable: {}", self.0)
    }
}

impl std::error::Error for Unreachable {}

/// Whether `e` (or what caused it) is [`Unreachable`].
pub fn is_unreachable(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<Unreachable>().is_some() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Whether a named failpoint is set in `WALLETD_FAILPOINTS` (comma-separated). Tests use it to stop
/// a process at a precise step before killing it; nothing sets it in production.
pub fn failpoint(name: &str) -> bool {
    static SET: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        std::env::var("WALLETD_FAILPOINTS").unwrap_or_default().split(',').map(|s| s.trim().to_string()).collect()
    })
    .iter()
    .any(|f| f == name)
}
