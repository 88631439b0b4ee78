//! Orders and their rules, without I/O. The total is computed here from the items, never taken
//! from the client. Lifecycle: `pending -> claimed -> completed`, `pending -> cancelled`,
//! `claimed -> pending` (the claim failed or was released); deletion is soft and only from
//! `pending` or `cancelled`.

use base::ErrorCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use base::money::{Asset, AssetRegistry, max_amount, parse_positive_amount, within_max};
use web::{ApiError, FieldError};

/// At most this many items per order.
pub const MAX_ITEMS: usize = 100;
/// Quantity bounds per item.
pub const MAX_QUANTITY: i64 = 10_000;

/// Where an order is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Claimed,
    Completed,
    Cancelled,
    Deleted,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Claimed => "claimed",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "claimed" => Some(Self::Claimed),
            "completed" => Some(Self::Completed),
            "cancelled" => Some(Self::Cancelled),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderItem {
    pub id: Uuid,
    pub product_id: String,
    pub product_name: String,
    pub price: Decimal,
    pub quantity: i32,
}

/// An order as stored (and cached, with its items).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub currency: String,
    pub amount: Decimal,
    pub status: OrderStatus,
    pub claim_id: Option<Uuid>,
    /// The wallet hold that funds it.
    pub hold_id: Option<Uuid>,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub items: Vec<OrderItem>,
}

/// Why an order change was refused.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("order not found")]
    NotFound,
    #[error("version mismatch")]
    VersionMismatch,
    #[error("the order changed after it was claimed")]
    Changed,
    #[error("the order is {0}, not pending")]
    NotPending(&'static str),
    #[error("an order that is {0} cannot be deleted")]
    NotDeletable(&'static str),
    #[error("cannot change status from {from} to {to}")]
    InvalidTransition { from: &'static str, to: &'static str },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        match e {
            OrderError::NotFound => ApiError::not_found("order"),
            OrderError::VersionMismatch => ApiError::version_mismatch(),
            e @ OrderError::Changed => ApiError::new(ErrorCode::OrderChanged, e.to_string()),
            e @ OrderError::NotPending(_) => ApiError::new(ErrorCode::OrderNotPending, e.to_string()),
            e @ OrderError::NotDeletable(_) => ApiError::new(ErrorCode::OrderNotDeletable, e.to_string()),
            e @ OrderError::InvalidTransition { .. } => {
                ApiError::new(ErrorCode::InvalidStatusTransition, e.to_string())
            }
            OrderError::Unexpected(e) => ApiError::internal(e),
        }
    }
}

/// An item as a client sends it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    /// 1 to 128 characters, no control characters.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001F\u007F]*\S[^\u0000-\u001F\u007F]*$")]
    pub product_id: String,
    /// 1 to 256 characters, no control characters.
    #[schema(min_length = 1, max_length = 256, pattern = r"^[^\u0000-\u001F\u007F]*\S[^\u0000-\u001F\u007F]*$")]
    pub product_name: String,
    /// Unit price, a decimal string within the asset's decimals.
    #[schema(pattern = r"^[0-9]{1,20}(\.[0-9]{1,18})?$", example = "250.5")]
    pub price: String,
    #[schema(minimum = 1, maximum = 10000)]
    pub quantity: i64,
}

/// Text fields refuse control characters (NUL, escapes, line breaks): PostgreSQL cannot store NUL,
/// and none belongs in a product's id or name.
const CONTROL_CHARACTERS: &str = "must not contain control characters";

/// Validates items against the asset and computes the total; every bad field is listed.
pub fn parse_items(items: &[ItemInput], asset: &Asset) -> Result<(Vec<OrderItem>, Decimal), Vec<FieldError>> {
    let mut errors = Vec::new();
    if items.is_empty() || items.len() > MAX_ITEMS {
        errors.push(FieldError::new("items", format!("must hold 1 to {MAX_ITEMS} items")));
    }
    let mut out = Vec::with_capacity(items.len());
    let mut total = Decimal::ZERO;
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| format!("items[{i}].{name}");
        let product_id = item.product_id.trim();
        if product_id.is_empty() || product_id.chars().count() > 128 {
            errors.push(FieldError::new(field("product_id"), "must be 1 to 128 characters"));
        } else if product_id.chars().any(char::is_control) {
            errors.push(FieldError::new(field("product_id"), CONTROL_CHARACTERS));
        }
        let product_name = item.product_name.trim();
        if product_name.is_empty() || product_name.chars().count() > 256 {
            errors.push(FieldError::new(field("product_name"), "must be 1 to 256 characters"));
        } else if product_name.chars().any(char::is_control) {
            errors.push(FieldError::new(field("product_name"), CONTROL_CHARACTERS));
        }
        let price = parse_positive_amount(&item.price, asset)
            .map_err(|e| errors.push(FieldError::new(field("price"), e.to_string())))
            .ok();
        let quantity = if (1..=MAX_QUANTITY).contains(&item.quantity) {
            i32::try_from(item.quantity).ok()
        } else {
            errors.push(FieldError::new(field("quantity"), format!("must be from 1 to {MAX_QUANTITY}")));
            None
        };
        if let (Some(price), Some(quantity)) = (price, quantity) {
            // Past the asset's maximum a product or sum may have been rounded: refused, never rounded.
            match price.checked_mul(Decimal::from(quantity)).and_then(|line| total.checked_add(line)) {
                Some(t) if within_max(t, asset) => total = t,
                _ => errors.push(FieldError::new(
                    field("price"),
                    format!("the order total would exceed {} {}", max_amount(asset), asset.code),
                )),
            }
            out.push(OrderItem {
                id: Uuid::now_v7(),
                product_id: product_id.to_string(),
                product_name: product_name.to_string(),
                price,
                quantity,
            });
        }
    }
    if errors.is_empty() { Ok((out, total.normalize())) } else { Err(errors) }
}

/// A validated new order.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub asset: Asset,
    pub items: Vec<OrderItem>,
    pub amount: Decimal,
}

impl NewOrder {
    pub fn parse(currency: &str, items: &[ItemInput], assets: &AssetRegistry) -> Result<Self, ApiError> {
        let Some(asset) = assets.get(currency) else {
            return Err(ApiError::validation(vec![FieldError::new(
                "currency",
                format!("unknown asset; one of {}", assets.codes().join(", ")),
            )]));
        };
        let (items, amount) = parse_items(items, &asset).map_err(ApiError::validation)?;
        Ok(Self { asset, items, amount })
    }
}

impl Order {
    pub fn new(user_id: Uuid, new: NewOrder, now: OffsetDateTime) -> Self {
        Self {
            id: Uuid::now_v7(),
            user_id,
            currency: new.asset.code,
            amount: new.amount,
            status: OrderStatus::Pending,
            claim_id: None,
            hold_id: None,
            version: 1,
            created_at: now,
            updated_at: now,
            items: new.items,
        }
    }

    pub fn require_pending(&self) -> Result<(), OrderError> {
        if self.status == OrderStatus::Pending { Ok(()) } else { Err(OrderError::NotPending(self.status.as_str())) }
    }

    /// Replaces the items (only while pending); the total follows.
    pub fn replace_items(&mut self, items: Vec<OrderItem>, amount: Decimal) -> Result<(), OrderError> {
        self.require_pending()?;
        self.items = items;
        self.amount = amount;
        Ok(())
    }

    /// `pending -> cancelled`.
    pub fn cancel(&mut self) -> Result<(), OrderError> {
        self.require_pending()?;
        self.status = OrderStatus::Cancelled;
        Ok(())
    }

    /// Soft delete from `pending` or `cancelled`.
    pub fn delete(&mut self) -> Result<(), OrderError> {
        match self.status {
            OrderStatus::Pending | OrderStatus::Cancelled => {
                self.status = OrderStatus::Deleted;
                Ok(())
            }
            s => Err(OrderError::NotDeletable(s.as_str())),
        }
    }

    /// `pending -> claimed` by `claim_id`.
    pub fn mark_claimed(&mut self, claim_id: Uuid) -> Result<(), OrderError> {
        self.require_pending()?;
        self.status = OrderStatus::Claimed;
        self.claim_id = Some(claim_id);
        Ok(())
    }

    /// `claimed -> completed`, only for the claim that holds it.
    pub fn complete(&mut self, claim_id: Uuid) -> Result<(), OrderError> {
        match self.status {
            OrderStatus::Claimed if self.claim_id == Some(claim_id) => {
                self.status = OrderStatus::Completed;
                Ok(())
            }
            from => Err(OrderError::InvalidTransition { from: from.as_str(), to: "completed" }),
        }
    }

    /// `claimed -> pending` when the holding claim failed or was released.
    pub fn reopen(&mut self, claim_id: Uuid) -> Result<(), OrderError> {
        match self.status {
            OrderStatus::Claimed if self.claim_id == Some(claim_id) => {
                self.status = OrderStatus::Pending;
                self.claim_id = None;
                Ok(())
            }
            from => Err(OrderError::InvalidTransition { from: from.as_str(), to: "pending" }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usdc() -> Asset {
        Asset { code: "USDC".into(), decimals: 6 }
    }

    fn item(price: &str, quantity: i64) -> ItemInput {
        ItemInput { product_id: "sku-1".into(), product_name: "Widget".into(), price: price.into(), quantity }
    }

    fn order() -> Order {
        let (items, amount) = parse_items(&[item("1.5", 2)], &usdc()).unwrap_or_default();
        Order::new(Uuid::now_v7(), NewOrder { asset: usdc(), items, amount }, base::clock::now())
    }

    #[test]
    fn total_is_computed_exactly() {
        let (items, total) = parse_items(&[item("0.1", 3), item("19.999999", 10_000)], &usdc()).unwrap_or_default();
        assert_eq!(items.len(), 2);
        // 0.1 × 3 + 19.999999 × 10000
        assert_eq!(total.to_string(), "200000.29");
    }

    #[test]
    fn every_bad_item_field_is_listed() {
        let bad = ItemInput { product_id: " ".into(), product_name: String::new(), price: "-1".into(), quantity: 0 };
        let errors = parse_items(&[item("1", 1), bad], &usdc()).err().unwrap_or_default();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["items[1].product_id", "items[1].product_name", "items[1].price", "items[1].quantity"]);
        assert!(parse_items(&[], &usdc()).is_err());
        assert!(parse_items(&vec![item("1", 1); 101], &usdc()).is_err());
        assert!(parse_items(&[item("1.0000001", 1)], &usdc()).is_err());
        assert!(parse_items(&[item("1", 10_001)], &usdc()).is_err());
    }

    #[test]
    fn lifecycle() {
        let claim = Uuid::now_v7();
        let mut o = order();
        assert!(o.complete(claim).is_err());
        assert!(o.mark_claimed(claim).is_ok());
        assert!(o.cancel().is_err());
        assert!(o.mark_claimed(Uuid::now_v7()).is_err());
        assert!(o.reopen(Uuid::now_v7()).is_err(), "only the holding claim reopens");
        assert!(o.reopen(claim).is_ok());
        assert_eq!(o.status, OrderStatus::Pending);
        assert!(o.mark_claimed(claim).is_ok());
        assert!(o.complete(claim).is_ok());
        assert!(o.delete().is_err());
        let mut o = order();
        assert!(o.cancel().is_ok());
        assert!(o.mark_claimed(claim).is_err());
        assert!(o.delete().is_ok());
    }
}
