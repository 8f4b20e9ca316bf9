//! Proves the hot path allocates nothing: a counting global allocator around protect and
//! unprotect (RTP and RTCP, every suite, MKI on) after warm-up. The AEAD suites run inside
//! AWS-LC (C), whose `OPENSSL_malloc` never reaches Rust's allocator, so AWS-LC's allocation
//! hooks (`CRYPTO_set_mem_functions`) are pointed at the same counter.
//!
//! This file is its own test binary so the counting allocator sees only this test.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::cell::Cell;

use pbx_edge::srtp::{ContextOptions, CryptoSuite, MasterKey, Mki, SrtpContext};

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

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting(count);

/// AWS-LC's allocation hooks: count, then forward to the C allocator.
mod aws_lc_hooks {
    use std::os::raw::{c_char, c_int, c_void};

    extern "C" {
        fn malloc(size: usize) -> *mut c_void;
        fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
        fn free(ptr: *mut c_void);
    }

    unsafe extern "C" fn counted_malloc(size: usize, _: *const c_char, _: c_int) -> *mut c_void {
        super::count();
        // SAFETY: plain forwarding to the C allocator AWS-LC would otherwise use.
        unsafe { malloc(size) }
    }

    unsafe extern "C" fn counted_realloc(
        ptr: *mut c_void,
        size: usize,
        _: *const c_char,
        _: c_int,
    ) -> *mut c_void {
        super::count();
        // SAFETY: `ptr` came from `counted_malloc`/`counted_realloc`, i.e. from `malloc`.
        unsafe { realloc(ptr, size) }
    }

    unsafe extern "C" fn counted_free(ptr: *mut c_void, _: *const c_char, _: c_int) {
        // SAFETY: as above; AWS-LC frees only what its hooks handed out.
        unsafe { free(ptr) }
    }

    /// Installs the hooks; must run before AWS-LC allocates anything (AWS-LC accepts them
    /// once, and refuses — returns 0 — when it cannot use them).
    pub fn install() {
        // SAFETY: the three functions have the signatures AWS-LC's `mem.h` declares.
        let ok = unsafe {
            aws_lc_sys::CRYPTO_set_mem_functions(
                Some(counted_malloc),
                Some(counted_realloc),
                Some(counted_free),
            )
        };
        assert_eq!(ok, 1, "AWS-LC refused the allocation hooks");
    }
}

#[test]
fn no_allocation_per_packet() {
    aws_lc_hooks::install();
    // The counter itself works (otherwise the assertion below could not fail), for Rust
    // allocations and for AWS-LC's: creating a GCM key allocates its context in C.
    let start = allocations();
    let probe = std::hint::black_box(Vec::<u8>::with_capacity(64));
    assert!(allocations() > start);
    drop(probe);
    let before_c = allocations();
    let gcm = pbx_edge::srtp::cipher::Gcm::new(&[7u8; 16]).unwrap();
    assert!(
        allocations() > before_c,
        "AWS-LC allocations are not counted"
    );
    drop(gcm);

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

/// The relay's per-packet receive-quality accounting (loss and jitter, issue 14) allocates
/// nothing either: it runs on every RTP packet the workers relay.
#[test]
fn no_allocation_in_quality_tracking() {
    use pbx_edge::media::quality::{QualityCells, ReceiveTracker};
    let start = allocations();
    let probe = std::hint::black_box(Vec::<u8>::with_capacity(64));
    assert!(allocations() > start, "the counter does not count");
    drop(probe);

    let mut tracker = ReceiveTracker::default();
    let cells = QualityCells::default();
    let mut packet = [0u8; 172];
    packet[0] = 0x80;
    // PT 0 plus a dynamic map, as a stream with the sender's `a=rtpmap`s has.
    let rates = pbx_edge::media::ClockRates::new([(96, 48_000), (101, 8000)]);
    let mut run = |i: u32, ssrc: u32| {
        packet[2..4].copy_from_slice(&(65000u16.wrapping_add(i as u16)).to_be_bytes());
        packet[4..8].copy_from_slice(&(160 * i).to_be_bytes());
        packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
        tracker.on_packet(&packet, u64::from(i) * 20_000_000, &rates, &cells);
    };
    run(0, 1);
    let before = allocations();
    // Across the sequence wrap, with gaps and new SSRCs.
    for i in 1..2000u32 {
        if i % 20 != 0 {
            run(i, 1 + i / 500);
        }
    }
    assert_eq!(allocations() - before, 0, "allocations in quality tracking");
    assert!(cells.snapshot().lost() > 0);
}
