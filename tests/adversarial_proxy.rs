//! Regression tests for the proxy half of "Security and resource safety": each test is one
//! defect an adversarial pass found, asserted the way a user (or an upstream) would see it.
//!
//! - a `Connection` header naming framing fields (request smuggling, both directions);
//! - proxy prefixes matched on odd spellings of a path (dot segments, encoded slashes);
//! - forwarded headers a client can forge, and 1xx answers sent to HTTP/1.0 clients;
//! - a request body dripped byte by byte (no overall deadline), and over `--max-body`.
#![cfg(feature = "proxy")]

mod common;
#[path = "common/upstream.rs"]
mod upstream;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Client, Response, Site, TestServer};
use edgeserve::config::Route;
use upstream::Upstream;

const SECRET: &[u8] = b"static secret\n";

fn site() -> Site {
    let site = Site::new("adv-proxy");
    site.write("admin", SECRET);
    site.write("api/x", SECRET);
    site.write("hello.txt", b"hello\n");
    site
}

fn route(prefix: &str, up: SocketAddr) -> Route {
    Route {
        prefix: prefix.to_string(),
        upstreams: vec![up],
    }
}

/// A proxy for `/api/` to `up`. The sharded model gets one shard, so that the upstream pool (one
/// per loop) is shared by the test's clients.
fn proxy(site: &Site, up: SocketAddr, tweak: impl FnOnce(&mut edgeserve::Config)) -> TestServer {
    TestServer::with(site, |cfg| {
        cfg.proxies = vec![route("/api/", up)];
        if common::test_model() == edgeserve::Model::Sharded {
            cfg.workers = 1;
        }
        tweak(cfg);
    })
}

/// An upstream answering every request with "METHOD TARGET BODY".
fn echo_upstream() -> Upstream {
    Upstream::start(|r| {
        let mut body = format!("{} {} ", r.method, r.target).into_bytes();
        body.extend_from_slice(&r.body);
        upstream::ok(body)
    })
}

/// Requests the upstream got within `wait` (it never gets more than `most`).
fn settled_requests(up: &Upstream, most: usize, wait: Duration) -> Vec<upstream::Request> {
    up.wait_requests(most + 1, wait)
}

/// Waits (bounded) until the upstream has seen `n` connections end.
fn wait_ended(up: &Upstream, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if up.ended() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

// ---------------------------------------------------------------------------------------------
// 1. Request smuggling through `Connection`
// ---------------------------------------------------------------------------------------------

/// `Connection: Content-Length` (or `Transfer-Encoding`, `Host`) must not strip the framing of a
/// forwarded request: the upstream sees one request with its body, never the body as a second
/// request, and the next client on the pooled upstream connection gets its own answer.
#[test]
fn connection_naming_framing_fields_does_not_smuggle_a_request() {
    let smuggled = b"GET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "Content-Length",
            [
                format!(
                    "POST /api/a HTTP/1.1\r\nHost: h\r\nConnection: Content-Length\r\nContent-Length: {}\r\n\r\n",
                    smuggled.len()
                )
                .into_bytes(),
                smuggled.to_vec(),
            ]
            .concat(),
        ),
        (
            "Transfer-Encoding",
            [
                format!(
                    "POST /api/a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                    smuggled.len()
                )
                .into_bytes(),
                smuggled.to_vec(),
                b"\r\n0\r\n\r\n".to_vec(),
            ]
            .concat(),
        ),
        (
            "Host",
            [
                format!(
                    "POST /api/a HTTP/1.1\r\nHost: h\r\nConnection: Host, Content-Length\r\nContent-Length: {}\r\n\r\n",
                    smuggled.len()
                )
                .into_bytes(),
                smuggled.to_vec(),
            ]
            .concat(),
        ),
    ];
    for (named, request) in cases {
        let site = site();
        let up = echo_upstream();
        let server = proxy(&site, up.addr, |_| {});
        let mut c = server.client();
        c.send(&request);
        let r = c.response();
        assert_eq!(r.status, 200, "Connection: {named}: {r:?}");
        assert_eq!(
            r.text(),
            format!("POST /api/a {}", String::from_utf8_lossy(smuggled)),
            "Connection: {named}"
        );
        let got = settled_requests(&up, 1, Duration::from_millis(300));
        assert_eq!(got.len(), 1, "Connection: {named}: smuggled {got:#?}");
        assert_eq!(got[0].header("host"), Some("h"), "Connection: {named}");
        assert_eq!(got[0].body, smuggled, "Connection: {named}");

        // A second client, on the pooled upstream connection, gets its own answer.
        let mut c2 = server.client();
        let r2 = c2.get("/api/second");
        assert_eq!(r2.text(), "GET /api/second ", "Connection: {named}");
        // And so does the first client's next request.
        assert_eq!(c.get("/api/third").text(), "GET /api/third ");
    }
}

/// One response to a GET: the head, then a Content-Length or chunked body.
fn framed_response(c: &mut Client) -> Response {
    let mut r = c.head();
    let chunked = r
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked"));
    if chunked {
        let mut body = Vec::new();
        for _ in 0..100 {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                line.extend_from_slice(&c.take(1));
                assert!(line.len() < 100, "chunk size line {line:?}");
            }
            let size = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            if size == 0 {
                assert_eq!(c.take(2), b"\r\n");
                r.body = body;
                return r;
            }
            body.extend_from_slice(&c.take(size));
            assert_eq!(c.take(2), b"\r\n");
        }
        panic!("too many chunks");
    }
    let n = r
        .content_length()
        .unwrap_or_else(|| panic!("unframed answer on a kept-alive connection: {r:?}"));
    r.body = c.take(n as usize);
    r
}

/// An upstream's `Connection: Content-Length` (or `Transfer-Encoding`) must not leave the client
/// with an unframed answer on a kept-alive connection.
#[test]
fn upstream_connection_naming_framing_fields_keeps_the_answer_framed() {
    for named in ["Content-Length", "Transfer-Encoding"] {
        let site = site();
        let up = Upstream::start(move |r| {
            if r.target != "/api/odd" {
                return upstream::ok("next");
            }
            let raw = if named == "Content-Length" {
                "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello"
            } else {
                "HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            };
            upstream::raw(raw, false)
        });
        let server = proxy(&site, up.addr, |_| {});
        let mut c = server.client();
        c.send(b"GET /api/odd HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = framed_response(&mut c);
        if r.status == 502 {
            // Refusing the answer is allowed; the connection goes on.
            assert_eq!(c.get("/api/next").body, b"next", "Connection: {named}");
            continue;
        }
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"hello"[..]),
            "{named}"
        );
        assert!(!r.closes(), "{named}: {r:?}");
        let next = c.get("/api/next");
        assert_eq!(next.body, b"next", "Connection: {named}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Prefixes matched on the normalised path
// ---------------------------------------------------------------------------------------------

/// Odd spellings of a path that leaves the prefix, or enters it from outside, are refused (400)
/// or reach the upstream normalised inside the prefix; they never reach the upstream's `/admin`
/// and are never served from files when they normalise inside the prefix.
#[test]
fn dot_segments_and_encoded_slashes_do_not_cross_a_proxy_prefix() {
    let site = site();
    let up = echo_upstream();
    let server = proxy(&site, up.addr, |_| {});
    let mut checked = 0;
    for target in [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/%2E%2E/admin",
        "/api/.%2e/admin",
        "/api/..%2fadmin",
        "/api/..%2Fadmin",
        "/api/..%5cadmin",
        "/api/./../admin",
        "/api//../../admin",
        "/api/x/../../admin",
        // Outside the prefix as sent, inside once normalised: never the static file api/x.
        "/static/../api/x",
        "/%61pi/x",
        "/hello.txt/../api/x",
        "//api/x",
    ] {
        let mut c = server.client();
        c.send(format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        let r = match c.try_head() {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => continue,
            Err(e) => panic!("{target}: {e}"),
        };
        let body = if r.status == 400 {
            Vec::new()
        } else {
            let n = r.content_length().expect("framed");
            c.take(n as usize)
        };
        assert_ne!(body, SECRET, "{target} served a static file: {r:?}");
        if r.status != 400 {
            let text = String::from_utf8_lossy(&body).into_owned();
            assert!(
                text.starts_with("GET /api/"),
                "{target}: neither refused nor forwarded inside /api/: {r:?} {text}"
            );
        }
        checked += 1;
    }
    assert!(checked > 0);
    for req in up.requests() {
        let t = req.target.to_ascii_lowercase();
        assert!(
            t.starts_with("/api/") && !t.contains("..") && !t.contains("%2e") && !t.contains("%2f"),
            "upstream got {t:?}"
        );
    }
    // Plain and percent-encoded (but not dot or slash) paths are still forwarded as sent.
    let mut c = server.client();
    assert_eq!(c.get("/api/a%20b?q=../x").text(), "GET /api/a%20b?q=../x ");
    assert_eq!(c.get("/api/x").text(), "GET /api/x ");
    assert_eq!(c.get("/hello.txt").body, b"hello\n");
}

// ---------------------------------------------------------------------------------------------
// 5. Forwarded headers, and 1xx to HTTP/1.0 clients
// ---------------------------------------------------------------------------------------------

const FORGED: &str = "GET /api/f HTTP/1.1\r\nHost: h\r\n\
    X-Forwarded-For: 1.1.1.1\r\nX-Real-IP: 9.9.9.9\r\nForwarded: for=8.8.8.8\r\n\
    X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\
    X-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\r\n";

/// By default a client's forwarded headers are not believed: the chain is replaced by ours.
#[test]
fn forwarded_headers_from_an_untrusted_client_are_replaced() {
    let site = site();
    let up = echo_upstream();
    let server = proxy(&site, up.addr, |_| {});
    let mut c = server.client();
    c.send(FORGED.as_bytes());
    assert_eq!(c.response().status, 200);
    let req = up.only_request();
    assert_eq!(req.all("x-forwarded-for"), ["127.0.0.1"], "{req:#?}");
    assert_eq!(req.all("x-real-ip"), ["127.0.0.1"], "{req:#?}");
    assert_eq!(req.all("x-forwarded-proto"), ["http"], "{req:#?}");
    assert!(!req.has("forwarded"), "{req:#?}");
    assert!(!req.has("x-forwarded-host"), "{req:#?}");
}

/// Behind a trusted proxy (`--proxy-trust-forwarded`) the chain is kept, joined, and extended.
#[test]
fn forwarded_headers_from_a_trusted_proxy_are_joined_and_extended() {
    let site = site();
    let up = echo_upstream();
    let server = proxy(&site, up.addr, |cfg| cfg.proxy_trust_forwarded = true);
    let mut c = server.client();
    c.send(FORGED.as_bytes());
    assert_eq!(c.response().status, 200);
    let req = up.only_request();
    assert_eq!(
        req.all("x-forwarded-for"),
        ["1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1"],
        "{req:#?}"
    );
    assert_eq!(req.all("x-real-ip"), ["9.9.9.9"], "{req:#?}");
    assert_eq!(req.all("forwarded"), ["for=8.8.8.8"], "{req:#?}");
}

/// HTTP/1.0 has no 1xx answers: an upstream's 100 or 103 is dropped for an HTTP/1.0 client,
/// which sees only the final answer.
#[test]
fn informational_answers_are_not_relayed_to_http10_clients() {
    let site = site();
    let up = Upstream::start(|_| {
        upstream::raw(
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
             HTTP/1.1 100 Continue\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        )
    });
    let server = proxy(&site, up.addr, |_| {});
    let mut c = server.client();
    c.send(b"GET /api/old HTTP/1.0\r\n\r\n");
    let (bytes, _) = c.read_to_close();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(text.ends_with("\r\n\r\nok"), "{text}");

    // An HTTP/1.1 client still gets them.
    let mut c = server.client();
    c.send(b"GET /api/new HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.head().status, 103);
    assert_eq!(c.head().status, 100);
    assert_eq!(c.response().body, b"ok");
}

// ---------------------------------------------------------------------------------------------
// 8. Request body deadline and size while forwarding
// ---------------------------------------------------------------------------------------------

/// A client that drips its body a byte at a time gets 408 once `--header-timeout` has passed
/// since forwarding began, and the upstream connection is closed, not kept.
#[test]
fn a_dripped_request_body_gets_408_and_frees_the_upstream() {
    let site = site();
    let up = echo_upstream();
    let server = proxy(&site, up.addr, |cfg| {
        cfg.header_timeout = Duration::from_secs(1);
        cfg.proxy_timeout = Duration::from_secs(20);
    });
    let mut c = server.client();
    c.send(b"POST /api/drip HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n");
    let started = Instant::now();
    c.stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..40 {
        if c.try_send(b"x").is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match c.read_some(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        if !got.is_empty() {
            break;
        }
    }
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 408 "),
        "after {took:?}: {text:?}"
    );
    assert!(took < Duration::from_secs(4), "408 after {took:?}");
    assert!(
        wait_ended(&up, 1, Duration::from_secs(3)),
        "the upstream connection was kept"
    );
    assert!(up.requests().is_empty(), "{:#?}", up.requests());
}

/// A chunked body that grows past `--max-body` while forwarded gets 413 (nothing of an answer
/// was sent yet), the client connection closes and so does the upstream one.
#[test]
fn a_chunked_body_over_max_body_gets_413_while_forwarded() {
    let site = site();
    // The upstream waits for the whole body, so nothing of an answer is sent before the limit.
    let up = echo_upstream();
    let server = proxy(&site, up.addr, |cfg| cfg.limits.max_body = 1000);
    let mut c = server.client();
    c.send(b"POST /api/big HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..3 {
        let chunk = format!("1f4\r\n{}\r\n", "y".repeat(500));
        if c.try_send(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let (bytes, _) = c.read_to_close();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text:?}");
    assert!(
        wait_ended(&up, 1, Duration::from_secs(3)),
        "the upstream connection was kept"
    );
    assert!(up.requests().is_empty(), "{:#?}", up.requests());
}

/// A Content-Length over `--max-body` on a proxied path is 413 before anything is forwarded.
#[test]
fn a_content_length_over_max_body_is_413_on_a_proxied_path() {
    let site = site();
    let up = echo_upstream();
    let server = proxy(&site, up.addr, |cfg| cfg.limits.max_body = 1000);
    let mut c = server.client();
    c.send(b"POST /api/big HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.closes());
    assert_eq!(up.accepts(), 0);
}

// ---------------------------------------------------------------------------------------------
// Messages a server behind us could frame differently (found by the proxy-mode conformance run)
// ---------------------------------------------------------------------------------------------

/// A framing look-alike (`Transfer_Encoding`) or a GET with a body is refused with 400 and the
/// connection closed: the upstream never sees it, so it cannot read its body as a request.
#[test]
fn ambiguous_framing_is_refused_not_forwarded() {
    let site = site();
    let up = echo_upstream();
    let server = proxy(&site, up.addr, |_| {});
    for raw in [
        &b"POST /api/a HTTP/1.1\r\nHost: t\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST /api/a HTTP/1.1\r\nHost: t\r\nContent--Length: 4\r\n\r\nGET /",
        b"GET /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: 23\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
        b"HEAD /api/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let mut c = server.client();
        c.send(raw);
        // An answer to HEAD has no body, a refusal included.
        let r = if raw.starts_with(b"HEAD") {
            c.head()
        } else {
            c.response()
        };
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(raw));
        assert!(r.closes());
        c.expect_closed("after the refusal");
    }
    assert!(
        settled_requests(&up, 0, Duration::from_millis(200)).is_empty(),
        "the upstream got a refused request"
    );
    // The same requests without the ambiguity pass.
    let mut c = server.client();
    c.send(b"POST /api/a HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody");
    assert_eq!(c.response().body, b"POST /api/a body");
}

// ---------------------------------------------------------------------------------------------
// A client that leaves before the answer (found by review)
// ---------------------------------------------------------------------------------------------

/// A client that closes before any byte of the answer gives its upstream connection back at
/// once, and an upgrade gives back its place among the tunnels: otherwise a client that fires
/// requests at a slow upstream and disconnects holds two descriptors (and a tunnel place) per
/// request at no cost to itself, until the upstream answers.
#[test]
fn a_client_gone_before_the_answer_frees_the_upstream_and_its_tunnel_place() {
    use std::io::Read as _;
    use std::net::TcpListener;
    let site = site();
    // An upstream that reads requests and never answers; it reports each connection's end.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = listener.local_addr().unwrap();
    let (ended_tx, ended_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in listener.incoming().take(4) {
            let Ok(mut s) = s else { continue };
            let tx = ended_tx.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                let _ = tx.send(Instant::now());
            });
        }
    });
    let server = proxy(&site, up_addr, |cfg| cfg.max_tunnels = Some(1));
    let upgrade =
        b"GET /api/ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let mut c = server.client();
    c.send(upgrade);
    std::thread::sleep(Duration::from_millis(200));
    let left = Instant::now();
    drop(c);
    let ended = ended_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the upstream connection was kept after the client left");
    assert!(ended.duration_since(left) < Duration::from_secs(2));
    // The place is free again: the next upgrade is forwarded, not refused with 503.
    let mut c = server.client();
    c.send(upgrade);
    c.expect_silence(
        Duration::from_millis(300),
        "the second upgrade waits for its upstream",
    );
    drop(c);
    // An ordinary forwarded request frees its upstream connection the same way.
    let mut c = server.client();
    c.send(b"GET /api/slow HTTP/1.1\r\nHost: t\r\n\r\n");
    std::thread::sleep(Duration::from_millis(200));
    c.stream.shutdown(std::net::Shutdown::Both).unwrap();
    let _ = ended_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("second upgrade's end");
    let ended = ended_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the upstream connection was kept after the client left");
    assert!(ended.elapsed() < Duration::from_secs(5));
}
