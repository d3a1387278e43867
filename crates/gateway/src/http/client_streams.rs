//! The gateway's SSE responses to clients, resumable: every event carries an id
//! (`<stream>-<seq>`), a 2025-11-25 client first gets a priming event (id, empty data,
//! `retry`), and `GET` with `Last-Event-ID` replays what followed that event — from this
//! replica's [`StreamLog`], or from the session store when another replica held the stream
//! (see [`crate::session::streams`]).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde_json::Value;

use super::AppState;
use super::error::EdgeError;
use crate::auth::Identity;
use crate::jsonrpc::{INVALID_REQUEST, RpcError};
use crate::methods::{self, Caller};
use crate::protocol;
use crate::session::Session;
use crate::session::store::{SessionStore, StoredEvent};
use crate::session::streams::{
    self, EventRef, RETRY, Reader, Settled, StoredReader, StreamKind, StreamLog, Streams,
};

type SseItem = Result<Bytes, Infallible>;

/// How often an idle GET stream carries a comment, so proxies keep it open.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// One SSE event as sent. A priming event is its id, `retry` and an explicit empty `data:`
/// line: clients built on `eventsource-parser` (the TypeScript SDK) drop an event without a
/// data line, and axum's `Event` writes none for empty data. Messages are compact JSON (no
/// raw newlines), so one `data:` line holds each.
fn sse_event(stream: &str, seq: u64, data: &str) -> Bytes {
    if data.is_empty() {
        format!("id: {stream}-{seq}\nretry: {}\ndata: \n\n", RETRY.as_millis()).into()
    } else {
        format!("id: {stream}-{seq}\nevent: message\ndata: {data}\n\n").into()
    }
}

/// An SSE response from `events`; with `keep_alive`, a comment goes out every
/// [`KEEP_ALIVE`] while the stream lasts.
fn sse_response(
    events: impl Stream<Item = SseItem> + Send + 'static,
    keep_alive: bool,
) -> Response {
    let body = if keep_alive {
        let start = tokio::time::Instant::now() + KEEP_ALIVE;
        let ticks = tokio::time::interval_at(start, KEEP_ALIVE);
        let merged =
            futures::stream::unfold((Box::pin(events), ticks), |(mut events, mut ticks)| async {
                tokio::select! {
                    item = events.next() => item.map(|i| (i, (events, ticks))),
                    _ = ticks.tick() => Some((Ok(Bytes::from_static(b":\n\n")), (events, ticks))),
                }
            });
        Body::from_stream(merged)
    } else {
        Body::from_stream(events)
    };
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response()
}

fn shared(state: &AppState, session: &Session) -> Option<(Arc<dyn SessionStore>, Arc<str>)> {
    state.manager.shared_store().map(|s| (s, session.id.clone()))
}

/// A new stream of `kind`, primed for clients of 2025-11-25 and later.
fn open(session: &Session, kind: StreamKind) -> Arc<StreamLog> {
    let log = session.streams.open(kind);
    if protocol::sends_priming_event(&session.protocol_version) {
        log.push(Arc::from(""));
    }
    log
}

/// The events of a local stream for one connection. A POST stream that was read to its end
/// is forgotten (nothing is left to resume).
fn local_events(session: Arc<Session>, reader: Reader) -> impl Stream<Item = SseItem> {
    futures::stream::unfold((session, reader), |(session, mut reader)| async move {
        match reader.next().await {
            Some(e) => {
                let item = Ok(sse_event(&reader.log.id, e.seq, &e.data));
                Some((item, (session, reader)))
            }
            None => {
                if reader.log.kind == StreamKind::Post && reader.log.is_over() {
                    session.streams.remove(&reader.log.id);
                }
                None
            }
        }
    })
}

fn stored_events(reader: StoredReader, stream: String) -> impl Stream<Item = SseItem> {
    futures::stream::unfold((reader, stream), |(mut reader, stream)| async move {
        let e = reader.next().await?;
        Some((Ok(sse_event(&stream, e.seq, &e.data)), (reader, stream)))
    })
}

/// How long a call may take and still be answered whole: the stream's events in one body
/// with a `Content-Length`, written at once. A call that is still running then, or that sends
/// anything but its response first (progress, a request to the client), is streamed as it
/// goes. A short call so costs one write and one read at each end instead of three (headers,
/// event, end of chunks), which is most of what a forwarded call adds (issue 10).
const WHOLE_WITHIN: std::time::Duration = std::time::Duration::from_millis(20);

/// Waits at most [`WHOLE_WITHIN`] for `log` to be over with nothing but its response: its
/// events then (None: stream it).
async fn whole(log: &StreamLog) -> Option<Vec<streams::Event>> {
    let deadline = tokio::time::sleep(WHOLE_WITHIN);
    tokio::pin!(deadline);
    loop {
        let notified = log.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match log.settled() {
            Settled::Finished(events) => return Some(events),
            Settled::Streaming => return None,
            Settled::Pending => {}
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = &mut deadline => return None,
        }
    }
}

/// A forwarded request answered as an SSE stream: the backend's progress notifications and
/// requests for this call, then the response (whole, when it comes at once: [`WHOLE_WITHIN`]).
/// A client disconnect does not cancel the call; the client can resume the stream with `GET`
/// + `Last-Event-ID`.
pub async fn call_stream(
    state: AppState,
    session: Arc<Session>,
    identity: Identity,
    id: Value,
    method: String,
    params: Option<Value>,
) -> Response {
    let log = open(&session, StreamKind::Post);
    let reader = Streams::reader(log.clone(), None, shared(&state, &session));
    let call_session = session.clone();
    tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(crate::backend::PROGRESS_QUEUE);
        let session = call_session;
        let caller = Caller { manager: &state.manager, session: &session, identity: &identity };
        // On the heap: the call's future is large (the whole backend request), and a task's
        // future is copied as it is spawned and started (`make bench` found a third of the
        // gateway's instructions per call in those copies).
        let mut call = Box::pin(methods::handle_request(caller, &id, &method, params, Some(tx)));
        let response = loop {
            tokio::select! {
                biased;
                Some(v) = rx.recv() => { log.push(v.to_string().into()); }
                r = &mut call => break r,
            }
        };
        while let Ok(v) = rx.try_recv() {
            log.push(v.to_string().into());
        }
        log.push(response.to_string().into());
        log.finish();
    });
    let Some(events) = whole(&reader.log).await else {
        return sse_response(local_events(session, reader), false);
    };
    let mut reader = reader;
    reader.cursor = events.last().map(|e| e.seq);
    session.streams.remove(&reader.log.id);
    let mut body = Vec::new();
    for e in &events {
        body.extend_from_slice(&sse_event(&reader.log.id, e.seq, &e.data));
    }
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response()
}

/// `GET /mcp` with `Last-Event-ID` of a POST stream: the rest of that call's stream.
pub async fn resume_call(
    state: &AppState,
    session: Arc<Session>,
    at: &EventRef,
) -> Result<Response, EdgeError> {
    if let Some(log) = session.streams.get(&at.stream) {
        let reader = Streams::reader(log, Some(at.seq), shared(state, &session));
        return Ok(sse_response(local_events(session, reader), false));
    }
    if let Some((store, sid)) = shared(state, &session)
        && let Some(r) = StoredReader::open(store, sid, at)
            .await
            .map_err(|e| state.auth.session_error(e.into()))?
    {
        tracing::info!(session = %session.id, stream = %at.stream, after = at.seq, "resuming a client stream from the store (another replica ran the call)");
        return Ok(sse_response(stored_events(r, at.stream.clone()), false));
    }
    Err(EdgeError::bad_request(
        None,
        RpcError::new(
            INVALID_REQUEST,
            "Last-Event-ID names a stream this gateway no longer has (ended, expired or never kept)",
        ),
    ))
}

/// The session's GET stream: events after `after` (when the client resumes one) from this
/// replica or the store, then server-initiated messages as they come.
pub async fn session_stream(
    state: &AppState,
    session: Arc<Session>,
    identity: Identity,
    after: Option<&EventRef>,
) -> Result<Response, EdgeError> {
    let store = shared(state, &session);
    let local = after.and_then(|a| session.streams.get(&a.stream).map(|l| (l, a.seq)));
    let mut replay: Vec<SseItem> = Vec::new();
    let (log, cursor) = match local {
        // The client comes back to a stream this replica still feeds.
        Some((log, seq)) if !log.is_over() => (log, Some(seq)),
        ended => {
            // Replay what the client missed of an ended stream (here or on another replica),
            // then go on with a new one.
            let missed = match (ended, after, &store) {
                (Some((log, seq)), _, _) => log_events(&log, seq + 1),
                (None, Some(a), Some((store, sid))) => store
                    .load_events(sid, &a.stream)
                    .await
                    .map_err(|e| state.auth.session_error(e.into()))?
                    .map(|(events, _)| events.into_iter().filter(|e| e.seq > a.seq).collect())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            if let Some(a) = after {
                replay.extend(
                    missed
                        .iter()
                        .filter(|e| !e.data.is_empty())
                        .map(|e| Ok(sse_event(&a.stream, e.seq, &e.data))),
                );
            }
            (open(&session, StreamKind::Get), None)
        }
    };
    let rx = session.outbox.attach();
    let reader = Streams::reader(log.clone(), cursor, None);
    tokio::spawn(forward_outbox(session.clone(), log, rx, store.map(|(s, _)| s)));
    // I8: member backends stream to this replica only while the client holds this stream.
    let opener = session.clone();
    tokio::spawn(async move { opener.open_backend_streams(&identity).await });
    let live = local_events(session, reader);
    Ok(sse_response(futures::stream::iter(replay).chain(live), true))
}

/// Moves the session's server-initiated messages into its GET stream while the client reads
/// it; with a shared store each one is also kept there (they are rare, unlike call streams),
/// so a sibling replica can replay them. When the client leaves, later messages wait in the
/// outbox's backlog and the backend streams opened for the client are closed (I8).
async fn forward_outbox(
    session: Arc<Session>,
    log: Arc<StreamLog>,
    mut rx: tokio::sync::mpsc::Receiver<Value>,
    store: Option<Arc<dyn SessionStore>>,
) {
    let keep = |events: Vec<StoredEvent>, over: bool| {
        let store = store.clone();
        let (sid, stream) = (session.id.clone(), log.id.clone());
        async move {
            if let Some(store) = store
                && let Err(e) =
                    store.append_events(&sid, &stream, &events, over, streams::KEEP).await
            {
                tracing::warn!(session = %sid, error = %e, "could not keep a GET stream event in the store");
            }
        }
    };
    keep(log_events(&log, 0), false).await;
    loop {
        let changed = log.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if !log.has_readers() {
            break;
        }
        tokio::select! {
            m = rx.recv() => match m {
                Some(v) => {
                    let seq = log.push(v.to_string().into());
                    keep(log_events(&log, seq), false).await;
                }
                None => {
                    // Replaced by a newer GET stream, or the session ended.
                    log.close();
                    keep(Vec::new(), true).await;
                    break;
                }
            },
            () = &mut changed => {}
        }
    }
    drop(rx);
    session.close_backend_streams_if_detached();
}

fn log_events(log: &StreamLog, from: u64) -> Vec<StoredEvent> {
    log.events_from(from)
        .into_iter()
        .map(|e| StoredEvent { seq: e.seq, data: e.data.to_string() })
        .collect()
}
