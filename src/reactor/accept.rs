//! Accepting and the connection limit: `accept4` in batches until `WouldBlock` (a paused accept
//! after the process ran out of descriptors is retried on a timer, or as soon as a connection
//! closes), `--max-conns` (this loop's own, or one shared by the shards), and at the limit the
//! closing of the connections that have waited longest for a request to make room.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
#[cfg(feature = "models")]
use std::sync::Arc;
#[cfg(feature = "models")]
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[cfg(feature = "models")]
use polling::Poller;
use polling::{Event, PollMode};

use super::{Held, Reactor};
use crate::config::Listen;
use crate::conn::{Conn, TimerKind};

/// Accepts per loop turn, so that a connection storm does not starve the connections we have.
const ACCEPT_BATCH: usize = 256;
/// How long accepting pauses after the process ran out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a full server waits before it looks for idle connections to close again.
const RECLAIM_RETRY: Duration = Duration::from_millis(50);

/// A listener of this loop.
pub(super) struct Listening {
    pub(super) sock: TcpListener,
    pub(super) spec: Listen,
    /// The address the configuration asked for (port 0 where the kernel chose `spec.addr`'s):
    /// what a reload's file is compared with.
    pub(super) asked: std::net::SocketAddr,
    /// It had an edge and was not drained to `WouldBlock` yet.
    pub(super) ready: bool,
}

pub(super) struct Accept {
    /// Out of descriptors: retry at this time, or as soon as a connection closes.
    pub(super) paused_until: Option<Instant>,
    /// Logged the current burst of descriptor exhaustion already.
    pub(super) warned: bool,
    /// At the connection limit with clients waiting and no idle connection to close: look again
    /// at this time (a scan of every connection is not made on every turn).
    pub(super) reclaim_after: Option<Instant>,
    /// Logged the current burst of reclaiming already.
    pub(super) reclaiming: bool,
}

/// One `--max-conns` for several loops (the shards): a count they reserve from before accepting,
/// and the pollers to wake when a connection closes at the limit (another shard may have one
/// waiting in its backlog).
#[cfg(feature = "models")]
pub struct SharedLimit {
    open: std::sync::atomic::AtomicUsize,
    max: usize,
    /// A shard wants another to close an idle connection ([`SharedLimit::want_room`]).
    wanted: std::sync::atomic::AtomicBool,
    pollers: Vec<Arc<Poller>>,
}

#[cfg(feature = "models")]
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

/// The limit shared by the shards (`sharded`), where this loop takes and gives back its places.
#[cfg(feature = "models")]
impl Reactor {
    /// Counts connections against a limit shared with other loops.
    pub fn share_limit(&mut self, limit: Arc<SharedLimit>) {
        self.limit = Some(limit);
    }

    /// Takes a place before accepting; false when another shard took the last one.
    fn reserve_place(&self) -> bool {
        self.limit.as_ref().is_none_or(|l| l.reserve())
    }

    /// Gives back a place: a connection closed, or was not made after all.
    pub(super) fn release_place(&self) {
        if let Some(l) = &self.limit {
            l.release(&self.poller);
        }
    }

    /// Asks the other shards to close an idle connection ([`SharedLimit::want_room`]).
    fn want_room(&self) {
        if let Some(l) = &self.limit {
            l.want_room(&self.poller);
        }
    }

    /// Another shard asked for room (once per request).
    pub(super) fn room_wanted(&self) -> bool {
        self.limit.as_ref().is_some_and(|l| l.room_wanted())
    }
}

/// Without the models each loop has its own `max_conns` only.
#[cfg(not(feature = "models"))]
impl Reactor {
    fn reserve_place(&self) -> bool {
        true
    }

    pub(super) fn release_place(&self) {}

    fn want_room(&self) {}

    pub(super) fn room_wanted(&self) -> bool {
        false
    }
}

impl Reactor {
    pub(super) fn has_room(&self) -> bool {
        #[cfg(feature = "models")]
        if let Some(l) = &self.limit {
            return l.has_room();
        }
        self.conns.len() < self.max_conns
    }

    /// Some listener had an edge that was not drained yet.
    pub(super) fn accept_ready(&self) -> bool {
        self.listeners.iter().any(|l| l.ready)
    }

    /// Accepts from every listener with an edge, a batch from each in turn.
    pub(super) fn accept(&mut self, now: Instant) {
        for i in 0..self.listeners.len() {
            if self.accept.paused_until.is_some_and(|t| t > now) {
                return;
            }
            self.accept.paused_until = None;
            self.accept_from(i, now);
        }
    }

    fn accept_from(&mut self, i: usize, now: Instant) {
        let lent = self.lent();
        let mut n = 0;
        while n < ACCEPT_BATCH {
            let Some(listener) = self.listeners.get(i).filter(|l| l.ready) else {
                return;
            };
            let fd = listener.sock.as_raw_fd();
            if !self.has_room() && !self.make_room(i, fd, now) {
                return;
            }
            n += 1;
            if !self.reserve_place() {
                return; // another shard took the last place
            }
            let Some(listener) = self.listeners.get(i) else {
                self.release_place();
                return;
            };
            let accepted = accept4(&listener.sock);
            // A TLS listener's connections begin with a handshake.
            #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
            let tls = listener.spec.tls;
            if accepted.is_err() {
                self.release_place();
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
                    let peer = peer.map(|a| a.ip());
                    let generation = self.next_generation.wrapping_add(1);
                    #[cfg(feature = "tls")]
                    let made = match &self.https {
                        Some(https) if tls => Conn::new_tls(sock, https, generation, peer, now),
                        _ => Ok(Conn::new(sock, generation, peer, now)),
                    };
                    #[cfg(not(feature = "tls"))]
                    let made: io::Result<Conn> = Ok(Conn::new(sock, generation, peer, now));
                    let mut conn = match made {
                        Ok(c) => c,
                        Err(e) => {
                            log::error!("cannot start TLS on a new connection: {e}");
                            self.release_place();
                            continue;
                        }
                    };
                    // Lent connections are armed one-shot when they are first put back; this
                    // loop's own are watched for the peer's FIN too (`wait::watch`).
                    // SAFETY: the socket is deleted from the poller in `close` before it is dropped.
                    let added = unsafe {
                        if lent {
                            let ev = Event::none(key);
                            self.poller
                                .add_with_mode(conn.socket(), ev, PollMode::Oneshot)
                        } else {
                            super::wait::watch(&self.poller, conn.socket(), key)
                        }
                    };
                    if let Err(e) = added {
                        log::error!("cannot watch a new connection: {e}");
                        self.release_place();
                        continue;
                    }
                    self.next_generation = generation;
                    if !lent {
                        conn.watch_peer_close();
                    }
                    if self.cfg.proxy_protocol
                        || self.listeners.get(i).is_some_and(|l| l.spec.proxy_protocol)
                    {
                        conn.expect_proxy_header();
                    }
                    conn.sched.deadline = now + self.cfg.idle_timeout;
                    conn.sched.scheduled = Some(conn.sched.deadline);
                    self.timers
                        .push(conn.sched.deadline, key, conn.sched.generation);
                    entry.insert(Held::Here(conn));
                    // Data often arrives with the handshake: try it now rather than after a wait.
                    self.drive(key, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some(l) = self.listeners.get_mut(i) {
                        l.ready = false;
                    }
                }
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
    fn make_room(&mut self, i: usize, listener: i32, now: Instant) -> bool {
        if self.accept.reclaim_after.is_some_and(|t| t > now) {
            return false;
        }
        self.accept.reclaim_after = None;
        if !backlog_waiting(listener) {
            // Nothing waits: the next connection to arrive brings a new edge.
            self.listeners[i].ready = false;
            return false;
        }
        if !self.accept.reclaiming {
            log::warn!(
                "at the connection limit ({} open here): closing idle connections to make room",
                self.conns.len()
            );
            self.accept.reclaiming = true;
        }
        let scanned = self.conns.len();
        let closed = self.close_idle();
        if closed == 0 {
            // Another shard may have idle connections where this one has none.
            self.want_room();
            self.accept.reclaim_after = Some(now + RECLAIM_RETRY);
            return false;
        }
        if closed * 64 < scanned {
            // A scan of every connection bought few places (a client that keeps all but one
            // place busy and opens silent connections one after another would make every
            // accept a full scan): the next one waits a little.
            self.accept.reclaim_after = Some(now + RECLAIM_RETRY);
        }
        self.has_room()
    }

    /// Closes the connections that have waited longest for a request, a few at a time (enough
    /// for a burst without emptying the keep-alives); returns how many.
    pub(super) fn close_idle(&mut self) -> usize {
        let mut idle: Vec<(Instant, usize)> = self
            .conns
            .iter()
            .filter_map(|(key, held)| match held {
                Held::Here(c)
                    // A TLS handshake that has not finished is a client that sent no request.
                    if matches!(c.sched.timer, TimerKind::Idle | TimerKind::Handshake)
                        && !c.sched.queued
                        && c.is_idle() =>
                {
                    Some((c.sched.deadline, key))
                }
                _ => None,
            })
            .collect();
        let n = (idle.len() / 8).clamp(1, 32).min(idle.len());
        if n > 0 && n < idle.len() {
            idle.select_nth_unstable(n - 1);
        }
        let mut closed = 0;
        for &(_, key) in &idle[..n] {
            // A request may have reached the kernel since the loop last looked: that
            // connection is not idle after all (its readiness event comes next).
            if super::here(&mut self.conns, key).is_some_and(|c| request_waiting(c.socket())) {
                continue;
            }
            self.close(key);
            closed += 1;
        }
        closed
    }
}

/// True when bytes wait unread on a connection (a peek, which leaves them for the read).
fn request_waiting(sock: &TcpStream) -> bool {
    matches!(sock.peek(&mut [0u8; 1]), Ok(n) if n > 0)
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
fn accept4(listener: &TcpListener) -> io::Result<(TcpStream, Option<SocketAddr>)> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    let (sock, addr) = socket2::SockRef::from(listener).accept4(flags)?;
    Ok((sock.into(), addr.as_socket()))
}
