//! What one connection's requests and response bodies are doing, for the
//! connection's idle and write deadlines.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::MIN_READ_BYTES_PER_SEC;

/// What one connection's requests are doing, for its deadlines.
pub(super) struct Activity {
    state: Mutex<ActivityState>,
}

pub(super) struct ActivityState {
    requests: u64,
    in_flight: usize,
    /// Since when nothing has been in flight.
    idle_since: Instant,
    /// Each response body being sent: when it last moved, and when it
    /// must be done by at the slowest acceptable reading rate.
    sending: HashMap<u64, Sending>,
    next_body: u64,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(ActivityState {
                requests: 0,
                in_flight: 0,
                idle_since: Instant::now(),
                sending: HashMap::new(),
                next_body: 0,
            }),
        }
    }

    pub(super) fn request_started(self: &Arc<Self>) -> InFlight {
        let mut state = self.state.lock();
        state.requests += 1;
        state.in_flight += 1;
        InFlight {
            activity: self.clone(),
            body: None,
        }
    }

    pub(super) fn requests(&self) -> u64 {
        self.state.lock().requests
    }

    /// How long nothing has been in flight; `None` while something is.
    pub(super) fn idle_for(&self, now: Instant) -> Option<Duration> {
        let state = self.state.lock();
        (state.in_flight == 0).then(|| now - state.idle_since)
    }

    /// Whether a response body has not moved for `write_timeout`, or is
    /// read more slowly than [`MIN_READ_BYTES_PER_SEC`].
    pub(super) fn stalled(&self, now: Instant, write_timeout: Duration) -> bool {
        let state = self.state.lock();
        state
            .sending
            .values()
            .any(|body| now - body.moved > write_timeout || now > body.due)
    }
}

pub(super) struct Sending {
    moved: Instant,
    due: Instant,
}

/// One request, from its head to the end of its response body (or until
/// the request is dropped unanswered).
pub(super) struct InFlight {
    activity: Arc<Activity>,
    body: Option<u64>,
}

impl InFlight {
    pub(super) fn sending(&mut self, len: u64, write_timeout: Duration) {
        let now = Instant::now();
        let reading = Duration::from_secs_f64(len as f64 / MIN_READ_BYTES_PER_SEC as f64);
        let mut state = self.activity.state.lock();
        let id = state.next_body;
        state.next_body += 1;
        let due = now + write_timeout + reading;
        state.sending.insert(id, Sending { moved: now, due });
        self.body = Some(id);
    }

    pub(super) fn moved(&self) {
        if let Some(id) = self.body {
            if let Some(body) = self.activity.state.lock().sending.get_mut(&id) {
                body.moved = Instant::now();
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.activity.state.lock();
        if let Some(id) = self.body {
            state.sending.remove(&id);
        }
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
        }
    }
}
