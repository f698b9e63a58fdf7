//! Static files under attack: redirects that point elsewhere, a directory swapped for a symlink
//! while it is being opened, and descriptor exhaustion through the file cache.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{BinaryServer, Client, SECRET, Site, TestServer, find};

const HELLO: &[u8] = b"Hello, World!\n";

const INSIDE: &[u8] = b"inside the root\n";
/// Larger than the default `--inline-max` (16 KiB), so its descriptor is what the cache keeps.
const BIG_LEN: usize = 100_000;

// --- 3. open redirect -------------------------------------------------------------------------

#[test]
fn directory_redirects_stay_on_this_origin() {
    let site = Site::new("adv-redirect");
    site.write("dir/index.html", b"<p>dir</p>\n");
    site.write("my dir/index.html", b"<p>spaced</p>\n");
    let server = TestServer::with(&site, |_| {});
    let mut c = server.client();
    // (request target, expected Location)
    let cases = [
        ("//evil.example/../dir", "/dir/"),
        ("//evil.example/%2e%2e/dir", "/dir/"),
        ("///evil.example/../dir", "/dir/"),
        ("//dir", "/dir/"),
        ("/./dir", "/dir/"),
        ("/x/../dir", "/dir/"),
        ("/%64ir", "/dir/"),
        ("/my%20dir", "/my%20dir/"),
        ("/dir?a=1&b=%2F", "/dir/?a=1&b=%2F"),
        ("//evil.example/../dir?x=//y", "/dir/?x=//y"),
    ];
    let mut failures = Vec::new();
    for (target, want) in cases {
        let r = c.get(target);
        let loc = r.header("location").unwrap_or("");
        if r.status != 301 || loc != want || loc.starts_with("//") {
            failures.push(format!(
                "{target}: {} Location {loc:?}, want 301 {want:?}",
                r.status
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Each Location, followed, serves the directory's index.
    assert_eq!(c.get("/my%20dir/").body, b"<p>spaced</p>\n");
}

// --- 4. symlink swapped in between the check and the open --------------------------------------

/// Exchanges two names atomically, as `renameat2(RENAME_EXCHANGE)` does.
fn exchange(a: &Path, b: &Path) {
    let a = CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: two valid NUL-terminated paths, AT_FDCWD, a flag this kernel knows.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(rc, 0, "renameat2: {}", std::io::Error::last_os_error());
}

#[test]
fn a_directory_swapped_for_a_symlink_never_serves_outside_the_root() {
    let site = Site::new("adv-race");
    site.write("d/f.txt", INSIDE);
    site.write("d/index.html", INSIDE);
    // Outside the root: a directory with the same names, holding the secret.
    let out = site.base.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("f.txt"), SECRET).unwrap();
    std::fs::write(out.join("index.html"), SECRET).unwrap();
    let swap = site.root().join("swap");
    symlink(&out, &swap).unwrap();
    // Every request opens the file again (no cache hit hides the race).
    let server = TestServer::with(&site, |cfg| cfg.cache_valid = Duration::ZERO);

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, d) = (Arc::clone(&stop), site.root().join("d"));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                exchange(&d, &swap);
                n += 1;
            }
            // Leave `d` as the real directory.
            if n % 2 == 1 {
                exchange(&d, &swap);
            }
        })
    };
    let (mut leaked, mut served, mut refused, mut total) = (0, 0, 0, 0);
    let mut c = server.client();
    let deadline = Instant::now() + Duration::from_secs(3);
    while total < 3000 && Instant::now() < deadline {
        let target = if total % 4 == 3 { "/d/" } else { "/d/f.txt" };
        let r = c.get(target);
        total += 1;
        if find(&r.body, SECRET).is_some() {
            leaked += 1;
        } else if r.status == 200 {
            assert_eq!(r.body, INSIDE, "{target}");
            served += 1;
        } else {
            // 503: the kernel may ask for a retry when a rename races the walk.
            assert!(matches!(r.status, 403 | 404 | 503), "{target}: {r:?}");
            refused += 1;
        }
        if r.closes() {
            c = server.client();
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    eprintln!("{total} requests: {served} inside, {refused} refused, {leaked} leaked");
    assert_eq!(
        leaked, 0,
        "secret served {leaked} of {total} ({served} inside, {refused} refused)"
    );
    assert!(
        served > 0,
        "never served the file inside ({total} requests)"
    );
    // Once the swapping stops, the file inside is served as before.
    assert_eq!(c.get("/d/f.txt").body, INSIDE);
}

// --- 6. the file cache's descriptors -----------------------------------------------------------

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn big_site(tag: &str) -> (Site, Vec<u8>) {
    let site = Site::new(tag);
    site.write("hello.txt", HELLO);
    let big = common::pseudo_random(BIG_LEN, 11);
    site.write("big.bin", &big);
    site.write("other.bin", &common::pseudo_random(BIG_LEN, 12));
    (site, big)
}

/// A distinct spelling of `/big.bin` for every `i`: the cache must see one file.
fn spelling(i: usize) -> String {
    match i % 4 {
        0 => format!("/{i}/../big.bin"),
        1 => format!("/./{i}/../%62ig.bin"),
        2 => format!("{}{i}/../big.bin", "/".repeat(1 + i % 7)),
        _ => format!("/x{i}/./../b%69g.bin"),
    }
}

/// Asks HEAD for `n` spellings of `/big.bin` on one keep-alive connection; returns the statuses
/// that were not 200, with their counts.
fn head_spellings(c: &mut Client, n: usize) -> Vec<String> {
    let mut bad = Vec::new();
    for i in 0..n {
        let path = spelling(i);
        c.send(format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c.head();
        if r.status != 200 || r.content_length() != Some(BIG_LEN as u64) {
            bad.push(format!("{path}: {}", r.status));
        }
    }
    bad
}

#[test]
fn many_spellings_of_a_large_file_do_not_exhaust_descriptors() {
    const NOFILE: usize = 256;
    let (site, big) = big_site("adv-fds");
    let server = BinaryServer::start_with_nofile(&site.root(), &[], Some(NOFILE as libc::rlim_t));
    let pid = server.child.id();
    let mut c = server.client();
    assert_eq!(c.get("/hello.txt").body, HELLO);
    let base = open_fds(pid);

    let bad = head_spellings(&mut c, 1200);
    let fds = open_fds(pid);
    assert!(
        bad.is_empty(),
        "{} of 1200 spellings not served 200 (fds {fds}): first {:?}; stderr: {}",
        bad.len(),
        &bad[..bad.len().min(5)],
        server.stderr()
    );
    eprintln!("descriptors: base {base}, after 1200 spellings {fds}");
    // One file: a handful of descriptors, not one per spelling.
    assert!(
        fds <= base + 8,
        "{fds} descriptors open after 1200 spellings (base {base})"
    );
    // New connections are still accepted and served.
    for path in ["/big.bin", "/other.bin", "/hello.txt"] {
        let mut fresh = server.client();
        let r = fresh.get(path);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        if path == "/big.bin" {
            assert_eq!(r.body, big);
        }
    }
    assert!(server.stderr().is_empty() || !server.stderr().contains("panicked"));
}

/// Serves `/hello.txt` and `n` distinct 20 KB files under `/f/` from a binary started with
/// `args`; returns the site, the server, the descriptors open before the files and at most
/// during them.
fn serve_distinct_files(tag: &str, n: usize, args: &[&str]) -> (Site, BinaryServer, usize, usize) {
    let site = Site::new(tag);
    site.write("hello.txt", HELLO);
    for i in 0..n {
        site.write(
            &format!("f/{i}.bin"),
            &common::pseudo_random(20_000, i as u64),
        );
    }
    let server = BinaryServer::start(&site.root(), args);
    let pid = server.child.id();
    let mut c = server.client();
    assert_eq!(c.get("/hello.txt").body, HELLO);
    drop(c);
    let base = open_fds(pid) + 8;
    let mut peak = 0;
    // Several connections, so that every shard or worker gets some of the files.
    let mut clients: Vec<Client> = (0..8).map(|_| server.client()).collect();
    for i in 0..n {
        let c = &mut clients[i % 8];
        c.send(format!("HEAD /f/{i}.bin HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c.head();
        assert_eq!(r.status, 200, "/f/{i}.bin");
        peak = peak.max(open_fds(pid));
    }
    (site, server, base, peak)
}

#[test]
fn cached_descriptors_stay_within_one_budget_whatever_the_model() {
    // 300 distinct large files, a budget of 64 descriptors (--cache-entries 64): shards and
    // workers each have a cache, but one budget.
    const BUDGET: usize = 64;
    let (_site, server, base, peak) =
        serve_distinct_files("adv-budget", 300, &["--cache-entries", "64"]);
    eprintln!("descriptors: base {base}, peak {peak}");
    assert!(
        peak <= base + BUDGET + 2,
        "peak {peak} descriptors, base {base}, budget {BUDGET}"
    );
    assert_eq!(common::get(server.addr, "/hello.txt").body, HELLO);
}

#[test]
fn idle_cached_descriptors_are_closed() {
    // Revalidated every 100 ms, so idle after a second (10 intervals).
    let (_site, server, base, peak) =
        serve_distinct_files("adv-idle", 50, &["--cache-valid", "100ms"]);
    assert!(
        peak >= base + 40,
        "large files were not cached: peak {peak}, base {base}"
    );
    let pid = server.child.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    let idle = loop {
        std::thread::sleep(Duration::from_millis(300));
        // Each loop or worker sweeps its own cache when it serves: several requests reach them.
        for _ in 0..8 {
            assert_eq!(common::get(server.addr, "/hello.txt").body, HELLO);
        }
        let n = open_fds(pid);
        if n <= base + 2 || Instant::now() > deadline {
            break n;
        }
    };
    eprintln!("descriptors: base {base}, peak {peak}, idle {idle}");
    assert!(
        idle <= base + 2,
        "{idle} descriptors still open after the cache went idle (base {base}, peak {peak})"
    );
}

// --- a file cut short while it is sent ----------------------------------------------------------

/// A file truncated while it is being sent ends the answer at once: the connection closes short
/// of its Content-Length. It must not wait for the send timeout: a `sendfile` that comes back
/// short because the file ended is not a full socket, and no writable edge would follow it.
#[test]
fn a_file_truncated_while_sent_closes_the_connection_at_once() {
    use std::io::{Read, Write};
    const LEN: usize = 64 << 20;
    let site = Site::new("adv-truncate");
    let path = site.write("big.bin", &vec![7u8; LEN]);
    let server = TestServer::with(&site, |cfg| cfg.send_timeout = Duration::from_secs(60));
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0;
    while got < 1 << 20 {
        match s.read(&mut buf) {
            Ok(0) => panic!("closed after {got} bytes, before the file was cut"),
            Ok(n) => got += n,
            Err(e) => panic!("read: {e}"),
        }
    }
    // Past what the kernel's buffers can hold by now (a few MiB each way), so the cut comes
    // in the middle of a later sendfile.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(24 << 20)
        .unwrap();
    let cut = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "no end {:?} after the cut, {got} bytes read: {e}",
                cut.elapsed()
            ),
        }
    }
    assert!(
        cut.elapsed() < Duration::from_secs(10),
        "the connection ended {:?} after the cut",
        cut.elapsed()
    );
    assert!(
        got <= (24 << 20) + 1024,
        "{got} bytes: more than the file holds now"
    );
}
