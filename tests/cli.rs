//! The `edgeserve` binary: startup errors, help, signals and graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{BinaryServer, Site, assert_same_bytes, pseudo_random, run_binary};

const HELLO: &[u8] = b"Hello, World!\n";

fn site() -> Site {
    let site = Site::new("cli");
    site.write("hello.txt", HELLO);
    site
}

/// A startup error: a non-zero exit, nothing on stdout, exactly one line on stderr that
/// mentions `needle`, and no panic.
#[track_caller]
fn check_one_line_error(args: &[&str], needle: &str) {
    let (status, out, err) = run_binary(args);
    assert!(!status.success(), "{args:?}: exit {status:?}");
    assert!(status.code().is_some(), "{args:?}: killed by a signal");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(out.is_empty(), "{args:?}: stdout {out:?}");
    assert_eq!(
        err.lines().count(),
        1,
        "{args:?}: stderr should be one line: {err:?}"
    );
    assert!(err.ends_with('\n'), "{args:?}: {err:?}");
    assert!(
        err.contains(needle),
        "{args:?}: {err:?} should mention {needle:?}"
    );
}

#[test]
fn bad_flags_are_one_line_errors() {
    let site = site();
    let root = site.root();
    let root = root.to_str().unwrap();
    check_one_line_error(&["--bogus", root], "--bogus");
    check_one_line_error(&["--listen"], "--listen");
    check_one_line_error(
        &["--listen", "127.0.0.1:notaport", root],
        "127.0.0.1:notaport",
    );
    check_one_line_error(&["--max-conns", "0", root], "--max-conns");
    check_one_line_error(&["--max-conns", "many", root], "--max-conns");
    check_one_line_error(&["--header-timeout", "soon", root], "--header-timeout");
    check_one_line_error(&["--idle-timeout", "0", root], "timeout");
    check_one_line_error(&["--max-headers", "100000", root], "--max-headers");
    check_one_line_error(&[root, root], "unexpected argument");
}

#[test]
fn missing_root_is_a_one_line_error() {
    let site = site();
    let missing = site.base.path().join("no-such-dir");
    let missing = missing.to_str().unwrap();
    check_one_line_error(
        &["--listen", "127.0.0.1:0", "--root", missing],
        "no-such-dir",
    );
    // A file is not a document root either.
    let file = site.root().join("hello.txt");
    check_one_line_error(
        &["--listen", "127.0.0.1:0", "--root", file.to_str().unwrap()],
        "hello.txt",
    );
}

#[test]
fn port_in_use_is_a_one_line_error() {
    let site = site();
    let taken = common::occupied_port();
    let addr = taken.local_addr().unwrap().to_string();
    check_one_line_error(
        &[
            "--listen",
            &addr,
            "--root",
            site.root().to_str().unwrap(),
            "--access-log",
            "off",
        ],
        &addr,
    );
}

#[test]
fn unwritable_access_log_is_a_one_line_error() {
    let site = site();
    let log = site.base.path().join("no-such-dir").join("access.log");
    check_one_line_error(
        &[
            "--listen",
            "127.0.0.1:0",
            "--root",
            site.root().to_str().unwrap(),
            "--access-log",
            log.to_str().unwrap(),
        ],
        "access.log",
    );
}

#[test]
fn help_and_version_exit_zero() {
    let (status, out, err) = run_binary(&["--help"]);
    assert!(status.success(), "{status:?} {err}");
    assert!(out.contains("Usage"), "{out}");
    assert!(out.contains("--max-conns"), "{out}");
    let (status, out, _) = run_binary(&["--version"]);
    assert!(status.success());
    assert!(out.starts_with("edgeserve "), "{out}");
}

#[test]
fn serves_and_stops_on_sigint_with_status_zero() {
    let site = site();
    let mut server = BinaryServer::start(&site.root(), &[]);
    let r = common::get(server.addr, "/hello.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
    server.signal(libc::SIGINT);
    let status = server
        .wait(Duration::from_secs(10))
        .expect("no exit after SIGINT");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(!server.stderr().contains("panicked"));
}

/// The server is paused (SIGSTOP) while the request arrives and SIGTERM is sent, so both wait for
/// it in that order: the request reached the server before the signal did.
#[test]
fn sigterm_answers_a_request_sent_just_before_and_exits_zero() {
    let site = site();
    let mut server = BinaryServer::start(&site.root(), &["--grace", "5s"]);
    let mut c = server.client();
    // The connection is accepted and in use.
    assert_eq!(c.get("/hello.txt").body, HELLO);
    let mut idle = server.client();
    assert_eq!(idle.get("/hello.txt").body, HELLO);

    server.pause();
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n");
    server.signal(libc::SIGTERM);
    let started = Instant::now();
    server.resume();
    let r = c.response();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, HELLO),
        "{}",
        server.stderr()
    );
    c.expect_closed("after the last answer during shutdown");
    // The idle keep-alive connection is closed, not kept for the grace period.
    idle.expect_closed("idle connection at shutdown");
    drop(c);
    drop(idle);
    let status = server
        .wait(Duration::from_secs(10))
        .expect("no exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?} although nothing was in flight (grace 5s)",
        started.elapsed()
    );
}

/// Like the test above, on a connection the client opened (and sent a whole request on) before
/// the signal, but which the server had not accepted yet: it is in the listen backlog when
/// SIGTERM arrives, and the server knew it was there (the listener's readiness came first).
#[test]
fn sigterm_answers_a_request_on_a_connection_made_just_before() {
    let site = site();
    let mut server = BinaryServer::start(&site.root(), &["--grace", "5s"]);
    server.pause();
    let mut c = server.client();
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n");
    server.signal(libc::SIGTERM);
    server.resume();
    let r = c.try_head();
    let status = server
        .wait(Duration::from_secs(10))
        .expect("no exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    let r = r.unwrap_or_else(|e| {
        panic!("connection established and request sent before SIGTERM, got no answer: {e}")
    });
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn sigterm_lets_a_response_in_flight_finish() {
    let site = site();
    let huge = pseudo_random(8 << 20, 21);
    site.write("huge.bin", &huge);
    let mut server = BinaryServer::start(&site.root(), &["--grace", "10s"]);
    let mut c = common::Client::connect_small_rcvbuf(server.addr, 8192);
    c.send(b"GET /huge.bin HTTP/1.1\r\nHost: test\r\n\r\n");
    let head = c.head();
    assert_eq!(head.status, 200);
    // Only part of the body is here when the signal arrives.
    let first = c.take(1000);
    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(100));
    assert!(server.is_running(), "exited with a response in flight");
    let (rest, end) = c.read_to_close();
    assert!(end.is_ok(), "{end:?}");
    let mut body = first;
    body.extend_from_slice(&rest);
    assert_same_bytes(&body, &huge, "body sent during shutdown");
    // Our side closes too (the server may linger until it sees that).
    drop(c);
    let status = server
        .wait(Duration::from_secs(10))
        .expect("no exit after the answer");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
}

#[test]
fn sigterm_with_a_request_partly_sent_answers_it_once_complete() {
    let site = site();
    let mut server = BinaryServer::start(&site.root(), &["--grace", "5s"]);
    let mut c = server.client();
    assert_eq!(c.get("/hello.txt").body, HELLO);
    server.pause();
    c.send(b"GET /hello.txt HTTP/1.1\r\nHo");
    server.signal(libc::SIGTERM);
    server.resume();
    // Still open: the rest of the request is awaited.
    c.expect_silence(
        Duration::from_millis(200),
        "partial request during shutdown",
    );
    assert!(server.is_running(), "{}", server.stderr());
    c.send(b"st: test\r\n\r\n");
    let r = c.response();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, HELLO),
        "{}",
        server.stderr()
    );
    assert!(r.closes(), "the last answer says Connection: close: {r:?}");
    c.expect_closed("after the last answer");
    drop(c);
    let status = server
        .wait(Duration::from_secs(10))
        .expect("no exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
}

#[test]
fn grace_period_ends_shutdown_even_if_a_client_never_finishes() {
    let site = site();
    let mut server = BinaryServer::start(&site.root(), &["--grace", "1s"]);
    let mut c = server.client();
    assert_eq!(c.get("/hello.txt").body, HELLO);
    // Half a request, never completed.
    server.pause();
    c.send(b"GET /hello.txt HTTP/1.1\r\nHo");
    server.signal(libc::SIGTERM);
    let started = Instant::now();
    server.resume();
    let status = server
        .wait(Duration::from_secs(10))
        .expect("no exit within 10 s of SIGTERM with --grace 1s");
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "exited after {took:?} with --grace 1s"
    );
    // The client's connection is gone with the process.
    let mut buf = [0u8; 64];
    c.stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    match c.read_some(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => {
            // A 408 or 503 as a farewell is acceptable; more requests are not.
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(!text.contains(" 200 "), "{text}");
        }
    }
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());
}
