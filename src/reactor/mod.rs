//! The event loop: one poller in edge-triggered mode, a slab of connections whose keys are the
//! poller keys, a ready list for connections that stopped before `WouldBlock`, timers, accept with
//! back-off, and graceful shutdown.
//!
//! One turn of the loop ([`Reactor::run`]): `wait` on the poller for as long as
//! [`Reactor::wait_timeout`] allows (not at all while the ready list or the listener has work
//! left), then [`Reactor::after_wait`]: the events (each drives its connection), the ready list,
//! the replies of the proactor's workers, accepts, and the deadlines that are due. Shutdown is
//! complete once no connection is left or the grace period is over.
//!
//! The single-threaded models call [`Reactor::run`]. The pooled ones (`reactor-pool`,
//! `leader-followers`) keep the same reactor behind a lock and use its parts: [`Reactor::wait_timeout`]
//! and [`Reactor::after_wait`] around a `wait` made without the lock, [`Reactor::take_ready`] to
//! lend a ready connection to another thread, and [`Reactor::put_back`] when it is done with it.
//! Lent connections are registered one-shot, so no second thread is woken for them meanwhile.
//!
//! The parts, by job:
//! - this file: the [`Reactor`], the loop, driving and closing a connection, shutdown;
//! - `accept.rs`: accepting (in batches, paused when out of descriptors) and the connection
//!   limit, with the closing of idle connections to make room at it;
//! - `deadlines.rs`: each connection's deadline, when the loop must wake, and what a deadline
//!   that passed does; `timer.rs`: the heap of deadlines beside the slab;
//! - `lend.rs`: lending connections to the threads of the pooled models and handing requests to
//!   the proactor's workers.
//!
//! What only the multi-threaded models use is compiled with the cargo feature `models` alone:
//! `lend.rs`, `Held::Away`, the shared connection limit of the shards and their peers. Where
//! the loop asks about it, a helper answers (`lent`, `peers`, `release_place`, ...), and without
//! the feature its stand-in answers "nothing lent, no peer, no shared limit".

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use polling::{Event, PollMode, Poller};
use slab::Slab;

use crate::app::App;
use crate::config::{Config, Listen};
use crate::conn::{Conn, Env, Next, Pools};
use crate::http::date::DateCache;
use crate::http::session::Ctx;
use crate::listen::Listener;
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
                limits: &$r.cfg.limits,
                head_extra: b"",
            },
            log_date: $r.dates.clf(),
            routes: &$r.routes,
            trust_forwarded: $r.cfg.proxy_trust_forwarded,
            health: $r.cfg.health.as_deref(),
            handler: &mut $r.app,
            pools: &mut $r.pools,
            budget: $r.cfg.budget,
            #[cfg(feature = "proxy")]
            poller: &$r.poller,
            #[cfg(feature = "proxy")]
            upstreams: &$r.upstreams,
            #[cfg(feature = "proxy")]
            tunnels: &$r.tunnels,
            key: $key,
            draining: $r.draining_until.is_some(),
            #[cfg(feature = "tls")]
            https: $r.https.as_deref(),
            secure: false,
            #[cfg(feature = "models")]
            workers: $r.proactor.as_mut(),
            #[cfg(feature = "auth")]
            auth: $r.auth.as_ref(),
        }
    };
}

// After `env!`, which they use.
mod accept;
#[cfg(feature = "auth")]
mod auth;
mod deadlines;
#[cfg(feature = "models")]
mod lend;
pub mod timer;
pub(crate) mod wait;

#[cfg(feature = "models")]
pub use accept::SharedLimit;
use accept::{Accept, Listening};
#[cfg(feature = "models")]
pub use lend::Taken;

/// How often a loop that is done but waits for its peers looks at them.
const PEER_POLL: Duration = Duration::from_millis(50);

const SIGNALS: usize = usize::MAX - 2;
/// Listener `i` is registered as `LISTENERS + i`: below `SIGNALS`, above the upstreams' keys.
const LISTENERS: usize = SIGNALS - MAX_LISTENERS;
/// More listeners than this is a mistake in the configuration, not a deployment.
pub const MAX_LISTENERS: usize = 256;

/// A slab slot: the connection, or the note that another thread has it for now.
// Nearly every slot holds its connection: boxing it would cost an allocation and an indirection
// per connection for the few that are away.
#[allow(clippy::large_enum_variant)]
pub enum Held {
    Here(Conn),
    #[cfg(feature = "models")]
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

/// How far a stop asked from another thread (or a shard's peer) has gone; it only rises.
#[derive(Default)]
pub struct Stop {
    level: std::sync::atomic::AtomicU8,
    /// The loop has finished (its `run` returns).
    done: std::sync::atomic::AtomicBool,
}

impl Stop {
    pub const NONE: u8 = 0;
    /// Finish the connections in flight within the grace period.
    pub const GRACEFUL: u8 = 1;
    /// Close everything now.
    pub const NOW: u8 = 2;

    pub fn request(&self, level: u8) {
        self.level.fetch_max(level, Ordering::Relaxed);
    }

    pub fn get(&self) -> u8 {
        self.level.load(Ordering::Relaxed)
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
    }

    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// The connection in slot `key` when it is here.
fn here(conns: &mut Slab<Held>, key: usize) -> Option<&mut Conn> {
    conns.get_mut(key).and_then(Held::here)
}

impl Held {
    /// The connection, when it is here (without the models it always is).
    fn here(&mut self) -> Option<&mut Conn> {
        match self {
            Held::Here(c) => Some(c),
            #[cfg(feature = "models")]
            Held::Away { .. } => None,
        }
    }

    /// The connection taken out of its slot, when it was here.
    fn into_here(self) -> Option<Conn> {
        match self {
            Held::Here(c) => Some(c),
            #[cfg(feature = "models")]
            Held::Away { .. } => None,
        }
    }
}

pub struct Reactor {
    poller: Arc<Poller>,
    /// Emptied when shutdown begins.
    listeners: Vec<Listening>,
    /// Each listener's address and settings, kept after they close.
    local_addrs: Vec<Listen>,
    conns: Slab<Held>,
    timers: Timers,
    ready: VecDeque<(usize, u32)>,
    pools: Pools,
    app: App,
    dates: DateCache,
    cfg: Arc<Config>,
    /// Where a reload publishes the new configuration, and the generation this loop runs.
    current: Arc<crate::reload::Current>,
    seen: u64,
    /// This loop's number among the shards (0 in the other models).
    shard: usize,
    max_conns: usize,
    accept: Accept,
    next_generation: u32,
    stop: Arc<Stop>,
    signals: Option<SignalPipe>,
    /// Set once shutdown has begun: the end of the grace period.
    draining_until: Option<Instant>,
    routes: crate::config::Routes,
    #[cfg(feature = "proxy")]
    upstreams: Arc<std::sync::Mutex<Upstreams>>,
    /// The places for tunnels: this loop's and its threads', or shared by the shards.
    #[cfg(feature = "proxy")]
    tunnels: Arc<crate::conn::TunnelLimit>,
    /// Connections are driven by other threads (`reactor-pool`, `leader-followers`): an event
    /// queues the connection instead of driving it, and sockets are registered one-shot.
    #[cfg(feature = "models")]
    lent: bool,
    /// The latest moment the thread in `wait` will look at the timers again (`None`: never);
    /// an earlier deadline set by another thread must wake it.
    #[cfg(feature = "models")]
    wake_at: Option<Instant>,
    /// Handlers run on worker threads (`proactor-pool`). In every build: `env!` reads it (it is
    /// always `None` without the models).
    #[cfg(feature = "models")]
    proactor: Option<crate::models::proactor::Link>,
    /// Loops to stop with this one (the shards of a sharded server).
    #[cfg(feature = "models")]
    peers: Vec<crate::ServerHandle>,
    /// Shutdown is complete: connections handed back now are closed.
    finished: bool,
    /// HTTPS, when the server has TLS listeners.
    #[cfg(feature = "tls")]
    https: Option<Arc<crate::conn::tls::Https>>,
    /// The connection limit shared with other shards, if any (else `max_conns` of this loop).
    #[cfg(feature = "models")]
    limit: Option<Arc<SharedLimit>>,
    /// The authentication check and this loop's mailbox for its verdicts (`--auth`).
    #[cfg(feature = "auth")]
    auth: Option<crate::auth::Gate>,
    /// Verdicts for connections that were lent out when they came (`put_back` delivers them).
    #[cfg(all(feature = "auth", feature = "models"))]
    verdicts_away: Vec<crate::auth::Verdict>,
}

impl Reactor {
    pub fn new(
        cfg: Arc<Config>,
        listeners: Vec<Listener>,
        app: App,
        max_conns: usize,
    ) -> io::Result<Reactor> {
        if listeners.is_empty() || listeners.len() > MAX_LISTENERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "between 1 and {MAX_LISTENERS} listeners, not {}",
                    listeners.len()
                ),
            ));
        }
        let poller = Arc::new(Poller::new()?);
        for (i, l) in listeners.iter().enumerate() {
            // SAFETY: listeners are deleted from the poller before they are dropped (shutdown,
            // Drop).
            unsafe {
                poller.add_with_mode(&l.sock, Event::readable(LISTENERS + i), PollMode::Edge)?
            };
        }
        Ok(Reactor {
            poller,
            local_addrs: listeners.iter().map(|l| l.spec.clone()).collect(),
            listeners: listeners
                .into_iter()
                .map(|l| Listening {
                    asked: asked(&cfg.listen, &l.spec),
                    sock: l.sock,
                    spec: l.spec,
                    ready: true,
                })
                .collect(),
            conns: Slab::new(),
            timers: Timers::default(),
            ready: VecDeque::with_capacity(64),
            pools: Pools::default(),
            app,
            dates: DateCache::default(),
            max_conns,
            accept: Accept {
                paused_until: None,
                warned: false,
                reclaim_after: None,
                reclaiming: false,
            },
            next_generation: 0,
            stop: Arc::new(Stop::default()),
            signals: None,
            draining_until: None,
            routes: cfg.proxies.clone().into(),
            #[cfg(feature = "proxy")]
            upstreams: Arc::new(std::sync::Mutex::new(Upstreams::new(
                crate::proxy::upstream::Pool {
                    max_idle: cfg.proxy_idle_cap(max_conns),
                    idle_timeout: cfg.proxy_idle_timeout,
                },
                cfg.proxy_fail_timeout,
            ))),
            #[cfg(feature = "proxy")]
            tunnels: Arc::new(crate::conn::TunnelLimit::new(cfg.tunnel_limit(max_conns))),
            current: crate::reload::Current::new(Arc::clone(&cfg)),
            seen: 0,
            shard: 0,
            cfg,
            #[cfg(feature = "models")]
            lent: false,
            #[cfg(feature = "models")]
            wake_at: None,
            #[cfg(feature = "models")]
            proactor: None,
            #[cfg(feature = "models")]
            peers: Vec::new(),
            finished: false,
            #[cfg(feature = "tls")]
            https: None,
            #[cfg(feature = "models")]
            limit: None,
            #[cfg(feature = "auth")]
            auth: None,
            #[cfg(all(feature = "auth", feature = "models"))]
            verdicts_away: Vec::new(),
        })
    }

    /// HTTPS (certificates, redirect, HSTS), for the threads that drive lent connections.
    #[cfg(feature = "tls")]
    pub fn https(&self) -> Option<Arc<crate::conn::tls::Https>> {
        self.https.clone()
    }

    /// Serves the TLS listeners with `https`; shared by every loop of the server.
    #[cfg(feature = "tls")]
    pub fn set_https(&mut self, https: Arc<crate::conn::tls::Https>) {
        self.https = Some(https);
    }

    /// SIGHUP: new handshakes get the certificate and key as the files are now; a failed reload
    /// keeps the old ones and says why. (Ops' configuration reload can call this too.)
    pub fn reload_certificates(&self) {
        #[cfg(feature = "tls")]
        if let Some(https) = &self.https {
            match https.reload() {
                Ok(()) => log::info!("TLS certificate reloaded"),
                Err(e) => log::error!("TLS certificate not reloaded, the old one stays: {e}"),
            }
        }
    }

    /// The places for tunnels, for the threads that drive lent connections.
    #[cfg(feature = "proxy")]
    pub fn tunnels(&self) -> Arc<crate::conn::TunnelLimit> {
        Arc::clone(&self.tunnels)
    }

    /// One `--max-tunnels` for several loops (the shards).
    #[cfg(feature = "proxy")]
    pub fn share_tunnels(&mut self, tunnels: Arc<crate::conn::TunnelLimit>) {
        self.tunnels = tunnels;
    }

    #[cfg(feature = "proxy")]
    fn upstreams(&self) -> std::sync::MutexGuard<'_, Upstreams> {
        self.upstreams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// These loops shut down when this one does.
    #[cfg(feature = "models")]
    pub fn set_peers(&mut self, peers: Vec<crate::ServerHandle>) {
        self.peers = peers;
    }

    /// A peer loop (another shard) is still finishing its connections.
    fn peers_busy(&self) -> bool {
        self.peers().iter().any(|p| !p.is_done())
    }

    #[cfg(feature = "models")]
    fn peers(&self) -> &[crate::ServerHandle] {
        &self.peers
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.cfg
    }

    /// Where reloads are published, for the threads that serve this loop's connections.
    pub fn current(&self) -> Arc<crate::reload::Current> {
        Arc::clone(&self.current)
    }

    /// One configuration for several loops (the shards): a reload reaches them all; this loop
    /// is number `shard` among them (it takes that set of the listeners a reload opens).
    pub fn share_current(&mut self, current: Arc<crate::reload::Current>, shard: usize) {
        self.seen = current.generation();
        self.current = current;
        self.shard = shard;
    }

    /// A reload's listeners: the ones whose address left the configuration are closed (the
    /// connections they accepted go on), the ones it opened for this loop are added, and the
    /// ones that stay keep their socket and take their new settings. Keys are given again in
    /// order; every listener is looked at once more (an edge of this turn may have gone to the
    /// old key).
    fn relisten(&mut self, loaded: &crate::reload::Loaded) {
        let opened = loaded.take_opened(self.shard);
        if self.draining_until.is_some() {
            return; // shutting down: no listener any more, none to open
        }
        let wanted = &loaded.config.listen;
        let stays = |l: &Listening| wanted.iter().any(|w| w.addr == l.asked);
        // Its `--listen` in the new settings: the same address asked for, of the same kind
        // first (several `127.0.0.1:0`, one plain and one TLS, must each keep theirs).
        let wanted_for = |l: &Listening| {
            let same = |w: &&Listen| w.addr == l.asked;
            let kind =
                |w: &&Listen| w.tls == l.spec.tls && w.proxy_protocol == l.spec.proxy_protocol;
            (wanted.iter().filter(same).find(kind))
                .or_else(|| wanted.iter().find(same))
                .cloned()
        };
        if opened.is_empty() && self.listeners.iter().all(stays) {
            for l in &mut self.listeners {
                if let Some(w) = wanted_for(l) {
                    l.spec = Listen {
                        addr: l.spec.addr,
                        ..w
                    };
                }
            }
            self.local_addrs = self.listeners.iter().map(|l| l.spec.clone()).collect();
            return;
        }
        let mut all = std::mem::take(&mut self.listeners);
        for l in &all {
            let _ = self.poller.delete(&l.sock);
        }
        all.retain(|l| {
            let keep = stays(l);
            if !keep {
                log::info!("no longer listening on http://{}", l.spec.addr);
            }
            keep
        });
        all.extend(opened.into_iter().map(|l| Listening {
            asked: asked(wanted, &l.spec),
            sock: l.sock,
            spec: l.spec,
            ready: true,
        }));
        for mut l in all {
            let key = LISTENERS + self.listeners.len();
            if let Some(w) = wanted_for(&l) {
                l.spec = Listen {
                    addr: l.spec.addr,
                    ..w
                };
            }
            // SAFETY: listeners are deleted from the poller before they are dropped (here,
            // shutdown, Drop).
            let added = unsafe {
                self.poller
                    .add_with_mode(&l.sock, Event::readable(key), PollMode::Edge)
            };
            if let Err(e) = added {
                log::error!("reload: cannot watch the listener {}: {e}", l.spec.addr);
                continue;
            }
            l.ready = true;
            self.listeners.push(l);
        }
        self.local_addrs = self.listeners.iter().map(|l| l.spec.clone()).collect();
    }

    /// Takes up a configuration published by a reload: new requests get its settings, its
    /// routes, and a handler (file cache, mime table, root) built from it. A handler that cannot
    /// be built here (the root vanished since the reload checked it) keeps everything as it was.
    fn reconfigure(&mut self) {
        let Some(loaded) = self.current.newer(&mut self.seen) else {
            return;
        };
        let cfg = Arc::clone(&loaded.config);
        match loaded.app() {
            Ok(app) => self.app = app,
            Err(e) => {
                log::error!("reload not applied here: {e}");
                return;
            }
        }
        self.relisten(&loaded);
        self.routes = cfg.proxies.clone().into();
        #[cfg(feature = "proxy")]
        self.upstreams().set_policy(
            crate::proxy::upstream::Pool {
                max_idle: cfg.proxy_idle_cap(self.max_conns),
                idle_timeout: cfg.proxy_idle_timeout,
            },
            cfg.proxy_fail_timeout,
        );
        self.cfg = cfg;
    }

    /// Each listener's address (the real port where 0 was asked for) and settings.
    pub fn local_addrs(&self) -> &[Listen] {
        &self.local_addrs
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

    /// Runs the loop on this thread until shutdown is complete. It waits with one `epoll_wait`
    /// (`wait.rs`: `polling`'s own wait costs four more syscalls per call).
    pub fn run(&mut self) -> io::Result<()> {
        let mut waiter = wait::Waiter::default();
        // Its events report the upstream connections' FINs too.
        #[cfg(feature = "proxy")]
        self.upstreams().watch_fin();
        loop {
            let timeout = self.wait_timeout(Instant::now());
            waiter.wait(&self.poller, timeout)?;
            if self.after_wait(waiter.iter()) {
                return Ok(());
            }
        }
    }

    /// Handles what one `wait` returned, then the ready list, accepts, finished handler work and
    /// timers. Returns true once shutdown is complete.
    pub fn after_wait(&mut self, events: impl IntoIterator<Item = Event>) -> bool {
        let now = Instant::now();
        self.dates.update(SystemTime::now());
        self.reconfigure();
        for ev in events {
            match ev.key {
                k if (LISTENERS..LISTENERS + MAX_LISTENERS).contains(&k) => {
                    if let Some(l) = self.listeners.get_mut(k - LISTENERS) {
                        l.ready = true;
                    }
                }
                SIGNALS => {
                    let arrived = self.signals.as_ref().map(|s| s.drain()).unwrap_or_default();
                    if arrived.reopen {
                        crate::logging::reopen();
                    }
                    if arrived.reload && self.draining_until.is_none() {
                        crate::reload::reload(&self.current);
                        self.reload_certificates();
                        self.reconfigure();
                        for peer in self.peers() {
                            peer.wake();
                        }
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
                            if ev.is_interrupt() {
                                c.upstream_closing();
                            }
                            self.drive(client, now);
                        }
                        // Another thread drives the client now: it gets the news when back.
                        #[cfg(feature = "models")]
                        Some((_, Some(Held::Away { upstream, .. }))) => {
                            upstream.0 |= ev.readable;
                            upstream.1 |= ev.writable;
                        }
                        Some((_, None)) | None => {}
                    }
                }
                key => {
                    if let Some(c) = here(&mut self.conns, key) {
                        c.set_ready(ev.readable, ev.writable);
                        if ev.is_interrupt() {
                            c.peer_closing();
                        }
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
        if !self.lent() {
            // Connections that stopped early; ones queued again during this pass wait a turn.
            for _ in 0..self.ready.len() {
                let Some((key, generation)) = self.ready.pop_front() else {
                    break;
                };
                if let Some(c) =
                    here(&mut self.conns, key).filter(|c| c.sched.generation == generation)
                {
                    c.sched.queued = false;
                    self.drive(key, now);
                }
            }
        }
        self.handler_replies(now);
        #[cfg(feature = "auth")]
        self.auth_verdicts(now);
        // Another shard asked for room (not this one: it has no idle connection itself).
        if self.accept.reclaim_after.is_none() && self.room_wanted() && self.close_idle() == 0 {
            log::debug!("no idle connection here to make room for another shard");
        }
        // Accept after the batch, so that no event of this batch meets a reused slab key.
        self.accept(now);
        self.expire(now);
        log::logger().flush();
        if let Some(until) = self.draining_until
            && (self.conns.is_empty() || now >= until)
            // The loop that hears the signals stays until its peers are done too, so that a
            // second SIGTERM still stops them at once.
            && (now >= until || !self.peers_busy())
            && !self.finished
        {
            if !self.conns.is_empty() {
                log::warn!(
                    "grace period over: closing {} connections",
                    self.conns.len()
                );
            }
            self.finished = true;
            self.stop.finish();
        }
        self.finished
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn queue(&mut self, key: usize) {
        if let Some(c) = here(&mut self.conns, key)
            && !c.sched.queued
        {
            c.sched.queued = true;
            self.ready.push_back((key, c.sched.generation));
        }
    }

    /// How long the next `wait` may sleep. With lent connections the ready list is handed out
    /// by the caller, so it does not shorten the wait here.
    pub fn wait_timeout(&mut self, now: Instant) -> Option<Duration> {
        let can_accept = self.accept_ready()
            && self.has_room()
            && self.accept.paused_until.is_none_or(|t| t <= now);
        if (!self.lent() && !self.ready.is_empty()) || can_accept {
            self.set_wake_at(Some(now));
            return Some(Duration::ZERO);
        }
        let mut wake_at = self.next_deadline();
        if self.draining_until.is_some() && self.conns.is_empty() {
            // Done here: finish at once, or look at the peers again shortly (they may have
            // finished since `after_wait` looked).
            let soon = if self.peers_busy() {
                now + PEER_POLL
            } else {
                now
            };
            wake_at = Some(wake_at.map_or(soon, |t| t.min(soon)));
        }
        self.set_wake_at(wake_at);
        wake_at.map(|t| t.saturating_duration_since(now))
    }

    /// Drives a connection here, or queues it for another thread when connections are lent.
    fn drive(&mut self, key: usize, now: Instant) {
        if self.lent() {
            return self.queue(key);
        }
        let Some(conn) = here(&mut self.conns, key) else {
            return;
        };
        let mut env = env!(self, now, key);
        let next = conn.drive(&mut env);
        match next {
            Next::Close => self.close(key),
            Next::Again => {
                self.queue(key);
                self.set_timer(key, now);
            }
            Next::Wait => self.set_timer(key, now),
        }
    }

    fn close(&mut self, key: usize) {
        #[allow(unused_mut)] // the upstream is taken out of it with the proxy only
        let Some(mut conn) = self.conns.remove(key).into_here() else {
            unreachable!("only a connection that is here is closed");
        };
        #[cfg(feature = "proxy")]
        if let Some(up) = conn.take_upstream() {
            self.upstreams().close(up, &self.poller);
        }
        if let Err(e) = self.poller.delete(conn.socket()) {
            log::debug!("poller delete: {e}");
        }
        drop(conn);
        self.release_place();
        // A descriptor was freed: accepting may go on at once.
        self.accept.paused_until = None;
        let conns = &self.conns;
        self.timers
            .compact(conns.len(), |at, key, generation| match conns.get(key) {
                Some(Held::Here(c)) => {
                    c.sched.generation == generation && c.sched.scheduled == Some(at)
                }
                #[cfg(feature = "models")]
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
            for peer in self.peers() {
                peer.stop_now();
            }
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.draining_until.is_some() {
            return;
        }
        log::info!("shutting down: finishing {} connections", self.conns.len());
        for peer in self.peers() {
            peer.shutdown();
        }
        self.draining_until = Some(now + self.cfg.grace);
        // Connections already in the backlog were made before the signal: take them (and what
        // they have sent) rather than reset them when the listener closes.
        for l in &mut self.listeners {
            l.ready = true;
        }
        self.accept(now);
        for l in std::mem::take(&mut self.listeners) {
            let _ = self.poller.delete(&l.sock);
        }
        // Connections lent out are told when they come back (`put_back`), and so are those queued
        // to be lent: they may have a request not read yet. Every other one reads what it was
        // sent before the signal (an event still on its way must not make the difference), then
        // closes if that was nothing.
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        let lent = self.lent();
        for key in keys {
            let Some(c) = here(&mut self.conns, key) else {
                continue;
            };
            if lent && c.sched.queued {
                continue;
            }
            c.begin_shutdown();
            // Lent: a thread reads it, and `put_back` decides as below.
            self.drive(key, now);
            if lent {
                continue;
            }
            let Some(c) = here(&mut self.conns, key) else {
                continue; // closed by the drive
            };
            if c.is_idle() {
                self.close(key);
            } else {
                c.close_after_current();
            }
        }
    }
}

/// The address in `asked` (the configuration's listeners) that made the listener `bound`: its
/// own, or the same IP with port 0 (the kernel chose the port). A socket systemd handed over
/// that no `--listen` names is its own.
fn asked(asked: &[Listen], bound: &Listen) -> std::net::SocketAddr {
    asked
        .iter()
        .map(|a| a.addr)
        .find(|a| *a == bound.addr)
        .or_else(|| {
            asked
                .iter()
                .map(|a| a.addr)
                .find(|a| a.port() == 0 && a.ip() == bound.addr.ip())
        })
        .unwrap_or(bound.addr)
}

/// Without the models nothing is lent to another thread, no handler runs elsewhere and there is
/// no peer: stand-ins for the helpers of `lend.rs` (and `peers`), which the compiler folds away.
#[cfg(not(feature = "models"))]
impl Reactor {
    fn lent(&self) -> bool {
        false
    }

    fn set_wake_at(&mut self, _at: Option<Instant>) {}

    fn wake_for(&self, _deadline: Instant) {}

    fn handler_replies(&mut self, _now: Instant) {}

    fn peers(&self) -> &[crate::ServerHandle] {
        &[]
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        #[cfg(feature = "proxy")]
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        for (_, held) in self.conns.iter_mut() {
            let Some(c) = held.here() else { continue };
            let _ = self.poller.delete(c.socket());
            #[cfg(feature = "proxy")]
            if let Some(up) = c.take_upstream() {
                upstreams.close(up, &self.poller);
            }
        }
        #[cfg(feature = "proxy")]
        upstreams.clear(&self.poller);
        #[cfg(feature = "proxy")]
        drop(upstreams);
        for l in &self.listeners {
            let _ = self.poller.delete(&l.sock);
        }
        if let Some(s) = &self.signals {
            let _ = self.poller.delete(s.source());
        }
    }
}
