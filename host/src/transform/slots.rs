//! A counting semaphore for guest calls: the instance pool has a fixed
//! number of slots, so a call waits for a free one instead of failing when
//! many exporters transform at once. Calls run on blocking threads, so a
//! blocking wait is right here.

use std::sync::{Condvar, Mutex};

pub struct CallSlots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A slot held for one call; given back when dropped.
pub struct Slot<'a>(&'a CallSlots);

impl CallSlots {
    pub fn new(slots: usize) -> CallSlots {
        CallSlots {
            free: Mutex::new(slots.max(1)),
            freed: Condvar::new(),
        }
    }

    pub fn acquire(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn no_more_calls_than_slots_run_at_once() {
        let slots = Arc::new(CallSlots::new(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (slots, running, most) = (slots.clone(), running.clone(), most.clone());
                std::thread::spawn(move || {
                    let _slot = slots.acquire();
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }
}
