//! Serving a static file on a kept-alive connection allocates nothing in steady state: buffers
//! come from pools, the access line is built in a reused buffer, the file cache is hit.
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
fn requests(sock: &mut TcpStream, n: usize, expect: &[u8]) {
    const REQ: &[u8] = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut buf = [0u8; 1024];
    for _ in 0..n {
        sock.write_all(REQ).unwrap();
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
        COUNT_HERE.with(|c| c.set(true));
        server.run()
    });

    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.set_nodelay(true).unwrap();
    requests(&mut sock, 1000, b"Hello, World!");
    let before = ALLOCS.load(Ordering::Relaxed);
    // The first requests fill the pools and the cache: the counter sees the server thread.
    assert!(
        before > 0,
        "no allocation counted on the server thread at all"
    );
    requests(&mut sock, 10_000, b"Hello, World!");
    let during = ALLOCS.load(Ordering::Relaxed) - before;

    handle.shutdown();
    thread.join().unwrap().unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    assert_eq!(
        during, 0,
        "{during} allocations on the server thread for 10,000 requests"
    );
}
