//! Deadlines: each connection has one (its timer kind picks the timeout), kept in the heap of
//! `timer.rs` beside the slab; the loop wakes no later than the nearest deadline of any kind, and
//! a connection whose deadline passed is answered (a request or upstream timeout) or closed.

use std::time::Instant;

use super::{Held, Reactor, here};
use crate::conn::{Env, TimerKind};
use crate::http::session::Ctx;

impl Reactor {
    /// The nearest deadline: a connection's, the end of an accept pause or of the grace period,
    /// or the next look for idle connections to close at the limit.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let reclaim = self.accept.reclaim_after.filter(|_| {
            self.accept_ready() && self.accept.paused_until.is_none() && !self.has_room()
        });
        [
            self.timers.next(),
            self.accept.paused_until,
            self.draining_until,
            reclaim,
            self.pool_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Moves a connection's deadline when its timer kind changes or it made progress.
    pub(super) fn set_timer(&mut self, key: usize, now: Instant) {
        let Some(c) = here(&mut self.conns, key) else {
            return;
        };
        let kind = c.timer_kind();
        // A body's deadline is overall: progress does not move it.
        if kind == c.sched.timer && (!c.sched.wrote || kind == TimerKind::Body) {
            // The deadline stands. If its entry is gone (it fired while the connection was lent
            // out or queued), push it again: a deadline already past fires on the next turn.
            if c.sched.scheduled.is_none() {
                let deadline = c.sched.deadline;
                c.sched.scheduled = Some(deadline);
                self.timers.push(deadline, key, c.sched.generation);
                self.wake_for(deadline);
            }
            return;
        }
        c.sched.timer = kind;
        c.sched.wrote = false;
        c.sched.deadline = now
            + match kind {
                TimerKind::Idle => self.cfg.idle_timeout,
                TimerKind::Handshake => self.cfg.header_timeout,
                TimerKind::Request => self.cfg.header_timeout,
                TimerKind::Send => self.cfg.send_timeout,
                TimerKind::Linger => self.cfg.linger_timeout,
                TimerKind::Connect => self.cfg.proxy_connect_timeout,
                TimerKind::Upstream => self.cfg.proxy_timeout,
                TimerKind::Body => self.cfg.header_timeout,
                TimerKind::Tunnel => self.cfg.tunnel_timeout,
            };
        if c.sched.scheduled.is_none_or(|s| c.sched.deadline < s) {
            c.sched.scheduled = Some(c.sched.deadline);
            self.timers.push(c.sched.deadline, key, c.sched.generation);
            let deadline = c.sched.deadline;
            self.wake_for(deadline);
        }
    }

    /// When the next idle upstream connection is due to close (only with proxy routes: a
    /// static server does not look).
    pub(super) fn pool_expiry(&self) -> Option<Instant> {
        #[cfg(feature = "proxy")]
        if !self.routes.is_empty() {
            return self.upstreams().next_expiry();
        }
        None
    }

    pub(super) fn expire(&mut self, now: Instant) {
        #[cfg(feature = "proxy")]
        if !self.routes.is_empty() {
            self.upstreams().expire(now, &self.poller);
        }
        let lent = self.lent();
        while let Some((at, key, generation)) = self.timers.pop_due(now) {
            let c = match self.conns.get_mut(key) {
                Some(Held::Here(c)) => c,
                #[cfg(feature = "models")]
                Some(Held::Away {
                    generation: g,
                    timer_fired,
                    ..
                }) if *g == generation => {
                    // Another thread has it; it gets a fresh entry when it comes back.
                    *timer_fired = true;
                    continue;
                }
                _ => continue,
            };
            if c.sched.generation != generation || c.sched.scheduled != Some(at) {
                continue; // superseded by an earlier entry, or a closed connection's
            }
            if c.sched.deadline > now {
                c.sched.scheduled = Some(c.sched.deadline);
                self.timers.push(c.sched.deadline, key, generation);
                continue;
            }
            c.sched.scheduled = None;
            if lent && c.sched.queued {
                // Readiness came in time and a thread will drive it; its deadline is settled
                // when it is handed back (`put_back` -> `set_timer`).
                continue;
            }
            match c.sched.timer {
                TimerKind::Request => {
                    log::debug!("request timeout on connection {key}");
                    let mut env = env!(self, now, key);
                    c.request_timed_out(&mut env);
                    c.set_ready(false, true);
                    c.sched.wrote = true; // what follows gets a deadline from now
                    self.drive(key, now);
                }
                #[cfg(feature = "proxy")]
                TimerKind::Connect | TimerKind::Upstream | TimerKind::Body => {
                    let mut env = env!(self, now, key);
                    c.upstream_timed_out(&mut env);
                    // The next upstream (failover) or the error answer gets a deadline of its
                    // own, though the timer kind may stay the same.
                    c.sched.wrote = true;
                    self.drive(key, now);
                }
                #[cfg(not(feature = "proxy"))]
                TimerKind::Connect | TimerKind::Upstream | TimerKind::Body => self.close(key),
                TimerKind::Tunnel => {
                    log::debug!("tunnel idle on connection {key}: closed");
                    self.close(key);
                }
                TimerKind::Handshake => {
                    log::debug!("TLS handshake timeout on connection {key}");
                    self.close(key);
                }
                TimerKind::Idle | TimerKind::Send | TimerKind::Linger => self.close(key),
            }
        }
    }
}
