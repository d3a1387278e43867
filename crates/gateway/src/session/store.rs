//! The session store contract. Implementations: [`super::memory::MemoryStore`] (one replica)
//! and the Redis store (shared by replicas).

use std::time::Duration;

use super::record::SessionRecord;

/// Store failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached; the request should be retried later (HTTP 503).
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// A record could not be decoded.
    #[error("session record {id} is unreadable: {reason}")]
    Corrupt {
        /// Session id.
        id: String,
        /// Why.
        reason: String,
    },
}

/// Outcome of a membership compare-and-set.
#[derive(Debug, Clone, PartialEq)]
pub enum CasOutcome {
    /// Written; the record now has this generation.
    Updated(u64),
    /// Another writer got there first; this is the current record.
    Conflict(Box<SessionRecord>),
    /// The session no longer exists.
    Missing,
}

/// One event of a client SSE stream kept for resumption on another replica
/// ([`super::streams`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in its stream.
    pub seq: u64,
    /// The JSON-RPC message as sent (empty for a priming event).
    pub data: String,
}

/// Where session records live.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// Creates a record with a TTL.
    async fn create(
        &self,
        id: &str,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Loads a record (None when unknown or expired).
    async fn load(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Extends the TTL; false when the record is gone.
    async fn touch(&self, id: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Sets or clears the session hint of one backend (never touches membership).
    async fn set_hint(&self, id: &str, backend: &str, hint: Option<&str>)
    -> Result<(), StoreError>;
    /// Replaces the membership if the stored generation is `expected`.
    async fn cas_members(
        &self,
        id: &str,
        expected: u64,
        members: &[String],
    ) -> Result<CasOutcome, StoreError>;
    /// Removes a record; true when it existed.
    async fn delete(&self, id: &str) -> Result<bool, StoreError>;
    /// Does the record still exist (a cheap check used to notice termination elsewhere)?
    async fn exists(&self, id: &str) -> Result<bool, StoreError>;
    /// Do other replicas read this store (so stream events are worth keeping in it)?
    fn is_shared(&self) -> bool;
    /// Appends events of stream `stream` of session `id`, keeps the newest
    /// [`super::streams::WINDOW`], marks the stream over when `over`, and (re)sets their TTL.
    async fn append_events(
        &self,
        id: &str,
        stream: &str,
        events: &[StoredEvent],
        over: bool,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// The kept events of a stream in order, and whether it is over; None when the store has
    /// none (never kept, or expired).
    async fn load_events(
        &self,
        id: &str,
        stream: &str,
    ) -> Result<Option<(Vec<StoredEvent>, bool)>, StoreError>;
}
