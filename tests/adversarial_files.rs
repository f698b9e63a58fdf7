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

use common::{SECRET, Site, TestServer, find};

const INSIDE: &[u8] = b"inside the root\n";

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
