//! Timestamps as both backends store them: UTC, microsecond precision.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, truncated to microseconds so PostgreSQL and SQLite hand back the same value.
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
}
