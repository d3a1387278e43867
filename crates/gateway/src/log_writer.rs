//! Where log lines go: stderr, written in batches by a background thread.
//!
//! Every request writes an audit line, so the cost of one line is part of every request's
//! latency. A channel-per-line writer (what `tracing-appender` does) wakes its writer thread
//! for each line: at one client `make bench` showed about a tenth of the gateway's CPU in
//! that hand-off (futex wake, channel receive, one `write` per line). Here a line is appended
//! to a shared buffer under a short lock; only the line that finds the buffer empty wakes the
//! writer, which waits [`BATCH_WINDOW`] for more lines and writes them with one call.
//!
//! Nothing is dropped: past [`MAX_BUFFERED`] bytes the logging thread writes the buffer
//! itself (callers wait, as with a blocking writer). Dropping the [`FlushGuard`] writes what
//! is left, so lines logged before exit are not lost.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// How long the writer thread collects lines before one write.
pub const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Buffered bytes past which a logging thread writes the buffer itself.
pub const MAX_BUFFERED: usize = 1 << 20;

#[derive(Debug, Default)]
struct State {
    buf: Vec<u8>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
    sink: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("buffered", &self.state.lock().buf.len())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn write_out(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut sink = self.sink.lock();
        // A log sink that fails (closed stderr) has nowhere to report it.
        let _ = sink.write_all(bytes);
        let _ = sink.flush();
    }
}

/// A `tracing_subscriber` writer factory that batches lines (see the module docs).
#[derive(Debug, Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

/// Writes the remaining lines and stops the writer thread when dropped.
#[derive(Debug)]
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BatchedWriter {
    /// A batched writer onto stderr.
    pub fn stderr() -> std::io::Result<(Self, FlushGuard)> {
        Self::new(Box::new(std::io::stderr()))
    }

    /// A batched writer onto `sink`, with its writer thread.
    pub fn new(sink: Box<dyn Write + Send>) -> std::io::Result<(Self, FlushGuard)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            sink: Mutex::new(sink),
        });
        let worker = shared.clone();
        let thread =
            std::thread::Builder::new().name("vmcp-log".into()).spawn(move || run(&worker))?;
        Ok((Self { shared: shared.clone() }, FlushGuard { shared, thread: Some(thread) }))
    }

    fn append(&self, line: &[u8]) {
        let mut st = self.shared.state.lock();
        if st.closed {
            drop(st);
            self.shared.write_out(line);
            return;
        }
        let was_empty = st.buf.is_empty();
        st.buf.extend_from_slice(line);
        if st.buf.len() >= MAX_BUFFERED {
            let full = std::mem::take(&mut st.buf);
            // Keep the state lock while writing, so lines stay in order.
            self.shared.write_out(&full);
        } else if was_empty {
            self.shared.ready.notify_one();
        }
    }
}

fn run(shared: &Shared) {
    loop {
        {
            let mut st = shared.state.lock();
            while st.buf.is_empty() && !st.closed {
                shared.ready.wait(&mut st);
            }
            if st.closed {
                let rest = std::mem::take(&mut st.buf);
                shared.write_out(&rest);
                return;
            }
        }
        std::thread::sleep(BATCH_WINDOW);
        let batch = std::mem::take(&mut shared.state.lock().buf);
        shared.write_out(&batch);
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.ready.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One event's writer: collects the formatted line and appends it whole when dropped.
#[derive(Debug)]
pub struct LineWriter {
    to: BatchedWriter,
    line: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.to.append(&self.line);
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter { to: self.clone(), line: Vec::with_capacity(256) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>, Arc<std::sync::atomic::AtomicUsize>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(w: &BatchedWriter, text: &str) {
        let mut lw = w.make_writer();
        lw.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_per_thread_by_guard_drop() {
        let sink = Sink::default();
        let (w, guard) = BatchedWriter::new(Box::new(sink.clone())).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        line(&w, &format!("t{t} line {i}\n"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let out = String::from_utf8(sink.0.lock().clone()).unwrap();
        assert_eq!(out.lines().count(), 2000);
        for t in 0..4 {
            let seen: Vec<usize> = out
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("t{t} line ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(seen, (0..500).collect::<Vec<_>>(), "thread {t}");
        }
        // Batched: far fewer writes than lines.
        let writes = sink.1.load(std::sync::atomic::Ordering::Relaxed);
        assert!(writes < 200, "{writes} writes for 2000 lines");
    }

    #[test]
    fn a_line_appears_within_the_batch_window_without_a_flush() {
        let sink = Sink::default();
        let (w, _guard) = BatchedWriter::new(Box::new(sink.clone())).unwrap();
        line(&w, "hello\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the line was never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&*sink.0.lock(), b"hello\n");
    }

    #[test]
    fn lines_after_the_guard_is_gone_are_written_directly() {
        let sink = Sink::default();
        let (w, guard) = BatchedWriter::new(Box::new(sink.clone())).unwrap();
        drop(guard);
        line(&w, "late\n");
        assert_eq!(&*sink.0.lock(), b"late\n");
    }
}
