//! A tunnel: what a proxied connection becomes after the upstream answered an upgrade request
//! with `101 Switching Protocols` (WebSocket, h2c, any `Upgrade`). From then on bytes are copied
//! both ways, unread and unchanged, until both sides have ended.
//!
//! Each direction has a bounded window ([`WINDOW`]): client bytes wait in the tunnel's own
//! buffer for the upstream, upstream bytes wait in the connection's output for the client. A full
//! window stops the reading on its side (the kernel's buffers then push back on the sender); the
//! write that empties it lets the reading go on, so no edge is needed to resume.
//!
//! Each direction is a [`Half`] that only moves forward: `Open` until its sender's EOF, `Ending`
//! while what was buffered still goes out, `Shut` once its receiver got our FIN
//! (`shutdown(SHUT_WR)`). The tunnel ends when both are shut, on an error, or when no byte moved
//! either way for `--tunnel-timeout` (the loop's `TimerKind::Tunnel`, which also ends a tunnel
//! left half-closed). Its access line (status 101) is written when it ends, whatever ended it.

use std::io;
use std::net::{IpAddr, Shutdown};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::relay::{Up, WINDOW};
use super::transport::{self, Io, Transport};
use super::{Conn, Env, Life, Next, Slot, tunnel_in};
use crate::http::access::Line;
use crate::http::session::Exchange;
use crate::proxy::upstream::Lent;

/// Bytes read per call, from either side.
const CHUNK: usize = 16 * 1024;

/// How many tunnels the whole server may have open at once (`--max-tunnels`), shared by every
/// loop and thread. A place is taken when an upgrade request is routed, so that handshakes in
/// flight count too, and given back when the tunnel (or the request, if it got no 101) ends.
#[derive(Debug)]
pub struct TunnelLimit {
    open: AtomicUsize,
    max: usize,
}

impl TunnelLimit {
    pub fn new(max: usize) -> TunnelLimit {
        TunnelLimit {
            open: AtomicUsize::new(0),
            max,
        }
    }

    /// A place for one more tunnel, or `None` at the limit.
    pub fn take(self: &Arc<Self>) -> Option<TunnelPlace> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| TunnelPlace(Arc::clone(self)))
    }
}

/// One place among the tunnels; given back when dropped.
#[derive(Debug)]
pub struct TunnelPlace(Arc<TunnelLimit>);

impl Drop for TunnelPlace {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One direction of a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Half {
    /// Bytes flow.
    Open,
    /// The sender closed its side (or failed); what is buffered still goes to the receiver.
    Ending,
    /// The receiver has our FIN, or is gone: nothing more goes this way.
    Shut,
}

pub struct Tunnel {
    /// `None` once the loop took it to close it.
    up: Option<Up>,
    /// Client bytes for the upstream, and how many of them went.
    to_up: Vec<u8>,
    to_up_pos: usize,
    /// Client to upstream.
    upward: Half,
    /// Upstream to client (through the connection's output).
    downward: Half,
    /// Bytes that went to the upstream and came for the client, for the access line.
    bytes_up: u64,
    bytes_down: u64,
    line: Box<[u8]>,
    upstream: String,
    peer: Option<IpAddr>,
    /// The upgrade request's first byte.
    started: Instant,
    _place: TunnelPlace,
}

impl Tunnel {
    /// A tunnel over `up`, with `to_up` (client bytes already read past the request) still to
    /// send, `early_down` upstream bytes already queued for the client after the 101, and
    /// `client_eof` when the client has closed its side already.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        up: Up,
        to_up: Vec<u8>,
        early_down: u64,
        client_eof: bool,
        line: Box<[u8]>,
        upstream: String,
        peer: Option<IpAddr>,
        started: Instant,
        place: TunnelPlace,
    ) -> Tunnel {
        Tunnel {
            up: Some(up),
            to_up,
            to_up_pos: 0,
            upward: if client_eof { Half::Ending } else { Half::Open },
            downward: Half::Open,
            bytes_up: 0,
            bytes_down: early_down,
            line,
            upstream,
            peer,
            started,
            _place: place,
        }
    }

    pub(super) fn set_ready(&mut self, readable: bool, writable: bool) {
        if let Some(up) = &mut self.up {
            up.readable |= readable;
            up.writable |= writable;
        }
    }

    /// The upstream connection, for the loop to close: the tunnel is over.
    pub(super) fn take_upstream(&mut self) -> Option<Lent> {
        self.up.take().map(|u| u.lent)
    }

    /// Client bytes waiting for the upstream.
    fn pending_up(&self) -> usize {
        self.to_up.len() - self.to_up_pos
    }

    /// Sends what waits for the upstream until it is all gone or the socket is full. `Err`
    /// when the upstream is gone.
    fn send_up(&mut self) -> io::Result<usize> {
        let Some(up) = self.up.as_mut() else {
            return Ok(0);
        };
        let mut sent = 0;
        while up.writable && self.to_up_pos < self.to_up.len() {
            match transport::send(&up.lent.sock, &self.to_up[self.to_up_pos..], false) {
                Io::Done(n) => {
                    self.to_up_pos += n;
                    sent += n;
                }
                Io::WouldBlock => up.writable = false,
                Io::Closed => return Err(io::ErrorKind::WriteZero.into()),
                Io::Error(e) => return Err(e),
            }
        }
        self.bytes_up += sent as u64;
        if self.to_up_pos == self.to_up.len() {
            self.to_up.clear();
            self.to_up_pos = 0;
        }
        Ok(sent)
    }

    /// Makes room at the end of `to_up` by dropping what was sent, once that is most of it.
    fn compact(&mut self) {
        if self.to_up_pos > 0 && self.to_up_pos >= self.pending_up() {
            self.to_up.drain(..self.to_up_pos);
            self.to_up_pos = 0;
        }
    }

    /// The access line: status 101, the bytes that went to the client, the time since the
    /// request's first byte, the upstream and the bytes that went to it.
    fn log(&self) {
        if !crate::logging::access_enabled() {
            return;
        }
        let dates = crate::http::date::DateCache::default();
        let x = Exchange {
            line: Line::Raw(&self.line),
            status: 101,
            bytes: self.bytes_down,
            started: self.started,
            answered: Instant::now(),
        };
        let upstream = format!("{} up={}", self.upstream, self.bytes_up);
        crate::logging::access(self.peer, dates.clf(), &x, Some(&upstream));
    }
}

impl Drop for Tunnel {
    /// Whatever closed the connection (both sides done, an error, the timeout, the end of the
    /// grace period), the tunnel's line is written once, here; its place is given back with it.
    fn drop(&mut self) {
        if self.up.is_some() {
            log::debug!("tunnel to {} dropped with its upstream open", self.upstream);
        }
        self.log();
    }
}

impl<T: Transport> Conn<T> {
    /// True while the connection is a tunnel.
    pub(super) fn tunnelling(&self) -> bool {
        matches!(self.slot, Slot::Tunnel(_))
    }

    /// One turn of a tunnel: write to the client, send to the upstream, then read either side as
    /// far as its window allows; until nothing moves (`Wait`), the budget is spent (`Again`), or
    /// the tunnel is over (`Close`).
    pub(super) fn drive_tunnel(&mut self, env: &mut Env<'_>) -> Next {
        let mut budget = env.budget;
        let mut chunk = [0u8; CHUNK];
        loop {
            let mut progress = false;
            // Upstream bytes to the client.
            match self.write_pending(&mut budget) {
                Ok(wrote) => progress |= wrote,
                Err(next) => return next,
            }
            let t = tunnel_in(&mut self.slot).expect("tunnel");
            if self.out.is_empty() && t.downward == Half::Ending {
                self.io.shutdown_write();
                t.downward = Half::Shut;
                progress = true;
            }
            // Client bytes to the upstream.
            match t.send_up() {
                Ok(0) => {}
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.sched.wrote = true;
                    progress = true;
                }
                Err(e) => {
                    // The upstream is gone: nothing more goes to it; what it said before is
                    // still read and delivered.
                    log::debug!("tunnel: send to {}: {e}", t.upstream);
                    t.to_up.clear();
                    t.to_up_pos = 0;
                    t.upward = Half::Shut;
                    progress = true;
                }
            }
            if t.upward == Half::Ending && t.pending_up() == 0 {
                if let Some(up) = &t.up {
                    let _ = up.lent.sock.shutdown(Shutdown::Write);
                }
                t.upward = Half::Shut;
                progress = true;
            }
            if t.upward == Half::Shut {
                // No client byte is taken any more (the upstream may be gone before the
                // client's EOF): the one-shot models must not wait for reading either.
                self.eof = true;
                if t.downward == Half::Shut {
                    return self.set_life(Life::Closed);
                }
            }
            if budget == 0 {
                return Next::Again;
            }
            // Upstream bytes into the client's window.
            let backlog = self.out.buf.len() - self.out.pos;
            if let Some(up) = t.up.as_mut()
                && t.downward == Half::Open
                && up.readable
                && backlog < WINDOW
            {
                match transport::recv(&up.lent.sock, &mut chunk) {
                    Io::Closed => t.downward = Half::Ending,
                    Io::Done(n) => {
                        let out = &mut self.out;
                        if out.pos > 0 && out.pos >= backlog && out.files.is_empty() {
                            // What was written goes once it is most of the buffer, which
                            // then stays within twice the window.
                            out.buf.drain(..out.pos);
                            out.pos = 0;
                        }
                        if out.buf.capacity() == 0 {
                            out.buf = env.pools.write_buf();
                        }
                        out.buf.extend_from_slice(&chunk[..n]);
                        t.bytes_down += n as u64;
                        budget = budget.saturating_sub(n);
                        self.sched.wrote = true;
                    }
                    Io::WouldBlock => up.readable = false,
                    Io::Error(e) => {
                        // Reset: deliver what came, and stop sending to it.
                        log::debug!("tunnel: read from {}: {e}", t.upstream);
                        t.downward = Half::Ending;
                        t.upward = Half::Shut;
                    }
                }
                progress = true;
            }
            // Client bytes into the upstream's window.
            if t.upward == Half::Open && self.readable && t.pending_up() < WINDOW {
                t.compact();
                if t.to_up.capacity() == 0 {
                    t.to_up = env.pools.write_buf();
                }
                match self.io.read(&mut chunk) {
                    Io::Closed => {
                        self.eof = true;
                        t.upward = Half::Ending;
                    }
                    Io::Done(n) => {
                        t.to_up.extend_from_slice(&chunk[..n]);
                        budget = budget.saturating_sub(n);
                        self.sched.wrote = true;
                    }
                    Io::WouldBlock => self.readable = false,
                    Io::Error(e) => {
                        log::debug!("tunnel: read from the client: {e}");
                        return self.set_life(Life::Closed);
                    }
                }
                progress = true;
            }
            if !progress {
                // An idle tunnel holds no buffer (DESIGN principle 6).
                if self.out.is_empty() && self.out.buf.capacity() > 0 {
                    env.pools.put_write(std::mem::take(&mut self.out.buf));
                    self.out.clear();
                }
                let t = tunnel_in(&mut self.slot).expect("tunnel");
                if t.pending_up() == 0 && t.to_up.capacity() > 0 {
                    env.pools.put_write(std::mem::take(&mut t.to_up));
                    t.to_up_pos = 0;
                }
                return Next::Wait;
            }
        }
    }
}
