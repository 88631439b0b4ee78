//! `OrderStore`: round trips with items, guarded changes (a no-op change writes nothing), lists and
//! multi-gets.

use std::sync::Arc;

use rstest::rstest;
use serde_json::json;
use time::macros::datetime;
use uuid::Uuid;

use base::money::Asset;
use events::NewEvent;
use order::domain::{ItemInput, NewOrder, Order, OrderError, OrderStatus, parse_items};
use order::store::{Guard, Mutation, OrderFilter, OrderStore};
use testkit::Backend;

use crate::{assert_event, ctx, dec, fresh, log};

fn eth() -> Asset {
    Asset { code: "ETH".into(), decimals: 18 }
}

/// Items through the service's own parser: `(product, price, quantity)`.
fn items(lines: &[(&str, &str, i64)]) -> NewOrder {
    let input: Vec<ItemInput> = lines
        .iter()
        .map(|(product, price, quantity)| ItemInput {
            product_id: format!("sku-{product}"),
            product_name: format!("The {product}"),
            price: price.to_string(),
            quantity: *quantity,
        })
        .collect();
    let (items, amount) = parse_items(&input, &eth()).unwrap();
    NewOrder { asset: eth(), items, amount }
}

fn new_order(user: Uuid, currency: &str) -> Order {
    let mut o = Order::new(user, items(&[("mug", "1.5", 2)]), base::clock::now());
    o.currency = currency.into();
    o
}

fn event(o: &Order, event_type: &'static str) -> NewEvent {
    NewEvent {
        event_type,
        version: 1,
        topic: "order-events",
        aggregate_id: o.id,
        data: json!({"amount": o.amount.to_string(), "status": o.status.as_str(), "items": o.items.len()}),
    }
}

async fn insert(store: &Arc<dyn OrderStore>, o: &Order) {
    store.insert(o, &event(o, "order.created"), &ctx()).await.unwrap();
}

fn guard(owner: Option<Uuid>, expected_version: Option<i64>) -> Guard {
    Guard { owner, expected_version }
}

fn cancel() -> Mutation {
    Box::new(|o| {
        o.cancel()?;
        Ok(Some(event(o, "order.cancelled")))
    })
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn insert_then_get_round_trips_the_order_and_its_items_with_one_event(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = order::store::open(&db);
    let at = datetime!(2025-12-31 23:59:59.999999 UTC);
    let new =
        items(&[("mug", "0.000000000000000001", 10_000), ("pot", "98765.432109876543210987", 3), ("cup", "7", 1)]);
    let mut o = Order::new(Uuid::now_v7(), new, at);
    assert_eq!(o.amount, dec("296303.296329629629642961"), "the parser's exact total");
    o.status = OrderStatus::Claimed;
    o.claim_id = Some(Uuid::now_v7());
    o.version = 4;
    o.updated_at = at + time::Duration::microseconds(1);
    let (ctx, created) = (ctx(), event(&o, "order.created"));
    store.insert(&o, &created, &ctx).await.unwrap();

    let got = store.get(o.id).await.unwrap().expect("the inserted order");
    assert_eq!(got, o, "every field, items in their order");
    assert_eq!(got.items[1].price.to_string(), "98765.432109876543210987");
    let events = log(&db).await;
    assert_eq!(events.len(), 1);
    assert_event(&events[0], &created, &ctx);
    assert!(store.get(Uuid::now_v7()).await.unwrap().is_none());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn modify_checks_the_guard_writes_changes_with_their_event_and_skips_no_ops(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = order::store::open(&db);
    let owner = Uuid::now_v7();
    let mut o = new_order(owner, "ETH");
    o.created_at -= time::Duration::hours(1);
    o.updated_at = o.created_at;
    insert(&store, &o).await;

    let another_owner = store.modify(o.id, guard(Some(Uuid::now_v7()), None), &ctx(), cancel()).await;
    assert!(matches!(another_owner, Err(OrderError::NotFound)), "{another_owner:?}");
    let stale = store.modify(o.id, guard(Some(owner), Some(0)), &ctx(), cancel()).await;
    assert!(matches!(stale, Err(OrderError::VersionMismatch)), "{stale:?}");
    let unknown = store.modify(Uuid::now_v7(), guard(None, None), &ctx(), cancel()).await;
    assert!(matches!(unknown, Err(OrderError::NotFound)), "{unknown:?}");
    assert_eq!((store.get(o.id).await.unwrap(), log(&db).await.len()), (Some(o.clone()), 1));

    // Fewer, different items: the old ones are gone, the new ones read back in order.
    let replacement = items(&[("tea", "0.333333333333333333", 3), ("jar", "2", 2)]);
    let (new_items, new_amount) = (replacement.items.clone(), replacement.amount);
    let ctx1 = ctx();
    let replace: Mutation = Box::new(move |o| {
        o.replace_items(new_items, new_amount)?;
        Ok(Some(event(o, "order.updated")))
    });
    let changed = store.modify(o.id, guard(Some(owner), Some(1)), &ctx1, replace).await.unwrap();
    assert_eq!((changed.version, changed.amount), (2, dec("4.999999999999999999")));
    assert_eq!(changed.items, replacement.items);
    assert!(changed.updated_at > o.updated_at);
    assert_eq!(changed.created_at, o.created_at);
    assert_eq!(store.get(o.id).await.unwrap(), Some(changed.clone()));
    let events = log(&db).await;
    assert_eq!(events.len(), 2);
    assert_event(&events[1], &event(&changed, "order.updated"), &ctx1);

    let claim = Uuid::now_v7();
    let mark = || -> Mutation {
        Box::new(move |o| {
            if o.claim_id == Some(claim) {
                return Ok(None);
            }
            o.mark_claimed(claim)?;
            Ok(Some(event(o, "order.claimed")))
        })
    };
    let claimed = store.modify(o.id, guard(None, None), &ctx(), mark()).await.unwrap();
    assert_eq!((claimed.version, claimed.status, claimed.claim_id), (3, OrderStatus::Claimed, Some(claim)));
    let again = store.modify(o.id, guard(None, None), &ctx(), mark()).await.unwrap();
    assert_eq!(again, claimed, "a change with no event returns the order as it is");
    assert_eq!(
        (store.get(o.id).await.unwrap(), log(&db).await.len()),
        (Some(claimed.clone()), 3),
        "and writes nothing"
    );

    let refused = store.modify(o.id, guard(None, None), &ctx(), cancel()).await;
    assert!(matches!(refused, Err(OrderError::NotPending("claimed"))), "{refused:?}");
    assert_eq!((store.get(o.id).await.unwrap(), log(&db).await.len()), (Some(claimed), 3), "a refusal writes nothing");

    let reopen: Mutation = Box::new(move |o| {
        o.reopen(claim)?;
        Ok(Some(event(o, "order.reopened")))
    });
    let reopened = store.modify(o.id, guard(None, Some(3)), &ctx(), reopen).await.unwrap();
    assert_eq!((reopened.version, reopened.status, reopened.claim_id), (4, OrderStatus::Pending, None));
    assert_eq!(store.get(o.id).await.unwrap(), Some(reopened));
    let delete: Mutation = Box::new(|o| {
        o.delete()?;
        Ok(Some(event(o, "order.deleted")))
    });
    let deleted = store.modify(o.id, guard(Some(owner), None), &ctx(), delete).await.unwrap();
    assert_eq!(deleted.status, OrderStatus::Deleted);
    let gone = store.modify(o.id, guard(None, None), &ctx(), cancel()).await;
    assert!(matches!(gone, Err(OrderError::NotFound)), "a deleted order is gone for modify: {gone:?}");
    assert_eq!(store.get(o.id).await.unwrap(), Some(deleted), "get still returns it");
    assert_eq!(log(&db).await.len(), 5);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn list_ids_filters_excludes_deleted_and_pages_newest_first(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = order::store::open(&db);
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let a1 = new_order(a, "ETH");
    let a2 = new_order(a, "USDC");
    let mut a3 = new_order(a, "ETH");
    a3.status = OrderStatus::Cancelled;
    let mut a4 = new_order(a, "ETH");
    a4.status = OrderStatus::Deleted;
    let b1 = new_order(b, "ETH");
    let b2 = new_order(b, "USDC");
    for o in [&a1, &a2, &a3, &a4, &b1, &b2] {
        insert(&store, o).await;
    }
    let list = |f: OrderFilter| {
        let store = store.clone();
        async move { store.list_ids(&f).await.unwrap() }
    };
    let all = OrderFilter { limit: 50, ..Default::default() };
    assert_eq!(list(all.clone()).await, [b2.id, b1.id, a3.id, a2.id, a1.id], "live orders, newest first");
    assert_eq!(list(OrderFilter { user_id: Some(a), ..all.clone() }).await, [a3.id, a2.id, a1.id]);
    assert_eq!(list(OrderFilter { not_user_id: Some(a), ..all.clone() }).await, [b2.id, b1.id]);
    let claimable = OrderFilter {
        not_user_id: Some(b),
        currency: Some("ETH".into()),
        status: Some(OrderStatus::Pending),
        ..all.clone()
    };
    assert_eq!(list(claimable).await, [a1.id], "what a shopper may claim");
    assert_eq!(list(OrderFilter { currency: Some("USDC".into()), ..all.clone() }).await, [b2.id, a2.id]);
    assert!(list(OrderFilter { status: Some(OrderStatus::Deleted), ..all.clone() }).await.is_empty());
    assert_eq!(list(OrderFilter { limit: 2, ..all.clone() }).await, [b2.id, b1.id]);
    assert_eq!(list(OrderFilter { limit: 2, before: Some(b1.id), ..all.clone() }).await, [a3.id, a2.id]);
    assert_eq!(list(OrderFilter { limit: 2, before: Some(a2.id), ..all }).await, [a1.id]);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn get_many_returns_known_orders_with_their_own_items(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = order::store::open(&db);
    let x = Order::new(Uuid::now_v7(), items(&[("a", "1", 1), ("b", "2", 2)]), base::clock::now());
    let y = Order::new(Uuid::now_v7(), items(&[("c", "0.5", 3)]), base::clock::now());
    let mut z = Order::new(Uuid::now_v7(), items(&[("d", "9", 9), ("e", "8", 8), ("f", "7", 7)]), base::clock::now());
    z.status = OrderStatus::Deleted;
    for o in [&x, &y, &z] {
        insert(&store, o).await;
    }
    let mut got = store.get_many(vec![z.id, Uuid::now_v7(), x.id, y.id]).await.unwrap();
    got.sort_by_key(|o| o.id);
    assert_eq!(got, [x, y, z], "deleted ones included, unknown ones left out, items not mixed up");
    assert!(store.get_many(vec![]).await.unwrap().is_empty());
    assert!(store.get_many(vec![Uuid::now_v7()]).await.unwrap().is_empty());
}
