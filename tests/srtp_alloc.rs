//! Proves the hot path allocates nothing: a counting global allocator around protect and
//! unprotect (RTP and RTCP, every suite, MKI on) after warm-up.
//!
//! This file is its own test binary so the counting allocator sees only this test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use pbx_edge::srtp::{ContextOptions, CryptoSuite, MasterKey, Mki, SrtpContext};

struct Counting;

thread_local! {
    // Per thread: the test harness's other threads allocate concurrently and must not count.
    // A `const` initialiser needs no lazy allocation inside the allocator.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: during thread teardown the slot may be gone; such allocations are not ours.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(|c| c.get())
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter has no effect on the memory handed out. (This test binary
// is not part of the library, whose `forbid(unsafe_code)` stays intact.)
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn no_allocation_per_packet() {
    // The counter itself works (otherwise the assertion below could not fail).
    let start = allocations();
    let probe = std::hint::black_box(Vec::<u8>::with_capacity(64));
    assert!(allocations() > start);
    drop(probe);

    for suite in CryptoSuite::ALL {
        let key = MasterKey::generate(suite, |b| b.fill(0x5a));
        let opts = ContextOptions {
            mki: Mki::new(3, 2),
            ..ContextOptions::default()
        };
        let mut tx = SrtpContext::new(&key, &opts).unwrap();
        let mut rx = SrtpContext::new(&key, &opts).unwrap();
        let mut buf = [0u8; 1500];
        let mut rtcp = [0u8; 1500];

        let mut run = |seq: u16, ssrc: u32| {
            buf[0] = 0x80;
            buf[2..4].copy_from_slice(&seq.to_be_bytes());
            buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
            let n = tx.protect_rtp(&mut buf, 172).unwrap();
            assert_eq!(rx.unprotect_rtp(&mut buf[..n]).unwrap(), 172);
            rtcp[0] = 0x80;
            rtcp[1] = 200;
            rtcp[4..8].copy_from_slice(&ssrc.to_be_bytes());
            let n = tx.protect_rtcp(&mut rtcp, 52).unwrap();
            assert_eq!(rx.unprotect_rtcp(&mut rtcp[..n]).unwrap().len, 52);
        };
        // Warm-up: one packet.
        run(65000, 1);
        let before = allocations();
        // Across the sequence wrap, and new SSRCs appearing (tables are preallocated).
        for i in 0..2000u32 {
            run(65001u16.wrapping_add(i as u16), 1 + i / 500);
        }
        let after = allocations();
        assert_eq!(after - before, 0, "{suite}: allocations in the packet path");
    }
}
