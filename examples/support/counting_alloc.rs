//! A global allocator that counts live heap bytes, so memory per relation is measured,
//! not estimated: in all, and per thread (what one thread allocated less what it
//! freed, so a test counts its own work while others run). Shared by the demo, the
//! memory bench and the tests (`#[path]`-included).

#![allow(unreachable_pub, dead_code)] // each includer uses its part
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts live bytes, forwarding every call to the system allocator.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Bytes this thread allocated less those it freed (a const initialiser and no
    /// destructor: safe to touch from inside the allocator).
    static THREAD_NET: Cell<isize> = const { Cell::new(0) };
    /// Allocations this thread made.
    static THREAD_ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// Bytes this thread allocated less those it freed, since it started.
pub fn thread_net() -> isize {
    THREAD_NET.try_with(Cell::get).unwrap_or(0)
}

/// Allocations this thread made, since it started.
pub fn thread_allocs() -> u64 {
    THREAD_ALLOCS.try_with(Cell::get).unwrap_or(0)
}

fn thread_count(by: isize, allocs: u64) {
    let _ = THREAD_NET.try_with(|n| n.set(n.get() + by));
    let _ = THREAD_ALLOCS.try_with(|n| n.set(n.get() + allocs));
}

/// Live heap bytes now.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most live heap bytes since the last [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new peak from the live bytes now.
pub fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's own arguments, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; the counter is a
// relaxed atomic that never affects the allocation itself.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        thread_count(layout.size() as isize, 1);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        thread_count(-(layout.size() as isize), 0);
        // SAFETY: `ptr` came from `alloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        thread_count(new_size as isize - layout.size() as isize, 1);
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
