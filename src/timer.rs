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
}
