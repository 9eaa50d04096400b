//! One zygote: the jailed interpreter that forks runners, the runners it has
//! handed over, their prepared groups, and the reader of its replies.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use super::processes::schedule_normally;
use super::protocol::{Command, Reply, receive_with_fds, send_with_fds};
use crate::sandbox::background;
use crate::sandbox::cgroup::{Cgroups, RunCgroup};
use crate::sandbox::limits::{Limits, MIB};

/// A waiting runner already moved into a group of its own, with its host pid.
pub(super) struct Spare {
    pub(super) cgroup: RunCgroup,
    pub(super) host_pid: i32,
}

/// The preparation of one waiting runner's group. The request that takes
/// the runner and the preparation both lock it: a request never sees a
/// half-moved runner, and a preparation that comes too late does nothing.
#[derive(Default)]
pub(super) struct SpareSlot {
    pub(super) claimed: bool,
    pub(super) spare: Option<Spare>,
}

/// A runner the zygote handed over: its pid in the zygote's namespace and
/// the channel its request goes through. Dropping it (zygote retired) closes
/// the channel, and the runner exits.
pub(super) struct ReadyRunner {
    pub(super) pid: i32,
    pub(super) channel: OwnedFd,
}

/// One warm interpreter and what the gateway tracks of it.
///
/// Lock order: `ready`, then `spares`, then one [`SpareSlot`] (only ever
/// `try_lock`ed while `spares` is held). `exits`, `cgroup` and `_nsjail` are
/// never held together with another lock. None is held across an `.await`.
pub(super) struct Zygote {
    pub(super) generation: u64,
    pub(super) control: AsyncFd<OwnedFd>,
    /// Runners handed over by the zygote that have no request yet, oldest first.
    pub(super) ready: Mutex<VecDeque<ReadyRunner>>,
    pub(super) runner_arrived: tokio::sync::Notify,
    /// Where each runner's exit code goes, by its pid in the zygote's namespace.
    pub(super) exits: Mutex<HashMap<i32, oneshot::Sender<i32>>>,
    pub(super) alive: AtomicBool,
    pub(super) runs: AtomicU64,
    pub(super) started_at: Instant,
    pub(super) nsjail_pid: Option<u32>,
    /// The zygote's own host pid (pid 1 of the jail), found once.
    pub(super) host_pid: std::sync::OnceLock<Option<i32>>,
    /// Whether the zygote makes runners at idle priority (see `hurry`).
    pub(super) idle_refills: bool,
    pub(super) cgroup: Mutex<Option<RunCgroup>>,
    /// Waiting runners by their pid in the zygote's namespace.
    pub(super) spares: Mutex<HashMap<i32, Arc<Mutex<SpareSlot>>>>,
    pub(super) _nsjail: Mutex<Option<tokio::process::Child>>,
}

/// A retired zygote's own group and its waiting runners' groups.
pub(super) type ZygoteGroups = (Option<RunCgroup>, Vec<(i32, Arc<Mutex<SpareSlot>>)>);

impl Zygote {
    /// Its group (nsjail, the zygote and the runners still waiting) and the
    /// waiting runners' own groups, to be destroyed: the zygote is done.
    pub(super) fn take_groups(&self) -> ZygoteGroups {
        self.alive.store(false, Ordering::Release);
        let spares = self.spares.lock().drain().collect();
        (self.cgroup.lock().take(), spares)
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // Only reached when no run holds it any more: killing the group ends
        // the zygote and its idle runners.
        let (cgroup, spares) = self.take_groups();
        if let Some(cgroup) = cgroup {
            drop(background::run(move || {
                cgroup.destroy();
                drop(spares);
            }));
        }
        tracing::info!(
            generation = self.generation,
            runs = self.runs.load(Ordering::Relaxed),
            "warm zygote retired"
        );
    }
}

impl Zygote {
    /// Moves a waiting runner into a group of its own (generous limits until
    /// a request sets its own) and remembers it. A failure only means that
    /// request will move it itself.
    pub(super) fn prepare_spare(
        &self,
        namespace_pid: i32,
        slot: &Mutex<SpareSlot>,
        cgroups: &Cgroups,
    ) {
        let mut slot = slot.lock();
        if slot.claimed {
            return;
        }
        let Some(host_pid) = self.host_pid_of(namespace_pid) else {
            return;
        };
        let name = format!("spare-{}-{namespace_pid}", self.generation);
        let Ok(cgroup) = cgroups.create_group(&name, 1024 * MIB, 1024) else {
            return;
        };
        if cgroup.attach_pid(host_pid).is_ok() {
            slot.spare = Some(Spare { cgroup, host_pid });
        }
    }

    /// The runner's own group with the request's limits, named as a run, and
    /// its host pid: the prepared spare when there is one, else a new group
    /// the runner is moved into now.
    pub(super) fn place_runner(
        &self,
        namespace_pid: i32,
        limits: &Limits,
        cgroups: &Cgroups,
    ) -> std::io::Result<(RunCgroup, i32)> {
        let slot = self.spares.lock().remove(&namespace_pid);
        let spare = slot.and_then(|slot| {
            let mut slot = slot.lock();
            slot.claimed = true;
            slot.spare.take()
        });
        if let Some(Spare {
            mut cgroup,
            host_pid,
        }) = spare
        {
            cgroup.set_limits(limits.memory_bytes, limits.max_pids)?;
            cgroup.rename(&cgroups.next_run_name())?;
            return Ok((cgroup, host_pid));
        }
        let cgroup = cgroups.create_run(limits, false)?;
        let host_pid = self
            .host_pid_of(namespace_pid)
            .ok_or_else(|| std::io::Error::other("the runner vanished"))?;
        cgroup.attach_pid(host_pid)?;
        Ok((cgroup, host_pid))
    }
}

impl Zygote {
    /// The oldest ready runner, waiting up to 10 s for one (the zygote is
    /// told a request waits, so it makes one at once). `None` when the zygote
    /// is gone or made none in time.
    pub(super) async fn take_runner(&self, runs_that_waited: &AtomicU64) -> Option<ReadyRunner> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut told = false;
        loop {
            let arrived = self.runner_arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(runner) = self.pop_ready_runner() {
                return Some(runner);
            }
            if !self.alive.load(Ordering::Acquire) {
                return None;
            }
            if !told {
                runs_that_waited.fetch_add(1, Ordering::Relaxed);
                self.hurry();
                let wait = Command::Wait.encode();
                self.send(wait.as_bytes(), &[]).await.ok()?;
                told = true;
            }
            tokio::time::timeout_at(deadline, arrived).await.ok()?;
        }
    }

    /// A request waits for a runner: the zygote, which makes runners at idle
    /// priority while none is waited for, now makes them at the jail's normal
    /// priority (it goes back to idle on its own once none is waited for).
    pub(super) fn hurry(&self) {
        if !self.idle_refills {
            return;
        }
        let Some(pid) = *self.host_pid.get_or_init(|| self.host_pid_of(1)) else {
            return;
        };
        if let Err(e) = schedule_normally(pid) {
            tracing::warn!(error = %e, "cannot hurry the warm zygote");
        }
    }

    /// The oldest ready runner already moved into a group of its own, else
    /// the oldest one: the move waits for an RCU grace period, and a request
    /// should not wait for it.
    pub(super) fn pop_ready_runner(&self) -> Option<ReadyRunner> {
        let mut ready = self.ready.lock();
        let spares = self.spares.lock();
        let prepared = ready.iter().position(|runner| {
            spares
                .get(&runner.pid)
                .and_then(|slot| slot.try_lock().map(|slot| slot.spare.is_some()))
                .unwrap_or(false)
        });
        ready.remove(prepared.unwrap_or(0))
    }

    pub(super) async fn send(&self, message: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
        loop {
            let mut guard = self.control.writable().await?;
            let sent =
                guard.try_io(|inner| send_with_fds(inner.get_ref().as_raw_fd(), message, fds));
            match sent {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }

    /// The host pid of a runner, found among the zygote group's processes by
    /// its pid in the zygote's namespace (the second `NSpid` field).
    pub(super) fn host_pid_of(&self, namespace_pid: i32) -> Option<i32> {
        let cgroup = self.cgroup.lock();
        cgroup.as_ref()?.remaining_pids().into_iter().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|status| {
                    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
                    line.split_whitespace().nth(2)?.parse::<i32>().ok()
                })
                == Some(namespace_pid)
        })
    }
}

pub(super) async fn read_replies(
    zygote: std::sync::Weak<Zygote>,
    cgroups: Arc<Cgroups>,
    ready: oneshot::Sender<String>,
) {
    let mut ready = Some(ready);
    let mut buffer = vec![0u8; 4096];
    loop {
        let Some(strong) = zygote.upgrade() else {
            return;
        };
        let (received, mut fds) = {
            let Ok(mut guard) = strong.control.readable().await else {
                break;
            };
            match guard.try_io(|inner| receive_with_fds(inner.get_ref().as_raw_fd(), &mut buffer)) {
                Ok(Ok(received)) => received,
                Ok(Err(_)) => (0, Vec::new()),
                Err(_would_block) => continue,
            }
        };
        if received == 0 {
            strong.alive.store(false, Ordering::Release);
            // Dropping the senders tells every waiting run the zygote is gone.
            strong.exits.lock().clear();
            strong.ready.lock().clear();
            strong.runner_arrived.notify_waiters();
            tracing::warn!(generation = strong.generation, "warm zygote exited");
            return;
        }
        let Ok(reply) = serde_json::from_slice::<Reply>(&buffer[..received]) else {
            tracing::error!("unreadable message from the warm zygote");
            continue;
        };
        match reply {
            Reply::Ready { python } => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(python);
                }
            }
            Reply::Exit { pid, code } => {
                if let Some(tx) = strong.exits.lock().remove(&pid) {
                    let _ = tx.send(code);
                }
                // A runner that died while waiting is no use to anyone.
                strong.ready.lock().retain(|r| r.pid != pid);
                strong.spares.lock().remove(&pid);
            }
            Reply::Runner { pid } => {
                let Some(channel) = fds.pop() else {
                    tracing::error!("the warm zygote handed over a runner without its channel");
                    continue;
                };
                // Registered before any request can take this runner; the
                // move itself waits for an RCU grace period (milliseconds),
                // so it runs off any request.
                let slot = Arc::new(Mutex::new(SpareSlot::default()));
                strong.spares.lock().insert(pid, slot.clone());
                strong.ready.lock().push_back(ReadyRunner { pid, channel });
                strong.runner_arrived.notify_one();
                let (zygote, cgroups) = (Arc::downgrade(&strong), cgroups.clone());
                drop(background::run(move || {
                    if let Some(zygote) = zygote.upgrade() {
                        zygote.prepare_spare(pid, &slot, &cgroups);
                    }
                }));
            }
        }
    }
}
