//! Reload on SIGHUP: the config file and the files it names are read again and applied to new
//! requests while clients keep coming (no error, no failed connect); a broken file changes
//! nothing and says why in one line; without `--config`, the files named by flags are re-read.
//! Every test signals only its own child process.
#![cfg(feature = "proxy")]

mod common;
#[path = "common/upstream.rs"]
mod upstream;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{BinaryServer, Client, Site};
use upstream::{Upstream, ok};

const HELLO: &[u8] = b"hello";

/// Clients that keep asking while the test reloads: each opens a connection, sends a few
/// keep-alive requests, closes, and counts anything but a complete 200.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, done, errors) = (stop.clone(), done.clone(), errors.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        if let Err(e) = Load::one_connection(addr, &done) {
                            errors.lock().unwrap().push(e);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            done,
            errors,
            threads,
        }
    }

    fn one_connection(addr: SocketAddr, done: &AtomicUsize) -> Result<(), String> {
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect: {e}"))?;
        let mut c = Client::from_stream(stream);
        for _ in 0..5 {
            c.try_send(b"GET /hello.txt HTTP/1.1\r\nHost: load\r\n\r\n")
                .map_err(|e| format!("send: {e}"))?;
            let r = c.try_head().map_err(|e| format!("read: {e}"))?;
            let body = c.take(r.content_length().unwrap_or(0) as usize);
            if r.status != 200 || body != HELLO {
                return Err(format!("got {} {:?}", r.status, body));
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Stops the clients; returns how many requests were answered and the errors.
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let errors = self.errors.lock().unwrap().clone();
        (self.done.load(Ordering::Relaxed), errors)
    }
}

/// Polls (bounded) until `check` holds.
#[track_caller]
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn status(addr: SocketAddr, path: &str) -> u16 {
    common::get(addr, path).status
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

fn write_config(file: &Path, text: &str) {
    // Written whole and renamed, as an editor or a deploy tool does: a SIGHUP never reads half.
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// The address the server said it listens on for `ip` (the last such line on stderr).
fn listening_on(server: &BinaryServer, ip: &str) -> Option<SocketAddr> {
    let needle = format!("listening on http://{ip}:");
    server
        .stderr()
        .lines()
        .rev()
        .find_map(|l| {
            l.split_once(&needle)
                .map(|(_, port)| port.trim().to_string())
        })
        .map(|port| format!("{ip}:{port}").parse().unwrap())
}

/// True when five connects in a row to `addr` are refused (every shard closed its socket).
fn refused(addr: SocketAddr) -> bool {
    (0..5).all(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err())
}

/// 20 reloads while clients keep coming: each one moves the health path, the proxy route, the
/// head limit and a second listener (a new loopback address each time: opened, and the
/// previous one closed), and each change is visible at once. Broken files on the way (a bad
/// value, a missing file, a port in use) change nothing. The clients, on the listener that
/// stays, see no error and no failed connect.
#[test]
fn reloads_under_load_change_settings_and_drop_nothing() {
    let site = Site::new("reload-load");
    site.write("hello.txt", HELLO);
    let up = Upstream::start(|r| ok(format!("upstream saw {}", r.target)));
    let conf = site.base.path().join("edgeserve.conf");
    let root = site.root();
    let settings = |i: usize, max_head: usize| {
        format!(
            "# generation {i}\nlisten 127.0.0.1:0\nlisten 127.0.0.{}:0\nroot {}\n\
             access-log off\nlog-level info\n\
             health /health{i}\nproxy /api{i}={}\nmax-head {max_head}\n",
            10 + i,
            root.display(),
            up.addr
        )
    };
    write_config(&conf, &settings(0, 8192));
    let server = BinaryServer::start_args(&["--config", conf.to_str().unwrap()]);
    let addr = server.addr;
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_eq!(status(addr, "/health0"), 200);
    let mut extra = listening_on(&server, "127.0.0.10").expect("second listener");
    assert_eq!(status(extra, "/health0"), 200);
    let load = Load::start(addr, 4);
    let long_head = format!(
        "GET /hello.txt HTTP/1.1\r\nHost: h\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(600)
    );
    let taken = common::occupied_port();
    let mut failed_reloads = 0;
    for i in 1..=20 {
        if i == 5 || i == 10 || i == 15 {
            // A broken file: one line says why, the previous settings stay.
            let broken = match i {
                5 => format!("{}max-head lots\n", settings(99, 8192)),
                10 => format!("{}mime-types /no/such/mime.types\n", settings(99, 8192)),
                _ => format!(
                    "{}listen {}\n",
                    settings(99, 8192),
                    taken.local_addr().unwrap()
                ),
            };
            write_config(&conf, &broken);
            server.signal(libc::SIGHUP);
            failed_reloads += 1;
            eventually("the failed reload is logged", || {
                count(&server.stderr(), "reload failed") == failed_reloads
            });
            assert_eq!(status(addr, &format!("/health{}", i - 1)), 200);
            assert_eq!(status(extra, &format!("/health{}", i - 1)), 200);
            assert_ne!(status(addr, "/health99"), 200);
            assert!(listening_on(&server, "127.0.0.109").is_none());
        }
        // Odd generations allow only short heads: a 600-byte head is refused (431).
        let max_head = if i % 2 == 1 { 512 } else { 8192 };
        write_config(&conf, &settings(i, max_head));
        server.signal(libc::SIGHUP);
        let health = format!("/health{i}");
        // Each loop takes the reload up at its next turn: in the sharded model a connection
        // may reach a shard that has not yet, so each check waits (briefly) for every one.
        eventually(&format!("{health} answered"), || {
            status(addr, &health) == 200
        });
        eventually(&format!("reload {i}: /health{} gone", i - 1), || {
            status(addr, &format!("/health{}", i - 1)) != 200
        });
        eventually(&format!("reload {i}: /api{i} forwarded"), || {
            common::get(addr, &format!("/api{i}/x")).text() == format!("upstream saw /api{i}/x")
        });
        eventually(&format!("reload {i}: /api{} gone", i - 1), || {
            status(addr, &format!("/api{}/x", i - 1)) == 404
        });
        let want = if max_head == 512 { 431 } else { 200 };
        eventually(&format!("reload {i}: max-head {max_head}"), || {
            let mut c = Client::connect(addr);
            c.send(long_head.as_bytes());
            c.head().status == want
        });
        // The second listener moved: the new one serves, the old one is closed.
        let ip = format!("127.0.0.{}", 10 + i);
        // (Announced before the reload is published; our thread reading stderr may lag.)
        eventually("the new listener is announced", || {
            listening_on(&server, &ip).is_some()
        });
        let moved = listening_on(&server, &ip).unwrap();
        assert_eq!(status(moved, &health), 200, "reload {i}");
        eventually(&format!("{extra} closed"), || refused(extra));
        extra = moved;
    }
    let (answered, errors) = load.finish();
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    assert!(answered > 100, "the load did little: {answered} requests");
    let stderr = server.stderr();
    assert_eq!(count(&stderr, "reloaded "), 20, "{stderr}");
    // (Once per loop that held a socket of it: twice in the sharded model.)
    assert!(count(&stderr, "no longer listening on") >= 20, "{stderr}");
    let failures: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("reload failed"))
        .collect();
    assert_eq!(failures.len(), 3, "{stderr}");
    assert!(
        failures[0].contains("edgeserve.conf:10: --max-head"),
        "{stderr}"
    );
    assert!(failures[1].contains("/no/such/mime.types"), "{stderr}");
    assert!(failures[2].contains("cannot listen on"), "{stderr}");
}

/// A settings change a reload cannot make (the model, the threads, the listener...) is kept
/// as it was, with a warning naming it; the rest of the file applies.
#[test]
fn startup_only_settings_are_kept_with_a_warning() {
    let site = Site::new("reload-startup-only");
    site.write("hello.txt", HELLO);
    let conf = site.base.path().join("edgeserve.conf");
    write_config(&conf, "health /a\n");
    let server = BinaryServer::start(&site.root(), &["--config", conf.to_str().unwrap()]);
    write_config(&conf, "health /b\nbacklog 7\n");
    server.signal(libc::SIGHUP);
    eventually("/b answered", || status(server.addr, "/b") == 200);
    // (Logged before the reload is published; stderr is read by another thread of ours.)
    eventually("the warning", || {
        server
            .stderr()
            .contains("backlog takes effect at restart only")
    });
}

/// Without `--config`, SIGHUP reads the files named by flags again (here the mime table) and
/// the file cache starts afresh.
#[test]
fn without_a_config_file_sighup_rereads_named_files() {
    let site = Site::new("reload-mime");
    site.write("a.thing", b"x");
    let mime = site.base.path().join("mime.types");
    std::fs::write(&mime, "text/x-one thing\n").unwrap();
    let server = BinaryServer::start(
        &site.root(),
        &[
            "--mime-types",
            mime.to_str().unwrap(),
            "--log-level",
            "info",
        ],
    );
    let content_type = || {
        common::get(server.addr, "/a.thing")
            .header("content-type")
            .unwrap_or("")
            .to_string()
    };
    assert!(content_type().starts_with("text/x-one"));
    std::fs::write(&mime, "text/x-two thing\n").unwrap();
    server.signal(libc::SIGHUP);
    eventually("the new type", || content_type().starts_with("text/x-two"));
    // A table that no longer parses (or is gone) changes nothing.
    std::fs::remove_file(&mime).unwrap();
    server.signal(libc::SIGHUP);
    eventually("the failed reload is logged", || {
        server.stderr().contains("reload failed")
    });
    let ct = content_type();
    assert!(ct.starts_with("text/x-two"), "{ct:?} {}", server.stderr());
}

/// logrotate with a config file: the log is moved away, SIGHUP reloads the file and reopens the
/// log; lines after it go to a fresh file, lines before stay in the moved one.
#[test]
fn logrotate_then_sighup_starts_a_fresh_log() {
    let site = Site::new("reload-logrotate");
    site.write("hello.txt", HELLO);
    let log = site.base.path().join("access.log");
    let conf = site.base.path().join("edgeserve.conf");
    let text = |health: &str| {
        format!(
            "listen 127.0.0.1:0\nroot {}\naccess-log {}\nlog-level info\nhealth {health}\n",
            site.root().display(),
            log.display()
        )
    };
    write_config(&conf, &text("/before"));
    let server = BinaryServer::start_args(&["--config", conf.to_str().unwrap()]);
    assert_eq!(status(server.addr, "/hello.txt?first"), 200);
    eventually("the first line", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("?first"))
    });
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    write_config(&conf, &text("/after"));
    server.signal(libc::SIGHUP);
    eventually("the reload", || status(server.addr, "/after") == 200);
    assert_eq!(status(server.addr, "/hello.txt?second"), 200);
    eventually("the line in the fresh file", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("?second"))
    });
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("?first") && !old.contains("?second"), "{old}");
    assert!(!std::fs::read_to_string(&log).unwrap().contains("?first"));
}

/// A request forwarded before a reload that removes its route is answered by its upstream all
/// the same; the next request on the same connection meets the new settings.
#[test]
fn a_request_in_flight_finishes_under_its_route() {
    let site = Site::new("reload-in-flight");
    site.write("hello.txt", HELLO);
    let up = Upstream::start(|_| upstream::after(Duration::from_millis(400), ok("slow answer")));
    let conf = site.base.path().join("edgeserve.conf");
    write_config(&conf, &format!("proxy /api={}\n", up.addr));
    let server = BinaryServer::start(&site.root(), &["--config", conf.to_str().unwrap()]);
    let mut c = server.client();
    c.send(b"GET /api/x HTTP/1.1\r\nHost: h\r\n\r\n");
    up.wait_requests(1, Duration::from_secs(5));
    write_config(&conf, "health /api/x\n");
    server.signal(libc::SIGHUP);
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "slow answer"));
    eventually("the reload", || status(server.addr, "/api/x") == 200);
    let r = c.get("/api/x");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(up.requests().len(), 1);
}
