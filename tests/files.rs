//! Static files: traversal, symlinks, directories, conditional and range requests, content types,
//! and large files to slow readers.

mod common;

use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use common::{Client, Response, SECRET, Site, TestServer, assert_same_bytes, find, pseudo_random};

const HELLO: &[u8] = b"Hello, World!\n";
const SMALL: &[u8] = b"0123456789abcdefghij";
const BIG_LEN: usize = 100_000;

fn site() -> (Site, Vec<u8>) {
    let site = Site::new("files");
    site.write("hello.txt", HELLO);
    site.write("small.txt", SMALL);
    let big = pseudo_random(BIG_LEN, 7);
    site.write("big.bin", &big);
    site.write("sub/index.html", b"<p>sub index</p>\n");
    site.write("sub/page.txt", b"page\n");
    site.write("page.html", b"<html></html>\n");
    site.write("style.css", b"p{}\n");
    site.write("data.json", b"{}\n");
    site.write("noext", b"raw\n");
    site.write("pic.PNG", b"\x89PNG");
    site.write("archive.tar.gz", b"\x1f\x8b");
    site.write("empty.txt", b"");
    site.mkdir("empty");
    let base = site.base.path();
    symlink(base.join("secret.txt"), site.root().join("link-out")).unwrap();
    symlink(base, site.root().join("dir-out")).unwrap();
    symlink("hello.txt", site.root().join("link-in")).unwrap();
    symlink("loop", site.root().join("loop")).unwrap();
    (site, big)
}

/// Sends raw bytes on a fresh connection and returns the first answer and every byte the server
/// sent until it closed (the request should ask for `Connection: close`).
fn exchange(server: &TestServer, request: &[u8]) -> (Response, Vec<u8>) {
    let mut c = server.client();
    c.send(request);
    let (all, end) = c.read_to_close();
    assert!(end.is_ok(), "{request:?}: no clean close: {end:?}");
    let head_end = find(&all, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&all)));
    (common::parse_head(&all[..head_end + 4]), all)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

#[test]
fn traversal_never_leaks_a_file_outside_the_root() {
    let (site, _) = site();
    let server = TestServer::with(&site, |_| {});
    // (target, acceptable statuses)
    let cases: &[(&str, &[u16])] = &[
        ("/../secret.txt", &[400]),
        ("/../../secret.txt", &[400]),
        ("/./../secret.txt", &[400]),
        ("//../secret.txt", &[400]),
        ("/sub/../../secret.txt", &[400]),
        ("/sub/./../../secret.txt", &[400]),
        ("/%2e%2e/secret.txt", &[400]),
        ("/%2E%2E/secret.txt", &[400]),
        ("/.%2e/secret.txt", &[400]),
        ("/%2e./secret.txt", &[400]),
        ("/..%2fsecret.txt", &[400]),
        ("/..%2Fsecret.txt", &[400]),
        ("/sub/..%2f..%2fsecret.txt", &[400]),
        ("/sub%2f..%2f..%2fsecret.txt", &[400]),
        ("/%2f..%2fsecret.txt", &[400]),
        ("/sub%2Fpage.txt", &[400]),
        ("/..\\secret.txt", &[400]),
        ("/sub\\..\\..\\secret.txt", &[400]),
        ("/..%5csecret.txt", &[400]),
        ("/..%5Csecret.txt", &[400]),
        ("/secret.txt%00", &[400]),
        ("/hello.txt%00.png", &[400]),
        ("/%00/../secret.txt", &[400]),
        ("/%252e%252e/secret.txt", &[404]),
        ("/..;/secret.txt", &[404]),
        ("/...%2fsecret.txt", &[400]),
        ("/%", &[400]),
        ("/%zz", &[400]),
        ("/link-out", &[403]),
        ("/dir-out/secret.txt", &[403]),
        ("/dir-out/www/../secret.txt", &[403]),
        ("/secret.txt", &[404]),
        ("/loop", &[404]),
    ];
    let mut failures = Vec::new();
    for (target, ok) in cases {
        for form in [
            format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
            format!("GET http://test{target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
        ] {
            let mut c = server.client();
            c.send(form.as_bytes());
            let (all, end) = c.read_to_close();
            if contains(&all, SECRET) {
                failures.push(format!("{form:?} LEAKED the secret file"));
                continue;
            }
            let Some(head_end) = find(&all, b"\r\n\r\n") else {
                failures.push(format!(
                    "{form:?}: no answer ({} bytes, {end:?})",
                    all.len()
                ));
                continue;
            };
            let r = common::parse_head(&all[..head_end + 4]);
            if !ok.contains(&r.status) {
                failures.push(format!(
                    "{form:?}: got {}, expected one of {ok:?}",
                    r.status
                ));
            }
        }
    }
    // A symlink inside the root to a file inside the root is fine.
    let r = common::get(server.addr, "/link-in");
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn symlinks_outside_the_root_are_served_only_when_allowed() {
    let (site, _) = site();
    let server = TestServer::with(&site, |cfg| cfg.follow_symlinks_outside = true);
    // The same fixture that gets 403 above: this shows the secret really is reachable that way.
    let r = common::get(server.addr, "/link-out");
    assert_eq!((r.status, r.body.as_slice()), (200, SECRET));
    let r = common::get(server.addr, "/dir-out/secret.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, SECRET));
    // Dot segments are still refused.
    let (r, all) = exchange(
        &server,
        b"GET /../secret.txt HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 400);
    assert!(!contains(&all, SECRET));
}

#[test]
fn a_fifo_in_the_root_is_refused_without_blocking_the_server() {
    let (site, _) = site();
    let fifo = site.root().join("fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let server = TestServer::with(&site, |_| {});
    let started = Instant::now();
    let r = common::get(server.addr, "/fifo");
    assert_eq!(r.status, 403, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(common::get(server.addr, "/hello.txt").body, HELLO);
}

#[test]
fn directories_redirect_and_serve_their_index() {
    let (site, _) = site();
    let server = TestServer::with(&site, |_| {});
    let mut c = server.client();

    let r = c.get("/sub");
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location"), Some("/sub/"));
    assert!(!r.closes());

    let r = c.get("/sub?x=1&y=%2F");
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location"), Some("/sub/?x=1&y=%2F"));

    let r = c.get("/sub/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"<p>sub index</p>\n");
    assert_eq!(r.header("content-type"), Some("text/html"));

    let r = c.get("/sub/?q=1");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"<p>sub index</p>\n"[..])
    );

    let r = c.get("/sub/page.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"page\n"[..]));

    let r = c.get("/empty");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/empty/"));
    assert_eq!(c.get("/empty/").status, 403);
    assert_eq!(c.get("/").status, 403, "root without index.html");

    assert_eq!(c.get("/missing.txt").status, 404);
    assert_eq!(c.get("/sub/missing/").status, 404);
    assert_eq!(c.get("/hello.txt/x").status, 404);
    // Still the same connection after all of these.
    assert_eq!(c.get("/hello.txt").body, HELLO);
}

/// A file is not a directory: `/hello.txt/` names nothing (nginx and Apache answer 404; the
/// file system says ENOTDIR). Serving the file there also gets its Content-Type wrong.
#[test]
fn file_path_with_a_trailing_slash_is_not_found() {
    let (site, _) = site();
    let server = TestServer::with(&site, |_| {});
    let mut c = server.client();
    for path in ["/hello.txt/", "/hello.txt/.", "/sub/page.txt/"] {
        let r = c.get(path);
        assert_eq!(
            r.status,
            404,
            "GET {path}: got {} with Content-Type {:?} and body {:?}",
            r.status,
            r.header("content-type"),
            r.text()
        );
    }
}

#[test]
fn content_types_follow_the_extension() {
    let (site, _) = site();
    let server = TestServer::with(&site, |_| {});
    let mut c = server.client();
    for (path, ty) in [
        ("/hello.txt", "text/plain"),
        ("/page.html", "text/html"),
        ("/style.css", "text/css"),
        ("/data.json", "application/json"),
        ("/pic.PNG", "image/png"),
        ("/archive.tar.gz", "application/gzip"),
        ("/noext", "application/octet-stream"),
        ("/big.bin", "application/octet-stream"),
    ] {
        let r = c.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ty), "{path}");
    }
}

#[test]
fn empty_file() {
    let (site, _) = site();
    let server = TestServer::with(&site, |_| {});
    let mut c = server.client();
    let r = c.get("/empty.txt");
    assert_eq!((r.status, r.content_length()), (200, Some(0)));
    c.send(b"GET /empty.txt HTTP/1.1\r\nHost: test\r\nRange: bytes=0-0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 416, "{r:?}");
    assert_eq!(r.header("content-range"), Some("bytes */0"));
}

fn validators(r: &Response) -> (String, String) {
    (
        r.header("etag").expect("ETag").to_string(),
        r.header("last-modified")
            .expect("Last-Modified")
            .to_string(),
    )
}

fn conditional(c: &mut Client, path: &str, header: &str) -> Response {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{header}\r\n\r\n").as_bytes());
    c.response()
}

fn check_conditional(server: &TestServer, path: &str, want: &[u8]) {
    let mut c = server.client();
    let r = c.get(path);
    assert_eq!(r.status, 200);
    let (etag, lm) = validators(&r);
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let lm_time = httpdate::parse_http_date(&lm).expect("Last-Modified is an HTTP date");
    let older = httpdate::fmt_http_date(lm_time - Duration::from_secs(1));

    let not_modified = [
        format!("If-None-Match: {etag}"),
        format!("If-None-Match: \"nope\", {etag}"),
        format!("If-None-Match: W/{etag}"),
        "If-None-Match: *".to_string(),
        format!("If-Modified-Since: {lm}"),
    ];
    for h in &not_modified {
        let r = conditional(&mut c, path, h);
        assert_eq!(r.status, 304, "{path} {h}: {r:?}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()), "{h}");
        assert!(
            r.content_length().is_none_or(|n| n == want.len() as u64),
            "{h}: {r:?}"
        );
    }
    let modified = [
        "If-None-Match: \"nope\"".to_string(),
        format!("If-Modified-Since: {older}"),
        "If-Modified-Since: not a date".to_string(),
        // If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
        format!("If-None-Match: \"nope\"\r\nIf-Modified-Since: {lm}"),
    ];
    for h in &modified {
        let r = conditional(&mut c, path, h);
        assert_eq!(r.status, 200, "{path} {h}");
        assert_same_bytes(&r.body, want, &format!("{path} {h}"));
    }
    // HEAD with a matching ETag is a 304 too, and the connection still frames correctly.
    c.send(
        format!("HEAD {path} HTTP/1.1\r\nHost: test\r\nIf-None-Match: {etag}\r\n\r\n").as_bytes(),
    );
    assert_eq!(c.head().status, 304);
    let r = c.get(path);
    assert_same_bytes(&r.body, want, "GET after HEAD 304");
}

#[test]
fn conditional_requests_small_file() {
    let (site, _) = site();
    let server = TestServer::with(&site, |_| {});
    check_conditional(&server, "/hello.txt", HELLO);
}

#[test]
fn conditional_requests_large_file() {
    let (site, big) = site();
    let server = TestServer::with(&site, |_| {});
    check_conditional(&server, "/big.bin", &big);
}

fn range(c: &mut Client, path: &str, extra: &str) -> Response {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n").as_bytes());
    c.response()
}

fn check_ranges(server: &TestServer, path: &str, content: &[u8]) {
    let len = content.len();
    let mut c = server.client();
    let full = c.get(path);
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    let (etag, lm) = validators(&full);

    let partial = |c: &mut Client, extra: &str, start: usize, end: usize| {
        let r = range(c, path, extra);
        assert_eq!(r.status, 206, "{path} {extra:?}: {r:?}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {start}-{end}/{len}").as_str()),
            "{path} {extra:?}"
        );
        assert_eq!(r.content_length(), Some((end - start + 1) as u64));
        assert_same_bytes(&r.body, &content[start..=end], &format!("{path} {extra:?}"));
    };
    partial(&mut c, "Range: bytes=0-4\r\n", 0, 4);
    partial(&mut c, "Range: bytes=-3\r\n", len - 3, len - 1);
    partial(&mut c, "Range: bytes=5-\r\n", 5, len - 1);
    partial(&mut c, "Range: bytes=3-99999999\r\n", 3, len - 1);
    partial(&mut c, "Range: bytes=-99999999\r\n", 0, len - 1);
    partial(
        &mut c,
        &format!("Range: bytes={0}-{0}\r\n", len - 1),
        len - 1,
        len - 1,
    );
    partial(
        &mut c,
        &format!("Range: bytes=2-6\r\nIf-Range: {etag}\r\n"),
        2,
        6,
    );
    partial(
        &mut c,
        &format!("Range: bytes=2-6\r\nIf-Range: {lm}\r\n"),
        2,
        6,
    );
    if len > 60_000 {
        partial(&mut c, "Range: bytes=50000-60000\r\n", 50_000, 60_000);
    }

    let whole = |c: &mut Client, extra: &str| {
        let r = range(c, path, extra);
        assert_eq!(r.status, 200, "{path} {extra:?}: {r:?}");
        assert!(r.header("content-range").is_none(), "{extra:?}");
        assert_same_bytes(&r.body, content, &format!("{path} {extra:?}"));
    };
    whole(&mut c, "Range: bytes=0-1,3-4\r\n");
    whole(&mut c, "Range: bytes=0-1, 5-\r\n");
    whole(&mut c, "Range: bytes=abc\r\n");
    whole(&mut c, "Range: lines=1-2\r\n");
    whole(&mut c, "Range: bytes=0-4\r\nIf-Range: \"mismatch\"\r\n");
    whole(
        &mut c,
        "Range: bytes=0-4\r\nIf-Range: Thu, 01 Jan 2015 00:00:00 GMT\r\n",
    );

    let r = range(&mut c, path, "Range: bytes=999999-\r\n");
    assert_eq!(r.status, 416, "{path}: {r:?}");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );

    // HEAD: the headers a GET would have, no body; the next answer follows directly.
    c.send(format!("HEAD {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    let h = c.head();
    assert_eq!(h.status, 200);
    assert_eq!(h.content_length(), Some(len as u64));
    assert_eq!(h.header("etag"), Some(etag.as_str()));
    partial(&mut c, "Range: bytes=1-2\r\n", 1, 2);
}

#[test]
fn ranges_small_in_memory_file() {
    let (site, _) = site();
    let server = TestServer::with(&site, |_| {});
    check_ranges(&server, "/small.txt", SMALL);
}

#[test]
fn ranges_large_sendfile_file() {
    let (site, big) = site();
    let server = TestServer::with(&site, |_| {});
    check_ranges(&server, "/big.bin", &big);
}

#[test]
fn pipelined_ranges_in_one_write() {
    let (site, big) = site();
    let server = TestServer::with(&site, |_| {});
    let mut c = server.client();
    let mut burst = Vec::new();
    let ranges: Vec<(usize, usize)> = (0..30).map(|i| (i * 3000, i * 3000 + 2000 + i)).collect();
    for (s, e) in &ranges {
        burst.extend_from_slice(
            format!("GET /big.bin HTTP/1.1\r\nHost: test\r\nRange: bytes={s}-{e}\r\n\r\n")
                .as_bytes(),
        );
    }
    c.send(&burst);
    for (s, e) in ranges {
        let r = c.response();
        assert_eq!(r.status, 206);
        assert_same_bytes(&r.body, &big[s..=e], &format!("range {s}-{e}"));
    }
}

#[test]
fn changed_file_is_seen_after_revalidation() {
    let (site, _) = site();
    let server = TestServer::with(&site, |cfg| cfg.cache_valid = Duration::ZERO);
    let mut c = server.client();
    assert_eq!(c.get("/hello.txt").body, HELLO);
    site.write("hello.txt", b"changed, and longer than before\n");
    let r = c.get("/hello.txt");
    assert_eq!(r.body, b"changed, and longer than before\n");
    std::fs::remove_file(site.root().join("hello.txt")).unwrap();
    assert_eq!(c.get("/hello.txt").status, 404);
}

/// A client whose receive window is tiny reads an 8 MiB file (twice, pipelined, with a small
/// answer in between) in small reads with pauses: every byte must arrive intact and in order.
#[test]
fn slow_reader_with_tiny_receive_buffer_gets_every_byte() {
    let site = Site::new("slow");
    let huge = pseudo_random(8 << 20, 99);
    site.write("huge.bin", &huge);
    site.write("hello.txt", HELLO);
    let server = TestServer::with(&site, |cfg| {
        // Pauses below are far shorter than this, so the reader is never cut off.
        cfg.send_timeout = Duration::from_secs(3);
    });
    let mut c = Client::connect_small_rcvbuf(server.addr, 4096);
    c.send(
        b"GET /huge.bin HTTP/1.1\r\nHost: test\r\n\r\n\
          GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n\
          GET /huge.bin HTTP/1.1\r\nHost: test\r\nRange: bytes=1000-\r\n\r\n",
    );
    let started = Instant::now();
    let mut got = Vec::with_capacity(huge.len() * 2 + 4096);
    let mut buf = [0u8; 1500];
    let mut since_pause = 0usize;
    // Bodies alone; the three heads come on top.
    let bodies = huge.len() * 2 - 1000 + HELLO.len();
    let mut reads = 0u32;
    while got.len() < bodies || !complete_three(&got) {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "too slow: {} bytes",
            got.len()
        );
        reads += 1;
        assert!(reads < 2_000_000, "too many reads");
        let n = match c.read_some(&mut buf) {
            Ok(0) => panic!("EOF after {} bytes", got.len()),
            Ok(n) => n,
            Err(e) => panic!("read after {} bytes: {e}", got.len()),
        };
        got.extend_from_slice(&buf[..n]);
        since_pause += n;
        if since_pause >= 512 * 1024 {
            since_pause = 0;
            std::thread::sleep(Duration::from_millis(15));
        }
    }
    // Parse the three answers out of what arrived.
    let mut rest: &[u8] = &got;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let end = find(rest, b"\r\n\r\n").expect("a response head") + 4;
        let r = common::parse_head(&rest[..end]);
        let len = r.content_length().unwrap() as usize;
        assert!(rest.len() >= end + len, "truncated answer {r:?}");
        answers.push((r, rest[end..end + len].to_vec()));
        rest = &rest[end + len..];
    }
    assert!(rest.is_empty(), "{} extra bytes", rest.len());
    assert_eq!(answers[0].0.status, 200);
    assert_same_bytes(&answers[0].1, &huge, "first huge.bin");
    assert_eq!((answers[1].0.status, answers[1].1.as_slice()), (200, HELLO));
    assert_eq!(answers[2].0.status, 206);
    assert_same_bytes(&answers[2].1, &huge[1000..], "ranged huge.bin");
}

/// True when `got` holds three complete responses (heads plus Content-Length bodies).
fn complete_three(got: &[u8]) -> bool {
    let mut rest = got;
    for _ in 0..3 {
        let Some(end) = find(rest, b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        else {
            return false;
        };
        if rest.len() < end + 4 + len {
            return false;
        }
        rest = &rest[end + 4 + len..];
    }
    true
}

#[test]
fn large_file_to_a_fast_reader_is_intact() {
    let site = Site::new("fast");
    let huge = pseudo_random(8 << 20, 5);
    site.write("huge.bin", &huge);
    let server = TestServer::with(&site, |_| {});
    let mut c = server.client();
    for _ in 0..2 {
        let r = c.get("/huge.bin");
        assert_eq!(r.status, 200);
        assert_same_bytes(&r.body, &huge, "huge.bin");
    }
}
