//! The protocol side of one connection, without I/O: bytes in, responses out.
//!
//! A [`Session`] is fed whatever bytes have arrived and returns how many it consumed; complete
//! request heads go to a [`Handler`], whose replies are appended to an [`Output`] in request order.
//! Because it keeps its own position (where the head scan stopped, how much body is left), the same
//! byte stream gives the same responses however it is split into reads.

use std::net::IpAddr;
use std::time::Instant;

use super::access;
use super::chunked::Decoder;
use super::request::{self, BodyFraming, HeadError, Method, Request};
use super::response::{ConnHeader, Output, Reply};
use crate::config::Route;
use crate::logging::ACCESS;

#[cfg(feature = "proxy")]
mod forward;
#[cfg(feature = "proxy")]
pub use forward::ForwardStart;

/// Something that answers requests: the static files, a proxy, a test double.
pub trait Handler {
    fn handle<'s>(&'s mut self, req: &Request<'_>, now: Instant) -> Reply<'s>;
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest request head (request line plus headers), bytes.
    pub max_head: usize,
    pub max_headers: usize,
    /// Longest request body we read and discard before answering 413 (or closing).
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8192,
            max_headers: 64,
            max_body: 1 << 20,
        }
    }
}

/// What the session needs to know about the moment it is fed.
pub struct Ctx<'a> {
    pub now: Instant,
    /// The current `Date` header value.
    pub date: &'a [u8],
    /// The current time in Common Log Format's `[...]` form.
    pub log_date: &'a str,
    pub limits: &'a Limits,
    /// Paths forwarded upstream.
    pub routes: &'a [Route],
    /// Extend a client's X-Forwarded-For chain rather than replace it (`--proxy-trust-forwarded`).
    pub trust_forwarded: bool,
    /// Hand requests to another thread instead of calling the handler (`proactor-pool`).
    pub defer: bool,
}

/// Output queued beyond this many bytes stops the parsing of further pipelined requests until the
/// connection has written some of it: a client that pipelines without reading cannot grow memory.
pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;
const MAX_QUEUED_FILES: usize = 32;

#[derive(Debug)]
enum Phase {
    /// Waiting for a request head; no blank line in the first `scanned` buffered bytes.
    Head { scanned: usize },
    /// Reading and discarding a request body, after which the next request may follow.
    Body(BodyLeft),
    /// A request is being forwarded upstream. Its body, if any, is relayed by the connection
    /// through `Session::forward_body`; no further request is read until the answer is done.
    #[cfg(feature = "proxy")]
    Forward(Box<forward::Forwarding>),
    /// The handler runs elsewhere (a worker thread); no further request is read until its
    /// reply comes back through [`Session::finish_deferred`].
    Deferred(Deferred),
    /// The last response says `Connection: close`: input is ignored from here on.
    Closed,
}

#[derive(Debug)]
struct Deferred {
    /// The head, until the connection takes it to send to a worker.
    head: Option<Box<[u8]>>,
    plan: Plan,
}

/// What answering a request needs to know about it besides the reply.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// The client allows it (the server may still close).
    keep_alive: bool,
    version: super::request::Version,
    head_only: bool,
    body: BodyFraming,
}

/// A request body broke its framing (or its size limit): the connection cannot go on. While a
/// body is forwarded and nothing of the answer has gone out, each gets its own status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Malformed chunked coding: 400.
    Malformed,
    /// Over `--max-body`: 413.
    TooLarge,
}

impl BodyError {
    pub fn status(self) -> u16 {
        match self {
            BodyError::Malformed => 400,
            BodyError::TooLarge => 413,
        }
    }
}

#[derive(Debug)]
enum BodyLeft {
    Length(u64),
    Chunked { decoder: Decoder, seen: u64 },
}

#[derive(Debug)]
pub struct Session {
    phase: Phase,
    /// False once the server is shutting down: the next response closes.
    keep_alive_allowed: bool,
    peer: Option<IpAddr>,
    /// When the first byte of the current request arrived, for the access log.
    started: Option<Instant>,
}

impl Session {
    pub fn new(peer: Option<IpAddr>) -> Session {
        Session {
            phase: Phase::Head { scanned: 0 },
            keep_alive_allowed: true,
            peer,
            started: None,
        }
    }

    /// True when no more requests will be read: the connection closes once output is flushed.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// True while a request is partly received (a body still to come, or a head begun with
    /// `buffered` bytes): the request-head/body timeout applies rather than the idle one.
    pub fn in_request(&self, buffered: usize) -> bool {
        match self.phase {
            Phase::Head { .. } => buffered > 0,
            Phase::Body(_) | Phase::Deferred(_) => true,
            #[cfg(feature = "proxy")]
            Phase::Forward(_) => true,
            Phase::Closed => false,
        }
    }

    /// Makes the next response the last (graceful shutdown). An idle session closes at once.
    pub fn close_after_current(&mut self, buffered: usize) {
        self.keep_alive_allowed = false;
        if !self.in_request(buffered) {
            self.phase = Phase::Closed;
        }
    }

    /// Answers a request that timed out while arriving: 408, then close.
    pub fn timed_out(&mut self, out: &mut Output, ctx: &Ctx<'_>) {
        match self.phase {
            Phase::Head { .. } => self.respond_error(408, out, ctx, b"-"),
            // The request was answered already; only the rest of its body is late.
            Phase::Body(_) => self.phase = Phase::Closed,
            // The answer is on its way from elsewhere, and bounded there.
            Phase::Closed | Phase::Deferred(_) => {}
            #[cfg(feature = "proxy")]
            Phase::Forward(_) => {}
        }
    }

    /// True while a worker thread is answering the current request.
    pub fn is_deferred(&self) -> bool {
        matches!(self.phase, Phase::Deferred(_))
    }

    /// The head of a request just deferred, to send to a worker (once).
    pub fn take_deferred(&mut self) -> Option<Box<[u8]>> {
        match &mut self.phase {
            Phase::Deferred(d) => d.head.take(),
            _ => None,
        }
    }

    /// Gives back a head [`Session::take_deferred`] took, when no worker could take it yet.
    pub fn return_deferred(&mut self, head: Box<[u8]>) {
        if let Phase::Deferred(d) = &mut self.phase {
            d.head = Some(head);
        }
    }

    /// A deferred request is still waiting to be handed to a worker.
    pub fn has_unsent_deferred(&self) -> bool {
        matches!(&self.phase, Phase::Deferred(d) if d.head.is_some())
    }

    /// Answers the deferred request (`head`, for the access log) with the worker's reply.
    pub fn finish_deferred(
        &mut self,
        head: &[u8],
        reply: Reply<'_>,
        out: &mut Output,
        ctx: &Ctx<'_>,
    ) {
        let Phase::Deferred(d) = &self.phase else {
            return;
        };
        let plan = d.plan;
        self.answer(reply, out, ctx, access::Line::Raw(request_line(head)), plan);
    }

    /// Consumes what it can of `input` and returns how many bytes that was. Unconsumed bytes are a
    /// partial head (or requests held back while output is over the high-water mark) and must be
    /// offered again, with whatever arrives after them.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut Output,
        handler: &mut dyn Handler,
        ctx: &Ctx<'_>,
    ) -> usize {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match &mut self.phase {
                Phase::Closed => return input.len(),
                #[cfg(feature = "proxy")]
                Phase::Forward(_) => return used,
                Phase::Deferred(_) => return used,
                Phase::Body(left) => {
                    if rest.is_empty() {
                        return used;
                    }
                    match drain_body(left, rest, ctx.limits.max_body) {
                        Ok((n, done)) => {
                            used += n;
                            if done {
                                self.phase = Phase::Head { scanned: 0 };
                            }
                        }
                        // The answer has gone already; the framing can no longer be trusted.
                        Err(_) => {
                            self.phase = Phase::Closed;
                            return input.len();
                        }
                    }
                }
                Phase::Head { scanned } => {
                    if out.buf.len() - out.pos >= OUTPUT_HIGH_WATER
                        || out.files.len() >= MAX_QUEUED_FILES
                    {
                        return used;
                    }
                    let skip = request::leading_crlfs(rest);
                    if skip > 0 {
                        used += skip;
                        *scanned = 0;
                        continue;
                    }
                    if rest.is_empty() {
                        return used;
                    }
                    self.started.get_or_insert(ctx.now);
                    let end = match request::find_head_end(rest, *scanned) {
                        Ok(end) if end <= ctx.limits.max_head => end,
                        Ok(_) => return self.head_too_large(rest, out, ctx, input.len()),
                        Err(_) if rest.len() > ctx.limits.max_head => {
                            return self.head_too_large(rest, out, ctx, input.len());
                        }
                        // Bytes that can never begin a request (a TLS handshake on the plain
                        // port, binary noise) are answered now, not at the header timeout.
                        Err(_) if !request::could_begin(rest) => {
                            self.respond_error(400, out, ctx, b"-");
                            return input.len();
                        }
                        Err(next) => {
                            *scanned = next;
                            return used;
                        }
                    };
                    used += end;
                    self.handle_head(&rest[..end], out, handler, ctx);
                }
            }
        }
    }

    fn head_too_large(
        &mut self,
        rest: &[u8],
        out: &mut Output,
        ctx: &Ctx<'_>,
        all: usize,
    ) -> usize {
        let line_done = rest[..ctx.limits.max_head.min(rest.len())].contains(&b'\n');
        let err = if line_done {
            HeadError::TooLarge
        } else {
            HeadError::UriTooLong
        };
        self.respond_error(err.status(), out, ctx, b"-");
        all
    }

    fn handle_head(
        &mut self,
        head: &[u8],
        out: &mut Output,
        handler: &mut dyn Handler,
        ctx: &Ctx<'_>,
    ) {
        let req = match request::parse(head, ctx.limits.max_headers) {
            Ok(req) => req,
            Err(e) => {
                log::debug!("bad request: {e:?}");
                let line = head
                    .split(|&b| b == b'\r' || b == b'\n')
                    .next()
                    .unwrap_or_default();
                self.respond_error(e.status(), out, ctx, line);
                return;
            }
        };
        if let BodyFraming::Length(n) = req.body
            && n > ctx.limits.max_body
        {
            self.respond_error(413, out, ctx, request_line(head));
            return;
        }
        #[cfg(feature = "proxy")]
        match forward::route_for(ctx.routes, req.path()) {
            forward::RouteMatch::Local => {}
            forward::RouteMatch::Forward(route) => {
                if let Err(why) = self.forward(ctx, route, head, &req) {
                    log::debug!("not forwarded: {why}");
                    self.respond_error(400, out, ctx, request_line(head));
                }
                return;
            }
            forward::RouteMatch::Refuse => {
                log::debug!("proxied path not in normal form: {:?}", req.target);
                self.respond_error(400, out, ctx, request_line(head));
                return;
            }
        }
        // A client waiting for 100 (Continue) may never send the body we would have to drain:
        // answer and close rather than guess (RFC 9110 §10.1.1).
        let held_back_body = req.expect_continue && req.body != BodyFraming::None;
        let plan = Plan {
            keep_alive: req.keep_alive && !held_back_body,
            version: req.version,
            head_only: req.method == Method::Head,
            body: req.body,
        };
        if ctx.defer {
            self.phase = Phase::Deferred(Deferred {
                head: Some(head.into()),
                plan,
            });
            return;
        }
        let reply = handler.handle(&req, ctx.now);
        let line = access::Line::Parsed {
            method: req.method_str,
            target: req.target,
            version: req.version.as_str(),
        };
        self.answer(reply, out, ctx, line, plan);
    }

    /// Queues a handler's reply, logs it, and moves on to the request's body or the next request.
    fn answer(
        &mut self,
        reply: Reply<'_>,
        out: &mut Output,
        ctx: &Ctx<'_>,
        line: access::Line<'_>,
        plan: Plan,
    ) {
        let Plan {
            version,
            head_only,
            body,
            ..
        } = plan;
        let keep_alive = plan.keep_alive && self.keep_alive_allowed;
        let conn = ConnHeader::new(keep_alive, version);
        let (status, len) = (reply.status, reply.len);
        out.push_reply(reply, ctx.date, head_only, conn);
        self.access_log(ctx, line, status, if head_only { 0 } else { len });

        self.phase = match (keep_alive, body) {
            (false, _) => Phase::Closed,
            (true, BodyFraming::None) => Phase::Head { scanned: 0 },
            (true, BodyFraming::Length(n)) => Phase::Body(BodyLeft::Length(n)),
            (true, BodyFraming::Chunked) => Phase::Body(BodyLeft::Chunked {
                decoder: Decoder::default(),
                seen: 0,
            }),
        };
    }

    fn respond_error(&mut self, status: u16, out: &mut Output, ctx: &Ctx<'_>, line: &[u8]) {
        out.push_reply(
            Reply::text(status, b"Content-Type: text/plain\r\n"),
            ctx.date,
            false,
            ConnHeader::Close,
        );
        let len = super::response::reason(status).len() as u64;
        self.access_log(ctx, access::Line::Raw(line), status, len);
        self.phase = Phase::Closed;
    }

    fn access_log(&mut self, ctx: &Ctx<'_>, line: access::Line<'_>, status: u16, bytes: u64) {
        self.access_log_via(ctx, line, status, bytes, None);
    }

    /// One access line; `upstream` marks a proxied request with the upstream that answered.
    fn access_log_via(
        &mut self,
        ctx: &Ctx<'_>,
        line: access::Line<'_>,
        status: u16,
        bytes: u64,
        upstream: Option<&str>,
    ) {
        let started = self.started.take().unwrap_or(ctx.now);
        if !log::log_enabled!(target: ACCESS, log::Level::Info) {
            return;
        }
        let took = ctx.now.saturating_duration_since(started);
        LINE.with_borrow_mut(|buf| {
            buf.clear();
            access::format(buf, self.peer, ctx.log_date, line, status, bytes, took);
            if let Some(up) = upstream {
                buf.extend_from_slice(b" upstream=");
                buf.extend_from_slice(up.as_bytes());
            }
            // SAFETY: `access::format` writes ASCII only (other bytes are escaped as \xHH).
            debug_assert!(buf.is_ascii());
            let text = unsafe { std::str::from_utf8_unchecked(buf) };
            log::info!(target: ACCESS, "{text}");
        });
    }
}

thread_local! {
    /// The access line being built, reused so that logging allocates nothing per request.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The first line of a head, for the log.
fn request_line(head: &[u8]) -> &[u8] {
    head.split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default()
}

/// Drains body bytes; `Ok((consumed, done))`, or `Err` when the body is malformed or over the limit.
fn drain_body(left: &mut BodyLeft, input: &[u8], max: u64) -> Result<(usize, bool), BodyError> {
    match left {
        BodyLeft::Length(n) => {
            let take = (*n).min(input.len() as u64);
            *n -= take;
            Ok((take as usize, *n == 0))
        }
        BodyLeft::Chunked { decoder, seen } => {
            let mut data = 0u64;
            let used = decoder
                .feed(input, |d| data += d.len() as u64)
                .map_err(|_| BodyError::Malformed)?;
            *seen += data;
            if seen.saturating_add(decoder.announced()) > max {
                return Err(BodyError::TooLarge);
            }
            Ok((used, decoder.is_done()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::response::Body;
    use super::*;

    struct Echo;
    impl Handler for Echo {
        fn handle<'s>(&'s mut self, req: &Request<'_>, _now: Instant) -> Reply<'s> {
            let body: &'static [u8] = if req.path() == "/a" { b"A" } else { b"other" };
            match req.method {
                Method::Other => Reply::text(405, b"Allow: GET, HEAD\r\n"),
                _ => Reply {
                    status: 200,
                    headers: b"",
                    len: body.len() as u64,
                    body: Body::Bytes(body),
                },
            }
        }
    }

    /// A fixed moment and date, no routes.
    fn ctx(limits: &Limits) -> Ctx<'_> {
        Ctx {
            now: Instant::now(),
            date: b"D",
            log_date: "-",
            limits,
            routes: &[],
            trust_forwarded: false,
            defer: false,
        }
    }

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut s = Session::new(None);
        let mut out = Output::default();
        let limits = Limits::default();
        let ctx = ctx(&limits);
        let mut buf = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            let n = s.feed(&buf, &mut out, &mut Echo, &ctx);
            buf.drain(..n);
        }
        (out.buf, s.is_closed())
    }

    fn statuses(out: &[u8]) -> Vec<String> {
        let s = String::from_utf8_lossy(out);
        s.match_indices("HTTP/1.1 ")
            .map(|(i, _)| s[i + 9..i + 12].to_string())
            .collect()
    }

    #[test]
    fn pipelined_in_order_with_bodies_drained() {
        let input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nGETGET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHEAD /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let (whole, closed) = run(&[input]);
        assert_eq!(statuses(&whole), ["200", "405", "200", "200"]);
        assert!(!closed);
        for cut in 1..input.len() {
            assert_eq!(run(&[&input[..cut], &input[cut..]]).0, whole, "cut {cut}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes).0, whole);
    }

    #[test]
    fn errors_close_and_ignore_the_rest() {
        let (out, closed) = run(&[b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert_eq!(statuses(&out), ["400"]);
        assert!(closed);
        assert!(String::from_utf8_lossy(&out).contains("Connection: close"));
    }

    #[test]
    fn limits() {
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
        assert_eq!(statuses(&run(&[long.as_bytes()]).0), ["414"]);
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n", "a".repeat(9000));
        assert_eq!(statuses(&run(&[big.as_bytes()]).0), ["431"]);
        let (out, closed) =
            run(&[b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n"]);
        assert_eq!(statuses(&out), ["413"]);
        assert!(closed);
    }

    #[test]
    fn http10_keep_alive_and_close() {
        let (out, closed) = run(&[b"GET /a HTTP/1.0\r\n\r\nGET /a HTTP/1.0\r\n\r\n"]);
        assert_eq!(statuses(&out), ["200"]);
        assert!(closed);
        let (out, closed) = run(&[
            b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        ]);
        assert_eq!(statuses(&out), ["200", "200"]);
        assert!(String::from_utf8_lossy(&out).contains("Connection: keep-alive"));
        assert!(!closed);
    }

    #[test]
    fn expect_continue_with_a_body_closes_instead_of_draining() {
        let (out, closed) = run(&[
            b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        ]);
        assert_eq!(statuses(&out), ["405"]);
        assert!(closed);
        assert!(String::from_utf8_lossy(&out).contains("Connection: close"));
    }

    struct Big(Vec<u8>);
    impl Handler for Big {
        fn handle<'s>(&'s mut self, _: &Request<'_>, _: Instant) -> Reply<'s> {
            Reply {
                status: 200,
                headers: b"",
                len: self.0.len() as u64,
                body: Body::Bytes(&self.0),
            }
        }
    }

    /// Feeds `pieces`, writing the output out (as a connection would) only where asked, and
    /// always at the end until nothing more is consumed. Returns what went on the wire.
    fn run_flushing(pieces: &[(&[u8], bool)]) -> Vec<u8> {
        let (mut s, mut out, mut wire, mut buf) = (
            Session::new(None),
            Output::default(),
            Vec::new(),
            Vec::new(),
        );
        let mut h = Big(vec![b'x'; 40 * 1024]);
        let limits = Limits::default();
        let ctx = ctx(&limits);
        let mut step = |buf: &mut Vec<u8>, out: &mut Output, wire: &mut Vec<u8>, flush: bool| loop {
            if flush {
                wire.extend_from_slice(&out.buf[out.pos..]);
                out.clear();
            }
            let n = s.feed(buf, out, &mut h, &ctx);
            buf.drain(..n);
            if !flush {
                break;
            }
            if n == 0 {
                wire.extend_from_slice(&out.buf[out.pos..]);
                out.clear();
                break;
            }
        };
        for &(p, flush) in pieces {
            buf.extend_from_slice(p);
            step(&mut buf, &mut out, &mut wire, flush);
        }
        step(&mut buf, &mut out, &mut wire, true);
        wire
    }

    #[test]
    fn requests_held_back_by_the_high_water_mark_get_the_same_answers() {
        let input = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(5);
        let whole = run_flushing(&[(&input, true)]);
        assert_eq!(statuses(&whole).len(), 5);
        for cut in 0..input.len() {
            assert_eq!(
                run_flushing(&[(&input[..cut], false), (&input[cut..], false)]),
                whole,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn a_timeout_answers_408_only_inside_a_head() {
        let limits = Limits::default();
        let ctx = ctx(&limits);
        for (input, want_408) in [
            (&b"GET / HTTP/1.1\r\nHo"[..], true),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab",
                false,
            ),
        ] {
            let (mut s, mut out) = (Session::new(None), Output::default());
            let n = s.feed(input, &mut out, &mut Echo, &ctx);
            assert!(s.in_request(input.len() - n));
            let before = out.buf.len();
            s.timed_out(&mut out, &ctx);
            assert!(s.is_closed());
            assert_eq!(out.buf[before..].starts_with(b"HTTP/1.1 408 "), want_408);
        }
    }

    #[test]
    fn a_malformed_chunked_body_after_the_answer_closes() {
        let (out, closed) = run(&[b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert_eq!(statuses(&out), ["405"]);
        assert!(closed);
    }

    /// The proactor's path: a head is handed out, later requests wait behind it unread, and the
    /// reply, when it comes, is framed and followed by the next request exactly as inline.
    #[test]
    fn deferred_requests_are_answered_in_order_with_the_same_bytes() {
        let input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.0\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let (inline, _) = run(&[input]);
        let limits = Limits::default();
        let mut ctx = ctx(&limits);
        ctx.defer = true;
        let (mut s, mut out, mut buf) = (Session::new(None), Output::default(), input.to_vec());
        let mut answered = 0;
        for _ in 0..10 {
            let n = s.feed(&buf, &mut out, &mut Echo, &ctx);
            buf.drain(..n);
            let Some(head) = s.take_deferred() else { break };
            assert!(s.is_deferred() && s.in_request(buf.len()));
            assert!(s.take_deferred().is_none(), "a head is handed out once");
            // Nothing more is consumed while the answer is out.
            assert_eq!(s.feed(&buf, &mut out, &mut Echo, &ctx), 0);
            let req = request::parse(&head, 64).unwrap();
            s.finish_deferred(&head, Echo.handle(&req, ctx.now), &mut out, &ctx);
            answered += 1;
        }
        assert_eq!(
            answered, 3,
            "the HTTP/1.0 request closes: the fourth is never read"
        );
        assert!(s.is_closed());
        assert_eq!(
            String::from_utf8_lossy(&out.buf),
            String::from_utf8_lossy(&inline)
        );
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let (out, _) = run(&[b"\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert_eq!(statuses(&out), ["200"]);
    }
}
