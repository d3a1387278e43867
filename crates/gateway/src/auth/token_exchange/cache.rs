//! The exchanged-token cache of one process (I6: never written anywhere else). No I/O here:
//! a lookup either answers (a token, or a recent failure of the same subject token) or hands
//! out the single-flight cell the caller must fill; [`Cache::settle`] stores the outcome.
//!
//! Entries are keyed by the caller's binding, what the caller's token was issued for (M2) and
//! the backend's exchange configuration. The cache is bounded: expired entries go first, then
//! the soonest to expire; requests in flight are never evicted.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::auth::outgoing::OutgoingAuthError;
use crate::clock::Clock;
use crate::metrics::ExchangeMetrics;

/// One exchanged token, as cached.
#[derive(Clone)]
pub(super) struct Issued {
    /// The header to send to the backend.
    pub(super) header: (HeaderName, HeaderValue),
    /// When the entry stops being used (before the token expires).
    pub(super) valid_until: Instant,
}

/// The single-flight cell of one exchange: every concurrent caller with the same key awaits it.
pub(super) type Flight = Arc<OnceCell<Result<Issued, OutgoingAuthError>>>;

enum Entry {
    Ready(Issued),
    /// A failed exchange, remembered only against the subject token that failed (a fresh
    /// token of the same user is tried at once).
    Failed {
        error: OutgoingAuthError,
        until: Instant,
        token: [u8; 32],
    },
    Pending(Flight),
}

/// What the issued token depends on: the user (binding), what the user's token was issued
/// for (M2: the client it was issued to, its scopes, the login session and its strength), and
/// the backend's exchange configuration. A token refresh with the same of these reuses the
/// cached token; a down-scoped token or another client's token gets its own exchange.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    /// The caller's binding (I2).
    pub(super) binding: String,
    /// [`grant_of`] the caller's claims.
    pub(super) grant: [u8; 32],
    /// Hash of the source's effective configuration.
    pub(super) source: [u8; 32],
}

/// Hash of the subject token claims that change what an exchanged token may be
/// (`azp`/`client_id`, `scope`/`scp`, `sid`, `acr`).
pub(super) fn grant_of(claims: &serde_json::Map<String, Value>) -> [u8; 32] {
    let mut h = Sha256::new();
    for name in ["azp", "client_id", "scope", "scp", "sid", "acr"] {
        h.update(name.as_bytes());
        h.update([0]);
        if let Some(v) = claims.get(name) {
            h.update(v.to_string().as_bytes());
        }
        h.update([0]);
    }
    h.finalize().into()
}

/// Hash of the subject token itself (for the negative cache; the token is never stored).
pub(super) fn token_hash(token: &SecretString) -> [u8; 32] {
    Sha256::digest(token.expose_secret().as_bytes()).into()
}

/// What a lookup found.
pub(super) enum Lookup {
    /// Answered from the cache.
    Done(Result<(HeaderName, HeaderValue), OutgoingAuthError>),
    /// Await (or fill) this cell, then [`Cache::settle`].
    Wait(Flight),
}

/// The cache shared by every source of one factory.
pub(super) struct Cache {
    map: Mutex<HashMap<Key, Entry>>,
    metrics: ExchangeMetrics,
    max_entries: usize,
    negative_ttl: Duration,
    clock: Clock,
}

impl Cache {
    /// An empty cache of at most `max_entries` entries, reading the time from `clock`.
    pub(super) fn new(
        max_entries: usize,
        negative_ttl: Duration,
        metrics: ExchangeMetrics,
        clock: Clock,
    ) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            metrics,
            max_entries: max_entries.max(1),
            negative_ttl,
            clock,
        }
    }

    /// The time source of this cache (and of the expiries its sources compute).
    pub(super) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The counters this cache updates.
    pub(super) fn metrics(&self) -> &ExchangeMetrics {
        &self.metrics
    }

    /// Entries (tokens, failures and requests in flight).
    pub(super) fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// The cached answer for `key`, or the flight to await. `token` is the hash of the
    /// caller's subject token (a cached failure only answers the token that failed).
    pub(super) fn lookup(&self, key: &Key, token: &[u8; 32]) -> Lookup {
        let m = &self.metrics;
        let now = self.clock.now();
        let mut map = self.map.lock();
        match map.get(key) {
            Some(Entry::Ready(i)) if i.valid_until > now => {
                m.cache_hits.inc();
                return Lookup::Done(Ok(i.header.clone()));
            }
            Some(Entry::Failed { error, until, token: failed })
                if *until > now && failed == token =>
            {
                m.negative_hits.inc();
                return Lookup::Done(Err(error.clone()));
            }
            Some(Entry::Pending(f)) => match f.get() {
                // In flight (or its owner went away before it finished): join it.
                None => {
                    m.cache_misses.inc();
                    return Lookup::Wait(f.clone());
                }
                // Finished, but nobody stored the result (the caller was cancelled).
                Some(Ok(i)) if i.valid_until > now => {
                    m.cache_hits.inc();
                    return Lookup::Done(Ok(i.header.clone()));
                }
                Some(_) => {}
            },
            _ => {}
        }
        m.cache_misses.inc();
        let flight: Flight = Arc::default();
        make_room(&mut map, self.max_entries, now);
        map.insert(key.clone(), Entry::Pending(flight.clone()));
        Lookup::Wait(flight)
    }

    /// Stores the outcome of `flight` under `key` (unless a newer flight replaced it).
    pub(super) fn settle(
        &self,
        key: &Key,
        token: [u8; 32],
        flight: &Flight,
        result: &Result<Issued, OutgoingAuthError>,
    ) {
        let mut map = self.map.lock();
        if let Some(Entry::Pending(f)) = map.get(key)
            && Arc::ptr_eq(f, flight)
        {
            let entry = match result {
                Ok(i) => Entry::Ready(i.clone()),
                Err(error) => Entry::Failed {
                    error: error.clone(),
                    until: self.clock.now() + self.negative_ttl,
                    token,
                },
            };
            map.insert(key.clone(), entry);
        }
    }
}

/// Makes room for one entry: expired entries first, then the soonest to expire (down to 90 %
/// of the bound). Requests in flight are never evicted.
fn make_room(map: &mut HashMap<Key, Entry>, max: usize, now: Instant) {
    if map.len() < max {
        return;
    }
    map.retain(|_, e| match e {
        Entry::Ready(i) => i.valid_until > now,
        Entry::Failed { until, .. } => *until > now,
        Entry::Pending(_) => true,
    });
    if map.len() < max {
        return;
    }
    let target = max - max / 10 - 1;
    let mut by_expiry: Vec<(Instant, Key)> = map
        .iter()
        .filter_map(|(k, e)| match e {
            Entry::Ready(i) => Some((i.valid_until, k.clone())),
            Entry::Failed { until, .. } => Some((*until, k.clone())),
            Entry::Pending(_) => None,
        })
        .collect();
    by_expiry.sort_by_key(|(t, _)| *t);
    for (_, k) in by_expiry.into_iter().take(map.len().saturating_sub(target)) {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str) -> Key {
        Key { binding: user.into(), grant: [0; 32], source: [1; 32] }
    }

    fn issued(valid_for: Duration) -> Issued {
        let header = (http::header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        Issued { header, valid_until: Instant::now() + valid_for }
    }

    /// Fills the flight of a miss with `result` and settles it.
    fn fill(c: &Cache, k: &Key, token: [u8; 32], result: Result<Issued, OutgoingAuthError>) {
        let Lookup::Wait(f) = c.lookup(k, &token) else { panic!("expected a miss") };
        assert!(f.set(result.clone()).is_ok());
        c.settle(k, token, &f, &result);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_are_used_until_valid_until_and_not_after() {
        let c = Cache::new(10, Duration::from_secs(5), ExchangeMetrics::default(), Clock::System);
        fill(&c, &key("alice"), [7; 32], Ok(issued(Duration::from_secs(60))));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(matches!(c.lookup(&key("alice"), &[7; 32]), Lookup::Done(Ok(_))));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(c.lookup(&key("alice"), &[7; 32]), Lookup::Wait(_)));
        assert_eq!((c.metrics().cache_hits.get(), c.metrics().cache_misses.get()), (1, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_answer_only_the_failed_token_and_only_briefly() {
        let c =
            Cache::new(10, Duration::from_millis(300), ExchangeMetrics::default(), Clock::System);
        let failure =
            OutgoingAuthError::Exchange { error: "invalid_grant".into(), description: None };
        fill(&c, &key("alice"), [7; 32], Err(failure));
        assert!(matches!(c.lookup(&key("alice"), &[7; 32]), Lookup::Done(Err(_))));
        assert_eq!(c.metrics().negative_hits.get(), 1);
        // A fresh token of the same user is tried at once.
        assert!(matches!(c.lookup(&key("alice"), &[8; 32]), Lookup::Wait(_)));
        let c =
            Cache::new(10, Duration::from_millis(300), ExchangeMetrics::default(), Clock::System);
        let failure =
            OutgoingAuthError::Exchange { error: "invalid_grant".into(), description: None };
        fill(&c, &key("bob"), [7; 32], Err(failure));
        tokio::time::advance(Duration::from_millis(350)).await;
        assert!(matches!(c.lookup(&key("bob"), &[7; 32]), Lookup::Wait(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_share_one_flight_and_a_stale_flight_does_not_overwrite() {
        let c = Cache::new(10, Duration::from_secs(5), ExchangeMetrics::default(), Clock::System);
        let (Lookup::Wait(a), Lookup::Wait(b)) =
            (c.lookup(&key("alice"), &[7; 32]), c.lookup(&key("alice"), &[7; 32]))
        else {
            panic!("expected two waits")
        };
        assert!(Arc::ptr_eq(&a, &b));
        // A flight that is no longer the key's pending one is not stored.
        let other: Flight = Arc::default();
        c.settle(&key("alice"), [7; 32], &other, &Ok(issued(Duration::from_secs(60))));
        assert!(matches!(c.lookup(&key("alice"), &[7; 32]), Lookup::Wait(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_bound_drops_expired_entries_then_the_soonest_to_expire() {
        let c = Cache::new(10, Duration::from_secs(5), ExchangeMetrics::default(), Clock::System);
        for i in 0..10u64 {
            fill(&c, &key(&format!("u{i}")), [7; 32], Ok(issued(Duration::from_secs(10 + i))));
        }
        fill(&c, &key("late"), [7; 32], Ok(issued(Duration::from_secs(100))));
        assert!(c.len() <= 10, "{}", c.len());
        assert!(matches!(c.lookup(&key("late"), &[7; 32]), Lookup::Done(Ok(_))));
        assert!(matches!(c.lookup(&key("u9"), &[7; 32]), Lookup::Done(Ok(_))));
        assert!(matches!(c.lookup(&key("u0"), &[7; 32]), Lookup::Wait(_)), "soonest dropped");
    }
}
