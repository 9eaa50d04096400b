//! Cgroup work that no request waits for: removing a finished run's groups,
//! moving a waiting runner into a group of its own. Both mostly wait for the
//! kernel (cgroup locks, RCU grace periods), and what CPU they need should not
//! come before a running script's: they run on a few threads of their own at
//! the jail's nice level (19) instead of tokio's blocking pool at 0, which
//! also serves the work a request does wait for (placing its runner).

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

type Work = Box<dyn FnOnce() + Send>;

/// Enough threads that a slow removal (an RCU grace period is milliseconds)
/// does not hold up the next runner's preparation.
const THREADS: usize = 4;
const NICE: libc::c_int = 19;

/// Runs `work` on a background thread; the receiver gets its result.
pub fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> oneshot::Receiver<T> {
    let (done, result) = oneshot::channel();
    let queued: Work = Box::new(move || {
        let _ = done.send(work());
    });
    if let Err(mpsc::SendError(work)) = queue().send(queued) {
        // The threads are gone (they never exit, so this is a panic's
        // aftermath): the work still has to be done.
        work();
    }
    result
}

/// True on one of the background threads, where blocking work belongs.
pub fn is_background_thread() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|name| name.starts_with(THREAD_PREFIX))
}

/// Waits between rounds of blocking work (a cgroup that is still emptying).
/// Only where blocking is allowed: a background thread, or a thread with no
/// async runtime (the `pyexec run` command's teardown, a test's drop).
pub fn pause(duration: Duration) {
    debug_assert!(
        is_background_thread() || tokio::runtime::Handle::try_current().is_err(),
        "a blocking pause on an async worker"
    );
    #[allow(clippy::disallowed_methods)]
    std::thread::sleep(duration);
}

const THREAD_PREFIX: &str = "pyexec-cgroup-";

fn queue() -> &'static mpsc::Sender<Work> {
    static QUEUE: OnceLock<mpsc::Sender<Work>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Work>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..THREADS {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("{THREAD_PREFIX}{i}"))
                .spawn(move || {
                    // SAFETY: setpriority on the calling thread (who = 0).
                    unsafe {
                        libc::setpriority(libc::PRIO_PROCESS, 0, NICE);
                    }
                    loop {
                        let next = receiver.lock().recv();
                        match next {
                            Ok(work) => work(),
                            Err(_) => return,
                        }
                    }
                })
                .expect("a background thread starts");
        }
        sender
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_off_the_caller_at_a_lower_priority() {
        let (thread, nice, recognised) = run(|| {
            // SAFETY: getpriority on the calling thread.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let name = std::thread::current().name().map(str::to_string);
            (name, nice, is_background_thread())
        })
        .await
        .unwrap();
        assert!(thread.unwrap().starts_with(THREAD_PREFIX));
        assert_eq!(nice, NICE);
        assert!(recognised && !is_background_thread());
    }
}
