//! `--proxy-protocol`: a connection begins with a PROXY v1 or v2 header whose source address
//! becomes the client's (X-Forwarded-For to upstreams, the access log); without a valid header,
//! the connection is closed. The header may arrive in pieces, has its own size limit and the
//! header timeout. Then the same checks through a real HAProxy (`send-proxy`, `send-proxy-v2`).

#![cfg(feature = "proxy")]

mod common;
#[path = "common/haproxy.rs"]
mod haproxy;
#[path = "common/upstream.rs"]
mod upstream;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Site, TestServer};
use edgeserve::config::Route;
use upstream::{Upstream, ok};

fn v2(cmd: u8, family: u8, addrs: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | cmd);
    h.push(family << 4 | 1);
    h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    h.extend_from_slice(addrs);
    h
}

fn v2_inet(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut a = src.to_vec();
    a.extend_from_slice(&[127, 0, 0, 1]);
    a.extend_from_slice(&port.to_be_bytes());
    a.extend_from_slice(&80u16.to_be_bytes());
    v2(1, 1, &a)
}

struct Setup {
    _site: Site,
    up: Upstream,
    server: TestServer,
}

fn setup(header_timeout: Duration) -> Setup {
    let site = Site::new("proxy-protocol");
    site.write("hello.txt", b"hello");
    let up = Upstream::start(|_| ok("from upstream"));
    let upstream = up.addr;
    let server = TestServer::with(&site, |c| {
        c.proxy_protocol = true;
        c.header_timeout = header_timeout;
        c.proxies = vec![Route {
            prefix: "/api".into(),
            upstreams: vec![upstream],
        }];
    });
    Setup {
        _site: site,
        up,
        server,
    }
}

/// Sends `header` then a request to the upstream, and returns the X-Forwarded-For it saw.
fn forwarded_for(s: &Setup, header: &[u8], split: bool) -> String {
    let seen = s.up.requests().len();
    let mut c = s.server.client();
    if split {
        // One byte at a time, each its own segment (nodelay): every partial read must wait.
        for b in header {
            c.send(&[*b]);
            std::thread::sleep(Duration::from_millis(1));
        }
    } else {
        c.send(header);
    }
    c.send(b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200, "{r:?}");
    // The same connection goes on with plain requests (the header comes once).
    let r = c.get("/hello.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    let reqs = s.up.wait_requests(seen + 1, Duration::from_secs(5));
    reqs[seen]
        .header("x-forwarded-for")
        .unwrap_or("")
        .to_string()
}

#[test]
fn the_header_names_the_client() {
    let s = setup(Duration::from_secs(10));
    let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 80\r\n";
    assert_eq!(forwarded_for(&s, v1, false), "192.0.2.7");
    assert_eq!(forwarded_for(&s, v1, true), "192.0.2.7");
    let v1_6 = b"PROXY TCP6 2001:db8::5 ::1 1000 80\r\n";
    assert_eq!(forwarded_for(&s, v1_6, false), "2001:db8::5");
    let h = v2_inet([198, 51, 100, 4], 40000);
    assert_eq!(forwarded_for(&s, &h, false), "198.51.100.4");
    assert_eq!(forwarded_for(&s, &h, true), "198.51.100.4");
    // LOCAL (the balancer's own check) and UNKNOWN keep the socket's address.
    assert_eq!(forwarded_for(&s, &v2(0, 0, &[]), false), "127.0.0.1");
    assert_eq!(forwarded_for(&s, b"PROXY UNKNOWN\r\n", true), "127.0.0.1");
}

/// The header and the first request in one segment, and pipelined requests behind them.
#[test]
fn the_header_and_requests_in_one_write() {
    let s = setup(Duration::from_secs(10));
    let mut c = s.server.client();
    c.send(
        b"PROXY TCP4 192.0.2.9 10.0.0.1 1 80\r\nGET /api/a HTTP/1.1\r\nHost: h\r\n\r\n\
          GET /api/b HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert_eq!(c.response().status, 200);
    assert_eq!(c.response().status, 200);
    let reqs = s.up.wait_requests(2, Duration::from_secs(5));
    for r in &reqs {
        assert_eq!(r.header("x-forwarded-for"), Some("192.0.2.9"));
    }
}

/// Closed, with no byte of an answer.
#[track_caller]
fn expect_dropped(c: &mut Client, what: &str) {
    let (bytes, end) = c.read_to_close();
    assert!(
        bytes.is_empty(),
        "{what}: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    match end {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: not closed: {e}"),
    }
}

#[test]
fn without_a_valid_header_the_connection_is_closed() {
    let s = setup(Duration::from_secs(10));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "plain HTTP",
            b"GET /hello.txt HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
        ),
        (
            "bad v1",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n".to_vec(),
        ),
        (
            "bare LF",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 80\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        ),
        ("v1 over 107 bytes", {
            let mut h = b"PROXY UNKNOWN ".to_vec();
            h.resize(300, b'x');
            h
        }),
        ("v2 over the limit", {
            let mut h = v2_inet([1, 2, 3, 4], 5);
            h[14..16].copy_from_slice(&2000u16.to_be_bytes());
            h.resize(2016, 0);
            h
        }),
        ("v2 version 3", {
            let mut h = v2_inet([1, 2, 3, 4], 5);
            h[12] = 0x31;
            h
        }),
    ];
    for (what, bytes) in cases {
        let mut c = s.server.client();
        // The server may close before all of it is sent.
        let _ = c.try_send(&bytes);
        expect_dropped(&mut c, what);
    }
    assert!(s.up.requests().is_empty());
    // The server carries on.
    let mut c = s.server.client();
    c.send(b"PROXY UNKNOWN\r\n");
    assert_eq!(c.get("/hello.txt").status, 200);
}

/// A header that stops coming is dropped at the header timeout (no 408: no HTTP was spoken).
#[test]
fn a_stalled_header_meets_the_header_timeout() {
    let s = setup(Duration::from_millis(300));
    let mut silent = s.server.client();
    let mut partial = s.server.client();
    partial.send(b"PROXY TCP4 192.0.2.1 ");
    expect_dropped(&mut silent, "nothing sent");
    expect_dropped(&mut partial, "half a header");
}

/// Through HAProxy (`send-proxy` and `send-proxy-v2`, with health checks on `--health`): the
/// access log shows the client's address, not HAProxy's.
#[test]
fn through_haproxy() {
    // Not skipped when missing: a test that passes without running is no test.
    let haproxy = haproxy::path().expect(
        "haproxy is not installed: apt-get install --no-install-recommends haproxy \
         (.ci/run does)",
    );
    let site = Site::new("proxy-protocol-haproxy");
    site.write("hello.txt", b"hello");
    let log = site.base.path().join("access.log");
    let server = common::BinaryServer::start(
        &site.root(),
        &[
            "--proxy-protocol",
            "--health",
            "/healthz",
            "--access-log",
            log.to_str().unwrap(),
        ],
    );
    let front = haproxy::Haproxy::start(&haproxy, server.addr, site.base.path());
    for (version, addr) in [("v1", front.v1), ("v2", front.v2)] {
        // Our client speaks from 127.0.0.2 (loopback still); HAProxy connects from 127.0.0.1.
        let mut c = client_from([127, 0, 0, 2], addr);
        c.send(format!("GET /hello.txt?{version} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"hello"[..]),
            "{version}"
        );
    }
    // A connection straight to edgeserve, without HAProxy's header, is closed.
    let mut direct = server.client();
    let _ = direct.try_send(b"GET /hello.txt HTTP/1.1\r\nHost: h\r\n\r\n");
    expect_dropped(&mut direct, "no header");
    // HAProxy's health checks come through the header too.
    let text = wait_for_lines(&log, &["/hello.txt?v1", "/hello.txt?v2", "GET /healthz"]);
    for version in ["v1", "v2"] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("/hello.txt?{version}")))
            .unwrap();
        assert!(line.starts_with("127.0.0.2 "), "{version}: {line}");
    }
    drop(front);
}

fn client_from(ip: [u8; 4], to: SocketAddr) -> Client {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap();
    Client::from_stream(s.into())
}

/// The access log once every needle is in it (lines are flushed once per loop turn).
fn wait_for_lines(log: &std::path::Path, needles: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if needles.iter().all(|n| text.contains(n)) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "access log lacks {needles:?}: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Per listener (`listen ADDR proxy-protocol`): the balancer's listener wants the header, the
/// plain one beside it serves plain HTTP.
#[test]
fn only_the_listener_marked_wants_the_header() {
    use edgeserve::config::Listen;
    let site = Site::new("proxy-protocol-per-listener");
    site.write("hello.txt", b"hello");
    let server = TestServer::with(&site, |c| {
        let plain = Listen::plain("127.0.0.1:0".parse().unwrap());
        let balanced = Listen {
            proxy_protocol: true,
            ..plain.clone()
        };
        c.listen = vec![plain, balanced];
    });
    let (plain, balanced) = (server.addrs[0], server.addrs[1]);
    for _ in 0..4 {
        // (Several rounds: in the sharded model each listener has a socket per shard.)
        assert_eq!(common::get(plain, "/hello.txt").status, 200);
        let mut c = Client::connect(balanced);
        c.send(b"PROXY TCP4 192.0.2.1 10.0.0.1 1 80\r\n");
        assert_eq!(c.get("/hello.txt").status, 200);
        let mut c = Client::connect(balanced);
        let _ = c.try_send(b"GET /hello.txt HTTP/1.1\r\nHost: h\r\n\r\n");
        expect_dropped(&mut c, "plain HTTP on the balancer's listener");
    }
}
