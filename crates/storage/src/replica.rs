//! Plain reads from the region's streaming replica (DESIGN D7), with read-your-writes.
//!
//! Every decision and every write goes to the primary; a service's plain reads (an entity by id, a
//! list) may go to a replica. A write's response carries a consistency token: the primary's WAL
//! position after the commit, with the cluster's system identifier (shared by a primary and its
//! physical replicas, kept through a promotion). A read that brings the token back is served by the
//! replica only once the replica has replayed that position (a bounded wait), else by the primary,
//! and it skips the cache, which another region may not have invalidated yet. A read without a
//! token reads the cache, then the replica, and may be stale by the replica's lag
//! (`db_replica_lag_seconds`, `db_replica_lag_bytes`). What such a read loads goes into the cache
//! only if the replica had replayed everything the primary had written at its last look (every
//! [`POLL`]), and only for keys not invalidated since that look began: an invalidation follows its
//! write's commit, so one before the look is covered by the replica, one after may not be.
//! Otherwise a lagging replica could put an old value back after the write's invalidation (here or,
//! through the events, in another region), to stay there for the entry's whole TTL. The
//! multi-region drill found exactly that with a check of "caught up" alone: 9 in 100 cross-region
//! reads kept the old version.
//!
//! A replica that does not answer sends every read to the primary until it answers again; a read
//! that fails on the replica is tried once more on the primary.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::Pool;
use tokio::sync::watch;

/// How often a replica's replay position (and the primary's) is read.
pub const POLL: Duration = Duration::from_millis(50);

/// The request and response header that carries a [`Token`].
pub const TOKEN_HEADER: &str = "x-consistency-token";

/// The most positions a token holds (one per primary cluster a process writes to).
const MAX_POSITIONS: usize = 8;

/// A cluster's WAL position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// `pg_control_system().system_identifier`: the same on a primary and its physical replicas.
    pub system: u64,
    /// A WAL position, as bytes from `0/0`.
    pub lsn: u64,
}

/// What a write hands to its client so that the client's next read sees it: where the write's
/// primaries were after its commit. Opaque to clients: `v1.` and `{system}-{lsn}` pairs in hex.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Token(Vec<Position>);

impl Token {
    /// A token as a client sent it back; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix("v1.")?;
        let positions = rest
            .split('.')
            .map(|pair| {
                let (system, lsn) = pair.split_once('-')?;
                Some(Position {
                    system: u64::from_str_radix(system, 16).ok()?,
                    lsn: u64::from_str_radix(lsn, 16).ok()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        (!positions.is_empty() && positions.len() <= MAX_POSITIONS).then_some(Self(positions))
    }

    pub fn encode(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|p| format!("{:x}-{:x}", p.system, p.lsn)).collect();
        format!("v1.{}", pairs.join("."))
    }

    /// Adds a position, keeping the furthest one per cluster.
    pub fn add(&mut self, p: Position) {
        if let Some(q) = self.0.iter_mut().find(|q| q.system == p.system) {
            q.lsn = q.lsn.max(p.lsn);
        } else if self.0.len() < MAX_POSITIONS {
            self.0.push(p);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn lsn_of(&self, system: u64) -> Option<u64> {
        self.0.iter().find(|p| p.system == system).map(|p| p.lsn)
    }
}

tokio::task_local! {
    static TOKEN: Option<Token>;
}

/// Runs `f` (a request) with the token its client sent, for the reads it makes.
pub async fn with_token<F: Future>(token: Option<Token>, f: F) -> F::Output {
    TOKEN.scope(token, f).await
}

fn current_token() -> Option<Token> {
    TOKEN.try_with(|t| t.clone()).ok().flatten()
}

/// What the last look at a replica found.
#[derive(Debug, Clone, Copy, Default)]
struct Observed {
    /// It answered.
    up: bool,
    /// How far it has replayed.
    replayed: u64,
    /// It had replayed all the primary had written just before.
    caught_up: bool,
    /// The invalidation sequence when the look began: every invalidation up to it followed a
    /// commit that the primary had, and so the caught-up replica has too.
    invalidations: u64,
}

/// A streaming replica and the primary it follows.
pub struct Replica {
    /// For metrics and logs: the services reading from it.
    name: String,
    primary: Pool,
    replica: Pool,
    /// The cluster's system identifier, once known (0 before).
    system: AtomicU64,
    observed: watch::Sender<Observed>,
    /// How long a read with a token waits for the replica to replay it.
    wait: Duration,
}

impl Replica {
    /// A replica of `primary`, watched every [`POLL`] for as long as the returned handle lives.
    pub fn start(name: &str, primary: Pool, replica: Pool, wait: Duration) -> Arc<Self> {
        let me = Arc::new(Self {
            name: name.to_string(),
            primary,
            replica,
            system: AtomicU64::new(0),
            observed: watch::Sender::new(Observed::default()),
            wait,
        });
        metrics::gauge!("db_replica_up", "replica" => me.name.clone()).set(0.0);
        tokio::spawn(watch_replica(Arc::downgrade(&me)));
        me
    }

    /// The replica's replay position, its cluster, and how long ago it replayed its last commit.
    async fn replayed(&self) -> anyhow::Result<(u64, u64, f64)> {
        let client = self.replica.get().await.context("connecting to the replica")?;
        // A replica that was promoted is a primary now: everything it has is "replayed" (the
        // primary URL, which follows a promotion, reaches the same server then).
        let row = client
            .query_one(
                "SELECT CASE WHEN pg_is_in_recovery() THEN (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8
                        ELSE (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8 END,
                    (SELECT system_identifier FROM pg_control_system()),
                    CASE WHEN pg_is_in_recovery()
                        THEN COALESCE(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) ELSE 0 END::float8",
                &[],
            )
            .await
            .context("reading the replica's replay position")?;
        Ok((row.get::<_, Option<i64>>(0).unwrap_or(0) as u64, row.get::<_, i64>(1) as u64, row.get(2)))
    }

    /// Reads the replica's replay position and, for the lag, the primary's just before. A replica
    /// of another cluster is refused (it would answer with unrelated data).
    async fn look(&self) -> anyhow::Result<Observed> {
        let invalidations = INVALIDATIONS.load(Ordering::SeqCst);
        let primary = position(&self.primary).await.ok();
        let (replayed, system, since_last_replay) = self.replayed().await?;
        let labels = [("replica", self.name.clone())];
        let caught_up = match primary {
            Some(p) if p.system != system => anyhow::bail!(
                "the read replica is not a replica of the primary: their system identifiers differ ({system:x}, {:x})",
                p.system
            ),
            Some(p) => {
                self.system.store(system, Ordering::Relaxed);
                metrics::gauge!("db_replica_lag_bytes", &labels).set(p.lsn.saturating_sub(replayed) as f64);
                replayed >= p.lsn
            }
            None => false,
        };
        // Behind the primary: the age of its last replayed commit (also when it no longer
        // receives anything, which its own receive and replay positions would not show).
        metrics::gauge!("db_replica_lag_seconds", &labels).set(if caught_up { 0.0 } else { since_last_replay });
        Ok(Observed { up: true, replayed, caught_up, invalidations })
    }

    /// Whether the replica has replayed what `token` asks for, waiting up to the bound for it.
    async fn has_replayed(&self, token: &Token) -> bool {
        let system = self.system.load(Ordering::Relaxed);
        // A token from another cluster, or before the replica was ever seen: the primary is exact.
        let Some(lsn) = token.lsn_of(system).filter(|_| system != 0) else { return false };
        let mut seen = self.observed.subscribe();
        let (up, replayed) = {
            let o = seen.borrow();
            (o.up, o.replayed)
        };
        if !up {
            return false;
        }
        if replayed >= lsn {
            return true;
        }
        let deadline = tokio::time::Instant::now() + self.wait;
        // Ask the replica now rather than wait for the next look: the write is usually replayed
        // by the time its client reads.
        if let Ok(Ok((replayed, of, _))) = tokio::time::timeout(self.wait, self.replayed()).await
            && of == system
        {
            self.observed.send_modify(|o| o.replayed = o.replayed.max(replayed));
            if replayed >= lsn {
                return true;
            }
        }
        tokio::time::timeout_at(deadline, seen.wait_for(|o| o.up && o.replayed >= lsn)).await.is_ok_and(|r| r.is_ok())
    }
}

/// The position of the primary behind `pool` now: after a write's commit, one that covers it
/// (the insert position: a commit that returned has its record inserted, whatever
/// `synchronous_commit` says).
pub async fn position(pool: &Pool) -> anyhow::Result<Position> {
    let client = pool.get().await.context("connecting to the primary")?;
    let row = client
        .query_one(
            "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8, (SELECT system_identifier FROM pg_control_system())",
            &[],
        )
        .await
        .context("reading the primary's WAL position")?;
    Ok(Position { system: row.get::<_, i64>(1) as u64, lsn: row.get::<_, i64>(0) as u64 })
}

/// Looks at the replica every [`POLL`] until its handle is dropped; logs when it stops or starts
/// answering.
async fn watch_replica(replica: Weak<Replica>) {
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_up = None;
    loop {
        ticks.tick().await;
        let Some(r) = replica.upgrade() else { return };
        let now = match tokio::time::timeout(POLL * 20, r.look()).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                if was_up != Some(false) {
                    tracing::warn!(replica = %r.name, error = format!("{e:#}"), "read replica unavailable: reads go to the primary");
                }
                Observed::default()
            }
            Err(_) => {
                if was_up != Some(false) {
                    tracing::warn!(replica = %r.name, "read replica did not answer within 1 s: reads go to the primary");
                }
                Observed::default()
            }
        };
        if now.up && was_up == Some(false) {
            tracing::info!(replica = %r.name, "read replica answers again");
        }
        was_up = Some(now.up);
        metrics::gauge!("db_replica_up", "replica" => r.name.clone()).set(if now.up { 1.0 } else { 0.0 });
        r.observed.send_replace(now);
    }
}

/// How a read uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheUse {
    /// Look in the cache first.
    pub read: bool,
    /// Store what the read loaded.
    pub store: bool,
    /// Store only the keys not invalidated after this point of [`invalidation_mark`]'s sequence:
    /// a replica known to have replayed everything the primary had at that point holds every
    /// write whose invalidation came before it, and maybe not the later ones.
    pub fresh_as_of: Option<u64>,
}

impl CacheUse {
    /// Read and store: what loads from the primary do.
    pub const ALL: Self = Self { read: true, store: true, fresh_as_of: None };
    /// Neither: a read that must see a write, which another region's cache may not have dropped yet.
    pub const NONE: Self = Self { read: false, store: false, fresh_as_of: None };
}

static INVALIDATIONS: AtomicU64 = AtomicU64::new(0);

/// The next point of the process's invalidation sequence, for a cache invalidation to record
/// (before it deletes).
pub fn invalidation_mark() -> u64 {
    INVALIDATIONS.fetch_add(1, Ordering::SeqCst) + 1
}

/// A service's stores for plain reads: the primary's, and the replica's when one is configured.
pub struct Reads<S: ?Sized> {
    primary: Arc<S>,
    replica: Option<(Arc<S>, Arc<Replica>)>,
}

impl<S: ?Sized> Reads<S> {
    /// Every read from the primary.
    pub fn primary(store: Arc<S>) -> Self {
        Self { primary: store, replica: None }
    }

    /// Plain reads from `store`, on `replica`.
    pub fn with_replica(self, store: Arc<S>, replica: Arc<Replica>) -> Self {
        Self { primary: self.primary, replica: Some((store, replica)) }
    }

    /// Where this read goes, by the request's token and the replica's state.
    pub async fn plan(&self) -> ReadPlan<'_, S> {
        let primary = ReadPlan::primary(&self.primary);
        let Some((store, replica)) = &self.replica else { return primary };
        let from_replica = |cache| ReadPlan { store: &**store, cache, fallback: Some(&*self.primary) };
        match current_token() {
            Some(token) if replica.has_replayed(&token).await => {
                from_replica(CacheUse::NONE).counted("replica", "token_replayed")
            }
            Some(_) => ReadPlan { cache: CacheUse::NONE, ..primary }.counted("primary", "token_ahead"),
            None => {
                let seen = *replica.observed.borrow();
                if seen.up {
                    let cache = CacheUse { read: true, store: seen.caught_up, fresh_as_of: Some(seen.invalidations) };
                    from_replica(cache).counted("replica", "no_token")
                } else {
                    primary.counted("primary", "replica_down")
                }
            }
        }
    }
}

/// Where one read goes and how it uses the cache.
pub struct ReadPlan<'a, S: ?Sized> {
    store: &'a S,
    pub cache: CacheUse,
    /// The primary, when `store` is the replica's.
    fallback: Option<&'a S>,
}

impl<S: ?Sized> Clone for ReadPlan<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S: ?Sized> Copy for ReadPlan<'_, S> {}

impl<'a, S: ?Sized> ReadPlan<'a, S> {
    /// From the primary, with the cache (what every read did before replicas).
    pub fn primary(store: &'a Arc<S>) -> Self {
        Self { store: &**store, cache: CacheUse::ALL, fallback: None }
    }

    fn counted(self, target: &'static str, reason: &'static str) -> Self {
        metrics::counter!("db_reads_total", "target" => target, "reason" => reason).increment(1);
        self
    }

    /// Runs `read` on the chosen store; a read that fails on the replica runs again on the primary.
    pub async fn run<T, E, F, Fut>(&self, read: F) -> Result<T, E>
    where
        F: Fn(&'a S) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        match (read(self.store).await, self.fallback) {
            (Err(e), Some(primary)) => {
                tracing::warn!(error = %e, "a read failed on the replica; reading the primary");
                metrics::counter!("db_reads_total", "target" => "primary", "reason" => "replica_failed").increment(1);
                read(primary).await
            }
            (result, _) => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_keep_the_furthest_position_per_cluster() {
        let mut t = Token::default();
        t.add(Position { system: 0x7f3a, lsn: 0x1_0000_0028 });
        t.add(Position { system: 0x7f3a, lsn: 0x28 });
        t.add(Position { system: 0x11, lsn: 5 });
        assert_eq!(t.encode(), "v1.7f3a-100000028.11-5");
        assert_eq!(Token::parse(&t.encode()), Some(t.clone()));
        assert_eq!(t.lsn_of(0x7f3a), Some(0x1_0000_0028));
        assert_eq!(t.lsn_of(0x12), None);
    }

    #[test]
    fn anything_else_is_no_token() {
        for bad in [
            "",
            "v1.",
            "v2.1-2",
            "v1.1-",
            "v1.-2",
            "v1.x-2",
            "1-2",
            "v1.1-2.",
            "v1.1-2-3",
            &format!("v1.{}", ["1-1"; 9].join(".")),
        ] {
            assert_eq!(Token::parse(bad), None, "{bad:?}");
        }
    }
}
