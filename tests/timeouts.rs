//! Header, idle and send timeouts with short values. Each timing assertion has a wide upper
//! bound, so a loaded machine delays a test but does not fail it.

mod common;

use std::io;
use std::time::{Duration, Instant};

use common::{Client, Site, TestServer, pseudo_random};

const HELLO: &[u8] = b"Hello, World!\n";
const SHORT: Duration = Duration::from_millis(300);
/// Timers must not fire earlier than this (a little slack below SHORT for clock granularity).
const NOT_BEFORE: Duration = Duration::from_millis(250);
/// ... and must have fired by this.
const BY: Duration = Duration::from_secs(4);

fn site() -> Site {
    let site = Site::new("timeouts");
    site.write("hello.txt", HELLO);
    site
}

/// Reads until EOF; returns the bytes and when EOF came (relative to `since`).
fn bytes_until_eof(c: &mut Client, since: Instant) -> (Vec<u8>, Duration) {
    let (bytes, end) = c.read_to_close();
    assert!(end.is_ok(), "expected EOF, got {end:?} after {bytes:?}");
    (bytes, since.elapsed())
}

#[test]
fn partial_head_gets_408_then_close() {
    let site = site();
    let server = TestServer::with(&site, |cfg| {
        cfg.header_timeout = SHORT;
        cfg.idle_timeout = Duration::from_secs(30);
    });
    let mut c = server.client();
    let started = Instant::now();
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost: te");
    let r = c.response();
    let took = started.elapsed();
    assert_eq!(r.status, 408, "{r:?}");
    assert!(r.closes(), "{r:?}");
    assert!(took >= NOT_BEFORE, "408 after only {took:?}");
    assert!(took < BY, "408 after {took:?}");
    c.expect_closed("after 408");
}

#[test]
fn header_timeout_counts_from_the_first_byte_not_the_last() {
    // A slowloris client: one byte every 100 ms never completes a head within the timeout.
    let site = site();
    let server = TestServer::with(&site, |cfg| {
        cfg.header_timeout = SHORT;
        cfg.idle_timeout = Duration::from_secs(30);
    });
    let mut c = server.client();
    let req = b"GET /hello.txt HTTP/1.1\r\nHost: test\r\nUser-Agent: slow-drip-client\r\n\r\n";
    c.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let mut answered = false;
    let mut first = [0u8; 1];
    for b in &req[..req.len() - 4] {
        if c.try_send(std::slice::from_ref(b)).is_err() {
            break;
        }
        match c.read_some(&mut first) {
            Ok(_) => {
                answered = true;
                break;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    let took = started.elapsed();
    assert!(
        answered,
        "no answer while dripping for {took:?}; the header timeout is 300 ms"
    );
    assert!(took < BY, "answer after {took:?}");
    c.stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    let (rest, end) = c.read_to_close();
    assert!(end.is_ok(), "{end:?}");
    let mut all = first.to_vec();
    all.extend_from_slice(&rest);
    assert!(
        all.starts_with(b"HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(&all)
    );
}

#[test]
fn late_body_after_an_answer_closes_without_a_second_answer() {
    let site = site();
    let server = TestServer::with(&site, |cfg| {
        cfg.header_timeout = SHORT;
        cfg.idle_timeout = Duration::from_secs(30);
    });
    let mut c = server.client();
    let started = Instant::now();
    c.send(b"POST /hello.txt HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n0123456789");
    assert_eq!(c.response().status, 405);
    // The body never completes: the connection must close, and the client must not see a
    // second response (it would be taken as the answer to its next request).
    let (rest, took) = bytes_until_eof(&mut c, started);
    assert!(
        rest.is_empty(),
        "unexpected bytes after the 405: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!((NOT_BEFORE..BY).contains(&took), "closed after {took:?}");
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let site = site();
    let server = TestServer::with(&site, |cfg| {
        cfg.idle_timeout = SHORT;
        cfg.header_timeout = Duration::from_secs(30);
    });
    let mut c = server.client();
    assert_eq!(c.get("/hello.txt").body, HELLO);
    let after_answer = Instant::now();
    let (rest, took) = bytes_until_eof(&mut c, after_answer);
    assert!(rest.is_empty(), "idle close sends nothing: {rest:?}");
    assert!((NOT_BEFORE..BY).contains(&took), "closed after {took:?}");

    // A connection that never sends anything is closed too.
    let mut silent = server.client();
    let started = Instant::now();
    let (rest, took) = bytes_until_eof(&mut silent, started);
    assert!(rest.is_empty(), "{rest:?}");
    assert!((NOT_BEFORE..BY).contains(&took), "closed after {took:?}");
}

#[test]
fn requests_keep_a_connection_from_idling_out() {
    let site = site();
    let server = TestServer::with(&site, |cfg| {
        cfg.idle_timeout = Duration::from_secs(1);
        cfg.header_timeout = Duration::from_secs(30);
    });
    let mut c = server.client();
    let started = Instant::now();
    // Eight requests 150 ms apart span more than the idle timeout.
    for i in 0..8 {
        let r = c.get("/hello.txt");
        assert_eq!((r.status, r.body.as_slice()), (200, HELLO), "request {i}");
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(started.elapsed() > Duration::from_secs(1));
    assert_eq!(c.get("/hello.txt").body, HELLO);
}

#[test]
fn client_that_never_reads_is_disconnected_and_others_are_served() {
    let site = site();
    let huge = pseudo_random(8 << 20, 3);
    site.write("huge.bin", &huge);
    let server = TestServer::with(&site, |cfg| {
        cfg.send_timeout = SHORT;
    });
    let mut stuck = Client::connect_small_rcvbuf(server.addr, 4096);
    stuck.send(b"GET /huge.bin HTTP/1.1\r\nHost: test\r\n\r\n");
    let started = Instant::now();

    // While it is stuck, other clients get quick answers.
    while started.elapsed() < Duration::from_millis(1200) {
        let t = Instant::now();
        let r = common::get(server.addr, "/hello.txt");
        assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "an answer took {:?} while another client was stuck",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Well past the send timeout: what is still readable is what was in flight, then the end.
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = Instant::now() + Duration::from_secs(20);
    let end = loop {
        assert!(Instant::now() < deadline, "no end after {got} bytes");
        match stuck.read_some(&mut buf) {
            Ok(0) => break "EOF".to_string(),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break "reset".to_string(),
            Err(e) => panic!("read after {got} bytes: {e}"),
        }
    };
    assert!(
        got < huge.len(),
        "the whole file arrived ({got} bytes, then {end}): the stalled client was not disconnected"
    );
}

#[test]
fn send_timeout_counts_from_the_last_progress() {
    // A reader that pauses for less than the send timeout each time, but longer in total, gets
    // the whole file.
    let site = site();
    let big = pseudo_random(4 << 20, 11);
    site.write("big.bin", &big);
    let server = TestServer::with(&site, |cfg| {
        cfg.send_timeout = Duration::from_millis(700);
    });
    let mut c = Client::connect_small_rcvbuf(server.addr, 16 * 1024);
    c.send(b"GET /big.bin HTTP/1.1\r\nHost: test\r\n\r\n");
    let head = c.head();
    assert_eq!(head.status, 200);
    let mut got = Vec::with_capacity(big.len());
    let mut buf = vec![0u8; 64 * 1024];
    let mut next_pause = big.len() / 6;
    let mut paused = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Bytes already buffered past the head are part of the body.
    got.extend_from_slice(&c.take(c.buffered()));
    while got.len() < big.len() {
        assert!(Instant::now() < deadline, "stalled at {} bytes", got.len());
        if got.len() >= next_pause {
            next_pause += big.len() / 6;
            std::thread::sleep(Duration::from_millis(250));
            paused += Duration::from_millis(250);
        }
        match c.read_some(&mut buf) {
            Ok(0) => panic!(
                "closed after {} of {} bytes (paused {paused:?} in total)",
                got.len(),
                big.len()
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read after {} bytes: {e}", got.len()),
        }
    }
    assert!(paused > Duration::from_millis(700));
    common::assert_same_bytes(&got, &big, "big.bin");
    assert_eq!(c.get("/hello.txt").body, HELLO);
}
