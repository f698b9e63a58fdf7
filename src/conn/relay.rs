//! The proxy side of a client connection: one forwarded request at a time, relayed between the
//! client and an upstream connection with at most [`WINDOW`] bytes buffered per direction.
//!
//! The relay is the transport for a session in its `Forward` phase: it takes the head the session
//! built, connects (or takes a pooled connection), sends the head and the request body as the
//! session hands it over, and copies the answer into the client's output as it arrives, checking
//! its framing. It ends in one of three ways: done (the upstream connection may go back to the
//! pool), failed before any byte of an answer (we answer 502/504 ourselves), or aborted after
//! bytes were sent (the client connection closes).
//!
//! An upgrade request (WebSocket, h2c, ...) is relayed the same way on an upstream connection of
//! its own (never from the pool, never back to it). A 101 answer to it hands the client
//! connection and the upstream connection over to a [`super::tunnel::Tunnel`]; any other answer
//! is an ordinary one.

use std::net::SocketAddr;

use super::transport::{self, Io, Transport};
use super::tunnel::{Tunnel, TunnelPlace};
use super::{Conn, Env, Slot, TimerKind, relay_in, relay_of, route};
use crate::files::headers::HeaderBlock;
use crate::http::access::Line;
use crate::http::chunked::Decoder;
use crate::http::request::Method;
use crate::proxy::message::{self, Framing};
use crate::proxy::upstream::Lent;

/// Bytes buffered per direction, at most (client to upstream, upstream to client).
pub const WINDOW: usize = 64 * 1024;

/// Bytes asked of the upstream per read.
const READ_CHUNK: usize = 16 * 1024;

/// A pooled relay keeps a buffer up to this size (one read's worth and a head); one grown past
/// it by a large answer is freed, so idle relays in the pool stay small.
const KEEP_CAPACITY: usize = 20 * 1024;

/// What the relay needs to start, beside the head it was given to write ([`Relay::head_buf`]):
/// the request as the session routed it.
pub struct Start<'a> {
    /// The routes in force when the request was routed, and the one it took.
    pub routes: crate::config::Routes,
    pub route: usize,
    pub method: Method,
    pub has_body: bool,
    /// The client's request line, for the access log.
    pub line: &'a [u8],
    /// An upgrade request, with the place it holds among the tunnels allowed.
    pub upgrade: Option<TunnelPlace>,
    /// `--header` lines to add to the answer.
    pub headers: Option<HeaderBlock>,
}

/// A forwarded exchange. Relays are reused (`Pools`): a finished one keeps its buffers'
/// capacity for the next request, so a proxied request allocates nothing in steady state.
pub struct Relay {
    routes: crate::config::Routes,
    route: usize,
    /// The client's request line, for the access log.
    line: Vec<u8>,
    method: Method,
    has_body: bool,
    tried: Vec<SocketAddr>,
    up: Option<Up>,
    /// Bytes for the upstream (head, then body as it comes) and how many have gone. Without a
    /// body the head stays after it has gone, for one retry on a fresh connection.
    to_up: Vec<u8>,
    to_up_pos: usize,
    /// Bytes from the upstream not yet relayed.
    from_up: Window,
    resp: Resp,
    /// Some byte of an answer went to the client: failures can no longer be answered.
    sent: bool,
    retried: bool,
    status: u16,
    bytes: u64,
    /// What to answer when every upstream failed: 502 (refused, broken) or 504 (timed out); or
    /// 408/413/400 when the request body failed.
    failure: u16,
    reusable: bool,
    /// An upgrade request: a 101 turns the exchange into a tunnel, which takes this place.
    upgrade: Option<TunnelPlace>,
    /// `--header` lines added to the final answer's head (not to a 1xx, nor a 101).
    headers: Option<HeaderBlock>,
}

/// The upstream connection and its readiness flags (edge-triggered: cleared only on
/// `WouldBlock`).
pub(super) struct Up {
    pub(super) lent: Lent,
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// The last read returned less than asked (the queue was empty then).
    pub(super) short_read: bool,
    /// An event said the upstream closed its side (or the connection broke).
    pub(super) closing: bool,
}

enum Resp {
    Head,
    Length(u64),
    /// Relayed as it comes, or (`dechunk`, for an HTTP/1.0 client) decoded and sent up to the
    /// close.
    Chunked {
        decoder: Decoder,
        dechunk: bool,
    },
    Close,
    Done,
}

/// How a relay turn ended.
pub enum Step {
    /// Waiting for the sockets.
    Idle,
    Progress,
    /// The client connection cannot go on.
    CloseClient,
}

impl Relay {
    /// An empty relay, for the pool.
    pub fn new() -> Relay {
        Relay {
            // Replaced by `start`; a pooled relay keeps the last routes it had until then.
            routes: std::sync::Arc::from(Vec::new()),
            route: 0,
            line: Vec::new(),
            method: Method::Get,
            has_body: false,
            tried: Vec::new(),
            up: None,
            to_up: Vec::new(),
            to_up_pos: 0,
            from_up: Window::default(),
            resp: Resp::Head,
            sent: false,
            retried: false,
            status: 0,
            bytes: 0,
            failure: 502,
            reusable: false,
            upgrade: None,
            headers: None,
        }
    }

    /// Where the head for the upstream is written, before [`Relay::start`].
    pub fn head_buf(&mut self) -> &mut Vec<u8> {
        &mut self.to_up
    }

    /// Makes a pooled (or new) relay ready for a request whose upstream head is in `head_buf`.
    pub fn start(&mut self, start: Start<'_>) {
        self.routes = start.routes;
        self.headers = start.headers;
        self.route = start.route;
        self.method = start.method;
        self.has_body = start.has_body;
        self.line.clear();
        self.line.extend_from_slice(start.line);
        self.upgrade = start.upgrade;
    }

    /// Empties a finished relay for the pool, keeping its buffers unless a large answer grew
    /// them.
    pub fn reset(&mut self) {
        debug_assert!(self.up.is_none() && self.upgrade.is_none());
        self.tried.clear();
        self.to_up.clear();
        self.to_up_pos = 0;
        self.from_up.clear();
        self.from_up.shrink(KEEP_CAPACITY);
        if self.to_up.capacity() > KEEP_CAPACITY {
            self.to_up = Vec::new();
        }
        self.resp = Resp::Head;
        self.sent = false;
        self.retried = false;
        self.status = 0;
        self.bytes = 0;
        self.failure = 502;
        self.reusable = false;
        self.upgrade = None;
        self.headers = None;
    }

    pub fn connecting(&self) -> bool {
        self.up.as_ref().is_some_and(|u| u.lent.connecting)
    }

    pub fn set_ready(&mut self, readable: bool, writable: bool) {
        if let Some(up) = &mut self.up {
            up.readable |= readable;
            up.writable |= writable;
        }
    }

    /// The upstream used (or last tried), for the log.
    fn name(&self) -> String {
        self.up
            .as_ref()
            .map(|u| u.lent.addr)
            .or(self.tried.last().copied())
            .map_or("-".into(), |a| a.to_string())
    }
}

impl<T: Transport> Conn<T> {
    /// Ends the relay: the slot is plain HTTP again.
    fn take_relay(&mut self) -> Box<Relay> {
        match std::mem::replace(&mut self.slot, Slot::Http) {
            Slot::Relay(r) => r,
            _ => unreachable!("no relay to take"),
        }
    }

    pub(super) fn start_relay(&mut self, relay: Box<Relay>) {
        self.slot = Slot::Relay(relay);
    }

    /// The upstream connection, for the loop to close before this connection goes.
    /// A tunnel ends here (its access line is written).
    pub fn take_upstream(&mut self) -> Option<Lent> {
        match &mut self.slot {
            Slot::Http | Slot::Preface => None,
            Slot::Relay(r) => {
                release_upgrade(r);
                r.up.take().map(|u| u.lent)
            }
            Slot::Tunnel(t) => {
                let up = t.take_upstream();
                self.slot = Slot::Http;
                up
            }
        }
    }

    /// An event said the upstream connection's peer closed its side: its next read must be
    /// allowed to meet the FIN.
    pub fn upstream_closing(&mut self) {
        if let Slot::Relay(r) = &mut self.slot
            && let Some(up) = &mut r.up
        {
            up.closing = true;
        }
    }

    pub fn upstream_ready(&mut self, readable: bool, writable: bool) {
        match &mut self.slot {
            Slot::Http | Slot::Preface => {}
            Slot::Relay(r) => r.set_ready(readable, writable),
            Slot::Tunnel(t) => t.set_ready(readable, writable),
        }
    }

    /// The connect, request body or response deadline passed (whichever `relay_timer` chose).
    pub fn upstream_timed_out(&mut self, env: &mut Env<'_>) {
        self.dress(env);
        let Some(r) = relay_in(&mut self.slot) else {
            return;
        };
        if !r.connecting() && self.session.relay_body_pending() {
            log::debug!("request body too slow while forwarding");
            self.body_failed(env, 408);
        } else if r.connecting() {
            if let Some(up) = r.up.take() {
                env.upstreams().mark_down(up.lent.addr, env.ctx.now);
                env.upstreams().close(up.lent, env.poller);
            }
            r.failure = 504;
            self.connect_next(env);
        } else if r.sent {
            self.abort(env);
        } else {
            r.failure = 504;
            self.fail(env);
        }
    }

    /// One turn of the relay, called from `drive` while a request is forwarded: finish the
    /// connect, move client body bytes into the upstream window, send, then receive and relay as
    /// far as the client's window allows.
    pub(super) fn drive_relay(&mut self, env: &mut Env<'_>) -> Step {
        let mut progress = false;
        if relay_of(&self.slot).is_some_and(|r| r.up.is_none()) {
            self.connect_next(env);
            progress = true;
        }
        match self.connected(env) {
            Some(true) => {}
            Some(false) => return if progress { Step::Progress } else { Step::Idle },
            None => return Step::Progress, // failed over, or answered
        }
        match self.take_body(env) {
            Ok(moved) => progress |= moved,
            Err(step) => return step,
        }
        progress |= self.send_up();
        match self.receive(env) {
            Ok(moved) => progress |= moved,
            Err(step) => return step,
        }
        if relay_of(&self.slot).is_some_and(|r| matches!(r.resp, Resp::Done)) {
            self.finish(env);
            return Step::Progress;
        }
        if progress { Step::Progress } else { Step::Idle }
    }

    /// Whether the upstream connection is established: `Some(false)` while the connect is in
    /// progress, `None` when the relay moved on (another upstream, or an answer of its own).
    fn connected(&mut self, env: &mut Env<'_>) -> Option<bool> {
        let r = relay_in(&mut self.slot)?;
        let up = r.up.as_mut()?;
        if !up.lent.connecting {
            return Some(true);
        }
        if !up.writable && !up.readable {
            return Some(false);
        }
        // SO_ERROR tells how the connect ended; it is read (and cleared) once.
        match socket2::SockRef::from(&up.lent.sock).take_error() {
            Ok(None) if up.lent.sock.peer_addr().is_ok() => {
                up.lent.connecting = false;
                Some(true)
            }
            Ok(None) => {
                // Woken before the handshake finished.
                up.writable = false;
                up.readable = false;
                Some(false)
            }
            Ok(Some(e)) | Err(e) => {
                log::debug!("connect to {}: {e}", up.lent.addr);
                let up = r.up.take().expect("checked above");
                env.upstreams().mark_down(up.lent.addr, env.ctx.now);
                env.upstreams().close(up.lent, env.poller);
                r.failure = 502;
                self.connect_next(env);
                None
            }
        }
    }

    /// Moves request body bytes from the client's buffer into the upstream window.
    fn take_body(&mut self, env: &mut Env<'_>) -> Result<bool, Step> {
        if !self.session.relay_body_pending() || self.rlen == 0 {
            return Ok(false);
        }
        let r = relay_in(&mut self.slot).expect("relay");
        let take = self
            .rlen
            .min(WINDOW.saturating_sub(r.to_up.len() - r.to_up_pos));
        if take == 0 {
            return Ok(false);
        }
        match self.session.relay_body(&self.rbuf[..take], &env.ctx) {
            Ok((0, _)) => Ok(false),
            Ok((n, _)) => {
                r.to_up.extend_from_slice(&self.rbuf[..n]);
                self.rbuf.copy_within(n..self.rlen, 0);
                self.rlen -= n;
                self.sched.wrote = true;
                Ok(true)
            }
            Err(e) => {
                log::debug!("request body while forwarding: {e:?}");
                self.body_failed(env, e.status());
                Err(Step::CloseClient)
            }
        }
    }

    /// Sends what the upstream window holds, until it is empty or the socket is full.
    fn send_up(&mut self) -> bool {
        let r = relay_in(&mut self.slot).expect("relay");
        let up = r.up.as_mut().expect("connected");
        let mut sent = false;
        while up.writable && r.to_up_pos < r.to_up.len() {
            match transport::send(&up.lent.sock, &r.to_up[r.to_up_pos..], false) {
                Io::Done(n) => {
                    r.to_up_pos += n;
                    sent = true;
                }
                Io::WouldBlock => up.writable = false,
                Io::Closed | Io::Error(_) => {
                    // The upstream went away; what it said before (if anything) is read next.
                    log::debug!("send to {} failed", up.lent.addr);
                    up.writable = false;
                    r.to_up_pos = r.to_up.len();
                }
            }
        }
        // Sent: the window is free again, but a head without a body stays for a retry.
        if r.to_up_pos == r.to_up.len() && r.has_body {
            r.to_up.clear();
            r.to_up_pos = 0;
        }
        sent
    }

    /// Reads the answer and relays it, as far as the client's window allows.
    fn receive(&mut self, env: &mut Env<'_>) -> Result<bool, Step> {
        let mut moved = false;
        loop {
            let r = relay_in(&mut self.slot).expect("relay");
            if matches!(r.resp, Resp::Done) {
                return Ok(moved);
            }
            if !r.from_up.is_empty() && self.relay_bytes(env)? {
                moved = true;
                continue;
            }
            let r = relay_in(&mut self.slot).expect("relay");
            let up = r.up.as_mut().expect("connected");
            let backlog = self.out.buf.len() - self.out.pos;
            if !up.readable || backlog >= WINDOW || r.from_up.len() >= WINDOW {
                return Ok(moved);
            }
            // Read straight into the window (one copy fewer than through a buffer on the
            // stack); it stays with the pooled relay, so it is not zeroed again per read.
            match transport::recv(&up.lent.sock, r.from_up.spare(READ_CHUNK)) {
                Io::Closed => return Err(self.upstream_eof(env)),
                Io::Done(n) => {
                    up.short_read = n < READ_CHUNK;
                    r.from_up.filled(n);
                    self.sched.wrote = true;
                    moved = true;
                }
                Io::WouldBlock => up.readable = false,
                Io::Error(e) => {
                    log::debug!("read from {}: {e}", up.lent.addr);
                    return Err(self.upstream_eof(env));
                }
            }
        }
    }

    /// Moves upstream bytes into the client's output: `Ok(true)` when some moved.
    fn relay_bytes(&mut self, env: &mut Env<'_>) -> Result<bool, Step> {
        let r = relay_in(&mut self.slot).expect("relay");
        match &mut r.resp {
            Resp::Head => {
                // An HTTP/1.0 client knows neither chunked bodies nor interim answers.
                let http10 = self.session.awaits_for_http10();
                let dechunk = http10;
                let max = env.ctx.limits.max_head;
                // The rewritten head goes straight into the client's output.
                let buf = &mut self.out.buf;
                let at = buf.len();
                match message::response_head_into(buf, r.from_up.data(), r.method, max, dechunk) {
                    Ok(None) => Ok(false),
                    Ok(Some((head, n))) => {
                        r.from_up.consume(n);
                        if head.status == 101 {
                            if r.upgrade.is_none() {
                                buf.truncate(at);
                                return Err(
                                    self.bad_upstream(env, "101 without an upgrade asked for")
                                );
                            }
                            // The head says `Connection: upgrade`; the tunnel begins behind it.
                            buf.extend_from_slice(b"\r\n");
                            self.switch_to_tunnel(env);
                            return Err(Step::Progress);
                        }
                        if head.status < 200 && http10 {
                            // HTTP/1.0 has no interim answers (RFC 9110 §15.2): a 1.0 client
                            // would take one for the final answer. Dropped; nothing was sent.
                            buf.truncate(at);
                            return Ok(true);
                        }
                        if head.status < 200 {
                            // 100 Continue and friends pass through; the final answer follows.
                            buf.extend_from_slice(b"\r\n");
                        } else {
                            // A body that runs to the upstream's close, or is decoded for an
                            // HTTP/1.0 client, ends the client connection too.
                            let to_close = head.framing == Framing::Close
                                || dechunk && head.framing == Framing::Chunked;
                            if let Some(lines) = &r.headers {
                                buf.extend_from_slice(lines.bytes());
                            }
                            let conn = self.session.relayed_conn_header(to_close);
                            // HSTS over TLS, as on the answers made here, unless the
                            // upstream set its own.
                            if !head.sts {
                                buf.extend_from_slice(env.ctx.head_extra);
                            }
                            buf.extend_from_slice(conn.end_of_head());
                            r.status = head.status;
                            r.reusable = head.reusable;
                            r.resp = match head.framing {
                                Framing::None => Resp::Done,
                                Framing::Length(0) => Resp::Done,
                                Framing::Length(n) => Resp::Length(n),
                                Framing::Chunked => Resp::Chunked {
                                    decoder: Decoder::default(),
                                    dechunk,
                                },
                                Framing::Close => Resp::Close,
                            };
                        }
                        r.sent = true;
                        Ok(true)
                    }
                    Err(e) => Err(self.bad_upstream(env, &format!("{e:?}"))),
                }
            }
            Resp::Length(left) => {
                let n = (*left).min(r.from_up.len() as u64) as usize;
                self.out.buf.extend_from_slice(&r.from_up.data()[..n]);
                r.from_up.consume(n);
                *left -= n as u64;
                r.bytes += n as u64;
                if *left == 0 {
                    r.resp = Resp::Done;
                }
                Ok(n > 0)
            }
            Resp::Chunked { decoder, dechunk } => {
                let out = &mut self.out.buf;
                let before = out.len();
                let fed = if *dechunk {
                    decoder.feed(r.from_up.data(), |d| out.extend_from_slice(d))
                } else {
                    decoder.feed(r.from_up.data(), |_| {})
                };
                match fed {
                    Ok(n) => {
                        if !*dechunk {
                            out.extend_from_slice(&r.from_up.data()[..n]);
                        }
                        r.from_up.consume(n);
                        r.bytes += (out.len() - before) as u64;
                        if decoder.is_done() {
                            r.resp = Resp::Done;
                        }
                        Ok(n > 0)
                    }
                    Err(_) => Err(self.bad_upstream(env, "malformed chunked body")),
                }
            }
            Resp::Close => {
                let n = r.from_up.len();
                self.out.buf.extend_from_slice(r.from_up.data());
                r.from_up.clear();
                r.bytes += n as u64;
                Ok(n > 0)
            }
            Resp::Done => Ok(false),
        }
    }

    /// The upstream closed (or failed) its side.
    fn upstream_eof(&mut self, env: &mut Env<'_>) -> Step {
        let r = relay_in(&mut self.slot).expect("relay");
        match r.resp {
            Resp::Close => {
                r.resp = Resp::Done;
                r.reusable = false;
                self.finish(env);
                Step::Progress
            }
            Resp::Head if !r.sent && r.from_up.is_empty() => {
                let up = r.up.take().expect("connected");
                let (addr, reused) = (up.lent.addr, up.lent.reused);
                env.upstreams().close(up.lent, env.poller);
                // A pooled connection the upstream had closed: one retry on a fresh one, when
                // repeating the request is safe.
                if reused
                    && !r.retried
                    && !r.has_body
                    && matches!(r.method, Method::Get | Method::Head)
                {
                    r.retried = true;
                    // `to_up` still holds the head (there is no body).
                    r.to_up_pos = 0;
                    self.connect_to(addr, false, env);
                    return Step::Progress;
                }
                r.failure = 502;
                self.fail(env);
                Step::Progress
            }
            _ if !r.sent => self.bad_upstream(env, "closed inside the response head"),
            _ => {
                self.abort(env);
                Step::CloseClient
            }
        }
    }

    fn bad_upstream(&mut self, env: &mut Env<'_>, why: &str) -> Step {
        let r = relay_in(&mut self.slot).expect("relay");
        log::warn!("bad answer from upstream {}: {why}", r.name());
        if r.sent {
            self.abort(env);
            Step::CloseClient
        } else {
            r.failure = 502;
            self.fail(env);
            Step::Progress
        }
    }

    /// Connects to the next upstream of the route, or fails the request when none is left.
    fn connect_next(&mut self, env: &mut Env<'_>) {
        let r = relay_in(&mut self.slot).expect("relay");
        let ups = &r.routes[r.route].upstreams;
        let picked = env.upstreams().pick(ups, r.route, &r.tried, env.ctx.now);
        // An upgrade never takes a pooled connection: it will not give it back.
        let pooled_ok = r.upgrade.is_none();
        match picked {
            Some(addr) => self.connect_to(addr, pooled_ok, env),
            None => self.fail(env),
        }
    }

    fn connect_to(&mut self, addr: SocketAddr, pooled_ok: bool, env: &mut Env<'_>) {
        let r = relay_in(&mut self.slot).expect("relay");
        r.tried.push(addr);
        let lent = env.upstreams().lend(addr, env.key, env.poller, pooled_ok);
        match lent {
            // A pooled connection has nothing to read until it is asked; a new one is writable
            // once connected.
            Ok(lent) => {
                let writable = !lent.connecting;
                r.up = Some(Up {
                    lent,
                    readable: false,
                    writable,
                    short_read: false,
                    closing: false,
                });
            }
            // Out of descriptors or buffers here is no fault of the upstream's: answer 502
            // without marking it down or trying the others.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) =>
            {
                log::warn!("cannot connect to {addr}: {e}");
                r.failure = 502;
                self.fail(env);
            }
            Err(e) => {
                log::debug!("connect to {addr}: {e}");
                env.upstreams().mark_down(addr, env.ctx.now);
                r.failure = 502;
                self.connect_next(env);
            }
        }
    }

    /// The request body cannot be forwarded (late, malformed, too large): answer `status` and
    /// close when nothing of an answer went out yet, else just close. The upstream connection,
    /// holding part of a request, is closed either way.
    fn body_failed(&mut self, env: &mut Env<'_>, status: u16) {
        let r = relay_in(&mut self.slot).expect("relay");
        if r.sent {
            self.abort(env);
        } else {
            r.failure = status;
            self.fail(env);
        }
    }

    /// No upstream could answer: answer 502/504 ourselves (or the status `failure` names).
    fn fail(&mut self, env: &mut Env<'_>) {
        let mut r = self.take_relay();
        release_upgrade(&mut r);
        if let Some(up) = r.up.take() {
            env.upstreams().close(up.lent, env.poller);
        }
        self.ensure_out(env);
        let x = self
            .session
            .relay_failed(&mut self.out, &env.ctx, r.failure, Line::Raw(&r.line));
        log(env, self.peer, &x, &r);
        env.pools.put_relay(r);
    }

    /// The client closed its side before any byte of the answer went to it: nobody waits for
    /// the answer, so the upstream connection (and an upgrade's place among the tunnels) is
    /// given back now rather than when the upstream answers or times out, and the request is
    /// logged 499, as nginx does. Once the answer has begun it is sent on (the client may still
    /// read after its FIN).
    pub(super) fn client_gone(&mut self, env: &mut Env<'_>) {
        let Some(r) = relay_in(&mut self.slot) else {
            return;
        };
        if r.sent {
            return;
        }
        log::debug!("client closed before the answer to a forwarded request");
        r.status = 499;
        self.abort(env);
    }

    /// The answer broke off after bytes of it went out: the client connection closes.
    fn abort(&mut self, env: &mut Env<'_>) {
        let mut r = self.take_relay();
        release_upgrade(&mut r);
        if let Some(up) = r.up.take() {
            env.upstreams().close(up.lent, env.poller);
        }
        let x = self
            .session
            .relay_aborted(&env.ctx, r.status, r.bytes, Line::Raw(&r.line));
        log(env, self.peer, &x, &r);
        env.pools.put_relay(r);
    }

    /// The answer is complete: the upstream connection goes back to the pool if it can.
    fn finish(&mut self, env: &mut Env<'_>) {
        let mut r = self.take_relay();
        // An upgrade's connection heard `Connection: upgrade`: it is not pooled.
        let upgrade = r.upgrade.is_some();
        release_upgrade(&mut r);
        if let Some(up) = r.up.take() {
            // Nothing may wait behind the answer. A short last read says so where the loop
            // reports the upstream's FIN (a FIN that came with the answer was reported with
            // it); otherwise one more read must meet EAGAIN.
            let nothing_behind = !up.readable
                || up.short_read && up.lent.fin_watched && !up.closing
                || drained(&up.lent.sock);
            let clean = r.reusable
                && r.to_up_pos == r.to_up.len()
                && r.from_up.is_empty()
                && nothing_behind;
            if clean && !self.session.relay_body_pending() && !upgrade {
                env.upstreams().put_idle(up.lent, env.poller, env.ctx.now);
            } else {
                env.upstreams().close(up.lent, env.poller);
            }
        }
        let x = self
            .session
            .relay_done(&env.ctx, r.status, r.bytes, Line::Raw(&r.line));
        // (`name` finds the upstream among those tried.)
        log(env, self.peer, &x, &r);
        env.pools.put_relay(r);
    }

    /// The upstream switched protocols (101, its head queued for the client): the relay ends
    /// and a tunnel takes the upstream connection, the bytes either side already buffered past
    /// the heads, and the place among the tunnels.
    fn switch_to_tunnel(&mut self, env: &mut Env<'_>) {
        let mut r = self.take_relay();
        let up = r.up.take().expect("connected");
        let place = r.upgrade.take().expect("an upgrade");
        let name = up.lent.addr.to_string();
        let started = self.session.upgrade(env.ctx.now);
        // Client bytes not sent yet (a request body's end), then those read past the request.
        let mut to_up = r.to_up.split_off(r.to_up_pos);
        to_up.extend_from_slice(&self.rbuf[..self.rlen]);
        self.rlen = 0;
        self.park_input(env);
        // Upstream bytes past the 101 go to the client after its head.
        self.out.buf.extend_from_slice(r.from_up.data());
        let early_down = r.from_up.len() as u64;
        let tunnel = Tunnel::new(
            up,
            to_up,
            early_down,
            self.eof,
            r.line.as_slice().into(),
            name,
            self.peer,
            started,
            place,
        );
        self.slot = Slot::Tunnel(Box::new(tunnel));
        self.sched.wrote = true;
        env.pools.put_relay(r);
    }

    /// Which deadline applies while relaying.
    pub(super) fn relay_timer(&self) -> Option<TimerKind> {
        let r = relay_of(&self.slot)?;
        Some(if r.connecting() {
            TimerKind::Connect
        } else if self.session.relay_body_pending() {
            TimerKind::Body
        } else {
            TimerKind::Upstream
        })
    }
}

/// The access line of a relayed exchange, naming the upstream (worked out only when the access
/// log is on: it is a string).
fn log(
    env: &Env<'_>,
    peer: Option<std::net::IpAddr>,
    x: &crate::http::session::Exchange<'_>,
    r: &Relay,
) {
    if crate::logging::access_enabled() {
        route::log(env, peer, x, Some(&r.name()));
    }
}

/// Bytes read from the upstream and not relayed yet: a buffer that is filled by reads and
/// emptied from the front, zeroed only when it grows (a `Vec` would be zeroed or copied through
/// on every read).
#[derive(Default)]
struct Window {
    buf: Vec<u8>,
    len: usize,
}

impl Window {
    fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops the first `n` bytes.
    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Room for `want` more bytes; [`Window::filled`] says how many were put there.
    fn spare(&mut self, want: usize) -> &mut [u8] {
        if self.buf.len() < self.len + want {
            self.buf.resize(self.len + want, 0);
        }
        &mut self.buf[self.len..self.len + want]
    }

    fn filled(&mut self, n: usize) {
        self.len += n;
    }

    /// Frees a buffer grown past `keep` bytes.
    fn shrink(&mut self, keep: usize) {
        if self.buf.len() > keep {
            self.buf = Vec::new();
        }
    }
}

/// True when nothing more is waiting on an upstream connection: a FIN (or stray bytes) that came
/// right behind a response would otherwise sit unseen in the pool, since its edge was spent on the
/// read that took the response.
fn drained(sock: &std::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(transport::recv(sock, &mut byte), Io::WouldBlock)
}

/// An exchange that ends without a tunnel gives its place among the tunnels back first, before
/// the upstream sees its connection close: whoever reacts to that close (another shard, the
/// upstream itself answering a new client) must find the place free.
fn release_upgrade(r: &mut Relay) {
    drop(r.upgrade.take());
}
