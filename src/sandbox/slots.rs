//! Who runs next: the server's sandbox slots shared out between groups
//! (tenants). Each group may hold at most its own number of slots at once
//! and keep at most its share of the queue, and a freed slot goes to the
//! waiting groups in turn, so a group at its limits never makes another
//! group's run wait for its runs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{Notify, oneshot};

/// Which queue a run waits in and how many slots that queue may hold at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RunShare {
    /// The tenant's name; runs of one group share its slots and its queue.
    pub group: String,
    /// Slots the group may hold at once (at most all of them); `None` is the
    /// default share, half of the server's slots and at least one.
    pub max_concurrent_runs: Option<usize>,
}

/// One group's use of the slots right now (for the operator listener).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct GroupUse {
    pub running: usize,
    pub waiting: usize,
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The group's share of the queue (or the whole queue) is full.
    QueueFull,
    /// The wait took longer than the queue timeout.
    TimedOut,
}

pub struct Slots {
    total: usize,
    max_queued: usize,
    queue_timeout: Duration,
    state: Mutex<State>,
    /// Woken whenever a slot is given back (for [`Slots::wait_until_idle`]).
    released: Notify,
}

#[derive(Default)]
struct State {
    free: usize,
    waiting: usize,
    groups: HashMap<String, Group>,
    /// Groups with waiting runs, in the order they are served.
    turn: VecDeque<String>,
}

#[derive(Default)]
struct Group {
    running: usize,
    cap: usize,
    queue: VecDeque<oneshot::Sender<SlotPermit>>,
}

/// A held slot; dropping it gives the slot to the next group in turn.
pub struct SlotPermit {
    slots: Arc<Slots>,
    /// `None` once disarmed: a permit that never reached its waiter.
    group: Option<String>,
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        if let Some(group) = self.group.take() {
            self.slots.release(&group);
        }
    }
}

/// A place in a group's queue: left when the wait ends without a permit,
/// by timeout or because the waiting request itself was dropped (its client
/// went away), so abandoned waits never keep the queue full.
struct Wait<'a> {
    slots: &'a Arc<Slots>,
    group: &'a str,
    receiver: Option<oneshot::Receiver<SlotPermit>>,
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(receiver) = self.receiver.take() {
            // First, so the sender sees it closed; a permit sent just as
            // the wait ended is dropped with it and hands the slot on.
            drop(receiver);
            self.slots.forget_abandoned(self.group);
        }
    }
}

impl Slots {
    pub fn new(total: usize, max_queued: usize, queue_timeout: Duration) -> Arc<Self> {
        let total = total.max(1);
        Arc::new(Self {
            total,
            max_queued,
            queue_timeout,
            state: Mutex::new(State {
                free: total,
                ..State::default()
            }),
            released: Notify::new(),
        })
    }

    /// Runs waiting for a slot right now, every group together.
    pub fn queue_depth(&self) -> usize {
        self.state.lock().waiting
    }

    /// Each group that holds or waits for a slot.
    pub fn usage(&self) -> BTreeMap<String, GroupUse> {
        let state = self.state.lock();
        state
            .groups
            .iter()
            .filter(|(_, g)| g.running > 0 || !g.queue.is_empty())
            .map(|(name, g)| {
                let usage = GroupUse {
                    running: g.running,
                    waiting: g.queue.len(),
                };
                (name.clone(), usage)
            })
            .collect()
    }

    /// The slots a share may hold at once on this server.
    pub fn cap_of(&self, share: &RunShare) -> usize {
        share
            .max_concurrent_runs
            .unwrap_or(self.total / 2)
            .clamp(1, self.total)
    }

    /// A group's part of the queue: the queue shared out as its slots are,
    /// so that groups at their limits together fill it at most.
    fn queue_share(&self, cap: usize) -> usize {
        (self.max_queued * cap / self.total)
            .max(1)
            .min(self.max_queued)
    }

    /// A slot for `share` now if its group is under its cap and nobody of
    /// the group waits; otherwise a place in its group's queue until its turn.
    pub async fn acquire(self: &Arc<Self>, share: &RunShare) -> Result<SlotPermit, Refused> {
        let cap = self.cap_of(share);
        let receiver = {
            let mut guard = self.state.lock();
            let state = &mut *guard;
            let group = state.groups.entry(share.group.clone()).or_default();
            group.cap = cap;
            if group.queue.is_empty() && group.running < cap && state.free > 0 {
                group.running += 1;
                state.free -= 1;
                return Ok(self.permit(&share.group));
            }
            // The whole queue bounds groups that already wait; a group with
            // nothing queued may always queue one (unless there is no queue),
            // so two busy groups cannot shut a third out; the queue
            // overshoots by one per group at most.
            let queue_full = !group.queue.is_empty() && state.waiting >= self.max_queued;
            if group.queue.len() >= self.queue_share(cap) || queue_full {
                if group.running == 0 && group.queue.is_empty() {
                    state.groups.remove(&share.group);
                }
                return Err(Refused::QueueFull);
            }
            let (sender, receiver) = oneshot::channel();
            let first_in_group = group.queue.is_empty();
            group.queue.push_back(sender);
            state.waiting += 1;
            if first_in_group {
                state.turn.push_back(share.group.clone());
            }
            receiver
        };
        let mut wait = Wait {
            slots: self,
            group: &share.group,
            receiver: Some(receiver),
        };
        let receiver = wait.receiver.as_mut().expect("just set");
        match tokio::time::timeout(self.queue_timeout, receiver).await {
            Ok(Ok(permit)) => {
                wait.receiver = None;
                Ok(permit)
            }
            _ => Err(Refused::TimedOut),
        }
    }

    /// Resolves once no slot is held.
    pub async fn wait_until_idle(&self) {
        loop {
            let released = self.released.notified();
            if self.state.lock().free == self.total {
                return;
            }
            released.await;
        }
    }

    fn permit(self: &Arc<Self>, group: &str) -> SlotPermit {
        SlotPermit {
            slots: self.clone(),
            group: Some(group.to_string()),
        }
    }

    fn release(self: &Arc<Self>, group: &str) {
        {
            let mut state = self.state.lock();
            state.free += 1;
            if let Some(g) = state.groups.get_mut(group) {
                g.running -= 1;
                if g.running == 0 && g.queue.is_empty() {
                    state.groups.remove(group);
                }
            }
            self.dispatch(&mut state);
        }
        self.released.notify_waiters();
    }

    /// Drops the senders of waits that ended (their receivers are gone).
    fn forget_abandoned(self: &Arc<Self>, group: &str) {
        let mut state = self.state.lock();
        let Some(g) = state.groups.get_mut(group) else {
            return;
        };
        let before = g.queue.len();
        g.queue.retain(|sender| !sender.is_closed());
        let gone = before - g.queue.len();
        let empty = g.queue.is_empty();
        let idle = empty && g.running == 0;
        state.waiting -= gone;
        if empty {
            state.turn.retain(|name| name != group);
        }
        if idle {
            state.groups.remove(group);
        }
    }

    /// Gives free slots to waiting runs: one per group in turn, skipping
    /// groups at their cap, until no slot or no eligible run is left.
    fn dispatch(self: &Arc<Self>, state: &mut State) {
        let mut skipped = 0;
        while state.free > 0 && skipped < state.turn.len() {
            let name = state.turn.pop_front().expect("turn is not empty");
            let group = state.groups.get_mut(&name).expect("a group in turn exists");
            if group.running >= group.cap {
                state.turn.push_back(name);
                skipped += 1;
                continue;
            }
            let mut given = false;
            while let Some(sender) = group.queue.pop_front() {
                state.waiting -= 1;
                group.running += 1;
                state.free -= 1;
                match sender.send(self.permit(&name)) {
                    Ok(()) => {
                        given = true;
                        break;
                    }
                    Err(mut permit) => {
                        // Undone here: its drop would re-enter the lock.
                        permit.group = None;
                        group.running -= 1;
                        state.free += 1;
                    }
                }
            }
            if !group.queue.is_empty() {
                state.turn.push_back(name);
            } else if group.running == 0 {
                state.groups.remove(&name);
            }
            if given {
                skipped = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(group: &str, max: Option<usize>) -> RunShare {
        RunShare {
            group: group.into(),
            max_concurrent_runs: max,
        }
    }

    #[tokio::test]
    async fn a_group_at_its_cap_waits_while_another_group_runs_at_once() {
        let slots = Slots::new(4, 16, Duration::from_secs(5));
        let greedy = share("greedy", Some(2));
        let held = [
            slots.acquire(&greedy).await.unwrap(),
            slots.acquire(&greedy).await.unwrap(),
        ];
        let third = tokio::spawn({
            let slots = slots.clone();
            let greedy = greedy.clone();
            async move { slots.acquire(&greedy).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert_eq!(slots.queue_depth(), 1, "the group's third run waits");
        let other = slots.acquire(&share("quiet", Some(2))).await.unwrap();
        assert_eq!(
            slots.usage()["greedy"],
            GroupUse {
                running: 2,
                waiting: 1
            }
        );
        assert_eq!(
            slots.usage()["quiet"],
            GroupUse {
                running: 1,
                waiting: 0
            }
        );
        drop(held);
        third.await.unwrap().unwrap();
        drop(other);
        slots.wait_until_idle().await;
        assert!(slots.usage().is_empty());
    }

    #[tokio::test]
    async fn freed_slots_go_to_waiting_groups_in_turn() {
        let slots = Slots::new(1, 16, Duration::from_secs(5));
        let first = slots.acquire(&share("a", Some(1))).await.unwrap();
        let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
        for group in ["a", "a", "a", "b"] {
            let slots = slots.clone();
            let order_tx = order_tx.clone();
            tokio::spawn(async move {
                let permit = slots.acquire(&share(group, Some(1))).await.unwrap();
                order_tx.send(group).unwrap();
                drop(permit);
            });
            tokio::task::yield_now().await;
        }
        drop(first);
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(order_rx.recv().await.unwrap());
        }
        assert_eq!(order, ["a", "b", "a", "a"], "b is served second, not last");
    }

    #[tokio::test]
    async fn a_dropped_wait_leaves_the_queue_and_two_busy_groups_leave_room_for_a_third() {
        let slots = Slots::new(2, 2, Duration::from_secs(60));
        let (a, b, c) = (
            share("a", Some(1)),
            share("b", Some(1)),
            share("c", Some(1)),
        );
        let _running = [
            slots.acquire(&a).await.unwrap(),
            slots.acquire(&b).await.unwrap(),
        ];
        let waits: Vec<_> = [&a, &b]
            .into_iter()
            .map(|s| {
                let (slots, s) = (slots.clone(), s.clone());
                tokio::spawn(async move { slots.acquire(&s).await.map(|_| ()) })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(slots.queue_depth(), 2, "a and b fill the whole queue");
        let third = tokio::spawn({
            let (slots, c) = (slots.clone(), c.clone());
            async move { slots.acquire(&c).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert_eq!(
            slots.usage()["c"].waiting,
            1,
            "c may still queue its first run"
        );
        for wait in waits {
            wait.abort();
            let _ = wait.await;
        }
        assert_eq!(slots.queue_depth(), 1, "the abandoned waits left the queue");
        third.abort();
    }

    #[tokio::test]
    async fn a_group_fills_only_its_share_of_the_queue() {
        let slots = Slots::new(2, 4, Duration::from_millis(200));
        let greedy = share("greedy", Some(1));
        let _running = slots.acquire(&greedy).await.unwrap();
        let mut waits = Vec::new();
        for _ in 0..2 {
            let slots = slots.clone();
            let greedy = greedy.clone();
            waits.push(tokio::spawn(async move {
                slots.acquire(&greedy).await.map(|_| ())
            }));
        }
        tokio::task::yield_now().await;
        assert_eq!(
            slots.acquire(&greedy).await.err(),
            Some(Refused::QueueFull),
            "a cap of 1 of 2 slots keeps half of the queue of 4"
        );
        let _other = slots.acquire(&share("other", Some(1))).await.unwrap();
        for wait in waits {
            assert_eq!(wait.await.unwrap(), Err(Refused::TimedOut));
        }
        assert_eq!(slots.queue_depth(), 0, "timed-out waits leave the queue");
    }
}
