//! Serving a static file on a kept-alive connection allocates nothing in steady state: buffers
//! come from pools, the access line is built in a reused buffer, the file cache is hit. Nor does
//! forwarding a request through the proxy on a kept-alive connection with a pooled upstream
//! connection: the relay and its buffers are reused, the heads are written into them.
//! A counting global allocator counts the allocations made on the server's thread only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use edgeserve::config::AccessLog;
use edgeserve::{Config, Server};

struct Counting;

/// One counter per test (they run in parallel): the static server's, the proxy's.
static COUNTS: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];
const STATIC: usize = 0;
const PROXY: usize = 1;

thread_local! {
    /// The counter this thread's allocations go to, if any.
    static COUNT_INTO: Cell<Option<usize>> = const { Cell::new(None) };
}

fn count() {
    if let Some(i) = COUNT_INTO.with(Cell::get) {
        COUNTS[i].fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Sends `n` requests one at a time and reads each whole answer into a fixed buffer.
fn requests(sock: &mut TcpStream, n: usize, expect: &[u8]) {
    requests_for(
        sock,
        b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n",
        n,
        expect,
    )
}

fn requests_for(sock: &mut TcpStream, req: &[u8], n: usize, expect: &[u8]) {
    let mut buf = [0u8; 1024];
    for _ in 0..n {
        sock.write_all(req).unwrap();
        let mut got = 0;
        // The answer is small and ends with the body; read until it is all here.
        while !buf[..got].ends_with(expect) {
            let k = sock.read(&mut buf[got..]).unwrap();
            assert!(k > 0, "server closed the connection");
            got += k;
        }
        assert!(buf.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
}

#[test]
fn steady_state_serving_allocates_nothing() {
    let root = std::env::temp_dir().join(format!("edgeserve-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), b"Hello, World!").unwrap();

    let cfg = Config {
        listen: vec![edgeserve::config::Listen::plain(
            "127.0.0.1:0".parse().unwrap(),
        )],
        root: root.clone(),
        access_log: AccessLog::Off,
        // The cache must not expire during the run, or the revalidation would allocate.
        cache_valid: Duration::from_secs(3600),
        ..Config::default()
    };
    let server = Server::bind(cfg).unwrap();
    let addr = server.local_addr();
    let handle = server.handle();
    let thread = std::thread::spawn(move || {
        COUNT_INTO.with(|c| c.set(Some(STATIC)));
        server.run()
    });

    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.set_nodelay(true).unwrap();
    requests(&mut sock, 1000, b"Hello, World!");
    let before = COUNTS[STATIC].load(Ordering::Relaxed);
    // The first requests fill the pools and the cache: the counter sees the server thread.
    assert!(
        before > 0,
        "no allocation counted on the server thread at all"
    );
    requests(&mut sock, 10_000, b"Hello, World!");
    let during = COUNTS[STATIC].load(Ordering::Relaxed) - before;

    handle.shutdown();
    thread.join().unwrap().unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    assert_eq!(
        during, 0,
        "{during} allocations on the server thread for 10,000 requests"
    );
}

#[test]
fn steady_state_proxying_allocates_nothing() {
    let root = std::env::temp_dir().join(format!("edgeserve-alloc-proxy-{}", std::process::id()));
    std::fs::create_dir_all(root.join("api")).unwrap();
    std::fs::write(root.join("api/hello.txt"), b"Hello, World!").unwrap();
    let base = Config {
        listen: vec![edgeserve::config::Listen::plain(
            "127.0.0.1:0".parse().unwrap(),
        )],
        root: root.clone(),
        access_log: AccessLog::Off,
        cache_valid: Duration::from_secs(3600),
        ..Config::default()
    };
    // The upstream runs on a thread of its own, which is not counted.
    let upstream = Server::bind(base.clone()).unwrap();
    let up_addr = upstream.local_addr();
    let up_handle = upstream.handle();
    let up_thread = std::thread::spawn(move || upstream.run());
    let proxy = Server::bind(Config {
        proxies: vec![edgeserve::config::Route {
            prefix: "/api".into(),
            upstreams: vec![up_addr],
        }],
        // The pooled connection must not age out during the run.
        proxy_idle_timeout: Duration::from_secs(3600),
        ..base
    })
    .unwrap();
    let addr = proxy.local_addr();
    let handle = proxy.handle();
    let thread = std::thread::spawn(move || {
        COUNT_INTO.with(|c| c.set(Some(PROXY)));
        proxy.run()
    });

    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.set_nodelay(true).unwrap();
    // A browser-like head: a Connection field, several others (the upstream's answer has its own).
    const REQ: &[u8] = b"GET /api/hello.txt HTTP/1.1\r\nHost: t\r\nUser-Agent: alloc-test\r\n\
        Accept: */*\r\nConnection: keep-alive\r\n\r\n";
    requests_for(&mut sock, REQ, 200, b"Hello, World!");
    let before = COUNTS[PROXY].load(Ordering::Relaxed);
    assert!(
        before > 0,
        "no allocation counted on the proxy's thread at all"
    );
    let n = 5000;
    requests_for(&mut sock, REQ, n, b"Hello, World!");
    let during = COUNTS[PROXY].load(Ordering::Relaxed) - before;

    handle.shutdown();
    thread.join().unwrap().unwrap();
    up_handle.shutdown();
    up_thread.join().unwrap().unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    assert_eq!(
        during,
        0,
        "{during} allocations on the proxy's thread for {n} proxied requests ({:.2} each)",
        during as f64 / n as f64
    );
}
