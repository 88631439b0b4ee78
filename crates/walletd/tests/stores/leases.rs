//! `storage::Lease`: one holder at a time, taken over only once it lapsed or was released.

use std::time::{Duration, Instant};

use rstest::rstest;

use storage::Lease;
use testkit::{Backend, wait_until};

use crate::fresh;

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn one_holder_at_a_time_until_the_lease_lapses(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let ttl = Duration::from_secs(2);
    let (a, b) = (Lease::new(db.clone(), "relay", ttl), Lease::new(db.clone(), "relay", ttl));
    assert_ne!(a.holder(), b.holder());
    assert!(a.take().await.unwrap(), "a free lease is taken");
    assert!(!b.take().await.unwrap(), "a held lease is not");
    let renewed = Instant::now();
    assert!(a.take().await.unwrap(), "its holder renews it");
    assert!(Lease::new(db.clone(), "another-job", ttl).take().await.unwrap(), "leases are per name");

    // b gets it only once a stops renewing and the lease lapses.
    assert!(wait_until(Duration::from_secs(20), || async { b.take().await.unwrap() }).await, "b never took over");
    assert!(renewed.elapsed() >= ttl, "taken over before the renewed lease lapsed");
    assert!(!a.take().await.unwrap(), "the old holder lost it");
    assert!(b.take().await.unwrap());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_released_lease_is_free_at_once_and_only_its_holder_releases_it(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    // Long enough that nothing in this test can lapse.
    let ttl = Duration::from_secs(600);
    let (a, b) = (Lease::new(db.clone(), "consumer:x", ttl), Lease::new(db.clone(), "consumer:x", ttl));
    assert!(a.take().await.unwrap());
    b.release().await.unwrap();
    assert!(!b.take().await.unwrap(), "a release by someone else frees nothing");
    a.release().await.unwrap();
    assert!(b.take().await.unwrap(), "released: taken at once");
    assert!(!a.take().await.unwrap());
}
