//! The log writer under the subscriber: a request appends its formatted line to an in-memory
//! buffer (a mutex and a copy: no system call, no thread wake-up) and a writer thread writes
//! the buffer to stderr every few milliseconds. A full buffer drops the line and counts it
//! rather than making the request wait for a slow terminal or pipe.
//!
//! Written here rather than taken from `tracing-appender`: its non-blocking writer sends each
//! line through a channel whose receiver sleeps between lines, so every request paid a
//! futex wake-up of the writer thread (measured: a fifth of a `/healthz` request's CPU).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// How often the writer thread writes what has queued up.
const FLUSH_EVERY: Duration = Duration::from_millis(10);

struct Queue {
    buf: Mutex<Vec<u8>>,
    limit: usize,
    dropped: AtomicU64,
    stop: AtomicBool,
}

fn lock(m: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    // A panic mid-append leaves at worst a partial line: keep logging.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands each event a writer onto the shared buffer.
#[derive(Clone)]
pub struct QueueWriter(Arc<Queue>);

impl QueueWriter {
    /// Lines dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

impl Write for QueueWriter {
    // The formatter writes each event in one call, so a line is kept or dropped whole.
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut buf = lock(&self.0.buf);
        if buf.len() + line.len() > self.0.limit {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            buf.extend_from_slice(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = QueueWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Stops the writer thread after a last write of everything queued.
pub struct Guard {
    queue: Arc<Queue>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.queue.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _joined = t.join();
        }
    }
}

/// A writer onto a buffer of at most `limit` bytes, drained to `out` by a thread.
pub fn spawn(
    limit: usize,
    mut out: impl Write + Send + 'static,
) -> io::Result<(QueueWriter, Guard)> {
    let queue = Arc::new(Queue {
        buf: Mutex::new(Vec::with_capacity(limit.min(1 << 20))),
        limit,
        dropped: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let q = queue.clone();
    let thread = std::thread::Builder::new()
        .name("stampede-log".into())
        .spawn(move || {
            let mut spare = Vec::new();
            loop {
                let stopping = q.stop.load(Ordering::Acquire);
                std::mem::swap(&mut *lock(&q.buf), &mut spare);
                if !spare.is_empty() {
                    // Nowhere to report a failed log write: the next batch tries again.
                    let _written = out.write_all(&spare).and_then(|()| out.flush());
                    spare.clear();
                }
                if stopping {
                    return;
                }
                std::thread::park_timeout(FLUSH_EVERY);
            }
        })?;
    Ok((
        QueueWriter(queue.clone()),
        Guard {
            queue,
            thread: Some(thread),
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_reach_the_output_in_order_and_the_guard_flushes_the_rest() {
        let sink = Sink::default();
        let (writer, guard) = spawn(1 << 16, sink.clone()).unwrap();
        for i in 0..1000 {
            writer
                .make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let out = String::from_utf8(lock(&sink.0).clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[0], "line 0");
        assert_eq!(lines[999], "line 999");
        assert_eq!(writer.dropped(), 0);
    }

    #[test]
    fn a_full_buffer_drops_whole_lines_and_counts_them() {
        let (writer, guard) = spawn(100, io::sink()).unwrap();
        // With the writer thread stopped nothing drains: 10 lines of 10 bytes fit.
        drop(guard);
        let mut w = writer.make_writer();
        for _ in 0..20 {
            w.write_all(b"123456789\n").unwrap();
        }
        assert_eq!(writer.dropped(), 10);
        assert_eq!(lock(&writer.0.buf).len(), 100);
    }
}
