//! Claims and their lifecycle, without I/O: `pending -> processed | failed | released`.

use base::ErrorCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use web::ApiError;

/// Where a claim is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClaimStatus {
    Pending,
    Processed,
    Failed,
    Released,
}

impl ClaimStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processed => "processed",
            Self::Failed => "failed",
            Self::Released => "released",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "processed" => Some(Self::Processed),
            "failed" => Some(Self::Failed),
            "released" => Some(Self::Released),
            _ => None,
        }
    }
}

/// A claim as stored (and cached).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub id: Uuid,
    pub order_id: Uuid,
    /// The claimer (shopper).
    pub user_id: Uuid,
    pub buyer_id: Uuid,
    /// The supply chosen at claim time; processing reserves on it.
    pub supply_id: Uuid,
    pub currency: String,
    pub amount: Decimal,
    pub status: ClaimStatus,
    pub failure_reason: Option<String>,
    pub claimed_at: OffsetDateTime,
    pub processed_at: Option<OffsetDateTime>,
    pub updated_at: OffsetDateTime,
    pub version: i64,
    /// The order's version the claim was made against; the order is marked claimed only at it.
    pub order_version: Option<i64>,
}

/// Why a claim operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("claim not found")]
    NotFound,
    #[error("the order is already claimed")]
    AlreadyClaimed,
    #[error("the claim is {0}, not pending")]
    NotPending(&'static str),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<ClaimError> for ApiError {
    fn from(e: ClaimError) -> Self {
        match e {
            ClaimError::NotFound => ApiError::not_found("claim"),
            ClaimError::AlreadyClaimed => ApiError::new(ErrorCode::OrderAlreadyClaimed, "the order is already claimed"),
            e @ ClaimError::NotPending(_) => ApiError::new(ErrorCode::ClaimNotPending, e.to_string()),
            ClaimError::Unexpected(e) => ApiError::internal(e),
        }
    }
}

impl Claim {
    /// A new pending claim.
    pub fn new(
        order_id: Uuid,
        user_id: Uuid,
        buyer_id: Uuid,
        supply_id: Uuid,
        currency: String,
        amount: Decimal,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            order_id,
            user_id,
            buyer_id,
            supply_id,
            currency,
            amount,
            status: ClaimStatus::Pending,
            failure_reason: None,
            claimed_at: now,
            processed_at: None,
            updated_at: now,
            version: 1,
            order_version: None,
        }
    }

    /// The claim made against this version of the order.
    pub fn at_order_version(self, version: i64) -> Self {
        Self { order_version: Some(version), ..self }
    }

    fn leave_pending(&mut self, to: ClaimStatus) -> Result<(), ClaimError> {
        if self.status != ClaimStatus::Pending {
            return Err(ClaimError::NotPending(self.status.as_str()));
        }
        self.status = to;
        Ok(())
    }

    pub fn process(&mut self, now: OffsetDateTime) -> Result<(), ClaimError> {
        self.leave_pending(ClaimStatus::Processed)?;
        self.processed_at = Some(now);
        Ok(())
    }

    pub fn fail(&mut self, reason: String) -> Result<(), ClaimError> {
        self.leave_pending(ClaimStatus::Failed)?;
        self.failure_reason = Some(reason);
        Ok(())
    }

    pub fn release(&mut self) -> Result<(), ClaimError> {
        self.leave_pending(ClaimStatus::Released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Claim {
        let id = Uuid::now_v7;
        Claim::new(id(), id(), id(), id(), "USDC".into(), Decimal::ONE, base::clock::now())
    }

    #[test]
    fn only_pending_claims_move() {
        let mut c = claim();
        assert!(c.process(base::clock::now()).is_ok());
        assert!(c.processed_at.is_some());
        assert!(matches!(c.release(), Err(ClaimError::NotPending("processed"))));
        assert!(matches!(c.fail("x".into()), Err(ClaimError::NotPending(_))));
        let mut c = claim();
        assert!(c.fail("supply paused".into()).is_ok());
        assert_eq!(c.failure_reason.as_deref(), Some("supply paused"));
        let mut c = claim();
        assert!(c.release().is_ok());
        assert!(c.process(base::clock::now()).is_err());
    }
}
