//! A small threaded HTTP/1.1 upstream server for the proxy tests.
//!
//! A std `TcpListener` on 127.0.0.1:0 and a thread per connection. Each request (head plus a
//! Content-Length or chunked body) is recorded, then answered as a handler decides: the handler
//! sees the request (with its connection number and its index on that connection) and returns an
//! [`Action`], a script of writes, pauses and an optional close. Connections are kept alive for
//! further requests unless the script closes them or the request said `Connection: close`.
//!
//! Every socket has timeouts and every loop is bounded; dropping the [`Upstream`] stops the
//! accept loop and shuts down every connection it accepted.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Request {
    /// Accept number of the connection it came on (0 for the first accepted connection).
    pub conn: usize,
    /// Index of the request on its connection (0 for the first).
    pub seq: usize,
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    /// The body, decoded when it came chunked.
    pub body: Vec<u8>,
    /// The body length (also when bodies are not kept).
    pub body_len: usize,
    /// True when the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

impl Request {
    /// All values of the headers called `name` (case-insensitive), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of the only header called `name`; panics if it is repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "header {name} repeated in {self:?}");
        all.first().copied()
    }

    pub fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }
}

/// One step of an answer.
#[derive(Clone, Debug)]
pub enum Step {
    Write(Vec<u8>),
    /// Bytes `from..from + len` of the pattern stream `seed` (see [`pattern`]), in 64 KiB writes.
    Pattern {
        seed: u64,
        from: u64,
        len: u64,
    },
    /// The same bytes, each 64 KiB block as one chunk of a chunked body (no last chunk).
    PatternChunked {
        seed: u64,
        len: u64,
    },
    Sleep(Duration),
    /// Close the connection (after the steps before it).
    Close,
    /// Send a FIN (shutdown for writing) but keep the socket open, reading and recording
    /// whatever still comes (lingering, as many servers do before they close) until EOF.
    HalfClose,
}

/// What the upstream does with a request.
#[derive(Clone, Debug)]
pub enum Action {
    Steps(Vec<Step>),
    /// 200 with the request body as a Content-Length body.
    Echo,
}

/// A Content-Length answer with `Server` and `Date` headers and the `extra` ones.
pub fn reply(status: u16, reason: &str, extra: &[(&str, &str)], body: &[u8]) -> Action {
    let mut bytes = head_bytes(status, reason, extra, Some(body.len() as u64));
    bytes.extend_from_slice(body);
    Action::Steps(vec![Step::Write(bytes)])
}

/// `200 OK` with `body`.
pub fn ok(body: impl AsRef<[u8]>) -> Action {
    reply(200, "OK", &[], body.as_ref())
}

/// Raw bytes, then optionally a close.
pub fn raw(bytes: impl AsRef<[u8]>, close: bool) -> Action {
    let mut steps = vec![Step::Write(bytes.as_ref().to_vec())];
    if close {
        steps.push(Step::Close);
    }
    Action::Steps(steps)
}

/// A `len`-byte pattern body with Content-Length.
pub fn big(len: u64, seed: u64) -> Action {
    Action::Steps(vec![
        Step::Write(head_bytes(
            200,
            "OK",
            &[("Content-Type", "application/octet-stream")],
            Some(len),
        )),
        Step::Pattern { seed, from: 0, len },
    ])
}

/// A `len`-byte pattern body, chunked.
pub fn big_chunked(len: u64, seed: u64) -> Action {
    Action::Steps(vec![
        Step::Write(head_bytes(
            200,
            "OK",
            &[("Transfer-Encoding", "chunked")],
            None,
        )),
        Step::PatternChunked { seed, len },
        Step::Write(b"0\r\n\r\n".to_vec()),
    ])
}

/// A chunked answer made of `chunks`, with an optional trailer section.
pub fn chunked(chunks: &[&[u8]], trailer: &str) -> Action {
    let mut bytes = head_bytes(200, "OK", &[("Transfer-Encoding", "chunked")], None);
    for c in chunks {
        bytes.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        bytes.extend_from_slice(c);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n");
    bytes.extend_from_slice(trailer.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    Action::Steps(vec![Step::Write(bytes)])
}

/// Waits, then does `then`.
pub fn after(delay: Duration, then: Action) -> Action {
    match then {
        Action::Steps(mut s) => {
            s.insert(0, Step::Sleep(delay));
            Action::Steps(s)
        }
        Action::Echo => panic!("after(): Echo cannot be delayed"),
    }
}

/// Closes without answering.
pub fn close() -> Action {
    Action::Steps(vec![Step::Close])
}

pub const UPSTREAM_DATE: &str = "Mon, 01 Jan 2024 00:00:00 GMT";
pub const UPSTREAM_SERVER: &str = "test-upstream/1.0";

pub fn head_bytes(status: u16, reason: &str, extra: &[(&str, &str)], len: Option<u64>) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.1 {status} {reason}\r\nServer: {UPSTREAM_SERVER}\r\nDate: {UPSTREAM_DATE}\r\n"
    );
    for (n, v) in extra {
        h.push_str(&format!("{n}: {v}\r\n"));
    }
    if let Some(len) = len {
        h.push_str(&format!("Content-Length: {len}\r\n"));
    }
    h.push_str("\r\n");
    h.into_bytes()
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with bytes `offset..offset + buf.len()` of the deterministic pattern `seed`:
/// byte `i` is byte `i % 8` of `splitmix(seed * K + i / 8)`. Position-addressable, so a stream
/// can be checked piece by piece.
pub fn pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    let base = seed.wrapping_mul(0x1000_0000_01b3);
    let mut i = 0usize;
    // Unaligned head.
    while i < buf.len() && !(offset + i as u64).is_multiple_of(8) {
        let p = offset + i as u64;
        buf[i] = (splitmix(base.wrapping_add(p / 8)) >> (8 * (p % 8))) as u8;
        i += 1;
    }
    let mut word = (offset + i as u64) / 8;
    let mut chunks = buf[i..].chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&splitmix(base.wrapping_add(word)).to_le_bytes());
        word += 1;
    }
    let rest = chunks.into_remainder();
    let w = splitmix(base.wrapping_add(word)).to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&w[..n]);
}

pub fn pattern_vec(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    pattern(seed, offset, &mut v);
    v
}

/// Knobs for the upstream server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Send `100 Continue` after a head with `Expect: 100-continue`, before reading the body.
    pub continue_on_expect: bool,
    /// Sleep this long after every 64 KiB of request body read (a slow upstream reader).
    pub slow_body: Option<Duration>,
    /// Keep request bodies in the record (off for huge uploads: only the length is checked).
    pub keep_bodies: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            continue_on_expect: true,
            slow_body: None,
            keep_bodies: true,
        }
    }
}

type Handler = dyn Fn(&Request) -> Action + Send + Sync;

struct Shared {
    stop: AtomicBool,
    accepts: AtomicUsize,
    /// Connections that ended (closed by either side).
    ended: AtomicUsize,
    requests: Mutex<Vec<Request>>,
    /// Clones of the open accepted streams (by accept number), shut down on drop. A connection
    /// removes its clone when it ends, so that a close really closes the socket.
    streams: Mutex<HashMap<usize, TcpStream>>,
    /// Lengths of request bodies (also when bodies are not kept).
    body_lens: Mutex<Vec<usize>>,
    handler: Box<Handler>,
    opts: Options,
}

pub struct Upstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    pub fn start(handler: impl Fn(&Request) -> Action + Send + Sync + 'static) -> Upstream {
        Upstream::with_options(Options::default(), handler)
    }

    /// Starts on a given listener (e.g. bound to a port chosen earlier).
    pub fn on_listener(
        listener: TcpListener,
        opts: Options,
        handler: impl Fn(&Request) -> Action + Send + Sync + 'static,
    ) -> Upstream {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            accepts: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            streams: Mutex::new(HashMap::new()),
            body_lens: Mutex::new(Vec::new()),
            handler: Box::new(handler),
            opts,
        });
        let sh = Arc::clone(&shared);
        let thread = std::thread::spawn(move || accept_loop(listener, sh));
        Upstream {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    pub fn with_options(
        opts: Options,
        handler: impl Fn(&Request) -> Action + Send + Sync + 'static,
    ) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        Upstream::on_listener(listener, opts, handler)
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.shared.accepts.load(Ordering::SeqCst)
    }

    /// Connections that have ended so far (the proxy closed them, or the script did).
    pub fn ended(&self) -> usize {
        self.shared.ended.load(Ordering::SeqCst)
    }

    /// Requests received so far (complete heads and bodies).
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn body_lens(&self) -> Vec<usize> {
        self.shared.body_lens.lock().unwrap().clone()
    }

    /// Waits (bounded) until at least `n` requests have been recorded.
    pub fn wait_requests(&self, n: usize, limit: Duration) -> Vec<Request> {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.requests();
            if r.len() >= n || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The only request recorded; panics otherwise.
    pub fn only_request(&self) -> Request {
        let r = self.wait_requests(1, Duration::from_secs(2));
        assert_eq!(r.len(), 1, "expected exactly one upstream request: {r:#?}");
        r.into_iter().next().unwrap()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for (_, s) in self.shared.streams.lock().unwrap().drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, sh: Arc<Shared>) {
    while !sh.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let n = sh.accepts.fetch_add(1, Ordering::SeqCst);
                if let Ok(c) = stream.try_clone() {
                    sh.streams.lock().unwrap().insert(n, c);
                }
                let sh2 = Arc::clone(&sh);
                std::thread::spawn(move || {
                    let _ = serve(stream, n, Arc::clone(&sh2));
                    sh2.streams.lock().unwrap().remove(&n);
                    sh2.ended.fetch_add(1, Ordering::SeqCst);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// A buffered reader over the connection that wakes up regularly to notice the stop flag.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    sh: Arc<Shared>,
}

/// An idle upstream connection gives up after this long without bytes.
const UPSTREAM_IDLE: Duration = Duration::from_secs(30);

impl Conn {
    /// Reads more; Ok(0) at EOF; Err when stopped, on error or after a long silence.
    fn fill(&mut self) -> io::Result<usize> {
        let deadline = Instant::now() + UPSTREAM_IDLE;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if self.sh.stop.load(Ordering::SeqCst) {
                return Err(io::Error::other("stopped"));
            }
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if Instant::now() > deadline {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn fill_or_eof(&mut self) -> io::Result<()> {
        if self.fill()? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof"));
        }
        Ok(())
    }

    fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > 64 * 1024 {
                return Err(io::Error::other("line too long"));
            }
            self.fill_or_eof()?;
        }
    }

    /// Reads `n` body bytes, appending them to `out` when given.
    fn body(&mut self, mut n: usize, mut out: Option<&mut Vec<u8>>) -> io::Result<()> {
        let mut since_pause = 0usize;
        while n > 0 {
            if self.buf.is_empty() {
                self.fill_or_eof()?;
            }
            let k = n.min(self.buf.len());
            if let Some(o) = out.as_deref_mut() {
                o.extend_from_slice(&self.buf[..k]);
            }
            self.buf.drain(..k);
            n -= k;
            since_pause += k;
            if let Some(d) = self.sh.opts.slow_body
                && since_pause >= 64 * 1024
            {
                since_pause = 0;
                std::thread::sleep(d);
            }
        }
        Ok(())
    }
}

fn serve(stream: TcpStream, conn_no: usize, sh: Arc<Shared>) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(50)))?;
    stream.set_write_timeout(Some(Duration::from_secs(20)))?;
    let _ = stream.set_nodelay(true);
    let mut c = Conn {
        stream,
        buf: Vec::new(),
        sh: Arc::clone(&sh),
    };
    for seq in 0..10_000 {
        // The head.
        let end = loop {
            if let Some(i) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if c.buf.len() > 256 * 1024 {
                return Err(io::Error::other("request head too long"));
            }
            if c.fill()? == 0 {
                return Ok(()); // The proxy closed the connection.
            }
        };
        let head: Vec<u8> = c.buf.drain(..end).collect();
        let text = String::from_utf8_lossy(&head[..head.len() - 4]).into_owned();
        let mut lines = text.split("\r\n");
        let rl = lines.next().unwrap_or_default();
        let mut parts = rl.splitn(3, ' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let version = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_string(), v.trim().to_string()))
            .collect();
        let mut req = Request {
            conn: conn_no,
            seq,
            method,
            target,
            version,
            headers,
            body: Vec::new(),
            body_len: 0,
            chunked: false,
        };
        if sh.opts.continue_on_expect
            && req
                .all("expect")
                .iter()
                .any(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            c.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        // The body.
        let keep = sh.opts.keep_bodies;
        let mut body = Vec::new();
        let mut body_len = 0usize;
        let te_chunked = req
            .all("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        if te_chunked {
            req.chunked = true;
            loop {
                let line = c.line()?;
                let line = String::from_utf8_lossy(&line).into_owned();
                let size_txt = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_txt, 16)
                    .map_err(|_| io::Error::other(format!("bad chunk size {line:?}")))?;
                if size == 0 {
                    // Trailer lines up to the empty one.
                    for _ in 0..100 {
                        if c.line()?.is_empty() {
                            break;
                        }
                    }
                    break;
                }
                c.body(size, keep.then_some(&mut body))?;
                body_len += size;
                if !c.line()?.is_empty() {
                    return Err(io::Error::other("chunk not followed by CRLF"));
                }
            }
        } else if let Some(cl) = req.all("content-length").first() {
            let n: usize = cl
                .parse()
                .map_err(|_| io::Error::other(format!("bad Content-Length {cl:?}")))?;
            c.body(n, keep.then_some(&mut body))?;
            body_len = n;
        }
        req.body = body;
        req.body_len = body_len;
        sh.body_lens.lock().unwrap().push(body_len);
        sh.requests.lock().unwrap().push(req.clone());
        let wants_close = req
            .all("connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("close"));

        let action = (sh.handler)(&req);
        let steps = match action {
            Action::Echo => {
                let mut b = head_bytes(200, "OK", &[], Some(req.body.len() as u64));
                b.extend_from_slice(&req.body);
                vec![Step::Write(b)]
            }
            Action::Steps(s) => s,
        };
        for step in steps {
            match step {
                Step::Write(b) => c.stream.write_all(&b)?,
                Step::Sleep(d) => {
                    // In small slices, to notice the stop flag.
                    let end = Instant::now() + d;
                    while Instant::now() < end && !sh.stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(5).min(end - Instant::now()));
                    }
                }
                Step::Pattern { seed, from, len } => {
                    let mut block = vec![0u8; 64 * 1024];
                    let mut off = from;
                    while off < from + len {
                        let k = (from + len - off).min(block.len() as u64) as usize;
                        pattern(seed, off, &mut block[..k]);
                        c.stream.write_all(&block[..k])?;
                        off += k as u64;
                    }
                }
                Step::PatternChunked { seed, len } => {
                    let mut block = vec![0u8; 64 * 1024];
                    let mut off = 0;
                    while off < len {
                        let k = (len - off).min(block.len() as u64) as usize;
                        pattern(seed, off, &mut block[..k]);
                        c.stream.write_all(format!("{k:x}\r\n").as_bytes())?;
                        c.stream.write_all(&block[..k])?;
                        c.stream.write_all(b"\r\n")?;
                        off += k as u64;
                    }
                }
                Step::HalfClose => {
                    let _ = c.stream.shutdown(Shutdown::Write);
                    // Read (and drop) until the peer closes or we are stopped.
                    while c.fill()? > 0 {
                        c.buf.clear();
                    }
                    return Ok(());
                }
                Step::Close => {
                    let _ = c.stream.shutdown(Shutdown::Write);
                    // Give the FIN a moment to go out before the descriptor closes.
                    return Ok(());
                }
            }
        }
        if wants_close {
            let _ = c.stream.shutdown(Shutdown::Write);
            return Ok(());
        }
    }
    Ok(())
}
