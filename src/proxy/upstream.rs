//! Upstream servers: choosing one (round robin, skipping those that failed recently), connecting
//! without blocking, and a pool of idle keep-alive connections per upstream.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use polling::{Event, PollMode, Poller};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Route;

/// Poller keys: a client connection's upstream socket is `UPSTREAM_KEYS + client key`, an idle
/// pooled connection `POOL_KEYS + pool key`. Client keys are slab keys, far below both.
pub const UPSTREAM_KEYS: usize = 1 << 40;
pub const POOL_KEYS: usize = 1 << 41;

struct Idle {
    addr: SocketAddr,
    sock: TcpStream,
}

pub struct Upstreams {
    pub routes: Vec<Route>,
    cursor: Vec<usize>,
    down_until: HashMap<SocketAddr, Instant>,
    idle: HashMap<SocketAddr, Vec<usize>>,
    pooled: Slab<Idle>,
    max_idle: usize,
    fail_timeout: Duration,
}

impl Upstreams {
    pub fn new(routes: Vec<Route>, max_idle: usize, fail_timeout: Duration) -> Upstreams {
        let cursor = vec![0; routes.len()];
        Upstreams {
            routes,
            cursor,
            down_until: HashMap::new(),
            idle: HashMap::new(),
            pooled: Slab::new(),
            max_idle,
            fail_timeout,
        }
    }

    /// The next upstream of `route` not in `tried`, preferring those not marked down.
    pub fn pick(&mut self, route: usize, tried: &[SocketAddr], now: Instant) -> Option<SocketAddr> {
        let ups = &self.routes[route].upstreams;
        let start = self.cursor[route];
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

    /// An idle connection to `addr`, re-registered under `key`.
    pub fn take_idle(
        &mut self,
        addr: SocketAddr,
        poller: &Poller,
        key: usize,
    ) -> Option<TcpStream> {
        while let Some(k) = self.idle.get_mut(&addr)?.pop() {
            let Idle { sock, .. } = self.pooled.remove(k);
            if poller
                .modify_with_mode(&sock, Event::all(key), PollMode::Edge)
                .is_ok()
            {
                return Some(sock);
            }
            let _ = poller.delete(&sock);
        }
        None
    }

    /// Keeps a connection whose last response was complete, or closes it when the pool is full.
    pub fn put_idle(&mut self, addr: SocketAddr, sock: TcpStream, poller: &Poller) {
        let list = self.idle.entry(addr).or_default();
        if list.len() >= self.max_idle {
            let _ = poller.delete(&sock);
            return;
        }
        let entry = self.pooled.vacant_entry();
        let key = entry.key();
        if poller
            .modify_with_mode(&sock, Event::readable(POOL_KEYS + key), PollMode::Edge)
            .is_err()
        {
            let _ = poller.delete(&sock);
            return;
        }
        entry.insert(Idle { addr, sock });
        list.push(key);
    }

    /// An idle connection became readable: the upstream closed it (or sent bytes nobody asked
    /// for). Either way it is dropped.
    pub fn idle_event(&mut self, key: usize, poller: &Poller) {
        let Some(idle) = self.pooled.get(key) else {
            return;
        };
        let mut buf = [0u8; 64];
        match (&idle.sock).read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            _ => {}
        }
        let Idle { addr, sock } = self.pooled.remove(key);
        let _ = poller.delete(&sock);
        if let Some(list) = self.idle.get_mut(&addr) {
            list.retain(|&k| k != key);
        }
    }

    /// Deletes every pooled connection from the poller (shutdown).
    pub fn clear(&mut self, poller: &Poller) {
        for idle in self.pooled.drain() {
            let _ = poller.delete(&idle.sock);
        }
        self.idle.clear();
    }
}

/// Starts a nonblocking connect to `addr`, registered under `key`. `Ok((sock, true))` when it is
/// still in progress (the usual case: EINPROGRESS, completion comes as writability).
pub fn connect(addr: SocketAddr, poller: &Poller, key: usize) -> io::Result<(TcpStream, bool)> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    sock.set_tcp_nodelay(true)?;
    let pending = match sock.connect(&addr.into()) {
        Ok(()) => false,
        Err(e)
            if e.raw_os_error() == Some(libc::EINPROGRESS)
                || e.kind() == io::ErrorKind::WouldBlock =>
        {
            true
        }
        Err(e) => return Err(e),
    };
    let sock: TcpStream = sock.into();
    // SAFETY: the socket is deleted from the poller before it is dropped (Conn's relay teardown).
    unsafe { poller.add_with_mode(&sock, Event::all(key), PollMode::Edge)? };
    Ok((sock, pending))
}
