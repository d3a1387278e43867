//! In-process session store: one replica only (sessions survive idle eviction of local
//! connections, not a restart).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::record::SessionRecord;
use super::store::{CasOutcome, SessionStore, StoreError, StoredEvent};

/// Records in a map with expiry times.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<Records>,
    /// Stream events by (session, stream): events, over, expiry. One replica reads its own
    /// streams from memory, so these are kept only to honour the store contract.
    events: Mutex<HashMap<(String, String), KeptStream>>,
}

/// A stream's kept events, whether it is over, and when they expire.
type KeptStream = (Vec<StoredEvent>, bool, Instant);

/// How often expired records are swept out (reads check expiry themselves).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Records {
    map: HashMap<String, (SessionRecord, Instant)>,
    swept: Option<Instant>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut HashMap<String, (SessionRecord, Instant)>) -> T,
    ) -> Result<T, StoreError> {
        let mut records = self.records.lock();
        // A full scan at most once per SWEEP_EVERY, however many records there are (L11: it
        // once ran on every operation while the count sat on a multiple of 64).
        let now = Instant::now();
        if records.swept.is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY) {
            records.map.retain(|_, (_, exp)| *exp > now);
            records.swept = Some(now);
        }
        Ok(f(&mut records.map))
    }
}

fn live(entry: Option<&mut (SessionRecord, Instant)>) -> Option<&mut (SessionRecord, Instant)> {
    entry.filter(|(_, exp)| *exp > Instant::now())
}

#[async_trait::async_trait]
impl SessionStore for MemoryStore {
    fn is_shared(&self) -> bool {
        false
    }

    async fn append_events(
        &self,
        id: &str,
        stream: &str,
        events: &[StoredEvent],
        over: bool,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut all = self.events.lock();
        all.retain(|_, (_, _, exp)| *exp > now);
        let entry = all
            .entry((id.to_owned(), stream.to_owned()))
            .or_insert_with(|| (Vec::new(), false, now));
        entry.0.extend_from_slice(events);
        let excess = entry.0.len().saturating_sub(super::streams::WINDOW);
        entry.0.drain(..excess);
        entry.1 |= over;
        entry.2 = now + ttl;
        Ok(())
    }

    async fn load_events(
        &self,
        id: &str,
        stream: &str,
    ) -> Result<Option<(Vec<StoredEvent>, bool)>, StoreError> {
        let all = self.events.lock();
        Ok(all
            .get(&(id.to_owned(), stream.to_owned()))
            .filter(|(_, _, exp)| *exp > Instant::now())
            .map(|(events, over, _)| (events.clone(), *over)))
    }

    async fn create(
        &self,
        id: &str,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.with(|m| {
            m.insert(id.to_owned(), (record.clone(), Instant::now() + ttl));
        })
    }

    async fn load(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.with(|m| live(m.get_mut(id)).map(|(r, _)| r.clone()))
    }

    async fn touch(&self, id: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.with(|m| match live(m.get_mut(id)) {
            Some((_, exp)) => {
                *exp = Instant::now() + ttl;
                true
            }
            None => false,
        })
    }

    async fn set_hint(
        &self,
        id: &str,
        backend: &str,
        hint: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(|m| {
            if let Some((r, _)) = live(m.get_mut(id)) {
                match hint {
                    Some(h) => r.hints.insert(backend.to_owned(), h.to_owned()),
                    None => r.hints.remove(backend),
                };
            }
        })
    }

    async fn cas_members(
        &self,
        id: &str,
        expected: u64,
        members: &[String],
    ) -> Result<CasOutcome, StoreError> {
        self.with(|m| match live(m.get_mut(id)) {
            None => CasOutcome::Missing,
            Some((r, _)) if r.generation != expected => CasOutcome::Conflict(Box::new(r.clone())),
            Some((r, _)) => {
                r.generation += 1;
                r.members = members.to_vec();
                r.hints.retain(|k, _| members.contains(k));
                CasOutcome::Updated(r.generation)
            }
        })
    }

    async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        self.with(|m| m.remove(id).is_some_and(|(_, exp)| exp > Instant::now()))
    }

    async fn exists(&self, id: &str) -> Result<bool, StoreError> {
        self.with(|m| live(m.get_mut(id)).is_some())
    }
}
