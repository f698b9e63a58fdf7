//! Serving a static file on a kept-alive connection allocates nothing in steady state: buffers
//! come from pools, the access line is built in a reused buffer, the file cache is hit. Nor does
//! forwarding a request through the proxy with a pooled upstream connection: the relay and its
//! buffers are reused, the heads are written into them.
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

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNT_HERE: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNT_HERE.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNT_HERE.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Sends `n` requests one at a time and reads each whole answer into a fixed buffer.
fn requests(sock: &mut TcpStream, n: usize, req: &[u8], status: &[u8], expect: &[u8]) {
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
        assert!(
            buf.starts_with(status),
            "{:?}",
            String::from_utf8_lossy(&buf[..got])
        );
    }
}

/// The tests share one counter: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Serves `req` 1,000 times to warm up, then 10,000 times counting the server thread's
/// allocations.
fn allocations(
    tag: &str,
    tweak: impl FnOnce(&mut Config, &std::path::Path),
    req: &[u8],
    status: &[u8],
    expect: &[u8],
) -> usize {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = std::env::temp_dir().join(format!("edgeserve-alloc-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), b"Hello, World!").unwrap();

    let mut cfg = Config {
        listen: vec![edgeserve::config::Listen::plain(
            "127.0.0.1:0".parse().unwrap(),
        )],
        root: root.clone(),
        access_log: AccessLog::Off,
        // The cache must not expire during the run, or the revalidation would allocate.
        cache_valid: Duration::from_secs(3600),
        ..Config::default()
    };
    tweak(&mut cfg, &root);
    let server = Server::bind(cfg).unwrap();
    let addr = server.local_addr();
    let handle = server.handle();
    let thread = std::thread::spawn(move || {
        COUNT_HERE.with(|c| c.set(true));
        server.run()
    });

    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.set_nodelay(true).unwrap();
    requests(&mut sock, 1000, req, status, expect);
    let before = ALLOCS.load(Ordering::Relaxed);
    // The first requests fill the pools and the cache: the counter sees the server thread.
    assert!(
        before > 0,
        "no allocation counted on the server thread at all"
    );
    requests(&mut sock, 10_000, req, status, expect);
    let during = ALLOCS.load(Ordering::Relaxed) - before;

    handle.shutdown();
    thread.join().unwrap().unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    ALLOCS.store(0, Ordering::Relaxed);
    during
}

#[test]
fn steady_state_serving_allocates_nothing() {
    let during = allocations(
        "plain",
        |_, _| {},
        b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"Hello, World!",
    );
    assert_eq!(
        during, 0,
        "{during} allocations on the server thread for 10,000 requests"
    );
}

/// The web UI's features cost no allocation per request either: a precompressed variant chosen
/// by Accept-Encoding with extra headers, and an error page.
#[test]
fn precompressed_headers_and_error_pages_allocate_nothing() {
    let webui = |c: &mut Config, root: &std::path::Path| {
        std::fs::write(root.join("hello.txt.gz"), b"GZIPPED").unwrap();
        std::fs::write(root.join("404.html"), b"<p>missing</p>").unwrap();
        c.precompressed = true;
        c.headers = vec![edgeserve::config::ExtraHeader {
            prefix: "/".into(),
            line: "Cache-Control: no-cache".into(),
        }];
        c.error_pages = vec![(404, "/404.html".into())];
    };
    let during = allocations(
        "variant",
        webui,
        b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"GZIPPED",
    );
    assert_eq!(during, 0, "{during} allocations for 10,000 variants");
    let during = allocations(
        "errpage",
        webui,
        b"GET /nothing-here HTTP/1.1\r\nHost: t\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\n",
        b"<p>missing</p>",
    );
    assert_eq!(during, 0, "{during} allocations for 10,000 error pages");
}

/// A proxied request, forwarded on a pooled upstream connection, allocates nothing on the
/// proxy's thread (it made 15 allocations before the relay was pooled).
#[test]
fn steady_state_proxying_allocates_nothing() {
    // The upstream runs on a thread of its own, which is not counted.
    let up_root =
        std::env::temp_dir().join(format!("edgeserve-alloc-upstream-{}", std::process::id()));
    std::fs::create_dir_all(up_root.join("api")).unwrap();
    std::fs::write(up_root.join("api/hello.txt"), b"Hello, World!").unwrap();
    let upstream = Server::bind(Config {
        listen: vec![edgeserve::config::Listen::plain(
            "127.0.0.1:0".parse().unwrap(),
        )],
        root: up_root.clone(),
        access_log: AccessLog::Off,
        cache_valid: Duration::from_secs(3600),
        ..Config::default()
    })
    .unwrap();
    let up_addr = upstream.local_addr();
    let up_handle = upstream.handle();
    let up_thread = std::thread::spawn(move || upstream.run());
    let during = allocations(
        "proxy",
        |c, _| {
            c.proxies = vec![edgeserve::config::Route {
                prefix: "/api".into(),
                upstreams: vec![up_addr],
            }];
            // The pooled connection must not age out during the run.
            c.proxy_idle_timeout = Duration::from_secs(3600);
        },
        // A browser-like head: a Connection field and others (the answer has its own).
        b"GET /api/hello.txt HTTP/1.1\r\nHost: t\r\nUser-Agent: alloc-test\r\n\
          Accept: */*\r\nConnection: keep-alive\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"Hello, World!",
    );
    up_handle.shutdown();
    up_thread.join().unwrap().unwrap();
    std::fs::remove_dir_all(&up_root).unwrap();
    assert_eq!(
        during, 0,
        "{during} allocations on the proxy's thread for 10,000 proxied requests"
    );
}
