//! One client connection: a transport, what it speaks, and its lifecycle.
//!
//! - The transport ([`transport`]) moves bytes: plain TCP here, a scripted fake in the tests.
//!   Readiness flags say what it can do without blocking; they are set by the loop's edges and
//!   cleared only when a call meets `WouldBlock`.
//! - What it speaks (`Slot`): HTTP, answered here; HTTP with the request in progress relayed to
//!   an upstream (`relay`); or, after a relayed 101, a tunnel carrying bytes both ways
//!   (`tunnel`). Beside the slot, the HTTP [`Session`] (the sans-I/O core) hands out request
//!   heads, which `route` answers.
//! - Its lifecycle ([`Life`]): open, lingering after the last answer, closed; changed in one
//!   place, `set_life`.
//!
//! `drive` is the whole machine: write what is pending, read while readable, feed the session,
//! and stop only at `WouldBlock` (the flag is cleared, a new edge will come) or at the budget
//! (the loop puts the connection on its ready list).

use std::io;
use std::net::{IpAddr, TcpStream};
use std::time::Instant;

#[cfg(feature = "proxy")]
use polling::Poller;
#[cfg(feature = "proxy")]
use std::sync::{Mutex, MutexGuard};

use crate::app::Handler;
use crate::config::Routes;
use crate::http::response::{Output, Reply};
use crate::http::session::{Ctx, Event, OUTPUT_HIGH_WATER, Session};
#[cfg(feature = "proxy")]
use crate::proxy::upstream::Upstreams;

#[cfg(feature = "proxy")]
mod relay;
mod route;
#[cfg(test)]
mod tests;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;
#[cfg(feature = "proxy")]
mod tunnel;
#[cfg(feature = "proxy")]
pub use tunnel::TunnelLimit;

use transport::{Io, Stream, Tcp, Transport};

/// Size of a pooled read buffer. A request head must fit (`--max-head` is capped below it).
pub const READ_BUF: usize = 16 * 1024;

/// Buffers lent to connections while they have bytes in flight, so that an idle connection holds
/// none (DESIGN principle 6).
#[derive(Default)]
pub struct Pools {
    read: Vec<Vec<u8>>,
    write: Vec<Vec<u8>>,
    /// Finished relays, with their buffers (a proxied request allocates nothing). Boxed: a
    /// connection's slot holds one boxed, and it moves there and back without a copy.
    #[cfg(feature = "proxy")]
    #[allow(clippy::vec_box)]
    relays: Vec<Box<relay::Relay>>,
}

const POOL_KEEP: usize = 64;
/// A write buffer grown past this (a large pipelined burst) is freed rather than kept.
const WRITE_KEEP_CAPACITY: usize = 4 * OUTPUT_HIGH_WATER;

/// A read buffer's size: a whole request head must fit.
fn read_buf_len(max_head: usize) -> usize {
    READ_BUF.max(max_head + 1)
}

impl Pools {
    fn read_buf(&mut self, max_head: usize) -> Vec<u8> {
        let len = read_buf_len(max_head);
        match self.read.pop() {
            // (Smaller only after a reload raised --max-head: such buffers go.)
            Some(b) if b.len() >= len => b,
            _ => vec![0; len],
        }
    }
    fn put_read(&mut self, b: Vec<u8>) {
        if self.read.len() < POOL_KEEP {
            self.read.push(b);
        }
    }
    fn write_buf(&mut self) -> Vec<u8> {
        self.write.pop().unwrap_or_default()
    }
    fn put_write(&mut self, mut b: Vec<u8>) {
        if self.write.len() < POOL_KEEP && b.capacity() <= WRITE_KEEP_CAPACITY {
            b.clear();
            self.write.push(b);
        }
    }
    #[cfg(feature = "proxy")]
    fn relay(&mut self) -> Box<relay::Relay> {
        self.relays
            .pop()
            .unwrap_or_else(|| Box::new(relay::Relay::new()))
    }
    #[cfg(feature = "proxy")]
    fn put_relay(&mut self, mut r: Box<relay::Relay>) {
        if self.relays.len() < POOL_KEEP {
            r.reset();
            self.relays.push(r);
        }
    }
}

/// Which deadline applies to a connection now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// Waiting for the next request on a kept-alive connection.
    Idle,
    /// A TLS handshake is under way: the header timeout, counted from the accept; at its end
    /// the connection is closed (there is no way to answer yet).
    Handshake,
    /// A request is arriving: head (or body) timeout, counted from its first byte.
    Request,
    /// Output is pending: send timeout, counted from the last write progress.
    Send,
    /// Closing: reading and discarding until the peer closes or the linger time is up.
    Linger,
    /// Connecting to an upstream.
    Connect,
    /// Waiting for upstream bytes while a forwarded request is answered.
    Upstream,
    /// A forwarded request's body is arriving: the head timeout again, counted once from when
    /// the body began to be forwarded. Bytes do not restart it (a byte every few seconds would
    /// hold a client and an upstream connection forever).
    Body,
    /// A tunnel (after 101): no byte either way for `--tunnel-timeout` closes it. Bytes either
    /// way restart it.
    Tunnel,
}

/// Where a connection is in its life, beside what its protocol is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    /// Serving: requests, or an answer still being written after the last one.
    Open,
    /// The last answer is out and our side is shut for writing; what the peer still sends is read
    /// and dropped so that the close does not reset the answer away.
    Lingering,
    /// Finished: the loop closes it.
    Closed,
}

/// What a connection speaks now, beside its HTTP session (which hands out requests while the
/// slot is `Http`, awaits the relay's answer during `Relay`, and has stepped aside for good
/// once a `Tunnel` carries the bytes).
enum Slot {
    /// Before HTTP, on a `--proxy-protocol` listener: the load balancer's PROXY header, whose
    /// source address becomes the client's. Nothing else is read until it is complete.
    Preface,
    /// HTTP/1.1, answered here.
    Http,
    /// HTTP/1.1, with the request in progress forwarded upstream.
    #[cfg(feature = "proxy")]
    Relay(Box<relay::Relay>),
    /// Bytes both ways after a relayed 101 (WebSocket, any Upgrade).
    #[cfg(feature = "proxy")]
    Tunnel(Box<tunnel::Tunnel>),
}

/// The relay in `slot`, if that is what it holds (a function of the field alone, so the rest of
/// the connection stays usable while it is borrowed).
#[cfg(feature = "proxy")]
fn relay_in(slot: &mut Slot) -> Option<&mut relay::Relay> {
    match slot {
        Slot::Relay(r) => Some(r),
        _ => None,
    }
}

#[cfg(feature = "proxy")]
fn relay_of(slot: &Slot) -> Option<&relay::Relay> {
    match slot {
        Slot::Relay(r) => Some(r),
        _ => None,
    }
}

#[cfg(feature = "proxy")]
fn tunnel_in(slot: &mut Slot) -> Option<&mut tunnel::Tunnel> {
    match slot {
        Slot::Tunnel(t) => Some(t),
        _ => None,
    }
}

/// The loop's bookkeeping for a connection, kept with it: its generation (so an event or timer
/// meant for an earlier connection in the same slab slot is ignored), its place on the ready
/// list, and its deadline.
#[derive(Debug)]
pub struct Sched {
    pub generation: u32,
    /// On the loop's ready list already.
    pub queued: bool,
    /// Which deadline applies; the loop compares it with [`Conn::timer_kind`].
    pub timer: TimerKind,
    pub deadline: Instant,
    /// The deadline of the entry this connection has in the timer heap.
    pub scheduled: Option<Instant>,
    /// Bytes moved since the loop last looked (restarts the send timeout).
    pub wrote: bool,
}

/// What the loop should do with a connection after driving it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait for the next edge (or deadline).
    Wait,
    /// Stopped early with work left: revisit without waiting for an edge.
    Again,
    Close,
}

/// Everything a connection borrows from the loop while it is driven.
pub struct Env<'a> {
    pub ctx: Ctx<'a>,
    /// The current time in Common Log Format's `[...]` form, for access lines.
    pub log_date: &'a str,
    /// Paths forwarded upstream.
    pub routes: &'a Routes,
    /// Extend a client's X-Forwarded-For chain rather than replace it (`--proxy-trust-forwarded`).
    pub trust_forwarded: bool,
    /// `--health`: the path answered 200 here, before routes and files.
    pub health: Option<&'a str>,
    pub handler: &'a mut dyn Handler,
    pub pools: &'a mut Pools,
    pub budget: usize,
    #[cfg(feature = "proxy")]
    pub poller: &'a Poller,
    #[cfg(feature = "proxy")]
    /// Shared with the worker threads of the pooled models, hence the lock (uncontended in
    /// the single-threaded ones). Taken per call, never across a call that takes it again.
    pub upstreams: &'a Mutex<Upstreams>,
    /// The places for tunnels, shared by the whole server (`--max-tunnels`).
    #[cfg(feature = "proxy")]
    pub tunnels: &'a std::sync::Arc<TunnelLimit>,
    /// This connection's slab key (the owner recorded for its upstream connection, the address
    /// of a deferred handler's reply).
    pub key: usize,
    /// The server is shutting down: a closing connection does not linger once nothing is left
    /// to read.
    pub draining: bool,
    /// HTTPS settings, when the server has TLS listeners.
    #[cfg(feature = "tls")]
    pub https: Option<&'a tls::Https>,
    /// This connection is over TLS (set by the connection itself as it is driven).
    pub secure: bool,
    /// The way to the proactor's workers, when handlers run there.
    #[cfg(feature = "models")]
    pub workers: Option<&'a mut crate::models::proactor::Link>,
    /// The authentication check, when a prefix is protected (`--auth`).
    #[cfg(feature = "auth")]
    pub auth: Option<&'a crate::auth::Gate>,
}

#[cfg(feature = "proxy")]
impl Env<'_> {
    pub fn upstreams(&self) -> MutexGuard<'_, Upstreams> {
        self.upstreams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Conn<T = Stream> {
    io: T,
    /// Readiness: the transport can read (write) without blocking, as far as we know. Set by
    /// the loop's events, cleared when a call meets `WouldBlock`.
    readable: bool,
    writable: bool,
    /// The loop reports the peer's FIN (EPOLLRDHUP) for this connection...
    fin_watched: bool,
    /// ...and has: a short read no longer means the queue is drained (a read must meet the
    /// FIN).
    peer_closing: bool,
    pub sched: Sched,
    /// The client's address, for the access log and X-Forwarded-For.
    peer: Option<IpAddr>,
    session: Session,
    rbuf: Vec<u8>,
    rlen: usize,
    out: Output,
    /// The peer closed its side.
    eof: bool,
    life: Life,
    /// What the connection speaks beyond its HTTP session (see [`Slot`]). Without the proxy
    /// it is always `Http`.
    #[cfg_attr(not(feature = "proxy"), allow(dead_code))]
    slot: Slot,
    /// A request head held while a verifier checks its credentials, and the verdict once it
    /// came (the session stays at routing it meanwhile, reading nothing more).
    #[cfg(feature = "auth")]
    checking: Option<Checking>,
}

/// A request whose credentials a verifier is checking.
#[cfg(feature = "auth")]
struct Checking {
    head: Box<[u8]>,
    verdict: Option<bool>,
}

enum Flush {
    Done,
    Blocked,
    Budget,
}

impl Conn<Stream> {
    pub fn new(sock: TcpStream, generation: u32, peer: Option<IpAddr>, now: Instant) -> Conn {
        Conn::with_transport(Stream::Plain(Tcp::new(sock)), generation, peer, now)
    }

    /// A connection accepted on a TLS listener.
    #[cfg(feature = "tls")]
    pub fn new_tls(
        sock: TcpStream,
        https: &tls::Https,
        generation: u32,
        peer: Option<IpAddr>,
        now: Instant,
    ) -> io::Result<Conn> {
        let t = tls::Tls::new(sock, https)?;
        Ok(Conn::with_transport(
            Stream::Tls(Box::new(t)),
            generation,
            peer,
            now,
        ))
    }

    /// The socket, for the poller.
    pub fn socket(&self) -> &TcpStream {
        self.io.socket()
    }
}

impl<T: Transport> Conn<T> {
    pub fn with_transport(io: T, generation: u32, peer: Option<IpAddr>, now: Instant) -> Conn<T> {
        Conn {
            io,
            readable: true,
            writable: true,
            fin_watched: false,
            peer_closing: false,
            sched: Sched {
                generation,
                queued: false,
                timer: TimerKind::Idle,
                deadline: now,
                scheduled: None,
                wrote: false,
            },
            peer,
            session: Session::new(),
            rbuf: Vec::new(),
            rlen: 0,
            out: Output::default(),
            eof: false,
            life: Life::Open,
            slot: Slot::Http,
            #[cfg(feature = "auth")]
            checking: None,
        }
    }

    /// The loop reports the peer's FIN for this connection ([`Conn::peer_closing`]), so a read
    /// that returns less than asked may end the reading until the next edge.
    pub fn watch_peer_close(&mut self) {
        self.fin_watched = true;
    }

    /// An event said the peer closed its side (or the connection broke): read until a read
    /// says so, whatever a short read suggests.
    pub fn peer_closing(&mut self) {
        self.peer_closing = true;
    }

    /// The connection came through a load balancer that speaks the PROXY protocol: its header
    /// comes first, within the header timeout.
    pub fn expect_proxy_header(&mut self) {
        self.slot = Slot::Preface;
    }

    fn in_preface(&self) -> bool {
        matches!(self.slot, Slot::Preface)
    }

    /// Reads the PROXY header from the input held: false when it is not one (the connection is
    /// to be closed). Once it is complete, the client's address is the one it names and the
    /// bytes after it go to the HTTP session.
    fn preface(&mut self, env: &mut Env<'_>) -> bool {
        match crate::proxy_protocol::parse(&self.rbuf[..self.rlen]) {
            Ok(None) => true,
            Ok(Some(h)) => {
                if let Some(source) = h.source {
                    self.peer = Some(source.ip());
                }
                self.slot = Slot::Http;
                self.rbuf.copy_within(h.len..self.rlen, 0);
                self.rlen -= h.len;
                if self.rlen > 0 {
                    self.feed(env);
                }
                true
            }
            Err(e) => {
                log::debug!("closing a connection from {:?}: {e}", self.peer);
                false
            }
        }
    }

    /// Readiness the loop saw (edge-triggered: it only adds).
    pub fn set_ready(&mut self, readable: bool, writable: bool) {
        self.readable |= readable;
        self.writable |= writable;
    }

    /// True while nothing of a request is in hand (for graceful shutdown).
    pub fn is_idle(&self) -> bool {
        self.out.is_empty()
            && !self.session.in_request(self.rlen)
            && !self.relaying()
            && !self.is_tunnel()
    }

    /// A tunnel carries bytes both ways (it is never idle in the graceful-shutdown sense).
    fn is_tunnel(&self) -> bool {
        #[cfg(feature = "proxy")]
        return self.tunnelling();
        #[cfg(not(feature = "proxy"))]
        false
    }

    pub fn close_after_current(&mut self) {
        self.session.close_after_current(self.rlen);
    }

    /// Shutdown has begun: answers from now on close. What the client sent before is still read
    /// (the readiness flag is set: a read that finds nothing clears it), so a request it had
    /// begun is finished rather than cut.
    pub fn begin_shutdown(&mut self) {
        self.session.stop_keep_alive();
        self.readable = true;
    }

    /// True once [`Conn::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.session.is_stopping()
    }

    /// Tells what is answered that this connection is over TLS: X-Forwarded-Proto, and the
    /// field lines (HSTS) answers over TLS carry. Called wherever an answer can be made.
    fn dress(&self, env: &mut Env<'_>) {
        env.secure = self.io.is_secure();
        env.ctx.head_extra = b"";
        #[cfg(feature = "tls")]
        if env.secure
            && let Some(https) = env.https
        {
            env.ctx.head_extra = &https.hsts;
        }
    }

    /// The request-head deadline passed: answer 408 and close.
    pub fn request_timed_out(&mut self, env: &mut Env<'_>) {
        if self.in_preface() {
            // No HTTP was spoken yet: nothing to answer, the balancer's connection just goes.
            self.set_life(Life::Closed);
            return;
        }
        self.dress(env);
        self.ensure_out(env);
        if let Some(x) = self.session.timed_out(&mut self.out, &env.ctx) {
            route::log(env, self.peer, &x, None);
        }
    }

    /// A request is being forwarded upstream.
    fn relaying(&self) -> bool {
        #[cfg(feature = "proxy")]
        return matches!(self.slot, Slot::Relay(_));
        #[cfg(not(feature = "proxy"))]
        false
    }

    /// An answer is being made elsewhere (upstream, or by a worker thread), or credentials are
    /// being checked.
    fn awaiting_answer(&self) -> bool {
        #[cfg(feature = "auth")]
        if self.checking.is_some() {
            return true;
        }
        self.relaying() || self.session.is_awaiting()
    }

    /// The verifier's verdict on the held request; the next drive acts on it.
    #[cfg(feature = "auth")]
    pub fn auth_verdict(&mut self, ok: bool) {
        if let Some(c) = &mut self.checking {
            c.verdict = Some(ok);
        }
    }

    /// Routes the held request once its verdict has come.
    #[cfg(feature = "auth")]
    fn resume_checked(&mut self, env: &mut Env<'_>) {
        let Some(Checking {
            head,
            verdict: Some(ok),
        }) = self.checking.take_if(|c| c.verdict.is_some())
        else {
            return;
        };
        self.ensure_out(env);
        let (session, out) = (&mut self.session, &mut self.out);
        let routed = match crate::http::request::parse(&head, env.ctx.limits.max_headers) {
            Ok(req) => route::verified(session, out, self.peer, &head, &req, env, ok),
            // It was parsed with these limits before it was held.
            Err(e) => {
                let line =
                    crate::http::access::Line::Raw(crate::http::session::request_line(&head));
                let x = session.refuse(e.status(), out, &env.ctx, line);
                route::log(env, self.peer, &x, None);
                route::Routed::Answered
            }
        };
        self.follow(routed, env);
    }

    /// A worker answered the deferred request (`head`).
    pub fn handler_replied(&mut self, head: &[u8], reply: Reply<'_>, env: &mut Env<'_>) {
        self.dress(env);
        self.ensure_out(env);
        let line = crate::http::access::Line::Raw(crate::http::session::request_line(head));
        let x = self.session.respond(reply, &mut self.out, &env.ctx, line);
        route::log(env, self.peer, &x, None);
    }

    /// The events a one-shot registration should wait for: reading once a read met
    /// `WouldBlock`, writing while output is blocked. (Asking for one the socket has already
    /// would wake at once, forever: level-triggered one-shot.)
    pub fn interest(&self) -> (bool, bool) {
        let read = !self.readable && !self.eof;
        let write = !self.writable && (!self.out.is_empty() || self.io.wants_write());
        (read, write)
    }

    fn ensure_out(&mut self, env: &mut Env<'_>) {
        if self.out.buf.capacity() == 0 {
            self.out.buf = env.pools.write_buf();
        }
    }

    pub fn drive(&mut self, env: &mut Env<'_>) -> Next {
        if self.life == Life::Closed {
            return Next::Close;
        }
        self.dress(env);
        #[cfg(feature = "auth")]
        self.resume_checked(env);
        #[cfg(feature = "proxy")]
        if self.tunnelling() {
            return self.drive_tunnel(env);
        }
        let next = self.turn(env);
        // A 101 made it a tunnel during this turn: the tunnel's turn follows.
        #[cfg(feature = "proxy")]
        if self.tunnelling() && next != Next::Close {
            return self.drive_tunnel(env);
        }
        // A relay keeps its buffer while it waits: its windows are larger anyway.
        if next == Next::Wait && !self.relaying() {
            self.park_input(env);
        }
        next
    }

    /// Makes `rbuf` a whole pool buffer that still starts with the bytes held so far.
    fn ensure_rbuf(&mut self, env: &mut Env<'_>) {
        if self.rbuf.len() < read_buf_len(env.ctx.limits.max_head) {
            let mut full = env.pools.read_buf(env.ctx.limits.max_head);
            full[..self.rlen].copy_from_slice(&self.rbuf[..self.rlen]);
            self.rbuf = full;
        }
    }

    /// Gives the pool buffer back and keeps only the bytes held (a partial head, requests held
    /// back), so that thousands of clients that each sent a byte hold a few bytes each, not a
    /// read buffer each (DESIGN principle 6). The copy happens only when a wait follows a
    /// partial read.
    fn park_input(&mut self, env: &mut Env<'_>) {
        let whole = self.rbuf.len() >= read_buf_len(env.ctx.limits.max_head);
        if !whole && self.rbuf.len() == self.rlen {
            return; // already exactly what is held
        }
        let kept = self.rbuf[..self.rlen].to_vec();
        let old = std::mem::replace(&mut self.rbuf, kept);
        if whole {
            env.pools.put_read(old);
        }
    }

    /// One drive of the connection until it must wait, stops early, or closes.
    fn turn(&mut self, env: &mut Env<'_>) -> Next {
        let mut budget = env.budget;
        let mut first = true;
        loop {
            let mut progress = false;
            #[cfg(feature = "proxy")]
            if self.relaying() {
                self.ensure_out(env);
                match self.drive_relay(env) {
                    relay::Step::Idle => {}
                    relay::Step::Progress | relay::Step::CloseClient => progress = true,
                }
                // The session is done (`upgrade`): the tunnel takes over, not the linger.
                if self.tunnelling() {
                    return Next::Again;
                }
            }
            match self.write_pending(&mut budget) {
                Ok(wrote) => progress |= wrote,
                Err(next) => return next,
            }
            if self.out.is_empty() && self.out.buf.capacity() > 0 {
                env.pools.put_write(std::mem::take(&mut self.out.buf));
                self.out.clear();
            }
            if self.session.is_closed() && self.out.is_empty() {
                return self.linger(env, &mut budget);
            }
            // Fairness: the turn ends here, after the answers so far have been written.
            if budget == 0 {
                return Next::Again;
            }
            // Requests held back while output was over the high-water mark may go on now; and
            // at the start of a turn, as the last one may have ended at the budget just as its
            // output drained (no edge would bring them back).
            if self.rlen > 0 && (progress || first) && !self.in_preface() {
                let held = self.rlen;
                self.feed(env);
                // Requests taken now have answers to write: another round, not a wait for an
                // edge (a socket that stayed writable gives none).
                progress |= self.rlen != held;
            }
            first = false;
            let room = self.rlen < read_buf_len(env.ctx.limits.max_head);
            let backlog = self.out.buf.len() - self.out.pos >= OUTPUT_HIGH_WATER;
            if self.readable && !self.eof && room && !backlog && !self.session.is_closed() {
                self.ensure_rbuf(env);
                match self.io.read(&mut self.rbuf[self.rlen..]) {
                    Io::Closed => {
                        self.eof = true;
                        #[cfg(feature = "proxy")]
                        self.client_gone(env);
                    }
                    Io::Done(n) => {
                        let asked = self.rbuf.len() - self.rlen;
                        self.rlen += n;
                        budget = budget.saturating_sub(n);
                        // Less than asked: the queue is empty, and any byte or FIN after it
                        // comes with an edge of its own (a FIN already here was reported with
                        // RDHUP). This saves the read that would meet EAGAIN, one per request.
                        if n < asked && self.fin_watched && !self.peer_closing {
                            self.readable = !self.io.short_read_drains();
                        }
                        if !self.in_preface() {
                            self.feed(env);
                        } else if !self.preface(env) {
                            return self.set_life(Life::Closed);
                        }
                    }
                    Io::WouldBlock => self.readable = false,
                    Io::Error(e) => {
                        log::debug!("read: {e}");
                        return self.set_life(Life::Closed);
                    }
                }
                progress = true;
            }
            if self.rlen == 0 && !self.rbuf.is_empty() {
                self.park_input(env);
            }
            if self.eof && self.out.is_empty() && !self.awaiting_answer() {
                // The peer is gone and every complete request it sent has been answered.
                return self.set_life(Life::Closed);
            }
            if !progress {
                return Next::Wait;
            }
        }
    }

    /// Feeds the buffered input to the session and answers the requests it hands out, until it
    /// waits (for bytes, for room in the output, or for an answer from elsewhere).
    fn feed(&mut self, env: &mut Env<'_>) {
        self.ensure_out(env);
        let mut used = 0;
        let routed = loop {
            let input = &self.rbuf[used..self.rlen];
            let (n, event) = self.session.feed(input, &mut self.out, &env.ctx);
            used += n;
            match event {
                Event::Wait => break route::Routed::Answered,
                Event::Answered(x) => route::log(env, self.peer, &x, None),
                Event::Request { head, req } => {
                    let (session, out) = (&mut self.session, &mut self.out);
                    let generation = self.sched.generation;
                    match route::route(session, out, self.peer, head, &req, env, generation) {
                        route::Routed::Answered => {}
                        // (Answered is all there is without the proxy and the models.)
                        #[allow(unreachable_patterns)]
                        elsewhere => break elsewhere,
                    }
                }
            }
        };
        // Keep the unconsumed tail (a partial head, requests held back) at the front.
        self.rbuf.copy_within(used..self.rlen, 0);
        self.rlen -= used;
        self.follow(routed, env);
    }

    /// Starts what routing a request asked for, when it is not answered yet.
    #[cfg_attr(not(feature = "models"), allow(unused_variables))]
    fn follow(&mut self, routed: route::Routed, env: &mut Env<'_>) {
        match routed {
            route::Routed::Answered => {}
            #[cfg(feature = "proxy")]
            route::Routed::Forward(start) => self.start_relay(start),
            #[cfg(feature = "models")]
            route::Routed::Defer(head) => {
                if let Some(link) = env.workers.as_deref_mut() {
                    link.submit(crate::models::proactor::Job {
                        key: env.key,
                        generation: self.sched.generation,
                        head,
                    });
                }
            }
            #[cfg(feature = "auth")]
            route::Routed::Verify(head) => {
                self.checking = Some(Checking {
                    head,
                    verdict: None,
                })
            }
        }
    }

    /// After the last answer: shut our side, then read and drop until the peer closes.
    fn linger(&mut self, env: &mut Env<'_>, budget: &mut usize) -> Next {
        if self.eof {
            return self.set_life(Life::Closed);
        }
        if self.life == Life::Open {
            self.set_life(Life::Lingering);
        }
        self.rlen = 0;
        self.ensure_rbuf(env);
        while self.readable {
            match self.io.read(&mut self.rbuf) {
                Io::Done(n) => {
                    *budget = budget.saturating_sub(n);
                    if *budget == 0 {
                        return Next::Again;
                    }
                }
                Io::WouldBlock => self.readable = false,
                Io::Closed | Io::Error(_) => return self.set_life(Life::Closed),
            }
        }
        if env.draining {
            return self.set_life(Life::Closed);
        }
        self.park_input(env);
        Next::Wait
    }

    /// The one place the lifecycle changes; says what the loop should do next. Entering
    /// `Lingering` shuts our side for writing (the FIN goes after the last answer).
    fn set_life(&mut self, life: Life) -> Next {
        log::trace!("connection {:?} -> {life:?}", self.life);
        if life == Life::Lingering && self.life != Life::Lingering {
            self.io.shutdown_write();
        } else if life == Life::Closed && self.life == Life::Open {
            self.io.close();
        }
        self.life = life;
        match life {
            Life::Closed => Next::Close,
            Life::Open | Life::Lingering => Next::Wait,
        }
    }

    /// Writes pending output while the transport takes it: `Ok(true)` when something went out,
    /// `Err(next)` when the turn must end (the budget is spent, or the connection broke).
    fn write_pending(&mut self, budget: &mut usize) -> Result<bool, Next> {
        if !self.writable {
            return Ok(false);
        }
        let flushed = if !self.out.is_empty() {
            self.flush(budget)
        } else if self.io.wants_write() {
            // The transport's own bytes (a TLS handshake flight) with no answer pending.
            match self.io.flush() {
                Io::Done(_) => Ok(Flush::Done),
                Io::WouldBlock => Ok(Flush::Blocked),
                Io::Closed => Err(io::ErrorKind::WriteZero.into()),
                Io::Error(e) => Err(e),
            }
        } else {
            return Ok(false);
        };
        match flushed {
            Ok(Flush::Done) => Ok(true),
            Ok(Flush::Blocked) => {
                self.writable = false;
                Ok(false)
            }
            Ok(Flush::Budget) => Err(Next::Again),
            Err(e) => {
                log::debug!("write: {e}");
                Err(self.set_life(Life::Closed))
            }
        }
    }

    /// Writes pending output: buffer bytes, then the file range after them, and so on.
    fn flush(&mut self, budget: &mut usize) -> io::Result<Flush> {
        loop {
            let out = &mut self.out;
            let limit = out.files.front().map_or(out.buf.len(), |f| f.at);
            let sent = if out.pos < limit {
                // A file range follows: MSG_MORE lets the head share a segment with its start.
                let more = !out.files.is_empty();
                let r = self.io.write(&out.buf[out.pos..limit], more);
                if let Io::Done(n) = r {
                    out.pos += n;
                }
                r
            } else if let Some(seg) = out.files.front_mut() {
                let want = seg.len.min((*budget).max(64 * 1024) as u64).min(1 << 30) as usize;
                let r = self.io.send_file(&seg.file, seg.offset, want);
                match r {
                    Io::Done(0) => {
                        // The file shrank under us: the promised length cannot be kept.
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file truncated while sent",
                        ));
                    }
                    Io::Done(n) => {
                        seg.offset += n as u64;
                        seg.len -= n as u64;
                        if seg.len == 0 {
                            out.files.pop_front();
                        }
                    }
                    _ => {}
                }
                r
            } else {
                out.clear();
                return Ok(Flush::Done);
            };
            match sent {
                Io::WouldBlock => return Ok(Flush::Blocked),
                Io::Error(e) => return Err(e),
                Io::Closed => return Err(io::ErrorKind::WriteZero.into()),
                Io::Done(n) => {
                    self.sched.wrote = true;
                    *budget = budget.saturating_sub(n);
                    if *budget == 0 && !self.out.is_empty() {
                        return Ok(Flush::Budget);
                    }
                }
            }
        }
    }

    /// Which timeout applies now (the loop sets `deadline` from it).
    pub fn timer_kind(&self) -> TimerKind {
        if self.is_tunnel() {
            return TimerKind::Tunnel;
        }
        if self.io.is_handshaking() && self.life == Life::Open {
            return TimerKind::Handshake;
        }
        #[cfg(feature = "proxy")]
        if let Some(kind) = self.relay_timer() {
            // A slow client holds the upstream back: its send timeout rules then.
            return if !self.out.is_empty() && !self.writable {
                TimerKind::Send
            } else {
                kind
            };
        }
        if self.in_preface() {
            TimerKind::Request
        } else if self.life == Life::Lingering || (self.session.is_closed() && self.out.is_empty())
        {
            TimerKind::Linger
        } else if !self.out.is_empty() {
            TimerKind::Send
        } else if self.session.in_request(self.rlen) {
            TimerKind::Request
        } else {
            TimerKind::Idle
        }
    }
}
