//! The event loop: one poller in edge-triggered mode, a slab of connections whose keys are the
//! poller keys, a ready list for connections that stopped before `WouldBlock`, timers, accept with
//! back-off, and graceful shutdown.
//!
//! The single-threaded models call [`Reactor::run`]. The pooled ones (`reactor-pool`,
//! `leader-followers`) keep the same reactor behind a lock and use its parts: [`Reactor::wait_timeout`]
//! and [`Reactor::after_wait`] around a `wait` made without the lock, [`Reactor::take_ready`] to
//! lend a ready connection to another thread, and [`Reactor::put_back`] when it is done with it.
//! Lent connections are registered one-shot, so no second thread is woken for them meanwhile.

pub mod timer;

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use polling::{Event, Events, PollMode, Poller};
use slab::Slab;

use crate::app::App;
use crate::config::{Config, Route};
use crate::conn::{Conn, Env, Next, Pools, TimerKind};
use crate::http::date::DateCache;
use crate::http::session::{Ctx, Session};
#[cfg(feature = "proxy")]
use crate::proxy::upstream::{UPSTREAM_KEYS, Upstreams};
use crate::signal::SignalPipe;
use timer::Timers;

/// Everything a connection borrows from the loop, built from disjoint fields so that the
/// connection itself can stay borrowed from the slab.
macro_rules! env {
    ($r:ident, $now:expr, $key:expr) => {
        Env {
            ctx: Ctx {
                now: $now,
                date: $r.dates.http(),
                log_date: $r.dates.clf(),
                limits: &$r.cfg.limits,
                routes: &$r.routes,
                trust_forwarded: $r.cfg.proxy_trust_forwarded,
                defer: $r.proactor.is_some(),
            },
            handler: &mut $r.app,
            pools: &mut $r.pools,
            budget: $r.cfg.budget,
            #[cfg(feature = "proxy")]
            poller: &$r.poller,
            #[cfg(feature = "proxy")]
            upstreams: &$r.upstreams,
            key: $key,
            draining: $r.draining_until.is_some(),
            jobs: $r.proactor.as_ref().map(|p| &*p.jobs),
        }
    };
}

const LISTENER: usize = usize::MAX - 1;
const SIGNALS: usize = usize::MAX - 2;
/// Accepts per loop turn, so that a connection storm does not starve the connections we have.
const ACCEPT_BATCH: usize = 256;
/// How long accepting pauses after the process ran out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a full server waits before it looks for idle connections to close again.
const RECLAIM_RETRY: Duration = Duration::from_millis(50);

struct Accept {
    /// The listener had an edge and was not drained to `WouldBlock` yet.
    ready: bool,
    /// Out of descriptors: retry at this time, or as soon as a connection closes.
    paused_until: Option<Instant>,
    /// Logged the current burst of descriptor exhaustion already.
    warned: bool,
    /// At the connection limit with clients waiting and no idle connection to close: look again
    /// at this time (a scan of every connection is not made on every turn).
    reclaim_after: Option<Instant>,
    /// Logged the current burst of reclaiming already.
    reclaiming: bool,
}

/// A slab slot: the connection, or the note that another thread has it for now.
// Nearly every slot holds its connection: boxing it would cost an allocation and an indirection
// per connection for the few that are away.
#[allow(clippy::large_enum_variant)]
pub enum Held {
    Here(Conn),
    Away {
        generation: u32,
        /// Its timer entry fired while it was away (the entry is gone; one must be pushed again).
        timer_fired: bool,
        /// Readiness of its upstream connection that came while it was away (edge-triggered:
        /// it would not come again).
        #[cfg(feature = "proxy")]
        upstream: (bool, bool),
    },
}

/// One `--max-conns` for several loops (the shards): a count they reserve from before accepting,
/// and the pollers to wake when a connection closes at the limit (another shard may have one
/// waiting in its backlog).
pub struct SharedLimit {
    open: std::sync::atomic::AtomicUsize,
    max: usize,
    /// A shard wants another to close an idle connection ([`SharedLimit::want_room`]).
    wanted: std::sync::atomic::AtomicBool,
    pollers: Vec<Arc<Poller>>,
}

impl SharedLimit {
    pub fn new(max: usize, pollers: Vec<Arc<Poller>>) -> SharedLimit {
        SharedLimit {
            open: 0.into(),
            max,
            wanted: false.into(),
            pollers,
        }
    }

    fn has_room(&self) -> bool {
        self.open.load(Ordering::Relaxed) < self.max
    }

    fn reserve(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// A shard at the limit with clients waiting and no idle connection of its own asks the
    /// others to close one of theirs.
    fn want_room(&self, me: &Arc<Poller>) {
        if self.wanted.swap(true, Ordering::AcqRel) {
            return;
        }
        for p in self.pollers.iter().filter(|p| !Arc::ptr_eq(p, me)) {
            let _ = p.notify();
        }
    }

    /// Takes a request made by [`SharedLimit::want_room`], once.
    fn room_wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed) && self.wanted.swap(false, Ordering::AcqRel)
    }

    fn release(&self, me: &Arc<Poller>) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == self.max {
            for p in self.pollers.iter().filter(|p| !Arc::ptr_eq(p, me)) {
                let _ = p.notify();
            }
        }
    }
}

/// How far a stop asked from another thread (or a shard's peer) has gone; it only rises.
#[derive(Default)]
pub struct Stop(std::sync::atomic::AtomicU8);

impl Stop {
    pub const NONE: u8 = 0;
    /// Finish the connections in flight within the grace period.
    pub const GRACEFUL: u8 = 1;
    /// Close everything now.
    pub const NOW: u8 = 2;

    pub fn request(&self, level: u8) {
        self.0.fetch_max(level, Ordering::Relaxed);
    }

    pub fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A connection lent to another thread by [`Reactor::take_ready`].
pub struct Taken {
    pub key: usize,
    pub conn: Conn,
    pub draining: bool,
}

/// The connection in slot `key` when it is here.
fn here(conns: &mut Slab<Held>, key: usize) -> Option<&mut Conn> {
    match conns.get_mut(key) {
        Some(Held::Here(c)) => Some(c),
        _ => None,
    }
}

pub struct Reactor {
    poller: Arc<Poller>,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    conns: Slab<Held>,
    timers: Timers,
    ready: VecDeque<(usize, u32)>,
    pools: Pools,
    app: App,
    dates: DateCache,
    cfg: Arc<Config>,
    max_conns: usize,
    accept: Accept,
    next_generation: u32,
    stop: Arc<Stop>,
    signals: Option<SignalPipe>,
    /// Set once shutdown has begun: the end of the grace period.
    draining_until: Option<Instant>,
    routes: Vec<Route>,
    #[cfg(feature = "proxy")]
    upstreams: Arc<std::sync::Mutex<Upstreams>>,
    /// Connections are driven by other threads (`reactor-pool`, `leader-followers`): an event
    /// queues the connection instead of driving it, and sockets are registered one-shot.
    lent: bool,
    /// The latest moment the thread in `wait` will look at the timers again (`None`: never);
    /// an earlier deadline set by another thread must wake it.
    wake_at: Option<Instant>,
    /// Handlers run on worker threads (`proactor-pool`).
    proactor: Option<crate::models::proactor::Link>,
    /// Loops to stop with this one (the shards of a sharded server).
    peers: Vec<crate::ServerHandle>,
    /// Shutdown is complete: connections handed back now are closed.
    finished: bool,
    /// The connection limit shared with other shards, if any (else `max_conns` of this loop).
    limit: Option<Arc<SharedLimit>>,
    /// Connections whose deferred request found the workers' queue full (`proactor-pool`).
    stalled: VecDeque<(usize, u32)>,
}

impl Reactor {
    pub fn new(
        cfg: Arc<Config>,
        listener: TcpListener,
        app: App,
        max_conns: usize,
    ) -> io::Result<Reactor> {
        let poller = Arc::new(Poller::new()?);
        // SAFETY: the listener is deleted from the poller before it is dropped (shutdown, Drop).
        unsafe { poller.add_with_mode(&listener, Event::readable(LISTENER), PollMode::Edge)? };
        Ok(Reactor {
            poller,
            local_addr: listener.local_addr()?,
            listener: Some(listener),
            conns: Slab::new(),
            timers: Timers::default(),
            ready: VecDeque::with_capacity(64),
            pools: Pools::default(),
            app,
            dates: DateCache::default(),
            max_conns,
            accept: Accept {
                ready: true,
                paused_until: None,
                warned: false,
                reclaim_after: None,
                reclaiming: false,
            },
            next_generation: 0,
            stop: Arc::new(Stop::default()),
            signals: None,
            draining_until: None,
            routes: cfg.proxies.clone(),
            #[cfg(feature = "proxy")]
            upstreams: Arc::new(std::sync::Mutex::new(Upstreams::new(
                cfg.proxies.clone(),
                cfg.proxy_idle,
                cfg.proxy_fail_timeout,
            ))),
            cfg,
            lent: false,
            wake_at: None,
            proactor: None,
            peers: Vec::new(),
            finished: false,
            stalled: VecDeque::new(),
            limit: None,
        })
    }

    #[cfg(feature = "proxy")]
    fn upstreams(&self) -> std::sync::MutexGuard<'_, Upstreams> {
        self.upstreams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The upstream pool, for the threads that drive lent connections.
    #[cfg(feature = "proxy")]
    pub fn shared_upstreams(&self) -> Arc<std::sync::Mutex<Upstreams>> {
        Arc::clone(&self.upstreams)
    }

    /// Connections will be driven by other threads ([`Reactor::take_ready`]).
    pub fn lend_connections(&mut self) {
        self.lent = true;
    }

    /// Handlers run on the proactor's workers.
    pub fn set_proactor(&mut self, link: crate::models::proactor::Link) {
        self.proactor = Some(link);
    }

    /// Counts connections against a limit shared with other loops.
    pub fn share_limit(&mut self, limit: Arc<SharedLimit>) {
        self.limit = Some(limit);
    }

    fn has_room(&self) -> bool {
        match &self.limit {
            Some(l) => l.has_room(),
            None => self.conns.len() < self.max_conns,
        }
    }

    /// These loops shut down when this one does.
    pub fn set_peers(&mut self, peers: Vec<crate::ServerHandle>) {
        self.peers = peers;
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.cfg
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn poller(&self) -> Arc<Poller> {
        Arc::clone(&self.poller)
    }

    pub fn stop_flag(&self) -> Arc<Stop> {
        Arc::clone(&self.stop)
    }

    /// Makes SIGINT and SIGTERM begin a graceful shutdown.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let pipe = SignalPipe::install()?;
        // SAFETY: the pipe lives in `self` and is deleted from the poller in Drop.
        unsafe {
            self.poller
                .add_with_mode(pipe.source(), Event::readable(SIGNALS), PollMode::Edge)?
        };
        self.signals = Some(pipe);
        Ok(())
    }

    /// Runs the loop on this thread until shutdown is complete.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::new();
        loop {
            let timeout = self.wait_timeout(Instant::now());
            events.clear();
            self.poller.wait(&mut events, timeout)?;
            if self.after_wait(&events) {
                return Ok(());
            }
        }
    }

    /// Handles what one `wait` returned, then the ready list, accepts, finished handler work and
    /// timers. Returns true once shutdown is complete.
    pub fn after_wait(&mut self, events: &Events) -> bool {
        let now = Instant::now();
        self.dates.update(SystemTime::now());
        for ev in events.iter() {
            match ev.key {
                LISTENER => self.accept.ready = true,
                SIGNALS => {
                    let arrived = self.signals.as_ref().map(|s| s.drain()).unwrap_or_default();
                    if arrived.reopen {
                        crate::logging::reopen();
                    }
                    for _ in 0..arrived.stop {
                        if self.draining_until.is_some() {
                            self.end_grace(now);
                        } else {
                            self.begin_shutdown(now);
                        }
                    }
                }
                #[cfg(feature = "proxy")]
                key if key >= UPSTREAM_KEYS => {
                    // Owner and idle handling under one lock: a worker may lend the connection
                    // out the moment the lock is released.
                    let owner = {
                        let mut ups = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
                        let owner = ups.owner(key);
                        if owner.is_none() {
                            ups.idle_event(key, &self.poller);
                        }
                        owner
                    };
                    match owner.map(|client| (client, self.conns.get_mut(client))) {
                        Some((client, Some(Held::Here(c)))) => {
                            c.upstream_ready(ev.readable, ev.writable);
                            self.drive(client, now);
                        }
                        // Another thread drives the client now: it gets the news when back.
                        Some((_, Some(Held::Away { upstream, .. }))) => {
                            upstream.0 |= ev.readable;
                            upstream.1 |= ev.writable;
                        }
                        Some((_, None)) | None => {}
                    }
                }
                key => {
                    if let Some(c) = here(&mut self.conns, key) {
                        c.readable |= ev.readable;
                        c.writable |= ev.writable;
                        self.drive(key, now);
                    }
                }
            }
        }
        match self.stop.get() {
            Stop::NONE => {}
            Stop::GRACEFUL => self.begin_shutdown(now),
            _ => {
                self.begin_shutdown(now);
                self.end_grace(now);
            }
        }
        if !self.lent {
            // Connections that stopped early; ones queued again during this pass wait a turn.
            for _ in 0..self.ready.len() {
                let Some((key, generation)) = self.ready.pop_front() else {
                    break;
                };
                if let Some(c) = here(&mut self.conns, key).filter(|c| c.generation == generation) {
                    c.queued = false;
                    self.drive(key, now);
                }
            }
        }
        self.handler_replies(now);
        // Another shard asked for room (not this one: it has no idle connection itself).
        if self.accept.reclaim_after.is_none()
            && self.limit.as_ref().is_some_and(|l| l.room_wanted())
            && self.close_idle() == 0
        {
            log::debug!("no idle connection here to make room for another shard");
        }
        // Accept after the batch, so that no event of this batch meets a reused slab key.
        self.accept(now);
        self.expire(now);
        log::logger().flush();
        if let Some(until) = self.draining_until
            && (self.conns.is_empty() || now >= until)
        {
            if !self.conns.is_empty() {
                log::warn!(
                    "grace period over: closing {} connections",
                    self.conns.len()
                );
            }
            self.finished = true;
        }
        self.finished
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Replies the proactor's workers finished: each goes to its connection, if still open.
    fn handler_replies(&mut self, now: Instant) {
        let Some(link) = &self.proactor else {
            return;
        };
        let done = link.take_done();
        for d in done {
            if let Some(c) = here(&mut self.conns, d.key).filter(|c| c.generation == d.generation) {
                let mut env = env!(self, now, d.key);
                c.handler_replied(&d.head, d.reply.as_reply(), &mut env);
                self.drive(d.key, now);
            }
        }
        // Workers made room: requests that found their queue full go now, oldest first.
        while let Some(&(key, generation)) = self.stalled.front() {
            if let Some(c) = here(&mut self.conns, key).filter(|c| c.generation == generation) {
                let mut env = env!(self, now, key);
                if !c.submit_deferred(&mut env) {
                    break;
                }
                c.stalled = false;
            }
            self.stalled.pop_front();
        }
    }

    /// Lends the next ready connection to the calling thread.
    pub fn take_ready(&mut self) -> Option<Taken> {
        while let Some((key, generation)) = self.ready.pop_front() {
            let Some(Held::Here(c)) = self.conns.get(key) else {
                continue;
            };
            if c.generation != generation {
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
            conn.queued = false;
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
            }) if *generation == conn.generation && !self.finished => {
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
                let _ = self.poller.delete(&conn.sock);
                return;
            }
        };
        if timer_fired {
            conn.scheduled = None;
        }
        if self.draining_until.is_some() && next != Next::Close {
            if conn.is_idle() {
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
        let accept_waits = next == Next::Close && self.accept.ready;
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
        if let Err(e) = self.poller.modify_with_mode(&c.sock, ev, PollMode::Oneshot) {
            log::debug!("poller modify: {e}");
        }
    }

    /// Another thread set a deadline: wake the waiting thread if it would sleep past it.
    fn wake_for(&self, deadline: Instant) {
        if self.lent && self.wake_at.is_none_or(|w| deadline < w) {
            let _ = self.poller.notify();
        }
    }

    fn queue(&mut self, key: usize) {
        if let Some(c) = here(&mut self.conns, key)
            && !c.queued
        {
            c.queued = true;
            self.ready.push_back((key, c.generation));
        }
    }

    /// How long the next `wait` may sleep. With lent connections the ready list is handed out
    /// by the caller, so it does not shorten the wait here.
    pub fn wait_timeout(&mut self, now: Instant) -> Option<Duration> {
        let can_accept = self.accept.ready
            && self.listener.is_some()
            && self.has_room()
            && self.accept.paused_until.is_none_or(|t| t <= now);
        if (!self.lent && !self.ready.is_empty()) || can_accept {
            self.wake_at = Some(now);
            return Some(Duration::ZERO);
        }
        let reclaim = self.accept.reclaim_after.filter(|_| {
            self.accept.ready && self.accept.paused_until.is_none() && !self.has_room()
        });
        self.wake_at = [
            self.timers.next(),
            self.accept.paused_until,
            self.draining_until,
            reclaim,
        ]
        .into_iter()
        .flatten()
        .min();
        self.wake_at.map(|t| t.saturating_duration_since(now))
    }

    /// Drives a connection here, or queues it for another thread when connections are lent.
    fn drive(&mut self, key: usize, now: Instant) {
        if self.lent {
            return self.queue(key);
        }
        let Some(conn) = here(&mut self.conns, key) else {
            return;
        };
        let mut env = env!(self, now, key);
        let next = conn.drive(&mut env);
        if !conn.stalled && conn.waits_for_worker() {
            conn.stalled = true;
            self.stalled.push_back((key, conn.generation));
        }
        match next {
            Next::Close => self.close(key),
            Next::Again => {
                self.queue(key);
                self.set_timer(key, now);
            }
            Next::Wait => self.set_timer(key, now),
        }
    }

    /// Moves a connection's deadline when its timer kind changes or it made progress.
    fn set_timer(&mut self, key: usize, now: Instant) {
        let Some(c) = here(&mut self.conns, key) else {
            return;
        };
        let kind = c.timer_kind();
        // A body's deadline is overall: progress does not move it.
        if kind == c.timer && (!c.wrote || kind == TimerKind::Body) {
            // The deadline stands. If its entry is gone (it fired while the connection was lent
            // out or queued), push it again: a deadline already past fires on the next turn.
            if c.scheduled.is_none() {
                let deadline = c.deadline;
                c.scheduled = Some(deadline);
                self.timers.push(deadline, key, c.generation);
                self.wake_for(deadline);
            }
            return;
        }
        c.timer = kind;
        c.wrote = false;
        c.deadline = now
            + match kind {
                TimerKind::Idle => self.cfg.idle_timeout,
                TimerKind::Request => self.cfg.header_timeout,
                TimerKind::Send => self.cfg.send_timeout,
                TimerKind::Linger => self.cfg.linger_timeout,
                TimerKind::Connect => self.cfg.proxy_connect_timeout,
                TimerKind::Upstream => self.cfg.proxy_timeout,
                TimerKind::Body => self.cfg.header_timeout,
            };
        if c.scheduled.is_none_or(|s| c.deadline < s) {
            c.scheduled = Some(c.deadline);
            self.timers.push(c.deadline, key, c.generation);
            let deadline = c.deadline;
            self.wake_for(deadline);
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, key, generation)) = self.timers.pop_due(now) {
            let c = match self.conns.get_mut(key) {
                Some(Held::Here(c)) => c,
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
            if c.generation != generation || c.scheduled != Some(at) {
                continue; // superseded by an earlier entry, or a closed connection's
            }
            if c.deadline > now {
                c.scheduled = Some(c.deadline);
                self.timers.push(c.deadline, key, generation);
                continue;
            }
            c.scheduled = None;
            if self.lent && c.queued {
                // Readiness came in time and a thread will drive it; its deadline is settled
                // when it is handed back (`put_back` -> `set_timer`).
                continue;
            }
            match c.timer {
                TimerKind::Request => {
                    log::debug!("request timeout on connection {key}");
                    let mut env = env!(self, now, key);
                    c.request_timed_out(&mut env);
                    c.writable = true;
                    c.wrote = true; // what follows gets a deadline from now
                    self.drive(key, now);
                }
                #[cfg(feature = "proxy")]
                TimerKind::Connect | TimerKind::Upstream | TimerKind::Body => {
                    let mut env = env!(self, now, key);
                    c.upstream_timed_out(&mut env);
                    // The next upstream (failover) or the error answer gets a deadline of its
                    // own, though the timer kind may stay the same.
                    c.wrote = true;
                    self.drive(key, now);
                }
                #[cfg(not(feature = "proxy"))]
                TimerKind::Connect | TimerKind::Upstream | TimerKind::Body => self.close(key),
                TimerKind::Idle | TimerKind::Send | TimerKind::Linger => self.close(key),
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        if self.accept.paused_until.is_some_and(|t| t > now) {
            return;
        }
        self.accept.paused_until = None;
        let Some(listener) = &self.listener else {
            return;
        };
        let fd = listener.as_raw_fd();
        let mut n = 0;
        while self.accept.ready && n < ACCEPT_BATCH {
            if !self.has_room() && !self.make_room(fd, now) {
                break;
            }
            n += 1;
            if let Some(l) = &self.limit
                && !l.reserve()
            {
                break; // another shard took the last place
            }
            let accepted = accept4(fd);
            if let (Some(l), Err(_)) = (&self.limit, &accepted) {
                l.release(&self.poller);
            }
            match accepted {
                Ok((sock, peer)) => {
                    self.accept.warned = false;
                    if self.has_room() {
                        self.accept.reclaiming = false;
                    }
                    let _ = sock.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    // Lent connections are armed one-shot when they are first put back.
                    let (ev, mode) = if self.lent {
                        (Event::none(key), PollMode::Oneshot)
                    } else {
                        (Event::all(key), PollMode::Edge)
                    };
                    // SAFETY: the socket is deleted from the poller in `close` before it is dropped.
                    if let Err(e) = unsafe { self.poller.add_with_mode(&sock, ev, mode) } {
                        log::error!("cannot watch a new connection: {e}");
                        if let Some(l) = &self.limit {
                            l.release(&self.poller);
                        }
                        continue;
                    }
                    self.next_generation = self.next_generation.wrapping_add(1);
                    let session = Session::new(peer.map(|a| a.ip()));
                    let mut conn = Conn::new(sock, self.next_generation, session, now);
                    conn.deadline = now + self.cfg.idle_timeout;
                    conn.scheduled = Some(conn.deadline);
                    self.timers.push(conn.deadline, key, conn.generation);
                    entry.insert(Held::Here(conn));
                    // Data often arrives with the handshake: try it now rather than after a wait.
                    self.drive(key, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.accept.ready = false,
                Err(e) if is_out_of_descriptors(&e) => {
                    if !self.accept.warned {
                        log::warn!(
                            "accept: {e}; pausing accepts until a connection closes ({} open)",
                            self.conns.len()
                        );
                        self.accept.warned = true;
                    }
                    self.accept.paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
                // The peer gave up before we accepted, and similar per-connection failures.
                Err(e) => log::debug!("accept: {e}"),
            }
        }
    }

    /// At the connection limit with a client waiting in the backlog, closes the connections
    /// that have waited longest for a request (kept-alive ones, and new ones that sent nothing),
    /// as nginx reuses its idle connections: otherwise a few hundred silent sockets would lock
    /// every new client out until their idle timeout. True when a place was made.
    fn make_room(&mut self, listener: i32, now: Instant) -> bool {
        if self.accept.reclaim_after.is_some_and(|t| t > now) {
            return false;
        }
        self.accept.reclaim_after = None;
        if !backlog_waiting(listener) {
            // Nothing waits: the next connection to arrive brings a new edge.
            self.accept.ready = false;
            return false;
        }
        if !self.accept.reclaiming {
            log::warn!(
                "at the connection limit ({} open here): closing idle connections to make room",
                self.conns.len()
            );
            self.accept.reclaiming = true;
        }
        if self.close_idle() == 0 {
            // Another shard may have idle connections where this one has none.
            if let Some(l) = &self.limit {
                l.want_room(&self.poller);
            }
            self.accept.reclaim_after = Some(now + RECLAIM_RETRY);
            return false;
        }
        self.has_room()
    }

    /// Closes the connections that have waited longest for a request, a few at a time (enough
    /// for a burst without emptying the keep-alives); returns how many.
    fn close_idle(&mut self) -> usize {
        let mut idle: Vec<(Instant, usize)> = self
            .conns
            .iter()
            .filter_map(|(key, held)| match held {
                Held::Here(c) if c.timer == TimerKind::Idle && !c.queued && c.is_idle() => {
                    Some((c.deadline, key))
                }
                _ => None,
            })
            .collect();
        let n = (idle.len() / 8).clamp(1, 32).min(idle.len());
        if n > 0 && n < idle.len() {
            idle.select_nth_unstable(n - 1);
        }
        for &(_, key) in &idle[..n] {
            self.close(key);
        }
        n
    }

    fn close(&mut self, key: usize) {
        #[allow(unused_mut)] // the upstream is taken out of it with the proxy only
        let Held::Here(mut conn) = self.conns.remove(key) else {
            unreachable!("only a connection that is here is closed");
        };
        #[cfg(feature = "proxy")]
        if let Some(up) = conn.take_upstream() {
            self.upstreams().close(up, &self.poller);
        }
        if let Err(e) = self.poller.delete(&conn.sock) {
            log::debug!("poller delete: {e}");
        }
        drop(conn);
        if let Some(l) = &self.limit {
            l.release(&self.poller);
        }
        // A descriptor was freed: accepting may go on at once.
        self.accept.paused_until = None;
        let conns = &self.conns;
        self.timers
            .compact(conns.len(), |at, key, generation| match conns.get(key) {
                Some(Held::Here(c)) => c.generation == generation && c.scheduled == Some(at),
                Some(Held::Away { generation: g, .. }) => *g == generation,
                None => false,
            });
    }

    /// A second SIGTERM or SIGINT while draining: the grace period ends now, here and in the
    /// peers.
    fn end_grace(&mut self, now: Instant) {
        if self.draining_until.is_some_and(|t| t > now) {
            log::warn!(
                "second stop signal: closing {} connections now",
                self.conns.len()
            );
            self.draining_until = Some(now);
            for peer in &self.peers {
                peer.stop_now();
            }
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.draining_until.is_some() {
            return;
        }
        log::info!("shutting down: finishing {} connections", self.conns.len());
        for peer in &self.peers {
            peer.shutdown();
        }
        self.draining_until = Some(now + self.cfg.grace);
        // Connections already in the backlog were made before the signal: take them (and what
        // they have sent) rather than reset them when the listener closes.
        self.accept.ready = true;
        self.accept(now);
        if let Some(l) = self.listener.take() {
            let _ = self.poller.delete(&l);
        }
        // Connections lent out are told when they come back (`put_back`), and so are those queued
        // to be lent: they may have a request not read yet.
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(c) = here(&mut self.conns, key) else {
                continue;
            };
            if self.lent && c.queued {
                continue;
            }
            if c.is_idle() {
                self.close(key);
            } else {
                c.close_after_current();
                self.drive(key, now);
            }
        }
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        #[cfg(feature = "proxy")]
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        for (_, held) in self.conns.iter_mut() {
            let Held::Here(c) = held else { continue };
            let _ = self.poller.delete(&c.sock);
            #[cfg(feature = "proxy")]
            if let Some(up) = c.take_upstream() {
                upstreams.close(up, &self.poller);
            }
        }
        #[cfg(feature = "proxy")]
        upstreams.clear(&self.poller);
        #[cfg(feature = "proxy")]
        drop(upstreams);
        if let Some(l) = &self.listener {
            let _ = self.poller.delete(l);
        }
        if let Some(s) = &self.signals {
            let _ = self.poller.delete(s.source());
        }
    }
}

/// True when a connection waits in the listener's backlog (a zero-timeout poll: made only at
/// the connection limit, where `accept` would take one we have no place for).
fn backlog_waiting(listener: i32) -> bool {
    let mut p = libc::pollfd {
        fd: listener,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd and a zero timeout; the listener's descriptor is open.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// accept4 with SOCK_NONBLOCK, saving the fcntl that `TcpListener::accept` would need after it.
fn accept4(fd: i32) -> io::Result<(TcpStream, Option<SocketAddr>)> {
    // SAFETY: try_init hands accept4 valid storage and length pointers; on success the returned
    // descriptor is new and owned by nothing else.
    let (sock, addr) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let s = libc::accept4(
                fd,
                storage.cast(),
                len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            );
            if s < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(TcpStream::from_raw_fd(s))
            }
        })?
    };
    Ok((sock, addr.as_socket()))
}
