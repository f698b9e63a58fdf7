//! What only the multi-threaded models need of the loop. The pooled ones (`reactor-pool`,
//! `leader-followers`) take a ready connection out of the slab ([`Reactor::take_ready`]), drive
//! it on their own thread and hand it back ([`Reactor::put_back`]); meanwhile its slot is
//! [`Held::Away`] and remembers what happened to it. The proactor (`proactor-pool`) keeps its
//! connections here and sends request heads to its workers; their replies come back through
//! `handler_replies`.

#[cfg(feature = "proxy")]
use std::sync::Arc;
use std::time::Instant;

use polling::{Event, PollMode};

use super::{Held, Reactor, here};
use crate::conn::{Conn, Env, Next};
use crate::http::session::Ctx;
#[cfg(feature = "proxy")]
use crate::proxy::upstream::Upstreams;

/// A connection lent to another thread by [`Reactor::take_ready`].
pub struct Taken {
    pub key: usize,
    pub conn: Conn,
    pub draining: bool,
}

impl Reactor {
    /// The upstream pool, for the threads that drive lent connections.
    #[cfg(feature = "proxy")]
    pub fn shared_upstreams(&self) -> Arc<std::sync::Mutex<Upstreams>> {
        Arc::clone(&self.upstreams)
    }

    /// Connections will be driven by other threads ([`Reactor::take_ready`]).
    pub fn lend_connections(&mut self) {
        self.lent = true;
    }

    /// Connections are driven by other threads: the loop queues them rather than drive them.
    pub(super) fn lent(&self) -> bool {
        self.lent
    }

    /// The thread about to `wait` will look at the timers again at `at` (see [`Reactor::wake_for`]).
    pub(super) fn set_wake_at(&mut self, at: Option<Instant>) {
        self.wake_at = at;
    }

    /// Handlers run on the proactor's workers.
    pub fn set_proactor(&mut self, link: crate::models::proactor::Link) {
        self.proactor = Some(link);
    }

    /// Replies the proactor's workers finished: each goes to its connection, if still open.
    pub(super) fn handler_replies(&mut self, now: Instant) {
        let Some(link) = &self.proactor else {
            return;
        };
        let done = link.take_done();
        for d in done {
            if let Some(c) =
                here(&mut self.conns, d.key).filter(|c| c.sched.generation == d.generation)
            {
                let mut env = env!(self, now, d.key);
                c.handler_replied(&d.head, d.reply.as_reply(), &mut env);
                self.drive(d.key, now);
            }
        }
        // Workers made room: requests that found their queue full go now, oldest first.
        if let Some(link) = &mut self.proactor {
            link.retry_stalled();
        }
    }

    /// Lends the next ready connection to the calling thread.
    pub fn take_ready(&mut self) -> Option<Taken> {
        while let Some((key, generation)) = self.ready.pop_front() {
            let Some(Held::Here(c)) = self.conns.get(key) else {
                continue;
            };
            if c.sched.generation != generation {
                continue;
            }
            let away = Held::Away {
                generation,
                timer_fired: false,
                #[cfg(feature = "proxy")]
                upstream: (false, false),
            };
            let Held::Here(mut conn) = std::mem::replace(&mut self.conns[key], away) else {
                unreachable!("checked above");
            };
            conn.sched.queued = false;
            return Some(Taken {
                key,
                conn,
                draining: self.draining_until.is_some(),
            });
        }
        None
    }

    /// Takes back a lent connection, with what driving it said, and arms it for its next event.
    pub fn put_back(&mut self, taken: Taken, mut next: Next) {
        let Taken { key, mut conn, .. } = taken;
        let now = Instant::now();
        let timer_fired = match self.conns.get(key) {
            Some(Held::Away {
                generation,
                timer_fired,
                #[cfg(feature = "proxy")]
                upstream,
            }) if *generation == conn.sched.generation && !self.finished => {
                #[cfg(feature = "proxy")]
                if *upstream != (false, false) {
                    conn.upstream_ready(upstream.0, upstream.1);
                    if next == Next::Wait {
                        next = Next::Again;
                    }
                }
                *timer_fired
            }
            _ => {
                // Shutdown finished while it was away.
                #[cfg(feature = "proxy")]
                if let Some(up) = conn.take_upstream() {
                    self.upstreams().close(up, &self.poller);
                }
                let _ = self.poller.delete(conn.socket());
                return;
            }
        };
        if timer_fired {
            conn.sched.scheduled = None;
        }
        // A verdict on its held request came while it was away.
        #[cfg(feature = "auth")]
        if let Some(ok) = self.verdict_kept(key, conn.sched.generation) {
            conn.auth_verdict(ok);
            if next == Next::Wait {
                next = Next::Again;
            }
        }
        if self.draining_until.is_some() && next != Next::Close {
            if !conn.is_shutting_down() {
                // Back for the first time since shutdown began: it reads once more what it was
                // sent before (bytes may have come after the thread's last read), then decides.
                conn.begin_shutdown();
                next = Next::Again;
            } else if conn.is_idle() {
                next = Next::Close;
            } else {
                conn.close_after_current();
            }
        }
        self.conns[key] = Held::Here(conn);
        match next {
            Next::Close => self.close(key),
            Next::Again => self.queue(key),
            Next::Wait => self.arm(key),
        }
        if next != Next::Close {
            self.set_timer(key, now);
        }
        // Its thread may have put an upstream connection in the pool: the waiting thread must
        // wake to close it when it has been idle too long.
        if let Some(at) = self.pool_expiry() {
            self.wake_for(at);
        }
        let accept_waits = next == Next::Close && self.accept_ready();
        if !self.ready.is_empty() || self.draining_until.is_some() || accept_waits {
            // The waiting thread must come and hand it out (or accept the connection waiting for
            // this one's place, or see that shutdown is done).
            let _ = self.poller.notify();
        }
    }

    /// Re-arms a one-shot registration with the interest the connection has now.
    fn arm(&mut self, key: usize) {
        let Some(c) = here(&mut self.conns, key) else {
            return;
        };
        let (read, write) = c.interest();
        let ev = Event::new(key, read, write);
        if let Err(e) = self
            .poller
            .modify_with_mode(c.socket(), ev, PollMode::Oneshot)
        {
            log::debug!("poller modify: {e}");
        }
    }

    /// Another thread set a deadline: wake the waiting thread if it would sleep past it.
    pub(super) fn wake_for(&self, deadline: Instant) {
        if self.lent && self.wake_at.is_none_or(|w| deadline < w) {
            let _ = self.poller.notify();
        }
    }
}
