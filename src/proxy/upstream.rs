//! Upstream servers: choosing one (round robin, skipping those that failed recently), connecting
//! without blocking, and a pool of idle keep-alive connections per upstream.
//!
//! Every upstream connection has a slot here for its whole life, and its poller key is
//! `UPSTREAM_KEYS + slot`, registered once: lending a pooled connection to a client connection or
//! taking it back only changes the slot's owner, so the pool costs no `epoll_ctl` per request.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use polling::{Event, PollMode, Poller};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

/// Poller keys of upstream connections start here; client keys are slab keys, far below.
pub const UPSTREAM_KEYS: usize = 1 << 40;

struct Slot {
    addr: SocketAddr,
    /// The client connection using it, or `None` while it waits in the pool...
    owner: Option<usize>,
    /// ...holding its socket here.
    idle: Option<TcpStream>,
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
}

pub struct Upstreams {
    /// Round robin: where each route's next pick starts, by route index.
    cursor: Vec<usize>,
    down_until: HashMap<SocketAddr, Instant>,
    slots: Slab<Slot>,
    idle: HashMap<SocketAddr, Vec<usize>>,
    max_idle: usize,
    fail_timeout: Duration,
}

impl Upstreams {
    pub fn new(max_idle: usize, fail_timeout: Duration) -> Upstreams {
        Upstreams {
            cursor: Vec::new(),
            down_until: HashMap::new(),
            slots: Slab::new(),
            idle: HashMap::new(),
            max_idle,
            fail_timeout,
        }
    }

    /// A reload's new pool size and failure timeout (connections in the pool stay).
    pub fn set_policy(&mut self, max_idle: usize, fail_timeout: Duration) {
        self.max_idle = max_idle;
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
            while let Some(slot) = self.idle.get_mut(&addr).and_then(Vec::pop) {
                let s = &mut self.slots[slot];
                let Some(sock) = s.idle.take() else { continue };
                s.owner = Some(client);
                return Ok(Lent {
                    slot,
                    sock,
                    addr,
                    reused: true,
                    connecting: false,
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
        });
        Ok(Lent {
            slot,
            sock,
            addr,
            reused: false,
            connecting,
        })
    }

    /// Takes back a connection whose last response was complete, or closes it when the pool for
    /// its upstream is full.
    pub fn put_idle(&mut self, lent: Lent, poller: &Poller) {
        let list = self.idle.entry(lent.addr).or_default();
        if list.len() >= self.max_idle {
            self.close(lent, poller);
            return;
        }
        list.push(lent.slot);
        let s = &mut self.slots[lent.slot];
        s.owner = None;
        s.idle = Some(lent.sock);
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
    // SAFETY: the socket is deleted from the poller before it is dropped (`Upstreams::close`,
    // `idle_event`, `clear`).
    unsafe { poller.add_with_mode(&sock, Event::all(key), PollMode::Edge)? };
    Ok((sock, pending))
}
