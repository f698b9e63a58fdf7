//! Upstream servers: choosing one (round robin, skipping those that failed recently), connecting
//! without blocking, and a pool of idle keep-alive connections per upstream.
//!
//! The pool goes by time, not by count: a connection unused for `--proxy-idle-timeout` is closed,
//! so under steady load (where each is reused within moments) none is ever closed and there are
//! about as many upstream connections as requests in flight. The count cap (`--proxy-idle`,
//! by default the connection limit) only bounds the descriptors a burst can leave behind. Each
//! upstream's idle list is a stack: the most recently used connection goes out first, so a
//! falling load leaves the coldest ones at the bottom to age out, and the list stays ordered
//! by the time each was put back.
//!
//! Every upstream connection has a slot here for its whole life, and its poller key is
//! `UPSTREAM_KEYS + slot`, registered once: lending a pooled connection to a client connection or
//! taking it back only changes the slot's owner, so the pool costs no `epoll_ctl` per request.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use polling::Poller;
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

/// Poller keys of upstream connections start here; client keys are slab keys, far below.
pub const UPSTREAM_KEYS: usize = 1 << 40;

struct Slot {
    addr: SocketAddr,
    /// The client connection using it, or `None` while it waits in the pool...
    owner: Option<usize>,
    /// ...holding its socket here, unused since `since`.
    idle: Option<TcpStream>,
    since: Instant,
}

/// An upstream connection lent to a client connection.
pub struct Lent {
    pub slot: usize,
    pub sock: TcpStream,
    pub addr: SocketAddr,
    /// Came from the pool (the upstream may have closed it meanwhile).
    pub reused: bool,
    /// The connect is still in progress.
    pub connecting: bool,
    /// The loop reports this connection's FIN (EPOLLRDHUP) as an interrupt: a short read that
    /// ends an answer means nothing waits behind it (see `Upstreams::watch_fin`).
    pub fin_watched: bool,
}

pub struct Upstreams {
    /// Round robin: where each route's next pick starts, by route index.
    cursor: Vec<usize>,
    down_until: HashMap<SocketAddr, Instant, Hasher>,
    slots: Slab<Slot>,
    /// Per upstream, the idle slots, oldest first (taken from the back).
    idle: HashMap<SocketAddr, VecDeque<usize>, Hasher>,
    pool: Pool,
    fail_timeout: Duration,
    /// The loop waits with `reactor::wait` (which reports EPOLLRDHUP), not `polling`'s wait.
    fin_watched: bool,
}

/// Both maps are looked up on every proxied request, with keys we chose (upstream addresses):
/// a fast hash, not SipHash.
type Hasher = foldhash::fast::RandomState;

/// How many idle connections may wait per upstream, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct Pool {
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

impl Upstreams {
    pub fn new(pool: Pool, fail_timeout: Duration) -> Upstreams {
        Upstreams {
            cursor: Vec::new(),
            down_until: HashMap::default(),
            slots: Slab::new(),
            idle: HashMap::default(),
            pool,
            fail_timeout,
            fin_watched: false,
        }
    }

    /// The loop's waits report the upstream connections' FINs (set by the single-threaded loop;
    /// the pooled models wait with `polling`, which does not).
    pub fn watch_fin(&mut self) {
        self.fin_watched = true;
    }

    /// A reload's new pool policy and failure timeout (connections in the pool stay; a lower
    /// cap or a shorter idle time applies as they come back or are next looked at).
    pub fn set_policy(&mut self, pool: Pool, fail_timeout: Duration) {
        self.pool = pool;
        self.fail_timeout = fail_timeout;
    }
    /// The next of `ups` (route number `route`'s upstreams) not in `tried`, preferring those not
    /// marked down.
    pub fn pick(
        &mut self,
        ups: &[SocketAddr],
        route: usize,
        tried: &[SocketAddr],
        now: Instant,
    ) -> Option<SocketAddr> {
        if ups.is_empty() {
            return None;
        }
        if self.cursor.len() <= route {
            self.cursor.resize(route + 1, 0);
        }
        let start = self.cursor[route] % ups.len();
        let candidates = (0..ups.len())
            .map(|i| ups[(start + i) % ups.len()])
            .filter(|a| !tried.contains(a));
        let healthy = candidates
            .clone()
            .find(|a| self.down_until.get(a).is_none_or(|&t| t <= now));
        // When every one is down, try them anyway: better a late answer than a certain 502.
        let pick = healthy.or_else(|| candidates.clone().next())?;
        self.cursor[route] = (start + 1) % ups.len();
        Some(pick)
    }

    pub fn mark_down(&mut self, addr: SocketAddr, now: Instant) {
        log::warn!(
            "upstream {addr} failed; skipping it for {:?}",
            self.fail_timeout
        );
        self.down_until.insert(addr, now + self.fail_timeout);
    }

    /// The client connection that owns the upstream connection with poller key `key`.
    pub fn owner(&self, key: usize) -> Option<usize> {
        self.slots.get(key - UPSTREAM_KEYS)?.owner
    }

    /// A connection to `addr` for client connection `client`: from the pool, or a new one.
    pub fn lend(
        &mut self,
        addr: SocketAddr,
        client: usize,
        poller: &Poller,
        pooled_ok: bool,
    ) -> io::Result<Lent> {
        if pooled_ok {
            while let Some(slot) = self.idle.get_mut(&addr).and_then(VecDeque::pop_back) {
                let s = &mut self.slots[slot];
                let Some(sock) = s.idle.take() else { continue };
                s.owner = Some(client);
                return Ok(Lent {
                    slot,
                    sock,
                    addr,
                    reused: true,
                    connecting: false,
                    fin_watched: self.fin_watched,
                });
            }
        }
        let entry = self.slots.vacant_entry();
        let slot = entry.key();
        let (sock, connecting) = connect(addr, poller, UPSTREAM_KEYS + slot)?;
        entry.insert(Slot {
            addr,
            owner: Some(client),
            idle: None,
            since: Instant::now(),
        });
        Ok(Lent {
            slot,
            sock,
            addr,
            reused: false,
            connecting,
            fin_watched: self.fin_watched,
        })
    }

    /// Takes back a connection whose last response was complete, or closes it when the pool for
    /// its upstream is full.
    pub fn put_idle(&mut self, lent: Lent, poller: &Poller, now: Instant) {
        let list = self.idle.entry(lent.addr).or_default();
        if list.len() >= self.pool.max_idle {
            self.close(lent, poller);
            return;
        }
        list.push_back(lent.slot);
        let s = &mut self.slots[lent.slot];
        s.owner = None;
        s.idle = Some(lent.sock);
        s.since = now;
    }

    /// When the oldest idle connection is due to close, if any is idle.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.idle
            .values()
            .filter_map(|list| list.front())
            .map(|&slot| self.slots[slot].since + self.pool.idle_timeout)
            .min()
    }

    /// Closes the idle connections unused for the idle timeout at `now`.
    pub fn expire(&mut self, now: Instant, poller: &Poller) {
        for list in self.idle.values_mut() {
            while let Some(&slot) = list.front() {
                if self.slots[slot].since + self.pool.idle_timeout > now {
                    break;
                }
                list.pop_front();
                let s = self.slots.remove(slot);
                if let Some(sock) = s.idle {
                    let _ = poller.delete(&sock);
                }
            }
        }
    }

    /// Closes a lent connection.
    pub fn close(&mut self, lent: Lent, poller: &Poller) {
        let _ = poller.delete(&lent.sock);
        self.slots.try_remove(lent.slot);
    }

    /// An idle connection became readable: the upstream closed it (or sent bytes nobody asked
    /// for). Either way it is dropped.
    pub fn idle_event(&mut self, key: usize, poller: &Poller) {
        let slot = key - UPSTREAM_KEYS;
        let Some(Slot {
            idle: Some(sock), ..
        }) = self.slots.get(slot)
        else {
            return;
        };
        let mut buf = [0u8; 64];
        if matches!((&*sock).read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            return;
        }
        let s = self.slots.remove(slot);
        if let Some(sock) = s.idle {
            let _ = poller.delete(&sock);
        }
        if let Some(list) = self.idle.get_mut(&s.addr) {
            list.retain(|&k| k != slot);
        }
    }

    /// Deletes every pooled connection from the poller (shutdown).
    pub fn clear(&mut self, poller: &Poller) {
        for s in self.slots.drain() {
            if let Some(sock) = s.idle {
                let _ = poller.delete(&sock);
            }
        }
        self.idle.clear();
    }
}

/// Starts a nonblocking connect to `addr`, registered under `key`. `Ok((sock, true))` when it is
/// still in progress (the usual case: EINPROGRESS, completion comes as writability).
fn connect(addr: SocketAddr, poller: &Poller, key: usize) -> io::Result<(TcpStream, bool)> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    sock.set_tcp_nodelay(true)?;
    let pending = match sock.connect(&addr.into()) {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
        Err(e) => return Err(e),
    };
    let sock: TcpStream = sock.into();
    // Edge-triggered both ways, and for the peer's FIN (EPOLLRDHUP, reported by the single
    // loop's wait; harmless where `polling` waits).
    // SAFETY: the socket is deleted from the poller before it is dropped (`Upstreams::close`,
    // `idle_event`, `clear`, `expire`).
    unsafe { crate::reactor::wait::watch(poller, &sock, key)? };
    Ok((sock, pending))
}
