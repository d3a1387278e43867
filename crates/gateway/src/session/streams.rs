//! The session's resumable SSE streams to the client (MCP resumability, 2025-03-26 on;
//! priming events from 2025-11-25).
//!
//! Every event the gateway sends on an SSE stream (a forwarded request's POST stream, or the
//! session's GET stream) is first appended to that stream's [`StreamLog`]: a bounded window
//! of recent events with ids `<stream>-<seq>`. The client's connection reads the log. A
//! client that lost the connection sends `GET` with `Last-Event-ID`; it gets the events after
//! that id from the log, then whatever follows, on the new connection.
//!
//! The log lives on the replica that produces the events. When a stream loses its last
//! reader before it ends and the session store is shared (Redis), a spiller copies the
//! window, and every later event, to the store ([`SessionStore::append_events`]), so a sibling
//! replica (behind a balancer, or after this one shut down) can replay it
//! ([`SessionStore::load_events`]). Nothing touches the store while the client is connected:
//! the hot path pays a lock and a notify, not a Redis round trip.
//!
//! Stream ids carry their kind: `p…` for a POST stream (ends after its response), `g…` for a
//! GET stream (ends when the client goes or the session ends).

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::store::{SessionStore, StoredEvent};

/// Events kept per stream (locally and in the store).
pub const WINDOW: usize = 256;
/// How long a stream stays resumable after it ended or lost its client (also the TTL of its
/// events in the store).
pub const KEEP: Duration = Duration::from_secs(300);
/// The reconnection delay sent to clients in the priming event's `retry` field.
pub const RETRY: Duration = Duration::from_millis(500);

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// The response stream of one forwarded request.
    Post,
    /// The session's stream of server-initiated messages.
    Get,
}

impl StreamKind {
    fn tag(self) -> char {
        match self {
            Self::Post => 'p',
            Self::Get => 'g',
        }
    }
}

/// A parsed `Last-Event-ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    /// The stream id (`p…` / `g…`).
    pub stream: String,
    /// The kind, from the id's first letter.
    pub kind: StreamKind,
    /// The last event the client has.
    pub seq: u64,
}

/// Parses an event id the gateway issued; None for anything else.
pub fn parse_event_id(id: &str) -> Option<EventRef> {
    let (stream, seq) = id.split_once('-')?;
    let kind = match stream.as_bytes().first()? {
        b'p' => StreamKind::Post,
        b'g' => StreamKind::Get,
        _ => return None,
    };
    let hex = &stream[1..];
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(EventRef { stream: stream.to_owned(), kind, seq: seq.parse().ok()? })
}

/// One event of a stream: its sequence number and JSON text (empty for the priming event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the stream (the priming event is 0).
    pub seq: u64,
    /// The JSON-RPC message, serialized; empty for a priming event.
    pub data: Arc<str>,
}

#[derive(Debug, Default)]
struct LogState {
    next: u64,
    events: VecDeque<Event>,
    /// No more events will come (a POST stream's response was appended).
    finished: bool,
    /// The stream was ended by the gateway (session over, shutdown, replaced GET stream).
    closed: bool,
    readers: usize,
    spilling: bool,
    ended_at: Option<Instant>,
}

/// The events of one stream, with its readers.
#[derive(Debug)]
pub struct StreamLog {
    /// `p…` / `g…` plus 16 hex digits.
    pub id: Arc<str>,
    /// What the stream carries.
    pub kind: StreamKind,
    state: Mutex<LogState>,
    changed: tokio::sync::Notify,
}

/// What a reader gets next.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// An event after the reader's cursor.
    Event(Event),
    /// The stream is over for this reader.
    End,
    /// Nothing yet.
    Wait,
}

/// A new POST stream, as seen by the handler deciding how to send it.
#[derive(Debug, PartialEq)]
pub enum Settled {
    /// Nothing but a priming event yet.
    Pending,
    /// The call is over: every event of the stream, its response last.
    Finished(Vec<Event>),
    /// A message came before the end (progress, a request to the client), or the stream
    /// was closed: it has to be streamed.
    Streaming,
}

impl StreamLog {
    fn new(kind: StreamKind) -> Self {
        let id = format!("{}{:016x}", kind.tag(), rand::random::<u64>());
        Self {
            id: id.into(),
            kind,
            state: Mutex::new(LogState::default()),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// The id of event `seq` of this stream.
    pub fn event_id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.id)
    }

    /// Appends an event (JSON text; empty for a priming event) and returns its sequence
    /// number. The oldest event leaves the window when it is full.
    pub fn push(&self, data: Arc<str>) -> u64 {
        let seq = {
            let mut st = self.state.lock();
            let seq = st.next;
            st.next += 1;
            if st.events.len() >= WINDOW {
                st.events.pop_front();
            }
            st.events.push_back(Event { seq, data });
            seq
        };
        self.changed.notify_waiters();
        seq
    }

    /// No more events: readers end after the last one.
    pub fn finish(&self) {
        {
            let mut st = self.state.lock();
            st.finished = true;
            st.ended_at.get_or_insert_with(Instant::now);
        }
        self.changed.notify_waiters();
    }

    /// Ends the stream for its readers now (events stay resumable for [`KEEP`]).
    pub fn close(&self) {
        {
            let mut st = self.state.lock();
            st.closed = true;
            st.ended_at.get_or_insert_with(Instant::now);
        }
        self.changed.notify_waiters();
    }

    /// The next event after `cursor` (None: from the start of the window).
    pub fn next_after(&self, cursor: Option<u64>) -> Next {
        let st = self.state.lock();
        let first = match cursor {
            None => st.events.front(),
            Some(c) => st.events.iter().find(|e| e.seq > c),
        };
        match first {
            Some(e) if !st.closed => Next::Event(e.clone()),
            _ if st.finished || st.closed => Next::End,
            _ => Next::Wait,
        }
    }

    /// A future that completes at the next change (an event, finish, close, or a reader
    /// leaving); `enable` it before checking the state it waits for.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Where a POST stream stands for a handler that may still send it whole (see
    /// [`Settled`]).
    pub fn settled(&self) -> Settled {
        let st = self.state.lock();
        if st.closed {
            Settled::Streaming
        } else if st.finished {
            Settled::Finished(st.events.iter().cloned().collect())
        } else if st.events.iter().any(|e| !e.data.is_empty()) {
            Settled::Streaming
        } else {
            Settled::Pending
        }
    }

    /// Events from `seq` on that are still in the window.
    pub fn events_from(&self, seq: u64) -> Vec<Event> {
        self.state.lock().events.iter().filter(|e| e.seq >= seq).cloned().collect()
    }

    /// Is the stream over (finished or closed)?
    pub fn is_over(&self) -> bool {
        let st = self.state.lock();
        st.finished || st.closed
    }

    /// Does a client connection read this stream now?
    pub fn has_readers(&self) -> bool {
        self.state.lock().readers > 0
    }

    fn expired(&self, now: Instant) -> bool {
        let st = self.state.lock();
        st.readers == 0 && st.ended_at.is_some_and(|t| now.duration_since(t) > KEEP)
    }
}

/// A client connection reading a [`StreamLog`]; dropping it is the client going away.
#[derive(Debug)]
pub struct Reader {
    /// The stream.
    pub log: Arc<StreamLog>,
    /// The last event delivered.
    pub cursor: Option<u64>,
    spill: Option<Spill>,
}

#[derive(Debug, Clone)]
struct Spill {
    store: Arc<dyn SessionStore>,
    session: Arc<str>,
}

impl Reader {
    /// The next event for this connection, waiting for it; None when the stream is over.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            let notified = self.log.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.log.next_after(self.cursor) {
                Next::Event(e) => {
                    self.cursor = Some(e.seq);
                    return Some(e);
                }
                Next::End => return None,
                Next::Wait => notified.await,
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let start_spill = {
            let mut st = self.log.state.lock();
            st.readers = st.readers.saturating_sub(1);
            let lost = st.readers == 0 && !st.finished;
            if lost {
                st.ended_at.get_or_insert_with(Instant::now);
            }
            let start = lost && !st.spilling && self.spill.is_some();
            if start {
                st.spilling = true;
            }
            start
        };
        // Wakes whoever feeds this stream (the GET stream's forwarder stops with its client).
        self.log.changed.notify_waiters();
        if start_spill
            && let Some(spill) = self.spill.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(spill_to_store(self.log.clone(), spill));
        }
    }
}

/// Copies the window and every later event of `log` to the store until the stream is over.
async fn spill_to_store(log: Arc<StreamLog>, spill: Spill) {
    let mut written: Option<u64> = None;
    loop {
        let notified = log.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (batch, over) = {
            let st = log.state.lock();
            let batch: Vec<StoredEvent> = st
                .events
                .iter()
                .filter(|e| written.is_none_or(|w| e.seq > w))
                .map(|e| StoredEvent { seq: e.seq, data: e.data.to_string() })
                .collect();
            (batch, st.finished || st.closed)
        };
        if !batch.is_empty() || over {
            let last = batch.last().map(|e| e.seq);
            if let Err(e) =
                spill.store.append_events(&spill.session, &log.id, &batch, over, KEEP).await
            {
                tracing::warn!(session = %spill.session, stream = %log.id, error = %e, "could not keep stream events in the store; a client resuming on another replica misses them");
                return;
            }
            if last.is_some() {
                written = last;
            }
        }
        if over {
            return;
        }
        notified.await;
    }
}

/// The streams of one session on this replica.
#[derive(Debug, Default)]
pub struct Streams {
    logs: Mutex<HashMap<Arc<str>, Arc<StreamLog>>>,
}

impl Streams {
    /// A new stream of `kind` (and forgets streams that ended more than [`KEEP`] ago).
    pub fn open(&self, kind: StreamKind) -> Arc<StreamLog> {
        let log = Arc::new(StreamLog::new(kind));
        let now = Instant::now();
        let mut logs = self.logs.lock();
        logs.retain(|_, l| !l.expired(now));
        logs.insert(log.id.clone(), log.clone());
        log
    }

    /// The stream with this id, if this replica has it.
    pub fn get(&self, id: &str) -> Option<Arc<StreamLog>> {
        self.logs.lock().get(id).cloned()
    }

    /// Forgets a stream whose client got everything.
    pub fn remove(&self, id: &str) {
        self.logs.lock().remove(id);
    }

    /// Ends every stream (the session is over).
    pub fn close_all(&self) {
        for l in self.logs.lock().drain().map(|(_, l)| l) {
            l.close();
        }
    }

    /// A reader of `log` after `cursor`. With `store` (a shared session store), the stream's
    /// events go to the store once its last reader leaves before it is over.
    pub fn reader(
        log: Arc<StreamLog>,
        cursor: Option<u64>,
        store: Option<(Arc<dyn SessionStore>, Arc<str>)>,
    ) -> Reader {
        {
            let mut st = log.state.lock();
            st.readers += 1;
            if !st.finished && !st.closed {
                st.ended_at = None;
            }
        }
        Reader { log, cursor, spill: store.map(|(store, session)| Spill { store, session }) }
    }
}

/// Events of a stream another replica kept in the store, after `seq`, and whether the stream
/// is over. Polls the store until a new event or the end appears.
#[derive(Debug)]
pub struct StoredReader {
    store: Arc<dyn SessionStore>,
    session: Arc<str>,
    stream: String,
    cursor: u64,
    pending: VecDeque<StoredEvent>,
    over: bool,
    deadline: Instant,
}

/// How often a replica looks for new events of a stream held by another replica.
pub const POLL: Duration = Duration::from_millis(100);

impl StoredReader {
    /// Reads `stream` of `session` from the store after `cursor`; None when the store has no
    /// such stream (never spilled, or expired).
    pub async fn open(
        store: Arc<dyn SessionStore>,
        session: Arc<str>,
        at: &EventRef,
    ) -> Result<Option<Self>, super::store::StoreError> {
        let Some((events, over)) = store.load_events(&session, &at.stream).await? else {
            return Ok(None);
        };
        let pending = events.into_iter().filter(|e| e.seq > at.seq).collect();
        Ok(Some(Self {
            store,
            session,
            stream: at.stream.clone(),
            cursor: at.seq,
            pending,
            over,
            deadline: Instant::now() + KEEP,
        }))
    }

    /// The next event, waiting for the producing replica; None when the stream is over (or
    /// gone from the store, or silent for [`KEEP`]).
    pub async fn next(&mut self) -> Option<StoredEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                self.cursor = e.seq;
                return Some(e);
            }
            if self.over || Instant::now() > self.deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
            match self.store.load_events(&self.session, &self.stream).await {
                Ok(Some((events, over))) => {
                    self.pending = events.into_iter().filter(|e| e.seq > self.cursor).collect();
                    self.over = over;
                }
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(session = %self.session, stream = %self.stream, error = %e, "could not read stream events from the store");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
