//! `SupplyStore`: round trips, guarded changes with their events, lists, the available-supply
//! lookup and the idempotent reservation steps.

use std::collections::HashSet;
use std::sync::Arc;

use rstest::rstest;
use serde_json::json;
use time::macros::datetime;
use uuid::Uuid;

use base::Step;
use base::money::Asset;
use events::NewEvent;
use supply::domain::{NewSupply, Supply, SupplyError, SupplyPatch, SupplyStatus};
use supply::reservation::ReservationOp;
use supply::store::{Guard, Mutation, SupplyFilter, SupplyStore};
use testkit::Backend;

use crate::{assert_event, ctx, dec, fresh, log};

fn new_supply(user: Uuid, currency: &str, amount: &str) -> Supply {
    let asset = Asset { code: currency.into(), decimals: 18 };
    Supply::new(user, NewSupply { asset, amount: dec(amount) }, base::clock::now())
}

fn event(s: &Supply, event_type: &'static str) -> NewEvent {
    NewEvent {
        event_type,
        version: 1,
        topic: "supply-events",
        aggregate_id: s.id,
        data: json!({
            "amount": s.amount.to_string(), "reserved": s.reserved.to_string(),
            "status": s.status.as_str(), "version": s.version,
        }),
    }
}

async fn insert(store: &Arc<dyn SupplyStore>, s: &Supply) {
    store.insert(s, &event(s, "supply.created"), &ctx()).await.unwrap();
}

fn patch(amount: Option<&str>, status: Option<SupplyStatus>) -> Mutation {
    let patch = SupplyPatch { amount: amount.map(dec), status };
    Box::new(move |s| {
        s.apply(&patch)?;
        Ok(event(s, "supply.updated"))
    })
}

fn guard(owner: Option<Uuid>, expected_version: Option<i64>) -> Guard {
    Guard { owner, expected_version }
}

async fn step(store: &Arc<dyn SupplyStore>, claim: Uuid, op: ReservationOp) -> (Step, Option<Uuid>) {
    store.reservation_step(claim, op, &ctx(), Box::new(|s| Ok(event(s, "supply.updated")))).await.unwrap()
}

fn reserve(supply_id: Uuid, amount: &str) -> ReservationOp {
    ReservationOp::Reserve { supply_id, amount: dec(amount) }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn insert_then_get_round_trips_every_field_with_one_event(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = supply::store::open(&db);
    let at = datetime!(2024-02-29 23:59:59.123456 UTC);
    let asset = Asset { code: "ETH".into(), decimals: 18 };
    let mut s = Supply::new(Uuid::now_v7(), NewSupply { asset, amount: dec("12345678.123456789012345678") }, at);
    s.reserved = dec("0.000000000000000001");
    s.status = SupplyStatus::Paused;
    s.version = 7;
    s.updated_at = at + time::Duration::microseconds(1);
    let (ctx, created) = (ctx(), event(&s, "supply.created"));
    store.insert(&s, &created, &ctx).await.unwrap();

    let got = store.get(s.id).await.unwrap().expect("the inserted supply");
    assert_eq!(got, s);
    assert_eq!(got.amount.to_string(), "12345678.123456789012345678");
    assert_eq!(got.updated_at.microsecond(), 123_457);
    let events = log(&db).await;
    assert_eq!(events.len(), 1, "one event per insert");
    assert_event(&events[0], &created, &ctx);
    assert!(store.get(Uuid::now_v7()).await.unwrap().is_none(), "an unknown id is None");
    assert!(store.insert(&s, &created, &ctx).await.is_err(), "an id is inserted once");
    assert_eq!(log(&db).await.len(), 1, "a refused insert writes no event");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn modify_checks_owner_liveness_and_version_then_writes_row_and_event(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = supply::store::open(&db);
    let owner = Uuid::now_v7();
    let mut s = new_supply(owner, "ETH", "10");
    s.created_at -= time::Duration::hours(1);
    s.updated_at = s.created_at;
    insert(&store, &s).await;

    let another_owner = store.modify(s.id, guard(Some(Uuid::now_v7()), None), &ctx(), patch(Some("11"), None)).await;
    assert!(matches!(another_owner, Err(SupplyError::NotFound)), "{another_owner:?}");
    let stale = store.modify(s.id, guard(Some(owner), Some(2)), &ctx(), patch(Some("11"), None)).await;
    assert!(matches!(stale, Err(SupplyError::VersionMismatch)), "{stale:?}");
    let unknown = store.modify(Uuid::now_v7(), guard(None, None), &ctx(), patch(Some("11"), None)).await;
    assert!(matches!(unknown, Err(SupplyError::NotFound)), "{unknown:?}");
    assert_eq!(store.get(s.id).await.unwrap(), Some(s.clone()), "refusals change nothing");
    assert_eq!(log(&db).await.len(), 1, "refusals write no event");

    let ctx1 = ctx();
    let changed = store
        .modify(
            s.id,
            guard(Some(owner), Some(1)),
            &ctx1,
            patch(Some("11.000000000000000001"), Some(SupplyStatus::Paused)),
        )
        .await
        .unwrap();
    assert_eq!(changed.version, 2);
    assert!(changed.updated_at > s.updated_at, "updated_at moves");
    assert_eq!((changed.id, changed.user_id, changed.created_at), (s.id, owner, s.created_at));
    assert_eq!((changed.amount, changed.status), (dec("11.000000000000000001"), SupplyStatus::Paused));
    assert_eq!(store.get(s.id).await.unwrap(), Some(changed.clone()), "the row is written");
    let events = log(&db).await;
    assert_eq!(events.len(), 2);
    assert_event(&events[1], &event(&changed, "supply.updated"), &ctx1);

    // An admin (no owner) without a version deletes it; a deleted supply is gone for modify.
    let delete: Mutation = Box::new(|s| {
        s.delete()?;
        Ok(event(s, "supply.deleted"))
    });
    let deleted = store.modify(s.id, guard(None, None), &ctx(), delete).await.unwrap();
    assert_eq!((deleted.version, deleted.status), (3, SupplyStatus::Deleted));
    let err = store.modify(s.id, guard(None, None), &ctx(), patch(Some("1"), None)).await.unwrap_err();
    assert!(matches!(err, SupplyError::NotFound), "{err:?}");
    assert_eq!(store.get(s.id).await.unwrap(), Some(deleted), "get still returns a deleted supply");
    assert_eq!(log(&db).await.len(), 3);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_refused_change_writes_neither_row_nor_event(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = supply::store::open(&db);
    let mut s = new_supply(Uuid::now_v7(), "ETH", "10");
    s.reserved = dec("4");
    insert(&store, &s).await;

    let err = store.modify(s.id, guard(None, Some(1)), &ctx(), patch(Some("3.9"), None)).await.unwrap_err();
    assert!(matches!(err, SupplyError::AmountBelowReserved(r) if r == dec("4")), "{err:?}");
    let delete: Mutation = Box::new(|s| {
        s.delete()?;
        Ok(event(s, "supply.deleted"))
    });
    let err = store.modify(s.id, guard(None, Some(1)), &ctx(), delete).await.unwrap_err();
    assert!(matches!(err, SupplyError::Reserved), "{err:?}");
    assert_eq!(store.get(s.id).await.unwrap(), Some(s), "neither version nor row moved");
    assert_eq!(log(&db).await.len(), 1, "no event for a refused change");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn list_ids_filters_excludes_deleted_and_pages_newest_first(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = supply::store::open(&db);
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let a1 = new_supply(a, "ETH", "1");
    let a2 = new_supply(a, "USDC", "2");
    let mut a3 = new_supply(a, "ETH", "3");
    a3.status = SupplyStatus::Paused;
    let mut a4 = new_supply(a, "ETH", "4");
    a4.status = SupplyStatus::Deleted;
    let b1 = new_supply(b, "ETH", "5");
    for s in [&a1, &a2, &a3, &a4, &b1] {
        insert(&store, s).await;
    }
    let list = |f: SupplyFilter| {
        let store = store.clone();
        async move { store.list_ids(&f).await.unwrap() }
    };
    let all = SupplyFilter { limit: 50, ..Default::default() };
    let of_a = SupplyFilter { user_id: Some(a), ..all.clone() };
    assert_eq!(list(all.clone()).await, [b1.id, a3.id, a2.id, a1.id], "live supplies, newest first");
    assert_eq!(list(of_a.clone()).await, [a3.id, a2.id, a1.id]);
    assert_eq!(list(SupplyFilter { currency: Some("ETH".into()), ..of_a.clone() }).await, [a3.id, a1.id]);
    assert_eq!(list(SupplyFilter { currency: Some("ETH".into()), ..all.clone() }).await, [b1.id, a3.id, a1.id]);
    assert_eq!(list(SupplyFilter { status: Some(SupplyStatus::Paused), ..all.clone() }).await, [a3.id]);
    assert!(list(SupplyFilter { status: Some(SupplyStatus::Deleted), ..all.clone() }).await.is_empty());
    assert_eq!(list(SupplyFilter { limit: 2, ..of_a.clone() }).await, [a3.id, a2.id]);
    assert_eq!(list(SupplyFilter { limit: 2, before: Some(a2.id), ..of_a.clone() }).await, [a1.id]);
    assert!(list(SupplyFilter { before: Some(a1.id), ..of_a }).await.is_empty());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn get_many_returns_the_known_ids_only(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = supply::store::open(&db);
    let (x, y) = (new_supply(Uuid::now_v7(), "ETH", "1.5"), new_supply(Uuid::now_v7(), "BTC", "0.00000001"));
    let mut deleted = new_supply(Uuid::now_v7(), "ETH", "2");
    deleted.status = SupplyStatus::Deleted;
    for s in [&x, &y, &deleted] {
        insert(&store, s).await;
    }
    let mut got = store.get_many(vec![y.id, Uuid::now_v7(), x.id, deleted.id]).await.unwrap();
    got.sort_by_key(|s| s.id);
    assert_eq!(got, [x, y, deleted], "deleted ones included, unknown ones left out");
    assert!(store.get_many(vec![]).await.unwrap().is_empty());
    assert!(store.get_many(vec![Uuid::now_v7()]).await.unwrap().is_empty());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn find_available_picks_the_largest_active_supply_that_covers_the_amount(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = supply::store::open(&db);
    let (user, other) = (Uuid::now_v7(), Uuid::now_v7());
    let small = new_supply(user, "ETH", "10");
    let mut mostly_reserved = new_supply(user, "ETH", "25");
    mostly_reserved.reserved = dec("20");
    let largest = new_supply(user, "ETH", "12.000000000000000001");
    let mut paused = new_supply(user, "ETH", "100");
    paused.status = SupplyStatus::Paused;
    let mut deleted = new_supply(user, "ETH", "500");
    deleted.status = SupplyStatus::Deleted;
    let usdc = new_supply(user, "USDC", "1000");
    let others = new_supply(other, "ETH", "300");
    for s in [&small, &mostly_reserved, &largest, &paused, &deleted, &usdc, &others] {
        insert(&store, s).await;
    }
    let find = |currency: &'static str, amount: &'static str| {
        let store = store.clone();
        async move { store.find_available(user, currency, dec(amount)).await.unwrap() }
    };
    assert_eq!(find("ETH", "1").await, Some(largest.id), "the largest available");
    assert_eq!(find("ETH", "12.000000000000000001").await, Some(largest.id), "exactly enough is enough");
    assert_eq!(find("ETH", "12.000000000000000002").await, None, "paused, deleted and others' supplies never count");
    assert_eq!(find("ETH", "20").await, None, "available is amount minus reserved");
    assert_eq!(find("USDC", "1000").await, Some(usdc.id));
    assert_eq!(find("BTC", "0.1").await, None);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn find_available_breaks_ties_the_same_way_on_both_backends(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = supply::store::open(&db);
    let user = Uuid::now_v7();
    let supplies: Vec<Supply> = (0..3).map(|_| new_supply(user, "ETH", "5")).collect();
    for s in &supplies {
        insert(&store, s).await;
    }
    assert_eq!(
        store.find_available(user, "ETH", dec("5")).await.unwrap(),
        Some(supplies[0].id),
        "the oldest of equals"
    );
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn reservation_steps_are_exact_idempotent_and_refuse_what_is_not_there(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = supply::store::open(&db);
    let s = new_supply(Uuid::now_v7(), "ETH", "10.000000000000000001");
    insert(&store, &s).await;
    let id = s.id;
    let get = || {
        let store = store.clone();
        async move { store.get(id).await.unwrap().unwrap() }
    };
    let events = || {
        let db = db.clone();
        async move { log(&db).await.len() }
    };
    let (c1, c2) = (Uuid::now_v7(), Uuid::now_v7());

    assert_eq!(step(&store, c1, reserve(s.id, "4.5")).await, (Step::Done, Some(s.id)));
    let after = get().await;
    assert_eq!((after.reserved, after.available(), after.version), (dec("4.5"), dec("5.500000000000000001"), 2));
    assert_eq!(events().await, 2);
    let last = log(&db).await.pop().unwrap();
    assert_eq!((last.event_type.as_str(), last.data.clone()), ("supply.updated", event(&after, "supply.updated").data));

    assert_eq!(step(&store, c1, reserve(s.id, "4.5")).await, (Step::Done, None), "a repeated reserve");
    assert_eq!((get().await, events().await), (after.clone(), 2), "changes nothing more");

    let (outcome, changed) = step(&store, c2, reserve(s.id, "5.500000000000000002")).await;
    assert!(matches!(outcome, Step::Refused(_)) && changed.is_none(), "beyond available: {outcome:?}");
    assert_eq!((get().await, events().await), (after, 2));

    assert_eq!(step(&store, c2, reserve(s.id, "5.500000000000000001")).await, (Step::Done, Some(s.id)));
    let full = get().await;
    assert_eq!((full.reserved, full.status, full.version), (s.amount, SupplyStatus::Depleted, 3));

    assert_eq!(step(&store, c1, ReservationOp::Consume).await, (Step::Done, Some(s.id)));
    let consumed = get().await;
    assert_eq!((consumed.amount, consumed.reserved), (dec("5.500000000000000001"), dec("5.500000000000000001")));
    assert_eq!((consumed.status, consumed.version), (SupplyStatus::Depleted, 4));
    assert_eq!(step(&store, c1, ReservationOp::Consume).await, (Step::Done, None), "a repeated consume");
    assert!(matches!(step(&store, c1, ReservationOp::Release).await, (Step::Refused(_), None)), "consumed is final");
    assert_eq!((get().await, events().await), (consumed, 4));

    assert_eq!(step(&store, c2, ReservationOp::Release).await, (Step::Done, Some(s.id)));
    let released = get().await;
    assert_eq!((released.amount, released.reserved), (dec("5.500000000000000001"), dec("0")));
    assert_eq!((released.status, released.version), (SupplyStatus::Active, 5));
    assert_eq!(step(&store, c2, ReservationOp::Release).await, (Step::Done, None), "a repeated release");
    assert!(matches!(step(&store, c2, reserve(s.id, "1")).await, (Step::Refused(_), None)), "released is final");
    assert_eq!((get().await, events().await), (released.clone(), 5));

    // A release before any reserve leaves a tombstone that refuses a late reserve.
    let late = Uuid::now_v7();
    assert!(matches!(step(&store, late, ReservationOp::Consume).await, (Step::Refused(_), None)));
    assert_eq!(step(&store, late, ReservationOp::Release).await, (Step::Done, None));
    assert!(matches!(step(&store, late, reserve(s.id, "1")).await, (Step::Refused(_), None)));
    assert!(matches!(step(&store, Uuid::now_v7(), reserve(Uuid::now_v7(), "1")).await, (Step::Refused(_), None)));
    assert_eq!((get().await, events().await), (released, 5), "refusals and tombstones write nothing to the supply");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_paused_supply_is_not_reserved(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = supply::store::open(&db);
    let mut s = new_supply(Uuid::now_v7(), "ETH", "10");
    s.status = SupplyStatus::Paused;
    insert(&store, &s).await;
    assert!(matches!(step(&store, Uuid::now_v7(), reserve(s.id, "1")).await, (Step::Refused(_), None)));
    assert_eq!(store.get(s.id).await.unwrap(), Some(s));
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reserves_never_overdraw(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = supply::store::open(&db);
    let s = new_supply(Uuid::now_v7(), "ETH", "10");
    insert(&store, &s).await;
    let id = s.id;
    let tasks = (0..30).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { step(&store, Uuid::now_v7(), reserve(id, "1")).await })
    });
    let outcomes: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    let done = outcomes.iter().filter(|(o, _)| *o == Step::Done).count();
    assert_eq!(done, 10, "{outcomes:?}");
    assert!(outcomes.iter().all(|(o, _)| *o == Step::Done || matches!(o, Step::Refused(_))));
    let after = store.get(s.id).await.unwrap().unwrap();
    assert_eq!((after.reserved, after.status, after.version), (dec("10"), SupplyStatus::Depleted, 11));
    assert_eq!(log(&db).await.len(), 11, "one event per reservation that changed the supply");
    let ids: HashSet<Uuid> = log(&db).await.iter().map(|e| e.aggregate_id).collect();
    assert_eq!(ids, HashSet::from([s.id]));
}
