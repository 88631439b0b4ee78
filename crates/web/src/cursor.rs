//! Opaque list cursors: clients hand back what they were given, and anything else is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::error::{ApiError, FieldError};

const TAG: &[u8] = b"wc1";

/// Encodes the last id of a page (lists are ordered by UUIDv7, newest first).
pub fn encode(last_id: Uuid) -> String {
    let mut bytes = TAG.to_vec();
    bytes.extend_from_slice(last_id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a cursor made by [`encode`]; anything else is a 422 naming `cursor`.
pub fn decode(cursor: &str) -> Result<Uuid, ApiError> {
    let invalid = || ApiError::validation(vec![FieldError::new("cursor", "is not a cursor this server issued")]);
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let id = bytes.strip_prefix(TAG).and_then(|rest| Uuid::from_slice(rest).ok()).ok_or_else(invalid)?;
    if id.get_version_num() != 7 {
        return Err(invalid());
    }
    Ok(id)
}

/// Ends a page fetched with `limit + 1` rows: keeps `limit` and returns the next page's cursor when
/// there was more.
pub fn next_page(ids: &mut Vec<Uuid>, limit: i64) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(0);
    if ids.len() <= limit {
        return None;
    }
    ids.truncate(limit);
    ids.last().map(|id| encode(*id))
}

/// Page limit: default 50, 1 to 500.
pub fn limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(50),
        Some(l) if (1..=500).contains(&l) => Ok(l),
        Some(_) => Err(ApiError::validation(vec![FieldError::new("limit", "must be from 1 to 500")])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_forgery() {
        let id = Uuid::now_v7();
        assert_eq!(decode(&encode(id)).ok(), Some(id));
        assert!(decode("garbage!").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode(b"wc1short")).is_err());
        assert!(decode(&encode(Uuid::new_v4())).is_err());
    }

    #[test]
    fn a_page_has_a_next_cursor_only_when_there_is_more() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let mut all = ids.clone();
        assert_eq!(next_page(&mut all, 3), None);
        assert_eq!(all.len(), 3);
        let mut more = ids.clone();
        assert_eq!(next_page(&mut more, 2), Some(encode(ids[1])));
        assert_eq!(more, ids[..2]);
    }
}
