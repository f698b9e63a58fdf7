//! The reverse proxy over real sockets: request and response rewriting, bodies both ways, the
//! upstream keep-alive pool and its retry, connect failures and timeouts, broken upstreams,
//! pipelining through the proxy, routing, and bounded memory on large transfers.
//!
//! The upstream is a small threaded server (`common/upstream.rs`) that records every request it
//! gets and answers as each test's handler says.
#![cfg(feature = "proxy")]

mod common;
#[path = "common/upstream.rs"]
mod upstream;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::{BinaryServer, Client, Response, Site, TestServer, assert_same_bytes, blackhole};
use edgeserve::config::Route;
use upstream::{Action, Options, Request, Step, Upstream};

const HELLO: &[u8] = b"Hello, World!\n";

fn site() -> Site {
    let site = Site::new("proxy");
    site.write("hello.txt", HELLO);
    site.write("static/a.txt", b"static a\n");
    site
}

fn route(prefix: &str, ups: &[SocketAddr]) -> Route {
    Route {
        prefix: prefix.to_string(),
        upstreams: ups.to_vec(),
    }
}

/// A server over `site` with `routes`, then `tweak`.
fn proxy_server(
    site: &Site,
    routes: Vec<Route>,
    tweak: impl FnOnce(&mut edgeserve::Config),
) -> TestServer {
    TestServer::with(site, |cfg| {
        cfg.proxies = routes;
        tweak(cfg);
    })
}

/// For tests of what one loop shares between its clients (the upstream pool, failure marks):
/// each shard of the sharded model has its own, as each nginx worker has, and the kernel picks
/// the shard of each client connection. So the sharded model runs these with one shard.
fn one_loop(cfg: &mut edgeserve::Config) {
    if common::test_model() == edgeserve::Model::Sharded {
        cfg.workers = 1;
    }
}

/// A port on 127.0.0.1 where nothing listens (connections are refused).
fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

fn get_req(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// One CRLF-terminated line (without the CRLF), read byte by byte.
fn read_line(c: &mut Client) -> Vec<u8> {
    let mut l = Vec::new();
    for _ in 0..10_000 {
        l.push(c.take(1)[0]);
        if l.ends_with(b"\r\n") {
            l.truncate(l.len() - 2);
            return l;
        }
    }
    panic!("line too long: {:?}", String::from_utf8_lossy(&l[..200]));
}

/// A chunked body: the decoded bytes and the trailer lines.
fn read_chunked(c: &mut Client) -> (Vec<u8>, Vec<String>) {
    let mut body = Vec::new();
    for _ in 0..1_000_000 {
        let line = String::from_utf8(read_line(c)).expect("chunk size line");
        let size_txt = line.split(';').next().unwrap().trim();
        let size = usize::from_str_radix(size_txt, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        if size == 0 {
            let mut trailers = Vec::new();
            for _ in 0..100 {
                let t = String::from_utf8(read_line(c)).unwrap();
                if t.is_empty() {
                    return (body, trailers);
                }
                trailers.push(t);
            }
            panic!("too many trailer lines");
        }
        body.extend_from_slice(&c.take(size));
        assert_eq!(read_line(c), b"", "chunk data not followed by CRLF");
    }
    panic!("too many chunks");
}

fn is_chunked(r: &Response) -> bool {
    r.header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

/// The body of a response whose head was just read: chunked or Content-Length.
fn read_body(c: &mut Client, r: &Response) -> Vec<u8> {
    if is_chunked(r) {
        read_chunked(c).0
    } else {
        let n = r
            .content_length()
            .unwrap_or_else(|| panic!("neither chunked nor Content-Length: {r:?}"));
        c.take(n as usize)
    }
}

/// The head and (chunked or Content-Length) body of a response, skipping 1xx heads.
fn full_response(c: &mut Client) -> Response {
    for _ in 0..10 {
        let mut r = c.head();
        if r.status < 200 {
            continue;
        }
        if r.status != 204 && r.status != 304 {
            r.body = read_body(c, &r);
        }
        return r;
    }
    panic!("more than 10 informational responses");
}

/// The value of `Connection` in a response, if any, must only be the proxy's own keep-alive or
/// close (no token from the upstream).
#[track_caller]
fn assert_own_connection_header(r: &Response) {
    if let Some(v) = r.header("connection") {
        assert!(
            v.eq_ignore_ascii_case("keep-alive") || v.eq_ignore_ascii_case("close"),
            "Connection header from upstream leaked: {r:?}"
        );
    }
}

/// Requests recorded upstream must not carry hop-by-hop fields.
#[track_caller]
fn assert_no_hop_by_hop(req: &Request, extra: &[&str]) {
    for (n, v) in &req.headers {
        let l = n.to_ascii_lowercase();
        let bad = [
            "keep-alive",
            "te",
            "upgrade",
            "proxy-connection",
            "proxy-authorization",
        ]
        .contains(&l.as_str())
            || l.starts_with("proxy-")
            || extra.iter().any(|e| e.eq_ignore_ascii_case(n));
        assert!(
            !bad,
            "hop-by-hop header {n}: {v} forwarded upstream: {req:#?}"
        );
        if l == "connection" {
            // The proxy may say keep-alive or close for its own connection; nothing else.
            assert!(
                v.eq_ignore_ascii_case("keep-alive") || v.eq_ignore_ascii_case("close"),
                "client's Connection header forwarded upstream: {req:#?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests and responses as forwarded
// ---------------------------------------------------------------------------------------------

#[test]
fn get_is_forwarded_with_host_kept_and_hop_by_hop_headers_removed() {
    let site = site();
    let up = Upstream::start(|_| upstream::ok("from upstream\n"));
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    c.send(
        b"GET /api/items?q=1&r=%20x HTTP/1.1\r\n\
          Host: example.test:8080\r\n\
          User-Agent: proxy-test\r\n\
          Connection: keep-alive, X-Drop-Me\r\n\
          X-Drop-Me: secret\r\n\
          Keep-Alive: timeout=5\r\n\
          TE: trailers\r\n\
          Upgrade: websocket\r\n\
          Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
          Proxy-Connection: keep-alive\r\n\
          X-Custom: kept\r\n\
          Accept: */*\r\n\
          \r\n",
    );
    let r = c.response();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"from upstream\n"[..]),
        "{r:?}"
    );
    assert!(!r.closes(), "{r:?}");

    let req = up.only_request();
    assert_eq!(req.method, "GET");
    assert_eq!(
        req.target, "/api/items?q=1&r=%20x",
        "target forwarded as sent"
    );
    assert_eq!(req.version, "HTTP/1.1");
    assert_eq!(req.header("host"), Some("example.test:8080"), "{req:#?}");
    assert_eq!(req.header("user-agent"), Some("proxy-test"), "{req:#?}");
    assert_eq!(req.header("x-custom"), Some("kept"), "{req:#?}");
    assert_eq!(req.header("accept"), Some("*/*"), "{req:#?}");
    assert_eq!(req.header("x-forwarded-for"), Some("127.0.0.1"), "{req:#?}");
    assert_eq!(req.header("x-forwarded-proto"), Some("http"), "{req:#?}");
    assert_no_hop_by_hop(&req, &["x-drop-me"]);
    assert!(
        !req.has("content-length") && !req.has("transfer-encoding"),
        "{req:#?}"
    );
    assert!(req.body.is_empty());

    // The connection goes on.
    assert_eq!(c.get("/hello.txt").body, HELLO);
}

#[test]
fn x_forwarded_for_is_appended_to_an_existing_one_from_a_trusted_proxy() {
    let site = site();
    let up = Upstream::start(|_| upstream::ok("ok"));
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |cfg| {
        cfg.proxy_trust_forwarded = true
    });
    let mut c = server.client();
    c.send(b"GET /api/x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.1.2.3, 10.4.5.6\r\n\r\n");
    assert_eq!(c.response().status, 200);
    let req = up.only_request();
    assert_eq!(
        req.header("x-forwarded-for"),
        Some("10.1.2.3, 10.4.5.6, 127.0.0.1"),
        "{req:#?}"
    );
    assert_eq!(req.header("x-forwarded-proto"), Some("http"), "{req:#?}");
}

#[test]
fn http10_client_is_forwarded_as_http11_and_closed_after() {
    let site = site();
    let up = Upstream::start(|_| upstream::ok("one-oh"));
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    c.send(b"GET /api/old HTTP/1.0\r\nHost: legacy\r\n\r\n");
    let r = c.response();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"one-oh"[..]),
        "{r:?}"
    );
    c.expect_closed("HTTP/1.0 client without keep-alive");
    let req = up.only_request();
    assert_eq!(req.version, "HTTP/1.1", "{req:#?}");
    assert_eq!(req.target, "/api/old");
    assert_eq!(req.header("host"), Some("legacy"));
}

#[test]
fn response_keeps_status_reason_and_end_to_end_headers_but_drops_hop_by_hop() {
    let site = site();
    let up = Upstream::start(|_| {
        upstream::reply(
            201,
            "Made It Fine",
            &[
                ("Connection", "X-Secret-Hop"),
                ("X-Secret-Hop", "1"),
                ("Keep-Alive", "timeout=5, max=100"),
                ("Proxy-Authenticate", "Basic realm=\"x\""),
                ("Upgrade", "h2c"),
                ("X-Upstream", "yes"),
                ("Cache-Control", "max-age=60"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
            ],
            b"created",
        )
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    let r = c.get("/api/thing");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.reason, "Made It Fine", "{r:?}");
    assert_eq!(r.body, b"created");
    assert_eq!(r.header("server"), Some(upstream::UPSTREAM_SERVER), "{r:?}");
    assert_eq!(r.header("date"), Some(upstream::UPSTREAM_DATE), "{r:?}");
    assert_eq!(r.header("x-upstream"), Some("yes"), "{r:?}");
    assert_eq!(r.header("cache-control"), Some("max-age=60"), "{r:?}");
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        cookies,
        ["a=1", "b=2"],
        "repeated headers kept in order: {r:?}"
    );
    for h in [
        "x-secret-hop",
        "keep-alive",
        "proxy-authenticate",
        "upgrade",
    ] {
        assert!(
            r.header(h).is_none(),
            "hop-by-hop {h} passed to the client: {r:?}"
        );
    }
    assert_own_connection_header(&r);
    assert!(!r.closes(), "{r:?}");
    assert_eq!(c.get("/hello.txt").body, HELLO);
}

#[test]
fn head_204_and_304_answers_carry_no_body() {
    let site = site();
    let up = Upstream::start(|req| match (req.method.as_str(), req.target.as_str()) {
        ("HEAD", "/api/chunked") => Action::Steps(vec![Step::Write(upstream::head_bytes(
            200,
            "OK",
            &[("Transfer-Encoding", "chunked")],
            None,
        ))]),
        ("HEAD", _) => Action::Steps(vec![Step::Write(upstream::head_bytes(
            200,
            "OK",
            &[("Content-Type", "text/plain")],
            Some(1234),
        ))]),
        (_, "/api/204") => upstream::reply(204, "No Content", &[], b""),
        (_, "/api/304") => Action::Steps(vec![Step::Write(
            format!(
                "HTTP/1.1 304 Not Modified\r\nDate: {}\r\nETag: \"v1\"\r\n\r\n",
                upstream::UPSTREAM_DATE
            )
            .into_bytes(),
        )]),
        (_, "/api/304cl") => Action::Steps(vec![Step::Write(
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v2\"\r\nContent-Length: 1234\r\n\r\n".to_vec(),
        )]),
        _ => upstream::ok("after"),
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();

    // HEAD of a chunked resource: the head says chunked, no body follows.
    c.send(b"HEAD /api/chunked HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.head();
    assert_eq!(r.status, 200, "{r:?}");
    let r = c.get("/api/after");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"after"[..]),
        "after chunked HEAD: {r:?}"
    );
    // 304 with a Content-Length (of the representation): no body either.
    c.send(b"GET /api/304cl HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.head();
    assert_eq!(r.status, 304, "{r:?}");
    let r = c.get("/api/after");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"after"[..]),
        "after 304 with CL: {r:?}"
    );

    c.send(b"HEAD /api/h HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.head();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.content_length(),
        Some(1234),
        "HEAD keeps the upstream's length: {r:?}"
    );
    let r = c.get("/api/after");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"after"[..]),
        "after HEAD: {r:?}"
    );

    let r = c.get("/api/204");
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.body.is_empty());
    let r = c.get("/api/after");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"after"[..]),
        "after 204: {r:?}"
    );

    c.send(b"GET /api/304 HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"v1\"\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 304, "{r:?}");
    assert_eq!(r.header("etag"), Some("\"v1\""), "{r:?}");
    let r = c.get("/api/after");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"after"[..]),
        "after 304: {r:?}"
    );
    c.expect_silence(Duration::from_millis(100), "after the answers");

    let reqs = up.requests();
    assert_eq!(reqs[4].method, "HEAD");
    assert_eq!(reqs[8].header("if-none-match"), Some("\"v1\""));
}

#[test]
fn post_with_content_length_body_goes_both_ways() {
    let site = site();
    let up = Upstream::start(|_| Action::Echo);
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    let body = upstream::pattern_vec(7, 0, 200_000);
    c.send(
        format!(
            "POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body);
    let r = c.response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_same_bytes(&r.body, &body, "echoed body");
    let req = up.only_request();
    assert_eq!(req.method, "POST");
    assert_eq!(req.header("content-length"), Some("200000"), "{req:#?}");
    assert_eq!(req.header("content-type"), Some("application/octet-stream"));
    assert!(!req.chunked);
    assert_same_bytes(&req.body, &body, "body seen upstream");

    // A small one on the same connection, and an empty one.
    c.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world");
    assert_eq!(c.response().body, b"hello world");
    c.send(b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.len()), (200, 0), "{r:?}");
    assert_eq!(up.requests().len(), 3);
}

#[test]
fn post_with_chunked_body_is_forwarded_chunked() {
    let site = site();
    let up = Upstream::start(|_| Action::Echo);
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    let big = upstream::pattern_vec(9, 0, 100_000);
    let mut req =
        b"POST /api/chunky HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(b"5\r\nhello\r\n");
    req.extend_from_slice(b"1;ext=1\r\n \r\n");
    req.extend_from_slice(format!("{:x}\r\n", big.len()).as_bytes());
    req.extend_from_slice(&big);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    // In pieces, so the proxy sees partial chunks.
    for piece in req.chunks(7_777) {
        c.send(piece);
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = c.response();
    assert_eq!(r.status, 200, "{r:?}");
    let mut want = b"hello ".to_vec();
    want.extend_from_slice(&big);
    assert_same_bytes(&r.body, &want, "echo of the chunked body");
    let got = up.only_request();
    assert!(
        got.chunked,
        "upstream should get the body chunked: {:?}",
        got.headers
    );
    assert!(!got.has("content-length"), "{:?}", got.headers);
    assert_same_bytes(&got.body, &want, "decoded body upstream");
    assert_eq!(c.get("/hello.txt").body, HELLO, "connection reusable after");
}

#[test]
fn chunked_response_is_relayed_with_its_trailer_section() {
    let site = site();
    let up = Upstream::start(|_| {
        upstream::chunked(&[b"hello ", b"chunked ", b"world"], "X-Checksum: abc\r\n")
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    for i in 0..3 {
        c.send(&get_req("/api/c"));
        let r = c.head();
        assert_eq!(r.status, 200, "round {i}: {r:?}");
        assert!(is_chunked(&r), "chunked relayed as is: {r:?}");
        assert!(r.content_length().is_none(), "{r:?}");
        let (body, _) = read_chunked(&mut c);
        assert_eq!(body, b"hello chunked world", "round {i}");
    }
    assert_eq!(c.get("/hello.txt").body, HELLO, "connection reusable after");
    c.expect_silence(
        Duration::from_millis(100),
        "nothing extra after the chunked bodies",
    );
}

#[test]
fn large_responses_are_relayed_intact() {
    let site = site();
    const LEN: u64 = 6 << 20;
    let up = Upstream::start(|req| {
        if req.target.contains("chunked") {
            upstream::big_chunked(LEN, 3)
        } else {
            upstream::big(LEN, 4)
        }
    });
    let server = proxy_server(&site, vec![route("/big", &[up.addr])], |_| {});
    let mut c = server.client();
    let r = c.get("/big/cl");
    assert_eq!((r.status, r.content_length()), (200, Some(LEN)), "{r:?}");
    assert_same_bytes(
        &r.body,
        &upstream::pattern_vec(4, 0, LEN as usize),
        "CL body",
    );
    c.send(&get_req("/big/chunked"));
    let r = full_response(&mut c);
    assert_eq!(r.status, 200);
    assert_same_bytes(
        &r.body,
        &upstream::pattern_vec(3, 0, LEN as usize),
        "chunked body",
    );
    assert_eq!(c.get("/hello.txt").body, HELLO);
}

#[test]
fn close_delimited_response_is_relayed_then_the_client_connection_closes() {
    let site = site();
    let up = Upstream::start(|req| {
        if req.target.ends_with("/10") {
            upstream::raw(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end, one-oh",
                true,
            )
        } else {
            upstream::raw(
                "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end, one-one",
                true,
            )
        }
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    for (path, want) in [
        ("/api/10", "until the end, one-oh"),
        ("/api/11", "until the end, one-one"),
    ] {
        let mut c = server.client();
        c.send(&get_req(path));
        let r = c.head();
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert!(r.content_length().is_none(), "{path}: {r:?}");
        assert!(!is_chunked(&r), "{path}: {r:?}");
        let (body, end) = c.read_to_close();
        assert_eq!(String::from_utf8_lossy(&body), want, "{path}");
        end.unwrap_or_else(|e| panic!("{path}: expected a clean close, got {e}"));
    }
    // The server is fine afterwards.
    assert_eq!(common::get(server.addr, "/hello.txt").body, HELLO);
}

#[test]
fn expect_100_continue_passes_through_before_the_final_answer() {
    let site = site();
    let up = Upstream::start(|_| Action::Echo);
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    c.send(b"POST /api/upload HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n");
    // The body is only sent once the 100 arrives.
    let r = c.head();
    assert_eq!(r.status, 100, "expected 100 Continue first: {r:?}");
    c.send(b"continued");
    let r = full_response(&mut c);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"continued"[..]),
        "{r:?}"
    );
    let req = up.only_request();
    assert_eq!(req.body, b"continued");
    assert_eq!(c.get("/hello.txt").body, HELLO);
}

#[test]
fn unsolicited_100_continue_is_passed_before_the_final_answer() {
    let site = site();
    let up = Upstream::start(|_| {
        upstream::raw(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
            false,
        )
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    c.send(&get_req("/api/x"));
    let r = c.head();
    assert_eq!(r.status, 100, "{r:?}");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"final"[..]), "{r:?}");
    c.send(&get_req("/api/x"));
    let r = full_response(&mut c);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"final"[..]),
        "again: {r:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The upstream keep-alive pool
// ---------------------------------------------------------------------------------------------

#[test]
fn upstream_connection_is_pooled_and_reused() {
    let site = site();
    let up = Upstream::start(|req| upstream::ok(format!("answer to {}", req.target)));
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], one_loop);
    let mut c = server.client();
    for i in 0..10 {
        let r = c.get(&format!("/api/one/{i}"));
        assert_eq!(r.text(), format!("answer to /api/one/{i}"));
    }
    drop(c);
    for i in 0..10 {
        let mut c = server.client();
        let r = c.get(&format!("/api/many/{i}"));
        assert_eq!(r.text(), format!("answer to /api/many/{i}"));
    }
    assert_eq!(up.requests().len(), 20);
    assert_eq!(
        up.accepts(),
        1,
        "20 sequential requests should share one upstream connection"
    );
}

#[test]
fn proxy_idle_zero_keeps_no_upstream_connection() {
    let site = site();
    let up = Upstream::start(|_| upstream::ok("x"));
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |cfg| {
        cfg.proxy_idle = Some(0)
    });
    let mut c = server.client();
    for _ in 0..3 {
        assert_eq!(c.get("/api/x").body, b"x");
    }
    assert_eq!(up.accepts(), 3, "no pooling with proxy_idle = 0");
}

#[test]
fn upstream_closing_its_idle_connection_is_survived() {
    let site = site();
    // Every answer is followed by a close, without a Connection: close header (an upstream whose
    // keep-alive timeout ran out just after answering).
    let up = Upstream::start(|_| {
        Action::Steps(vec![
            Step::Write(upstream::head_bytes(200, "OK", &[], Some(4))),
            Step::Write(b"pong".to_vec()),
            Step::Close,
        ])
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    assert_eq!(c.get("/api/ping").body, b"pong");
    // Time for the close to reach the pool.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.get("/api/ping").body, b"pong", "after the idle close");
    // And straight away, racing the close.
    for i in 0..5 {
        let r = c.get("/api/ping");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"pong"[..]),
            "race {i}: {r:?}"
        );
    }
    assert_eq!(
        up.requests().len(),
        up.accepts(),
        "one request per upstream connection"
    );
}

/// An upstream that follows every answer with a FIN (after `delay`) but keeps its socket open for
/// reading (a lingering close, as many servers do): a request written to it is accepted by the
/// kernel and never answered, and no reset comes back.
fn half_closing_upstream(delay: Duration) -> Upstream {
    Upstream::start(move |_| {
        Action::Steps(vec![
            Step::Write(upstream::head_bytes(200, "OK", &[], Some(4))),
            Step::Write(b"pong".to_vec()),
            Step::Sleep(delay),
            Step::HalfClose,
        ])
    })
}

fn check_half_closing_upstream(delay: Duration) {
    let site = site();
    let up = half_closing_upstream(delay);
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |cfg| {
        cfg.proxy_timeout = Duration::from_secs(2)
    });
    let mut c = server.client();
    assert_eq!(c.get("/api/ping").body, b"pong");
    std::thread::sleep(Duration::from_millis(100) + delay);
    for i in 0..3 {
        let t = Instant::now();
        let r = c.get("/api/ping");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"pong"[..]),
            "request {} after the upstream's FIN (took {:?}): {r:?}",
            i + 2,
            t.elapsed()
        );
    }
    assert_eq!(up.accepts(), 4, "one upstream connection per answer");
}

#[test]
fn upstream_fin_while_the_connection_is_idle_in_the_pool_is_noticed() {
    check_half_closing_upstream(Duration::from_millis(50));
}

#[test]
fn upstream_fin_right_behind_the_response_is_noticed() {
    // The FIN arrives with (or just after) the last body bytes, before the connection is pooled.
    check_half_closing_upstream(Duration::ZERO);
}

#[test]
fn get_failing_on_a_reused_connection_is_retried_on_a_fresh_one() {
    let site = site();
    // The first request on a connection is answered; a later one is read and then the
    // connection closes without an answer.
    let up = Upstream::start(|req| {
        if req.seq == 0 {
            upstream::ok(format!("fresh {}", req.conn))
        } else {
            upstream::close()
        }
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    assert_eq!(c.get("/api/a").text(), "fresh 0");
    let r = c.get("/api/b");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "fresh 1"),
        "retried: {r:?}"
    );
    let reqs = up.requests();
    let seen: Vec<(usize, usize, &str)> = reqs
        .iter()
        .map(|r| (r.conn, r.seq, r.target.as_str()))
        .collect();
    assert_eq!(seen, [(0, 0, "/api/a"), (0, 1, "/api/b"), (1, 0, "/api/b")]);
    assert_eq!(up.accepts(), 2);
}

#[test]
fn post_failing_on_a_reused_connection_is_not_retried() {
    let site = site();
    let up = Upstream::start(|req| {
        if req.seq == 0 {
            upstream::ok("fresh")
        } else {
            upstream::close()
        }
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    assert_eq!(c.get("/api/a").text(), "fresh");
    c.send(b"POST /api/b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    let r = c.response();
    assert_eq!(
        r.status, 502,
        "POST is not idempotent: no retry, 502: {r:?}"
    );
    std::thread::sleep(Duration::from_millis(50));
    let seen: Vec<(usize, usize, String)> = up
        .requests()
        .iter()
        .map(|r| (r.conn, r.seq, r.method.clone()))
        .collect();
    assert_eq!(
        seen,
        [(0, 0, "GET".to_string()), (0, 1, "POST".to_string())]
    );
}

#[test]
fn client_leaving_mid_response_does_not_poison_the_pool() {
    let site = site();
    let up = Upstream::start(|req| {
        if req.target == "/api/big" {
            upstream::big(20 << 20, 5)
        } else {
            upstream::ok(format!("small {}", req.target))
        }
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    {
        let mut c = server.client();
        c.send(&get_req("/api/big"));
        let r = c.head();
        assert_eq!(r.status, 200);
        let part = c.take(100_000);
        assert_same_bytes(
            &part,
            &upstream::pattern_vec(5, 0, 100_000),
            "start of big body",
        );
        // Gone without reading the rest.
    }
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..5 {
        let mut c = server.client();
        let r = c.get(&format!("/api/s{i}"));
        assert_eq!(
            (r.status, r.text()),
            (200, format!("small /api/s{i}")),
            "a later request must not see the rest of the abandoned body"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Connecting: refused, failover, fail timeout, connect timeout
// ---------------------------------------------------------------------------------------------

#[test]
fn refused_upstreams_give_502_quickly_and_the_connection_stays_usable() {
    let site = site();
    let server = proxy_server(
        &site,
        vec![route("/api", &[refused_addr(), refused_addr()])],
        |cfg| cfg.proxy_connect_timeout = Duration::from_secs(5),
    );
    let mut c = server.client();
    for i in 0..2 {
        let t = Instant::now();
        let r = c.get("/api/x");
        let took = t.elapsed();
        assert_eq!(r.status, 502, "round {i}: {r:?}");
        assert!(
            took < Duration::from_secs(1),
            "round {i}: 502 took {took:?}"
        );
        assert!(!r.closes(), "round {i}: keep-alive after a 502: {r:?}");
        let r = c.get("/hello.txt");
        assert_eq!((r.status, r.body.as_slice()), (200, HELLO), "round {i}");
    }
}

#[test]
fn connect_timeout_gives_504_and_the_connection_stays_usable() {
    let site = site();
    let hole = blackhole();
    let server = proxy_server(&site, vec![route("/api", &[hole.addr])], |cfg| {
        cfg.proxy_connect_timeout = Duration::from_millis(300)
    });
    let mut c = server.client();
    let t = Instant::now();
    let r = c.get("/api/x");
    let took = t.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "504 after {took:?}, connect timeout 300 ms"
    );
    assert!(!r.closes(), "keep-alive after a 504: {r:?}");
    let r = c.get("/hello.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
}

#[test]
fn refused_first_upstream_fails_over_to_the_second() {
    let site = site();
    let up = Upstream::start(|_| upstream::ok("second"));
    let server = proxy_server(
        &site,
        vec![route("/api", &[refused_addr(), up.addr])],
        |_| {},
    );
    let mut c = server.client();
    for i in 0..4 {
        let t = Instant::now();
        let r = c.get("/api/x");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"second"[..]),
            "round {i}: {r:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "round {i}: {:?}",
            t.elapsed()
        );
    }
    for i in 0..4 {
        let r = common::get(server.addr, "/api/y");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"second"[..]),
            "fresh client {i}: {r:?}"
        );
    }
}

#[test]
fn failed_upstream_is_skipped_for_the_fail_timeout() {
    let site = site();
    let a = refused_addr();
    let b = Upstream::start(|_| upstream::ok("b"));
    let server = proxy_server(&site, vec![route("/api", &[a, b.addr])], |cfg| {
        one_loop(cfg);
        cfg.proxy_fail_timeout = Duration::from_millis(1000)
    });
    let t0 = Instant::now();
    assert_eq!(
        common::get(server.addr, "/api/1").body,
        b"b",
        "failover to b"
    );
    // Now `a` comes up; it is still marked failed for a while.
    let a_up = Upstream::on_listener(
        TcpListener::bind(a).expect("rebind the refused port"),
        Options::default(),
        |_| upstream::ok("a"),
    );
    for i in 0..6 {
        let r = common::get(server.addr, "/api/2");
        assert_eq!(
            r.body, b"b",
            "request {i}: a is skipped for the fail timeout"
        );
    }
    let early = t0.elapsed();
    assert_eq!(a_up.accepts(), 0, "a was tried within {early:?} of failing");
    assert!(
        early < Duration::from_millis(900),
        "too slow to check: {early:?}"
    );
    std::thread::sleep(Duration::from_millis(1100) - early);
    let mut saw_a = false;
    for _ in 0..8 {
        let r = common::get(server.addr, "/api/3");
        assert_eq!(r.status, 200);
        saw_a |= r.body == b"a";
    }
    assert!(saw_a, "after the fail timeout, a gets requests again");
}

#[test]
fn requests_are_spread_over_healthy_upstreams() {
    let site = site();
    let a = Upstream::start(|_| upstream::ok("a"));
    let b = Upstream::start(|_| upstream::ok("b"));
    let server = proxy_server(&site, vec![route("/api", &[a.addr, b.addr])], |_| {});
    for _ in 0..10 {
        assert_eq!(common::get(server.addr, "/api/x").status, 200);
    }
    let (na, nb) = (a.requests().len(), b.requests().len());
    assert_eq!(na + nb, 10);
    assert!(na >= 2 && nb >= 2, "round robin: a got {na}, b got {nb}");
}

// ---------------------------------------------------------------------------------------------
// Broken upstreams
// ---------------------------------------------------------------------------------------------

#[test]
fn upstream_closing_before_answering_gives_502() {
    let site = site();
    let up = Upstream::start(|_| upstream::close());
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    let t = Instant::now();
    let r = c.get("/api/x");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    if !r.closes() {
        assert_eq!(
            c.get("/hello.txt").body,
            HELLO,
            "connection usable after the 502"
        );
    }
}

static HUGE_HEAD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let mut h = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..2_000 {
        h.push_str(&format!("X-Filler-{i}: {}\r\n", "y".repeat(40)));
    }
    h.push_str("Content-Length: 2\r\n\r\nok");
    h
});

#[test]
fn malformed_upstream_responses_give_502() {
    let cases: Vec<(&'static str, &'static str)> = vec![
        (
            "both CL and TE",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "bad CL",
            "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nabc",
        ),
        (
            "negative CL",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc",
        ),
        (
            "conflicting CLs",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        ("garbage status line", "SPDY/9 what\r\n\r\n"),
        (
            "bad status code",
            "HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",
        ),
        (
            "space in a header name",
            "HTTP/1.1 200 OK\r\nX Bad: 1\r\nContent-Length: 2\r\n\r\nok",
        ),
        ("head over 100 KiB", HUGE_HEAD.as_str()),
    ];
    let site = site();
    let answers: Vec<&'static str> = cases.iter().map(|c| c.1).collect();
    let up = Upstream::start(move |req| {
        let i: usize = req.target.rsplit('/').next().unwrap().parse().unwrap();
        upstream::raw(answers[i], true)
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut failures = Vec::new();
    for (i, (what, _)) in cases.iter().enumerate() {
        let mut c = server.client();
        c.send(&get_req(&format!("/api/bad/{i}")));
        match c.try_head() {
            Ok(r) if r.status == 502 => {}
            Ok(r) => failures.push(format!(
                "{what}: got {} {} {:?}",
                r.status, r.reason, r.headers
            )),
            Err(e) => failures.push(format!("{what}: no answer ({e})")),
        }
    }
    assert!(
        failures.is_empty(),
        "expected 502 for each:\n{}",
        failures.join("\n")
    );
    assert_eq!(common::get(server.addr, "/hello.txt").body, HELLO);
}

#[test]
fn upstream_closing_mid_body_truncates_and_closes_the_client_connection() {
    let site = site();
    let up = Upstream::start(|req| {
        if req.target.contains("chunked") {
            Action::Steps(vec![
                Step::Write(upstream::head_bytes(
                    200,
                    "OK",
                    &[("Transfer-Encoding", "chunked")],
                    None,
                )),
                Step::Write(b"a\r\n0123456789\r\n3e8\r\nonly part of a chunk".to_vec()),
                Step::Close,
            ])
        } else {
            Action::Steps(vec![
                Step::Write(upstream::head_bytes(200, "OK", &[], Some(100_000))),
                Step::Pattern {
                    seed: 11,
                    from: 0,
                    len: 30_000,
                },
                Step::Close,
            ])
        }
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});

    let mut c = server.client();
    c.send(&get_req("/api/cl"));
    let r = c.head();
    assert_eq!(
        (r.status, r.content_length()),
        (200, Some(100_000)),
        "{r:?}"
    );
    let (got, _end) = c.read_to_close();
    assert!(
        got.len() < 100_000,
        "got {} bytes of a truncated body",
        got.len()
    );
    assert_same_bytes(
        &got,
        &upstream::pattern_vec(11, 0, got.len()),
        "the part that came",
    );
    assert_eq!(
        got.len(),
        30_000,
        "every byte the upstream sent is relayed before the close"
    );

    let mut c = server.client();
    c.send(&get_req("/api/chunked"));
    let r = c.head();
    assert_eq!(r.status, 200, "{r:?}");
    let (got, _end) = c.read_to_close();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("a\r\n0123456789\r\n"), "{text:?}");
    assert!(
        !text.contains("\r\n0\r\n\r\n"),
        "the proxy must not end a truncated body: {text:?}"
    );

    assert_eq!(common::get(server.addr, "/hello.txt").body, HELLO);
}

#[test]
fn stalled_upstream_gives_504_after_the_proxy_timeout() {
    let site = site();
    let up = Upstream::start(|_| upstream::after(Duration::from_secs(3), upstream::ok("late")));
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |cfg| {
        cfg.proxy_timeout = Duration::from_millis(300)
    });
    let mut c = server.client();
    let t = Instant::now();
    let r = c.get("/api/slow");
    let took = t.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(2500),
        "504 after {took:?}, proxy timeout 300 ms"
    );
    if !r.closes() {
        assert_eq!(c.get("/hello.txt").body, HELLO, "usable after the 504");
    }
}

#[test]
fn upstream_stalling_mid_body_closes_the_client_after_the_proxy_timeout() {
    let site = site();
    let up = Upstream::start(|_| {
        Action::Steps(vec![
            Step::Write(upstream::head_bytes(200, "OK", &[], Some(20))),
            Step::Write(b"first half".to_vec()),
            Step::Sleep(Duration::from_secs(4)),
            Step::Write(b"other half".to_vec()),
        ])
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |cfg| {
        cfg.proxy_timeout = Duration::from_millis(300)
    });
    let mut c = server.client();
    let t = Instant::now();
    c.send(&get_req("/api/x"));
    let r = c.head();
    assert_eq!(r.status, 200);
    let (got, _) = c.read_to_close();
    let took = t.elapsed();
    assert_eq!(got, b"first half");
    assert!(
        took < Duration::from_millis(2500),
        "closed after {took:?}, proxy timeout 300 ms"
    );
}

// ---------------------------------------------------------------------------------------------
// Pipelining and routing
// ---------------------------------------------------------------------------------------------

#[test]
fn pipelined_proxied_requests_are_answered_in_order() {
    let site = site();
    let up = Upstream::start(|req| {
        let i: usize = req.target.rsplit('/').next().unwrap().parse().unwrap();
        // Different sizes, some chunked, so the framing of each answer matters.
        let body = upstream::pattern_vec(i as u64, 0, 1 + i * 7_919);
        if i.is_multiple_of(3) {
            let mut b = upstream::head_bytes(200, "OK", &[("Transfer-Encoding", "chunked")], None);
            b.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
            b.extend_from_slice(&body);
            b.extend_from_slice(b"\r\n0\r\n\r\n");
            upstream::raw(b, false)
        } else {
            upstream::reply(200, "OK", &[("X-Index", &i.to_string())], &body)
        }
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    let mut burst = Vec::new();
    for i in 0..10 {
        burst.extend_from_slice(&get_req(&format!("/api/p/{i}")));
    }
    c.send(&burst);
    for i in 0..10 {
        let r = full_response(&mut c);
        assert_eq!(r.status, 200, "answer {i}: {r:?}");
        assert_same_bytes(
            &r.body,
            &upstream::pattern_vec(i as u64, 0, 1 + i * 7_919),
            &format!("answer {i}"),
        );
    }
    c.expect_silence(Duration::from_millis(100), "after 10 answers");
}

#[test]
fn proxied_and_static_requests_interleave_on_one_connection() {
    let site = site();
    let up = Upstream::start(|req| upstream::ok(format!("proxied {}", req.target)));
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    // One after the other.
    for i in 0..3 {
        assert_eq!(
            c.get(&format!("/api/{i}")).text(),
            format!("proxied /api/{i}")
        );
        assert_eq!(c.get("/hello.txt").body, HELLO);
        assert_eq!(c.get("/static/a.txt").body, b"static a\n");
    }
    assert_eq!(c.get("/nope.txt").status, 404);
    // Pipelined: static, proxied, static, proxied ...
    let mut burst = Vec::new();
    for i in 0..10 {
        if i % 2 == 0 {
            burst.extend_from_slice(&get_req("/hello.txt"));
        } else {
            burst.extend_from_slice(&get_req(&format!("/api/pipe/{i}")));
        }
    }
    c.send(&burst);
    for i in 0..10 {
        let r = c.response();
        assert_eq!(r.status, 200, "answer {i}: {r:?}");
        if i % 2 == 0 {
            assert_eq!(r.body, HELLO, "answer {i}");
        } else {
            assert_eq!(r.text(), format!("proxied /api/pipe/{i}"), "answer {i}");
        }
    }
    c.expect_silence(Duration::from_millis(100), "after the pipelined mix");
}

#[test]
fn longest_prefix_wins() {
    let site = site();
    let short = Upstream::start(|_| upstream::ok("short"));
    let long = Upstream::start(|_| upstream::ok("long"));
    for reversed in [false, true] {
        let mut routes = vec![route("/api", &[short.addr]), route("/api/v2", &[long.addr])];
        if reversed {
            routes.reverse();
        }
        let server = proxy_server(&site, routes, |_| {});
        let mut c = server.client();
        for (path, want) in [
            ("/api/v2/items", "long"),
            ("/api/v2", "long"),
            ("/api/v1/items", "short"),
            ("/api", "short"),
            ("/api/", "short"),
        ] {
            let r = c.get(path);
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, want),
                "{path} (routes reversed: {reversed})"
            );
        }
        // Outside every prefix: the document root.
        assert_eq!(c.get("/hello.txt").body, HELLO);
        assert_eq!(c.get("/ap").status, 404);
    }
}

// ---------------------------------------------------------------------------------------------
// Memory stays bounded (the binary, so its RSS can be measured alone)
// ---------------------------------------------------------------------------------------------

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

const RSS_GROWTH_LIMIT_KIB: u64 = 16 * 1024;

#[test]
fn huge_response_to_a_slow_client_keeps_memory_bounded() {
    const LEN: u64 = 50 << 20;
    let site = site();
    let up = Upstream::start(|req| {
        if req.target == "/big/huge" {
            upstream::big(LEN, 21)
        } else {
            upstream::ok("warm")
        }
    });
    let server = BinaryServer::start(
        &site.root(),
        &["--proxy", &format!("/big=127.0.0.1:{}", up.addr.port())],
    );
    let pid = server.child.id();
    // Warm up the proxy path, then take the baseline.
    assert_eq!(server.client().get("/big/warm").body, b"warm");
    let base = rss_kib(pid);

    let t = Instant::now();
    let mut c = Client::connect_small_rcvbuf(server.addr, 64 * 1024);
    c.send(&get_req("/big/huge"));
    let r = c.head();
    assert_eq!((r.status, r.content_length()), (200, Some(LEN)), "{r:?}");
    let mut got = c.buffered() as u64;
    // Bytes already buffered with the head.
    let first = c.take(c.buffered());
    assert_same_bytes(
        &first,
        &upstream::pattern_vec(21, 0, first.len()),
        "first bytes",
    );
    let mut buf = vec![0u8; 32 * 1024];
    let mut want = vec![0u8; 32 * 1024];
    let mut peak = base;
    let mut reads = 0u64;
    while got < LEN {
        assert!(
            t.elapsed() < Duration::from_secs(25),
            "too slow: {got} of {LEN} bytes"
        );
        let n = c
            .read_some(&mut buf)
            .unwrap_or_else(|e| panic!("read after {got} bytes: {e}"));
        assert!(n > 0, "EOF after {got} of {LEN} bytes");
        let n = n.min((LEN - got) as usize);
        upstream::pattern(21, got, &mut want[..n]);
        if buf[..n] != want[..n] {
            let i = buf[..n]
                .iter()
                .zip(&want[..n])
                .position(|(a, b)| a != b)
                .unwrap();
            panic!("byte {} of the body differs", got + i as u64);
        }
        got += n as u64;
        reads += 1;
        if reads.is_multiple_of(64) {
            peak = peak.max(rss_kib(pid));
        }
        // The slow part: about 30 MB/s at most.
        std::thread::sleep(Duration::from_millis(1));
    }
    peak = peak.max(rss_kib(pid));
    let growth = peak.saturating_sub(base);
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "RSS grew by {growth} KiB (base {base} KiB, peak {peak} KiB) relaying {LEN} bytes"
    );
    // The connection is still good.
    assert_eq!(c.get("/hello.txt").body, HELLO);
    eprintln!(
        "50 MiB to a slow client in {:?}, RSS growth {growth} KiB",
        t.elapsed()
    );
}

#[test]
fn huge_upload_to_a_slow_upstream_keeps_memory_bounded() {
    const LEN: usize = 24 << 20;
    let site = site();
    let up = Upstream::with_options(
        Options {
            slow_body: Some(Duration::from_millis(2)),
            keep_bodies: false,
            ..Options::default()
        },
        |req| upstream::ok(format!("got {}", req.body_len)),
    );
    let server = BinaryServer::start(
        &site.root(),
        &[
            "--proxy",
            &format!("/up=127.0.0.1:{}", up.addr.port()),
            "--max-body",
            "1000000000",
        ],
    );
    let pid = server.child.id();
    assert_eq!(server.client().get("/up/warm").text(), "got 0");
    let base = rss_kib(pid);

    let t = Instant::now();
    let mut c = server.client();
    let mut writer = c.stream.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let w = std::thread::spawn(move || -> io::Result<()> {
        writer.write_all(
            format!("POST /up/load HTTP/1.1\r\nHost: t\r\nContent-Length: {LEN}\r\n\r\n")
                .as_bytes(),
        )?;
        let block = upstream::pattern_vec(1, 0, 256 * 1024);
        let mut sent = 0;
        while sent < LEN {
            let k = block.len().min(LEN - sent);
            writer.write_all(&block[..k])?;
            sent += k;
        }
        Ok(())
    });
    let mut peak = base;
    while !w.is_finished() {
        assert!(t.elapsed() < Duration::from_secs(25), "upload too slow");
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(5));
    }
    w.join().unwrap().expect("upload");
    let r = c.response();
    peak = peak.max(rss_kib(pid));
    assert_eq!((r.status, r.text()), (200, format!("got {LEN}")), "{r:?}");
    let growth = peak.saturating_sub(base);
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "RSS grew by {growth} KiB (base {base} KiB, peak {peak} KiB) relaying a {LEN}-byte upload"
    );
    eprintln!(
        "24 MiB upload to a slow upstream in {:?}, RSS growth {growth} KiB",
        t.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// More edges
// ---------------------------------------------------------------------------------------------

#[test]
fn absolute_form_request_is_routed_by_its_path_and_forwarded_in_origin_form() {
    let site = site();
    let up = Upstream::start(|req| upstream::ok(req.target.clone()));
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    c.send(b"GET http://example.test/api/abs?x=1 HTTP/1.1\r\nHost: example.test\r\n\r\n");
    let r = c.response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "/api/abs?x=1"),
        "{r:?}"
    );
    let req = up.only_request();
    assert_eq!(req.target, "/api/abs?x=1");
    assert_eq!(req.header("host"), Some("example.test"));
}

#[test]
fn pipelined_requests_with_bodies_keep_their_framing() {
    let site = site();
    let up = Upstream::start(|req| {
        if req.method == "GET" {
            upstream::ok(format!("get {}", req.target))
        } else {
            Action::Echo
        }
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    let mut burst = Vec::new();
    burst.extend_from_slice(b"POST /api/1 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nfirst");
    burst.extend_from_slice(&get_req("/api/2"));
    burst.extend_from_slice(
        b"POST /api/3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nthi\r\n2\r\nrd\r\n0\r\n\r\n",
    );
    burst.extend_from_slice(b"PUT /api/4 HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nfourth");
    burst.extend_from_slice(&get_req("/hello.txt"));
    burst.extend_from_slice(&get_req("/api/6"));
    c.send(&burst);
    let want: [&[u8]; 6] = [
        b"first",
        b"get /api/2",
        b"third",
        b"fourth",
        HELLO,
        b"get /api/6",
    ];
    for (i, w) in want.iter().enumerate() {
        let r = full_response(&mut c);
        assert_eq!(
            (r.status, r.text()),
            (200, String::from_utf8_lossy(w).into_owned()),
            "answer {i}"
        );
    }
    c.expect_silence(Duration::from_millis(100), "after the answers");
    let bodies: Vec<(String, Vec<u8>)> = up
        .requests()
        .into_iter()
        .map(|r| (r.method, r.body))
        .collect();
    assert_eq!(
        bodies,
        [
            ("POST".to_string(), b"first".to_vec()),
            ("GET".to_string(), vec![]),
            ("POST".to_string(), b"third".to_vec()),
            ("PUT".to_string(), b"fourth".to_vec()),
            ("GET".to_string(), vec![]),
        ]
    );
}

#[test]
fn client_leaving_before_the_answer_does_not_poison_the_pool() {
    let site = site();
    let up = Upstream::start(|req| {
        let body = format!("answer to {}", req.target);
        if req.target.contains("slow") {
            upstream::after(Duration::from_millis(300), upstream::ok(body))
        } else {
            upstream::ok(body)
        }
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    {
        let mut c = server.client();
        c.send(&get_req("/api/slow"));
        let _ = up.wait_requests(1, Duration::from_secs(2));
        // Gone before the answer.
    }
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..4 {
        let r = common::get(server.addr, &format!("/api/fast/{i}"));
        assert_eq!(
            (r.status, r.text()),
            (200, format!("answer to /api/fast/{i}")),
            "request {i}: must not get the abandoned request's late answer"
        );
    }
    std::thread::sleep(Duration::from_millis(400));
    for i in 4..6 {
        let r = common::get(server.addr, &format!("/api/fast/{i}"));
        assert_eq!(
            (r.status, r.text()),
            (200, format!("answer to /api/fast/{i}")),
            "request {i}, after the late answer was due"
        );
    }
}

#[test]
fn upstream_connection_close_or_http10_answer_is_not_pooled_and_the_client_stays() {
    let site = site();
    // The upstream keeps its socket open after these answers; a proxy that pools them anyway
    // shows up as fewer accepts.
    let up = Upstream::start(|req| {
        if req.target.contains("ten") {
            upstream::raw("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nten", false)
        } else {
            upstream::reply(200, "OK", &[("Connection", "close")], b"closing")
        }
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    for i in 0..2 {
        let r = c.get("/api/close");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "closing"),
            "{i}: {r:?}"
        );
        assert!(
            !r.closes(),
            "the upstream's Connection: close is hop-by-hop: {r:?}"
        );
        let r = c.get("/api/ten");
        assert_eq!((r.status, r.text().as_str()), (200, "ten"), "{i}: {r:?}");
        assert!(!r.closes(), "{r:?}");
    }
    assert_eq!(
        up.accepts(),
        4,
        "answers that close their connection must not be pooled"
    );
}

#[test]
fn client_connection_close_is_honoured_and_the_upstream_connection_kept() {
    let site = site();
    let up = Upstream::start(|_| upstream::ok("bye"));
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], one_loop);
    for i in 0..3 {
        let mut c = server.client();
        c.send(b"GET /api/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let r = c.response();
        assert_eq!((r.status, r.text().as_str()), (200, "bye"), "{i}");
        assert!(r.closes(), "{r:?}");
        c.expect_closed("client asked for close");
    }
    for r in up.requests() {
        assert_no_hop_by_hop(&r, &[]);
    }
    assert_eq!(
        up.accepts(),
        1,
        "the upstream connection does not close with the client's"
    );
}

#[test]
fn slow_but_steady_upstream_is_not_cut_off_by_the_proxy_timeout() {
    let site = site();
    let up = Upstream::start(|_| {
        let mut steps = vec![
            Step::Sleep(Duration::from_millis(150)),
            Step::Write(upstream::head_bytes(200, "OK", &[], Some(8))),
        ];
        for b in b"12345678" {
            steps.push(Step::Sleep(Duration::from_millis(150)));
            steps.push(Step::Write(vec![*b]));
        }
        Action::Steps(steps)
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |cfg| {
        cfg.proxy_timeout = Duration::from_millis(400)
    });
    let mut c = server.client();
    let r = c.get("/api/drip");
    assert_eq!((r.status, r.text().as_str()), (200, "12345678"), "{r:?}");
}

#[test]
fn a_slow_upstream_does_not_hold_up_other_clients() {
    let site = site();
    let up = Upstream::start(|_| upstream::after(Duration::from_millis(700), upstream::ok("late")));
    let hole = blackhole();
    let server = proxy_server(
        &site,
        vec![route("/api", &[up.addr]), route("/hole", &[hole.addr])],
        |cfg| cfg.proxy_connect_timeout = Duration::from_millis(700),
    );
    let mut slow = server.client();
    slow.send(&get_req("/api/slow"));
    let mut stuck = server.client();
    stuck.send(&get_req("/hole/x"));
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let mut c = server.client();
    for _ in 0..5 {
        assert_eq!(c.get("/hello.txt").body, HELLO);
    }
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "static answers took {:?}",
        t.elapsed()
    );
    assert_eq!(slow.response().body, b"late");
    assert_eq!(stuck.response().status, 504);
}

#[test]
fn concurrent_clients_get_their_own_answers() {
    let site = site();
    let up = Upstream::start(|req| {
        let body = format!("answer to {}", req.target);
        if req.target.ends_with("/3") {
            upstream::after(Duration::from_millis(20), upstream::ok(body))
        } else {
            upstream::ok(body)
        }
    });
    // A pool larger than the clients: at most one upstream connection per client is ever busy.
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |cfg| {
        cfg.proxy_idle = Some(32)
    });
    let addr = server.addr;
    let threads: Vec<_> = (0..20)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..8 {
                    let path = format!("/api/t{t}/{i}");
                    let r = c.get(&path);
                    assert_eq!(
                        (r.status, r.text()),
                        (200, format!("answer to {path}")),
                        "client {t} request {i}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    assert_eq!(up.requests().len(), 160);
    assert!(
        up.accepts() <= 20,
        "{} upstream connections for 20 clients",
        up.accepts()
    );
}

#[test]
fn early_hints_103_pass_through_before_the_final_answer() {
    let site = site();
    let up = Upstream::start(|_| {
        upstream::raw(
            "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone",
            false,
        )
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    c.send(&get_req("/api/x"));
    let r = c.head();
    assert_eq!(r.status, 103, "{r:?}");
    assert_eq!(r.header("link"), Some("</style.css>; rel=preload"), "{r:?}");
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "done"), "{r:?}");
}

#[test]
fn binary_proxy_flags_work() {
    let site = site();
    let up = Upstream::start(|req| upstream::ok(format!("bin {}", req.target)));
    let server = BinaryServer::start(
        &site.root(),
        &[
            "--proxy",
            &format!("/api=localhost:{}", up.addr.port()),
            "--proxy",
            &format!("/none={}", refused_addr()),
            "--proxy-connect-timeout",
            "1s",
            "--proxy-timeout",
            "2s",
            "--proxy-idle",
            "2",
            "--proxy-fail-timeout",
            "500ms",
        ],
    );
    let mut c = server.client();
    assert_eq!(c.get("/api/x").text(), "bin /api/x");
    assert_eq!(c.get("/api/y").text(), "bin /api/y");
    assert_eq!(c.get("/none/z").status, 502);
    assert_eq!(c.get("/hello.txt").body, HELLO);
    assert_eq!(up.accepts(), 1);
}

#[test]
fn stray_bytes_after_a_response_never_reach_the_next_request() {
    let site = site();
    // A Content-Length answer followed by bytes nobody asked for, and a HEAD answered with a body;
    // the upstream then keeps the connection open.
    let up = Upstream::start(|req| match (req.method.as_str(), req.target.as_str()) {
        ("HEAD", _) => upstream::raw("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nBODY", false),
        (_, "/api/extra") => upstream::raw(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTALE",
            false,
        ),
        _ => upstream::ok(format!("fresh {}", req.target)),
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    let r = c.get("/api/extra");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{r:?}");
    std::thread::sleep(Duration::from_millis(30));
    let r = c.get("/api/next");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "fresh /api/next"),
        "after stray bytes: {r:?}"
    );

    c.send(b"HEAD /api/h HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.head();
    assert_eq!(r.status, 200, "{r:?}");
    let r = c.get("/api/after-head");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "fresh /api/after-head"),
        "after a HEAD answered with a body: {r:?}"
    );
    c.expect_silence(
        Duration::from_millis(100),
        "nothing stray reaches the client",
    );
}

#[test]
fn expect_100_continue_body_sent_without_waiting_is_forwarded() {
    let site = site();
    let up = Upstream::with_options(
        Options {
            continue_on_expect: false,
            ..Options::default()
        },
        |_| Action::Echo,
    );
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    c.send(b"POST /api/e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n");
    // Like curl: no 100 within a while, send the body anyway.
    std::thread::sleep(Duration::from_millis(200));
    c.send(b"anyway!");
    let r = full_response(&mut c);
    assert_eq!((r.status, r.text().as_str()), (200, "anyway!"), "{r:?}");
    assert_eq!(c.get("/hello.txt").body, HELLO);
}

#[test]
fn ipv6_upstream() {
    let site = site();
    let Ok(l) = TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    let up = Upstream::on_listener(l, Options::default(), |req| {
        upstream::ok(format!("v6 {}", req.target))
    });
    let server = proxy_server(&site, vec![route("/six", &[up.addr])], |_| {});
    let mut c = server.client();
    assert_eq!(c.get("/six/a").text(), "v6 /six/a");
    assert_eq!(c.get("/six/b").text(), "v6 /six/b");
    assert_eq!(up.accepts(), 1);
    assert_eq!(
        up.requests()[0].header("x-forwarded-for"),
        Some("127.0.0.1")
    );
}

#[test]
fn http10_client_never_gets_a_chunked_response() {
    // RFC 9112 §6.1: no Transfer-Encoding in a response to an HTTP/1.0 request; the body is
    // sent close-delimited (or with a length) instead.
    let site = site();
    let up = Upstream::start(|_| upstream::chunked(&[b"chunked ", b"for one-oh"], ""));
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    c.send(b"GET /api/c HTTP/1.0\r\nHost: t\r\n\r\n");
    let r = c.head();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("transfer-encoding").is_none(),
        "chunked response sent to an HTTP/1.0 client: {r:?}"
    );
    let (body, _) = c.read_to_close();
    assert_eq!(String::from_utf8_lossy(&body), "chunked for one-oh");
}

#[test]
fn client_timeouts_do_not_fire_while_the_upstream_is_working() {
    let site = site();
    let up = Upstream::start(|req| {
        if req.target.contains("drip") {
            let mut steps = vec![Step::Write(upstream::head_bytes(200, "OK", &[], Some(6)))];
            for b in b"drip!!" {
                steps.push(Step::Sleep(Duration::from_millis(150)));
                steps.push(Step::Write(vec![*b]));
            }
            Action::Steps(steps)
        } else {
            upstream::after(Duration::from_millis(900), upstream::ok("late"))
        }
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |cfg| {
        cfg.idle_timeout = Duration::from_millis(300);
        cfg.header_timeout = Duration::from_millis(300);
        cfg.send_timeout = Duration::from_millis(300);
        cfg.proxy_timeout = Duration::from_secs(3);
    });
    let mut c = server.client();
    let r = c.get("/api/slow");
    assert_eq!((r.status, r.text().as_str()), (200, "late"), "{r:?}");
    let r = c.get("/api/drip");
    assert_eq!((r.status, r.text().as_str()), (200, "drip!!"), "{r:?}");
}

#[test]
fn shutdown_waits_for_a_proxied_answer_in_flight_but_not_for_the_pool() {
    let site = site();
    let up = Upstream::start(|req| {
        if req.target.contains("slow") {
            upstream::after(Duration::from_millis(400), upstream::ok("finished"))
        } else {
            upstream::ok("quick")
        }
    });
    // Idle pooled connections alone must not hold up a shutdown.
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    assert_eq!(common::get(server.addr, "/api/q").body, b"quick");
    let t = Instant::now();
    server.stop().expect("run() result");
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "stop with only an idle pooled upstream connection took {:?} (grace is 2 s)",
        t.elapsed()
    );

    // An answer in flight is finished first; then the connection closes, as for static answers
    // during a shutdown, and the server stops without waiting out its grace period (2 s).
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    c.send(&get_req("/api/slow"));
    let _ = up.wait_requests(2, Duration::from_secs(2));
    let t = Instant::now();
    let stopper = std::thread::spawn(move || server.stop());
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "finished"), "{r:?}");
    let answered = t.elapsed();
    c.expect_closed("after the last answer during shutdown");
    let closed = t.elapsed();
    for _ in 0..400 {
        if stopper.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let stopped = t.elapsed();
    stopper.join().unwrap().expect("run() result");
    assert!(
        stopped < Duration::from_millis(1500),
        "answered after {answered:?}, client connection closed after {closed:?}, \
         server stopped after {stopped:?} (grace 2 s)"
    );
}

#[test]
fn pipelined_answers_stay_in_order_around_a_502() {
    let site = site();
    let up = Upstream::start(|req| upstream::ok(format!("up {}", req.target)));
    let server = proxy_server(
        &site,
        vec![route("/api", &[up.addr]), route("/dead", &[refused_addr()])],
        |_| {},
    );
    let mut c = server.client();
    let paths = [
        "/api/1",
        "/dead/x",
        "/hello.txt",
        "/api/2",
        "/dead/y",
        "/api/3",
    ];
    let mut burst = Vec::new();
    for p in paths {
        burst.extend_from_slice(&get_req(p));
    }
    c.send(&burst);
    for p in paths {
        let r = c.response();
        if p.starts_with("/dead") {
            assert_eq!(r.status, 502, "{p}: {r:?}");
        } else if p.starts_with("/api") {
            assert_eq!((r.status, r.text()), (200, format!("up {p}")), "{p}");
        } else {
            assert_eq!((r.status, r.body.as_slice()), (200, HELLO), "{p}");
        }
        assert!(!r.closes(), "{p}: {r:?}");
    }
    c.expect_silence(Duration::from_millis(100), "after the answers");
}

#[test]
fn request_head_near_the_limit_is_forwarded_whole() {
    let site = site();
    let up = Upstream::start(|_| upstream::ok("big head ok"));
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    // 40 headers of about 190 bytes: just under the default 8 KiB head limit.
    let mut req = String::from("GET /api/h HTTP/1.1\r\nHost: t\r\n");
    for i in 0..40 {
        req.push_str(&format!("X-Big-{i:02}: {}\r\n", "v".repeat(180)));
    }
    req.push_str("\r\n");
    assert!(req.len() < 8192 && req.len() > 7_500, "{}", req.len());
    c.send(req.as_bytes());
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "big head ok"), "{r:?}");
    let got = up.only_request();
    for i in 0..40 {
        assert_eq!(
            got.header(&format!("x-big-{i:02}")).map(str::len),
            Some(180),
            "header {i}"
        );
    }
    assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
}

#[test]
fn stuck_client_is_dropped_after_the_send_timeout_and_its_upstream_connection_released() {
    let site = site();
    let up = Upstream::start(|req| {
        if req.target == "/api/big" {
            upstream::big(20 << 20, 8)
        } else {
            upstream::ok("small")
        }
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |cfg| {
        cfg.send_timeout = Duration::from_millis(300)
    });
    let mut stuck = Client::connect_small_rcvbuf(server.addr, 4096);
    stuck.send(&get_req("/api/big"));
    let _ = up.wait_requests(1, Duration::from_secs(2));
    // Never read: after the send timeout the server gives up on the client, and the upstream
    // connection (mid-response, not reusable) must be closed, not kept.
    let deadline = Instant::now() + Duration::from_secs(3);
    while up.ended() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        up.ended(),
        1,
        "upstream connection of a client dropped for its send timeout still open after 3 s"
    );
    let (_, end) = stuck.read_to_close();
    let _ = end; // EOF or reset: either is fine.
    let mut c = server.client();
    assert_eq!(c.get("/api/s").text(), "small");
}

#[test]
fn upstream_that_timed_out_is_skipped_for_the_fail_timeout() {
    let site = site();
    let hole = blackhole();
    let good = Upstream::start(|_| upstream::ok("good"));
    let server = proxy_server(&site, vec![route("/api", &[hole.addr, good.addr])], |cfg| {
        cfg.proxy_connect_timeout = Duration::from_millis(300);
        cfg.proxy_fail_timeout = Duration::from_secs(10);
    });
    let mut c = server.client();
    // The first request meets the timeout (504 or a late failover, either way).
    let r = c.get("/api/1");
    assert!(r.status == 504 || r.body == b"good", "{r:?}");
    for i in 2..6 {
        let t = Instant::now();
        let r = c.get(&format!("/api/{i}"));
        let took = t.elapsed();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"good"[..]),
            "request {i}: {r:?}"
        );
        assert!(
            took < Duration::from_millis(250),
            "request {i} took {took:?}: the upstream that timed out was tried again"
        );
    }
}

#[test]
fn error_answers_to_head_have_no_body() {
    let site = site();
    let hole = blackhole();
    let server = proxy_server(
        &site,
        vec![
            route("/dead", &[refused_addr()]),
            route("/hole", &[hole.addr]),
        ],
        |cfg| cfg.proxy_connect_timeout = Duration::from_millis(200),
    );
    let mut c = server.client();
    for (path, status) in [("/dead/x", 502), ("/hole/x", 504)] {
        c.send(format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c.head();
        assert_eq!(r.status, status, "{r:?}");
        let r = c.get("/hello.txt");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, HELLO),
            "after HEAD {path}: {r:?}"
        );
    }
    c.expect_silence(Duration::from_millis(100), "no stray body bytes");
}

#[test]
fn expect_100_continue_to_a_dead_upstream_gets_its_502_without_sending_the_body() {
    let site = site();
    let server = proxy_server(&site, vec![route("/dead", &[refused_addr()])], |_| {});
    let mut c = server.client();
    let t = Instant::now();
    c.send(
        b"POST /dead/x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n",
    );
    let r = c.head();
    assert_eq!(r.status, 502, "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn http10_request_without_host_reaches_the_upstream_with_one_host() {
    // The upstream request is HTTP/1.1, which requires a Host field (RFC 9112 §3.2).
    let site = site();
    let up = Upstream::start(|_| upstream::ok("hostless"));
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |_| {});
    let mut c = server.client();
    c.send(b"GET /api/x HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "hostless"), "{r:?}");
    let req = up.only_request();
    assert_eq!(req.version, "HTTP/1.1");
    assert_eq!(
        req.all("host").len(),
        1,
        "HTTP/1.1 request upstream without one Host: {req:#?}"
    );
}

#[test]
fn pool_keeps_at_most_proxy_idle_connections_per_upstream() {
    let site = site();
    let up = Upstream::start(|req| {
        upstream::after(
            Duration::from_millis(150),
            upstream::ok(format!("to {}", req.target)),
        )
    });
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |cfg| {
        one_loop(cfg);
        cfg.proxy_idle = Some(2)
    });
    // Five at once: five upstream connections.
    let mut clients: Vec<Client> = (0..5).map(|_| server.client()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&get_req(&format!("/api/{i}")));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.response().text(), format!("to /api/{i}"));
    }
    assert_eq!(up.accepts(), 5);
    // Only two are kept.
    let deadline = Instant::now() + Duration::from_secs(2);
    while up.ended() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        up.ended(),
        3,
        "with proxy_idle = 2, three of five connections are closed"
    );
    // And they are used.
    for i in 0..4 {
        assert_eq!(clients[0].get(&format!("/api/again/{i}")).status, 200);
    }
    assert_eq!(up.accepts(), 5, "the pooled connections are reused");
}

/// Out of descriptors, a proxied request cannot get an upstream socket: it gets a 502 at once,
/// the upstream is not blamed (not marked down), and proxying works again once descriptors are
/// free.
#[test]
fn running_out_of_descriptors_gives_502_without_blaming_the_upstream() {
    let site = site();
    let up = Upstream::start(|req| upstream::ok(format!("up {}", req.target)));
    let mut server = BinaryServer::start_with_nofile(
        &site.root(),
        &[
            "--max-conns",
            "1000",
            "--cache-valid",
            "1m",
            "--proxy",
            &format!("/api={}", up.addr),
        ],
        Some(64),
    );
    let mut first = server.client();
    assert_eq!(first.get("/hello.txt").body, HELLO);
    // Hold connections until the server cannot accept another.
    let (mut held, _waiting) = common::hold_until_unserved(&server, first, HELLO);
    assert!(
        held.len() > 30,
        "only {} connections before the limit",
        held.len()
    );
    let t = Instant::now();
    let r = held[0].get("/api/x");
    assert_eq!(r.status, 502, "{}", server.stderr());
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "502 took {:?}",
        t.elapsed()
    );
    assert_eq!(
        held[0].get("/hello.txt").body,
        HELLO,
        "the connection stays usable"
    );
    // The line was written before the 502, but the thread that drains the server's stderr may
    // not have read it yet.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !server.stderr().contains("cannot connect to") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = server.stderr();
    assert!(log.contains("cannot connect to"), "{log}");
    assert!(
        !log.contains("skipping it"),
        "the upstream was blamed: {log}"
    );
    // Free descriptors: proxying works again on the same connection.
    held.truncate(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = held[0].get("/api/y");
        if r.status == 200 {
            assert_eq!(r.text(), "up /api/y");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after freeing descriptors",
            r.status
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.is_running());
}

/// The pool goes by time: a connection in use is never closed however long the load lasts (here
/// longer than the idle timeout), and one left unused for the idle timeout is closed (not
/// before), after which a request opens a new one.
#[test]
fn idle_upstream_connections_close_after_the_idle_timeout_and_not_under_load() {
    let site = site();
    let up = Upstream::start(|req| upstream::ok(format!("to {}", req.target)));
    let idle = Duration::from_secs(1);
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], |cfg| {
        one_loop(cfg);
        cfg.proxy_idle_timeout = idle
    });
    let mut c = server.client();
    // One after another for longer than the idle timeout: one connection throughout.
    let start = Instant::now();
    let mut i = 0;
    let mut last_sent = Instant::now();
    // (A short pause between them: the scripted upstream serves 10,000 requests a connection.)
    while start.elapsed() < idle + idle / 2 && i < 5000 {
        last_sent = Instant::now();
        assert_eq!(c.get(&format!("/api/{i}")).text(), format!("to /api/{i}"));
        i += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        (up.accepts(), up.ended()),
        (1, 0),
        "{i} requests in a row on one upstream connection"
    );
    assert_eq!(up.ended(), 0, "a connection in use was closed");
    // Unused now: closed after the idle timeout, counted from the last request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.ended() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        up.ended(),
        1,
        "the idle connection was not closed within 10 s"
    );
    assert!(
        last_sent.elapsed() >= idle,
        "closed {:?} after the last request, before the idle timeout",
        last_sent.elapsed()
    );
    // The next request gets a new connection and its answer.
    assert_eq!(c.get("/api/after").text(), "to /api/after");
    assert_eq!(up.accepts(), 2);
}

/// Many clients at once, each keeping its connection: with default flags there are never more
/// upstream connections than clients (the old count cap of 32 closed connections while the load
/// went on, and opened new ones).
#[test]
fn default_pool_keeps_one_upstream_connection_per_busy_client() {
    let site = site();
    let up = Upstream::start(|req| upstream::ok(format!("to {}", req.target)));
    let server = proxy_server(&site, vec![route("/api", &[up.addr])], one_loop);
    let addr = server.addr;
    let clients = 48;
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..10 {
                    let path = format!("/api/{t}/{i}");
                    assert_eq!(c.get(&path).text(), format!("to {path}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    assert_eq!(up.requests().len(), clients * 10);
    assert!(
        up.accepts() <= clients,
        "{} upstream connections for {clients} clients",
        up.accepts()
    );
    assert_eq!(
        up.ended(),
        0,
        "an upstream connection was closed under load"
    );
}

/// An upstream whose every answer carries its FIN in the same segment (corked, then shut for
/// writing): one edge brings both. Each connection answers one request; returns the address
/// and a counter of accepted connections. Bounded: it stops after `conns` connections or 10 s.
fn answer_and_fin_upstream(
    conns: usize,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut open = Vec::new();
        while count.load(Ordering::SeqCst) < conns && Instant::now() < deadline {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                match s.read(&mut buf) {
                    Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            socket2::SockRef::from(&s).set_tcp_cork(true).unwrap();
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npong");
            let _ = s.shutdown(std::net::Shutdown::Write);
            // Kept open for reading, so that the proxy's bytes (if any) meet no reset.
            open.push(s);
        }
    });
    (addr, accepted)
}

/// An answer and the upstream's FIN in one segment: the connection must not be pooled, or the
/// next request (a POST, which is never retried) would be sent on it and never be answered. The
/// single loop takes a short read for "nothing behind" only when no FIN was reported with it
/// (checked: with the report ignored, this test fails 3 runs out of 3).
#[test]
fn answer_and_upstream_fin_in_one_segment_do_not_pool_the_connection() {
    let site = site();
    let (up, accepted) = answer_and_fin_upstream(4);
    let server = proxy_server(&site, vec![route("/api", &[up])], one_loop);
    let mut c = server.client();
    for i in 0..2 {
        let r = c.get(&format!("/api/get/{i}"));
        assert_eq!((r.status, r.body.as_slice()), (200, &b"pong"[..]), "{r:?}");
        c.send(b"POST /api/post HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
        let r = c.response();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"pong"[..]),
            "the POST after answer {i} went to a closed connection: {r:?}"
        );
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "one connection per answer"
    );
}
