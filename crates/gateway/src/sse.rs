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

/// Incremental parser: feed bytes, take complete events.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    current: Event,
    has_data: bool,
}

impl Parser {
    /// Feeds a chunk and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if self.has_data || !self.current.event.is_empty() {
                    out.push(std::mem::take(&mut self.current));
                }
                self.current = Event::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()),
                None => (line.to_string(), String::new()),
            };
            match field.as_str() {
                "event" => self.current.event = value,
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(&value);
                    self.has_data = true;
                }
                "id" => self.current.id = Some(value),
                _ => {}
            }
        }
        out
    }
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
    fn parses_events_across_chunks() {
        let mut p = Parser::default();
        assert!(p.feed(b"event: endpoint\r\ndata: /messages?sess").is_empty());
        let evs = p.feed(b"ionId=1\r\n\r\n: comment\n\ndata: {\"a\":1}\ndata: x\nid: 5\n\n");
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].event, "endpoint");
        assert_eq!(evs[0].data, "/messages?sessionId=1");
        assert_eq!(evs[1].data, "{\"a\":1}\nx");
        assert_eq!(evs[1].id.as_deref(), Some("5"));
    }

    #[test]
    fn encodes_round_trip() {
        let mut p = Parser::default();
        let evs = p.feed(&encode(Some("3"), "{\"x\":1}"));
        assert_eq!(
            evs,
            vec![Event { event: "message".into(), data: "{\"x\":1}".into(), id: Some("3".into()) }]
        );
    }
}
