//! Forwarding in the session: a request whose path matches a route is handed to the connection's
//! relay instead of the handler, and the session waits (reading no further request) until the
//! relay reports how the answer went.

use super::{BodyError, BodyLeft, Ctx, Phase, Session, access, drain_body, request_line};
use crate::config::Route;
use crate::http::chunked::Decoder;
use crate::http::request::{BodyFraming, Method, Request, Version};
use crate::http::response::{ConnHeader, Output, Reply};
use crate::proxy::message;

/// A request handed to an upstream.
#[derive(Debug)]
pub struct Forwarding {
    /// Index into the routes.
    pub route: usize,
    pub method: Method,
    /// The head to send upstream, until the connection takes it.
    head: Option<Vec<u8>>,
    /// Body bytes still to come from the client, if any.
    body: Option<BodyLeft>,
    keep_alive: bool,
    version: Version,
    /// The request line, for the access log.
    line: Vec<u8>,
}

/// What the connection needs to start forwarding.
pub struct ForwardStart {
    pub route: usize,
    pub method: Method,
    pub head: Vec<u8>,
    pub has_body: bool,
}

impl Session {
    pub(super) fn forward(
        &mut self,
        routes: &[Route],
        route: usize,
        raw: &[u8],
        req: &Request<'_>,
    ) {
        let mut head = Vec::with_capacity(raw.len() + 64);
        let fallback = routes[route]
            .upstreams
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        message::request_head(&mut head, raw, req, self.peer, &fallback);
        let body = match req.body {
            BodyFraming::None => None,
            BodyFraming::Length(n) => Some(BodyLeft::Length(n)),
            BodyFraming::Chunked => Some(BodyLeft::Chunked {
                decoder: Decoder::default(),
                seen: 0,
            }),
        };
        self.phase = Phase::Forward(Box::new(Forwarding {
            route,
            method: req.method,
            head: Some(head),
            body,
            keep_alive: req.keep_alive && self.keep_alive_allowed,
            version: req.version,
            line: request_line(raw).to_vec(),
        }));
    }

    /// The request to forward, once, after `feed` has stopped at it.
    pub fn take_forward(&mut self) -> Option<ForwardStart> {
        let Phase::Forward(f) = &mut self.phase else {
            return None;
        };
        let head = f.head.take()?;
        Some(ForwardStart {
            route: f.route,
            method: f.method,
            head,
            has_body: f.body.is_some(),
        })
    }

    /// Takes request body bytes from `input` for the upstream: `Ok((n, done))` where the first
    /// `n` bytes are body (relayed as they came), or `Err` when the body is malformed or over the
    /// limit (the connection must close).
    pub fn forward_body(
        &mut self,
        input: &[u8],
        ctx: &Ctx<'_>,
    ) -> Result<(usize, bool), BodyError> {
        let Phase::Forward(f) = &mut self.phase else {
            return Ok((0, true));
        };
        let Some(left) = &mut f.body else {
            return Ok((0, true));
        };
        let (n, done) = drain_body(left, input, ctx.limits.max_body)?;
        if done {
            f.body = None;
        }
        Ok((n, done))
    }

    /// True when the forwarded request came from an HTTP/1.0 client (no chunked answers).
    pub fn forward_to_http10(&self) -> bool {
        matches!(&self.phase, Phase::Forward(f) if f.version == Version::Http10)
    }

    /// True while request body bytes are still to be relayed.
    pub fn forward_body_pending(&self) -> bool {
        matches!(&self.phase, Phase::Forward(f) if f.body.is_some())
    }

    /// The `Connection` field for the forwarded answer's head; `must_close` when the answer is
    /// delimited by the upstream's close. Makes the session close after the answer if needed.
    pub fn forward_conn_header(&mut self, must_close: bool) -> ConnHeader {
        let Phase::Forward(f) = &mut self.phase else {
            return ConnHeader::Close;
        };
        if must_close || !self.keep_alive_allowed {
            f.keep_alive = false;
        }
        ConnHeader::new(f.keep_alive, f.version)
    }

    /// The forwarded answer is complete: log it and go on with the next request (or close when
    /// the request body was not all read, or the answer said close).
    pub fn forward_done(&mut self, ctx: &Ctx<'_>, status: u16, bytes: u64, upstream: &str) {
        let Phase::Forward(f) = std::mem::replace(&mut self.phase, Phase::Closed) else {
            return;
        };
        self.log_forward(ctx, &f, status, bytes, upstream);
        if f.keep_alive && f.body.is_none() && self.keep_alive_allowed {
            self.phase = Phase::Head { scanned: 0 };
        }
    }

    /// Forwarding failed before any byte of an answer: answer `status` (502, 504) ourselves.
    pub fn forward_failed(&mut self, out: &mut Output, ctx: &Ctx<'_>, status: u16, upstream: &str) {
        let Phase::Forward(f) = std::mem::replace(&mut self.phase, Phase::Closed) else {
            return;
        };
        let keep_alive = f.keep_alive && f.body.is_none() && self.keep_alive_allowed;
        let conn = ConnHeader::new(keep_alive, f.version);
        let reply = Reply::text(status, b"Content-Type: text/plain\r\n");
        let len = reply.len;
        out.push_reply(reply, ctx.date, f.method == Method::Head, conn);
        self.log_forward(ctx, &f, status, len, upstream);
        if keep_alive {
            self.phase = Phase::Head { scanned: 0 };
        }
    }

    /// The answer broke off after bytes of it were sent: only closing is left.
    pub fn forward_aborted(&mut self, ctx: &Ctx<'_>, status: u16, bytes: u64, upstream: &str) {
        if let Phase::Forward(f) = std::mem::replace(&mut self.phase, Phase::Closed) {
            self.log_forward(ctx, &f, status, bytes, upstream);
        }
    }

    fn log_forward(
        &mut self,
        ctx: &Ctx<'_>,
        f: &Forwarding,
        status: u16,
        bytes: u64,
        upstream: &str,
    ) {
        self.access_log_via(
            ctx,
            access::Line::Raw(&f.line),
            status,
            bytes,
            Some(upstream),
        );
    }
}

/// The route whose prefix is the longest that starts `path`.
pub fn route_for(routes: &[Route], path: &str) -> Option<usize> {
    routes
        .iter()
        .enumerate()
        .filter(|(_, r)| path.starts_with(r.prefix.as_str()))
        .max_by_key(|(_, r)| r.prefix.len())
        .map(|(i, _)| i)
}
