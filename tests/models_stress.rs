#![cfg(all(feature = "models", feature = "bench-routes"))]
//! Concurrency edge cases of the server models over real sockets: timers of connections that
//! wait for a thread, upstream failover timers, and connections that close while lent out.
//! Every wait is bounded; a hang shows as a failed assertion, not a stuck test.

mod common;

use std::time::{Duration, Instant};

#[cfg(feature = "proxy")]
use common::blackhole;
use common::{Client, Site, model_server};
use edgeserve::Model;

const HELLO: &[u8] = b"Hello, World!\n";

fn site() -> Site {
    let site = Site::new("models-stress");
    site.write("hello.txt", HELLO);
    site
}

/// Reads one whole response within `limit`: `Ok((status, body))`, or what happened instead
/// (EOF, reset, timeout) as text.
fn response_within(c: &mut Client, limit: Duration) -> Result<(u16, Vec<u8>), String> {
    c.stream.set_read_timeout(Some(limit)).unwrap();
    let r = match c.try_head() {
        Ok(r) => r,
        Err(e) => return Err(format!("{:?}: {e}", e.kind())),
    };
    c.stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    let len = r.content_length().unwrap_or(0) as usize;
    Ok((r.status, c.take(len)))
}

// -------------------------------------------------------------------------------------------
// Upstream connect timeouts
// -------------------------------------------------------------------------------------------

/// Two upstreams that never answer the handshake: the first connect times out and the relay
/// fails over to the second. That second connect must be bounded by the connect timeout too,
/// and the client gets its 504. (The timer kind stays `Connect` across the failover, so
/// `set_timer` sees no change and pushes no new entry, after `expire` cleared `scheduled`.)
#[cfg(feature = "proxy")]
#[test]
fn connect_timeout_after_a_failover_still_fires() {
    let site = site();
    let (a, b) = (blackhole(), blackhole());
    let mut failures = Vec::new();
    for model in Model::ALL {
        let server = model_server(&site, model, |cfg| {
            cfg.proxies = vec![edgeserve::config::Route {
                prefix: "/api".into(),
                upstreams: vec![a.addr, b.addr],
            }];
            cfg.proxy_connect_timeout = Duration::from_millis(300);
        });
        let mut c = server.client();
        c.send(b"GET /api/x HTTP/1.1\r\nHost: t\r\n\r\n");
        let t0 = Instant::now();
        match response_within(&mut c, Duration::from_secs(3)) {
            Ok((504, _)) => {}
            other => failures.push(format!(
                "{}: {other:?} after {:?} (two connect timeouts of 300 ms)",
                model.name(),
                t0.elapsed()
            )),
        }
        drop(c);
        server.stop().unwrap();
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// -------------------------------------------------------------------------------------------
// Timers of connections waiting on the ready list
// -------------------------------------------------------------------------------------------

/// With the workers busy, a ready connection waits on the reactor's ready list (by design: the
/// queue to the workers is bounded, and a leader takes one connection per turn). A keep-alive
/// client that sent its next request well within the idle timeout must get its answer when a
/// thread is free, not be reset by the idle timer that fires while it waits: the loop has seen
/// its readiness (the connection is queued), it only has no thread for it yet. The proactor
/// reads the request at once and passes, for contrast.
#[test]
fn a_request_that_came_in_time_is_not_closed_by_the_idle_timer_while_queued() {
    let site = site();
    let mut failures = Vec::new();
    for model in [
        Model::ReactorPool,
        Model::LeaderFollowers,
        Model::ProactorPool,
    ] {
        let server = model_server(&site, model, |cfg| {
            cfg.workers = 1;
            cfg.idle_timeout = Duration::from_millis(800);
        });
        let mut late = server.client();
        assert_eq!(late.get("/hello.txt").body, HELLO);
        // Twelve requests of 200 ms for the one worker: 2.4 s of work ahead of `late`.
        let mut sleepers: Vec<Client> = (0..12).map(|_| server.client()).collect();
        for s in &mut sleepers {
            s.send(b"GET /_bench/sleep?ms=200 HTTP/1.1\r\nHost: t\r\n\r\n");
        }
        std::thread::sleep(Duration::from_millis(100));
        // Well inside the 800 ms idle timeout.
        late.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        let got = response_within(&mut late, Duration::from_secs(6));
        if !matches!(&got, Ok((200, body)) if body == HELLO) {
            failures.push(format!(
                "{}: a request sent 100 ms into an 800 ms idle timeout got {got:?}",
                model.name()
            ));
        }
        for (i, s) in sleepers.iter_mut().enumerate() {
            assert_eq!(s.response().body, b"ok\n", "{} sleeper {i}", model.name());
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// -------------------------------------------------------------------------------------------
// Connections that go away while a thread has them (regression)
// -------------------------------------------------------------------------------------------

/// Clients that reset (SO_LINGER 0) while a handler runs for them, with `--max-conns 2`: every
/// model must free their places (the pooled ones put the connection back and close it there;
/// the sharded one releases the shared count) and serve the next clients at once.
#[test]
fn resets_while_a_handler_runs_free_their_connection_slots() {
    let site = site();
    for model in Model::ALL {
        let server = model_server(&site, model, |cfg| cfg.max_conns = Some(2));
        for round in 0..6 {
            let mut gone = server.client();
            gone.send(b"GET /_bench/sleep?ms=100 HTTP/1.1\r\nHost: t\r\n\r\n");
            socket2::SockRef::from(&gone.stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(gone);
            let mut next = server.client();
            next.send(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
            let got = response_within(&mut next, Duration::from_secs(3));
            assert!(
                matches!(&got, Ok((200, body)) if body == HELLO),
                "{} round {round}: {got:?}",
                model.name()
            );
        }
        let t0 = Instant::now();
        server.stop().unwrap();
        assert!(
            t0.elapsed() < Duration::from_millis(1500),
            "{}: stop took {:?} with nothing in flight",
            model.name(),
            t0.elapsed()
        );
    }
}

// -------------------------------------------------------------------------------------------
// Shutdown
// -------------------------------------------------------------------------------------------

/// When the grace period is over the server gives up on what is left: requests still waiting in
/// a queue for a worker must not be run after that (their connections are gone; nobody reads
/// the answers). Here one worker has a backlog of one-second sleeps; the server must be down
/// soon after the grace period and the sleep in progress, not after the whole backlog.
#[test]
fn the_end_of_the_grace_period_does_not_wait_for_queued_handlers() {
    let site = site();
    let mut failures = Vec::new();
    for model in [Model::ProactorPool, Model::ReactorPool] {
        let server = model_server(&site, model, |cfg| {
            cfg.workers = 1;
            cfg.grace = Duration::from_millis(300);
        });
        let mut clients: Vec<Client> = (0..8).map(|_| server.client()).collect();
        for c in &mut clients {
            c.send(b"GET /_bench/sleep?ms=1000 HTTP/1.1\r\nHost: t\r\n\r\n");
        }
        // Let the requests reach the worker's queue (this test is about timing).
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        server.stop().unwrap();
        let took = t0.elapsed();
        // The sleep in progress (at most 1 s) and the grace period (0.3 s), with some slack.
        if took > Duration::from_millis(2500) {
            failures.push(format!(
                "{}: stopped {took:?} after shutdown, grace 300 ms, 1 s handlers",
                model.name()
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
