//! The global allocator of the allocation-counting test binaries (`tests/srtp_alloc.rs`,
//! `tests/relay_alloc.rs`): `System`, calling the binary's own counter on every allocation
//! and reallocation (each binary decides what a count is keyed by). Frees are not counted.

use std::alloc::{GlobalAlloc, Layout, System};

/// `System` with `count` called before every allocation.
pub struct Counting(pub fn());

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter has no effect on the memory handed out (it must not
// allocate itself: both binaries' counters touch only atomics and const thread-locals).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        (self.0)();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        (self.0)();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        (self.0)();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
