//! `IdentityStore`: sign-in nonces (spent once, never after expiry), users upserted by address, and
//! refresh-token rotation with reuse detection, on a clock the tests move.

use rstest::rstest;
use uuid::Uuid;

use base::Clock;
use base::clock::ManualClock;
use identity::IdentityStore;
use identity::db::Rotation;
use testkit::Backend;

use crate::fresh;

/// Sessions long enough not to matter, unless a test says otherwise.
const SESSION: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

fn address() -> String {
    format!("0x{}", Uuid::new_v4().simple().to_string().to_uppercase().get(..20).unwrap().repeat(2))
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_nonce_is_spent_once_by_its_address_and_never_after_it_expired(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let clock = ManualClock::new();
    let store = IdentityStore::new(db, clock.clone());
    let (me, someone_else) = (address(), address());
    let expires = clock.now() + time::Duration::seconds(300);
    store.create_nonce("n-1", &me, "m", expires).await.unwrap();
    store.create_nonce("n-2", &me, "m", expires).await.unwrap();
    store.create_nonce("n-3", &me, "m", expires + time::Duration::seconds(1)).await.unwrap();

    assert!(!store.consume_nonce("n-1", &someone_else, "m").await.unwrap(), "another address cannot spend it");
    assert!(!store.consume_nonce("never-issued", &me, "m").await.unwrap());
    assert!(!store.consume_nonce("n-1", &me, "another text").await.unwrap(), "only with the text it was issued with");
    assert!(store.consume_nonce("n-1", &me, "m").await.unwrap(), "a live nonce is spent");
    assert!(!store.consume_nonce("n-1", &me, "m").await.unwrap(), "once");

    clock.advance(time::Duration::seconds(300));
    assert!(!store.consume_nonce("n-2", &me, "m").await.unwrap(), "expired at its expiry time");
    assert!(store.consume_nonce("n-3", &me, "m").await.unwrap(), "a nonce one second younger is still live");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_session_ends_at_its_maximum_however_often_it_rotates(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let clock = ManualClock::new();
    let store = IdentityStore::new(db, clock.clone());
    let user = store.upsert_user(&address()).await.unwrap().id;
    let fifteen_days = std::time::Duration::from_secs(15 * 86_400);
    store.insert_refresh("a", Uuid::now_v7(), user, clock.now() + time::Duration::days(30)).await.unwrap();
    clock.advance(time::Duration::days(10));
    let next = || clock.now() + time::Duration::days(30);
    assert_eq!(
        store.rotate_refresh("a", "b", next(), fifteen_days).await.unwrap(),
        Rotation::Rotated { user_id: user }
    );
    clock.advance(time::Duration::days(4));
    assert_eq!(
        store.rotate_refresh("b", "c", next(), fifteen_days).await.unwrap(),
        Rotation::Rotated { user_id: user }
    );
    clock.advance(time::Duration::days(1));
    assert_eq!(store.rotate_refresh("c", "d", next(), fifteen_days).await.unwrap(), Rotation::Expired, "day 15");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_spends_of_one_nonce_exactly_one_succeeds(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = IdentityStore::new(db, base::clock::system());
    let me = address();
    store.create_nonce("race", &me, "m", base::clock::now() + time::Duration::minutes(5)).await.unwrap();
    let tasks = (0..20).map(|_| {
        let (store, me) = (store.clone(), me.clone());
        tokio::spawn(async move { store.consume_nonce("race", &me, "m").await.unwrap() })
    });
    let spent = futures::future::join_all(tasks).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(spent, 1);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn upsert_user_is_idempotent_per_address(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let clock = ManualClock::new();
    let store = IdentityStore::new(db, clock.clone());
    let me = address();
    let first = store.upsert_user(&me).await.unwrap();
    assert_eq!((first.address.as_str(), first.created_at), (me.as_str(), clock.now()));
    clock.advance(time::Duration::days(1));
    let again = store.upsert_user(&me).await.unwrap();
    assert_eq!((again.id, again.address.as_str(), again.created_at), (first.id, me.as_str(), first.created_at));
    let other = store.upsert_user(&address()).await.unwrap();
    assert_ne!(other.id, first.id);

    let got = store.get_user(first.id).await.unwrap().expect("the user");
    assert_eq!((got.id, got.address, got.created_at), (first.id, me, first.created_at));
    assert!(store.get_user(Uuid::now_v7()).await.unwrap().is_none());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_refresh_token_rotates_once_and_its_reuse_revokes_the_family(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let clock = ManualClock::new();
    let store = IdentityStore::new(db, clock.clone());
    let user = store.upsert_user(&address()).await.unwrap().id;
    let later = || clock.now() + time::Duration::days(30);
    store.insert_refresh("t1", Uuid::now_v7(), user, later()).await.unwrap();

    assert_eq!(store.rotate_refresh("t1", "t2", later(), SESSION).await.unwrap(), Rotation::Rotated { user_id: user });
    assert_eq!(store.rotate_refresh("t2", "t3", later(), SESSION).await.unwrap(), Rotation::Rotated { user_id: user });
    assert_eq!(store.rotate_refresh("t1", "t4", later(), SESSION).await.unwrap(), Rotation::Reused, "a spent token");
    assert_eq!(
        store.rotate_refresh("t3", "t5", later(), SESSION).await.unwrap(),
        Rotation::Reused,
        "the newest was revoked"
    );
    assert_eq!(
        store.rotate_refresh("t4", "t6", later(), SESSION).await.unwrap(),
        Rotation::Unknown,
        "a reuse issues nothing"
    );
    assert_eq!(store.rotate_refresh("never-issued", "t7", later(), SESSION).await.unwrap(), Rotation::Unknown);

    // Another family of the same user is untouched; logging out revokes it.
    store.insert_refresh("u1", Uuid::now_v7(), user, later()).await.unwrap();
    assert_eq!(store.rotate_refresh("u1", "u2", later(), SESSION).await.unwrap(), Rotation::Rotated { user_id: user });
    store.revoke_family("u1").await.unwrap();
    assert_eq!(store.rotate_refresh("u2", "u3", later(), SESSION).await.unwrap(), Rotation::Reused);
    store.revoke_family("never-issued").await.unwrap();
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_expired_refresh_token_is_refused_without_revoking_its_family(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let clock = ManualClock::new();
    let store = IdentityStore::new(db, clock.clone());
    let user = store.upsert_user(&address()).await.unwrap().id;
    let family = Uuid::now_v7();
    store.insert_refresh("short", family, user, clock.now() + time::Duration::seconds(60)).await.unwrap();
    store.insert_refresh("long", family, user, clock.now() + time::Duration::days(30)).await.unwrap();
    clock.advance(time::Duration::seconds(60));
    let next = clock.now() + time::Duration::days(30);
    assert_eq!(store.rotate_refresh("short", "s2", next, SESSION).await.unwrap(), Rotation::Expired);
    assert_eq!(store.rotate_refresh("s2", "s3", next, SESSION).await.unwrap(), Rotation::Unknown, "nothing was issued");
    assert_eq!(store.rotate_refresh("long", "l2", next, SESSION).await.unwrap(), Rotation::Rotated { user_id: user });
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_rotations_of_one_token_exactly_one_succeeds(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let store = IdentityStore::new(db, base::clock::system());
    let user = store.upsert_user(&address()).await.unwrap().id;
    let expires = base::clock::now() + time::Duration::days(1);
    store.insert_refresh("shared", Uuid::now_v7(), user, expires).await.unwrap();
    let tasks = (0..20).map(|i| {
        let store = store.clone();
        tokio::spawn(
            async move { store.rotate_refresh("shared", &format!("next-{i}"), expires, SESSION).await.unwrap() },
        )
    });
    let outcomes: Vec<Rotation> = futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect();
    let rotated = outcomes.iter().filter(|o| matches!(o, Rotation::Rotated { .. })).count();
    assert_eq!(rotated, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, Rotation::Rotated { .. } | Rotation::Reused)), "{outcomes:?}");
}
