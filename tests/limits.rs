//! Many clients, the connection limit, and accepting when the process is out of descriptors.

mod common;

use std::time::{Duration, Instant};

use common::{BinaryServer, Client, Site, TestServer};

const HELLO: &[u8] = b"Hello, World!\n";

fn site() -> Site {
    let site = Site::new("limits");
    site.write("hello.txt", HELLO);
    for i in 0..10 {
        site.write(
            &format!("c/{i}.txt"),
            format!("client file {i}\n").as_bytes(),
        );
    }
    site
}

#[test]
fn thousand_concurrent_keep_alive_clients_get_two_answers_each() {
    const N: usize = 1000;
    let nofile = common::raise_nofile();
    assert!(
        nofile >= 2 * N as libc::rlim_t + 200,
        "this test needs {} descriptors, the hard limit allows {nofile}",
        2 * N + 200
    );
    let site = site();
    let server = TestServer::with(&site, |_| {});
    // Open all of them first.
    let mut clients: Vec<Client> = (0..N).map(|_| server.client()).collect();
    for round in 0..2 {
        for (i, c) in clients.iter_mut().enumerate() {
            let path = format!("/c/{}.txt", (i + round) % 10);
            c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let r = c.response();
            let want = format!("client file {}\n", (i + round) % 10);
            assert_eq!(r.status, 200, "client {i} round {round}");
            assert_eq!(r.body, want.as_bytes(), "client {i} round {round}");
            assert!(!r.closes(), "client {i} round {round}: {r:?}");
        }
    }
    drop(clients);
    assert_eq!(common::get(server.addr, "/hello.txt").body, HELLO);
}

/// Runs the binary with RLIMIT_NOFILE = 64 and `--max-conns 1000`, so that accept runs into
/// EMFILE long before the connection limit.
#[test]
fn accept_survives_running_out_of_descriptors() {
    let site = site();
    let mut server = BinaryServer::start_with_nofile(
        &site.root(),
        &["--max-conns", "1000", "--cache-valid", "1m"],
        Some(64),
    );
    // Warm the cache for the file used below so that serving it needs no new descriptor.
    let mut first = server.client();
    assert_eq!(first.get("/hello.txt").body, HELLO);

    // Open connections until one is not served.
    let (mut held, unserved) = common::hold_until_unserved(&server, first, HELLO);
    let mut waiting = unserved.unwrap_or_else(|| {
        panic!(
            "200 connections were all served under RLIMIT_NOFILE=64; stderr: {}",
            server.stderr()
        )
    });
    assert!(
        held.len() > 30,
        "only {} connections served before the limit",
        held.len()
    );
    assert!(server.is_running(), "server exited: {}", server.stderr());
    // Connections already accepted are still served.
    for c in held.iter_mut().take(3) {
        let r = c.get("/hello.txt");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, HELLO),
            "{}",
            server.stderr()
        );
    }
    // Free descriptors: the waiting connection and a new one are served.
    held.truncate(1);
    let r = waiting.response();
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let mut c = server.client();
        c.send(b"GET /hello.txt HTTP/1.1\r\nHost: test\r\n\r\n");
        match c.try_head() {
            Ok(r) => break r,
            Err(e) => assert!(Instant::now() < deadline, "no new connection served: {e}"),
        }
    };
    assert_eq!(r.status, 200);
    assert!(server.is_running(), "{}", server.stderr());
    drop(held);
    drop(waiting);
    server.signal(libc::SIGTERM);
    let status = server
        .wait(Duration::from_secs(10))
        .expect("exit after SIGTERM");
    let stderr = server.stderr();
    assert!(status.success(), "exit {status:?}; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
