//! Deadlines beside the slab: a min-heap of (when, key, generation), kept lazily.
//!
//! A connection owns its current deadline; the heap only has to wake the loop no later than that.
//! Moving a deadline later (activity on the connection) costs nothing: the old entry fires, finds
//! the connection's deadline still ahead and is pushed again. Only a deadline that moves earlier
//! pushes a new entry. Stale entries are recognised by the connection's generation or deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u32)>>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, key: usize, generation: u32) {
        self.heap.push(Reverse((at, key, generation)));
    }

    /// The earliest entry, if any.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns an entry that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize, u32)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Drops the entries `live` says are stale, once they outnumber the live ones: a closed
    /// connection leaves its entry behind, and under connection churn those would pile up for a
    /// whole idle timeout. Amortized, this costs O(1) per closed connection.
    pub fn compact(&mut self, live_count: usize, live: impl Fn(Instant, usize, u32) -> bool) {
        if self.heap.len() <= 2 * live_count + 1024 {
            return;
        }
        self.heap
            .retain(|Reverse((at, key, generation))| live(*at, *key, *generation));
        // Capacity is kept: it is bounded by the threshold above, and reallocating it on every
        // compaction only fragments the allocator.
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.push(t0 + Duration::from_secs(2), 1, 0);
        t.push(t0 + Duration::from_secs(1), 2, 0);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(t.pop_due(t0 + Duration::from_secs(5)).map(|e| e.1), Some(2));
        assert_eq!(t.pop_due(t0 + Duration::from_secs(5)).map(|e| e.1), Some(1));
        assert!(t.is_empty());
    }

    #[test]
    fn compaction_keeps_the_live_entries_only() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for key in 0..5000 {
            t.push(t0 + Duration::from_secs(1), key, 0);
        }
        t.compact(10, |_, key, _| key < 10);
        assert_eq!(t.len(), 10);
        t.compact(10, |_, _, _| false); // under the threshold: left alone
        assert_eq!(t.len(), 10);
    }
}
