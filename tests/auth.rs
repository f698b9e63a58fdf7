//! Basic authentication (`--auth`) over real sockets, with htpasswd files made by the real
//! `htpasswd` tool (apache2-utils): right, wrong and unknown credentials in every hash format we
//! take, garbled fields, prefix matching against dot-segment and encoding tricks, proxied
//! prefixes with and without `--auth-forward`, startup errors, the verifier's fairness rules
//! (one check per client address, shared checks for identical credentials, the cache), a client
//! that leaves during its check, and a static file's latency while wrong passwords flood in.
#![cfg(feature = "auth")]

mod common;
#[path = "common/upstream.rs"]
mod upstream;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Client, Response, Site, TestServer};
use edgeserve::config::AuthRule;
#[cfg(feature = "proxy")]
use edgeserve::config::Route;

const HELLO: &[u8] = b"Hello, World!\n";
const PRIVATE: &[u8] = b"private parts\n";

fn site() -> Site {
    let site = Site::new("auth");
    site.write("hello.txt", HELLO);
    site.write("private/secret.txt", PRIVATE);
    site.write("private/sub/deep.txt", PRIVATE);
    site.write("admin/panel.txt", b"admin\n");
    site
}

/// Adds (or, with `create`, starts the file with) `user` to an htpasswd file, hashed as `how`
/// says (`-B -C 5`, `-2`, `-5 -r 1000`, `-m` ...), with the real tool.
fn htpasswd(file: &Path, how: &[&str], user: &str, pass: &str) {
    let mut cmd = Command::new("htpasswd");
    cmd.arg(if file.exists() { "-b" } else { "-cb" });
    cmd.args(how).arg(file).arg(user).arg(pass);
    let out = cmd
        .output()
        .expect("htpasswd (apache2-utils) must be installed: .ci/run installs it");
    assert!(out.status.success(), "htpasswd: {out:?}");
}

fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in input.chunks(3) {
        let w = c
            .iter()
            .enumerate()
            .fold(0u32, |w, (i, &b)| w | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            s.push(if i <= c.len() {
                A[((w >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    s
}

fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{pass}").as_bytes()))
}

fn rule(prefix: &str, file: &Path) -> AuthRule {
    AuthRule {
        prefix: prefix.into(),
        file: file.to_path_buf(),
        realm: None,
    }
}

/// A GET with an optional Authorization value.
fn get(c: &mut Client, path: &str, auth: Option<&str>) -> Response {
    let field = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{field}\r\n").as_bytes());
    c.response()
}

fn one(addr: SocketAddr, path: &str, auth: Option<&str>) -> Response {
    get(&mut Client::connect(addr), path, auth)
}

/// A connection from another loopback address (127.0.0.2): another client as far as the
/// per-address limit goes.
fn connect_from(src: [u8; 4], to: SocketAddr) -> Client {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((src, 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    Client::from_stream(s.into())
}

struct Fixture {
    site: Site,
    file: PathBuf,
}

/// A site and an htpasswd file with alice (bcrypt, the `htpasswd -B` default cost 5).
fn fixture() -> Fixture {
    let site = site();
    let file = site.base.path().join("users");
    htpasswd(&file, &["-B"], "alice", "wonder land");
    Fixture { site, file }
}

#[test]
fn challenge_then_right_wrong_and_unknown_credentials() {
    let f = fixture();
    let server = TestServer::with(&f.site, |c| c.auth = vec![rule("/private/", &f.file)]);
    let mut c = server.client();

    let r = get(&mut c, "/private/secret.txt", None);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"/private/\", charset=\"UTF-8\"")
    );
    assert!(!r.closes(), "a 401 keeps the connection: {r:?}");
    assert!(!r.text().contains("private parts"));

    let r = get(
        &mut c,
        "/private/secret.txt",
        Some(&basic("alice", "wonder land")),
    );
    assert_eq!((r.status, r.body.as_slice()), (200, PRIVATE), "{r:?}");
    // Again on the same connection (the cache, or a check again: the same answer).
    let r = get(
        &mut c,
        "/private/sub/deep.txt",
        Some(&basic("alice", "wonder land")),
    );
    assert_eq!((r.status, r.body.as_slice()), (200, PRIVATE), "{r:?}");

    let stored = std::fs::read_to_string(&f.file).unwrap();
    let hash = stored.trim().split_once(':').unwrap().1.to_string();
    for (user, pass) in [
        ("alice", "wonder lan"),
        ("alice", "Wonder land"),
        ("alice", ""),
        ("alice", hash.as_str()), // the stored hash is no password
        ("bob", "wonder land"),
        ("", ""),
        ("alice", "wonder land ".repeat(50).as_str()),
    ] {
        let r = get(&mut c, "/private/secret.txt", Some(&basic(user, pass)));
        assert_eq!(r.status, 401, "{user}:{pass} -> {r:?}");
        assert!(r.header("www-authenticate").is_some());
    }
    // Unprotected paths need nothing and ignore credentials.
    assert_eq!(get(&mut c, "/hello.txt", None).body, HELLO);
    let r = get(&mut c, "/hello.txt", Some(&basic("x", "y")));
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO));
    // HEAD is protected the same way.
    c.send(b"HEAD /private/secret.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.head().status, 401);
}

#[test]
#[cfg(feature = "auth-sha")]
fn sha_crypt_users_made_by_htpasswd() {
    let site = site();
    let file = site.base.path().join("users");
    htpasswd(&file, &["-2"], "sha256", "s2 pass");
    htpasswd(&file, &["-5", "-r", "2000"], "sha512", "s5:pass");
    htpasswd(&file, &["-B", "-C", "4"], "bc", "bc pass");
    let server = TestServer::with(&site, |c| c.auth = vec![rule("/private", &file)]);
    for (user, right, wrong) in [
        ("sha256", "s2 pass", "s2 pas"),
        ("sha512", "s5:pass", "s5"),
        ("bc", "bc pass", "bc pass "),
    ] {
        let r = one(
            server.addr,
            "/private/secret.txt",
            Some(&basic(user, right)),
        );
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, PRIVATE),
            "{user}: {r:?}"
        );
        let r = one(
            server.addr,
            "/private/secret.txt",
            Some(&basic(user, wrong)),
        );
        assert_eq!(r.status, 401, "{user}: {r:?}");
    }
}

#[test]
fn garbled_authorization_fields_are_refused_and_the_server_goes_on() {
    let f = fixture();
    let server = TestServer::with(&f.site, |c| c.auth = vec![rule("/private/", &f.file)]);
    let long = format!("Basic {}", "A".repeat(6000));
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"Authorization: \r\n".to_vec(), 401),
        (b"Authorization: Basic\r\n".to_vec(), 401),
        (b"Authorization: Basic    \r\n".to_vec(), 401),
        (b"Authorization: Basic !!!!\r\n".to_vec(), 401),
        (b"Authorization: Basic YWxpY2U=\r\n".to_vec(), 401), // "alice": no colon
        (
            b"Authorization: Basic YWxpY2U6d29uZGVy=IGxhbmQ=\r\n".to_vec(),
            401,
        ),
        (b"Authorization: Bearer abc.def\r\n".to_vec(), 401),
        (b"Authorization: Basic \xff\xfe\x80\r\n".to_vec(), 401),
        (b"Authorization: Basic w7/Dvjr/\r\n".to_vec(), 401), // non-UTF-8 user and password
        (format!("Authorization: {long}\r\n").into_bytes(), 401),
        // Two fields: which one counts? Neither: 400.
        (
            format!(
                "Authorization: {}\r\nAuthorization: Basic eDp5\r\n",
                basic("alice", "wonder land")
            )
            .into_bytes(),
            400,
        ),
    ];
    for (field, want) in cases {
        let mut c = server.client();
        let mut req = b"GET /private/secret.txt HTTP/1.1\r\nHost: t\r\n".to_vec();
        req.extend_from_slice(&field);
        req.extend_from_slice(b"\r\n");
        c.send(&req);
        let r = c.response();
        assert_eq!(
            r.status,
            want,
            "{:?}: {r:?}",
            String::from_utf8_lossy(&field)
        );
        assert!(!r.text().contains("private parts"));
    }
    // A field larger than a head may be: 431, and the connection closes.
    let mut c = server.client();
    let huge = format!(
        "GET /private/secret.txt HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {}\r\n\r\n",
        "QUFB".repeat(4000)
    );
    let _ = c.try_send(huge.as_bytes());
    let r = c.response();
    assert_eq!(r.status, 431, "{r:?}");
    // Nothing broke.
    let r = one(
        server.addr,
        "/private/secret.txt",
        Some(&basic("alice", "wonder land")),
    );
    assert_eq!((r.status, r.body.as_slice()), (200, PRIVATE));
}

#[test]
fn dot_segments_and_encodings_do_not_get_around_a_prefix() {
    let f = fixture();
    let server = TestServer::with(&f.site, |c| {
        c.auth = vec![rule("/private/", &f.file), rule("/admin", &f.file)]
    });
    for path in [
        "/private/secret.txt",
        "/private/../private/secret.txt",
        "/hello.txt/../private/secret.txt",
        "/./private/secret.txt",
        "//private/secret.txt",
        "/private//secret.txt",
        "/private/./secret.txt",
        "/%70rivate/secret.txt",
        "/private%2Fsecret.txt",
        "/%2e/private/secret.txt",
        "/x/%2e%2e/private/secret.txt",
        "/x/.%2E/private/secret.txt",
        "/private/sub/../secret.txt",
        "/private/sub/%2e%2e/secret.txt",
        "/private/secret.txt?x=/hello.txt",
        "/private/secret.txt#frag",
        "/private/",
        "/private/sub/..",
        "/admin/panel.txt",
        "/admin",
        "/admin/",
        "/admin/../admin/panel.txt",
        "/%61dmin/panel.txt",
        "/private\\secret.txt",
        "/../private/secret.txt",
        "/private/%00",
    ] {
        let r = one(server.addr, path, None);
        assert!(
            r.status == 401 || r.status == 400,
            "{path} without credentials: {r:?}"
        );
        assert!(
            !r.text().contains("private") && !r.text().contains("admin"),
            "{path}"
        );
    }
    // The same paths with credentials: served (or refused as the files refuse them).
    for path in [
        "/private/../private/secret.txt",
        "/%70rivate/secret.txt",
        "/private/sub/%2e%2e/secret.txt",
    ] {
        let r = one(server.addr, path, Some(&basic("alice", "wonder land")));
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, PRIVATE),
            "{path}: {r:?}"
        );
    }
    // Outside the prefixes: "/private" is not under "/private/" (the files redirect it there).
    assert_eq!(one(server.addr, "/private", None).status, 301);
    assert_eq!(one(server.addr, "/hello.txt", None).body, HELLO);
    assert_eq!(one(server.addr, "/private/../hello.txt", None).body, HELLO);
    // A name that only starts like a protected one is under it too (prefixes are strings, as
    // the proxy's are): safe rather than surprising.
    assert_eq!(one(server.addr, "/administrator.txt", None).status, 401);
}

#[test]
fn longest_prefix_wins_and_each_has_its_realm() {
    let site = site();
    let (all, admins) = (
        site.base.path().join("all"),
        site.base.path().join("admins"),
    );
    htpasswd(&all, &["-B", "-C", "4"], "user", "u pass");
    htpasswd(&admins, &["-B", "-C", "4"], "root", "r pass");
    let server = TestServer::with(&site, |c| {
        c.auth = vec![
            AuthRule {
                realm: Some(r#"Site "all" \ users"#.into()),
                ..rule("/", &all)
            },
            rule("/admin/", &admins),
        ]
    });
    let user = basic("user", "u pass");
    let root = basic("root", "r pass");
    let r = one(server.addr, "/hello.txt", None);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Basic realm="Site \"all\" \\ users", charset="UTF-8""#)
    );
    assert_eq!(one(server.addr, "/hello.txt", Some(&user)).body, HELLO);
    assert_eq!(one(server.addr, "/hello.txt", Some(&root)).status, 401);
    let r = one(server.addr, "/admin/panel.txt", Some(&user));
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Basic realm="/admin/", charset="UTF-8""#)
    );
    assert_eq!(
        one(server.addr, "/admin/panel.txt", Some(&root)).status,
        200
    );
}

#[cfg(feature = "proxy")]
fn proxied(forward: bool) {
    let f = fixture();
    let up = upstream::Upstream::start(|_| upstream::ok("from upstream\n"));
    let server = TestServer::with(&f.site, |c| {
        c.proxies = vec![
            Route {
                prefix: "/api/".into(),
                upstreams: vec![up.addr],
            },
            Route {
                prefix: "/open/".into(),
                upstreams: vec![up.addr],
            },
        ];
        c.auth = vec![rule("/api/", &f.file)];
        c.auth_forward = forward;
    });
    let good = basic("alice", "wonder land");
    // Refused here: the upstream never hears of it.
    assert_eq!(one(server.addr, "/api/x", None).status, 401);
    assert_eq!(
        one(server.addr, "/api/x", Some(&basic("alice", "no"))).status,
        401
    );
    assert_eq!(one(server.addr, "/x/../api/x", None).status, 401);
    assert!(up.requests().is_empty(), "{:?}", up.requests());

    let mut c = server.client();
    c.send(
        format!("GET /api/items HTTP/1.1\r\nHost: h\r\nAuthorization: {good}\r\nX-Keep: 1\r\n\r\n")
            .as_bytes(),
    );
    let r = c.response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "from upstream\n"),
        "{r:?}"
    );
    // A second time on the same connection (cached).
    let r = get(&mut c, "/api/more", Some(&good));
    assert_eq!(r.status, 200, "{r:?}");
    let reqs = up.wait_requests(2, Duration::from_secs(5));
    for req in &reqs {
        let seen = req.header("authorization");
        if forward {
            assert_eq!(seen, Some(good.as_str()), "{req:#?}");
        } else {
            assert_eq!(seen, None, "{req:#?}");
        }
    }
    assert_eq!(reqs[0].header("x-keep"), Some("1"));
    // A proxied prefix we do not protect: the upstream's own credentials pass untouched.
    let r = one(server.addr, "/open/x", Some("Bearer up-token"));
    assert_eq!(r.status, 200);
    let reqs = up.wait_requests(3, Duration::from_secs(5));
    assert_eq!(reqs[2].header("authorization"), Some("Bearer up-token"));
}

#[cfg(feature = "proxy")]
#[test]
fn proxied_prefix_drops_authorization_upstream() {
    proxied(false);
}

#[cfg(feature = "proxy")]
#[test]
fn proxied_prefix_with_auth_forward_passes_it_on() {
    proxied(true);
}

#[test]
fn startup_refuses_weak_hashes_naming_file_and_line() {
    let site = site();
    let file = site.base.path().join("users");
    htpasswd(&file, &["-B", "-C", "4"], "good", "x");
    htpasswd(&file, &["-m"], "md5user", "x");
    let root = site.root();
    let arg = format!("/private/={}", file.display());
    let (status, _, err) = common::run_binary(&[
        "--listen",
        "127.0.0.1:0",
        "--auth",
        &arg,
        root.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{}:2:", file.display())) && err.contains("MD5"),
        "{err}"
    );

    for (how, what) in [
        (&["-s"][..], "SHA-1"),
        (&["-d"][..], "crypt"),
        (&["-p"], "plain"),
    ] {
        let f = site.base.path().join(format!("users{}", how[0]));
        htpasswd(&f, how, "u", "x");
        let arg = format!("/={}", f.display());
        let (status, _, err) = common::run_binary(&["--listen", "127.0.0.1:0", "--auth", &arg]);
        assert_eq!(status.code(), Some(2), "{err}");
        assert!(err.contains(":1:") && err.contains(what), "{how:?}: {err}");
    }
    let missing = format!("/={}", site.base.path().join("nope").display());
    let (status, _, err) = common::run_binary(&["--listen", "127.0.0.1:0", "--auth", &missing]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("nope") && err.lines().count() == 1, "{err}");
    let (status, _, err) = common::run_binary(&["--auth-realm", "/x=y"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--auth-realm"), "{err}");
}

/// A user whose bcrypt cost makes a check take long enough (about 0.15 s here, seconds on a
/// loaded machine) that what happens meanwhile can be watched.
fn slow_fixture() -> Fixture {
    let f = fixture();
    htpasswd(&f.file, &["-B", "-C", "11"], "slow", "slow pass");
    f
}

/// The tests that keep a verifier busy, and the flood measurement, take turns: a verifier
/// spinning for another test of this file would only measure this machine's two cores.
fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A client for answers that wait for a slow check: a loaded machine may take longer than the
/// usual socket timeout.
fn patient(addr: SocketAddr) -> Client {
    let c = Client::connect(addr);
    c.stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    c
}

fn send_get(c: &mut Client, path: &str, auth: &str) {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\n\r\n").as_bytes());
}

/// Starts a slow (wrong) check from 127.0.0.1 and returns its waiting connection once a second
/// check from this address is refused with 429, which shows that the first is in flight. (If
/// the probe was read first, its own check ran and the held request may have met it: again.)
fn hold_a_check(addr: SocketAddr, tag: &str) -> Client {
    for i in 0..20 {
        let mut held = patient(addr);
        send_get(
            &mut held,
            "/private/secret.txt",
            &basic("slow", &format!("{tag} {i}")),
        );
        let mut probe = patient(addr);
        let r = get(
            &mut probe,
            "/private/secret.txt",
            Some(&basic("slow", "probe")),
        );
        if r.status == 429 {
            assert_eq!(r.header("retry-after"), Some("1"));
            return held;
        }
        assert_eq!(r.status, 401, "{r:?}");
        let r = held.response();
        assert!(r.status == 401 || r.status == 429, "{r:?}");
    }
    panic!("no check was ever seen in flight");
}

#[test]
fn identical_credentials_in_flight_share_one_check() {
    let _turn = heavy();
    let f = slow_fixture();
    let server = TestServer::with(&f.site, |c| c.auth = vec![rule("/private/", &f.file)]);
    // A browser after a login: the same new credentials on several connections at once. They
    // join the first check rather than count as more checks from this address (no 429).
    let auth = basic("slow", "slow pass");
    let mut clients: Vec<Client> = (0..4).map(|_| patient(server.addr)).collect();
    for c in &mut clients {
        send_get(c, "/private/secret.txt", &auth);
    }
    for c in &mut clients {
        let r = c.response();
        assert_eq!((r.status, r.body.as_slice()), (200, PRIVATE), "{r:?}");
    }
}

#[test]
fn one_check_per_address_at_a_time_but_cached_logins_pass() {
    let _turn = heavy();
    let f = slow_fixture();
    let server = TestServer::with(&f.site, |c| c.auth = vec![rule("/private/", &f.file)]);
    let good = basic("alice", "wonder land");
    assert_eq!(
        one(server.addr, "/private/secret.txt", Some(&good)).status,
        200
    );
    let mut held = hold_a_check(server.addr, "wrong");
    // A cached login from the same address is not held up by it.
    let r = one(server.addr, "/private/secret.txt", Some(&good));
    assert_eq!((r.status, r.body.as_slice()), (200, PRIVATE), "{r:?}");
    // Another address is not refused for it.
    let mut other = connect_from([127, 0, 0, 2], server.addr);
    other
        .stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let r = get(
        &mut other,
        "/private/secret.txt",
        Some(&basic("slow", "slow pass")),
    );
    assert_eq!((r.status, r.body.as_slice()), (200, PRIVATE), "{r:?}");
    assert_eq!(held.response().status, 401);
}

#[test]
fn without_the_cache_every_request_is_checked() {
    let _turn = heavy();
    let f = slow_fixture();
    let server = TestServer::with(&f.site, |c| {
        c.auth = vec![rule("/private/", &f.file)];
        c.auth_cache = Duration::ZERO;
    });
    let good = basic("alice", "wonder land");
    assert_eq!(
        one(server.addr, "/private/secret.txt", Some(&good)).status,
        200
    );
    let mut held = hold_a_check(server.addr, "wrong");
    // alice's check was not remembered: it is a second check from this address.
    let r = one(server.addr, "/private/secret.txt", Some(&good));
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(held.response().status, 401);
}

#[test]
fn a_client_that_leaves_during_its_check_frees_its_place() {
    let _turn = heavy();
    let f = slow_fixture();
    let server = TestServer::with(&f.site, |c| c.auth = vec![rule("/private/", &f.file)]);
    for i in 0..3 {
        drop(hold_a_check(server.addr, &format!("gone {i}")));
        // Its check runs to the end; then this address may have another.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut c = patient(server.addr);
            let r = get(&mut c, "/private/secret.txt", Some(&basic("alice", "nope")));
            if r.status == 401 {
                break;
            }
            assert_eq!(r.status, 429, "{r:?}");
            assert!(Instant::now() < deadline, "the place was never freed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let r = one(
        server.addr,
        "/private/secret.txt",
        Some(&basic("alice", "wonder land")),
    );
    assert_eq!(r.status, 200);
    // A client that half-closes after its request still gets its answer.
    let mut c = patient(server.addr);
    send_get(&mut c, "/private/secret.txt", &basic("slow", "slow pass"));
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (200, PRIVATE), "{r:?}");
    // Shutting down with a check in flight is clean (the server's drop joins it).
    let _held = hold_a_check(server.addr, "last");
    server.stop().expect("clean stop");
}

/// Pipelined requests behind one that waits for its check are answered in order.
#[test]
fn pipelined_requests_wait_behind_a_check() {
    let f = fixture();
    let server = TestServer::with(&f.site, |c| c.auth = vec![rule("/private/", &f.file)]);
    let mut c = server.client();
    let good = basic("alice", "wonder land");
    c.send(
        format!(
            "GET /private/secret.txt HTTP/1.1\r\nHost: t\r\nAuthorization: {good}\r\n\r\n\
             GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n\
             GET /private/sub/deep.txt HTTP/1.1\r\nHost: t\r\nAuthorization: Basic eDp5\r\n\r\n\
             GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let statuses: Vec<(u16, usize)> = (0..4)
        .map(|_| {
            let r = c.response();
            (r.status, r.body.len())
        })
        .collect();
    assert_eq!(
        statuses,
        [
            (200, PRIVATE.len()),
            (200, HELLO.len()),
            (401, 13),
            (200, HELLO.len())
        ]
    );
}

/// The measurement the issue asks for: a static file's latency while another client sends
/// wrong passwords as fast as it can (the goal is a p99 under 5 ms; the bound here is generous
/// for a loaded CI machine, and the figure is printed). Meanwhile a new user's first login from
/// another address gets through in bounded time.
#[test]
fn static_file_stays_fast_while_wrong_passwords_flood_in() {
    let _turn = heavy();
    let f = fixture();
    htpasswd(&f.file, &["-B"], "late", "late pass");
    let server = TestServer::with(&f.site, |c| c.auth = vec![rule("/private/", &f.file)]);
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    const FLOODERS: usize = 4;
    let start = Arc::new(Barrier::new(FLOODERS + 1));
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|t| {
            let (stop, sent, start) = (stop.clone(), sent.clone(), start.clone());
            std::thread::spawn(move || {
                let mut statuses = [0usize; 600];
                start.wait();
                let mut c = Client::connect(addr);
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    i += 1;
                    let auth = basic("alice", &format!("guess {t} {i}"));
                    let r = get(&mut c, "/private/secret.txt", Some(&auth));
                    statuses[usize::from(r.status).min(599)] += 1;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                statuses
            })
        })
        .collect();
    start.wait();
    // Let the flood get going.
    let t0 = Instant::now();
    while sent.load(Ordering::Relaxed) < 50 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // A request every millisecond or so, for about a second and a half: the flood runs all along.
    let mut c = Client::connect(addr);
    let mut times = Vec::with_capacity(1000);
    let flood_before = sent.load(Ordering::Relaxed);
    let window = Instant::now();
    for _ in 0..1000 {
        let t = Instant::now();
        let r = get(&mut c, "/hello.txt", None);
        times.push(t.elapsed());
        assert_eq!(r.body, HELLO);
        std::thread::sleep(Duration::from_millis(1));
    }
    let window = window.elapsed();
    let flood_during = sent.load(Ordering::Relaxed) - flood_before;
    // Another user's first login, from another address, while the flood goes on.
    let t = Instant::now();
    let mut other = connect_from([127, 0, 0, 2], addr);
    let r = get(
        &mut other,
        "/private/secret.txt",
        Some(&basic("late", "late pass")),
    );
    let login = t.elapsed();
    assert_eq!((r.status, r.body.as_slice()), (200, PRIVATE), "{r:?}");
    stop.store(true, Ordering::Relaxed);
    let mut statuses = [0usize; 600];
    for h in flooders {
        for (s, n) in h.join().unwrap().iter().enumerate() {
            statuses[s] += n;
        }
    }
    times.sort();
    let p50 = times[times.len() / 2];
    let p99 = times[times.len() * 99 / 100];
    let flood = sent.load(Ordering::Relaxed);
    eprintln!(
        "static file under a wrong-password flood ({:?}): p50 {p50:?}, p99 {p99:?}, max {:?}; \
         flood: {flood_during} requests in the {window:?} measured ({:.0}/s), {flood} in all, \
         {} x 401, {} x 429, {} x 503; other user's login {login:?}",
        common::test_model(),
        times[times.len() - 1],
        flood_during as f64 / window.as_secs_f64(),
        statuses[401],
        statuses[429],
        statuses[503],
    );
    assert!(statuses[401] > 0 && statuses[429] > 0, "{flood}");
    assert_eq!(statuses[200], 0);
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
    assert!(login < Duration::from_secs(3), "login took {login:?}");
    let _ = std::io::stderr().flush();
}

/// The flood at the raw socket level: a client pipelining wrong passwords without reading
/// leaves its own connection stuck behind its own check, not the server.
#[test]
fn a_pipelining_guesser_only_slows_itself() {
    let _turn = heavy();
    let f = slow_fixture();
    let server = TestServer::with(&f.site, |c| c.auth = vec![rule("/private/", &f.file)]);
    let mut guesser = TcpStream::connect(server.addr).unwrap();
    guesser
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut burst = Vec::new();
    for i in 0..20 {
        burst.extend_from_slice(
            format!(
                "GET /private/secret.txt HTTP/1.1\r\nHost: t\r\nAuthorization: {}\r\n\r\n",
                basic("slow", &format!("g{i}"))
            )
            .as_bytes(),
        );
    }
    let _ = guesser.write_all(&burst);
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(one(server.addr, "/hello.txt", None).body, HELLO);
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(guesser);
}

/// SIGHUP reads the htpasswd files and prefixes again: a changed password works at once and the
/// old one (cached as good a moment ago) no longer does, a new user gets in and a removed one
/// is refused; a file that no longer loads fails the reload and changes nothing.
#[test]
fn sighup_reads_the_htpasswd_files_again() {
    let f = fixture();
    let root = f.site.root();
    let auth = format!("/private/={}", f.file.display());
    let server = common::BinaryServer::start(
        &root,
        &[
            "--auth",
            &auth,
            "--log-level",
            "info",
            "--auth-cache",
            "60s",
        ],
    );
    let status = |path: &str, user: &str, pass: &str| {
        one(server.addr, path, Some(&basic(user, pass))).status
    };
    let reload = |what: &str| {
        let before = server.stderr().matches("reload").count();
        server.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.stderr().matches("reload").count() == before {
            assert!(Instant::now() < deadline, "no reload line after {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    assert_eq!(status("/private/secret.txt", "alice", "wonder land"), 200);
    // A new password for alice, and bob added.
    std::fs::remove_file(&f.file).unwrap();
    htpasswd(&f.file, &["-B"], "alice", "looking glass");
    htpasswd(&f.file, &["-B"], "bob", "builder");
    reload("new passwords");
    assert_eq!(status("/private/secret.txt", "alice", "wonder land"), 401);
    assert_eq!(status("/private/secret.txt", "alice", "looking glass"), 200);
    assert_eq!(status("/private/secret.txt", "bob", "builder"), 200);
    // A file that no longer loads (a weak hash) changes nothing.
    let good = std::fs::read(&f.file).unwrap();
    let mut weak = good.clone();
    weak.extend_from_slice(b"carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n");
    std::fs::write(&f.file, &weak).unwrap();
    reload("a weak hash");
    assert!(
        server.stderr().contains("reload failed"),
        "{}",
        server.stderr()
    );
    assert_eq!(status("/private/secret.txt", "bob", "builder"), 200);
    // Bob removed, and the file put right: bob's cached success is forgotten with the swap.
    std::fs::remove_file(&f.file).unwrap();
    htpasswd(&f.file, &["-B"], "alice", "looking glass");
    reload("bob removed");
    assert_eq!(status("/private/secret.txt", "bob", "builder"), 401);
    assert_eq!(status("/private/secret.txt", "alice", "looking glass"), 200);
    assert_eq!(one(server.addr, "/hello.txt", None).status, 200);
}
