//! Deadlines in a min-heap, for the loop's poll timeout.
//!
//! Cancelling a deadline does not search the heap: the entry stays there, marked dead by the absence of its sequence
//! number in the `live` map, and is dropped when it reaches the top. So that a loop which re-arms often (every request
//! on a keep-alive connection) cannot fill the heap with dead entries, the heap is rebuilt from the live ones whenever
//! dead entries outnumber live ones: memory stays proportional to the number of live deadlines.
//!
//! Each deadline carries a sequence number that is never reused, so a stale [`TimerId`] (one that already fired or was
//! cancelled) can never cancel a newer deadline.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

/// Names one armed deadline. Unique for the life of the [`Timers`] that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

/// A set of deadlines, each with a payload `K` handed back when it is due.
#[derive(Debug)]
pub struct Timers<K> {
    /// (deadline, sequence): ties on the deadline fire in arming order.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: HashMap<u64, K>,
    next_seq: u64,
}

/// Below this many heap entries, dead ones are left to drain on their own.
const COMPACT_MIN: usize = 64;

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers { heap: BinaryHeap::new(), live: HashMap::new(), next_seq: 0 }
    }
}

impl<K> Timers<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms a deadline at `at` carrying `key`.
    pub fn insert(&mut self, at: Instant, key: K) -> TimerId {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse((at, seq)));
        self.live.insert(seq, key);
        TimerId(seq)
    }

    /// Disarms `id`; returns its payload if it was still armed. A fired or already cancelled id is ignored.
    pub fn cancel(&mut self, id: TimerId) -> Option<K> {
        let key = self.live.remove(&id.0)?;
        if self.heap.len() > COMPACT_MIN && self.heap.len() > 2 * self.live.len() {
            let live = &self.live;
            self.heap.retain(|Reverse((_, seq))| live.contains_key(seq));
        }
        Some(key)
    }

    /// The earliest armed deadline, if any.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_dead_top();
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns one deadline that is due at `now` (earliest first), or `None` when none is.
    pub fn pop_due(&mut self, now: Instant) -> Option<(TimerId, K)> {
        self.drop_dead_top();
        let &Reverse((at, seq)) = self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        let key = self.live.remove(&seq)?;
        Some((TimerId(seq), key))
    }

    /// Number of armed deadlines.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Heap entries, dead ones included (for tests of the no-leak property).
    pub fn heap_len(&self) -> usize {
        self.heap.len()
    }

    fn drop_dead_top(&mut self) {
        while let Some(Reverse((_, seq))) = self.heap.peek() {
            if self.live.contains_key(seq) {
                break;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn fires_in_deadline_order_then_arming_order() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        t.insert(at(t0, 30), "c");
        t.insert(at(t0, 10), "a");
        t.insert(at(t0, 20), "b1");
        t.insert(at(t0, 20), "b2");
        assert_eq!(t.next_deadline(), Some(at(t0, 10)));
        assert!(t.pop_due(at(t0, 9)).is_none());
        let fired: Vec<_> = std::iter::from_fn(|| t.pop_due(at(t0, 25)).map(|(_, k)| k)).collect();
        assert_eq!(fired, ["a", "b1", "b2"]);
        assert_eq!(t.next_deadline(), Some(at(t0, 30)));
        assert_eq!(t.pop_due(at(t0, 30)).map(|(_, k)| k), Some("c"));
        assert_eq!(t.next_deadline(), None);
        assert!(t.is_empty());
    }

    #[test]
    fn cancelled_deadline_never_fires_and_is_not_the_next_deadline() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        let a = t.insert(at(t0, 10), 1);
        t.insert(at(t0, 20), 2);
        assert_eq!(t.cancel(a), Some(1));
        assert_eq!(t.cancel(a), None);
        assert_eq!(t.next_deadline(), Some(at(t0, 20)));
        assert_eq!(t.pop_due(at(t0, 100)).map(|(_, k)| k), Some(2));
        assert!(t.pop_due(at(t0, 100)).is_none());
    }

    #[test]
    fn stale_id_cannot_cancel_a_newer_deadline() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        let old = t.insert(at(t0, 10), "old");
        assert!(t.pop_due(at(t0, 10)).is_some());
        let new = t.insert(at(t0, 10), "new");
        assert_ne!(old, new);
        assert_eq!(t.cancel(old), None);
        assert_eq!(t.pop_due(at(t0, 10)), Some((new, "new")));
    }

    #[test]
    fn rearming_many_times_does_not_grow_the_heap() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        let mut ids: Vec<TimerId> = (0..10).map(|i| t.insert(at(t0, 1_000_000 + i), i)).collect();
        for round in 0..100_000u64 {
            let slot = (round % 10) as usize;
            t.cancel(ids[slot]);
            ids[slot] = t.insert(at(t0, 1_000_000 + round), slot as u64);
        }
        assert_eq!(t.len(), 10);
        assert!(t.heap_len() <= COMPACT_MIN + 2 * 10 + 1, "heap holds {} entries", t.heap_len());
    }
}
