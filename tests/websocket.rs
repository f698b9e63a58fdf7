//! WebSocket (and any `Upgrade`) through the reverse proxy: the acceptance tests of issue "One
//! connection, more than one protocol", item 5.
//!
//! A real client and a real server from the Python `websockets` package (`tests/ws/client.py`,
//! `tests/ws/echo_server.py`; `pip install websockets`) talk through the binary started with
//! `--proxy /ws/=127.0.0.1:PORT`; the byte-level cases (half-close, bytes pipelined behind the
//! heads, a non-101 answer) use raw sockets against a scripted upstream written here.
//!
//! `harness_works_without_the_proxy` runs the same scenarios with nothing in between, so a broken
//! harness is told apart from a broken proxy. Every socket has timeouts, every child process a
//! wait limit, every Python scenario its own timeout.
#![cfg(feature = "proxy")]

mod common;
#[path = "common/upstream.rs"]
mod upstream;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{BinaryServer, Client, IO_TIMEOUT, Site, find, wait_timeout};

const WS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws");
const HELLO: &[u8] = b"Hello, World!\n";

// ---------------------------------------------------------------------------------------------
// Python: the `websockets` package, the echo server, the client scenarios
// ---------------------------------------------------------------------------------------------

/// The installed `websockets` version; panics with the fix when the package is missing.
fn require_websockets() -> &'static str {
    static VERSION: OnceLock<Result<String, String>> = OnceLock::new();
    let r = VERSION.get_or_init(|| {
        let child = Command::new("python3")
            .args([
                "-c",
                "import websockets, sys; sys.stdout.write(websockets.__version__)",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return Err(format!("python3 could not be started: {e}")),
        };
        let (out, err) = drain_pipes(&mut child);
        match wait_timeout(&mut child, Duration::from_secs(30)) {
            Some(s) if s.success() => Ok(join_text(out)),
            Some(_) => Err(join_text(err)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err("python3 -c 'import websockets' did not finish in 30 s".into())
            }
        }
    });
    match r {
        Ok(v) => v,
        Err(e) => panic!(
            "the WebSocket tests need the Python package `websockets`: run \
             `python3 -m pip install websockets` (pip install websockets). \
             `python3 -c \"import websockets\"` failed: {}",
            e.trim()
        ),
    }
}

/// Reader threads for a child's stdout and stderr (so a chatty child never blocks on a full
/// pipe).
fn drain_pipes(child: &mut Child) -> (JoinHandle<Vec<u8>>, JoinHandle<Vec<u8>>) {
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let a = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let b = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    (a, b)
}

fn join_text(h: JoinHandle<Vec<u8>>) -> String {
    String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
}

/// `tests/ws/echo_server.py` as a child: its port from the `PORT <n>` line, then its event
/// lines (`OPEN`, `CLOSED ... code=N`, `STALLED`, `FLOOD`) collected. Killed on drop.
struct EchoServer {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl EchoServer {
    fn start() -> EchoServer {
        require_websockets();
        let mut child = Command::new("python3")
            .arg(format!("{WS_DIR}/echo_server.py"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3 tests/ws/echo_server.py");
        let out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => sink.lock().unwrap().push(l),
                    Err(_) => break,
                }
            }
        });
        let esink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                esink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        let mut server = EchoServer {
            child,
            port: 0,
            lines,
            stderr,
        };
        let line = server.wait_line(|l| l.starts_with("PORT "), Duration::from_secs(20));
        let Some(line) = line else {
            let _ = server.child.kill();
            panic!(
                "echo_server.py printed no PORT line; stderr: {}",
                server.stderr_text()
            );
        };
        server.port = line[5..].trim().parse().expect("PORT <n>");
        server
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `ws://127.0.0.1:PORT{path}` straight to the echo server.
    fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The first event line matching `pred`, waiting at most `limit`.
    fn wait_line(&self, pred: impl Fn(&str) -> bool, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The `CLOSED <path> code=N ...` line of `path`, waiting at most `limit`; panics without.
    #[track_caller]
    fn closed_code(&self, path: &str, limit: Duration) -> u16 {
        let prefix = format!("CLOSED {path} ");
        let line = self
            .wait_line(|l| l.starts_with(&prefix), limit)
            .unwrap_or_else(|| {
                panic!(
                    "the echo server did not see {path} close within {limit:?}; its events: {:?}",
                    self.lines()
                )
            });
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("code="))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad CLOSED line {line:?}"))
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one `client.py` run printed.
#[derive(Debug)]
struct ClientRun {
    ok: bool,
    line: String,
    stderr: String,
}

/// Runs `client.py SCENARIO --url URL ARGS...`, killed after `limit`.
fn run_client(scenario: &str, url: &str, args: &[&str], limit: Duration) -> ClientRun {
    require_websockets();
    let py_timeout = format!("{}", limit.as_secs().saturating_sub(5).max(5));
    let mut child = Command::new("python3")
        .arg(format!("{WS_DIR}/client.py"))
        .args([scenario, "--url", url, "--timeout", &py_timeout])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3 tests/ws/client.py");
    let (out, err) = drain_pipes(&mut child);
    let status = wait_timeout(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = join_text(out);
    let stderr = join_text(err);
    let line = stdout.lines().last().unwrap_or("").to_string();
    match status {
        Some(s) => ClientRun {
            ok: s.success() && line.starts_with("OK "),
            line,
            stderr,
        },
        None => ClientRun {
            ok: false,
            line: format!("client.py {scenario} killed after {limit:?} (output: {line:?})"),
            stderr,
        },
    }
}

/// Runs a scenario and panics with its reason unless it printed `OK`.
#[track_caller]
fn client_ok(scenario: &str, url: &str, args: &[&str], limit: Duration) -> String {
    let r = run_client(scenario, url, args, limit);
    assert!(
        r.ok,
        "client.py {scenario} {args:?} against {url}: {}\nstderr (tail): {}",
        r.line,
        tail(&r.stderr, 1500)
    );
    r.line
}

fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

// ---------------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------------

/// The binary with `--proxy /ws/=UPSTREAM` and `extra` flags, over a site with `/hello.txt`.
struct Front {
    server: BinaryServer,
    _site: Site,
}

impl Front {
    fn start(upstream: SocketAddr, extra: &[&str]) -> Front {
        let site = Site::new("ws");
        site.write("hello.txt", HELLO);
        let route = format!("/ws/={upstream}");
        let mut args = vec!["--proxy", route.as_str()];
        args.extend_from_slice(extra);
        let server = BinaryServer::start(&site.root(), &args);
        Front {
            server,
            _site: site,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// `ws://` URL of `path` through the proxy.
    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.server.addr)
    }

    fn client(&self) -> Client {
        self.server.client()
    }

    /// Resident memory of the server process, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.server.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    #[track_caller]
    fn assert_running(&mut self, context: &str) {
        assert!(
            self.server.is_running(),
            "{context}: the server exited: {}",
            self.server.stderr()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket bytes
// ---------------------------------------------------------------------------------------------

/// A WebSocket upgrade request (RFC 6455's sample key).
fn upgrade_req(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// The answer to [`upgrade_req`]'s key.
const SWITCH: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// A masked (client) text frame of fewer than 126 bytes.
fn text_frame(text: &str) -> Vec<u8> {
    assert!(text.len() < 126);
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x81, 0x80 | text.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads one unmasked (server) text frame of fewer than 126 bytes.
#[track_caller]
fn read_text_frame(c: &mut Client) -> String {
    let h = c.take(2);
    assert_eq!(h[0], 0x81, "expected a final text frame, got {h:?}");
    assert!(h[1] < 126, "expected a short unmasked frame, got {h:?}");
    String::from_utf8(c.take(h[1] as usize)).expect("UTF-8 text frame")
}

/// Opens a tunnel through `front` to the echo server at `path` (101 checked) and proves it with
/// one echoed frame.
#[track_caller]
fn open_raw_tunnel(front: &Front, path: &str) -> Client {
    let mut c = front.client();
    c.send(&upgrade_req(path));
    let r = c.head();
    assert_eq!(r.status, 101, "upgrade through the proxy: {r:?}");
    c.send(&text_frame("are you there"));
    assert_eq!(read_text_frame(&mut c), "are you there");
    c
}

// ---------------------------------------------------------------------------------------------
// A scripted raw upstream
// ---------------------------------------------------------------------------------------------

type Script = dyn Fn(&mut TcpStream, &str, Vec<u8>) -> Result<String, String> + Send + Sync;

/// Accepts connections on 127.0.0.1:0; on each, reads one request head and runs the script with
/// the stream, the head and the bytes that came after it. Records every head and every script's
/// outcome.
struct RawUpstream {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    outcomes: Arc<Mutex<Vec<Result<String, String>>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl RawUpstream {
    fn start(
        script: impl Fn(&mut TcpStream, &str, Vec<u8>) -> Result<String, String> + Send + Sync + 'static,
    ) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (h, o, s) = (Arc::clone(&heads), Arc::clone(&outcomes), Arc::clone(&stop));
        let accept = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let mut stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => break,
                };
                let (h, o, script) = (Arc::clone(&h), Arc::clone(&o), Arc::clone(&script));
                std::thread::spawn(move || {
                    stream.set_nonblocking(false).unwrap();
                    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                    let mut buf = Vec::new();
                    let outcome = match read_head(&mut stream, &mut buf) {
                        Ok(head) => {
                            h.lock().unwrap().push(head.clone());
                            script(&mut stream, &head, buf)
                        }
                        Err(e) => Err(format!("reading the request head: {e}")),
                    };
                    o.lock().unwrap().push(outcome);
                });
            }
        });
        RawUpstream {
            addr,
            heads,
            outcomes,
            stop,
            accept: Some(accept),
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// The outcome of the first script run, waiting at most `limit`; panics on an error.
    #[track_caller]
    fn script_ok(&self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(r) = self.outcomes.lock().unwrap().first() {
                match r {
                    Ok(s) => return s.clone(),
                    Err(e) => panic!("the upstream's script failed: {e}"),
                }
            }
            assert!(
                Instant::now() < deadline,
                "the upstream's script did not finish within {limit:?}; heads: {:?}",
                self.heads()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

/// Reads until the end of a head (CRLFCRLF); returns the head and leaves what follows in `buf`.
fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<String, String> {
    let deadline = Instant::now() + IO_TIMEOUT * 2;
    loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..i + 4).collect();
            return String::from_utf8(head).map_err(|_| "head is not UTF-8".to_string());
        }
        if buf.len() > 64 * 1024 || Instant::now() > deadline {
            return Err(format!(
                "no complete head: {:?}",
                String::from_utf8_lossy(buf)
            ));
        }
        let mut chunk = [0u8; 8192];
        match read_retrying(s, &mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "EOF before a complete head: {:?}",
                    String::from_utf8_lossy(buf)
                ));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

fn read_retrying(s: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut tries = 0;
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted && tries < 1000 => tries += 1,
            r => return r,
        }
    }
}

/// Reads until `buf` holds at least `n` bytes.
fn read_at_least(s: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> Result<(), String> {
    let deadline = Instant::now() + IO_TIMEOUT * 2;
    while buf.len() < n {
        if Instant::now() > deadline {
            return Err(format!("only {} of {n} bytes in time", buf.len()));
        }
        let mut chunk = [0u8; 8192];
        match read_retrying(s, &mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "EOF after {:?}, expected {n} bytes",
                    String::from_utf8_lossy(buf)
                ));
            }
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) => {
                return Err(format!(
                    "read after {:?}: {e}",
                    String::from_utf8_lossy(buf)
                ));
            }
        }
    }
    Ok(())
}

/// Expects EOF next (no more bytes) within the socket's read timeout.
fn expect_eof(s: &mut TcpStream, what: &str) -> Result<(), String> {
    let mut chunk = [0u8; 1024];
    match read_retrying(s, &mut chunk) {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!(
            "{what}: expected EOF, got {:?}",
            String::from_utf8_lossy(&chunk[..n])
        )),
        Err(e) => Err(format!("{what}: expected EOF, read gave {e}")),
    }
}

/// True when a head has a `Connection` field with the `upgrade` token and `Upgrade: websocket`.
fn head_is_upgrade(head: &str) -> bool {
    let fields: Vec<(String, String)> = head
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase()))
        .collect();
    let upgrade = fields
        .iter()
        .any(|(n, v)| n == "upgrade" && v == "websocket");
    let connection = fields
        .iter()
        .any(|(n, v)| n == "connection" && v.split(',').any(|t| t.trim() == "upgrade"));
    upgrade && connection
}

fn has_field(head: &str, name: &str) -> bool {
    head.split("\r\n").skip(1).any(|l| {
        l.split_once(':')
            .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
    })
}

// ---------------------------------------------------------------------------------------------
// Byte-level scenarios, each run through the proxy and (in the harness check) without it
// ---------------------------------------------------------------------------------------------

/// The upstream side of "the client half-closes": read `hello`, see EOF, still send the last
/// words, close.
fn upstream_sees_client_eof() -> RawUpstream {
    RawUpstream::start(|s, head, mut rest| {
        if !head_is_upgrade(head) {
            return Err(format!("not an upgrade request: {head:?}"));
        }
        s.write_all(SWITCH).map_err(|e| e.to_string())?;
        read_at_least(s, &mut rest, 5)?;
        if rest != b"hello" {
            return Err(format!(
                "expected hello, got {:?}",
                String::from_utf8_lossy(&rest)
            ));
        }
        expect_eof(s, "after the client's shutdown")?;
        s.write_all(b"last words").map_err(|e| e.to_string())?;
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        Ok("saw EOF, sent the last words".into())
    })
}

/// The client side of "the client half-closes", against `front` (the proxy or the upstream).
fn client_half_closes(front: SocketAddr, up: &RawUpstream) {
    let mut c = Client::connect(front);
    c.send(&upgrade_req("/ws/half"));
    let r = c.head();
    assert_eq!(r.status, 101, "{r:?}");
    c.send(b"hello");
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        c.take(10),
        b"last words",
        "the upstream's bytes after our FIN"
    );
    let (rest, end) = c.read_to_close();
    assert!(rest.is_empty(), "more bytes: {rest:?}");
    end.expect("a clean EOF after the upstream closed");
    up.script_ok(Duration::from_secs(10));
}

/// The upstream side of "the upstream half-closes": send `bye` and a FIN, then still read what
/// the client sends until its EOF.
fn upstream_half_closes() -> RawUpstream {
    RawUpstream::start(|s, head, mut rest| {
        if !head_is_upgrade(head) {
            return Err(format!("not an upgrade request: {head:?}"));
        }
        let mut first = SWITCH.to_vec();
        first.extend_from_slice(b"bye");
        s.write_all(&first).map_err(|e| e.to_string())?;
        s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        read_at_least(s, &mut rest, 15)?;
        if rest != b"reply after eof" {
            return Err(format!(
                "expected the client's reply, got {:?}",
                String::from_utf8_lossy(&rest)
            ));
        }
        expect_eof(s, "after the client's own shutdown")?;
        Ok("got the reply after our FIN".into())
    })
}

fn upstream_half_close_client(front: SocketAddr, up: &RawUpstream) {
    let mut c = Client::connect(front);
    c.send(&upgrade_req("/ws/half"));
    let r = c.head();
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(c.take(3), b"bye");
    let mut b = [0u8; 64];
    match c.read_some(&mut b) {
        Ok(0) => {}
        other => panic!("expected EOF after the upstream's FIN, got {other:?}"),
    }
    c.send(b"reply after eof");
    c.stream.shutdown(Shutdown::Write).unwrap();
    up.script_ok(Duration::from_secs(10));
}

/// The upstream side of "bytes pipelined behind the heads": the 101 and early bytes in one
/// write, then the client's early bytes, then one round trip.
fn upstream_with_early_bytes() -> RawUpstream {
    RawUpstream::start(|s, head, mut rest| {
        if !head_is_upgrade(head) {
            return Err(format!("not an upgrade request: {head:?}"));
        }
        let mut first = SWITCH.to_vec();
        first.extend_from_slice(b"EARLY-UPSTREAM-BYTES");
        s.write_all(&first).map_err(|e| e.to_string())?;
        read_at_least(s, &mut rest, 18)?;
        // TCP keeps no message boundaries: the client's "ping" may come in the same read.
        let mut more = rest.split_off(18.min(rest.len()));
        if rest != b"EARLY-CLIENT-BYTES" {
            return Err(format!(
                "expected the client's early bytes, got {:?}",
                String::from_utf8_lossy(&rest)
            ));
        }
        read_at_least(s, &mut more, 4)?;
        if more != b"ping" {
            return Err(format!(
                "expected ping, got {:?}",
                String::from_utf8_lossy(&more)
            ));
        }
        s.write_all(b"pong").map_err(|e| e.to_string())?;
        Ok("early bytes both ways".into())
    })
}

fn client_with_early_bytes(front: SocketAddr, up: &RawUpstream) {
    let mut c = Client::connect(front);
    let mut first = upgrade_req("/ws/early");
    first.extend_from_slice(b"EARLY-CLIENT-BYTES");
    c.send(&first);
    let r = c.head();
    assert_eq!(r.status, 101, "{r:?}");
    assert!(
        r.header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "Upgrade in the 101: {r:?}"
    );
    assert!(
        r.header("connection").is_some_and(|v| v
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))),
        "Connection: upgrade in the 101: {r:?}"
    );
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "Sec-WebSocket-Accept in the 101: {r:?}"
    );
    assert_eq!(c.take(20), b"EARLY-UPSTREAM-BYTES");
    c.send(b"ping");
    assert_eq!(c.take(4), b"pong");
    up.script_ok(Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------------
// The harness on its own
// ---------------------------------------------------------------------------------------------

/// Every scenario's client and server, with nothing in between: when this fails, the harness is
/// broken (or `websockets` missing), not the proxy.
#[test]
fn harness_works_without_the_proxy() {
    let version = require_websockets();
    eprintln!("websockets {version}");
    let echo = EchoServer::start();
    let t = Duration::from_secs(60);
    client_ok("echo", &echo.url("/ws/h-echo"), &["--count", "2000"], t);
    client_ok("big", &echo.url("/ws/h-big"), &[], t);
    client_ok("ping", &echo.url("/ws/h-ping"), &["--count", "20"], t);
    client_ok(
        "close-client",
        &echo.url("/ws/h-cc"),
        &["--code", "4000"],
        t,
    );
    assert_eq!(echo.closed_code("/ws/h-cc", Duration::from_secs(10)), 4000);
    client_ok(
        "close-server",
        &echo.url("/ws/h-cs"),
        &["--code", "4001"],
        t,
    );
    client_ok("many", &echo.url("/ws/h-many"), &["--conns", "50"], t);
    client_ok(
        "expect-status",
        &echo.url("/ws/status/200"),
        &["--status", "200"],
        t,
    );
    // The backpressure scenarios must see a stall with only the kernel's buffers in between.
    client_ok("flood", &echo.url("/ws/h-flood"), &["--pause", "4"], t);
    client_ok("upload", &echo.url("/ws/h-upload"), &["--pause", "4"], t);
    // The expect-status scenario fails when the handshake succeeds, and reports refusals.
    let r = run_client(
        "expect-status",
        &echo.url("/ws/h-x"),
        &["--status", "200"],
        t,
    );
    assert!(!r.ok, "expect-status accepted a 101: {r:?}");
    // The byte-level scenarios against the scripted upstream directly.
    let up = upstream_sees_client_eof();
    client_half_closes(up.addr, &up);
    let up = upstream_half_closes();
    upstream_half_close_client(up.addr, &up);
    let up = upstream_with_early_bytes();
    client_with_early_bytes(up.addr, &up);
}

// ---------------------------------------------------------------------------------------------
// Through the proxy: a real client and a real server
// ---------------------------------------------------------------------------------------------

#[test]
fn ten_thousand_messages_echo_in_order() {
    let echo = EchoServer::start();
    let front = Front::start(echo.addr(), &[]);
    let line = client_ok(
        "echo",
        &front.url("/ws/echo"),
        &["--count", "10000"],
        Duration::from_secs(90),
    );
    assert!(line.contains("messages=10000"), "{line}");
    assert_eq!(echo.closed_code("/ws/echo", Duration::from_secs(10)), 1000);
}

#[test]
fn a_16_mib_binary_message_both_ways() {
    let echo = EchoServer::start();
    let front = Front::start(echo.addr(), &[]);
    client_ok(
        "big",
        &front.url("/ws/big"),
        &["--size", &(16 << 20).to_string()],
        Duration::from_secs(90),
    );
}

#[test]
fn ping_pong() {
    let echo = EchoServer::start();
    let front = Front::start(echo.addr(), &[]);
    client_ok(
        "ping",
        &front.url("/ws/ping"),
        &["--count", "50"],
        Duration::from_secs(60),
    );
}

#[test]
fn close_handshake_started_by_the_client() {
    let echo = EchoServer::start();
    let front = Front::start(echo.addr(), &[]);
    let line = client_ok(
        "close-client",
        &front.url("/ws/cc"),
        &["--code", "4000"],
        Duration::from_secs(60),
    );
    assert!(line.contains("code=4000"), "{line}");
    assert_eq!(echo.closed_code("/ws/cc", Duration::from_secs(10)), 4000);
}

#[test]
fn close_handshake_started_by_the_server() {
    let echo = EchoServer::start();
    let front = Front::start(echo.addr(), &[]);
    let line = client_ok(
        "close-server",
        &front.url("/ws/cs"),
        &["--code", "4001"],
        Duration::from_secs(60),
    );
    assert!(line.contains("code=4001"), "{line}");
    // The server got our close frame back (the echo of its own code).
    assert_eq!(echo.closed_code("/ws/cs", Duration::from_secs(10)), 4001);
}

/// 200 tunnels open at once (each waits until all are open), each echoing a few messages. With
/// `--max-conns 1000` the default `--max-tunnels` is a quarter of it, 250.
#[test]
fn two_hundred_tunnels_at_once() {
    let echo = EchoServer::start();
    let mut front = Front::start(echo.addr(), &["--max-conns", "1000"]);
    client_ok(
        "many",
        &front.url("/ws/many"),
        &["--conns", "200", "--messages", "5"],
        Duration::from_secs(120),
    );
    front.assert_running("after 200 tunnels");
    assert_eq!(common::get(front.addr(), "/hello.txt").body, HELLO);
}

/// Samples the server's RSS while `run` goes on in another thread; returns its result and the
/// largest growth over `base` in KiB.
fn max_rss_growth<T: Send + 'static>(
    front: &Front,
    base: u64,
    run: impl FnOnce() -> T + Send + 'static,
) -> (T, u64) {
    let h = std::thread::spawn(run);
    let mut peak = base;
    while !h.is_finished() {
        peak = peak.max(front.rss_kib());
        std::thread::sleep(Duration::from_millis(20));
    }
    (h.join().unwrap(), peak.saturating_sub(base))
}

/// Pushes 256 MiB through a tunnel in one direction (`scenario`: the client's "flood" asks the
/// upstream to send, "upload" sends itself) while the receiving side does not read for 6 s. The
/// sender must stall, every byte must arrive once reading resumes, and the server's RSS must not
/// grow by more than 8 MiB. Returns the upstream, for what it saw.
fn backpressure(scenario: &str, path: &str) -> EchoServer {
    let echo = EchoServer::start();
    let front = Front::start(echo.addr(), &[]);
    client_ok(
        "echo",
        &front.url("/ws/warm"),
        &["--count", "100"],
        Duration::from_secs(30),
    );
    let base = front.rss_kib();
    let url = front.url(path);
    let name = scenario.to_string();
    let (r, growth) = max_rss_growth(&front, base, move || {
        run_client(
            &name,
            &url,
            &["--pause", "6", "--stall", "1.5"],
            Duration::from_secs(150),
        )
    });
    assert!(
        r.ok,
        "{scenario}: {} (the server's RSS grew by {growth} KiB meanwhile)\nstderr: {}",
        r.line,
        tail(&r.stderr, 1500)
    );
    assert!(
        growth < 8 * 1024,
        "{scenario}: the server's RSS grew by {growth} KiB (from {base} KiB) while one side did \
         not read"
    );
    echo
}

/// The upstream floods while the client does not read: the upstream's sends stall.
#[test]
fn backpressure_upstream_to_a_client_that_stops_reading() {
    let echo = backpressure("flood", "/ws/flood");
    assert!(
        echo.wait_line(
            |l| l.starts_with("STALLED /ws/flood"),
            Duration::from_secs(1)
        )
        .is_some(),
        "the upstream never stalled: {:?}",
        echo.lines()
    );
}

/// The client floods while the upstream does not read: the client's sends stall, the upstream
/// counts every byte.
#[test]
fn backpressure_client_to_an_upstream_that_stops_reading() {
    backpressure("upload", "/ws/upload");
}

/// Nothing listens on the upstream's port: the handshake is answered 502.
#[test]
fn refused_upstream_is_502() {
    require_websockets();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let front = Front::start(port, &[]);
    client_ok(
        "expect-status",
        &front.url("/ws/refused"),
        &["--status", "502"],
        Duration::from_secs(30),
    );
    // Raw: the 502 is an ordinary answer and the connection goes on.
    let mut c = front.client();
    c.send(&upgrade_req("/ws/refused"));
    let r = c.response();
    assert_eq!(r.status, 502, "{r:?}");
    if !r.closes() {
        assert_eq!(c.get("/hello.txt").body, HELLO);
    }
}

/// The upstream answers the upgrade with 200: an ordinary response for the client, whose
/// connection then carries plain requests. The upstream did get the upgrade headers.
#[test]
fn non_101_answer_is_an_ordinary_response() {
    let up = RawUpstream::start(|s, _head, mut rest| {
        let body = b"no upgrade here\n";
        for i in 0..4 {
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            s.write_all(answer.as_bytes()).map_err(|e| e.to_string())?;
            s.write_all(body).map_err(|e| e.to_string())?;
            if i == 3 {
                break;
            }
            // Further requests on the same upstream connection, if the proxy sends any.
            let mut probe = [0u8; 1];
            if rest.is_empty() {
                match s.peek(&mut probe) {
                    Ok(0) | Err(_) => return Ok("closed by the proxy".into()),
                    Ok(_) => {}
                }
            }
            let mut chunk = [0u8; 8192];
            while find(&rest, b"\r\n\r\n").is_none() {
                match read_retrying(s, &mut chunk) {
                    Ok(0) | Err(_) => return Ok("closed by the proxy".into()),
                    Ok(n) => rest.extend_from_slice(&chunk[..n]),
                }
            }
            let end = find(&rest, b"\r\n\r\n").unwrap() + 4;
            rest.drain(..end);
        }
        Ok("answered".into())
    });
    let front = Front::start(up.addr, &[]);
    let mut c = front.client();
    c.send(&upgrade_req("/ws/not-a-websocket"));
    let r = c.response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"no upgrade here\n");
    let first = up
        .heads()
        .first()
        .cloned()
        .expect("the upstream got a request");
    assert!(
        head_is_upgrade(&first),
        "the upstream must get Upgrade and Connection: upgrade back: {first:?}"
    );
    assert!(
        has_field(&first, "sec-websocket-key"),
        "Sec-WebSocket-Key forwarded: {first:?}"
    );
    // The same client connection: a plain proxied request, then a static file.
    assert!(!r.closes(), "the 200 closed the client connection: {r:?}");
    let r = c.get("/ws/plain");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(c.get("/hello.txt").body, HELLO);
    // And the real client sees the non-101 answer as one.
    let echo = EchoServer::start();
    let front = Front::start(echo.addr(), &[]);
    client_ok(
        "expect-status",
        &front.url("/ws/status/200"),
        &["--status", "200"],
        Duration::from_secs(30),
    );
}

/// `--tunnel-timeout 1s`: a tunnel with traffic every 300 ms lives on; once idle it is closed
/// within a few seconds, and both sides see the close.
#[test]
fn idle_tunnel_times_out() {
    let echo = EchoServer::start();
    let front = Front::start(echo.addr(), &["--tunnel-timeout", "1s"]);
    let line = client_ok(
        "idle",
        &front.url("/ws/idle"),
        &[
            "--active-for",
            "3",
            "--interval",
            "0.3",
            "--expect-close-within",
            "6",
            "--min-close",
            "0.5",
        ],
        Duration::from_secs(60),
    );
    assert!(line.contains("closed_after="), "{line}");
    echo.closed_code("/ws/idle", Duration::from_secs(5));
}

#[test]
fn client_half_close_reaches_the_upstream() {
    let up = upstream_sees_client_eof();
    let front = Front::start(up.addr, &[]);
    client_half_closes(front.addr(), &up);
}

#[test]
fn upstream_half_close_reaches_the_client() {
    let up = upstream_half_closes();
    let front = Front::start(up.addr, &[]);
    upstream_half_close_client(front.addr(), &up);
}

/// The remaining half of a half-closed tunnel is not kept forever: the client sends its FIN, the
/// upstream then says nothing and keeps its socket open; the client sees the tunnel closed.
#[test]
fn half_closed_tunnel_times_out() {
    let up = RawUpstream::start(|s, _head, _rest| {
        s.write_all(SWITCH).map_err(|e| e.to_string())?;
        expect_eof(s, "the client's FIN")?;
        // Silent, socket open: only the proxy's timeout ends this tunnel.
        std::thread::sleep(Duration::from_secs(15));
        Ok("held".into())
    });
    let front = Front::start(up.addr, &["--tunnel-timeout", "1s"]);
    let mut c = front.client();
    c.send(&upgrade_req("/ws/half-idle"));
    let r = c.head();
    assert_eq!(r.status, 101, "{r:?}");
    c.stream.shutdown(Shutdown::Write).unwrap();
    let t0 = Instant::now();
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 64];
    match c.read_some(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!(
            "expected the half-closed tunnel closed within 10 s, got {other:?} after {:?}",
            t0.elapsed()
        ),
    }
}

/// Bytes in the same write as the upgrade request reach the upstream; bytes in the same write as
/// the 101 reach the client.
#[test]
fn bytes_pipelined_behind_the_heads_go_through() {
    let up = upstream_with_early_bytes();
    let front = Front::start(up.addr, &[]);
    client_with_early_bytes(front.addr(), &up);
}

/// `--max-tunnels 2`: the third upgrade is 503 while two are open, plain requests are not
/// limited, and a closed tunnel frees its place. Without the flag the limit is a quarter of
/// `--max-conns`.
#[test]
fn max_tunnels_answers_503_over_the_limit() {
    let echo = EchoServer::start();
    let front = Front::start(echo.addr(), &["--max-tunnels", "2"]);
    let a = open_raw_tunnel(&front, "/ws/held-a");
    let b = open_raw_tunnel(&front, "/ws/held-b");
    client_ok(
        "expect-status",
        &front.url("/ws/third"),
        &["--status", "503"],
        Duration::from_secs(30),
    );
    let mut c = front.client();
    c.send(&upgrade_req("/ws/third-raw"));
    let r = c.response();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(common::get(front.addr(), "/hello.txt").body, HELLO);
    drop(a);
    // The freed place: within a few seconds a new upgrade succeeds.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = run_client(
            "echo",
            &front.url("/ws/after"),
            &["--count", "3"],
            Duration::from_secs(20),
        );
        if r.ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no tunnel after one of two closed: {}",
            r.line
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(b);

    // The default: a quarter of --max-conns (40 / 4 = 10).
    let front = Front::start(echo.addr(), &["--max-conns", "40"]);
    let held: Vec<Client> = (0..10)
        .map(|i| open_raw_tunnel(&front, &format!("/ws/default-{i}")))
        .collect();
    let mut c = front.client();
    c.send(&upgrade_req("/ws/default-11"));
    let r = c.response();
    assert_eq!(r.status, 503, "the 11th tunnel with --max-conns 40: {r:?}");
    drop(held);
}

/// A request with `Upgrade` but no `Connection: upgrade` is an ordinary request, and the header
/// (hop-by-hop) is not forwarded; nor is an HTTP/1.0 request ever an upgrade.
#[test]
fn plain_request_with_upgrade_header_is_not_an_upgrade() {
    let up = upstream::Upstream::start(|_| upstream::ok("plain"));
    let front = Front::start(up.addr, &[]);
    let mut c = front.client();
    c.send(b"GET /ws/plain HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"plain"[..]), "{r:?}");
    c.send(
        b"GET /ws/plain2 HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\r\n",
    );
    let r = c.response();
    assert_eq!(r.status, 200, "{r:?}");
    let mut c10 = front.client();
    c10.send(
        b"GET /ws/http10 HTTP/1.0\r\nHost: test\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    );
    let r = c10.head();
    assert_eq!(r.status, 200, "HTTP/1.0 with Upgrade: {r:?}");
    let reqs = up.wait_requests(3, Duration::from_secs(10));
    for q in &reqs {
        assert!(
            !q.has("upgrade"),
            "Upgrade forwarded on a plain request: {q:?}"
        );
        assert!(
            !q.all("connection")
                .iter()
                .any(|v| v.to_ascii_lowercase().contains("upgrade")),
            "Connection: upgrade forwarded on a plain request: {q:?}"
        );
    }
}

/// SIGTERM with an open tunnel and `--grace 1s`: the tunnel still carries data during the grace
/// period, then is closed, and the server exits (0) within a few seconds.
#[test]
fn sigterm_closes_tunnels_after_the_grace_period() {
    let echo = EchoServer::start();
    let mut front = Front::start(echo.addr(), &["--grace", "1s"]);
    let mut c = open_raw_tunnel(&front, "/ws/grace");
    let t0 = Instant::now();
    front.server.signal(libc::SIGTERM);
    c.send(&text_frame("during grace"));
    assert_eq!(read_text_frame(&mut c), "during grace");
    let (_rest, end) = c.read_to_close();
    assert!(
        end.is_ok()
            || end
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionReset),
        "the tunnel was not closed: {end:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the tunnel closed {:?} after SIGTERM with --grace 1s",
        t0.elapsed()
    );
    let status = front
        .server
        .wait(Duration::from_secs(5))
        .unwrap_or_else(|| {
            panic!(
                "still running {:?} after SIGTERM with --grace 1s and an open tunnel",
                t0.elapsed()
            )
        });
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    echo.closed_code("/ws/grace", Duration::from_secs(10));
}

/// One access line per tunnel, written when it closes, with status 101.
#[test]
fn access_log_has_one_101_line_per_closed_tunnel() {
    let echo = EchoServer::start();
    let site = Site::new("ws-log");
    let log = site.base.path().join("access.log");
    let front = Front::start(echo.addr(), &["--access-log", log.to_str().unwrap()]);
    let lines_101 = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" 101 "))
            .map(str::to_string)
            .collect()
    };
    let wait_for = |n: usize| -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let l = lines_101();
            if l.len() >= n || Instant::now() > deadline {
                return l;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    client_ok(
        "echo",
        &front.url("/ws/log-a"),
        &["--count", "3"],
        Duration::from_secs(30),
    );
    client_ok(
        "close-server",
        &front.url("/ws/log-b"),
        &["--code", "4001"],
        Duration::from_secs(30),
    );
    let got = wait_for(2);
    assert_eq!(got.len(), 2, "101 lines after two closed tunnels: {got:?}");
    // An open tunnel has no line yet; its line comes when it closes.
    let c = open_raw_tunnel(&front, "/ws/log-c");
    std::thread::sleep(Duration::from_millis(500));
    let got = lines_101();
    assert_eq!(got.len(), 2, "a line for a tunnel still open: {got:?}");
    drop(c);
    let got = wait_for(3);
    assert_eq!(
        got.len(),
        3,
        "101 lines after three closed tunnels: {got:?}"
    );
    for (line, path) in got.iter().zip(["/ws/log-a", "/ws/log-b", "/ws/log-c"]) {
        assert!(line.contains(path), "{path} in {line:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines_101().len(), 3, "more than one line per tunnel");
}

/// The same tunnel under every server model.
#[test]
fn every_model_carries_tunnels() {
    let echo = EchoServer::start();
    for model in [
        "single",
        "proactor-pool",
        "reactor-pool",
        "sharded",
        "leader-followers",
    ] {
        let front = Front::start(echo.addr(), &["--model", model]);
        let url = front.url(&format!("/ws/model-{model}"));
        let r = run_client("echo", &url, &["--count", "500"], Duration::from_secs(60));
        assert!(r.ok, "--model {model}: {}", r.line);
        let r = run_client(
            "many",
            &front.url("/ws/many"),
            &["--conns", "20", "--messages", "3"],
            Duration::from_secs(60),
        );
        assert!(r.ok, "--model {model}, 20 tunnels: {}", r.line);
        let r = run_client(
            "close-server",
            &url,
            &["--code", "4001"],
            Duration::from_secs(60),
        );
        assert!(r.ok, "--model {model}, close: {}", r.line);
    }
}

/// A tunnel has its own upstream connection: an upgrade never goes on a pooled (kept-alive)
/// connection, and a plain request never on a tunnel's.
#[test]
fn tunnels_never_use_the_upstream_pool() {
    let up = RawUpstream::start(|s, head, mut rest| {
        let mut head = head.to_string();
        let mut nth = 0;
        loop {
            if head_is_upgrade(&head) {
                if nth > 0 {
                    return Err(format!(
                        "an upgrade on a reused upstream connection: {head:?}"
                    ));
                }
                s.write_all(SWITCH).map_err(|e| e.to_string())?;
                // Echo until EOF.
                let mut chunk = [0u8; 8192];
                if !rest.is_empty() {
                    s.write_all(&rest).map_err(|e| e.to_string())?;
                }
                loop {
                    match read_retrying(s, &mut chunk) {
                        Ok(0) => return Ok("tunnel".into()),
                        Ok(n) => s.write_all(&chunk[..n]).map_err(|e| e.to_string())?,
                        Err(e) => return Err(format!("tunnel read: {e}")),
                    }
                }
            }
            if nth > 0 && !has_field(&head, "host") {
                return Err(format!(
                    "bytes that are no request on a reused connection: {head:?}"
                ));
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
                .map_err(|e| e.to_string())?;
            nth += 1;
            match read_head(s, &mut rest) {
                Ok(h) => head = h,
                Err(_) => return Ok(format!("{nth} plain requests")),
            }
        }
    });
    let front = Front::start(up.addr, &[]);
    let mut plain = front.client();
    let r = plain.get("/ws/first");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"plain"[..]), "{r:?}");
    // The first upstream connection is now idle in the pool; the upgrade must not take it.
    let mut c = front.client();
    c.send(&upgrade_req("/ws/tunnel"));
    let r = c.head();
    assert_eq!(r.status, 101, "{r:?}");
    c.send(b"echo me");
    assert_eq!(c.take(7), b"echo me");
    assert_eq!(
        up.heads().len(),
        2,
        "the upgrade must open its own upstream connection: {:?}",
        up.heads()
    );
    // Plain requests while the tunnel is open and after it closed go elsewhere.
    assert_eq!(plain.get("/ws/second").body, b"plain");
    c.stream.shutdown(Shutdown::Write).unwrap();
    let (rest, _) = c.read_to_close();
    assert!(rest.is_empty(), "{rest:?}");
    for i in 0..3 {
        let r = front.client().get(&format!("/ws/after-{i}"));
        assert_eq!((r.status, r.body.as_slice()), (200, &b"plain"[..]), "{r:?}");
    }
    let errors: Vec<String> = up
        .outcomes
        .lock()
        .unwrap()
        .iter()
        .filter_map(|o| o.as_ref().err().cloned())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

// ---------------------------------------------------------------------------------------------
// Attacks on the tunnel (raw sockets against scripted upstreams)
// ---------------------------------------------------------------------------------------------

/// An upgrade with a body (`Upgrade: h2c` on a POST): the body goes upstream with the request,
/// and once the upstream switched, bytes flow raw both ways. Any `Upgrade` is tunnelled.
#[test]
fn an_h2c_upgrade_with_a_body_forwards_the_body_then_tunnels() {
    let up = RawUpstream::start(|s, head, mut rest| {
        let lower = head.to_ascii_lowercase();
        if !lower.contains("\r\nupgrade: h2c\r\n") || !lower.contains("\r\nconnection: upgrade\r\n")
        {
            return Err(format!("not an h2c upgrade: {head:?}"));
        }
        read_at_least(s, &mut rest, 5)?;
        if rest != b"hello" {
            return Err(format!("body: {:?}", String::from_utf8_lossy(&rest)));
        }
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        )
        .map_err(|e| e.to_string())?;
        let mut more = Vec::new();
        read_at_least(s, &mut more, 4)?;
        if more != b"ping" {
            return Err(format!("ping: {:?}", String::from_utf8_lossy(&more)));
        }
        s.write_all(b"pong").map_err(|e| e.to_string())?;
        Ok("h2c".into())
    });
    let front = Front::start(up.addr, &[]);
    let mut c = front.client();
    c.send(
        b"POST /ws/h2c HTTP/1.1\r\nHost: test\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\
HTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 5\r\n\r\nhello",
    );
    let r = c.head();
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(r.header("upgrade"), Some("h2c"), "{r:?}");
    c.send(b"ping");
    assert_eq!(c.take(4), b"pong");
    up.script_ok(Duration::from_secs(10));
}

/// A 101 without `Upgrade` is passed on as it came (as nginx does): the client judges it.
#[test]
fn a_101_without_upgrade_is_passed_on() {
    let up = RawUpstream::start(|s, _head, _rest| {
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        read_at_least(s, &mut got, 3)?;
        s.write_all(&got).map_err(|e| e.to_string())?;
        Ok("echoed".into())
    });
    let front = Front::start(up.addr, &[]);
    let mut c = front.client();
    c.send(&upgrade_req("/ws/bare-101"));
    let r = c.head();
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(r.header("upgrade"), None, "{r:?}");
    c.send(b"abc");
    assert_eq!(c.take(3), b"abc");
    up.script_ok(Duration::from_secs(10));
}

/// A 101 to a request that asked for no upgrade is a broken answer: 502.
#[test]
fn a_101_to_a_plain_request_is_502() {
    let up = RawUpstream::start(|s, _head, _rest| {
        s.write_all(SWITCH).map_err(|e| e.to_string())?;
        Ok("switched unasked".into())
    });
    let front = Front::start(up.addr, &[]);
    let mut c = front.client();
    c.send(b"GET /ws/plain HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 502, "{r:?}");
}

/// A client that resets its connection mid-tunnel: the upstream connection is closed, the
/// tunnel's place is given back (`--max-tunnels 1`: the next upgrade succeeds) and its access
/// line says 101 with the bytes each way.
#[test]
fn a_client_reset_mid_tunnel_closes_the_upstream_and_frees_the_place() {
    let up = RawUpstream::start(|s, _head, _rest| {
        s.write_all(SWITCH).map_err(|e| e.to_string())?;
        s.write_all(b"hi").map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 64];
        loop {
            match read_retrying(s, &mut chunk) {
                Ok(0) => return Ok("EOF".into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok("reset".into()),
                Err(e) => return Err(format!("no end of the upstream connection: {e}")),
            }
        }
    });
    let site = Site::new("ws-reset");
    let log = site.base.path().join("access.log");
    let front = Front::start(
        up.addr,
        &["--max-tunnels", "1", "--access-log", log.to_str().unwrap()],
    );
    let mut c = front.client();
    c.send(&upgrade_req("/ws/reset"));
    assert_eq!(c.head().status, 101);
    assert_eq!(c.take(2), b"hi");
    c.send(b"xyz");
    std::thread::sleep(Duration::from_millis(100));
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid linger struct and its size, on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&c.stream),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(c); // RST
    up.script_ok(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = front.client();
        c.send(&upgrade_req("/ws/after-reset"));
        let r = c.head();
        if r.status == 101 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reset tunnel kept its place: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("/ws/reset ")) {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no access line: {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(line.contains(" 101 2 "), "{line}");
    assert!(
        line.ends_with(&format!("upstream={} up=3", up.addr)),
        "{line}"
    );
}

/// A tunnel closed at the end of the grace period still gets its access line (written as the
/// loop closes it, flushed before the process exits).
#[test]
fn a_tunnel_closed_by_shutdown_is_logged() {
    let echo = EchoServer::start();
    let site = Site::new("ws-grace-log");
    let log = site.base.path().join("access.log");
    let mut front = Front::start(
        echo.addr(),
        &["--grace", "500ms", "--access-log", log.to_str().unwrap()],
    );
    let mut c = open_raw_tunnel(&front, "/ws/grace-log");
    front.server.signal(libc::SIGTERM);
    let _ = c.read_to_close();
    let status = front
        .server
        .wait(Duration::from_secs(5))
        .expect("exit after the grace period");
    assert!(status.success(), "{status:?}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("/ws/grace-log"))
        .collect();
    assert_eq!(lines.len(), 1, "{text:?}");
    assert!(lines[0].contains(" 101 "), "{text:?}");
}

/// The upstream closes its whole socket while the client still talks: the client gets what
/// the upstream said and its EOF; what the client sends then meets the closed upstream, and the
/// tunnel ends at once (not at the tunnel timeout).
#[test]
fn an_upstream_gone_ends_the_tunnel_when_the_client_writes() {
    let up = RawUpstream::start(|s, _head, _rest| {
        s.write_all(SWITCH).map_err(|e| e.to_string())?;
        s.write_all(b"bye").map_err(|e| e.to_string())?;
        Ok("closed".into())
    });
    let front = Front::start(up.addr, &["--tunnel-timeout", "30s"]);
    let mut c = front.client();
    c.send(&upgrade_req("/ws/gone"));
    assert_eq!(c.head().status, 101);
    assert_eq!(c.take(3), b"bye");
    let mut b = [0u8; 16];
    assert_eq!(
        c.read_some(&mut b).ok(),
        Some(0),
        "EOF after the upstream's bytes"
    );
    up.script_ok(Duration::from_secs(10));
    let t0 = Instant::now();
    let _ = c.try_send(b"more");
    std::thread::sleep(Duration::from_millis(200));
    let _ = c.try_send(b"more");
    // Our side stays open: only the proxy's close makes a send fail (a reset).
    while c.try_send(b"x").is_ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the tunnel to a closed upstream stayed open"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
