//! The replay cache: completed responses by scope, answered without touching the store.
//!
//! Invariants:
//! - A completed record never changes until it expires, so a cached copy is always the
//!   stored response; serving it is exactly a replay from the store.
//! - An entry lives no longer than its record still counts, measured from the moment it
//!   was read (the store says how long is left on the store's clock), so a node whose
//!   clock is skewed never serves a record past its expiry.
//! - The cache is bounded by bytes (a weigher on body, fingerprint and `Location`), and a
//!   response larger than 1/16 of the budget is never cached, so a few large bodies
//!   cannot evict everything else. Eviction is moka's (TinyLFU admission, LRU eviction).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::sync::Cache;
use moka::Expiry;

use crate::key::Scope;

/// A completed response as the cache keeps it.
#[derive(Debug)]
pub(crate) struct Cached {
    /// Fingerprint of the request that executed.
    pub(crate) fingerprint: String,
    /// The stored body.
    pub(crate) body: Bytes,
    /// The stored `Location`.
    pub(crate) location: Option<String>,
    /// How long the record still counted when it was cached.
    pub(crate) remaining: Duration,
}

impl Cached {
    fn weight(&self) -> usize {
        self.body.len()
            + self.fingerprint.len()
            + self.location.as_ref().map_or(0, String::len)
            + 128
    }
}

struct UntilExpiry;

impl Expiry<Scope, Arc<Cached>> for UntilExpiry {
    fn expire_after_create(&self, _: &Scope, value: &Arc<Cached>, _: Instant) -> Option<Duration> {
        Some(value.remaining)
    }
}

/// Completed responses by scope, bounded by bytes.
pub(crate) struct ReplayCache {
    entries: Cache<Scope, Arc<Cached>>,
    largest: usize,
}

impl ReplayCache {
    /// A cache holding at most `budget` bytes of responses.
    pub(crate) fn new(budget: usize) -> Self {
        let entries = Cache::builder()
            .max_capacity(budget as u64)
            .weigher(|_: &Scope, v: &Arc<Cached>| u32::try_from(v.weight()).unwrap_or(u32::MAX))
            .expire_after(UntilExpiry)
            .build();
        Self {
            entries,
            largest: budget / 16,
        }
    }

    /// The response of `scope`, while its record counts.
    pub(crate) fn get(&self, scope: &Scope) -> Option<Arc<Cached>> {
        self.entries.get(scope)
    }

    /// Keeps `value` for `scope` (unless it is too large to be worth its room).
    pub(crate) fn put(&self, scope: Scope, value: Arc<Cached>) {
        if value.weight() <= self.largest && !value.remaining.is_zero() {
            self.entries.insert(scope, value);
        }
    }

    #[cfg(test)]
    fn weighed(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::IdempotencyKey;

    fn scope(k: &str) -> Scope {
        Scope::new(
            "tenant",
            "t",
            "op",
            IdempotencyKey::parse(k.as_bytes()).expect("key"),
        )
    }

    fn entry(len: usize, remaining: Duration) -> Arc<Cached> {
        Arc::new(Cached {
            fingerprint: String::new(),
            body: Bytes::from(vec![b'x'; len]),
            location: None,
            remaining,
        })
    }

    #[test]
    fn the_cache_stays_within_its_byte_budget() {
        let cache = ReplayCache::new(16 * 1000);
        for i in 0..100 {
            cache.put(scope(&format!("k{i}")), entry(800, Duration::from_secs(60)));
        }
        assert!(cache.weighed() <= 16 * 1000, "{}", cache.weighed());
        cache.put(scope("huge"), entry(2000, Duration::from_secs(60)));
        assert!(
            cache.get(&scope("huge")).is_none(),
            "oversized responses are not cached"
        );
    }

    #[test]
    fn an_entry_is_not_served_after_its_record_expires() {
        let cache = ReplayCache::new(1 << 20);
        cache.put(scope("short"), entry(10, Duration::from_millis(50)));
        assert!(cache.get(&scope("short")).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(cache.get(&scope("short")).is_none());
        cache.put(scope("gone"), entry(10, Duration::ZERO));
        assert!(cache.get(&scope("gone")).is_none());
    }
}
