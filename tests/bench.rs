#![cfg(feature = "bench")]
//! edgeserve-bench against servers that know the truth: tiny blocking HTTP servers written here
//! count what they answer, so the load generator's counts can be checked exactly; and `compare`
//! end to end against the real edgeserve binary. Real sockets on 127.0.0.1, port 0; every wait
//! is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BENCH: &str = env!("CARGO_BIN_EXE_edgeserve-bench");
const SERVER: &str = env!("CARGO_BIN_EXE_edgeserve");

/// How a test server answers each request.
#[derive(Clone, Copy)]
struct Behaviour {
    response: &'static [u8],
    /// Waits this long before each answer.
    delay: Duration,
    /// Closes the connection after each answer (a short body is cut off by this).
    close_after: bool,
}

const OK: Behaviour = Behaviour {
    response: b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    delay: Duration::ZERO,
    close_after: false,
};

/// A thread-per-connection HTTP server (blocking std::net) that counts the answers it wrote.
struct CountingServer {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl CountingServer {
    fn start(b: Behaviour) -> CountingServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (served, stop) = (Arc::clone(&served), Arc::clone(&stop));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (served, stop) = (Arc::clone(&served), Arc::clone(&stop));
                    std::thread::spawn(move || serve(stream, b, &served, &stop));
                }
            })
        };
        CountingServer {
            addr,
            served,
            stop,
            accept: Some(accept),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What it has written, once the count reaches `expected` or a second passes: the server
    /// counts after its write returns, which can be just after the client has read the bytes.
    fn served(&self, expected: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let n = self.served.load(Ordering::SeqCst);
            if n >= expected || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for CountingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Answers every request head (they have no bodies) on one connection, pipelined ones in order.
fn serve(mut stream: TcpStream, b: Behaviour, served: &AtomicU64, stop: &AtomicBool) {
    // Short reads, so the thread notices `stop` and every loop here ends.
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.set_nodelay(true);
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut out = Vec::new();
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            if !b.delay.is_zero() {
                std::thread::sleep(b.delay);
            }
            out.extend_from_slice(b.response);
            if b.delay.is_zero() && !b.close_after {
                continue;
            }
            // Delayed or closing answers go one by one, as a slow handler would send them.
            if stream.write_all(&out).is_err() {
                return;
            }
            served.fetch_add(1, Ordering::SeqCst);
            out.clear();
            if b.close_after {
                return;
            }
        }
        // Counted once written: the count is what the client could have received.
        if !out.is_empty() {
            if stream.write_all(&out).is_err() {
                return;
            }
            let answers = out.len() / b.response.len();
            served.fetch_add(answers as u64, Ordering::SeqCst);
        }
    }
}

/// Runs a command with a time limit; a hang fails the test instead of stalling it.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} ran longer than {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `edgeserve-bench run ARGS --json`, which must succeed; returns its JSON line.
fn bench_json(args: &[&str]) -> String {
    let out = run_bounded(
        Command::new(BENCH).arg("run").args(args).arg("--json"),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.trim();
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    line.to_string()
}

/// The number after `"key":` in a flat-keyed JSON line (each key used here is unique).
fn num(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("{key} not in {json}"))
        + pat.len();
    let rest = &json[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

#[test]
fn counts_match_what_the_server_served() {
    let server = CountingServer::start(OK);
    let json = bench_json(&[
        "--url",
        &server.url("/"),
        "--requests",
        "5000",
        "--connections",
        "8",
        "--pipeline",
        "4",
    ]);
    assert_eq!(num(&json, "correct"), 5000.0, "{json}");
    assert_eq!(num(&json, "total"), 0.0, "{json}");
    // The client has every answer, so the server wrote them all.
    assert_eq!(server.served(5000), 5000, "{json}");
    assert!(num(&json, "requests_per_s") > 0.0);
    assert!(num(&json, "p50") > 0.0);
}

#[test]
fn wrong_status_is_an_error_not_a_success() {
    let server = CountingServer::start(Behaviour {
        response: b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
        ..OK
    });
    let json = bench_json(&[
        "--url",
        &server.url("/missing"),
        "--requests",
        "500",
        "--connections",
        "4",
    ]);
    assert_eq!(num(&json, "correct"), 0.0, "{json}");
    assert_eq!(num(&json, "requests_per_s"), 0.0, "{json}");
    assert_eq!(num(&json, "status"), server.served(500) as f64, "{json}");
    assert_eq!(num(&json, "status"), 500.0, "{json}");
}

#[test]
fn expected_status_can_be_changed() {
    let server = CountingServer::start(Behaviour {
        response: b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        ..OK
    });
    let json = bench_json(&[
        "--url",
        &server.url("/"),
        "--requests",
        "50",
        "--expect-status",
        "404",
    ]);
    assert_eq!(num(&json, "correct"), 50.0, "{json}");
    assert_eq!(num(&json, "total"), 0.0, "{json}");
}

#[test]
fn short_body_is_an_error() {
    // Promises 100 bytes, sends 5, closes.
    let server = CountingServer::start(Behaviour {
        response: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
        close_after: true,
        ..OK
    });
    let json = bench_json(&[
        "--url",
        &server.url("/"),
        "--requests",
        "20",
        "--connections",
        "2",
    ]);
    assert_eq!(num(&json, "correct"), 0.0, "{json}");
    assert_eq!(num(&json, "read"), 20.0, "{json}");
    assert_eq!(num(&json, "total"), 20.0, "{json}");
}

#[test]
fn malformed_answers_are_errors() {
    let server = CountingServer::start(Behaviour {
        response: b"HTTX/9 200 OK\r\n\r\n",
        ..OK
    });
    let json = bench_json(&["--url", &server.url("/"), "--requests", "10", "-c", "2"]);
    assert_eq!(num(&json, "correct"), 0.0, "{json}");
    assert_eq!(num(&json, "malformed"), 10.0, "{json}");
}

#[test]
fn silence_is_a_timeout() {
    // Answers only after 3 s; the client gives up on each request after 300 ms.
    let server = CountingServer::start(Behaviour {
        delay: Duration::from_secs(3),
        ..OK
    });
    let started = Instant::now();
    let json = bench_json(&[
        "--url",
        &server.url("/"),
        "--requests",
        "3",
        "-c",
        "1",
        "--timeout",
        "300ms",
    ]);
    assert_eq!(num(&json, "correct"), 0.0, "{json}");
    assert_eq!(num(&json, "timeout"), 3.0, "{json}");
    assert!(started.elapsed() < Duration::from_secs(3), "{json}");
}

#[test]
fn refused_connections_are_connect_errors() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let json = bench_json(&[
        "--url",
        &format!("http://127.0.0.1:{port}/"),
        "--duration",
        "300ms",
        "-c",
        "2",
    ]);
    assert_eq!(num(&json, "correct"), 0.0, "{json}");
    assert!(num(&json, "connect") >= 2.0, "{json}");
    assert_eq!(num(&json, "requests"), 0.0, "{json}");
}

#[test]
fn connection_close_answers_reconnect() {
    // Every answer closes its connection: each request needs a new one, none is an error.
    let server = CountingServer::start(Behaviour {
        response: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        close_after: true,
        ..OK
    });
    let json = bench_json(&[
        "--url",
        &server.url("/"),
        "--requests",
        "200",
        "--connections",
        "4",
        "--pipeline",
        "2",
    ]);
    assert_eq!(num(&json, "correct"), 200.0, "{json}");
    assert_eq!(num(&json, "total"), 0.0, "{json}");
    assert_eq!(server.served(200), 200);
}

#[test]
fn open_loop_measures_from_the_schedule() {
    let server = CountingServer::start(Behaviour {
        delay: Duration::from_millis(20),
        ..OK
    });
    // 10 connections at 20 ms per answer could do 500/s; ask for 200/s.
    let json = bench_json(&[
        "--url",
        &server.url("/"),
        "--rate",
        "200",
        "--connections",
        "10",
        "--duration",
        "2s",
    ]);
    let p50 = num(&json, "p50");
    let rps = num(&json, "requests_per_s");
    assert!(
        p50 >= 20_000.0,
        "p50 {p50} us below the server's delay: {json}"
    );
    assert!(
        (120.0..=260.0).contains(&rps),
        "{rps} req/s for 200: {json}"
    );
    assert_eq!(num(&json, "total"), 0.0, "{json}");
}

#[test]
fn open_loop_counts_the_wait_for_a_full_pipeline() {
    // One connection, 20 ms per answer: at most 50/s. Asked for 100/s, the queue grows, and
    // the latency measured from the schedule grows with it (a closed loop would report ~20 ms).
    let server = CountingServer::start(Behaviour {
        delay: Duration::from_millis(20),
        ..OK
    });
    let json = bench_json(&[
        "--url",
        &server.url("/"),
        "--rate",
        "100",
        "--connections",
        "1",
        "--duration",
        "2s",
    ]);
    let max = num(&json, "max");
    assert!(
        max > 200_000.0,
        "max {max} us: the backlog was not counted: {json}"
    );
}

#[test]
fn bad_url_is_one_line_and_nonzero() {
    let out = run_bounded(
        Command::new(BENCH).args(["run", "--url", "nothttp://x"]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("nothttp://x"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// A fresh directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!(
            "edgeserve-bench-test-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn compare_runs_end_to_end() {
    let out_dir = TempDir::new("compare");
    let started = Instant::now();
    let out = run_bounded(
        Command::new(BENCH).args([
            "compare",
            "--server",
            SERVER,
            "--models",
            "single,sharded",
            "--workloads",
            "small",
            "--connections",
            "1,4",
            "--duration",
            "300ms",
            "--out",
            out_dir.path().to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "{stderr}");
    assert!(stderr.contains("[4/4]"), "{stderr}");

    let csv = std::fs::read_to_string(out_dir.path().join("results.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for col in [
        "model",
        "workload",
        "connections",
        "requests_per_s",
        "p50_us",
        "p99_us",
        "errors",
        "completed",
        "cpu_s_per_10k",
        "cpu_us_per_req",
        "ctx_switches_per_req",
        "peak_rss_kib",
    ] {
        assert!(header.contains(&col), "{col} missing from {header:?}");
    }
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    for row in &rows {
        assert_eq!(row.len(), header.len(), "{csv}");
        let rps: f64 = row[col("requests_per_s")].parse().unwrap();
        assert!(rps > 0.0, "{csv}");
        assert_eq!(row[col("errors")], "0", "{csv}");
        // A cell runs until it has its minimum of answers (it has the time: 20 x 300 ms).
        assert!(
            row[col("completed")].parse::<u64>().unwrap() >= 200,
            "{csv}"
        );
        let cpu: f64 = row[col("cpu_us_per_req")].parse().unwrap();
        assert!(cpu > 0.0, "{csv}");
        assert!(["single", "sharded"].contains(&row[col("model")]), "{csv}");
        assert!(
            row[col("peak_rss_kib")].parse::<u64>().unwrap() > 0,
            "{csv}"
        );
    }

    let svg = std::fs::read_to_string(out_dir.path().join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
    // The Markdown table is on stdout.
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("| model | workload |"), "{table}");
}

#[test]
fn compare_reports_a_server_that_does_not_start() {
    let out_dir = TempDir::new("compare-fail");
    // `false` exits at once without listening: the cell is reported and the run goes on.
    let out = run_bounded(
        Command::new(BENCH).args([
            "compare",
            "--server",
            "/bin/false",
            "--models",
            "single",
            "--workloads",
            "small",
            "--connections",
            "1,2",
            "--duration",
            "100ms",
            "--out",
            out_dir.path().to_str().unwrap(),
        ]),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(out_dir.path().join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.lines().skip(1).all(|l| l.contains("start-failed")),
        "{csv}"
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("before listening"), "{table}");
}
