//! A global allocator for guests that never frees (except the most recent
//! allocation). The host creates a fresh instance for every batch and drops
//! it afterwards, so freeing is wasted work: measured 15-30% of call time.
//! Opt in with
//! ```ignore
//! #[cfg(target_arch = "wasm32")]
//! #[global_allocator]
//! static ALLOC: kusto_metrics_guest::BumpAllocator = kusto_metrics_guest::BumpAllocator::new();
//! ```
//! Memory use grows with everything allocated during the call, so keep an
//! eye on the host's per-call memory limit for very large batches.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

const PAGE: usize = 65_536;

pub struct BumpAllocator {
    next: Cell<usize>,
    end: Cell<usize>,
}

// SAFETY: a wasm32 guest runs on one thread.
unsafe impl Sync for BumpAllocator {}

impl BumpAllocator {
    pub const fn new() -> Self {
        BumpAllocator {
            next: Cell::new(0),
            end: Cell::new(0),
        }
    }

    /// Makes room up to `needed` (an address), growing linear memory.
    fn reserve(&self, needed: usize) -> bool {
        if needed <= self.end.get() {
            return true;
        }
        let missing = needed - self.end.get();
        // Grow by at least a quarter of what we hold, to keep grows rare.
        let pages = missing
            .div_ceil(PAGE)
            .max(self.end.get() / PAGE / 4)
            .max(16);
        let previous = core::arch::wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return false;
        }
        if self.end.get() != previous * PAGE {
            // First grow (or someone else grew memory): start at the new region.
            self.next.set(previous * PAGE);
            self.end.set((previous + pages) * PAGE);
            return needed <= self.end.get() || self.reserve(needed);
        }
        self.end.set((previous + pages) * PAGE);
        true
    }
}

impl Default for BumpAllocator {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for BumpAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let align = layout.align();
        let mut start = (self.next.get() + align - 1) & !(align - 1);
        if start + layout.size() > self.end.get() {
            if !self.reserve(start + layout.size()) {
                return core::ptr::null_mut();
            }
            start = (self.next.get() + align - 1) & !(align - 1);
            if start + layout.size() > self.end.get() && !self.reserve(start + layout.size()) {
                return core::ptr::null_mut();
            }
        }
        self.next.set(start + layout.size());
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Only the most recent allocation can be given back.
        if ptr as usize + layout.size() == self.next.get() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_end = ptr as usize + layout.size();
        if old_end == self.next.get() {
            // The most recent allocation grows (or shrinks) in place.
            let new_end = ptr as usize + new_size;
            if (new_end <= self.end.get() || self.reserve(new_end)) && self.next.get() == old_end {
                self.next.set(new_end);
                return ptr;
            }
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return core::ptr::null_mut();
        };
        // SAFETY: the caller's contract for realloc covers alloc and copy.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            }
            new
        }
    }
}
