//! The vocabulary every walletd crate shares, with no I/O: exact amounts of registered assets, the
//! clock, the stable error codes clients see, and the outcome of an idempotent step.

pub mod clock;
pub mod error_code;
pub mod money;

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
