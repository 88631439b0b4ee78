//! Supplies and their rules, without I/O: `available = amount - reserved`, the status lifecycle
//! `active <-> paused`, `active -> depleted` when nothing is available, soft delete only when
//! nothing is reserved.

use base::ErrorCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use base::money::{Asset, AssetRegistry, parse_amount, parse_positive_amount};
use web::{ApiError, FieldError};

/// Where a supply is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SupplyStatus {
    Active,
    Paused,
    Depleted,
    Deleted,
}

impl SupplyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Depleted => "depleted",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "paused" => Some(Self::Paused),
            "depleted" => Some(Self::Depleted),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// A supply as stored (and cached).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Supply {
    pub id: Uuid,
    pub user_id: Uuid,
    pub currency: String,
    pub amount: Decimal,
    pub reserved: Decimal,
    pub status: SupplyStatus,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Why a supply change was refused.
#[derive(Debug, thiserror::Error)]
pub enum SupplyError {
    #[error("supply not found")]
    NotFound,
    #[error("version mismatch")]
    VersionMismatch,
    #[error("the supply has a reservation")]
    Reserved,
    #[error("amount may not go below the reserved {0}")]
    AmountBelowReserved(Decimal),
    #[error("cannot change status from {from} to {to}")]
    InvalidTransition { from: &'static str, to: &'static str },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<SupplyError> for ApiError {
    fn from(e: SupplyError) -> Self {
        match e {
            SupplyError::NotFound => ApiError::not_found("supply"),
            SupplyError::VersionMismatch => ApiError::version_mismatch(),
            SupplyError::Reserved => {
                ApiError::new(ErrorCode::SupplyReserved, "the supply has a reservation and cannot be deleted")
            }
            SupplyError::AmountBelowReserved(r) => ApiError::unprocessable_field(
                ErrorCode::AmountBelowReserved,
                "amount",
                format!("may not be below the reserved amount {r}"),
            ),
            e @ SupplyError::InvalidTransition { .. } => {
                ApiError::new(ErrorCode::InvalidStatusTransition, e.to_string())
            }
            SupplyError::Unexpected(e) => ApiError::internal(e),
        }
    }
}

/// A validated request to declare supply.
#[derive(Debug, Clone)]
pub struct NewSupply {
    pub asset: Asset,
    pub amount: Decimal,
}

impl NewSupply {
    /// Validates every field, reporting all that are wrong.
    pub fn parse(currency: &str, amount: &str, assets: &AssetRegistry) -> Result<Self, ApiError> {
        let asset = assets.get(currency);
        let mut errors = Vec::new();
        if asset.is_none() {
            errors.push(FieldError::new("currency", format!("unknown asset; one of {}", assets.codes().join(", "))));
        }
        let amount = match &asset {
            Some(a) => {
                parse_positive_amount(amount, a).map_err(|e| errors.push(FieldError::new("amount", e.to_string()))).ok()
            }
            None => None,
        };
        match (asset, amount) {
            (Some(asset), Some(amount)) if errors.is_empty() => Ok(Self { asset, amount }),
            _ => Err(ApiError::validation(errors)),
        }
    }
}

/// A validated change to a supply.
#[derive(Debug, Clone, Default)]
pub struct SupplyPatch {
    pub amount: Option<Decimal>,
    pub status: Option<SupplyStatus>,
}

impl SupplyPatch {
    /// Validates a patch against the supply's asset. Only `active` and `paused` can be asked for.
    pub fn parse(amount: Option<&str>, status: Option<&str>, asset: &Asset) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        let amount = amount.and_then(|a| {
            parse_amount(a, asset).map_err(|e| errors.push(FieldError::new("amount", e.to_string()))).ok()
        });
        let status = status.and_then(|s| match SupplyStatus::parse(s) {
            Some(st @ (SupplyStatus::Active | SupplyStatus::Paused)) => Some(st),
            _ => {
                errors.push(FieldError::new("status", "must be active or paused"));
                None
            }
        });
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(Self { amount, status })
    }
}

impl Supply {
    /// A new active supply.
    pub fn new(user_id: Uuid, new: NewSupply, now: OffsetDateTime) -> Self {
        Self {
            id: Uuid::now_v7(),
            user_id,
            currency: new.asset.code,
            amount: new.amount,
            reserved: Decimal::ZERO,
            status: SupplyStatus::Active,
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }

    pub fn available(&self) -> Decimal {
        self.amount - self.reserved
    }

    /// Applies a patch: the amount never drops below `reserved`; status moves only along the lifecycle.
    pub fn apply(&mut self, patch: &SupplyPatch) -> Result<(), SupplyError> {
        if let Some(amount) = patch.amount {
            if amount < self.reserved {
                return Err(SupplyError::AmountBelowReserved(self.reserved));
            }
            self.amount = amount;
        }
        if let Some(to) = patch.status {
            self.status = match (self.status, to) {
                (SupplyStatus::Active | SupplyStatus::Paused, t) => t,
                // Asking a replenished depleted supply to be active is what the depletion rule below does anyway.
                (SupplyStatus::Depleted, SupplyStatus::Active) => SupplyStatus::Depleted,
                (from, to) => {
                    return Err(SupplyError::InvalidTransition { from: from.as_str(), to: to.as_str() });
                }
            };
        }
        self.settle_depletion();
        Ok(())
    }

    /// Soft delete, only with nothing reserved.
    pub fn delete(&mut self) -> Result<(), SupplyError> {
        if !self.reserved.is_zero() {
            return Err(SupplyError::Reserved);
        }
        self.status = SupplyStatus::Deleted;
        Ok(())
    }

    /// `active -> depleted` when nothing is available; back to `active` when replenished.
    pub fn settle_depletion(&mut self) {
        let empty = self.available() <= Decimal::ZERO;
        self.status = match self.status {
            SupplyStatus::Active if empty => SupplyStatus::Depleted,
            SupplyStatus::Depleted if !empty => SupplyStatus::Active,
            s => s,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usdc() -> Asset {
        Asset { code: "USDC".into(), decimals: 6 }
    }

    fn supply(amount: i64, reserved: i64) -> Supply {
        let mut s =
            Supply::new(Uuid::now_v7(), NewSupply { asset: usdc(), amount: Decimal::from(amount) }, base::clock::now());
        s.reserved = Decimal::from(reserved);
        s
    }

    fn patch(amount: Option<&str>, status: Option<&str>) -> SupplyPatch {
        SupplyPatch::parse(amount, status, &usdc()).unwrap_or_default()
    }

    #[test]
    fn new_supply_lists_every_bad_field() {
        let err = NewSupply::parse("DOGE", "x", &AssetRegistry::default()).err();
        assert_eq!(err.map(|e| e.errors.len()), Some(1), "amount cannot be judged without an asset");
        let err = NewSupply::parse("USDC", "-1", &AssetRegistry::default()).err();
        assert_eq!(err.map(|e| e.errors[0].field.clone()), Some("amount".to_string()));
        assert!(NewSupply::parse("usdc", "10.5", &AssetRegistry::default()).is_ok());
    }

    #[test]
    fn amount_never_below_reserved() {
        let mut s = supply(10, 4);
        assert!(matches!(s.apply(&patch(Some("3"), None)), Err(SupplyError::AmountBelowReserved(_))));
        assert!(s.apply(&patch(Some("4"), None)).is_ok());
        assert_eq!(s.status, SupplyStatus::Depleted);
        assert!(s.apply(&patch(Some("5"), None)).is_ok());
        assert_eq!(s.status, SupplyStatus::Active);
    }

    #[test]
    fn status_lifecycle() {
        let mut s = supply(10, 0);
        assert!(s.apply(&patch(None, Some("paused"))).is_ok());
        assert_eq!(s.status, SupplyStatus::Paused);
        assert!(s.apply(&patch(None, Some("active"))).is_ok());
        assert!(SupplyPatch::parse(None, Some("deleted"), &usdc()).is_err());
        assert!(SupplyPatch::parse(None, Some("depleted"), &usdc()).is_err());
        s.status = SupplyStatus::Depleted;
        assert!(matches!(s.apply(&patch(None, Some("paused"))), Err(SupplyError::InvalidTransition { .. })));
    }

    #[test]
    fn delete_only_without_reservation() {
        assert!(matches!(supply(10, 1).delete(), Err(SupplyError::Reserved)));
        let mut s = supply(10, 0);
        assert!(s.delete().is_ok());
        assert_eq!(s.status, SupplyStatus::Deleted);
    }
}
