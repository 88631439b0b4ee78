//! Time: the injectable [`Clock`] that auth and domain code read, and timestamps as both backends
//! store them (UTC, microsecond precision).

use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Where code that decides on time (expiry of tokens, nonces, sessions) reads it, so a test can move
/// time instead of waiting for it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, truncated to microseconds.
    fn now(&self) -> OffsetDateTime;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        now()
    }
}

/// The system clock as a shareable handle.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that stands still until moved: starts at the system time and only [`ManualClock::advance`]
/// changes it.
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(now())))
    }

    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: time::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The system time, truncated to microseconds so PostgreSQL and SQLite hand back the same value.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1_000 * 1_000).unwrap_or(t)
}

/// Fixed-width text form used in SQLite: sorts lexicographically in time order.
pub fn to_text(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Parses the text form written by [`to_text`] (any RFC 3339 value is accepted).
pub fn from_text(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &Rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_sorts() {
        let a = now();
        let b = a + time::Duration::microseconds(1);
        assert_eq!(from_text(&to_text(a)).ok(), Some(a));
        assert!(to_text(a) < to_text(b));
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        let start = c.now();
        assert_eq!(c.now(), start);
        c.advance(time::Duration::hours(1));
        assert_eq!(c.now() - start, time::Duration::hours(1));
    }
}
