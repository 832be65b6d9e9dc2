//! The access log's writer thread. Requests append whole lines to a shared buffer under a short
//! lock (never across an await, never while writing); the thread takes the buffer a few times a
//! second, or sooner when it fills, and writes it out. A destination that is slow or full never
//! blocks a request: beyond `MAX_PENDING` bytes waiting, lines are dropped and counted.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

/// Bytes that may wait for the writer; beyond them a line is dropped (and counted).
const MAX_PENDING: usize = 4 * 1024 * 1024;
/// The writer is woken early once this much is waiting.
const WAKE_AT: usize = 64 * 1024;
/// How long a line waits at most before it is written.
const INTERVAL: Duration = Duration::from_millis(100);
/// A write of at most this many bytes to a pipe is not interleaved with other writers' (the
/// other logs share stderr): lines are written in chunks no larger, cut at line ends.
const PIPE_BUF: usize = 4096;
/// How long `flush` waits for a stuck destination.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

pub use crate::pipeline::runtime::AccessLogDestination as Destination;

pub struct Writer {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for lines, a flush, a reopen or the end.
    wake: Condvar,
    /// `flush` waits here for the writer to catch up.
    written: Condvar,
    dropped: Counter,
}

struct State {
    pending: Vec<u8>,
    destination: Destination,
    reopen: bool,
    /// Flushes asked for, and those done: a flush is done when the writer wrote everything
    /// that was pending when it was asked.
    flush_asked: u64,
    flush_done: u64,
    stop: bool,
}

impl Writer {
    /// Starts the thread. A file that cannot be opened (config checking opened it already)
    /// is reported on stderr, and its lines are dropped and counted until a reopen succeeds.
    pub fn start(destination: Destination, dropped: Counter) -> Writer {
        let out = open_or_report(&destination);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: Vec::with_capacity(WAKE_AT * 2),
                destination,
                reopen: false,
                flush_asked: 0,
                flush_done: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            written: Condvar::new(),
            dropped,
        });
        let thread_shared = shared.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("keyway-access-log".into())
            .spawn(move || run(&thread_shared, out))
        {
            // Without its thread nothing is written: lines are dropped and counted.
            eprintln!("keyway: cannot start the access log's writer thread: {e}");
            lock(&shared.state).stop = true;
        }
        Writer { shared }
    }

    /// Appends one or more complete lines.
    pub fn append(&self, lines: &[u8]) {
        let mut state = lock(&self.shared.state);
        // Stopped (or never started): nothing will write them.
        if state.stop || state.pending.len() + lines.len() > MAX_PENDING {
            drop(state);
            self.shared.dropped.inc();
            return;
        }
        let before = state.pending.len();
        state.pending.extend_from_slice(lines);
        if before < WAKE_AT && state.pending.len() >= WAKE_AT {
            self.shared.wake.notify_one();
        }
    }

    /// Writes everything appended so far before returning (at most `FLUSH_WAIT`).
    pub fn flush(&self) {
        let mut state = lock(&self.shared.state);
        state.flush_asked += 1;
        let asked = state.flush_asked;
        self.shared.wake.notify_one();
        while state.flush_done < asked && !state.stop {
            let (next, timeout) = self
                .shared
                .written
                .wait_timeout(state, FLUSH_WAIT)
                .unwrap_or_else(|e| e.into_inner());
            state = next;
            if timeout.timed_out() {
                return;
            }
        }
    }

    /// Reopens the file (logrotate moved it away), or switches to another destination.
    pub fn reopen(&self, destination: Option<Destination>) {
        let mut state = lock(&self.shared.state);
        if let Some(d) = destination {
            state.destination = d;
        }
        state.reopen = true;
        self.shared.wake.notify_one();
    }

    pub fn destination(&self) -> Destination {
        lock(&self.shared.state).destination.clone()
    }
}

impl Drop for Writer {
    /// The last lines are written before the thread ends.
    fn drop(&mut self) {
        self.flush();
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_one();
    }
}

/// A poisoned lock only means a thread panicked while appending bytes: the bytes are whole
/// lines or none, so the state is still good.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn open(destination: &Destination) -> io::Result<Output> {
    Ok(match destination {
        Destination::Stderr => Output::Stderr,
        Destination::File(path) => Output::File(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
        ),
    })
}

fn open_or_report(destination: &Destination) -> Output {
    open(destination).unwrap_or_else(|e| {
        eprintln!(
            "keyway: the access log cannot be opened ({e}); its lines are dropped and counted until a reopen (SIGUSR1) succeeds"
        );
        Output::Broken
    })
}

enum Output {
    Stderr,
    File(File),
    /// The file could not be reopened: lines are counted as dropped until it can.
    Broken,
}

impl Output {
    /// Writes whole lines; those a failing destination (a full disk) did not take are counted
    /// as dropped.
    fn write(&mut self, batch: &[u8], shared: &Shared) {
        let mut rest = batch;
        while !rest.is_empty() {
            // stderr is shared with the other logs: chunks small enough not to interleave.
            let cut = match self {
                Output::Stderr => chunk_end(rest),
                _ => rest.len(),
            };
            let written = match self {
                Output::Stderr => io::stderr().lock().write_all(&rest[..cut]),
                Output::File(file) => file.write_all(&rest[..cut]),
                Output::Broken => Err(io::ErrorKind::NotConnected.into()),
            };
            if written.is_err() {
                let lines = memchr::memchr_iter(b'\n', rest).count() as u64;
                shared.dropped.inc_by(lines);
                return;
            }
            rest = &rest[cut..];
        }
    }
}

/// The end of the next chunk: whole lines, at most `PIPE_BUF` bytes unless one line is longer.
fn chunk_end(rest: &[u8]) -> usize {
    if rest.len() <= PIPE_BUF {
        return rest.len();
    }
    match memchr::memrchr(b'\n', &rest[..PIPE_BUF]) {
        Some(i) => i + 1,
        None => memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1),
    }
}

fn run(shared: &Shared, mut out: Output) {
    let mut batch: Vec<u8> = Vec::with_capacity(WAKE_AT * 2);
    loop {
        let mut state = lock(&shared.state);
        if state.pending.is_empty()
            && !state.stop
            && !state.reopen
            && state.flush_done == state.flush_asked
        {
            state = shared
                .wake
                .wait_timeout(state, INTERVAL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        std::mem::swap(&mut batch, &mut state.pending);
        let flushing = state.flush_asked;
        let stop = state.stop;
        let reopen = std::mem::take(&mut state.reopen).then(|| state.destination.clone());
        drop(state);
        if let Some(destination) = reopen {
            out = open_or_report(&destination);
        }
        if !batch.is_empty() {
            out.write(&batch, shared);
            batch.clear();
        }
        let mut state = lock(&shared.state);
        state.flush_done = flushing;
        shared.written.notify_all();
        if stop && state.pending.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_end_at_line_ends_within_pipe_buf() {
        let line = [b'x'; 99];
        let mut buf = Vec::new();
        for _ in 0..100 {
            buf.extend_from_slice(&line);
            buf.push(b'\n');
        }
        let cut = chunk_end(&buf);
        assert!(cut <= PIPE_BUF);
        assert_eq!(cut % 100, 0);
        let long = [b'y'; 5000];
        assert_eq!(chunk_end(&long), 5000);
    }

    /// A writer stuck in a write (a slow destination) takes nothing from the buffer: appends
    /// still return at once, and beyond `MAX_PENDING` the lines are dropped and counted.
    #[test]
    fn a_stuck_destination_drops_and_counts_instead_of_blocking() {
        let dropped = Counter::default();
        let writer = Writer {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    pending: Vec::new(),
                    destination: Destination::Stderr,
                    reopen: false,
                    flush_asked: 0,
                    flush_done: 0,
                    stop: false,
                }),
                wake: Condvar::new(),
                written: Condvar::new(),
                dropped: dropped.clone(),
            }),
        };
        let line = [b'x'; 1023];
        let mut with_newline = line.to_vec();
        with_newline.push(b'\n');
        let started = std::time::Instant::now();
        for _ in 0..5 * 1024 {
            writer.append(&with_newline);
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(dropped.get(), 5 * 1024 - (MAX_PENDING / 1024) as u64);
        assert_eq!(lock(&writer.shared.state).pending.len(), MAX_PENDING);
    }

    /// A writer whose thread is gone (or never started) keeps nothing: every line is counted.
    #[test]
    fn a_stopped_writer_counts_every_line_as_dropped() {
        let dropped = Counter::default();
        let writer = Writer::start(Destination::Stderr, dropped.clone());
        lock(&writer.shared.state).stop = true;
        for _ in 0..3 {
            writer.append(b"line\n");
        }
        assert_eq!(dropped.get(), 3);
        assert!(lock(&writer.shared.state).pending.is_empty());
    }

    #[test]
    fn a_file_gets_every_line_in_order_and_reopens() {
        let dir = std::env::temp_dir().join(format!("keyway-al-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let writer = Writer::start(Destination::File(path.clone()), Counter::default());
        for i in 0..10_000 {
            writer.append(format!("{i}\n").as_bytes());
        }
        writer.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let numbers: Vec<usize> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(numbers, (0..10_000).collect::<Vec<_>>());
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        writer.reopen(None);
        writer.append(b"after\n");
        writer.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        drop(writer);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
