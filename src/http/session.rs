//! The protocol side of one connection, without I/O: bytes in, events out.
//!
//! A [`Session`] is fed whatever bytes have arrived. It consumes what it can and stops at the
//! first thing its caller must act on ([`Event`]): a request head to route, or an exchange it
//! answered itself (a malformed request's 4xx), which the caller logs. The caller decides what
//! answers a request and tells the session:
//! - [`Session::respond`]: a reply now (static files, an error page);
//! - [`Session::await_answer`]: the answer comes from elsewhere (an upstream, a worker thread),
//!   and later [`Session::respond`] with it, or the `relay_*` calls for an answer relayed as it
//!   arrives from an upstream, whose request body the caller takes with [`Session::relay_body`];
//! - [`Session::upgrade`]: the connection stops speaking HTTP (a tunnel after 101).
//!
//! The session keeps its own position (where the head scan stopped, how much body is left), so
//! the same byte stream gives the same answers however it is split into reads. It imports
//! nothing of the server: no configuration, logging, sockets or threads.

use std::time::{Duration, Instant};

use super::access;
use super::chunked::Decoder;
use super::request::{self, BodyFraming, HeadError, Method, Request, Version};
use super::response::{ConnHeader, Output, Reply};

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
    pub limits: &'a Limits,
    /// Field lines every answer carries beside Server and Date, each ending in CRLF
    /// (Strict-Transport-Security over TLS); usually empty.
    pub head_extra: &'a [u8],
}

/// What feeding the session came to.
#[derive(Debug)]
pub enum Event<'a> {
    /// Nothing more to do with the input now: more bytes are needed, output is over the
    /// high-water mark, or an answer is awaited.
    Wait,
    /// A complete request head (`head`, its bytes): the caller answers it before feeding again.
    Request { head: &'a [u8], req: Request<'a> },
    /// The session answered a request itself (an error), for the access log.
    Answered(Exchange<'a>),
}

/// One request answered: what the access log says of it.
#[derive(Debug)]
pub struct Exchange<'a> {
    pub line: access::Line<'a>,
    pub status: u16,
    /// Body bytes sent (0 for HEAD).
    pub bytes: u64,
    /// When the request's first byte arrived, and when its answer was queued.
    pub started: Instant,
    pub answered: Instant,
}

impl Exchange<'_> {
    /// From the request's first byte to its answer being queued (worked out only when a line
    /// is written: most servers log nothing).
    pub fn took(&self) -> Duration {
        self.answered.saturating_duration_since(self.started)
    }
}

/// Output queued beyond this many bytes stops the parsing of further pipelined requests until the
/// connection has written some of it: a client that pipelines without reading cannot grow memory.
pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;
const MAX_QUEUED_FILES: usize = 32;

#[derive(Debug)]
enum Phase {
    /// Waiting for a request head; no blank line in the first `scanned` buffered bytes.
    Head { scanned: usize },
    /// A head went to the caller, which answers it before feeding again.
    Routing(Plan),
    /// Reading and discarding a request body, after which the next request may follow.
    Body(BodyLeft),
    /// The answer comes from elsewhere; no further request is read until it is done. `relayed`:
    /// the request body still to go to the caller ([`Session::relay_body`]); otherwise the body
    /// is read and dropped after the answer, as for a local one.
    Awaiting {
        plan: Plan,
        relayed: Option<BodyLeft>,
    },
    /// The last response says `Connection: close`, or the connection speaks another protocol
    /// now: input is no business of the session's from here on.
    Closed,
}

/// What answering a request needs to know about it besides the reply.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// The client allows it (the server may still close).
    keep_alive: bool,
    /// `Expect: 100-continue` with a body: a local answer closes rather than wait for a body
    /// that may never come (RFC 9110 §10.1.1); a relayed one lets the upstream decide.
    held_back_body: bool,
    version: Version,
    method: Method,
    body: BodyFraming,
}

impl Plan {
    fn of(req: &Request<'_>) -> Plan {
        Plan {
            keep_alive: req.keep_alive,
            held_back_body: req.expect_continue && req.body != BodyFraming::None,
            version: req.version,
            method: req.method,
            body: req.body,
        }
    }
}

/// A request body broke its framing (or its size limit): the connection cannot go on. While a
/// body is relayed and nothing of the answer has gone out, each gets its own status.
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

impl BodyLeft {
    fn of(framing: BodyFraming) -> Option<BodyLeft> {
        match framing {
            BodyFraming::None => None,
            BodyFraming::Length(n) => Some(BodyLeft::Length(n)),
            BodyFraming::Chunked => Some(BodyLeft::Chunked {
                decoder: Decoder::default(),
                seen: 0,
            }),
        }
    }
}

#[derive(Debug)]
pub struct Session {
    phase: Phase,
    /// False once the server is shutting down: the next response closes.
    keep_alive_allowed: bool,
    /// When the first byte of the current request arrived, for the access log.
    started: Option<Instant>,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    pub fn new() -> Session {
        Session {
            phase: Phase::Head { scanned: 0 },
            keep_alive_allowed: true,
            started: None,
        }
    }

    /// True when no more requests will be read: the connection closes once output is flushed
    /// (or, after [`Session::upgrade`], belongs to another protocol).
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// True while a request is partly received (a body still to come, or a head begun with
    /// `buffered` bytes) or being answered: the request-head/body timeout applies rather than
    /// the idle one.
    pub fn in_request(&self, buffered: usize) -> bool {
        match self.phase {
            Phase::Head { .. } => buffered > 0,
            Phase::Routing(_) | Phase::Body(_) | Phase::Awaiting { .. } => true,
            Phase::Closed => false,
        }
    }

    /// True while an answer is awaited from elsewhere.
    pub fn is_awaiting(&self) -> bool {
        matches!(self.phase, Phase::Awaiting { .. })
    }

    /// No response from now on keeps the connection open (shutdown has begun).
    pub fn stop_keep_alive(&mut self) {
        self.keep_alive_allowed = false;
    }

    /// True once [`Session::stop_keep_alive`] (or `close_after_current`) was called.
    pub fn is_stopping(&self) -> bool {
        !self.keep_alive_allowed
    }

    /// Makes the next response the last (graceful shutdown). An idle session closes at once.
    pub fn close_after_current(&mut self, buffered: usize) {
        self.keep_alive_allowed = false;
        if !self.in_request(buffered) {
            self.phase = Phase::Closed;
        }
    }

    /// A request timed out while arriving: inside a head, 408 and close (the exchange, for the
    /// log); inside a body already answered, just close.
    pub fn timed_out(&mut self, out: &mut Output, ctx: &Ctx<'_>) -> Option<Exchange<'static>> {
        match self.phase {
            Phase::Head { .. } => Some(self.refuse(408, out, ctx, access::Line::Raw(b"-"))),
            Phase::Body(_) => {
                self.phase = Phase::Closed;
                None
            }
            // The answer is on its way from elsewhere, and bounded there.
            Phase::Routing(_) | Phase::Awaiting { .. } | Phase::Closed => None,
        }
    }

    /// Consumes what it can of `input` and returns how many bytes that was, with what it came to.
    /// Unconsumed bytes (a partial head, requests held back while output is over the high-water
    /// mark or an answer is awaited) must be offered again, with whatever arrives after them.
    pub fn feed<'a>(
        &mut self,
        input: &'a [u8],
        out: &mut Output,
        ctx: &Ctx<'_>,
    ) -> (usize, Event<'a>) {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match &mut self.phase {
                Phase::Closed => return (input.len(), Event::Wait),
                Phase::Routing(_) | Phase::Awaiting { .. } => return (used, Event::Wait),
                Phase::Body(left) => {
                    if rest.is_empty() {
                        return (used, Event::Wait);
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
                            return (input.len(), Event::Wait);
                        }
                    }
                }
                Phase::Head { scanned } => {
                    if out.buf.len() - out.pos >= OUTPUT_HIGH_WATER
                        || out.files.len() >= MAX_QUEUED_FILES
                    {
                        return (used, Event::Wait);
                    }
                    let skip = request::leading_crlfs(rest);
                    if skip > 0 {
                        used += skip;
                        *scanned = 0;
                        continue;
                    }
                    if rest.is_empty() {
                        return (used, Event::Wait);
                    }
                    self.started.get_or_insert(ctx.now);
                    // Bytes that can never begin a request (a TLS handshake on the plain port,
                    // binary noise) are answered as soon as they are seen, not at the header
                    // timeout; and the same way when the head is complete or too large, so that
                    // the answer does not depend on how the bytes were split into reads.
                    let end = match request::find_head_end(rest, *scanned) {
                        Ok(end) if end <= ctx.limits.max_head => end,
                        // Judged on at most `max_head` bytes, as a head is.
                        Err(_) | Ok(_)
                            if !request::could_begin(
                                &rest[..rest.len().min(ctx.limits.max_head)],
                            ) =>
                        {
                            return (input.len(), self.noise(out, ctx));
                        }
                        Ok(_) => return (input.len(), self.head_too_large(rest, out, ctx)),
                        Err(_) if rest.len() > ctx.limits.max_head => {
                            return (input.len(), self.head_too_large(rest, out, ctx));
                        }
                        Err(next) => {
                            *scanned = next;
                            return (used, Event::Wait);
                        }
                    };
                    let head = &rest[..end];
                    used += end;
                    return (used, self.head(head, out, ctx));
                }
            }
        }
    }

    /// Input that is no HTTP request: 400, logged without a request line.
    fn noise(&mut self, out: &mut Output, ctx: &Ctx<'_>) -> Event<'static> {
        Event::Answered(self.refuse(400, out, ctx, access::Line::Raw(b"-")))
    }

    fn head_too_large<'a>(&mut self, rest: &'a [u8], out: &mut Output, ctx: &Ctx<'_>) -> Event<'a> {
        let line_done = rest[..ctx.limits.max_head.min(rest.len())].contains(&b'\n');
        let err = if line_done {
            HeadError::TooLarge
        } else {
            HeadError::UriTooLong
        };
        Event::Answered(self.refuse(err.status(), out, ctx, access::Line::Raw(b"-")))
    }

    /// A complete head: parsed and handed to the caller, or answered here when it is malformed
    /// or declares a body over the limit.
    fn head<'a>(&mut self, head: &'a [u8], out: &mut Output, ctx: &Ctx<'_>) -> Event<'a> {
        let req = match request::parse(head, ctx.limits.max_headers) {
            Ok(req) => req,
            Err(_) if !request::could_begin(head) => return self.noise(out, ctx),
            Err(e) => {
                log::debug!("bad request: {e:?}");
                let line = access::Line::Raw(request_line(head));
                return Event::Answered(self.refuse(e.status(), out, ctx, line));
            }
        };
        if let BodyFraming::Length(n) = req.body
            && n > ctx.limits.max_body
        {
            let line = access::Line::Raw(request_line(head));
            return Event::Answered(self.refuse(413, out, ctx, line));
        }
        self.phase = Phase::Routing(Plan::of(&req));
        Event::Request { head, req }
    }

    /// Answers the request being routed, or the one whose answer was awaited, with `reply`;
    /// then goes on to its body (read and dropped) or the next request.
    pub fn respond<'l>(
        &mut self,
        reply: Reply<'_>,
        out: &mut Output,
        ctx: &Ctx<'_>,
        line: access::Line<'l>,
    ) -> Exchange<'l> {
        let plan = match self.phase {
            Phase::Routing(plan)
            | Phase::Awaiting {
                plan,
                relayed: None,
            } => plan,
            // A relayed body's framing is the relay's; answering ends the connection.
            Phase::Awaiting { plan, .. } => Plan {
                keep_alive: false,
                ..plan
            },
            _ => {
                debug_assert!(false, "respond without a request");
                return self.exchange(ctx, line, 500, 0);
            }
        };
        let keep_alive = plan.keep_alive && !plan.held_back_body && self.keep_alive_allowed;
        let head_only = plan.method == Method::Head;
        let (status, len) = (reply.status, reply.len);
        out.push_reply(
            reply,
            ctx.date,
            ctx.head_extra,
            head_only,
            ConnHeader::new(keep_alive, plan.version),
        );
        self.phase = match (keep_alive, BodyLeft::of(plan.body)) {
            (false, _) => Phase::Closed,
            (true, None) => Phase::Head { scanned: 0 },
            (true, Some(left)) => Phase::Body(left),
        };
        self.exchange(ctx, line, status, if head_only { 0 } else { len })
    }

    /// Answers `status` with a short text body and closes: a request that cannot be served
    /// (malformed, refused by the caller, timed out).
    pub fn refuse<'l>(
        &mut self,
        status: u16,
        out: &mut Output,
        ctx: &Ctx<'_>,
        line: access::Line<'l>,
    ) -> Exchange<'l> {
        let head_only = matches!(
            self.phase,
            Phase::Routing(p) | Phase::Awaiting { plan: p, .. } if p.method == Method::Head
        );
        let reply = Reply::text(status, b"Content-Type: text/plain\r\n");
        let len = reply.len;
        out.push_reply(
            reply,
            ctx.date,
            ctx.head_extra,
            head_only,
            ConnHeader::Close,
        );
        self.phase = Phase::Closed;
        self.exchange(ctx, line, status, if head_only { 0 } else { len })
    }

    /// The request being routed is answered elsewhere. With `relay_body`, its body (if any) is
    /// taken by the caller as it arrives ([`Session::relay_body`]); otherwise it is read and
    /// dropped after the answer.
    pub fn await_answer(&mut self, relay_body: bool) {
        let Phase::Routing(plan) = self.phase else {
            debug_assert!(false, "await_answer without a request");
            return;
        };
        let relayed = if relay_body {
            BodyLeft::of(plan.body)
        } else {
            None
        };
        let plan = Plan {
            // The body goes to the caller: no reason to close for it.
            held_back_body: plan.held_back_body && !relay_body,
            body: if relay_body {
                BodyFraming::None
            } else {
                plan.body
            },
            ..plan
        };
        self.phase = Phase::Awaiting { plan, relayed };
    }

    /// The connection stops speaking HTTP after the answer being relayed (101 Switching
    /// Protocols): the session reads nothing more. Returns when the request's first byte came
    /// (`now` if unknown), for the access line written when the new protocol ends.
    pub fn upgrade(&mut self, now: Instant) -> Instant {
        self.phase = Phase::Closed;
        self.started.take().unwrap_or(now)
    }

    /// Takes request body bytes from `input` for the caller to relay: `Ok((n, done))` where the
    /// first `n` bytes are body (relayed as they came), or `Err` when the body is malformed or
    /// over the limit (the connection must close).
    pub fn relay_body(&mut self, input: &[u8], ctx: &Ctx<'_>) -> Result<(usize, bool), BodyError> {
        let Phase::Awaiting {
            relayed: Some(left),
            ..
        } = &mut self.phase
        else {
            return Ok((0, true));
        };
        let (n, done) = drain_body(left, input, ctx.limits.max_body)?;
        if done && let Phase::Awaiting { relayed, .. } = &mut self.phase {
            *relayed = None;
        }
        Ok((n, done))
    }

    /// True while request body bytes are still to be relayed.
    pub fn relay_body_pending(&self) -> bool {
        matches!(
            self.phase,
            Phase::Awaiting {
                relayed: Some(_),
                ..
            }
        )
    }

    /// True when the awaited answer goes to an HTTP/1.0 client (no chunked answers, no 1xx).
    pub fn awaits_for_http10(&self) -> bool {
        matches!(self.phase, Phase::Awaiting { plan, .. } if plan.version == Version::Http10)
    }

    /// The `Connection` field for a relayed answer's head; `must_close` when the answer is
    /// delimited by the upstream's close. Makes the session close after the answer if needed.
    pub fn relayed_conn_header(&mut self, must_close: bool) -> ConnHeader {
        let allowed = self.keep_alive_allowed;
        let Phase::Awaiting { plan, .. } = &mut self.phase else {
            return ConnHeader::Close;
        };
        if must_close || !allowed {
            plan.keep_alive = false;
        }
        ConnHeader::new(plan.keep_alive, plan.version)
    }

    /// The relayed answer is complete: go on with the next request (or close when the request
    /// body was not all read, or the answer said close).
    pub fn relay_done<'l>(
        &mut self,
        ctx: &Ctx<'_>,
        status: u16,
        bytes: u64,
        line: access::Line<'l>,
    ) -> Exchange<'l> {
        if let Phase::Awaiting { plan, relayed } = std::mem::replace(&mut self.phase, Phase::Closed)
            && plan.keep_alive
            && relayed.is_none()
            && self.keep_alive_allowed
        {
            self.phase = Phase::Head { scanned: 0 };
        }
        self.exchange(ctx, line, status, bytes)
    }

    /// The relay failed before any byte of an answer: answer `status` (502, 504, 408, ...)
    /// ourselves; the connection stays open if the request body was read whole.
    pub fn relay_failed<'l>(
        &mut self,
        out: &mut Output,
        ctx: &Ctx<'_>,
        status: u16,
        line: access::Line<'l>,
    ) -> Exchange<'l> {
        let Phase::Awaiting { plan, relayed } = std::mem::replace(&mut self.phase, Phase::Closed)
        else {
            return self.exchange(ctx, line, status, 0);
        };
        let keep_alive = plan.keep_alive && relayed.is_none() && self.keep_alive_allowed;
        let reply = Reply::text(status, b"Content-Type: text/plain\r\n");
        let head_only = plan.method == Method::Head;
        let len = if head_only { 0 } else { reply.len };
        out.push_reply(
            reply,
            ctx.date,
            ctx.head_extra,
            head_only,
            ConnHeader::new(keep_alive, plan.version),
        );
        if keep_alive {
            self.phase = Phase::Head { scanned: 0 };
        }
        self.exchange(ctx, line, status, len)
    }

    /// The relayed answer broke off after bytes of it were sent: only closing is left.
    pub fn relay_aborted<'l>(
        &mut self,
        ctx: &Ctx<'_>,
        status: u16,
        bytes: u64,
        line: access::Line<'l>,
    ) -> Exchange<'l> {
        self.phase = Phase::Closed;
        self.exchange(ctx, line, status, bytes)
    }

    fn exchange<'l>(
        &mut self,
        ctx: &Ctx<'_>,
        line: access::Line<'l>,
        status: u16,
        bytes: u64,
    ) -> Exchange<'l> {
        Exchange {
            line,
            status,
            bytes,
            started: self.started.take().unwrap_or(ctx.now),
            answered: ctx.now,
        }
    }
}

/// The first line of a head, for the log.
pub fn request_line(head: &[u8]) -> &[u8] {
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

    /// The test handler: `/a` is "A", anything else "other", methods but GET and HEAD 405.
    fn echo(req: &Request<'_>) -> Reply<'static> {
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

    /// Feeds `input`, answering every request head at once with `answer`, as a connection
    /// does; returns the bytes consumed.
    fn feed_all<'r>(
        s: &mut Session,
        input: &[u8],
        out: &mut Output,
        ctx: &Ctx<'_>,
        answer: &mut dyn FnMut(&Request<'_>) -> Reply<'r>,
    ) -> usize {
        let mut used = 0;
        loop {
            let (n, event) = s.feed(&input[used..], out, ctx);
            used += n;
            match event {
                Event::Wait => return used,
                Event::Answered(_) => {}
                Event::Request { req, .. } => {
                    s.respond(answer(&req), out, ctx, access::Line::Raw(b"-"));
                }
            }
        }
    }

    /// A fixed moment and date.
    fn ctx(limits: &Limits) -> Ctx<'_> {
        Ctx {
            now: Instant::now(),
            date: b"D",
            limits,
            head_extra: b"",
        }
    }

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut s = Session::new();
        let mut out = Output::default();
        let limits = Limits::default();
        let ctx = ctx(&limits);
        let mut buf = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            let n = feed_all(&mut s, &buf, &mut out, &ctx, &mut echo);
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

    /// Feeds `pieces`, writing the output out (as a connection would) only where asked, and
    /// always at the end until nothing more is consumed. Returns what went on the wire.
    fn run_flushing(pieces: &[(&[u8], bool)]) -> Vec<u8> {
        let (mut s, mut out, mut wire, mut buf) =
            (Session::new(), Output::default(), Vec::new(), Vec::new());
        let big = vec![b'x'; 40 * 1024];
        let mut h = |_: &Request<'_>| Reply {
            status: 200,
            headers: b"",
            len: big.len() as u64,
            body: Body::Bytes(&big),
        };
        let limits = Limits::default();
        let ctx = ctx(&limits);
        let mut step = |buf: &mut Vec<u8>, out: &mut Output, wire: &mut Vec<u8>, flush: bool| loop {
            if flush {
                wire.extend_from_slice(&out.buf[out.pos..]);
                out.clear();
            }
            let n = feed_all(&mut s, buf, out, &ctx, &mut h);
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
            let (mut s, mut out) = (Session::new(), Output::default());
            let n = feed_all(&mut s, input, &mut out, &ctx, &mut echo);
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
        let ctx = ctx(&limits);
        let (mut s, mut out, mut buf) = (Session::new(), Output::default(), input.to_vec());
        let mut answered = 0;
        for _ in 0..10 {
            let (n, event) = s.feed(&buf, &mut out, &ctx);
            let head = match event {
                Event::Request { head, .. } => head.to_vec(),
                _ => break,
            };
            buf.drain(..n);
            s.await_answer(false);
            assert!(s.is_awaiting() && s.in_request(buf.len()));
            // Nothing more is consumed while the answer is out.
            assert!(matches!(s.feed(&buf, &mut out, &ctx), (0, Event::Wait)));
            let req = request::parse(&head, 64).unwrap();
            s.respond(echo(&req), &mut out, &ctx, access::Line::Raw(b"-"));
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
