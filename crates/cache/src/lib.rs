//! Cache-aside (DESIGN D5): a shared cache when configured (Redis, in crate `redis-backend`), an
//! in-process cache otherwise, behind one interface. Never the source of truth: every failure is a miss, every miss reads the database.
//!
//! - Concurrent misses for one key load once (single-flight).
//! - A missing entity is remembered briefly (negative caching), so 404 storms do not reach the database.
//! - A shared backend bounds every call with a timeout; repeated failures open a circuit breaker, and while it is open
//!   the cache is skipped (reads go to the database, writes still invalidate when they can).
//! - Invalidation deletes now and once more shortly after, which closes the cache-aside race where a
//!   reader that loaded before a commit stores the old value after the writer's delete.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use events::{EventEnvelope, EventHandler};
pub use storage::replica::CacheUse;

/// An entity's cache key from its id, and its id.
pub type KeyOf<T> = (fn(uuid::Uuid) -> String, fn(&T) -> uuid::Uuid);

/// TTL of single entities (`supply:{id}`, `order:{id}`, `claim:{id}`, ...).
pub const ENTITY_TTL: Duration = Duration::from_secs(3600);
/// How long "not found" is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// The marker stored for "not found".
const NEGATIVE: &[u8] = b"\x00absent";
/// A delete repeated this long after the first closes the stale-set race.
const SECOND_DELETE: Duration = Duration::from_millis(500);

#[derive(Clone)]
struct Entry {
    bytes: Arc<[u8]>,
    ttl: Duration,
}

struct EntryExpiry;

impl moka::Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _key: &String, value: &Entry, _created_at: std::time::Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

enum Backend {
    Local(moka::future::Cache<String, Entry>),
    Shared(Box<dyn SharedBackend>),
    /// Every read goes to the database (for comparisons and for debugging a suspected stale cache).
    Disabled,
}

/// A cache that every instance shares (Redis): byte values under string keys with a TTL. Each call
/// is bounded by the backend's own timeout; a failure is a miss, never an error for the caller.
#[async_trait::async_trait]
pub trait SharedBackend: Send + Sync {
    /// The values of `keys`, in order (`None` for a miss).
    async fn get_many(&self, keys: &[String]) -> anyhow::Result<Vec<Option<Vec<u8>>>>;
    async fn set_many(&self, entries: &[(String, Arc<[u8]>)], ttl: Duration) -> anyhow::Result<()>;
    async fn delete(&self, keys: &[String]) -> anyhow::Result<()>;
    /// A round trip, for readiness.
    async fn ping(&self) -> anyhow::Result<()>;
}

/// Consecutive failures before the breaker opens, and how long it stays open.
const BREAKER_THRESHOLD: u32 = 5;
const BREAKER_OPEN_FOR: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Breaker {
    failures: AtomicU32,
    open_until: Mutex<Option<Instant>>,
}

impl Breaker {
    /// Closed, or open long enough that one probe may go through (half-open).
    fn allow(&self) -> bool {
        let mut open = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        match *open {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                // Half-open: let this call probe; re-arm so concurrent calls keep skipping.
                *open = Some(Instant::now() + BREAKER_OPEN_FOR);
                true
            }
            None => true,
        }
    }

    fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        let mut open = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        if open.take().is_some() {
            tracing::info!("cache circuit breaker closed: Redis answers again");
            metrics::gauge!("cache_breaker_open").set(0.0);
        }
    }

    fn failure(&self, error: &anyhow::Error) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= BREAKER_THRESHOLD {
            let mut open = self.open_until.lock().unwrap_or_else(|p| p.into_inner());
            if open.is_none() {
                tracing::warn!(error = format!("{error:#}"), "cache circuit breaker open: reading from the database");
                metrics::gauge!("cache_breaker_open").set(1.0);
            }
            *open = Some(Instant::now() + BREAKER_OPEN_FOR);
        }
    }
}

type Flight = Arc<OnceCell<Option<Arc<[u8]>>>>;

/// The process's cache.
pub struct Cache {
    backend: Backend,
    breaker: Breaker,
    flights: Mutex<HashMap<String, Flight>>,
    /// Invalidation generations, striped by key hash. A loader that read the database while its
    /// key's stripe moved may hold a value older than a commit it did not see: it does not store it
    /// (or removes what it stored).
    generations: Box<[std::sync::atomic::AtomicU64]>,
}

const STRIPES: usize = 1024;

fn stripes() -> Box<[std::sync::atomic::AtomicU64]> {
    (0..STRIPES).map(|_| std::sync::atomic::AtomicU64::new(0)).collect()
}

impl Cache {
    /// The in-process cache (moka), bounded to `capacity` entries.
    pub fn local(capacity: u64) -> Arc<Self> {
        let cache = moka::future::Cache::builder().max_capacity(capacity).expire_after(EntryExpiry).build();
        Arc::new(Self {
            backend: Backend::Local(cache),
            breaker: Breaker::default(),
            flights: Mutex::default(),
            generations: stripes(),
        })
    }

    /// A shared backend (Redis); a backend that is down at start only makes reads slower.
    pub fn shared(backend: Box<dyn SharedBackend>) -> Arc<Self> {
        // Exported from the start, so "closed" is a value and not a missing series.
        metrics::gauge!("cache_breaker_open").set(0.0);
        Arc::new(Self {
            backend: Backend::Shared(backend),
            breaker: Breaker::default(),
            flights: Mutex::default(),
            generations: stripes(),
        })
    }

    /// No cache at all.
    pub fn disabled() -> Arc<Self> {
        Arc::new(Self {
            backend: Backend::Disabled,
            breaker: Breaker::default(),
            flights: Mutex::default(),
            generations: stripes(),
        })
    }

    /// `ok`, or `degraded` while the breaker is open or the shared backend does not answer a ping.
    pub async fn status(&self) -> &'static str {
        match &self.backend {
            Backend::Local(_) => "ok",
            Backend::Disabled => "disabled",
            Backend::Shared(r) => match r.ping().await {
                Ok(_) => {
                    self.breaker.success();
                    "ok"
                }
                Err(e) => {
                    self.breaker.failure(&e);
                    "degraded"
                }
            },
        }
    }

    async fn raw_get(&self, kind: &'static str, key: &str) -> Option<Arc<[u8]>> {
        let found = match &self.backend {
            Backend::Disabled => return None,
            Backend::Local(c) => Ok(c.get(key).await.map(|e| e.bytes)),
            Backend::Shared(r) => {
                if !self.breaker.allow() {
                    metrics::counter!("cache_requests_total", "kind" => kind, "result" => "skipped").increment(1);
                    return None;
                }
                match r.get_many(&[key.to_string()]).await {
                    Ok(v) => {
                        self.breaker.success();
                        Ok(v.into_iter().next().flatten().map(Arc::from))
                    }
                    Err(e) => {
                        self.breaker.failure(&e);
                        Err(e)
                    }
                }
            }
        };
        let result = match &found {
            Ok(Some(_)) => "hit",
            Ok(None) => "miss",
            Err(_) => "error",
        };
        metrics::counter!("cache_requests_total", "kind" => kind, "result" => result).increment(1);
        found.ok().flatten()
    }

    fn generation_of(&self, key: &str) -> &std::sync::atomic::AtomicU64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.generations[(h.finish() as usize) % self.generations.len()]
    }

    /// The generations of `keys` before a load, of those a load `using` may store: with
    /// `fresh_as_of`, those not invalidated after it.
    fn seen(&self, keys: &[String], using: CacheUse) -> HashMap<String, u64> {
        keys.iter()
            .map(|k| (k.clone(), self.generation_of(k).load(Ordering::SeqCst)))
            .filter(|(_, g)| using.fresh_as_of.is_none_or(|as_of| *g <= as_of))
            .collect()
    }

    /// Stores entries loaded while their keys' generations were `seen`, except those invalidated
    /// in between; an invalidation that races the store itself is caught by the check after it.
    async fn store_loaded(&self, seen: &HashMap<String, u64>, entries: Vec<(String, Arc<[u8]>)>, ttl: Duration) {
        let unchanged = |k: &String| seen.get(k).is_some_and(|g| self.generation_of(k).load(Ordering::SeqCst) == *g);
        let (fresh, stale): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| unchanged(k));
        if !stale.is_empty() {
            metrics::counter!("cache_stale_loads_total").increment(stale.len() as u64);
        }
        let keys: Vec<String> = fresh.iter().map(|(k, _)| k.clone()).collect();
        self.raw_set_many(fresh, ttl).await;
        let raced: Vec<String> = keys.into_iter().filter(|k| !unchanged(k)).collect();
        if !raced.is_empty() {
            metrics::counter!("cache_stale_loads_total").increment(raced.len() as u64);
            self.raw_delete(&raced, "stale").await;
        }
    }

    /// `source`: `write` (after a commit here), `second` (the repeat), `event` (a write elsewhere).
    async fn raw_delete(&self, keys: &[String], source: &'static str) {
        for k in keys {
            // A point of the process-wide sequence, not a count: a read from a replica compares it
            // with how far the replica is known to be (`CacheUse::fresh_as_of`).
            self.generation_of(k).fetch_max(storage::replica::invalidation_mark(), Ordering::SeqCst);
        }
        metrics::counter!("cache_invalidations_total", "source" => source).increment(1);
        match &self.backend {
            Backend::Disabled => {}
            Backend::Local(c) => {
                for k in keys {
                    c.invalidate(k).await;
                }
            }
            Backend::Shared(r) => {
                // Deletes are tried even with the breaker open: a stale entry is worse than a slow write.
                match r.delete(keys).await {
                    Ok(_) => self.breaker.success(),
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), keys = ?keys, "cache invalidation failed; entries expire by TTL");
                        self.breaker.failure(&e);
                    }
                }
            }
        }
    }

    /// Reads `key`, or loads it once (whatever the concurrency) and caches it; `None` is cached
    /// briefly as "not found".
    pub async fn get_or_load<T, E, F, Fut>(&self, kind: &'static str, key: String, load: F) -> Result<Option<T>, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        self.get_or_load_as(CacheUse::ALL, kind, key, load).await
    }

    /// [`Cache::get_or_load`] as a read routed to a replica may use the cache: not at all (a read
    /// that must see a write), or without storing what it loaded (from a replica that lags).
    pub async fn get_or_load_as<T, E, F, Fut>(
        &self,
        using: CacheUse,
        kind: &'static str,
        key: String,
        load: F,
    ) -> Result<Option<T>, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        if matches!(self.backend, Backend::Disabled) || !using.read {
            return load().await;
        }
        if let Some(bytes) = self.raw_get(kind, &key).await {
            if &*bytes == NEGATIVE {
                return Ok(None);
            }
            if let Ok(v) = serde_json::from_slice(&bytes) {
                return Ok(Some(v));
            }
        }
        if !using.store {
            return load().await;
        }
        // Loads from a replica fly apart from the primary's: a read that must see the primary (a
        // change's pre-check) never takes a replica's answer.
        let flight_key = if using.fresh_as_of.is_some() { format!("{key}\0replica") } else { key.clone() };
        let flight: Flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            flights.entry(flight_key.clone()).or_default().clone()
        };
        let loaded = flight
            .get_or_try_init(|| async {
                let seen = self.seen(std::slice::from_ref(&key), using);
                let value = load().await?;
                metrics::counter!("cache_loads_total", "kind" => kind).increment(1);
                let (bytes, ttl): (Arc<[u8]>, Duration) = match &value {
                    Some(v) => (Arc::from(serde_json::to_vec(v).unwrap_or_default()), ENTITY_TTL),
                    None => (Arc::from(NEGATIVE), NEGATIVE_TTL),
                };
                self.store_loaded(&seen, vec![(key.clone(), bytes.clone())], ttl).await;
                Ok::<_, E>(value.map(|_| bytes))
            })
            .await
            .cloned();
        {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            if flights.get(&flight_key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                flights.remove(&flight_key);
            }
        }
        match loaded? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            None => Ok(None),
        }
    }

    async fn raw_get_many(&self, kind: &'static str, keys: &[String]) -> Vec<Option<Arc<[u8]>>> {
        let found: Vec<Option<Arc<[u8]>>> = match &self.backend {
            Backend::Disabled => return vec![None; keys.len()],
            Backend::Local(c) => {
                let mut out = Vec::with_capacity(keys.len());
                for k in keys {
                    out.push(c.get(k).await.map(|e| e.bytes));
                }
                out
            }
            Backend::Shared(r) => {
                if !self.breaker.allow() {
                    metrics::counter!("cache_requests_total", "kind" => kind, "result" => "skipped")
                        .increment(keys.len() as u64);
                    return vec![None; keys.len()];
                }
                match r.get_many(keys).await {
                    Ok(v) => {
                        self.breaker.success();
                        v.into_iter().map(|b| b.map(Arc::from)).collect()
                    }
                    Err(e) => {
                        self.breaker.failure(&e);
                        metrics::counter!("cache_requests_total", "kind" => kind, "result" => "error")
                            .increment(keys.len() as u64);
                        return vec![None; keys.len()];
                    }
                }
            }
        };
        let hits = found.iter().filter(|f| f.is_some()).count() as u64;
        metrics::counter!("cache_requests_total", "kind" => kind, "result" => "hit").increment(hits);
        metrics::counter!("cache_requests_total", "kind" => kind, "result" => "miss")
            .increment(keys.len() as u64 - hits);
        found
    }

    async fn raw_set_many(&self, entries: Vec<(String, Arc<[u8]>)>, ttl: Duration) {
        match &self.backend {
            Backend::Disabled => {}
            Backend::Local(c) => {
                for (k, bytes) in entries {
                    c.insert(k, Entry { bytes, ttl }).await;
                }
            }
            Backend::Shared(r) => {
                if entries.is_empty() || !self.breaker.allow() {
                    return;
                }
                match r.set_many(&entries, ttl).await {
                    Ok(()) => self.breaker.success(),
                    Err(e) => self.breaker.failure(&e),
                }
            }
        }
    }

    /// Entities by id, in the order of `ids`: one multi-get, then one `load` for the misses (whose
    /// results are cached). Ids that no longer exist are left out.
    pub async fn get_many_or_load<T, E, F, Fut>(
        &self,
        kind: &'static str,
        ids: &[uuid::Uuid],
        key_of: fn(uuid::Uuid) -> String,
        id_of: fn(&T) -> uuid::Uuid,
        load: F,
    ) -> Result<Vec<T>, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Vec<uuid::Uuid>) -> Fut,
        Fut: Future<Output = Result<Vec<T>, E>>,
    {
        self.get_many_or_load_as(CacheUse::ALL, kind, ids, (key_of, id_of), load).await
    }

    /// [`Cache::get_many_or_load`] with a [`CacheUse`], as [`Cache::get_or_load_as`].
    pub async fn get_many_or_load_as<T, E, F, Fut>(
        &self,
        using: CacheUse,
        kind: &'static str,
        ids: &[uuid::Uuid],
        (key_of, id_of): KeyOf<T>,
        load: F,
    ) -> Result<Vec<T>, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Vec<uuid::Uuid>) -> Fut,
        Fut: Future<Output = Result<Vec<T>, E>>,
    {
        let keys: Vec<String> = ids.iter().map(|id| key_of(*id)).collect();
        let cached = if using.read { self.raw_get_many(kind, &keys).await } else { vec![None; keys.len()] };
        let mut found: HashMap<uuid::Uuid, T> = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for (id, bytes) in ids.iter().zip(cached) {
            match bytes.filter(|b| &**b != NEGATIVE).and_then(|b| serde_json::from_slice::<T>(&b).ok()) {
                Some(v) => {
                    found.insert(*id, v);
                }
                None => missing.push(*id),
            }
        }
        if !missing.is_empty() {
            let missing_keys: Vec<String> = missing.iter().map(|id| key_of(*id)).collect();
            let seen = self.seen(&missing_keys, using);
            let loaded = load(missing).await?;
            metrics::counter!("cache_loads_total", "kind" => kind).increment(1);
            if using.store {
                let entries = loaded
                    .iter()
                    .filter_map(|v| serde_json::to_vec(v).ok().map(|b| (key_of(id_of(v)), Arc::from(b))))
                    .collect();
                self.store_loaded(&seen, entries, ENTITY_TTL).await;
            }
            for v in loaded {
                found.insert(id_of(&v), v);
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// Deletes keys after a commit, and once more shortly after.
    pub async fn invalidate(self: &Arc<Self>, keys: Vec<String>) {
        self.raw_delete(&keys, "write").await;
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(SECOND_DELETE).await;
            me.raw_delete(&keys, "second").await;
        });
    }
}

/// Which events make which keys stale, declared by the service that owns the keys: every event
/// whose type starts with `prefix` invalidates `keys(event)`.
#[derive(Clone, Copy)]
pub struct Invalidation {
    pub prefix: &'static str,
    pub keys: fn(&EventEnvelope) -> Vec<String>,
}

/// Invalidates this instance's cache from the event log, for writes made by other instances
/// (and regions). Each process has a group of its own that starts at the head of the log.
pub struct Invalidator {
    cache: Arc<Cache>,
    rules: Vec<Invalidation>,
}

impl Invalidator {
    /// The invalidator of this process, with every service's rules.
    pub fn new(cache: Arc<Cache>, rules: Vec<Invalidation>) -> Self {
        Self { cache, rules }
    }

    /// The keys an event makes stale.
    pub fn keys_for(&self, event: &EventEnvelope) -> Vec<String> {
        self.rules.iter().filter(|r| event.event_type.starts_with(r.prefix)).flat_map(|r| (r.keys)(event)).collect()
    }
}

#[async_trait::async_trait]
impl EventHandler for Invalidator {
    fn group(&self) -> &'static str {
        "cache-invalidation"
    }

    fn wants(&self, event_type: &str) -> bool {
        self.rules.iter().any(|r| event_type.starts_with(r.prefix))
    }

    async fn handle(&self, event: &EventEnvelope) -> anyhow::Result<()> {
        let keys = self.keys_for(event);
        if !keys.is_empty() {
            self.cache.raw_delete(&keys, "event").await;
        }
        Ok(())
    }

    fn concurrency(&self) -> usize {
        16
    }

    fn ephemeral(&self) -> bool {
        true
    }

    fn uses_inbox(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn a_load_from_a_replica_not_known_to_have_an_invalidated_write_is_not_stored() {
        let cache = Cache::local(100);
        let key = "order:1".to_string();
        cache.raw_delete(std::slice::from_ref(&key), "event").await;
        let invalidated = cache.generation_of(&key).load(Ordering::SeqCst);
        let load = |v: u32| async move { Ok::<_, ()>(Some(v)) };
        let behind = CacheUse { read: true, store: true, fresh_as_of: Some(invalidated - 1) };
        assert_eq!(cache.get_or_load_as(behind, "order", key.clone(), || load(1)).await, Ok(Some(1)));
        // Not stored: the next read loads again. A replica known to be past the invalidation is.
        let past = CacheUse { read: true, store: true, fresh_as_of: Some(invalidated) };
        assert_eq!(cache.get_or_load_as(past, "order", key.clone(), || load(2)).await, Ok(Some(2)));
        assert_eq!(cache.get_or_load("order", key.clone(), || load(3)).await, Ok(Some(2)));
        // The same for lists.
        let id = uuid::Uuid::now_v7();
        let key_of = |id: uuid::Uuid| format!("order:{id}");
        cache.raw_delete(&[key_of(id)], "event").await;
        let invalidated = cache.generation_of(&key_of(id)).load(Ordering::SeqCst);
        let behind = CacheUse { fresh_as_of: Some(invalidated - 1), ..behind };
        let many = |v: u32| async move { Ok::<_, ()>(vec![(id, v)]) };
        let ids = [id];
        let got = cache.get_many_or_load_as(behind, "order", &ids, (key_of, |e: &(uuid::Uuid, u32)| e.0), |_| many(1));
        assert_eq!(got.await, Ok(vec![(id, 1)]));
        let got = cache.get_many_or_load("order", &ids, key_of, |e: &(uuid::Uuid, u32)| e.0, |_| many(2));
        assert_eq!(got.await, Ok(vec![(id, 2)]), "the load from behind was not stored");
    }

    #[tokio::test]
    async fn concurrent_misses_load_once_and_absence_is_remembered() {
        let cache = Cache::local(1000);
        let (loads, started) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        // The load holds until every caller has started: nothing is cached before it finishes, so
        // every caller overlaps it.
        let (open, gate) = tokio::sync::watch::channel(false);
        let callers: Vec<_> = (0..200)
            .map(|_| {
                let (cache, loads, started, mut gate) = (cache.clone(), loads.clone(), started.clone(), gate.clone());
                tokio::spawn(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    cache
                        .get_or_load("t", "k".into(), || async move {
                            loads.fetch_add(1, Ordering::SeqCst);
                            let _ = gate.wait_for(|open| *open).await;
                            Ok::<_, ()>(Some(42u32))
                        })
                        .await
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while started.load(Ordering::SeqCst) < 200 {
            assert!(Instant::now() < deadline, "callers did not start");
            tokio::task::yield_now().await;
        }
        let _ = open.send(true);
        let mut results = Vec::new();
        for c in callers {
            results.push(c.await.unwrap_or(Err(())));
        }
        assert!(results.iter().all(|r| *r == Ok(Some(42))));
        assert_eq!(loads.load(Ordering::SeqCst), 1);

        let absent = || async { Ok::<Option<u32>, ()>(None) };
        assert_eq!(cache.get_or_load("t", "gone".into(), absent).await, Ok(None));
        let never = || async { Ok::<Option<u32>, ()>(Some(1)) };
        assert_eq!(cache.get_or_load("t", "gone".into(), never).await, Ok(None), "absence is cached");
        cache.invalidate(vec!["gone".into()]).await;
        assert_eq!(cache.get_or_load("t", "gone".into(), never).await, Ok(Some(1)));
    }

    #[tokio::test]
    async fn a_load_that_raced_an_invalidation_is_not_cached() {
        let cache = Cache::local(100);
        let writer = cache.clone();
        // The loader reads the database, then a writer commits and invalidates before it stores.
        let read = cache
            .get_or_load("t", "k".into(), || async move {
                writer.invalidate(vec!["k".into()]).await;
                Ok::<_, ()>(Some(1u32))
            })
            .await;
        assert_eq!(read, Ok(Some(1)));
        let next = cache.get_or_load("t", "k".into(), || async { Ok::<_, ()>(Some(2u32)) }).await;
        assert_eq!(next, Ok(Some(2)), "the value read before the commit was not kept");
        // The same for lists.
        let writer = cache.clone();
        let ids = [uuid::Uuid::now_v7()];
        let key_of = |id: uuid::Uuid| format!("e:{id}");
        let listed = cache
            .get_many_or_load(
                "t",
                &ids,
                key_of,
                |e: &(uuid::Uuid, u32)| e.0,
                |_| async move {
                    writer.invalidate(vec![key_of(ids[0])]).await;
                    Ok::<_, ()>(vec![(ids[0], 1u32)])
                },
            )
            .await;
        assert_eq!(listed, Ok(vec![(ids[0], 1)]));
        let again = cache
            .get_many_or_load(
                "t",
                &ids,
                key_of,
                |e: &(uuid::Uuid, u32)| e.0,
                |_| async move { Ok::<_, ()>(vec![(ids[0], 2u32)]) },
            )
            .await;
        assert_eq!(again, Ok(vec![(ids[0], 2)]));
    }

    #[test]
    fn breaker_opens_after_repeated_failures() {
        let b = Breaker::default();
        let e = anyhow::anyhow!("down");
        for _ in 0..BREAKER_THRESHOLD {
            assert!(b.allow());
            b.failure(&e);
        }
        assert!(!b.allow());
        b.success();
        assert!(b.allow());
    }
}
