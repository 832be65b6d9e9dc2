//! The decision log behind `GET /decisions` and the decision page: the last decisions, newest
//! first, filled from each request's trace. Recording takes the trace's names over (no copy, no
//! allocation) and holds a std mutex for one slot write, never across an await.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::pipeline::authn::jwt::claims::rfc3339;
use crate::pipeline::trace::Trace;

/// How many decisions are kept.
pub const CAPACITY: usize = 1_000;

/// Text kept inside the decision. The request's id and path are slices of the connection's
/// read buffer: holding them would keep that buffer alive and make the next request allocate
/// another, so they are copied here (cut at `N` bytes) instead.
#[derive(Clone)]
struct Inline<const N: usize> {
    len: u8,
    bytes: [u8; N],
    cut: bool,
}

impl<const N: usize> Inline<N> {
    const EMPTY: Self = Inline {
        len: 0,
        bytes: [0; N],
        cut: false,
    };

    /// Copies `text` (at most `N` bytes, cut at a character boundary) over what was there:
    /// only its own bytes are written.
    fn set(&mut self, text: &str) {
        let mut end = text.len().min(N).min(usize::from(u8::MAX));
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
        self.len = end as u8;
        self.cut = end < text.len();
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

/// One decision: names and codes only, never a credential (the path has no query).
#[derive(Clone)]
pub struct Decision {
    /// When the request started; made a wall-clock time only when shown, so recording reads
    /// no clock.
    started: Instant,
    request_id: Inline<128>,
    method: http::Method,
    /// The first 160 bytes of the path (the access log has all of it).
    path: Inline<160>,
    route: Option<Arc<str>>,
    status: u16,
    reason: &'static str,
    authenticator: Option<Arc<str>>,
    consumer: Option<Arc<str>>,
    subject: Option<Arc<str>>,
    duration_us: u64,
}

impl Decision {
    fn empty() -> Self {
        Decision {
            started: Instant::now(),
            request_id: Inline::EMPTY,
            method: http::Method::GET,
            path: Inline::EMPTY,
            route: None,
            status: 0,
            reason: "",
            authenticator: None,
            consumer: None,
            subject: None,
            duration_us: 0,
        }
    }

    /// Writes a finished request's decision over this one, in place: reference-counted names
    /// are shared, the id and path copied (see `Inline`); what it replaces is dropped here.
    fn fill(&mut self, trace: &Trace, elapsed_us: u64) {
        let id = trace.identity.as_ref();
        self.started = trace.started();
        self.request_id.set(trace.request_id.as_str());
        self.method.clone_from(&trace.method);
        self.path.set(trace.path.as_str());
        self.route.clone_from(&trace.route);
        self.status = trace.status;
        self.reason = trace.reason_code();
        self.authenticator = id.map(|i| i.authenticator.clone());
        self.consumer = id.and_then(|i| i.consumer.clone());
        self.subject = id.map(|i| i.subject.clone());
        self.duration_us = elapsed_us;
    }
}

/// `GET /decisions`' JSON form of a decision (SPEC §11).
#[derive(Serialize)]
pub struct Shown<'a> {
    time: String,
    request_id: &'a str,
    method: &'a str,
    path: std::borrow::Cow<'a, str>,
    route: &'a str,
    status: u16,
    reason: &'static str,
    authenticator: &'a str,
    consumer: &'a str,
    subject: &'a str,
    duration_ms: f64,
}

/// A wall-clock time and the monotonic instant it was read at: decisions keep instants and are
/// given wall-clock times from this pair when shown.
#[derive(Clone, Copy)]
pub struct Epoch {
    wall: SystemTime,
    mono: Instant,
}

impl Epoch {
    fn now() -> Self {
        Epoch {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    fn wall(&self, at: Instant) -> SystemTime {
        let wall = match at.checked_duration_since(self.mono) {
            Some(after) => self.wall.checked_add(after),
            None => self
                .wall
                .checked_sub(self.mono.saturating_duration_since(at)),
        };
        wall.unwrap_or(self.wall)
    }
}

impl Decision {
    pub fn shown(&self, epoch: Epoch) -> Shown<'_> {
        let secs = epoch
            .wall(self.started)
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let millis = (secs.fract() * 1000.0).floor() as u32;
        let time = rfc3339(secs);
        // `…Z` with milliseconds, so decisions within one second keep their order.
        let time = match time.strip_suffix('Z') {
            Some(t) => format!("{t}.{millis:03}Z"),
            None => time,
        };
        Shown {
            time,
            request_id: self.request_id.as_str(),
            method: self.method.as_str(),
            path: if self.path.cut {
                format!("{}…", self.path.as_str()).into()
            } else {
                self.path.as_str().into()
            },
            route: self.route.as_deref().unwrap_or(""),
            status: self.status,
            reason: self.reason,
            authenticator: self.authenticator.as_deref().unwrap_or(""),
            consumer: self.consumer.as_deref().unwrap_or(""),
            subject: self.subject.as_deref().unwrap_or(""),
            duration_ms: self.duration_us as f64 / 1000.0,
        }
    }
}

/// The ring of recent decisions.
pub struct Decisions {
    ring: Mutex<Ring>,
    epoch: Epoch,
}

/// `CAPACITY` slots written in turn: a full ring overwrites its oldest slot in place, so a push
/// moves one decision and drops one, and never allocates.
struct Ring {
    slots: Vec<Decision>,
    /// The slot the next decision goes to once the ring is full.
    next: usize,
}

impl Ring {
    /// Newest first.
    fn newest_first(&self) -> impl Iterator<Item = &Decision> {
        // Before `next`: written since the ring last wrapped; from `next` on: the older ones.
        let (recent, earlier) = self.slots.split_at(self.next.min(self.slots.len()));
        recent.iter().rev().chain(earlier.iter().rev())
    }
}

impl Default for Decisions {
    fn default() -> Self {
        Decisions {
            ring: Mutex::new(Ring {
                slots: Vec::with_capacity(CAPACITY),
                next: 0,
            }),
            epoch: Epoch::now(),
        }
    }
}

/// Which decisions `recent` returns.
#[derive(Default)]
pub struct Filter<'a> {
    pub limit: usize,
    pub reason: Option<&'a str>,
    pub route: Option<&'a str>,
}

impl Decisions {
    /// Records a finished request's decision. The std mutex is held while one slot is written,
    /// never across an await.
    pub fn record(&self, trace: &Trace, elapsed_us: u64) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let ring = &mut *ring;
        if ring.slots.len() < CAPACITY {
            ring.slots.push(Decision::empty());
        }
        // Once full, the oldest decision is overwritten in place: no copy of a whole decision,
        // and what it held is released by reference count.
        if let Some(slot) = ring.slots.get_mut(ring.next) {
            slot.fill(trace, elapsed_us);
        }
        ring.next = (ring.next + 1) % CAPACITY;
    }

    /// What the decisions' times are reckoned from.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Newest first. `reason: ""` selects allowed requests.
    pub fn recent(&self, filter: &Filter<'_>) -> Vec<Decision> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.newest_first()
            .filter(|d| filter.reason.is_none_or(|r| r == d.reason))
            .filter(|d| filter.route.is_none_or(|r| Some(r) == d.route.as_deref()))
            .take(filter.limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::request_id;
    use crate::pipeline::trace::RequestPath;

    fn trace(path: &str, route: &str, status: u16) -> Trace {
        let uri: http::Uri = path.parse().unwrap();
        let mut t = Trace::start(request_id::mint(), http::Method::GET, RequestPath::of(&uri));
        t.route = Some(Arc::from(route));
        t.status = status;
        t
    }

    #[test]
    fn newest_first_bounded_and_filtered() {
        let d = Decisions::default();
        for i in 0..CAPACITY + 5 {
            let route = if i % 2 == 0 { "even" } else { "odd" };
            let t = trace(&format!("/r/{i}?token=s3cret"), route, 200);
            d.record(&t, 5);
        }
        let all = d.recent(&Filter {
            limit: usize::MAX,
            ..Filter::default()
        });
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].path.as_str(), format!("/r/{}", CAPACITY + 4));
        assert_eq!(all[CAPACITY - 1].path.as_str(), "/r/5");
        let odd = d.recent(&Filter {
            limit: 3,
            route: Some("odd"),
            ..Filter::default()
        });
        let paths: Vec<&str> = odd.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["/r/1003", "/r/1001", "/r/999"]);
        let shown = serde_json::to_string(&odd[0].shown(d.epoch())).unwrap();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains(r#""route":"odd""#), "{shown}");
        assert!(shown.contains(r#""duration_ms":0.005"#), "{shown}");
        // The wall-clock time of a decision recorded now is now (to the second).
        let year = shown.split("\"time\":\"").nth(1).unwrap();
        assert!(year.starts_with("20"), "{shown}");
        assert!(
            d.recent(&Filter {
                limit: 10,
                reason: Some("credentials.missing"),
                ..Filter::default()
            })
            .is_empty()
        );
        // A long path is kept cut, and says so.
        let long = format!("/{}", "é".repeat(100));
        let mut t = trace(&long, "odd", 200);
        t.path = RequestPath::of(&long.parse().unwrap());
        d.record(&t, 1);
        let newest = &d.recent(&Filter {
            limit: 1,
            ..Filter::default()
        })[0];
        let cut = newest.shown(d.epoch());
        assert!(cut.path.ends_with('…') && long.starts_with(cut.path.trim_end_matches('…')));
    }
}
