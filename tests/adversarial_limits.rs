//! Adversarial tests of the server's resources: signals an operator sends, clients that hold
//! connections open without asking anything, bytes that are no request, bodies declared too
//! large. Each asserts what a client or an operator sees. In-process servers run under the model
//! `EDGESERVE_TEST_MODEL` names; the binary ones too (`BinaryServer` passes `--model`).

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{BinaryServer, Client, IO_TIMEOUT, Site, TestServer};

const HELLO: &[u8] = b"Hello, World!";

fn site() -> Site {
    let site = Site::new("adv-limits");
    site.write("hello.txt", HELLO);
    site.write("big.bin", &common::pseudo_random(4 << 20, 7));
    site
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A client of `BinaryServer` that reads a 4 MiB answer slowly enough for signals to arrive in
/// the middle of it; returns the body it got.
fn slow_download(addr: std::net::SocketAddr) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut c = Client::connect_small_rcvbuf(addr, 4096);
        c.send(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.head();
        assert_eq!(r.status, 200);
        let mut body = c.take(c.buffered());
        let deadline = Instant::now() + Duration::from_secs(20);
        while (body.len() as u64) < r.content_length().unwrap() && Instant::now() < deadline {
            let mut buf = [0u8; 64 * 1024];
            match c.read_some(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        body
    })
}

/// logrotate's `postrotate kill -HUP`: the log is reopened by name, the answer in flight
/// finishes, and SIGUSR1/SIGUSR2 kill nothing either.
#[test]
fn sighup_reopens_the_access_log_without_cutting_answers() {
    let site = site();
    let log = site.base.path().join("access.log");
    let mut server = BinaryServer::start(
        &site.root(),
        &["--access-log", log.to_str().unwrap(), "--log-level", "info"],
    );
    assert_eq!(server.client().get("/hello.txt?before").status, 200);
    let download = slow_download(server.addr);
    std::thread::sleep(Duration::from_millis(100));
    std::fs::rename(&log, log.with_extension("log.1")).unwrap();
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
        server.signal(sig);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            server.is_running(),
            "signal {sig} stopped the server: {}",
            server.stderr()
        );
    }
    assert_eq!(server.client().get("/hello.txt?after").status, 200);
    let body = download.join().unwrap();
    common::assert_same_bytes(
        &body,
        &std::fs::read(site.root().join("big.bin")).unwrap(),
        "download across SIGHUP",
    );
    // The access log is flushed once per loop turn: poll for the line, bounded.
    let deadline = Instant::now() + Duration::from_secs(5);
    let new = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("after") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(new.contains("GET /hello.txt?after"), "new log: {new:?}");
    assert!(!new.contains("before"), "new log: {new:?}");
    let old = std::fs::read_to_string(log.with_extension("log.1")).unwrap();
    assert!(old.contains("GET /hello.txt?before"), "old log: {old:?}");
    server.signal(libc::SIGTERM);
    assert!(
        server
            .wait(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
}

/// An operator who presses Ctrl-C twice means it: the second stops at once, whatever the grace.
#[test]
fn a_second_sigterm_ends_the_grace_period() {
    let site = site();
    let mut server = BinaryServer::start(&site.root(), &["--grace", "60s"]);
    // A request in progress holds the shutdown open.
    let mut busy = server.client();
    busy.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n");
    std::thread::sleep(Duration::from_millis(100));
    server.signal(libc::SIGTERM);
    assert!(
        server.wait(Duration::from_millis(500)).is_none(),
        "the first SIGTERM should wait for the request in progress"
    );
    let start = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait(Duration::from_secs(5));
    assert!(
        status.is_some(),
        "still running 5 s after the second SIGTERM: {}",
        server.stderr()
    );
    assert!(start.elapsed() < Duration::from_secs(3));
}

/// 2,000 clients that each sent one byte of a head hold a few bytes each, not a read buffer
/// each (16 KiB apiece before: 32 MB).
#[test]
fn partial_heads_hold_only_what_they_sent() {
    common::raise_nofile();
    let site = site();
    let server = BinaryServer::start(&site.root(), &["--max-conns", "5000"]);
    // Warm up: the loop's own buffers and the file cache.
    for _ in 0..3 {
        assert_eq!(server.client().get("/hello.txt").status, 200);
    }
    let before = rss_kib(server.child.id());
    let mut held = Vec::new();
    for _ in 0..2000 {
        let mut s = TcpStream::connect(server.addr).expect("connect");
        std::io::Write::write_all(&mut s, b"G").unwrap();
        held.push(s);
    }
    // Every byte has been read once a request on a new connection is answered after them.
    assert_eq!(server.client().get("/hello.txt").status, 200);
    std::thread::sleep(Duration::from_millis(200));
    let grown = rss_kib(server.child.id()).saturating_sub(before);
    assert!(
        grown < 6 * 1024,
        "RSS grew by {grown} KiB for 2000 one-byte heads"
    );
    drop(held);
    assert_eq!(server.client().get("/hello.txt").status, 200);
}

/// At `--max-conns`, a new client takes the place of the connection that has waited longest
/// for a request; busy connections are never closed for it.
#[test]
fn at_the_limit_idle_connections_make_room() {
    let site = site();
    let server = TestServer::with(&site, |cfg| cfg.max_conns = Some(2));
    let mut oldest = server.client();
    assert_eq!(oldest.get("/hello.txt").body, HELLO);
    std::thread::sleep(Duration::from_millis(20));
    let mut newer = server.client();
    assert_eq!(newer.get("/hello.txt").body, HELLO);
    let mut third = server.client();
    third.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let started = Instant::now();
    assert_eq!(third.get("/hello.txt").body, HELLO);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
    if common::test_model() == edgeserve::Model::Sharded {
        // Each shard makes room among its own connections (as each nginx worker does): the one
        // closed is the longest idle of the shard that took the new client.
        let closed = [oldest, newer].map(|mut c| {
            c.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
            c.try_head().is_err()
        });
        assert_eq!(closed.iter().filter(|&&c| c).count(), 1, "{closed:?}");
    } else {
        oldest.expect_closed("the longest idle connection makes room");
        assert_eq!(newer.get("/hello.txt").body, HELLO);
    }
}

/// Silent sockets (connected, nothing sent) are reclaimed the same way, so a few of them cannot
/// lock new clients out until their idle timeout.
#[test]
fn silent_connections_cannot_lock_clients_out() {
    let site = site();
    let server = TestServer::with(&site, |cfg| {
        cfg.max_conns = Some(8);
        cfg.idle_timeout = Duration::from_secs(60);
    });
    let silent: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    for i in 0..4 {
        let started = Instant::now();
        let r = common::get(server.addr, "/hello.txt");
        assert_eq!(r.body, HELLO, "client {i}");
        assert!(started.elapsed() < Duration::from_secs(2), "client {i}");
    }
    drop(silent);
}

/// A request in progress is not idle: at the limit, a new client waits for a place.
#[test]
fn at_the_limit_requests_in_progress_are_not_closed() {
    let site = site();
    let server = TestServer::with(&site, |cfg| cfg.max_conns = Some(2));
    let mut a = server.client();
    let mut b = server.client();
    a.send(b"GET /hello.txt HTTP/1.1\r\n");
    b.send(b"GET /hello.txt HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(50));
    let mut third = server.client();
    third.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    third.expect_silence(Duration::from_millis(300), "third over the limit");
    a.send(b"Host: t\r\n\r\n");
    assert_eq!(a.response().body, HELLO);
    b.send(b"Host: t\r\nConnection: close\r\n\r\n");
    assert_eq!(b.response().body, HELLO);
    assert_eq!(third.response().body, HELLO);
}

/// Bytes that can never begin a request are answered at once, not at the header timeout.
#[test]
fn garbage_and_tls_on_the_plain_port_get_400_at_once() {
    let site = site();
    let server = TestServer::with(&site, |cfg| cfg.header_timeout = Duration::from_secs(30));
    // The first bytes of a TLS 1.2/1.3 ClientHello record.
    let client_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    for (what, bytes) in [
        ("TLS ClientHello", &client_hello[..]),
        ("binary noise", b"\x00\xff\xfe\x01garbage"),
        ("a response", b"HTTP/1.1 200 OK\r\n"),
        ("a tab in the request line", b"GET\t/ HTTP/1.1\r\n"),
    ] {
        let mut c = server.client();
        let started = Instant::now();
        c.send(bytes);
        let r = c.response();
        assert_eq!(r.status, 400, "{what}");
        assert!(r.closes(), "{what}");
        c.expect_closed(what);
        assert!(started.elapsed() < Duration::from_secs(2), "{what}");
    }
    // A slow but valid request is never refused by it.
    let mut c = server.client();
    for b in b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n" {
        c.send(&[*b]);
    }
    assert_eq!(c.response().body, HELLO);
}

/// A body declared larger than `--max-body` is answered and closed when its size is seen, not
/// read up to the limit first.
#[test]
fn a_chunk_size_over_the_limit_closes_at_once() {
    let site = site();
    let server = TestServer::with(&site, |cfg| cfg.limits.max_body = 64 * 1024);
    let mut c = server.client();
    c.send(
        b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          FFFFFFFF\r\nabc",
    );
    let r = c.response();
    assert_eq!(r.status, 405);
    c.stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut rest = Vec::new();
    let got = c.stream.read_to_end(&mut rest);
    assert!(
        got.is_ok() && rest.is_empty(),
        "expected a close after the answer, got {got:?} and {rest:?}"
    );
    // A declared Content-Length over the limit: 413, and the connection closes.
    let mut c = server.client();
    c.send(b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 70000\r\n\r\nabc");
    let r = c.response();
    assert_eq!(r.status, 413);
    assert!(r.closes());
}

#[test]
fn an_empty_host_on_http11_is_400() {
    let site = site();
    let server = TestServer::with(&site, |_| {});
    let mut c = server.client();
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost: \r\n\r\n");
    assert_eq!(c.response().status, 400);
    let mut c = server.client();
    c.send(b"GET /hello.txt HTTP/1.0\r\nHost:\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

/// A SIGHUP whose log file cannot be opened again (its directory was moved away) changes
/// nothing: one line says why, lines keep going to the file already open, the server serves on.
#[test]
fn a_failed_log_reopen_keeps_the_old_file() {
    let site = site();
    let dir = site.base.path().join("logs");
    std::fs::create_dir(&dir).unwrap();
    let log = dir.join("access.log");
    let mut server = BinaryServer::start(
        &site.root(),
        &["--access-log", log.to_str().unwrap(), "--log-level", "info"],
    );
    assert_eq!(server.client().get("/hello.txt?before").status, 200);
    let moved = site.base.path().join("logs.old");
    std::fs::rename(&dir, &moved).unwrap();
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.stderr().contains("cannot reopen") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server.stderr().contains("cannot reopen"),
        "{}",
        server.stderr()
    );
    assert_eq!(server.client().get("/hello.txt?after").status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    let old = loop {
        let text = std::fs::read_to_string(moved.join("access.log")).unwrap_or_default();
        if text.contains("after") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(old.contains("GET /hello.txt?after"), "old file: {old:?}");
    assert!(server.is_running());
    server.signal(libc::SIGTERM);
    assert!(
        server
            .wait(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
}
