//! Reservations of supply for claims, without I/O: what each step does given the claim's
//! reservation and the supply. Every step is idempotent per claim.

use rust_decimal::Decimal;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Supply, SupplyStatus};
use base::Step;

/// Where a claim's reservation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    Reserved,
    Consumed,
    Released,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Consumed => "consumed",
            Self::Released => "released",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reserved" => Some(Self::Reserved),
            "consumed" => Some(Self::Consumed),
            "released" => Some(Self::Released),
            _ => None,
        }
    }
}

/// A claim's hold on a supply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub claim_id: Uuid,
    pub supply_id: Option<Uuid>,
    pub amount: Decimal,
    pub status: ReservationStatus,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A reservation step.
#[derive(Debug, Clone, Copy)]
pub enum ReservationOp {
    Reserve { supply_id: Uuid, amount: Decimal },
    Consume,
    Release,
}

/// What a step writes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub outcome: Step,
    /// The supply after the step, when it changes.
    pub supply: Option<Supply>,
    /// The reservation after the step, when it changes; `insert` when it is new.
    pub reservation: Option<(Reservation, bool)>,
}

impl Plan {
    fn nothing(outcome: Step) -> Self {
        Self { outcome, supply: None, reservation: None }
    }
}

/// Decides a step. `supply` is the supply the step concerns (locked by the caller), if any.
pub fn plan(
    claim_id: Uuid,
    op: ReservationOp,
    current: Option<Reservation>,
    supply: Option<Supply>,
    now: OffsetDateTime,
) -> Plan {
    use ReservationStatus::*;
    match (op, current) {
        (ReservationOp::Reserve { .. }, Some(r)) => match r.status {
            Reserved | Consumed => Plan::nothing(Step::Done),
            Released => Plan::nothing(Step::Refused("the claim was released".into())),
        },
        (ReservationOp::Reserve { supply_id, amount }, None) => {
            let Some(mut s) = supply else { return Plan::nothing(Step::Refused("the supply no longer exists".into())) };
            if s.status != SupplyStatus::Active {
                return Plan::nothing(Step::Refused(format!("the supply is {}", s.status.as_str())));
            }
            if s.available() < amount {
                return Plan::nothing(Step::Refused(format!("insufficient supply: {} available", s.available())));
            }
            s.reserved += amount;
            s.settle_depletion();
            touch(&mut s, now);
            let r = Reservation {
                claim_id,
                supply_id: Some(supply_id),
                amount,
                status: Reserved,
                created_at: now,
                updated_at: now,
            };
            Plan { outcome: Step::Done, supply: Some(s), reservation: Some((r, true)) }
        }
        (ReservationOp::Consume, Some(r)) if r.status == Reserved => {
            let Some(mut s) = supply else { return Plan::nothing(Step::Refused("the supply no longer exists".into())) };
            s.amount -= r.amount;
            s.reserved -= r.amount;
            s.settle_depletion();
            touch(&mut s, now);
            let r = Reservation { status: Consumed, updated_at: now, ..r };
            Plan { outcome: Step::Done, supply: Some(s), reservation: Some((r, false)) }
        }
        (ReservationOp::Consume, Some(r)) if r.status == Consumed => Plan::nothing(Step::Done),
        (ReservationOp::Consume, _) => Plan::nothing(Step::Refused("nothing is reserved for the claim".into())),
        (ReservationOp::Release, Some(r)) if r.status == Reserved => {
            let r = Reservation { status: Released, updated_at: now, ..r };
            let supply = supply.map(|mut s| {
                s.reserved -= r.amount;
                s.settle_depletion();
                touch(&mut s, now);
                s
            });
            Plan { outcome: Step::Done, supply, reservation: Some((r, false)) }
        }
        (ReservationOp::Release, Some(r)) if r.status == Released => Plan::nothing(Step::Done),
        (ReservationOp::Release, Some(_)) => Plan::nothing(Step::Refused("the reservation is already consumed".into())),
        (ReservationOp::Release, None) => {
            let tombstone = Reservation {
                claim_id,
                supply_id: None,
                amount: Decimal::ZERO,
                status: Released,
                created_at: now,
                updated_at: now,
            };
            Plan { outcome: Step::Done, supply: None, reservation: Some((tombstone, true)) }
        }
    }
}

fn touch(s: &mut Supply, now: OffsetDateTime) {
    s.version += 1;
    s.updated_at = now;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NewSupply;
    use base::money::Asset;

    fn supply(amount: i64) -> Supply {
        let asset = Asset { code: "USDC".into(), decimals: 6 };
        Supply::new(Uuid::now_v7(), NewSupply { asset, amount: Decimal::from(amount) }, base::clock::now())
    }

    #[test]
    fn reserve_consume_is_exact_and_idempotent() {
        let (claim, now) = (Uuid::now_v7(), base::clock::now());
        let s = supply(10);
        let op = ReservationOp::Reserve { supply_id: s.id, amount: Decimal::from(10) };
        let p = plan(claim, op, None, Some(s.clone()), now);
        assert_eq!(p.outcome, Step::Done);
        let (s, (r, insert)) = (p.supply.unwrap_or_else(|| supply(0)), p.reservation.unwrap_or_else(|| unreachable!()));
        assert!(insert);
        assert_eq!((s.reserved, s.available(), s.status), (Decimal::from(10), Decimal::ZERO, SupplyStatus::Depleted));
        // A second delivery changes nothing.
        assert!(plan(claim, op, Some(r.clone()), Some(s.clone()), now).supply.is_none());
        let p = plan(claim, ReservationOp::Consume, Some(r.clone()), Some(s), now);
        let s = p.supply.unwrap_or_else(|| supply(0));
        assert_eq!((s.amount, s.reserved), (Decimal::ZERO, Decimal::ZERO));
        let (r, _) = p.reservation.unwrap_or_else(|| unreachable!());
        assert_eq!(plan(claim, ReservationOp::Consume, Some(r.clone()), Some(s.clone()), now).outcome, Step::Done);
        assert!(plan(claim, ReservationOp::Consume, Some(r.clone()), Some(s.clone()), now).supply.is_none());
        assert!(matches!(plan(claim, ReservationOp::Release, Some(r), Some(s), now).outcome, Step::Refused(_)));
    }

    #[test]
    fn reserve_refuses_what_is_not_there() {
        let (claim, now) = (Uuid::now_v7(), base::clock::now());
        let mut s = supply(5);
        let op = ReservationOp::Reserve { supply_id: s.id, amount: Decimal::from(6) };
        assert!(matches!(plan(claim, op, None, Some(s.clone()), now).outcome, Step::Refused(_)));
        s.status = SupplyStatus::Paused;
        let op = ReservationOp::Reserve { supply_id: s.id, amount: Decimal::from(1) };
        assert!(matches!(plan(claim, op, None, Some(s), now).outcome, Step::Refused(_)));
        assert!(matches!(plan(claim, op, None, None, now).outcome, Step::Refused(_)));
    }

    #[test]
    fn release_gives_back_and_a_tombstone_blocks_a_late_reserve() {
        let (claim, now) = (Uuid::now_v7(), base::clock::now());
        let s = supply(4);
        let op = ReservationOp::Reserve { supply_id: s.id, amount: Decimal::from(4) };
        let p = plan(claim, op, None, Some(s), now);
        let (s, (r, _)) = (p.supply.unwrap_or_else(|| supply(0)), p.reservation.unwrap_or_else(|| unreachable!()));
        let p = plan(claim, ReservationOp::Release, Some(r), Some(s), now);
        let s = p.supply.unwrap_or_else(|| supply(0));
        assert_eq!((s.reserved, s.status), (Decimal::ZERO, SupplyStatus::Active));

        let late = Uuid::now_v7();
        let p = plan(late, ReservationOp::Release, None, None, now);
        let (tomb, insert) = p.reservation.unwrap_or_else(|| unreachable!());
        assert!(insert);
        let op = ReservationOp::Reserve { supply_id: s.id, amount: Decimal::from(1) };
        assert!(matches!(plan(late, op, Some(tomb), Some(s), now).outcome, Step::Refused(_)));
    }
}
