//! Shared helpers for the integration tests: temporary document roots, an in-process server that
//! stops and joins on drop, the `edgeserve` binary as a child process, and a small raw HTTP/1.1
//! client over real sockets on 127.0.0.1.
//!
//! Every socket gets read and write timeouts and every loop is bounded, so a server bug shows up
//! as a failed assertion rather than a hung test.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgeserve::{Config, Model, Server, ServerHandle};

/// Socket timeout for reads and writes: long enough for a loaded 2-core machine, short enough
/// that a hang fails the test quickly.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Temporary directories and fixture files
// ---------------------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "edgeserve-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The content of the file placed *outside* the document root; it must never be served.
pub const SECRET: &[u8] = b"TOP-SECRET-7f3a9c-do-not-serve";

/// `BASE/www` is the document root; `BASE/secret.txt` lies next to it, outside the root.
pub struct Site {
    pub base: TempDir,
}

impl Site {
    pub fn new(tag: &str) -> Site {
        let base = TempDir::new(tag);
        std::fs::create_dir(base.path().join("www")).unwrap();
        std::fs::write(base.path().join("secret.txt"), SECRET).unwrap();
        Site { base }
    }

    pub fn root(&self) -> PathBuf {
        self.base.path().join("www")
    }

    /// Writes `www/<rel>` (creating parent directories).
    pub fn write(&self, rel: &str, content: &[u8]) -> PathBuf {
        let p = self.root().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, content).unwrap();
        p
    }

    pub fn mkdir(&self, rel: &str) {
        std::fs::create_dir_all(self.root().join(rel)).unwrap();
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so large files are not compressible patterns
/// and any misplaced byte shows.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Index of the first difference between two byte strings, for readable failure messages.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or(if a.len() == b.len() {
            None
        } else {
            Some(a.len().min(b.len()))
        })
}

/// Asserts two (possibly large) bodies are equal without printing megabytes.
#[track_caller]
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if let Some(i) = first_difference(got, want) {
        panic!(
            "{what}: got {} bytes, expected {}; first difference at byte {i}",
            got.len(),
            want.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The in-process server
// ---------------------------------------------------------------------------------------------

/// The server model the suites run under: `EDGESERVE_TEST_MODEL` (default `single`), so that
/// `.ci/run` can run the same integration tests against every model.
pub fn test_model() -> Model {
    match std::env::var("EDGESERVE_TEST_MODEL") {
        Ok(name) => Model::parse(&name)
            .unwrap_or_else(|| panic!("EDGESERVE_TEST_MODEL: no model named {name:?}")),
        Err(_) => Model::Single,
    }
}

/// A config for tests: port 0, no access log, a short grace period, the model under test with
/// two threads (more threads than this machine's cores would only hide ordering bugs less).
pub fn test_config(root: &Path) -> Config {
    Config {
        listen: vec![edgeserve::config::Listen::plain(
            "127.0.0.1:0".parse().unwrap(),
        )],
        root: root.to_path_buf(),
        access_log: edgeserve::config::AccessLog::Off,
        grace: Duration::from_secs(2),
        model: test_model(),
        workers: 2,
        ..Config::default()
    }
}

/// A server on its own thread; shut down gracefully and joined on drop.
pub struct TestServer {
    /// The first listener's address.
    pub addr: SocketAddr,
    /// Every listener's address, in the order of `Config::listen`.
    pub addrs: Vec<SocketAddr>,
    handle: ServerHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl TestServer {
    pub fn start(cfg: Config) -> TestServer {
        let server = Server::bind(cfg).expect("bind test server");
        let addr = server.local_addr();
        let addrs = server.listening().iter().map(|l| l.addr).collect();
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.run());
        TestServer {
            addr,
            addrs,
            handle,
            thread: Some(thread),
        }
    }

    /// A server over `site` with the test defaults changed by `tweak`.
    pub fn with(site: &Site, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut cfg = test_config(&site.root());
        tweak(&mut cfg);
        TestServer::start(cfg)
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Stops the server and returns what `run` returned (panics if it does not stop in time).
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_inner().expect("server thread already joined")
    }

    fn stop_inner(&mut self) -> Option<io::Result<()>> {
        let thread = self.thread.take()?;
        self.handle.shutdown();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !thread.is_finished() {
            assert!(
                Instant::now() < deadline,
                "server did not stop within 20 s of shutdown"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Some(thread.join().expect("server thread panicked"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Do not turn one failure into a double panic; still stop the loop.
            self.handle.shutdown();
            return;
        }
        if let Some(Err(e)) = self.stop_inner() {
            panic!("server run() returned an error: {e}");
        }
    }
}

/// A server over `site` in `model` with two threads and the bench routes, changed by `tweak`.
pub fn model_server(site: &Site, model: Model, tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::with(site, |cfg| {
        cfg.model = model;
        cfg.workers = 2;
        cfg.bench_routes = true;
        tweak(cfg);
    })
}

/// A listener whose accept queue is full, so a new connection's SYN goes unanswered.
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

pub fn blackhole() -> Blackhole {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // Linux lets listen(2) be called again to change the backlog: 0 queues one connection.
    // SAFETY: listen(2) on a descriptor the listener owns.
    let r = unsafe { libc::listen(listener.as_raw_fd(), 0) };
    assert_eq!(r, 0, "listen: {}", io::Error::last_os_error());
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                return Blackhole {
                    addr,
                    _listener: listener,
                    _fillers: fillers,
                };
            }
            Err(e) => panic!("filling the accept queue: {e}"),
        }
    }
    panic!("could not fill the accept queue of a listen(0) socket");
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// Runs the binary with `args` and waits for it (for flag errors and other early exits).
pub fn run_binary(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgeserve"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn edgeserve");
    let status = wait_timeout(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("edgeserve {args:?} did not exit within 10 s");
    });
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, out, err)
}

/// Polls a child until it exits or `limit` passes.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The binary running as a server: its address is read from the `listening on` line on stderr,
/// and the rest of stderr is collected for assertions. Killed (by its pid) on drop if still up.
pub struct BinaryServer {
    pub child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<u8>>>,
    drain: Option<JoinHandle<()>>,
}

impl BinaryServer {
    pub fn start(root: &Path, extra: &[&str]) -> BinaryServer {
        BinaryServer::start_with_nofile(root, extra, None)
    }

    /// Starts the binary; with `nofile`, RLIMIT_NOFILE (soft and hard) is lowered in the child
    /// before exec.
    pub fn start_with_nofile(
        root: &Path,
        extra: &[&str],
        nofile: Option<libc::rlim_t>,
    ) -> BinaryServer {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgeserve"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--root")
            .arg(root)
            .args(["--access-log", "off"]);
        BinaryServer::launch(cmd, extra, nofile)
    }

    /// The binary with the model under test and `args` only (listeners and root from a config
    /// file, say).
    pub fn start_args(args: &[&str]) -> BinaryServer {
        BinaryServer::launch(Command::new(env!("CARGO_BIN_EXE_edgeserve")), args, None)
    }

    fn launch(mut cmd: Command, extra: &[&str], nofile: Option<libc::rlim_t>) -> BinaryServer {
        cmd.args(["--model", test_model().name(), "--workers", "2"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            // SAFETY: the closure only calls setrlimit(2), which is async-signal-safe, on a
            // stack value; it allocates nothing and touches no lock.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn edgeserve");
        let stderr = child.stderr.take().unwrap();
        let collected = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&collected);
        let drain = std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut sent = false;
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                sink.lock().unwrap().extend_from_slice(&line);
                if !sent {
                    let text = String::from_utf8_lossy(&line);
                    if let Some(rest) = text.split("listening on http://").nth(1)
                        && let Ok(addr) = rest.trim().parse::<SocketAddr>()
                    {
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = drain.join();
                panic!(
                    "edgeserve printed no 'listening on' line; stderr: {}",
                    String::from_utf8_lossy(&collected.lock().unwrap())
                );
            }
        };
        BinaryServer {
            child,
            addr,
            stderr: collected,
            drain: Some(drain),
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill: {}", io::Error::last_os_error());
    }

    /// Stops the process (SIGSTOP) and waits until the kernel reports it stopped, so that what
    /// happens next (connections, bytes, signals) queues up in a known order for it.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        let stat = format!("/proc/{}/stat", self.child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&stat).expect("read /proc/PID/stat");
            // The state is the first field after the parenthesised command name.
            let state = text
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?");
            if state == "T" {
                return;
            }
            assert!(Instant::now() < deadline, "process did not stop: {state}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Waits for the process to exit; `None` if it is still running after `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let s = wait_timeout(&mut self.child, limit);
        if s.is_some()
            && let Some(d) = self.drain.take()
        {
            let _ = d.join();
        }
        s
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// What the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(d) = self.drain.take() {
            let _ = d.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the only header called `name` (case-insensitive); panics if repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut found = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = found.next().map(|(_, v)| v.as_str());
        assert!(found.next().is_none(), "header {name} repeated: {self:?}");
        first
    }

    /// True when the response announces that the connection closes after it.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("bad Content-Length {v:?}"))
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection: writes raw bytes, reads responses (buffering what follows one).
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to test server");
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects with a small SO_RCVBUF set before `connect`, so the TCP window stays tiny.
    pub fn connect_small_rcvbuf(addr: SocketAddr, rcvbuf: i32) -> Client {
        let SocketAddr::V4(v4) = addr else {
            panic!("IPv4 only")
        };
        // SAFETY: plain socket calls on a descriptor we create and, on success, hand to exactly
        // one owner (TcpStream); every pointer is to a live, correctly sized local.
        let stream = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
            let stream = TcpStream::from_raw_fd(fd);
            let r = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&rcvbuf as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            );
            assert_eq!(r, 0, "SO_RCVBUF: {}", io::Error::last_os_error());
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // A signal can interrupt connect; the handshake then goes on and a retry reports
            // EALREADY (still going) or EISCONN (done).
            let mut tries = 0;
            loop {
                let r = libc::connect(
                    fd,
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
                let e = io::Error::last_os_error();
                match (r, e.raw_os_error()) {
                    (0, _) | (_, Some(libc::EISCONN)) => break,
                    (_, Some(libc::EINTR | libc::EALREADY)) if tries < 1000 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    _ => panic!("connect: {e}"),
                }
            }
            stream
        };
        Client::from_stream(stream)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send request");
    }

    /// Writes; `Err` if the server has gone (reset or broken pipe).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.response()
    }

    /// One `read` on the socket, retried when a signal interrupts it. (SIGCHLD from the children
    /// of other tests can land on any thread, and a read with a timeout then fails with EINTR.)
    pub fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_retrying(&mut self.stream, buf)
    }

    /// Reads more bytes into the buffer; 0 at EOF. Panics on a timeout or an error.
    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 64 * 1024];
        match read_retrying(&mut self.stream, &mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e) => panic!(
                "read failed ({e}) with {} bytes buffered: {:?}",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf[..self.buf.len().min(300)])
            ),
        }
    }

    /// Like `fill`, but errors (timeout, reset) are returned.
    fn try_fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = read_retrying(&mut self.stream, &mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response head (status line and headers).
    pub fn head(&mut self) -> Response {
        self.try_head()
            .unwrap_or_else(|e| panic!("no response head: {e}"))
    }

    /// Reads one response head; `Err` on EOF, reset or timeout before a whole head arrived.
    pub fn try_head(&mut self) -> io::Result<Response> {
        let deadline = Instant::now() + IO_TIMEOUT * 2;
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "head too slow"));
            }
            if self.try_fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "EOF before a complete response head; got {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        };
        let head: Vec<u8> = self.buf.drain(..end).collect();
        Ok(parse_head(&head))
    }

    /// Reads one response to a non-HEAD request: the head, then a Content-Length body (none for
    /// 1xx, 204 and 304).
    pub fn response(&mut self) -> Response {
        let mut r = self.head();
        let len = if r.status == 304 || r.status == 204 || r.status < 200 {
            0
        } else {
            r.content_length()
                .unwrap_or_else(|| panic!("response without Content-Length: {r:?}"))
        };
        r.body = self.take(len as usize);
        r
    }

    /// Exactly `n` more bytes.
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.buf.len() < n {
            assert!(
                Instant::now() < deadline,
                "body too slow: {} of {n} bytes",
                self.buf.len()
            );
            if self.fill() == 0 {
                panic!(
                    "EOF after {} of {n} body bytes: {:?}",
                    self.buf.len(),
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])
                );
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Reads until EOF (or reset), returning everything not yet consumed. Bounded by time.
    pub fn read_to_close(&mut self) -> (Vec<u8>, io::Result<()>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let result = loop {
            if Instant::now() > deadline {
                break Err(io::Error::new(io::ErrorKind::TimedOut, "no EOF in 30 s"));
            }
            match self.try_fill() {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        (std::mem::take(&mut self.buf), result)
    }

    /// Asserts the server closes the connection with nothing more to say: no buffered bytes and
    /// the next read is EOF.
    #[track_caller]
    pub fn expect_closed(&mut self, context: &str) {
        assert!(
            self.buf.is_empty(),
            "{context}: unexpected bytes after the response: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        match self.try_fill() {
            Ok(0) => {}
            Ok(_) => panic!(
                "{context}: expected the connection closed, got more bytes: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                panic!("{context}: connection reset instead of a clean close")
            }
            Err(e) => panic!("{context}: expected the connection closed, read gave: {e}"),
        }
    }

    /// Asserts nothing arrives within `wait` and the connection is still open.
    #[track_caller]
    pub fn expect_silence(&mut self, wait: Duration, context: &str) {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let r = self.try_fill();
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        match r {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Ok(0) => panic!("{context}: connection closed, expected it to stay open"),
            Ok(_) => panic!(
                "{context}: unexpected bytes: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => panic!("{context}: {e}"),
        }
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// `read`, retried on EINTR (a bounded number of times).
pub fn read_retrying(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut tries = 0;
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted && tries < 1000 => tries += 1,
            r => return r,
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a response head; panics (with the bytes) on anything malformed.
pub fn parse_head(head: &[u8]) -> Response {
    let text = std::str::from_utf8(head)
        .unwrap_or_else(|_| panic!("response head is not UTF-8: {head:?}"));
    let mut lines = text
        .strip_suffix("\r\n\r\n")
        .unwrap_or_else(|| panic!("head does not end in CRLFCRLF: {text:?}"))
        .split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_string();
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let reason = parts.next().unwrap_or_default().to_string();
    assert_eq!(version, "HTTP/1.1", "status line {status_line:?}");
    let headers = lines
        .map(|l| {
            let (n, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {l:?} in {text:?}"));
            assert!(
                !n.is_empty() && !n.contains(' '),
                "bad header name in {l:?}"
            );
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    Response {
        version,
        status,
        reason,
        headers,
        body: Vec::new(),
    }
}

/// One GET on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    Client::connect(addr).get(path)
}

/// An address on 127.0.0.1 that is bound and listening (so another bind to it fails).
pub fn occupied_port() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// Opens connections to `server`, each getting `/hello.txt` (whose body is `hello`), until one is
/// not answered within a second (the server is out of descriptors). Returns the connections that
/// were served, `first` among them, and the one left waiting, if any.
pub fn hold_until_unserved(
    server: &BinaryServer,
    first: Client,
    hello: &[u8],
) -> (Vec<Client>, Option<Client>) {
    let mut held = vec![first];
    for i in 0..200 {
        let mut c = server.client();
        c.send(b"GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n");
        c.stream
            .set_read_timeout(Some(Duration::from_millis(1000)))
            .unwrap();
        match c.try_head() {
            Ok(r) => {
                assert_eq!(r.status, 200, "connection {i}");
                assert_eq!(c.take(hello.len()), hello);
                c.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                held.push(c);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                c.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                return (held, Some(c));
            }
            Err(e) => panic!("connection {i}: {e}"),
        }
    }
    (held, None)
}

/// Raises this process's soft descriptor limit to its hard limit; returns the new soft limit.
pub fn raise_nofile() -> libc::rlim_t {
    edgeserve::service::raise_nofile_limit().expect("getrlimit")
}
