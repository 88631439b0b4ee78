//! `ClaimStore`: round trips, the one-live-claim-per-order guard (also under 50 concurrent inserts),
//! the latest claim of an order, changes with their events, lists and multi-gets.

use std::sync::Arc;

use rstest::rstest;
use serde_json::json;
use time::macros::datetime;
use uuid::Uuid;

use claim::domain::{Claim, ClaimError, ClaimStatus};
use claim::store::{ClaimFilter, ClaimStore, Mutation};
use events::NewEvent;
use testkit::Backend;

use crate::{assert_event, ctx, dec, fresh, log};

fn new_claim(order_id: Uuid, user_id: Uuid) -> Claim {
    let (buyer, supply) = (Uuid::now_v7(), Uuid::now_v7());
    Claim::new(order_id, user_id, buyer, supply, "ETH".into(), dec("1.000000000000000001"), base::clock::now())
}

fn event(c: &Claim, event_type: &'static str) -> NewEvent {
    NewEvent {
        event_type,
        version: 1,
        topic: "claim-events",
        aggregate_id: c.id,
        data: json!({"order_id": c.order_id, "status": c.status.as_str(), "reason": c.failure_reason}),
    }
}

async fn insert(store: &Arc<dyn ClaimStore>, c: &Claim) -> Result<(), ClaimError> {
    store.insert(c, &event(c, "order.claimed"), &ctx()).await
}

fn process() -> Mutation {
    Box::new(|c| {
        c.process(base::clock::now())?;
        Ok(event(c, "claim.processed"))
    })
}

fn fail(reason: &str) -> Mutation {
    let reason = reason.to_string();
    Box::new(move |c| {
        c.fail(reason)?;
        Ok(event(c, "claim.failed"))
    })
}

fn release() -> Mutation {
    Box::new(|c| {
        c.release()?;
        Ok(event(c, "claim.released"))
    })
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn insert_then_get_round_trips_every_field_with_one_event(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = claim::store::open(&db);
    let at = datetime!(2026-01-01 00:00:00.000001 UTC);
    let mut c = new_claim(Uuid::now_v7(), Uuid::now_v7());
    c.amount = dec("79228162514.264337593543950335");
    c.claimed_at = at;
    c.updated_at = at + time::Duration::microseconds(1);
    c.version = 3;
    let (ctx, claimed) = (ctx(), event(&c, "order.claimed"));
    store.insert(&c, &claimed, &ctx).await.unwrap();

    let got = store.get(c.id).await.unwrap().expect("the inserted claim");
    assert_eq!(got, c);
    assert_eq!(got.amount.to_string(), "79228162514.264337593543950335");
    let events = log(&db).await;
    assert_eq!(events.len(), 1);
    assert_event(&events[0], &claimed, &ctx);
    assert!(store.get(Uuid::now_v7()).await.unwrap().is_none());
    assert_eq!(store.latest_for_order(c.order_id).await.unwrap(), Some(c));
    assert!(store.latest_for_order(Uuid::now_v7()).await.unwrap().is_none());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_order_has_one_live_claim_until_it_fails_or_is_released(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = claim::store::open(&db);
    let order = Uuid::now_v7();
    let first = new_claim(order, Uuid::now_v7());
    insert(&store, &first).await.unwrap();

    let second = new_claim(order, Uuid::now_v7());
    let refused = insert(&store, &second).await;
    assert!(matches!(refused, Err(ClaimError::AlreadyClaimed)), "a pending claim is live: {refused:?}");
    assert!(store.get(second.id).await.unwrap().is_none(), "the refused claim is not stored");
    assert_eq!(log(&db).await.len(), 1, "nor its event");

    store.modify(first.id, &ctx(), process()).await.unwrap();
    let third = new_claim(order, Uuid::now_v7());
    let refused = insert(&store, &third).await;
    assert!(matches!(refused, Err(ClaimError::AlreadyClaimed)), "a processed claim is live: {refused:?}");

    let elsewhere = new_claim(Uuid::now_v7(), first.user_id);
    insert(&store, &elsewhere).await.unwrap();

    // Failed and released claims are not live: the order can be claimed again.
    let other = Uuid::now_v7();
    let failed = new_claim(other, Uuid::now_v7());
    insert(&store, &failed).await.unwrap();
    store.modify(failed.id, &ctx(), fail("supply paused")).await.unwrap();
    let retry = new_claim(other, Uuid::now_v7());
    insert(&store, &retry).await.unwrap();
    assert!(matches!(insert(&store, &new_claim(other, Uuid::now_v7())).await, Err(ClaimError::AlreadyClaimed)));
    store.modify(retry.id, &ctx(), release()).await.unwrap();
    let last = new_claim(other, Uuid::now_v7());
    insert(&store, &last).await.unwrap();
    assert_eq!(store.latest_for_order(other).await.unwrap(), Some(last), "the newest claim of the order");
    assert_eq!(store.latest_for_order(order).await.unwrap().map(|c| c.id), Some(first.id));
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_fifty_concurrent_claims_on_one_order_exactly_one_is_stored(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = claim::store::open(&db);
    let order = Uuid::now_v7();
    let tasks = (0..50).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let c = new_claim(order, Uuid::now_v7());
            insert(&store, &c).await.map(|()| c.id)
        })
    });
    let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    let won: Vec<Uuid> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    assert_eq!(won.len(), 1, "exactly one claim wins: {results:?}");
    assert!(
        results.iter().all(|r| r.is_ok() || matches!(r, Err(ClaimError::AlreadyClaimed))),
        "every loser is told the order is claimed: {results:?}"
    );
    assert_eq!(store.latest_for_order(order).await.unwrap().map(|c| c.id), Some(won[0]));
    let events = log(&db).await;
    assert_eq!(events.len(), 1, "one event, the winner's");
    assert_eq!(events[0].aggregate_id, won[0]);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn modify_writes_the_change_and_its_event_or_nothing(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = claim::store::open(&db);
    let mut c = new_claim(Uuid::now_v7(), Uuid::now_v7());
    c.claimed_at -= time::Duration::hours(1);
    c.updated_at = c.claimed_at;
    insert(&store, &c).await.unwrap();

    let unknown = store.modify(Uuid::now_v7(), &ctx(), process()).await;
    assert!(matches!(unknown, Err(ClaimError::NotFound)), "{unknown:?}");

    let ctx1 = ctx();
    let processed = store.modify(c.id, &ctx1, process()).await.unwrap();
    assert_eq!((processed.status, processed.version), (ClaimStatus::Processed, 2));
    assert!(processed.processed_at.is_some_and(|p| p > c.claimed_at));
    assert!(processed.updated_at > c.updated_at);
    assert_eq!(processed.claimed_at, c.claimed_at);
    assert_eq!(store.get(c.id).await.unwrap(), Some(processed.clone()), "processed_at round-trips too");
    let events = log(&db).await;
    assert_eq!(events.len(), 2);
    assert_event(&events[1], &event(&processed, "claim.processed"), &ctx1);

    let refused = store.modify(c.id, &ctx(), fail("too late")).await;
    assert!(matches!(refused, Err(ClaimError::NotPending("processed"))), "{refused:?}");
    assert_eq!(
        (store.get(c.id).await.unwrap(), log(&db).await.len()),
        (Some(processed), 2),
        "a refusal writes nothing"
    );

    let other = new_claim(Uuid::now_v7(), Uuid::now_v7());
    insert(&store, &other).await.unwrap();
    let failed = store.modify(other.id, &ctx(), fail("the supply is paused: ünïcödé")).await.unwrap();
    assert_eq!((failed.status, failed.version), (ClaimStatus::Failed, 2));
    assert_eq!(store.get(other.id).await.unwrap(), Some(failed.clone()));
    assert_eq!(failed.failure_reason.as_deref(), Some("the supply is paused: ünïcödé"));
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn list_ids_filters_and_pages_newest_first_and_get_many_skips_unknown_ids(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = claim::store::open(&db);
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let a1 = new_claim(Uuid::now_v7(), a);
    let b1 = new_claim(Uuid::now_v7(), b);
    let a2 = new_claim(Uuid::now_v7(), a);
    let a3 = new_claim(Uuid::now_v7(), a);
    for c in [&a1, &b1, &a2, &a3] {
        insert(&store, c).await.unwrap();
    }
    let a2 = store.modify(a2.id, &ctx(), fail("x")).await.unwrap();
    let list = |f: ClaimFilter| {
        let store = store.clone();
        async move { store.list_ids(&f).await.unwrap() }
    };
    let all = ClaimFilter { limit: 50, ..Default::default() };
    assert_eq!(list(all.clone()).await, [a3.id, a2.id, b1.id, a1.id], "every claim, newest first");
    let of_a = ClaimFilter { user_id: Some(a), ..all.clone() };
    assert_eq!(list(of_a.clone()).await, [a3.id, a2.id, a1.id]);
    assert_eq!(list(ClaimFilter { status: Some(ClaimStatus::Pending), ..of_a.clone() }).await, [a3.id, a1.id]);
    assert_eq!(list(ClaimFilter { status: Some(ClaimStatus::Failed), ..all.clone() }).await, [a2.id]);
    assert_eq!(list(ClaimFilter { limit: 2, ..of_a.clone() }).await, [a3.id, a2.id]);
    assert_eq!(list(ClaimFilter { limit: 2, before: Some(a2.id), ..of_a }).await, [a1.id]);

    let mut got = store.get_many(vec![a2.id, Uuid::now_v7(), b1.id]).await.unwrap();
    got.sort_by_key(|c| c.id);
    assert_eq!(got, [b1, a2]);
    assert!(store.get_many(vec![]).await.unwrap().is_empty());
}
