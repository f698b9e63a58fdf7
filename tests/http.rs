//! HTTP/1.1 over real sockets: framing, pipelining, keep-alive and malformed requests.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Client, Site, TestServer, assert_same_bytes, pseudo_random};

const HELLO: &[u8] = b"Hello, World!\n";

fn site() -> Site {
    let site = Site::new("http");
    site.write("hello.txt", HELLO);
    site.write("index.html", b"<h1>index</h1>\n");
    site
}

fn server(site: &Site) -> TestServer {
    TestServer::with(site, |_| {})
}

#[test]
fn simple_get_has_the_expected_headers() {
    let site = site();
    let server = server(&site);
    let mut c = server.client();
    let r = c.get("/hello.txt");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.reason, "OK");
    assert_eq!(r.body, HELLO);
    assert_eq!(r.content_length(), Some(HELLO.len() as u64));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(r.header("date").is_some(), "{r:?}");
    assert!(r.header("etag").is_some(), "{r:?}");
    assert!(r.header("last-modified").is_some(), "{r:?}");
    assert!(
        !r.closes(),
        "HTTP/1.1 keeps the connection by default: {r:?}"
    );
    // The connection is kept: a second request on it is answered.
    assert_eq!(c.get("/").body, b"<h1>index</h1>\n");
}

#[test]
fn request_sent_one_byte_at_a_time() {
    let site = site();
    let server = server(&site);
    let mut c = server.client();
    // A GET, then a POST whose chunked body also arrives byte by byte, then a last GET.
    let req = b"GET /hello.txt HTTP/1.1\r\nHost: test\r\nUser-Agent: drip\r\n\r\n\
        POST /hello.txt HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
        3\r\nabc\r\n0\r\n\r\n\
        GET / HTTP/1.1\r\nHost: test\r\n\r\n";
    for b in req.iter() {
        c.send(std::slice::from_ref(b));
        c.stream.flush().unwrap();
    }
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO), "{r:?}");
    let r = c.response();
    assert_eq!(r.status, 405, "{r:?}");
    let r = c.response();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"<h1>index</h1>\n"[..])
    );
    c.expect_silence(Duration::from_millis(100), "after three answers");
}

#[test]
fn hundred_pipelined_gets_in_one_write_are_answered_in_order() {
    let site = site();
    // Mostly small files, every tenth one large enough to go by sendfile.
    let mut bodies = Vec::new();
    for i in 0..100 {
        let body = if i % 10 == 7 {
            pseudo_random(20_000 + i, i as u64)
        } else {
            format!("file number {i}\n").into_bytes()
        };
        site.write(&format!("p/{i}.txt"), &body);
        bodies.push(body);
    }
    let server = server(&site);
    let mut c = server.client();
    let mut burst = Vec::new();
    for i in 0..100 {
        burst
            .extend_from_slice(format!("GET /p/{i}.txt HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    }
    c.send(&burst);
    for (i, want) in bodies.iter().enumerate() {
        let r = c.response();
        assert_eq!(r.status, 200, "response {i}: {r:?}");
        assert_same_bytes(&r.body, want, &format!("response {i}"));
    }
    c.expect_silence(Duration::from_millis(100), "after 100 answers");
}

#[test]
fn pipelined_large_responses_beyond_the_output_high_water_mark() {
    let site = site();
    let big = pseudo_random(300_000, 42);
    site.write("big.bin", &big);
    let server = server(&site);
    let mut c = server.client();
    // 40 answers of 300 kB (12 MB) requested at once, mixed with small ones: the server must
    // hold back parsing while output is queued and resume as the client reads.
    let mut burst = Vec::new();
    for i in 0..40 {
        let path = if i % 3 == 1 { "/hello.txt" } else { "/big.bin" };
        burst.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    }
    c.send(&burst);
    for i in 0..40 {
        let r = c.response();
        assert_eq!(r.status, 200, "response {i}");
        let want: &[u8] = if i % 3 == 1 { HELLO } else { &big };
        assert_same_bytes(&r.body, want, &format!("response {i}"));
    }
    c.expect_silence(Duration::from_millis(100), "after 40 answers");
}

#[test]
fn http10_closes_unless_keep_alive_is_asked_for() {
    let site = site();
    let server = server(&site);

    let mut c = server.client();
    c.send(b"GET /hello.txt HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
    assert!(
        r.closes(),
        "HTTP/1.0 answer should say Connection: close: {r:?}"
    );
    c.expect_closed("HTTP/1.0 without keep-alive");

    let mut c = server.client();
    c.send(b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
    assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response();
    assert_eq!(r.body, b"<h1>index</h1>\n");
    // Without the header again, this one is the last.
    c.send(b"GET /hello.txt HTTP/1.0\r\n\r\n");
    assert_eq!(c.response().body, HELLO);
    c.expect_closed("HTTP/1.0 after keep-alive ends");
}

#[test]
fn connection_close_on_http11_closes_after_the_answer() {
    let site = site();
    let server = server(&site);
    let mut c = server.client();
    // The second request in the same write must not be answered.
    c.send(
        b"GET /hello.txt HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n\
          GET / HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
    assert!(r.closes(), "{r:?}");
    c.expect_closed("Connection: close");
}

#[test]
fn head_request_has_headers_and_no_body() {
    let site = site();
    let server = server(&site);
    let mut c = server.client();
    c.send(b"HEAD /hello.txt HTTP/1.1\r\nHost: test\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n");
    let h = c.head();
    assert_eq!(h.status, 200);
    assert_eq!(h.content_length(), Some(HELLO.len() as u64));
    // The next bytes must be the GET's answer, not a body.
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
}

#[test]
fn post_with_a_length_body_gets_405_and_the_next_request_is_served() {
    let site = site();
    let server = server(&site);
    let mut c = server.client();
    c.send(
        b"POST /hello.txt HTTP/1.1\r\nHost: test\r\nContent-Length: 27\r\n\r\n\
          GET /index.html HTTP/1.1\r\nX\
          GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    let r = c.response();
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert!(!r.closes(), "{r:?}");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO), "{r:?}");
    c.expect_silence(Duration::from_millis(100), "after POST + GET");
}

#[test]
fn post_with_a_chunked_body_gets_405_and_the_next_request_is_served() {
    let site = site();
    let server = server(&site);
    let mut c = server.client();
    c.send(
        b"POST /hello.txt HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
          1a;name=value\r\nGET /index.html HTTP/1.1\r\n\r\n\
          0\r\nTrailer: x\r\n\r\n\
          GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    let r = c.response();
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO), "{r:?}");
    c.expect_silence(Duration::from_millis(100), "after chunked POST + GET");
}

#[test]
fn put_and_delete_on_a_file_get_405_with_allow() {
    let site = site();
    let server = server(&site);
    let mut c = server.client();
    for method in ["POST", "PUT", "DELETE"] {
        c.send(
            format!("{method} /hello.txt HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        );
        let r = c.response();
        assert_eq!(r.status, 405, "{method}: {r:?}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}");
        assert!(!r.closes(), "{method}: a 405 keeps the framing: {r:?}");
    }
    assert_eq!(c.get("/hello.txt").body, HELLO);
}

/// A malformed request, the status it must get, and a note for failure messages.
struct Bad {
    what: &'static str,
    bytes: Vec<u8>,
    status: u16,
}

fn bad(what: &'static str, bytes: impl Into<Vec<u8>>, status: u16) -> Bad {
    Bad {
        what,
        bytes: bytes.into(),
        status,
    }
}

/// Sends each case on its own connection followed by a valid pipelined GET and checks: the
/// status, that the error answer closes the connection, and that the GET after it is not
/// answered (the framing cannot be trusted). Collects every failure before panicking.
fn check_malformed(server: &TestServer, cases: &[Bad]) {
    let mut failures = Vec::new();
    for case in cases {
        let mut c = server.client();
        let mut bytes = case.bytes.clone();
        bytes.extend_from_slice(b"GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n");
        if c.try_send(&bytes).is_err() {
            failures.push(format!("{}: write failed", case.what));
            continue;
        }
        let r = match c.try_head() {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: no answer ({e})", case.what));
                continue;
            }
        };
        if r.status != case.status {
            failures.push(format!(
                "{}: {:?} got {} {}, expected {}",
                case.what,
                String::from_utf8_lossy(&case.bytes),
                r.status,
                r.reason,
                case.status
            ));
            continue;
        }
        if !r.closes() {
            failures.push(format!(
                "{}: {} without Connection: close",
                case.what, r.status
            ));
        }
        let len = r.content_length().unwrap_or(0) as usize;
        let (rest, end) = c.read_to_close();
        if rest.len() != len || end.is_err() {
            failures.push(format!(
                "{}: after the {} answer expected {len} body bytes then EOF, got {} bytes \
                 ({:?}) then {end:?}",
                case.what,
                r.status,
                rest.len(),
                String::from_utf8_lossy(&rest[..rest.len().min(200)])
            ));
        }
    }
    // The server survived all of it.
    let r = common::get(server.addr, "/hello.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
    assert!(
        failures.is_empty(),
        "{} of {} malformed requests mishandled:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn malformed_heads() -> Vec<Bad> {
    let h = "Host: test\r\n";
    let mut v = vec![
        bad(
            "CL+TE",
            format!(
                "POST /hello.txt HTTP/1.1\r\n{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            400,
        ),
        bad(
            "TE+CL",
            format!(
                "POST /hello.txt HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
            ),
            400,
        ),
        bad(
            "differing Content-Length",
            format!(
                "POST /hello.txt HTTP/1.1\r\n{h}Content-Length: 5\r\nContent-Length: 6\r\n\r\n"
            ),
            400,
        ),
        bad(
            "Content-Length not a number",
            format!("POST /hello.txt HTTP/1.1\r\n{h}Content-Length: abc\r\n\r\n"),
            400,
        ),
        bad(
            "negative Content-Length",
            format!("POST /hello.txt HTTP/1.1\r\n{h}Content-Length: -1\r\n\r\n"),
            400,
        ),
        bad(
            "Content-Length list",
            format!("POST /hello.txt HTTP/1.1\r\n{h}Content-Length: 5, 5\r\n\r\n"),
            400,
        ),
        bad(
            "Content-Length overflow",
            format!(
                "POST /hello.txt HTTP/1.1\r\n{h}Content-Length: 99999999999999999999999\r\n\r\n"
            ),
            400,
        ),
        bad(
            "TE on HTTP/1.0",
            "POST /hello.txt HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        bad(
            "TE chunked not last",
            format!("POST /hello.txt HTTP/1.1\r\n{h}Transfer-Encoding: chunked, gzip\r\n\r\n"),
            400,
        ),
        bad(
            "TE chunked twice",
            format!(
                "POST /hello.txt HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            400,
        ),
        bad(
            "TE identity",
            format!("POST /hello.txt HTTP/1.1\r\n{h}Transfer-Encoding: identity\r\n\r\n"),
            400,
        ),
        bad(
            "whitespace before colon",
            "GET /hello.txt HTTP/1.1\r\nHost : test\r\n\r\n",
            400,
        ),
        bad(
            "control character in a value",
            format!("GET /hello.txt HTTP/1.1\r\n{h}X-A: a\x01b\r\n\r\n"),
            400,
        ),
        bad(
            "DEL in a value",
            format!("GET /hello.txt HTTP/1.1\r\n{h}X-A: a\x7fb\r\n\r\n"),
            400,
        ),
        bad(
            "NUL in a value",
            format!("GET /hello.txt HTTP/1.1\r\n{h}X-A: a\0b\r\n\r\n"),
            400,
        ),
        bad(
            "missing Host on 1.1",
            "GET /hello.txt HTTP/1.1\r\n\r\n",
            400,
        ),
        bad(
            "repeated Host",
            "GET /hello.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
        ),
        bad(
            "Host with a space",
            "GET /hello.txt HTTP/1.1\r\nHost: a b\r\n\r\n",
            400,
        ),
        bad(
            "header line without colon",
            format!("GET /hello.txt HTTP/1.1\r\n{h}NoColonHere\r\n\r\n"),
            400,
        ),
        bad(
            "two spaces after the method",
            format!("GET  /hello.txt HTTP/1.1\r\n{h}\r\n"),
            400,
        ),
        bad(
            "trailing space after the version",
            format!("GET /hello.txt HTTP/1.1 \r\n{h}\r\n"),
            400,
        ),
        bad(
            "tab as a request-line separator",
            format!("GET\t/hello.txt HTTP/1.1\r\n{h}\r\n"),
            400,
        ),
        bad(
            "empty header name",
            format!("GET /hello.txt HTTP/1.1\r\n{h}: x\r\n\r\n"),
            400,
        ),
        bad(
            "control character in a header name",
            format!("GET /hello.txt HTTP/1.1\r\n{h}X\x01Y: z\r\n\r\n"),
            400,
        ),
        bad(
            "bare CR as a line end",
            "GET /hello.txt HTTP/1.1\rHost: test\r\n\r\n",
            400,
        ),
        bad(
            "leading space in the request line",
            format!(" GET /hello.txt HTTP/1.1\r\n{h}\r\n"),
            400,
        ),
        bad("bare LF", "GET /hello.txt HTTP/1.1\nHost: test\n\n", 400),
        bad(
            "bare LF in one header",
            "GET /hello.txt HTTP/1.1\r\nHost: test\nX: y\r\n\r\n",
            400,
        ),
        bad(
            "obs-fold",
            format!("GET /hello.txt HTTP/1.1\r\n{h}X-A: a\r\n  folded\r\n\r\n"),
            400,
        ),
        bad(
            "target not starting with /",
            format!("GET hello.txt HTTP/1.1\r\n{h}\r\n"),
            400,
        ),
        bad(
            "non-ASCII target",
            format!("GET /h\u{e9}llo.txt HTTP/1.1\r\n{h}\r\n"),
            400,
        ),
        bad(
            "malformed version",
            format!("GET /hello.txt HTTP/1.x\r\n{h}\r\n"),
            400,
        ),
        bad(
            "unknown method",
            format!("BREW /hello.txt HTTP/1.1\r\n{h}\r\n"),
            501,
        ),
        bad(
            "lower-case method",
            format!("get /hello.txt HTTP/1.1\r\n{h}\r\n"),
            501,
        ),
        bad(
            "unsupported transfer coding before chunked",
            format!("POST /hello.txt HTTP/1.1\r\n{h}Transfer-Encoding: gzip, chunked\r\n\r\n"),
            501,
        ),
        bad(
            "HTTP/2.0",
            format!("GET /hello.txt HTTP/2.0\r\n{h}\r\n"),
            505,
        ),
        bad(
            "HTTP/3.1",
            format!("GET /hello.txt HTTP/3.1\r\n{h}\r\n"),
            505,
        ),
        bad(
            "head too big (one long header)",
            format!(
                "GET /hello.txt HTTP/1.1\r\n{h}X-Big: {}\r\n\r\n",
                "b".repeat(9000)
            ),
            431,
        ),
        bad(
            "too many header lines",
            format!(
                "GET /hello.txt HTTP/1.1\r\n{h}{}\r\n",
                (0..70).map(|i| format!("X-{i}: v\r\n")).collect::<String>()
            ),
            431,
        ),
        bad(
            "target too long",
            format!("GET /{} HTTP/1.1\r\n{h}\r\n", "a".repeat(9000)),
            414,
        ),
        bad(
            "body over max_body",
            format!("POST /hello.txt HTTP/1.1\r\n{h}Content-Length: 1001\r\n\r\n"),
            413,
        ),
    ];
    v.push(bad(
        "absolute-form with userinfo",
        format!("GET http://user@test/hello.txt HTTP/1.1\r\n{h}\r\n"),
        400,
    ));
    v
}

#[test]
fn malformed_requests_get_the_right_status_and_close() {
    let site = site();
    let server = TestServer::with(&site, |cfg| cfg.limits.max_body = 1000);
    let cases = malformed_heads();
    assert!(cases.len() >= 20);
    check_malformed(&server, &cases);
}

/// Extra spaces in the request line are malformed syntax (400), not a request for another HTTP
/// version: the line still ends in a well-formed `HTTP/1.1`.
#[test]
fn request_line_with_stray_spaces_gets_400_not_505() {
    let site = site();
    let server = server(&site);
    let h = "Host: test\r\n";
    let cases = [
        bad(
            "two spaces before the version",
            format!("GET /hello.txt  HTTP/1.1\r\n{h}\r\n"),
            400,
        ),
        bad(
            "space inside the target",
            format!("GET /hello .txt HTTP/1.1\r\n{h}\r\n"),
            400,
        ),
    ];
    check_malformed(&server, &cases);
}

/// A request is answered on its head (a body can take forever to arrive, and nginx does the
/// same), so a malformed chunked body is found after the answer: then no 400 can be sent, and
/// the server closes the connection instead of guessing where the next request starts.
#[test]
fn malformed_chunked_bodies_close_the_connection_after_the_answer() {
    let site = site();
    let server = server(&site);
    let te = "Host: test\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (what, body) in [
        ("bad chunk size line", "zz\r\nhello\r\n0\r\n\r\n"),
        ("empty chunk size line", "\r\n"),
        ("missing CRLF after chunk data", "5\r\nhelloX0\r\n\r\n"),
        ("bare LF after chunk size", "5\nhello\r\n0\r\n\r\n"),
        ("whitespace after the size", "5 \r\nhello\r\n0\r\n\r\n"),
    ] {
        let mut c = server.client();
        c.send(format!("POST /hello.txt HTTP/1.1\r\n{te}{body}GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(r.status, 405, "{what}");
        c.expect_closed(what);
    }
    assert_eq!(server.client().get("/hello.txt").status, 200);
}

/// Whatever status a malformed chunked body gets, the request after it must never be answered:
/// the server cannot know where it starts.
#[test]
fn malformed_chunked_body_is_not_followed_by_a_smuggled_answer() {
    let site = site();
    let server = server(&site);
    let mut c = server.client();
    c.send(
        b"POST /hello.txt HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhelloXX0\r\n\r\n\
          GET /index.html HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    let r = c.response();
    assert!(r.status >= 400, "{r:?}");
    let (rest, end) = c.read_to_close();
    assert!(
        rest.is_empty() && end.is_ok(),
        "expected a clean close after the first answer, got {:?} / {end:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn body_at_max_body_is_drained_and_the_next_request_served() {
    let site = site();
    let server = TestServer::with(&site, |cfg| cfg.limits.max_body = 1000);
    let mut c = server.client();
    let mut req =
        b"POST /hello.txt HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'G', 1000));
    req.extend_from_slice(b"GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n");
    c.send(&req);
    assert_eq!(c.response().status, 405);
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
}

#[test]
fn chunked_body_over_max_body_closes_without_a_smuggled_answer() {
    let site = site();
    let server = TestServer::with(&site, |cfg| cfg.limits.max_body = 1000);
    let mut c = server.client();
    let mut req =
        b"POST /hello.txt HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"200\r\n");
        req.extend(std::iter::repeat_n(b'x', 0x200));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n");
    c.send(&req);
    let r = c.response();
    assert!(r.status >= 400, "{r:?}");
    let (rest, end) = c.read_to_close();
    assert!(
        rest.is_empty() && end.is_ok(),
        "expected a close after the answer, got {:?} / {end:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn leading_empty_lines_and_absolute_form_are_accepted() {
    let site = site();
    let server = server(&site);
    let mut c = server.client();
    c.send(b"\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(c.response().body, HELLO);
    c.send(b"GET http://test/hello.txt?x=1 HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
}

#[test]
fn client_closing_mid_request_does_not_disturb_others() {
    let site = site();
    let server = server(&site);
    for i in 0..20 {
        let mut c = server.client();
        c.send(&b"GET /hello.txt HTTP/1.1\r\nHost: te"[..10 + i]);
        // Dropped here: EOF in the middle of a head.
    }
    let mut c = server.client();
    // A client that sends a request and leaves before the answer.
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n");
    drop(c);
    let r = common::get(server.addr, "/hello.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
}

#[test]
fn client_reads_answer_then_half_closes() {
    let site = site();
    let server = server(&site);
    let mut c = Client::connect(server.addr);
    // Request then FIN: the answer must still come, then the server closes.
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n");
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
    c.expect_closed("after the client's FIN");
}

/// A request and the FIN in one segment (corked, so the FIN rides on the data): the server
/// gets one edge for both, and must still answer and then close. With edge-triggered polling a
/// short read does not mean "drained": `polling` never asks for EPOLLRDHUP, so nothing tells a
/// read that returned the request from one that returned it with the FIN queued behind, and a
/// server that stopped at the short read would hold these connections open until the idle
/// timeout (this test then fails on its 5 s read timeout; checked with such a server).
#[test]
fn request_and_fin_in_one_segment_get_the_answer_and_the_close() {
    let site = site();
    let server = server(&site);
    let mut clients: Vec<Client> = (0..8).map(|_| Client::connect(server.addr)).collect();
    for c in &mut clients {
        // Accepted and served once first, so the pair below arrives on a watched connection.
        assert_eq!(c.get("/hello.txt").status, 200);
    }
    for c in &mut clients {
        let sock = socket2::SockRef::from(&c.stream);
        sock.set_tcp_cork(true).unwrap();
        c.send(b"GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n");
        c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.response();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, HELLO),
            "connection {i}"
        );
        c.expect_closed(&format!("connection {i}, after its FIN"));
    }
}

/// The listener takes IPv6 addresses too (skipped where the machine has no IPv6 loopback).
#[test]
fn serves_on_an_ipv6_address() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    }
    let site = site();
    let server = TestServer::with(&site, |cfg| {
        cfg.listen = vec![edgeserve::config::Listen::plain("[::1]:0".parse().unwrap())]
    });
    assert!(server.addr.is_ipv6());
    let r = common::get(server.addr, "/hello.txt");
    assert_eq!(r.status, 200);
}

/// `--listen` repeated: every listener serves (IPv4 and, where the machine has it, IPv6), in
/// every model, and a shutdown closes them all.
#[test]
fn serves_on_several_listeners() {
    use edgeserve::config::Listen;
    let site = site();
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let server = TestServer::with(&site, |cfg| {
        cfg.listen = vec![
            Listen::plain("127.0.0.1:0".parse().unwrap()),
            Listen::plain("127.0.0.1:0".parse().unwrap()),
        ];
        if ipv6 {
            cfg.listen.push(Listen::plain("[::1]:0".parse().unwrap()));
        }
    });
    assert_eq!(server.addrs.len(), if ipv6 { 3 } else { 2 });
    assert_ne!(server.addrs[0], server.addrs[1]);
    // Several rounds: in the sharded model each listener has a socket per shard.
    for _ in 0..4 {
        for &addr in &server.addrs {
            let r = common::get(addr, "/hello.txt");
            assert_eq!((r.status, r.body.as_slice()), (200, HELLO), "{addr}");
        }
    }
    let addrs = server.addrs.clone();
    server.stop().unwrap();
    for addr in addrs {
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "{addr} still accepts after shutdown"
        );
    }
}

/// A listener that cannot be bound names its address, and none of the others is left open.
#[test]
fn a_listener_that_cannot_be_bound_is_named() {
    use edgeserve::config::Listen;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let site = site();
    let mut cfg = common::test_config(&site.root());
    cfg.listen = vec![
        Listen::plain("127.0.0.1:0".parse().unwrap()),
        Listen::plain(taken_addr),
    ];
    let err = edgeserve::Server::bind(cfg)
        .err()
        .expect("the bind must fail");
    let msg = err.to_string();
    assert!(
        msg.contains(&taken_addr.to_string()) && msg.contains("cannot listen"),
        "{msg}"
    );
}
