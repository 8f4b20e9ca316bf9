//! Sliding replay window (RFC 3711 §3.3.2) over 48-bit SRTP or 31-bit SRTCP indices.
//!
//! The bitmap is a ring indexed by `index % size`, stored inline (no heap), so creating a
//! stream never allocates.

/// Largest supported window, in packets.
pub const MAX_WINDOW: usize = 1024;
/// Smallest supported window, in packets (the floor; RFC 3711 asks for 64).
pub const MIN_WINDOW: usize = 128;

const WORDS: usize = MAX_WINDOW / 64;

/// Outcome of a replay check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayCheck {
    /// Not seen yet: may be accepted (after authentication).
    Fresh,
    /// Seen already inside the window.
    Replayed,
    /// Behind the window.
    TooOld,
}

/// A replay window of `size` packets ending at the highest accepted index.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    highest: u64,
    size: u64,
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// A window of `size` packets (a multiple of 64 in MIN_WINDOW..=MAX_WINDOW, checked by
    /// the caller) whose first accepted index is `first`.
    pub fn new(size: usize, first: u64) -> ReplayWindow {
        let mut w = ReplayWindow {
            highest: first,
            size: size as u64,
            bits: [0; WORDS],
        };
        w.set(first);
        w
    }

    /// The highest index accepted so far.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Reads the bitmap word the next in-order index will set (cache warming, see
    /// `SrtpContext::warm`).
    #[inline]
    pub fn warm(&self) -> u64 {
        let (word, _) = self.slot(self.highest.wrapping_add(1));
        self.bits.get(word).copied().unwrap_or(0) ^ self.highest
    }

    /// Checks `index` without changing the window.
    pub fn check(&self, index: u64) -> ReplayCheck {
        if index > self.highest {
            ReplayCheck::Fresh
        } else if self.highest - index >= self.size {
            ReplayCheck::TooOld
        } else if self.is_set(index) {
            ReplayCheck::Replayed
        } else {
            ReplayCheck::Fresh
        }
    }

    /// Records `index` as accepted (call only after `check` said `Fresh` and the packet
    /// authenticated).
    pub fn accept(&mut self, index: u64) {
        if index > self.highest {
            let advance = index - self.highest;
            if advance >= self.size {
                self.bits = [0; WORDS];
            } else {
                for i in self.highest + 1..index {
                    self.clear(i);
                }
            }
            self.highest = index;
        }
        self.set(index);
    }

    fn slot(&self, index: u64) -> (usize, u64) {
        let pos = index & (self.size - 1);
        ((pos / 64) as usize % WORDS, 1u64 << (pos % 64))
    }

    fn is_set(&self, index: u64) -> bool {
        let (w, m) = self.slot(index);
        self.bits.get(w).is_some_and(|b| b & m != 0)
    }

    fn set(&mut self, index: u64) {
        let (w, m) = self.slot(index);
        if let Some(b) = self.bits.get_mut(w) {
            *b |= m;
        }
    }

    fn clear(&mut self, index: u64) {
        let (w, m) = self.slot(index);
        if let Some(b) = self.bits.get_mut(w) {
            *b &= !m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basic() {
        let mut w = ReplayWindow::new(128, 1000);
        assert_eq!(w.check(1000), ReplayCheck::Replayed);
        assert_eq!(w.check(1001), ReplayCheck::Fresh);
        assert_eq!(w.check(999), ReplayCheck::Fresh);
        w.accept(999);
        assert_eq!(w.check(999), ReplayCheck::Replayed);
        w.accept(1200);
        assert_eq!(w.check(1000), ReplayCheck::TooOld);
        assert_eq!(w.check(1073), ReplayCheck::Fresh);
        assert_eq!(w.check(1072), ReplayCheck::TooOld);
        assert_eq!(w.check(1200), ReplayCheck::Replayed);
        // Slots reused by the ring must have been cleared on advance.
        assert_eq!(w.check(1199), ReplayCheck::Fresh);
    }

    proptest! {
        /// Replay of any already-accepted index still inside the window is refused, and every
        /// index the model says is fresh is reported fresh.
        #[test]
        fn matches_model(size_log in 7u32..=10, steps in proptest::collection::vec(0u64..3000, 1..300)) {
            let size = 1usize << size_log;
            let mut w = ReplayWindow::new(size, steps[0]);
            let mut seen = std::collections::BTreeSet::new();
            seen.insert(steps[0]);
            let mut highest = steps[0];
            for &i in &steps[1..] {
                let expect = if i + size as u64 <= highest {
                    ReplayCheck::TooOld
                } else if seen.contains(&i) {
                    ReplayCheck::Replayed
                } else {
                    ReplayCheck::Fresh
                };
                prop_assert_eq!(w.check(i), expect);
                if expect == ReplayCheck::Fresh {
                    w.accept(i);
                    seen.insert(i);
                    highest = highest.max(i);
                }
            }
        }
    }
}
