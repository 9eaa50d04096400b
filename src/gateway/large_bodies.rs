//! The room bodies larger than `--max-body-bytes` (those that carry input
//! files) may take in the gateway's memory at once: one budget for all
//! tenants, of which one tenant may hold at most half, so neither one
//! tenant's uploads nor a client that declares large bodies and sends
//! nothing can keep every other tenant from uploading.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct LargeBodies {
    /// KiB left for everyone.
    total: Arc<Semaphore>,
    /// KiB one tenant may hold at once.
    share_kib: u32,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A body's room, given back when it is dropped (after its answer).
pub struct Room {
    _tenant: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl LargeBodies {
    pub fn new(bytes: usize) -> Self {
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        Self {
            total: Arc::new(Semaphore::new(kib as usize)),
            share_kib: (kib / 2).max(1),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// Room for `bytes`, or `None` at once when the tenant's share or the
    /// whole budget is taken. A body larger than a share takes a whole
    /// share, so it can still be read, one at a time.
    pub fn try_reserve(&self, tenant: &str, bytes: u64) -> Option<Room> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.share_kib);
        let share = self
            .tenants
            .lock()
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.share_kib as usize)))
            .clone();
        let tenant_room = share.try_acquire_many_owned(kib).ok()?;
        let total_room = self.total.clone().try_acquire_many_owned(kib).ok()?;
        Some(Room {
            _tenant: tenant_room,
            _total: total_room,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tenant_holds_at_most_half_and_room_comes_back() {
        let budget = LargeBodies::new(8 << 20);
        let a1 = budget.try_reserve("a", 3 << 20).unwrap();
        assert!(budget.try_reserve("a", 2 << 20).is_none(), "past a's half");
        let b = budget.try_reserve("b", 4 << 20).unwrap();
        assert!(
            budget.try_reserve("c", 2 << 20).is_none(),
            "the whole is taken"
        );
        drop(a1);
        assert!(budget.try_reserve("c", 2 << 20).is_some());
        drop(b);
        // Larger than a share: it takes the whole share.
        let big = budget.try_reserve("a", 100 << 20).unwrap();
        assert!(budget.try_reserve("a", 1024).is_none());
        drop(big);
        assert!(budget.try_reserve("a", 1024).is_some());
    }
}
