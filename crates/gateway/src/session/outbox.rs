//! Delivery of server-to-client messages to the client's GET stream. Each message goes to
//! exactly one stream: a new GET stream replaces the previous one. Messages sent while no
//! stream is open are kept (bounded) and delivered when one opens.

use parking_lot::Mutex;
use std::collections::VecDeque;

use serde_json::Value;
use tokio::sync::mpsc;

const BACKLOG: usize = 64;

/// The client-bound queue of one session.
#[derive(Debug, Default)]
pub struct Outbox {
    inner: Mutex<(Option<mpsc::Sender<Value>>, VecDeque<Value>)>,
}

impl Outbox {
    /// Queues a message for the client.
    pub fn send(&self, msg: Value) {
        let mut g = self.inner.lock();
        let (tx, backlog) = &mut *g;
        if let Some(t) = tx {
            if let Err(mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m)) =
                t.try_send(msg)
            {
                if t.is_closed() {
                    *tx = None;
                }
                push(backlog, m);
            }
        } else {
            push(backlog, msg);
        }
    }

    /// Opens a new stream (closing the previous one) and returns its receiver.
    pub fn attach(&self) -> mpsc::Receiver<Value> {
        let (t, r) = mpsc::channel(256);
        {
            let mut g = self.inner.lock();
            let (tx, backlog) = &mut *g;
            while let Some(m) = backlog.pop_front() {
                if t.try_send(m).is_err() {
                    break;
                }
            }
            *tx = Some(t);
        }
        r
    }

    /// Is a client stream open right now?
    pub fn is_attached(&self) -> bool {
        self.inner.lock().0.as_ref().is_some_and(|t| !t.is_closed())
    }

    /// Ends the current stream, keeping the backlog (the session goes on; the client
    /// reconnects).
    pub fn detach(&self) {
        self.inner.lock().0 = None;
    }

    /// Closes the current stream (session ended).
    pub fn close(&self) {
        {
            let mut g = self.inner.lock();
            g.0 = None;
            g.1.clear();
        }
    }
}

fn push(backlog: &mut VecDeque<Value>, m: Value) {
    if backlog.len() >= BACKLOG {
        backlog.pop_front();
    }
    backlog.push_back(m);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backlog_is_delivered_and_new_stream_replaces_old() {
        let o = Outbox::default();
        o.send(serde_json::json!(1));
        let mut a = o.attach();
        assert_eq!(a.recv().await, Some(serde_json::json!(1)));
        let mut b = o.attach();
        o.send(serde_json::json!(2));
        assert_eq!(b.recv().await, Some(serde_json::json!(2)));
        assert_eq!(a.recv().await, None, "the replaced stream ends");
    }
}
