//! What differs between the server models, over real sockets: every model serves the same
#![cfg(all(feature = "models", feature = "bench-routes"))]
//! answers; a blocking handler stalls a single loop but not a pool; full queues wait rather than
//! fail; the bench routes. (The whole integration suite runs per model in `.ci/run` through
//! `EDGESERVE_TEST_MODEL`.)

mod common;

use std::time::{Duration, Instant};

use common::{Client, Site, TestServer, model_server, run_binary};
use edgeserve::Model;

const HELLO: &[u8] = b"Hello, World!\n";

fn site() -> Site {
    let site = Site::new("models");
    site.write("hello.txt", HELLO);
    site.write("big.bin", &common::pseudo_random(300 * 1024, 7));
    site
}

#[test]
fn every_model_answers_concurrent_pipelined_clients_in_order() {
    let site = site();
    let big = std::fs::read(site.root().join("big.bin")).unwrap();
    for model in Model::ALL {
        let server = model_server(&site, model, |_| {});
        std::thread::scope(|s| {
            for t in 0..6 {
                let (addr, big) = (server.addr, &big);
                s.spawn(move || {
                    let mut c = Client::connect(addr);
                    for round in 0..20 {
                        // Three requests in one write; the middle one is large.
                        c.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /big.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /_bench/cpu?us=50 HTTP/1.1\r\nHost: t\r\n\r\n");
                        let what = format!("{} client {t} round {round}", model.name());
                        assert_eq!(c.response().body, HELLO, "{what}");
                        let r = c.response();
                        assert_eq!(r.status, 200, "{what}");
                        assert!(r.body == *big, "{what}: large body differs");
                        assert_eq!(c.response().body, b"ok\n", "{what}");
                    }
                });
            }
        });
        server
            .stop()
            .unwrap_or_else(|e| panic!("{}: {e}", model.name()));
    }
}

/// The classic claim about pools: they help when handlers block. A handler that sleeps 600 ms
/// holds up every other client of a single loop; with two workers another client is answered
/// meanwhile.
#[test]
fn a_blocking_handler_stalls_a_single_loop_but_not_a_pool() {
    let site = site();
    for model in [
        Model::Single,
        Model::ProactorPool,
        Model::ReactorPool,
        Model::LeaderFollowers,
    ] {
        let server = model_server(&site, model, |_| {});
        let mut slow = server.client();
        let mut fast = server.client();
        // Both connections are accepted and served once before the test proper.
        assert_eq!(slow.get("/hello.txt").body, HELLO);
        assert_eq!(fast.get("/hello.txt").body, HELLO);
        slow.send(b"GET /_bench/sleep?ms=600 HTTP/1.1\r\nHost: t\r\n\r\n");
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        assert_eq!(fast.get("/hello.txt").body, HELLO);
        let waited = t0.elapsed();
        assert_eq!(slow.response().body, b"ok\n");
        if model == Model::Single {
            assert!(
                waited >= Duration::from_millis(300),
                "single: answered in {waited:?} while the loop slept"
            );
        } else {
            assert!(
                waited < Duration::from_millis(300),
                "{}: a free worker should answer at once, took {waited:?}",
                model.name()
            );
        }
    }
}

/// More requests than the proactor's queue holds (64 per worker): the excess waits unread on its
/// connection and is served when workers catch up; none is refused or lost.
#[test]
fn proactor_requests_beyond_the_queue_wait_and_are_all_answered() {
    let site = site();
    let server = model_server(&site, Model::ProactorPool, |cfg| cfg.workers = 1);
    let mut clients: Vec<Client> = (0..200).map(|_| server.client()).collect();
    for c in &mut clients {
        c.send(b"GET /_bench/sleep?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.response();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"ok\n"[..]),
            "client {i}"
        );
    }
}

#[test]
fn bench_routes_are_off_by_default_and_check_their_query() {
    let site = site();
    let off = TestServer::with(&site, |_| {});
    assert_eq!(common::get(off.addr, "/_bench/cpu?us=10").status, 404);
    let on = model_server(&site, Model::Single, |_| {});
    let status = |path: &str| common::get(on.addr, path).status;
    assert_eq!(status("/_bench/cpu?us=10"), 200);
    assert_eq!(status("/_bench/sleep?ms=1"), 200);
    assert_eq!(status("/_bench/cpu?us=abc"), 400);
    assert_eq!(status("/_bench/cpu"), 400);
    assert_eq!(status("/_bench/sleep?ms=99999999"), 400);
    assert_eq!(status("/_bench/nothing"), 404);
    let t0 = Instant::now();
    assert_eq!(status("/_bench/cpu?us=50000"), 200);
    assert!(
        t0.elapsed() >= Duration::from_millis(50),
        "cpu spun too short"
    );
}

#[test]
fn model_flags_are_checked() {
    let (status, _, err) = run_binary(&["--model", "threads"]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("--model") && err.lines().count() == 1, "{err}");
    let (status, _, err) = run_binary(&["--workers", "0"]);
    assert_eq!(status.code(), Some(2), "{err}");
}
