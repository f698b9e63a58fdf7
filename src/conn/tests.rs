//! The connection machine over a scripted transport: every read and write goes the way the
//! script says (short, `WouldBlock`, EOF, reset), and the bytes a client would see are checked.
//! Readiness is delivered as the loop would: an edge sets both flags and the connection is
//! driven again, a bounded number of times.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read as _, Seek, SeekFrom, Write as _};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::transport::{Io, Transport};
use super::{Conn, Env, Next, Pools};
use crate::app::Handler;
use crate::http::request::Request;
use crate::http::response::{Body, Reply};
use crate::http::session::{Ctx, Limits};

/// What the next read returns.
enum Read {
    Data(&'static [u8]),
    Block,
    Eof,
    Reset,
}

/// What the next write does: take at most `n` bytes, block, or fail.
#[derive(Clone, Copy)]
enum Write {
    Take(usize),
    Block,
    Reset,
}

#[derive(Default)]
struct State {
    reads: VecDeque<Read>,
    /// Writes, in turn; when empty every write takes all it is given.
    writes: VecDeque<Write>,
    written: Vec<u8>,
    shut: bool,
    /// Bytes of the transport's own for the peer (as a TLS handshake flight), sent by `flush`.
    held: &'static [u8],
}

/// The scripted transport; the test keeps a second handle on its state.
#[derive(Clone, Default)]
struct Script(Rc<RefCell<State>>);

impl Script {
    fn new(reads: Vec<Read>, writes: Vec<Write>) -> Script {
        Script(Rc::new(RefCell::new(State {
            reads: reads.into(),
            writes: writes.into(),
            ..State::default()
        })))
    }

    fn written(&self) -> Vec<u8> {
        self.0.borrow().written.clone()
    }

    fn take(&self, have: usize) -> Result<usize, Io> {
        match self.0.borrow_mut().writes.pop_front() {
            None => Ok(have),
            Some(Write::Take(n)) => Ok(n.min(have)),
            Some(Write::Block) => Err(Io::WouldBlock),
            Some(Write::Reset) => Err(Io::Error(io::ErrorKind::ConnectionReset.into())),
        }
    }
}

impl Transport for Script {
    fn read(&mut self, buf: &mut [u8]) -> Io {
        let mut st = self.0.borrow_mut();
        match st.reads.pop_front() {
            // The script ran out: nothing more has arrived.
            None | Some(Read::Block) => Io::WouldBlock,
            Some(Read::Eof) => {
                st.reads.push_front(Read::Eof);
                Io::Closed
            }
            Some(Read::Reset) => Io::Error(io::ErrorKind::ConnectionReset.into()),
            Some(Read::Data(d)) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                if n < d.len() {
                    st.reads.push_front(Read::Data(&d[n..]));
                }
                Io::Done(n)
            }
        }
    }

    fn write(&mut self, buf: &[u8], _more: bool) -> Io {
        match self.take(buf.len()) {
            Ok(n) => {
                self.0.borrow_mut().written.extend_from_slice(&buf[..n]);
                Io::Done(n)
            }
            Err(io) => io,
        }
    }

    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> Io {
        let n = match self.take(len) {
            Ok(n) => n,
            Err(io) => return io,
        };
        let mut f = file;
        let mut chunk = vec![0; n];
        f.seek(SeekFrom::Start(offset)).unwrap();
        let got = f.read(&mut chunk).unwrap();
        self.0.borrow_mut().written.extend_from_slice(&chunk[..got]);
        Io::Done(got)
    }

    fn shutdown_write(&mut self) {
        self.0.borrow_mut().shut = true;
    }

    fn wants_write(&self) -> bool {
        !self.0.borrow().held.is_empty()
    }

    fn flush(&mut self) -> Io {
        let held = self.0.borrow().held;
        match self.take(held.len()) {
            Ok(n) => {
                let mut st = self.0.borrow_mut();
                st.written.extend_from_slice(&held[..n]);
                st.held = &held[n..];
                if st.held.is_empty() {
                    Io::Done(0)
                } else {
                    Io::WouldBlock
                }
            }
            Err(io) => io,
        }
    }
}

/// `/a` is "A"; `/file` is the test file (sent by `send_file`); other methods 405.
struct Fake {
    file: Arc<File>,
    len: u64,
}

impl Handler for Fake {
    fn handle<'s>(&'s mut self, req: &Request<'_>, _: Instant) -> Reply<'s> {
        match (req.method_str, req.path()) {
            ("GET", "/file") => Reply {
                status: 200,
                headers: b"",
                len: self.len,
                body: Body::File {
                    file: Arc::clone(&self.file),
                    offset: 0,
                },
            },
            ("GET", _) => Reply {
                status: 200,
                headers: b"",
                len: 1,
                body: Body::Bytes(b"A"),
            },
            _ => Reply::text(405, b""),
        }
    }
}

/// A file of `len` pseudo-random bytes, and its content.
fn test_file(len: usize) -> (Arc<File>, Vec<u8>) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("edgeserve-conn-test-{}-{n}", std::process::id()));
    let content: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let mut f = File::create(&path).unwrap();
    f.write_all(&content).unwrap();
    let f = File::open(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    (Arc::new(f), content)
}

/// What the loop lends a connection, kept across turns (the upstream pool lives here).
struct Harness {
    handler: Fake,
    limits: Limits,
    pools: Pools,
    routes: crate::config::Routes,
    #[cfg(feature = "proxy")]
    poller: polling::Poller,
    #[cfg(feature = "proxy")]
    upstreams: std::sync::Mutex<crate::proxy::upstream::Upstreams>,
    #[cfg(feature = "proxy")]
    tunnels: Arc<super::TunnelLimit>,
}

impl Harness {
    fn new(routes: Vec<crate::config::Route>) -> Harness {
        Harness {
            handler: handler(),
            limits: Limits::default(),
            pools: Pools::default(),
            #[cfg(feature = "proxy")]
            poller: polling::Poller::new().unwrap(),
            #[cfg(feature = "proxy")]
            upstreams: std::sync::Mutex::new(crate::proxy::upstream::Upstreams::new(
                crate::proxy::upstream::Pool {
                    max_idle: 4,
                    idle_timeout: std::time::Duration::from_secs(4),
                },
                std::time::Duration::from_secs(1),
            )),
            #[cfg(feature = "proxy")]
            tunnels: Arc::new(super::TunnelLimit::new(4)),
            routes: routes.into(),
        }
    }

    /// Drives `conn` as the loop would: after each turn, an edge (both flags) and another turn,
    /// until it closes or `turns` run out. Returns how it ended. With routes, upstream readiness
    /// comes with every edge too (spurious edges are harmless: the relay reads and writes until
    /// `WouldBlock`), and a turn that waits gives the real upstream socket a moment.
    fn run(&mut self, conn: &mut Conn<Script>, turns: usize) -> Next {
        let mut last = Next::Wait;
        for _ in 0..turns {
            let mut env = Env {
                ctx: Ctx {
                    now: Instant::now(),
                    date: b"Thu, 01 Jan 1970 00:00:00 GMT",
                    limits: &self.limits,
                    head_extra: b"",
                },
                log_date: "-",
                routes: &self.routes,
                trust_forwarded: false,
                health: Some("/healthz"),
                handler: &mut self.handler,
                pools: &mut self.pools,
                // Small, so that the budget's early stops are exercised too.
                budget: 4096,
                #[cfg(feature = "proxy")]
                poller: &self.poller,
                #[cfg(feature = "proxy")]
                upstreams: &self.upstreams,
                #[cfg(feature = "proxy")]
                tunnels: &self.tunnels,
                key: 0,
                draining: false,
                #[cfg(feature = "tls")]
                https: None,
                secure: false,
                #[cfg(feature = "models")]
                workers: None,
                #[cfg(feature = "auth")]
                auth: None,
            };
            last = conn.drive(&mut env);
            if last == Next::Close {
                break;
            }
            conn.set_ready(true, true);
            #[cfg(feature = "proxy")]
            if !self.routes.is_empty() {
                conn.upstream_ready(true, true);
                if last == Next::Wait {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
        last
    }
}

/// Drives `conn` over the static handler (see [`Harness::run`]).
fn run(conn: &mut Conn<Script>, turns: usize) -> Next {
    Harness::new(Vec::new()).run(conn, turns)
}

fn conn(script: &Script) -> Conn<Script> {
    Conn::with_transport(script.clone(), 1, None, Instant::now())
}

/// The complete responses in `wire`, as (status, body) pairs, framed by Content-Length.
fn responses(mut wire: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(wire) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => break, // the rest is still on its way
            Err(e) => panic!("not a response ({e}): {:?}", String::from_utf8_lossy(wire)),
        };
        let len: usize = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
            .unwrap_or(0);
        if wire.len() < n + len {
            break;
        }
        out.push((resp.code.unwrap(), wire[n..n + len].to_vec()));
        wire = &wire[n + len..];
    }
    out
}

fn handler() -> Fake {
    let (file, content) = test_file(100_000);
    Fake {
        file,
        len: content.len() as u64,
    }
}

#[test]
fn a_request_split_by_would_block_everywhere_is_answered_once() {
    let script = Script::new(
        vec![
            Read::Block,
            Read::Data(b"GET /a HT"),
            Read::Block,
            Read::Data(b"TP/1.1\r\nHo"),
            Read::Block,
            Read::Data(b"st: x\r\n\r\n"),
        ],
        [Write::Block, Write::Take(1), Write::Block]
            .into_iter()
            .chain(std::iter::repeat_n(Write::Take(3), 100))
            .collect(),
    );
    let mut c = conn(&script);
    let next = run(&mut c, 200);
    assert_eq!(
        next,
        Next::Wait,
        "the connection stays open for the next request"
    );
    assert_eq!(responses(&script.written()), [(200, b"A".to_vec())]);
    assert!(c.is_idle());
}

#[test]
fn short_writes_of_a_file_deliver_every_byte_in_order() {
    let (_, content) = test_file(100_000);
    let script = Script::new(
        vec![Read::Data(
            b"GET /file HTTP/1.1\r\nHost: x\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        )],
        (0..2000)
            .map(|i| {
                if i % 3 == 0 {
                    Write::Block
                } else {
                    Write::Take(777)
                }
            })
            .collect(),
    );
    let mut c = conn(&script);
    run(&mut c, 3000);
    let got = responses(&script.written());
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, 200);
    assert!(got[0].1 == content, "the file body differs");
    assert_eq!(got[1], (200, b"A".to_vec()));
}

#[test]
fn eof_inside_a_head_closes_without_an_answer() {
    let script = Script::new(
        vec![Read::Data(b"GET /a HTTP/1.1\r\nHo"), Read::Eof],
        vec![],
    );
    let mut c = conn(&script);
    assert_eq!(run(&mut c, 10), Next::Close);
    assert!(script.written().is_empty());
}

#[test]
fn eof_after_pipelined_requests_answers_them_all_first() {
    let script = Script::new(
        vec![
            Read::Data(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"),
            Read::Eof,
        ],
        vec![Write::Block, Write::Take(10), Write::Block],
    );
    let mut c = conn(&script);
    assert_eq!(run(&mut c, 50), Next::Close);
    assert_eq!(
        responses(&script.written()),
        [(200, b"A".to_vec()), (200, b"A".to_vec())]
    );
}

#[test]
fn a_reset_inside_a_body_closes() {
    let script = Script::new(
        vec![
            Read::Data(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"),
            Read::Block,
            Read::Reset,
        ],
        vec![],
    );
    let mut c = conn(&script);
    assert_eq!(run(&mut c, 10), Next::Close);
    // The answer (405) went out before the body was read; nothing after it.
    assert_eq!(responses(&script.written()).len(), 1);
}

#[test]
fn a_write_error_closes() {
    let script = Script::new(
        vec![Read::Data(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")],
        vec![Write::Take(100), Write::Block, Write::Reset],
    );
    let mut c = conn(&script);
    assert_eq!(run(&mut c, 10), Next::Close);
}

/// After an answer that closes, our side is shut (FIN), what the client still sends is read and
/// dropped, and its EOF ends the connection.
#[test]
fn a_closing_answer_lingers_until_the_client_closes() {
    let script = Script::new(
        vec![
            Read::Data(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nmore junk"),
            Read::Block,
            Read::Data(b"still more"),
            Read::Block,
        ],
        vec![],
    );
    let mut c = conn(&script);
    assert_eq!(run(&mut c, 5), Next::Wait);
    assert_eq!(responses(&script.written()), [(200, b"A".to_vec())]);
    assert!(
        script.0.borrow().shut,
        "the write side is shut after the answer"
    );
    assert_eq!(c.timer_kind(), super::TimerKind::Linger);
    script.0.borrow_mut().reads.push_back(Read::Eof);
    assert_eq!(run(&mut c, 5), Next::Close);
}

/// A client that pipelines without reading fills our output to the high-water mark, and then
/// its further requests wait unread (memory stays bounded); when it reads, they are answered.
#[test]
fn a_client_that_does_not_read_is_not_read_either() {
    static MANY: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3000));
    let script = Script::new(
        vec![Read::Data(MANY.as_slice())],
        std::iter::repeat_n(Write::Block, 50).collect(),
    );
    let mut c = conn(&script);
    run(&mut c, 50);
    assert!(script.written().is_empty());
    let queued = c.out.buf.len() - c.out.pos;
    assert!(
        queued <= super::OUTPUT_HIGH_WATER + 1024,
        "{queued} bytes of output queued for a client that reads nothing"
    );
    assert!(
        script.0.borrow().reads.front().is_some(),
        "every request was read while nothing could be written"
    );
    run(&mut c, 1000);
    assert_eq!(responses(&script.written()).len(), 3000);
}

/// The relay over a scripted client: the request body is dripped with `WouldBlock` between
/// pieces, the client takes the answer a few bytes at a time, and the upstream (a real socket
/// on 127.0.0.1) sends its answer in pieces. The client gets the upstream's answer, framed,
/// and the next request on the same connection is served.
#[cfg(feature = "proxy")]
#[test]
fn the_relay_over_short_reads_and_writes() {
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"hello") {
            let n = s.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "client side closed early: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        for piece in [
            &b"HTTP/1.1 200 OK\r\nContent-Le"[..],
            b"ngth: 6\r\n\r\nwor",
            b"ld!",
        ] {
            s.write_all(piece).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        got
    });
    let routes = [crate::config::Route {
        prefix: "/up/".into(),
        upstreams: vec![addr],
    }];
    let script = Script::new(
        vec![
            Read::Data(b"POST /up/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhe"),
            Read::Block,
            Read::Data(b"llo"),
            Read::Block,
            Read::Block,
        ],
        (0..200)
            .map(|i| {
                if i % 2 == 0 {
                    Write::Block
                } else {
                    Write::Take(7)
                }
            })
            .collect(),
    );
    let mut c = conn(&script);
    let mut harness = Harness::new(routes.to_vec());
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while responses(&script.written()).is_empty() && Instant::now() < deadline {
        harness.run(&mut c, 10);
    }
    let seen = String::from_utf8(upstream.join().unwrap()).unwrap();
    assert!(
        seen.starts_with("POST /up/x HTTP/1.1\r\nHost: h\r\n"),
        "{seen}"
    );
    assert!(
        seen.contains("Content-Length: 5\r\n") && seen.ends_with("\r\n\r\nhello"),
        "{seen}"
    );
    assert_eq!(responses(&script.written()), [(200, b"world!".to_vec())]);
    // The connection serves on.
    script
        .0
        .borrow_mut()
        .reads
        .push_back(Read::Data(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"));
    harness.run(&mut c, 200);
    assert_eq!(responses(&script.written()).len(), 2);
}

/// A transport's own bytes (a TLS handshake flight made while reading) that met a full socket
/// go out on the next writable edges, though no answer is pending.
#[test]
fn bytes_the_transport_holds_go_out_without_an_answer_pending() {
    let script = Script::new(vec![Read::Block], vec![Write::Block, Write::Take(3)]);
    script.0.borrow_mut().held = b"FLIGHT";
    let mut c = conn(&script);
    let mut h = Harness::new(Vec::new());
    assert_eq!(h.run(&mut c, 1), Next::Wait);
    assert_eq!(script.written(), b"", "the socket was full");
    assert_eq!(h.run(&mut c, 1), Next::Wait);
    assert_eq!(script.written(), b"FLI");
    assert_eq!(h.run(&mut c, 1), Next::Wait);
    assert_eq!(script.written(), b"FLIGHT");
    assert!(!c.io.wants_write());
}

/// While the transport holds bytes and the socket is full, a one-shot registration asks for
/// writability (else the flight would wait forever).
#[test]
fn a_held_flight_asks_for_writability() {
    let script = Script::new(vec![Read::Block], vec![Write::Block]);
    script.0.borrow_mut().held = b"FLIGHT";
    let mut c = conn(&script);
    // As after a drive that met WouldBlock both ways.
    c.readable = false;
    c.writable = false;
    assert_eq!(c.interest(), (true, true));
    script.0.borrow_mut().held = b"";
    assert_eq!(c.interest(), (true, false));
}

/// Requests held back behind 32 queued files must be answered when the output drains, even when
/// it drains just as a turn's budget runs out and no edge follows (the next turn starts with
/// nothing written and nothing read; a TLS connection met this at random).
#[test]
fn held_back_requests_go_on_after_a_turn_that_ended_at_the_budget() {
    // Answers of exactly 4096 bytes, the harness's budget: every turn ends at the budget with
    // one answer written, the 32nd with the output empty.
    let (file, content) = test_file(3999);
    let mut h = Harness::new(Vec::new());
    h.handler = Fake {
        file,
        len: content.len() as u64,
    };
    const REQ: &[u8] = b"GET /file HTTP/1.1\r\nHost: h\r\n\r\n";
    static MANY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let many = MANY.get_or_init(|| REQ.repeat(40));
    let script = Script::new(vec![Read::Data(many)], Vec::new());
    let mut c = conn(&script);
    for _ in 0..200 {
        if h.run(&mut c, 1) == Next::Close {
            break;
        }
        // Writable edges only: the client sent everything at once.
        c.readable = false;
    }
    let got = responses(&script.written());
    assert_eq!(
        script.written().len() / got.len().max(1),
        4096,
        "answers of 4096 bytes"
    );
    assert_eq!(got.len(), 40, "every pipelined request answered");
    assert!(got.iter().all(|(s, b)| *s == 200 && *b == content));
}
