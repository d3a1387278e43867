//! Server-Sent Events: a small incremental parser (for backend streams) and an encoder (for
//! client streams).

use bytes::Bytes;

/// One SSE event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// `event:` field (empty means "message").
    pub event: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
    /// `id:` field.
    pub id: Option<String>,
}

/// Largest event (pending line plus `data` collected so far) a [`Parser`] accepts by default:
/// far above any MCP message a backend sends in practice, far below what hurts the gateway.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 32 * 1024 * 1024;

/// An event grew beyond the parser's limit (the stream cannot be trusted further).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an SSE event exceeds {limit} bytes")]
pub struct EventTooLarge {
    /// The limit in bytes.
    pub limit: usize,
}

/// Incremental parser: feed bytes, take complete events. Linear in the bytes fed (each byte
/// is scanned once and moved at most once) and bounded: an event above `max_event_bytes` is
/// an error, not an allocation.
#[derive(Debug)]
pub struct Parser {
    buf: Vec<u8>,
    /// `buf[..scanned]` holds no `\n` (where the next search starts).
    scanned: usize,
    current: Event,
    has_data: bool,
    max_event_bytes: usize,
    /// The stream's last event id (set by every `id:` field, as browsers do), for resuming it
    /// with `Last-Event-ID`.
    last_event_id: Option<String>,
    /// The reconnection delay the stream asked for (`retry:`).
    retry: Option<std::time::Duration>,
}

impl Default for Parser {
    fn default() -> Self {
        Self::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl Parser {
    /// A parser that refuses events above `max_event_bytes`.
    pub fn with_limit(max_event_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            current: Event::default(),
            has_data: false,
            max_event_bytes,
            last_event_id: None,
            retry: None,
        }
    }

    /// The last event id the stream sent, if any.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The reconnection delay the stream asked for with `retry:`, if any.
    pub fn retry(&self) -> Option<std::time::Duration> {
        self.retry
    }

    /// Forgets a partial event of a stream that ended, keeping the last event id and retry
    /// delay, so the same parser can read the resumed stream.
    pub fn next_stream(&mut self) {
        let (last_event_id, retry) = (self.last_event_id.take(), self.retry);
        *self = Self::with_limit(self.max_event_bytes);
        self.last_event_id = last_event_id;
        self.retry = retry;
    }

    /// Feeds a chunk and returns the events it completed. After an error the parser is empty
    /// again (the caller should drop the stream).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, EventTooLarge> {
        let r = self.feed_inner(chunk);
        if r.is_err() {
            *self = Self::with_limit(self.max_event_bytes);
        }
        r
    }

    fn feed_inner(&mut self, chunk: &[u8]) -> Result<Vec<Event>, EventTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.buf.get(self.scanned..).and_then(memchr_nl) {
            let end = self.scanned + offset;
            let mut line = self.buf.get(start..end).unwrap_or_default();
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.scanned = start;
            self.line(&line, &mut out)?;
        }
        self.scanned = self.buf.len();
        let pending = self.buf.len() - start;
        if pending.saturating_add(self.current.data.len()) > self.max_event_bytes {
            return Err(EventTooLarge { limit: self.max_event_bytes });
        }
        // Moves only the unfinished line (at most the bytes of this chunk plus an unfinished
        // line that was already there and did not move before).
        if start > 0 {
            self.buf.drain(..start);
            self.scanned -= start;
        }
        Ok(out)
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) -> Result<(), EventTooLarge> {
        if line.is_empty() {
            if self.has_data || !self.current.event.is_empty() {
                out.push(std::mem::take(&mut self.current));
            }
            self.current = Event::default();
            self.has_data = false;
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.current.event = value.to_owned(),
            "data" => {
                if self.current.data.len() + value.len() + 1 > self.max_event_bytes {
                    return Err(EventTooLarge { limit: self.max_event_bytes });
                }
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => {
                self.current.id = Some(value.to_owned());
                self.last_event_id = Some(value.to_owned());
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // At most a minute: a backend cannot park a call longer than its timeout anyway.
                let ms = value.parse::<u64>().unwrap_or(u64::MAX).min(60_000);
                self.retry = Some(std::time::Duration::from_millis(ms));
            }
            _ => {}
        }
        Ok(())
    }
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Encodes one `message` event carrying a JSON-RPC message.
pub fn encode(id: Option<&str>, data: &str) -> Bytes {
    let mut s = String::with_capacity(data.len() + 32);
    if let Some(id) = id {
        s.push_str("id: ");
        s.push_str(id);
        s.push('\n');
    }
    s.push_str("event: message\n");
    for line in data.split('\n') {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    Bytes::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_event_id_and_retry_survive_into_the_next_stream() {
        let mut p = Parser::default();
        let evs = p.feed(b"retry: 250\nid: a-1\ndata:\n\nid: a-2\ndata: {}\n\ndata: part").unwrap();
        assert_eq!(evs.len(), 2);
        assert_eq!(p.last_event_id(), Some("a-2"));
        assert_eq!(p.retry(), Some(std::time::Duration::from_millis(250)));
        p.next_stream();
        assert_eq!(p.last_event_id(), Some("a-2"));
        let evs = p.feed(b"data: whole\n\n").unwrap();
        assert_eq!(evs[0].data, "whole", "the partial event of the ended stream is gone");
        p.feed(b"retry: x\nretry: 99999999\nid: with\0nul\n\n").unwrap();
        assert_eq!(p.retry(), Some(std::time::Duration::from_secs(60)), "capped; junk ignored");
        assert_eq!(p.last_event_id(), Some("a-2"), "an id with NUL is ignored");
    }

    #[test]
    fn parses_events_across_chunks() {
        let mut p = Parser::default();
        assert!(p.feed(b"event: endpoint\r\ndata: /messages?sess").unwrap().is_empty());
        let evs =
            p.feed(b"ionId=1\r\n\r\n: comment\n\ndata: {\"a\":1}\ndata: x\nid: 5\n\n").unwrap();
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].event, "endpoint");
        assert_eq!(evs[0].data, "/messages?sessionId=1");
        assert_eq!(evs[1].data, "{\"a\":1}\nx");
        assert_eq!(evs[1].id.as_deref(), Some("5"));
    }

    #[test]
    fn encodes_round_trip() {
        let mut p = Parser::default();
        let evs = p.feed(&encode(Some("3"), "{\"x\":1}")).unwrap();
        assert_eq!(
            evs,
            vec![Event { event: "message".into(), data: "{\"x\":1}".into(), id: Some("3".into()) }]
        );
    }

    /// L10: 200,000 lines in one chunk, and one 8 MiB line fed in 1 KiB pieces, used to cost
    /// O(n²) (the buffer was drained per line and rescanned from its start per chunk).
    #[test]
    fn large_inputs_are_parsed_in_linear_time() {
        let start = std::time::Instant::now();
        let mut p = Parser::default();
        let many = "data: x\n\n".repeat(200_000);
        assert_eq!(p.feed(many.as_bytes()).unwrap().len(), 200_000);
        let mut p = Parser::default();
        let piece = [b'a'; 1024];
        assert!(p.feed(b"data: ").unwrap().is_empty());
        for _ in 0..8 * 1024 {
            assert!(p.feed(&piece).unwrap().is_empty());
        }
        let evs = p.feed(b"\n\n").unwrap();
        assert_eq!(evs[0].data.len(), 8 * 1024 * 1024);
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    }

    #[test]
    fn events_above_the_limit_are_refused() {
        let mut p = Parser::with_limit(100);
        // An unfinished line that grows past the limit.
        assert!(p.feed(&[b'a'; 60]).unwrap().is_empty());
        assert_eq!(p.feed(&[b'a'; 60]), Err(EventTooLarge { limit: 100 }));
        // Many short data lines of one event.
        let mut p = Parser::with_limit(100);
        let lines = "data: 0123456789\n".repeat(20);
        assert_eq!(p.feed(lines.as_bytes()), Err(EventTooLarge { limit: 100 }));
        // The parser is usable (and empty) after the error; events at the limit pass.
        let evs = p.feed(format!("data: {}\n\n", "b".repeat(90)).as_bytes()).unwrap();
        assert_eq!(evs[0].data.len(), 90);
    }

    #[test]
    fn chunking_does_not_change_the_events() {
        let text = b"event: a\r\ndata: 1\n\n: c\ndata: 2\ndata: 3\nid: 9\n\nevent: b\n\n";
        let whole = Parser::default().feed(text).unwrap();
        for split in 0..text.len() {
            let mut p = Parser::default();
            let mut evs = p.feed(&text[..split]).unwrap();
            evs.extend(p.feed(&text[split..]).unwrap());
            assert_eq!(evs, whole, "split at {split}");
        }
        assert_eq!(whole.len(), 3);
    }
}
