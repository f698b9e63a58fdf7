//! A session gives the same answers however the byte stream is split into reads, and whether or
//! not its output is written out between reads; every answer it writes is a well-formed response
//! whose Content-Length frames it exactly, one per request head the session hands out, plus at most
//! one closing error (a 408 only when the stream ends inside a head). The session reports one
//! exchange per response, whose access line is printable ASCII with the response's status and
//! body size.
//!
//! Input: byte 0 = flags (low 4 bits: number of cuts; 0x10: small limits), then the cut
//! descriptors of `common::split` (flag = write the output out after this read), then the stream.
#![no_main]

mod common;

use std::sync::LazyLock;
use std::time::Instant;

use edgeserve::http::access::{self, Line};
use edgeserve::http::request::{Method, Request, Version};
use edgeserve::http::response::{Body, Output, Reply, reason};
use edgeserve::http::session::{Ctx, Event, Exchange, Limits, Session};
use libfuzzer_sys::fuzz_target;

static NOW: LazyLock<Instant> = LazyLock::new(Instant::now);
const DATE: &[u8] = b"Thu, 01 Jan 1970 00:00:00 GMT";
const SMALL: Limits = Limits {
    max_head: 160,
    max_headers: 4,
    max_body: 64,
};
/// A body this large makes a couple of pipelined requests cross the output high-water mark.
const BIG: usize = 40 * 1024;

/// The access line of an exchange, as the server formats it (no peer, date `-`).
fn access_line(x: &Exchange<'_>) -> String {
    let mut buf = Vec::new();
    access::format(&mut buf, None, "-", x.line, x.status, x.bytes, x.took());
    String::from_utf8(buf).expect("access lines are ASCII")
}

/// What the response to one handled request must look like on the wire.
#[derive(Debug, PartialEq)]
struct Expect {
    status: u16,
    content_length: Option<u64>,
    body: Vec<u8>,
}

/// Answers from the request alone: 405 for other methods, 304 with If-None-Match, 404 for paths
/// containing "missing", an empty 200 for /empty, a big 200 for /big*, else a 200 echoing the
/// request line. HEAD gets the GET headers without the body.
#[derive(Default)]
struct Fake {
    body: Vec<u8>,
    log: Vec<Expect>,
}

impl Fake {
    fn handle(&mut self, req: &Request<'_>) -> Reply<'_> {
        let path = req.path();
        let reply = if req.method == Method::Other {
            Reply::text(405, b"Allow: GET, HEAD\r\n")
        } else if req.if_none_match.is_some() {
            // As the file handler answers it: validators only, no length, no body.
            Reply {
                status: 304,
                headers: b"ETag: \"e\"\r\n",
                len: 0,
                body: Body::Empty,
            }
        } else if path.contains("missing") {
            Reply::text(404, b"Content-Type: text/plain\r\n")
        } else if path == "/empty" {
            Reply {
                status: 200,
                headers: b"",
                len: 0,
                body: Body::Empty,
            }
        } else {
            self.body.clear();
            if path.starts_with("/big") {
                self.body.extend(path.bytes().cycle().take(BIG));
            } else {
                let v = match req.version {
                    Version::Http10 => "1.0",
                    Version::Http11 => "1.1",
                };
                let line = format!("{} {} {v}\n", req.method_str, req.target);
                self.body.extend_from_slice(line.as_bytes());
            }
            Reply {
                status: 200,
                headers: b"Content-Type: text/plain\r\n",
                len: self.body.len() as u64,
                body: Body::Bytes(&self.body),
            }
        };
        let bodiless = reply.status == 304;
        let wire = match reply.body {
            Body::Bytes(b) if req.method != Method::Head && !bodiless => b.to_vec(),
            _ => Vec::new(),
        };
        self.log.push(Expect {
            status: reply.status,
            content_length: (!bodiless).then_some(reply.len),
            body: wire,
        });
        reply
    }
}

#[derive(Debug, PartialEq)]
struct Outcome {
    wire: Vec<u8>,
    /// Bytes never consumed (a partial head).
    leftover: Vec<u8>,
    closed: bool,
    in_request: bool,
    log: Vec<Expect>,
    access: Vec<String>,
}

struct Conn<'a> {
    session: Session,
    out: Output,
    buf: Vec<u8>,
    wire: Vec<u8>,
    handler: Fake,
    ctx: Ctx<'a>,
    access: Vec<String>,
}

impl Conn<'_> {
    /// One read's worth, as conn.rs does it: feed the buffer, answering every request head at
    /// once, and drop what was consumed.
    fn feed_once(&mut self) -> usize {
        let mut used = 0;
        loop {
            let (n, event) = self.session.feed(&self.buf[used..], &mut self.out, &self.ctx);
            used += n;
            assert!(used <= self.buf.len(), "consumed {used} of {}", self.buf.len());
            match event {
                Event::Wait => break,
                Event::Answered(x) => self.access.push(access_line(&x)),
                Event::Request { req, .. } => {
                    let reply = self.handler.handle(&req);
                    let line = Line::Parsed {
                        method: req.method_str,
                        target: req.target,
                        version: req.version.as_str(),
                    };
                    let x = self.session.respond(reply, &mut self.out, &self.ctx, line);
                    self.access.push(access_line(&x));
                }
            }
        }
        self.buf.drain(..used);
        used
    }

    /// Writes out all queued output.
    fn flush(&mut self) {
        assert!(self.out.files.is_empty());
        self.wire.extend_from_slice(&self.out.buf[self.out.pos..]);
        self.out.clear();
    }

    /// Flushes, then feeds and flushes until nothing more is consumed (requests held back at the
    /// output high-water mark go on once the output is written).
    fn feed_all(&mut self) {
        self.flush();
        loop {
            let n = self.feed_once();
            self.flush();
            if n == 0 {
                break;
            }
        }
    }
}

fn run(pieces: &[(&[u8], bool)], limits: &Limits) -> Outcome {
    let mut c = Conn {
        session: Session::new(),
        out: Output::default(),
        buf: Vec::new(),
        wire: Vec::new(),
        handler: Fake::default(),
        ctx: Ctx {
            now: *NOW,
            date: DATE,
            limits,
            head_extra: b"",
        },
        access: Vec::new(),
    };
    for &(piece, flush) in pieces {
        c.buf.extend_from_slice(piece);
        if flush {
            c.feed_all();
        } else {
            c.feed_once();
        }
    }
    c.feed_all();
    let in_request = c.session.in_request(c.buf.len());
    if in_request {
        // The request deadline passes: 408 for a partial head, a silent close in a body.
        if let Some(x) = c.session.timed_out(&mut c.out, &c.ctx) {
            c.access.push(access_line(&x));
        }
        c.flush();
        assert!(c.session.is_closed());
    }
    Outcome {
        wire: c.wire,
        leftover: c.buf,
        closed: c.session.is_closed(),
        in_request,
        log: c.handler.log,
        access: c.access,
    }
}

/// Walks the output response by response, framing each by its Content-Length.
fn check_wire(o: &Outcome) {
    let mut pos = 0;
    let mut n = 0;
    let mut statuses = Vec::new();
    while pos < o.wire.len() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(&o.wire[pos..]) {
            Ok(httparse::Status::Complete(len)) => len,
            r => panic!("response {n} at {pos}: {r:?}"),
        };
        assert_eq!(resp.version, Some(1));
        let status = resp.code.unwrap();
        assert_eq!(resp.reason, Some(reason(status).trim_end()));
        let get = |name: &str| {
            let mut values = resp.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
            let v = values.next().map(|h| h.value);
            assert!(values.next().is_none(), "response {n}: repeated {name}");
            v
        };
        assert_eq!(get("Date"), Some(DATE));
        assert_eq!(get("Server"), Some(&b"edgeserve"[..]));
        let content_length = get("Content-Length").map(|v| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("response {n}: Content-Length {v:?}"))
        });
        let close = match get("Connection") {
            None => false,
            Some(b"close") => true,
            Some(b"keep-alive") => false,
            Some(v) => panic!("response {n}: Connection {v:?}"),
        };
        if status == 200 {
            assert!(content_length.is_some(), "response {n}: 200 without Content-Length");
        }
        let body_start = pos + head_len;
        let body_len = match o.log.get(n) {
            Some(e) => {
                assert_eq!((status, content_length), (e.status, e.content_length), "response {n}");
                let end = body_start + e.body.len();
                assert!(end <= o.wire.len(), "response {n}: body cut short");
                assert_eq!(&o.wire[body_start..end], e.body, "response {n}: body");
                e.body.len()
            }
            None => {
                // An error the session answers itself: closes, carries its reason as the body.
                assert!(
                    matches!(status, 400 | 408 | 413 | 414 | 431 | 501 | 505),
                    "response {n}: status {status} not from the handler"
                );
                assert!(close, "response {n}: error {status} without Connection: close");
                let body = reason(status).as_bytes();
                assert_eq!(content_length, Some(body.len() as u64));
                assert_eq!(o.wire.get(body_start..body_start + body.len()), Some(body));
                body.len()
            }
        };
        statuses.push((status, body_len));
        pos = body_start + body_len;
        n += 1;
        if close {
            assert_eq!(pos, o.wire.len(), "response {n}: bytes after Connection: close");
            assert!(o.closed, "Connection: close but the session reads on");
        }
    }
    assert_eq!(pos, o.wire.len());
    assert!(
        n == o.log.len() || n == o.log.len() + 1,
        "{n} responses for {} handled requests",
        o.log.len()
    );
    // Only a partial head is left unconsumed (a body in progress consumes all it gets).
    if o.in_request && !o.leftover.is_empty() {
        assert_eq!(n, o.log.len() + 1, "partial head timed out without an answer");
        assert_eq!(statuses.last().map(|s| s.0), Some(408));
    }
    check_access_log(&o.access, &statuses);
}

/// `- - - [-] "line" status bytes 0.000000`: one per response, in order, the quoted part escaped.
fn check_access_log(lines: &[String], responses: &[(u16, usize)]) {
    assert_eq!(lines.len(), responses.len(), "access lines {lines:?}");
    for (line, &(status, body_len)) in lines.iter().zip(responses) {
        assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line:?}");
        let rest = line.strip_prefix("- - - [-] \"").unwrap_or_else(|| panic!("{line:?}"));
        let quote = rest.find('"').unwrap_or_else(|| panic!("{line:?}"));
        // Every backslash starts a \xHH escape, so the line splits back into its fields.
        let quoted = rest[..quote].as_bytes();
        for (i, _) in quoted.iter().enumerate().filter(|&(_, &b)| b == b'\\') {
            let esc = quoted.get(i + 1..i + 4).unwrap_or_else(|| panic!("{line:?}"));
            assert!(esc[0] == b'x' && esc[1..].iter().all(u8::is_ascii_hexdigit), "{line:?}");
        }
        assert_eq!(
            &rest[quote..],
            format!("\" {status} {body_len} 0.000000"),
            "access line {line:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Some((stream, pieces)) = common::split(usize::from(flags & 0x0f), rest) else {
        return;
    };
    let default = Limits::default();
    let limits = if flags & 0x10 != 0 { &SMALL } else { &default };
    let whole = run(&[(stream, true)], limits);
    check_wire(&whole);
    let split = run(&pieces, limits);
    assert_eq!(whole, split, "pieces {:?}", pieces.iter().map(|p| (p.0.len(), p.1)).collect::<Vec<_>>());
});
