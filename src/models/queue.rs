//! A bounded queue between threads: `try_push` never blocks (a full queue is the caller's signal
//! to push back), `pop` blocks until an item comes or the queue is closed.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

pub struct Queue<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
    capacity: usize,
}

struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> Queue<T> {
    pub fn new(capacity: usize) -> Queue<T> {
        Queue {
            inner: Mutex::new(Inner {
                items: VecDeque::with_capacity(capacity),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item`, or gives it back when the queue is full or closed.
    pub fn try_push(&self, item: T) -> Result<(), T> {
        let mut q = self.lock();
        if q.closed || q.items.len() >= self.capacity {
            return Err(item);
        }
        q.items.push_back(item);
        drop(q);
        self.ready.notify_one();
        Ok(())
    }

    pub fn has_room(&self) -> bool {
        self.lock().items.len() < self.capacity
    }

    /// The next item; `None` once the queue is closed and empty.
    pub fn pop(&self) -> Option<T> {
        let mut q = self.lock();
        loop {
            if let Some(item) = q.items.pop_front() {
                return Some(item);
            }
            if q.closed {
                return None;
            }
            q = self.ready.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Wakes every waiting `pop` and returns what was still queued: after a shutdown nobody
    /// waits for those answers.
    pub fn close(&self) -> Vec<T> {
        let mut q = self.lock();
        q.closed = true;
        let left = q.items.drain(..).collect();
        drop(q);
        self.ready.notify_all();
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_closable() {
        let q = Queue::new(2);
        assert!(q.try_push(1).is_ok());
        assert!(q.try_push(2).is_ok());
        assert_eq!(q.try_push(3), Err(3));
        assert!(!q.has_room());
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.close(), vec![2]);
        assert_eq!(q.try_push(4), Err(4));
        assert_eq!(q.pop(), None);
    }
}
