//! HTTPS (feature "tls"): real clients (curl, Python's ssl, openssl s_client, and a rustls client
//! for exact control of records) against TLS listeners, with certificates made at test time by
//! the openssl CLI. Every model, through `EDGESERVE_TEST_MODEL`.
#![cfg(feature = "tls")]

mod common;
#[path = "common/upstream.rs"]
mod upstream;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use common::{
    BinaryServer, IO_TIMEOUT, Response, Site, TempDir, TestServer, find, parse_head, pseudo_random,
    run_binary, wait_timeout,
};

// ---------------------------------------------------------------------------------------------
// A test CA and server certificates (openssl CLI)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum KeyKind {
    /// ECDSA P-256, key file PKCS#8.
    Ec,
    /// ECDSA P-256, key file SEC1 ("EC PRIVATE KEY").
    EcSec1,
    /// RSA 2048, key file PKCS#8.
    Rsa,
    /// RSA 2048, key file PKCS#1 ("RSA PRIVATE KEY").
    RsaPkcs1,
}

/// A CA and a leaf for localhost and 127.0.0.1 signed by it, in a temporary directory.
struct Pki {
    dir: TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl CLI (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    fn new(kind: KeyKind) -> Pki {
        let dir = TempDir::new("tls-pki");
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
        let rsa = ["-newkey", "rsa:2048"];
        let mut ca = vec![
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=edgeserve test CA",
        ];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(d, &ca);
        let mut req = vec!["req", "-nodes", "-subj", "/CN=localhost"];
        req.extend(if matches!(kind, KeyKind::Ec | KeyKind::EcSec1) {
            &ec[..]
        } else {
            &rsa[..]
        });
        req.extend(["-keyout", "leaf.p8", "-out", "leaf.csr"]);
        openssl(d, &req);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "leaf.pem",
            ],
        );
        match kind {
            KeyKind::Ec | KeyKind::Rsa => {
                std::fs::rename(d.join("leaf.p8"), d.join("leaf.key")).unwrap()
            }
            KeyKind::EcSec1 => openssl(d, &["ec", "-in", "leaf.p8", "-out", "leaf.key"]),
            KeyKind::RsaPkcs1 => openssl(
                d,
                &["rsa", "-in", "leaf.p8", "-traditional", "-out", "leaf.key"],
            ),
        }
        let head = std::fs::read_to_string(d.join("leaf.key")).unwrap();
        let want = match kind {
            KeyKind::Ec | KeyKind::Rsa => "-----BEGIN PRIVATE KEY-----",
            KeyKind::EcSec1 => "-----BEGIN EC PRIVATE KEY-----",
            KeyKind::RsaPkcs1 => "-----BEGIN RSA PRIVATE KEY-----",
        };
        assert!(head.starts_with(want), "{kind:?} key file: {head:.40}");
        Pki {
            ca: d.join("ca.pem"),
            cert: d.join("leaf.pem"),
            key: d.join("leaf.key"),
            dir,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

fn site() -> Site {
    let site = Site::new("tls");
    site.write("hello.txt", b"Hello over TLS\n");
    site.write("data.bin", &pseudo_random(300_000, 7));
    site
}

/// A server over `site` (the model under test) with a plain listener, then a TLS one, changed
/// by `tweak`.
fn tls_server(site: &Site, pki: &Pki, tweak: impl FnOnce(&mut edgeserve::Config)) -> TestServer {
    TestServer::with(site, |cfg| {
        cfg.listen.push(edgeserve::config::Listen {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: true,
            proxy_protocol: false,
        });
        cfg.tls.cert = Some(pki.cert.clone());
        cfg.tls.key = Some(pki.key.clone());
        tweak(cfg);
    })
}

/// The address of the server's TLS listener.
fn tls_addr(server: &TestServer) -> SocketAddr {
    server.addrs[1]
}

/// The binary with a TLS listener (and the plain one `BinaryServer` gives it), and the TLS
/// listener's address from its `listening on https://` line.
fn tls_binary(site: &Site, cert: &Path, key: &Path, extra: &[&str]) -> (BinaryServer, SocketAddr) {
    let mut args = vec![
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend(extra);
    let server = BinaryServer::start(&site.root(), &args);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = server.stderr();
        if let Some(addr) = text
            .split("listening on https://")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .and_then(|a| a.trim().parse().ok())
        {
            return (server, addr);
        }
        assert!(Instant::now() < deadline, "no https line: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// A rustls client: exact control of what goes in which record
// ---------------------------------------------------------------------------------------------

fn client_config(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

fn default_client(pki: &Pki) -> Arc<ClientConfig> {
    client_config(pki, rustls::DEFAULT_VERSIONS)
}

struct TlsClient {
    s: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    /// Connects and completes the handshake.
    fn connect(addr: SocketAddr, cfg: &Arc<ClientConfig>) -> TlsClient {
        TlsClient::try_connect(addr, cfg).expect("TLS handshake")
    }

    fn try_connect(addr: SocketAddr, cfg: &Arc<ClientConfig>) -> io::Result<TlsClient> {
        let sock = TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        sock.set_write_timeout(Some(IO_TIMEOUT))?;
        sock.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(Arc::clone(cfg), name).map_err(io::Error::other)?;
        let mut s = StreamOwned::new(conn, sock);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(TlsClient { s, buf: Vec::new() })
    }

    /// Sends `bytes` as one TLS record (up to 16 KiB).
    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("send");
        self.s.flush().expect("flush");
    }

    fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
        self.response()
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 32 * 1024];
        let n = self.s.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn response(&mut self) -> Response {
        let deadline = Instant::now() + Duration::from_secs(30);
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            assert!(Instant::now() < deadline, "head too slow");
            let n = self.fill().expect("read a response head");
            assert!(
                n > 0,
                "EOF before a head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head: Vec<u8> = self.buf.drain(..end).collect();
        let mut r = parse_head(&head);
        let len = r.content_length().unwrap_or(0) as usize;
        while self.buf.len() < len {
            assert!(Instant::now() < deadline, "body too slow");
            assert!(self.fill().expect("read a body") > 0, "EOF in a body");
        }
        r.body = self.buf.drain(..len).collect();
        r
    }

    /// Reads until the server closes; true when it sent close_notify first.
    fn close_notify(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no close");
            match self.fill() {
                Ok(0) => return true, // rustls: 0 only after close_notify
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return false,
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

/// Waits up to `limit` for the peer to close `sock`; the bytes read before.
fn read_until_closed(sock: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, String> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match sock.read(&mut chunk) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(got),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        if Instant::now() > deadline {
            return Err(format!(
                "still open after {limit:?} ({} bytes read)",
                got.len()
            ));
        }
    }
}

/// A ClientHello made by rustls, for the tests that send part of one.
fn client_hello(pki: &Pki) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(default_client(pki), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    assert_eq!(hello[0], 22, "a handshake record");
    hello
}

// ---------------------------------------------------------------------------------------------
// Real clients
// ---------------------------------------------------------------------------------------------

fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl (apt-get install curl)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn curl_over_tls_1_2_and_1_3_with_alpn_and_hsts() {
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let server = tls_server(&site, &pki, |cfg| cfg.tls.hsts = Some(31536000));
    let url = format!("https://localhost:{}/hello.txt", tls_addr(&server).port());
    let resolve = format!("localhost:{}:127.0.0.1", tls_addr(&server).port());
    let ca = pki.ca.to_str().unwrap();
    for (flags, proto) in [
        (&["--tlsv1.2", "--tls-max", "1.2"][..], "TLSv1.2"),
        (&["--tlsv1.3"][..], "TLSv1.3"),
    ] {
        let mut args = vec!["-v", "-i", "--cacert", ca, "--resolve", &resolve, &url];
        args.extend(flags);
        let (ok, out, err) = curl(&args);
        assert!(ok, "curl {flags:?}: {err}");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("\r\n\r\nHello over TLS\n"), "{out}");
        assert!(
            out.contains("Strict-Transport-Security: max-age=31536000\r\n"),
            "{out}"
        );
        assert!(err.contains(proto), "{proto} not in: {err}");
        assert!(err.contains("ALPN: server accepted http/1.1"), "{err}");
    }
}

#[test]
fn python_ssl_resumes_a_session() {
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let server = tls_server(&site, &pki, |_| {});
    let script = r#"
import socket, ssl, sys
port, ca, version = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
v = ssl.TLSVersion.TLSv1_3 if version == "1.3" else ssl.TLSVersion.TLSv1_2
ctx.minimum_version = v
ctx.maximum_version = v
def fetch(session=None):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            assert data.endswith(b"Hello over TLS\n"), data
            return s.session, s.session_reused, s.version()
session, reused1, v1 = fetch()
_, reused2, v2 = fetch(session)
print(v1, reused1, v2, reused2)
"#;
    for version in ["1.2", "1.3"] {
        let out = Command::new("python3")
            .args(["-c", script])
            .arg(tls_addr(&server).port().to_string())
            .arg(&pki.ca)
            .arg(version)
            .output()
            .expect("python3");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "python {version}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            text.trim(),
            format!("TLSv{version} False TLSv{version} True"),
            "the second handshake is resumed"
        );
    }
}

/// Runs `openssl s_client` against `port` with `args`, `input` on stdin; its stdout.
fn s_client(port: u16, pki: &Pki, args: &[&str], input: &[u8]) -> String {
    let connect = format!("127.0.0.1:{port}");
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &connect,
            "-servername",
            "localhost",
            "-CAfile",
        ])
        .arg(&pki.ca)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = reader.join().unwrap();
    assert!(status.is_some(), "s_client did not finish: {out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    out
}

#[test]
fn openssl_s_client_resumes_over_tls_1_2_and_1_3() {
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let server = tls_server(&site, &pki, |_| {});
    let port = tls_addr(&server).port();
    // TLS 1.2, -reconnect: one full handshake, then five that resume it.
    let out = s_client(port, &pki, &["-tls1_2", "-reconnect"], b"");
    let new = out
        .lines()
        .filter(|l| l.starts_with("New, TLSv1.2"))
        .count();
    let reused = out
        .lines()
        .filter(|l| l.starts_with("Reused, TLSv1.2"))
        .count();
    assert_eq!((new, reused), (1, 5), "{out}");
    // TLS 1.3: the ticket comes after the handshake, so save the session after an exchange and
    // offer it on the next connection.
    let sess = pki.dir.path().join("s_client.session");
    let sess = sess.to_str().unwrap();
    let get = b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let out = s_client(port, &pki, &["-tls1_3", "-ign_eof", "-sess_out", sess], get);
    assert!(out.contains("New, TLSv1.3"), "{out}");
    assert!(out.contains("Hello over TLS"), "{out}");
    let out = s_client(port, &pki, &["-tls1_3", "-ign_eof", "-sess_in", sess], get);
    assert!(out.contains("Reused, TLSv1.3"), "{out}");
    assert!(out.contains("Hello over TLS"), "{out}");
}

#[test]
fn ecdsa_and_rsa_keys_in_every_pem_form() {
    let site = site();
    for kind in [
        KeyKind::Ec,
        KeyKind::EcSec1,
        KeyKind::Rsa,
        KeyKind::RsaPkcs1,
    ] {
        let pki = Pki::new(kind);
        let server = tls_server(&site, &pki, |_| {});
        for versions in [
            &[&rustls::version::TLS12][..],
            &[&rustls::version::TLS13][..],
        ] {
            let mut c = TlsClient::connect(tls_addr(&server), &client_config(&pki, versions));
            let r = c.get("/hello.txt");
            assert_eq!(
                (r.status, &r.body[..]),
                (200, &b"Hello over TLS\n"[..]),
                "{kind:?}"
            );
            assert_eq!(c.s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Records and the loop: several requests in one record, one request over many records
// ---------------------------------------------------------------------------------------------

#[test]
fn pipelined_requests_in_one_record_are_all_answered() {
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let server = tls_server(&site, &pki, |_| {});
    let mut c = TlsClient::connect(tls_addr(&server), &default_client(&pki));
    // 20 requests, one record: the server must answer all without another edge.
    let one = b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 20).collect();
    c.send(&many);
    for i in 0..20 {
        let r = c.response();
        assert_eq!(
            (r.status, &r.body[..]),
            (200, &b"Hello over TLS\n"[..]),
            "answer {i}"
        );
    }
    // And a big answer after small ones, on the same connection.
    let r = c.get("/data.bin");
    common::assert_same_bytes(&r.body, &pseudo_random(300_000, 7), "data.bin");
}

#[test]
fn plaintext_left_in_tls_is_served_without_a_new_edge() {
    // 400 pipelined requests (18 KB, two records) for 20 KB answers: the server stops reading
    // while its output is over the high-water mark, with requests decrypted and waiting in the
    // TLS session and nothing more on the socket. They must be answered all the same.
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let mid = pseudo_random(20_000, 3);
    site.write("mid.bin", &mid);
    let server = tls_server(&site, &pki, |_| {});
    let mut c = TlsClient::connect(tls_addr(&server), &default_client(&pki));
    let one = b"GET /mid.bin HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let many: Vec<u8> = one.iter().copied().cycle().take(one.len() * 400).collect();
    assert!(many.len() > 16 * 1024);
    c.send(&many);
    for i in 0..400 {
        let r = c.response();
        assert_eq!(r.status, 200, "answer {i}");
        assert!(r.body == mid, "answer {i}: body differs");
    }
}

#[test]
fn a_request_split_byte_by_byte_over_records() {
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let server = tls_server(&site, &pki, |_| {});
    let mut c = TlsClient::connect(tls_addr(&server), &default_client(&pki));
    for &b in b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n" {
        c.send(&[b]); // a record per byte
    }
    let r = c.response();
    assert_eq!((r.status, &r.body[..]), (200, &b"Hello over TLS\n"[..]));
}

#[test]
fn range_and_conditional_requests_over_tls() {
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let server = tls_server(&site, &pki, |_| {});
    let mut c = TlsClient::connect(tls_addr(&server), &default_client(&pki));
    c.send(b"GET /data.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes=100000-100099\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 206, "{r:?}");
    assert_eq!(
        r.header("content-range"),
        Some("bytes 100000-100099/300000")
    );
    assert_eq!(&r.body[..], &pseudo_random(300_000, 7)[100_000..100_100]);
    let etag = c.get("/data.bin").header("etag").unwrap().to_string();
    c.send(
        format!("GET /data.bin HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: {etag}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(c.response().status, 304);
}

#[test]
fn close_notify_before_the_close() {
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let server = tls_server(&site, &pki, |_| {});
    let mut c = TlsClient::connect(tls_addr(&server), &default_client(&pki));
    c.send(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(c.close_notify(), "the server closed without close_notify");
}

// ---------------------------------------------------------------------------------------------
// Bad clients: the server closes them and keeps serving others
// ---------------------------------------------------------------------------------------------

/// A fresh client still gets an answer.
#[track_caller]
fn still_serves(addr: SocketAddr, pki: &Pki) {
    let mut c = TlsClient::connect(addr, &default_client(pki));
    assert_eq!(c.get("/hello.txt").status, 200);
}

#[test]
fn plain_http_on_the_tls_port_gets_a_readable_400() {
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let server = tls_server(&site, &pki, |_| {});
    let mut s = TcpStream::connect(tls_addr(&server)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(10)).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(
        body,
        "The plain HTTP request was sent to an HTTPS port.\r\n"
    );
    assert!(
        text.contains(&format!("Content-Length: {}\r\n", body.len())),
        "{text}"
    );
    still_serves(tls_addr(&server), &pki);
}

#[test]
fn garbage_is_closed_at_once_without_an_answer() {
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let server = tls_server(&site, &pki, |cfg| {
        cfg.header_timeout = Duration::from_secs(60)
    });
    for garbage in [
        &b"\x00\x01\x02\x03garbage"[..],
        b"\xff",
        b"\x16\x03\x01\x00\x05hello",
    ] {
        let mut s = TcpStream::connect(tls_addr(&server)).unwrap();
        s.write_all(garbage).unwrap();
        let started = Instant::now();
        let got = read_until_closed(&mut s, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{garbage:?}: {e}"));
        // At once: well before the 60 s header timeout. A TLS alert at most, no HTTP.
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!got.starts_with(b"HTTP"), "{garbage:?}: {got:?}");
        assert!(got.is_empty() || got[0] == 21, "only an alert: {got:?}");
    }
    still_serves(tls_addr(&server), &pki);
}

#[test]
fn a_stalled_handshake_is_closed_at_the_header_timeout() {
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let server = tls_server(&site, &pki, |cfg| {
        cfg.header_timeout = Duration::from_millis(400);
        cfg.idle_timeout = Duration::from_secs(60);
    });
    let hello = client_hello(&pki);
    // Nothing at all, and half a ClientHello.
    for sent in [&hello[..0], &hello[..hello.len() / 2]] {
        let mut s = TcpStream::connect(tls_addr(&server)).unwrap();
        s.write_all(sent).unwrap();
        let started = Instant::now();
        let got = read_until_closed(&mut s, Duration::from_secs(20)).unwrap();
        let took = started.elapsed();
        assert!(got.is_empty(), "{got:?}");
        assert!(
            took >= Duration::from_millis(300),
            "closed after only {took:?}"
        );
        assert!(took < Duration::from_secs(15), "closed after {took:?}");
    }
    still_serves(tls_addr(&server), &pki);
}

#[test]
fn at_the_connection_limit_stalled_handshakes_make_room() {
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let server = tls_server(&site, &pki, |cfg| {
        cfg.max_conns = Some(8);
        cfg.header_timeout = Duration::from_secs(60);
    });
    let hello = client_hello(&pki);
    // Eight clients that never finish their handshake hold every place.
    let stalled: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(tls_addr(&server)).unwrap();
            s.write_all(&hello[..10]).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // A real client still gets in, long before the header timeout.
    let started = Instant::now();
    still_serves(tls_addr(&server), &pki);
    assert!(started.elapsed() < Duration::from_secs(20));
    drop(stalled);
}

#[test]
fn truncated_and_reset_handshakes_leave_the_server_serving() {
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let server = tls_server(&site, &pki, |_| {});
    let hello = client_hello(&pki);
    for _ in 0..20 {
        // Half a ClientHello, then FIN.
        let mut s = TcpStream::connect(tls_addr(&server)).unwrap();
        s.write_all(&hello[..hello.len() / 2]).unwrap();
        drop(s);
        // A whole ClientHello, then a reset before the server's flight is read.
        let s = TcpStream::connect(tls_addr(&server)).unwrap();
        (&s).write_all(&hello).unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    }
    still_serves(tls_addr(&server), &pki);
}

// ---------------------------------------------------------------------------------------------
// Big files, many clients
// ---------------------------------------------------------------------------------------------

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_100_mib_file_to_a_slow_reader_arrives_intact_in_bounded_memory() {
    let site = site();
    let pki = Pki::new(KeyKind::Ec);
    const LEN: usize = 100 << 20;
    let data = pseudo_random(LEN, 99);
    site.write("big.bin", &data);
    let want = sha256(&site.root().join("big.bin"));
    drop(data);
    let (server, addr) = tls_binary(&site, &pki.cert, &pki.key, &[]);
    let pid = server.child.id();
    let before = rss_kib(pid);
    let out = pki.dir.path().join("big.out");
    let url = format!("https://localhost:{}/big.bin", addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    // 20 MB/s: a reader slower than the server, for about five seconds.
    let mut child = Command::new("curl")
        .args(["-sS", "--max-time", "60", "--limit-rate", "20M", "--cacert"])
        .arg(&pki.ca)
        .args(["--resolve", &resolve, "-o"])
        .arg(&out)
        .arg(&url)
        .stdin(Stdio::null())
        .spawn()
        .expect("curl");
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(70);
    let status = loop {
        peak = peak.max(rss_kib(pid));
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "curl did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "curl failed");
    assert_eq!(sha256(&out), want, "the file arrived changed");
    // The file is 100 MiB; the server may grow by its chunk of records, not by the file.
    assert!(
        peak - before < 8 * 1024,
        "RSS grew by {} KiB while sending 100 MiB (from {before} KiB)",
        peak - before
    );
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Raises this process's descriptor limit to at least `want` (or its hard limit).
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit write and read a live, correctly typed local.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur
}

#[test]
fn a_thousand_concurrent_keep_alive_tls_clients() {
    const N: usize = 1000;
    // Client and server share this process: two descriptors per connection, and the rest.
    if raise_nofile(2 * N as u64 + 512) < 2 * N as u64 + 256 {
        panic!("the descriptor limit cannot be raised to {}", 2 * N + 256);
    }
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let server = tls_server(&site, &pki, |cfg| cfg.max_conns = Some(N + 64));
    let cfg = default_client(&pki);
    let mut clients: Vec<TlsClient> = (0..N)
        .map(|_| TlsClient::connect(tls_addr(&server), &cfg))
        .collect();
    // All open at once: each asks twice on its own connection.
    for round in 0..2 {
        for c in &mut clients {
            c.send(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n");
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let r = c.response();
            assert_eq!(
                (r.status, &r.body[..]),
                (200, &b"Hello over TLS\n"[..]),
                "{i} {round}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Startup errors and certificate reload
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_certificate_flags_are_one_line_and_exit_2() {
    let (ec, rsa) = (Pki::new(KeyKind::Ec), Pki::new(KeyKind::Rsa));
    let root = ec.dir.path().to_str().unwrap();
    let garbage = ec.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![s(&ec.cert), s(&rsa.key)], "do not match"),
        (vec![s(&rsa.cert), s(&ec.key)], "do not match"),
        (vec![s(&garbage), s(&ec.key)], "--tls-cert"),
        (vec![s(&ec.cert), s(&garbage)], "--tls-key"),
        (
            vec![s(&ec.cert), "/nonexistent/key.pem".into()],
            "--tls-key",
        ),
        (vec![s(&ec.key), s(&ec.key)], "--tls-cert"),
    ];
    for (files, want) in cases {
        let (status, _out, err) = run_binary(&[
            "--listen",
            "127.0.0.1:0",
            "--listen-tls",
            "127.0.0.1:0",
            "--tls-cert",
            &files[0],
            "--tls-key",
            &files[1],
            root,
        ]);
        assert_eq!(status.code(), Some(2), "{files:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{files:?}: one line: {err}");
        assert!(err.contains(want), "{files:?}: {err}");
    }
    for args in [
        &["--listen-tls", "127.0.0.1:0"][..],
        &["--tls-cert", "x.pem", "--tls-key", "y.pem"][..],
        &["--hsts", "100"][..],
        &["--redirect-https"][..],
    ] {
        let (status, _, err) = run_binary(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

/// The certificate (DER) the server presents to a new handshake.
fn served_cert(addr: SocketAddr, pki_ca: &[&Pki]) -> Option<Vec<u8>> {
    let mut roots = RootCertStore::empty();
    for p in pki_ca {
        for c in CertificateDer::pem_file_iter(&p.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let cfg = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let c = TlsClient::try_connect(addr, &cfg).ok()?;
    let cert = c.s.conn.peer_certificates()?.first()?.to_vec();
    Some(cert)
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_reload_keeps_the_old_one() {
    let site = site();
    let (a, b) = (Pki::new(KeyKind::Ec), Pki::new(KeyKind::Rsa));
    let live = TempDir::new("tls-live");
    let (cert, key) = (live.path().join("cert.pem"), live.path().join("key.pem"));
    std::fs::copy(&a.cert, &cert).unwrap();
    std::fs::copy(&a.key, &key).unwrap();
    let (server, addr) = tls_binary(&site, &cert, &key, &["--log-level", "info"]);
    let served = |p: &[&Pki]| served_cert(addr, p).expect("handshake");
    let first = served(&[&a, &b]);
    assert!(TlsClient::try_connect(addr, &default_client(&a)).is_ok());
    // A connection made before the reload keeps its certificate and goes on.
    let mut before = TlsClient::connect(addr, &default_client(&a));
    std::fs::copy(&b.cert, &cert).unwrap();
    std::fs::copy(&b.key, &key).unwrap();
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served(&[&a, &b]) == first {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        TlsClient::try_connect(addr, &default_client(&b)).is_ok(),
        "B is served now"
    );
    assert_eq!(before.get("/hello.txt").status, 200);
    // A mismatched pair: the reload fails, B stays, and the log says why.
    std::fs::copy(&a.cert, &cert).unwrap();
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("not reloaded") {
        assert!(
            Instant::now() < deadline,
            "no log line: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        server.stderr().contains("do not match"),
        "{}",
        server.stderr()
    );
    assert!(
        TlsClient::try_connect(addr, &default_client(&b)).is_ok(),
        "B still served"
    );
}

// ---------------------------------------------------------------------------------------------
// The reverse proxy and WebSocket tunnels behind TLS
// ---------------------------------------------------------------------------------------------

#[test]
fn proxied_over_tls_with_x_forwarded_proto_https_and_hsts() {
    use upstream::{Upstream, big, ok, pattern_vec, reply};
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let up = Upstream::start(|r| {
        if r.target == "/api/big" {
            big(5_000_000, 11)
        } else if r.target == "/api/sts" {
            reply(
                200,
                "OK",
                &[("Strict-Transport-Security", "max-age=5")],
                b"own",
            )
        } else {
            ok("from upstream")
        }
    });
    let server = tls_server(&site, &pki, |cfg| {
        cfg.proxies = vec![edgeserve::config::Route {
            prefix: "/api/".into(),
            upstreams: vec![up.addr],
        }];
        cfg.tls.hsts = Some(600);
    });
    let mut c = TlsClient::connect(tls_addr(&server), &default_client(&pki));
    // A client's own X-Forwarded-Proto is not believed.
    c.send(b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Proto: http\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, &r.body[..]), (200, &b"from upstream"[..]));
    assert_eq!(r.header("strict-transport-security"), Some("max-age=600"));
    let seen = up.only_request();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"), "{seen:?}");
    // A big proxied body over TLS, on the same connection.
    let r = c.get("/api/big");
    assert_eq!(r.status, 200);
    common::assert_same_bytes(&r.body, &pattern_vec(11, 0, 5_000_000), "proxied body");
    // An upstream's own Strict-Transport-Security is the only one.
    c.send(b"GET /api/sts HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let r = c.response();
    assert_eq!(r.body, b"own");
    let sts: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("strict-transport-security"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(sts, ["max-age=5"], "{r:?}");
}

#[test]
fn a_websocket_tunnel_behind_tls() {
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    if Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        panic!("python3 -m pip install websockets");
    }
    let mut echo = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/ws/echo_server.py"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("echo_server.py");
    let mut out = std::io::BufReader::new(echo.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("PORT ")
        .expect("PORT line")
        .parse()
        .unwrap();
    let server = tls_server(&site, &pki, |cfg| {
        cfg.proxies = vec![edgeserve::config::Route {
            prefix: "/ws/".into(),
            upstreams: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        }];
    });
    let script = r#"
import asyncio, ssl, sys, websockets
async def main():
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    async with websockets.connect(sys.argv[1], ssl=ctx, max_size=None) as ws:
        for i in range(50):
            await ws.send(f"message {i}")
            assert await asyncio.wait_for(ws.recv(), 10) == f"message {i}"
        big = bytes(range(256)) * 4096
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), 20) == big
    print("OK")
asyncio.run(asyncio.wait_for(main(), 40))
"#;
    let url = format!("wss://localhost:{}/ws/echo", tls_addr(&server).port());
    let mut child = Command::new("python3")
        .args(["-c", script, &url])
        .arg(&pki.ca)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(60));
    let _ = child.kill();
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = echo.kill();
    let _ = echo.wait();
    assert!(status.is_some_and(|s| s.success()), "{text} {err}");
    assert_eq!(text.trim(), "OK");
}

// ---------------------------------------------------------------------------------------------
// Plain listeners beside TLS ones
// ---------------------------------------------------------------------------------------------

#[test]
fn plain_listeners_redirect_get_and_head_to_https_and_refuse_the_rest() {
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let server = tls_server(&site, &pki, |cfg| {
        cfg.tls.redirect = true;
        cfg.tls.hsts = Some(100);
    });
    let port = tls_addr(&server).port();
    let mut c = common::Client::connect(server.addrs[0]);
    c.send(b"GET /dir/page.html?q=1 HTTP/1.1\r\nHost: example.org:8080\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 308, "{r:?}");
    let want = format!("https://example.org:{port}/dir/page.html?q=1");
    assert_eq!(r.header("location"), Some(want.as_str()));
    // No HSTS in the clear (RFC 6797 §7.2), and the connection goes on.
    assert_eq!(r.header("strict-transport-security"), None);
    c.send(b"HEAD /x HTTP/1.1\r\nHost: [::1]\r\n\r\n");
    let r = c.head();
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://[::1]:{port}/x").as_str())
    );
    // A body sent in the clear cannot be taken back: 400.
    c.send(b"POST /form HTTP/1.1\r\nHost: example.org\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(c.response().status, 400);
    // A Host that is not a name is not echoed into a Location.
    for host in ["ex ample", "a/b", "[zz]", "", "evil.org\\@x"] {
        let mut c = common::Client::connect(server.addrs[0]);
        c.send(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(r.status, 400, "{host:?}: {r:?}");
        assert_eq!(r.header("location"), None);
    }
    // The TLS listener serves, with HSTS.
    let mut t = TlsClient::connect(tls_addr(&server), &default_client(&pki));
    let r = t.get("/hello.txt");
    assert_eq!(
        (r.status, r.header("strict-transport-security")),
        (200, Some("max-age=100"))
    );
}

#[test]
fn without_redirect_plain_listeners_serve_beside_tls() {
    let (site, pki) = (site(), Pki::new(KeyKind::Ec));
    let server = tls_server(&site, &pki, |cfg| cfg.tls.hsts = Some(100));
    let mut c = common::Client::connect(server.addrs[0]);
    let r = c.get("/hello.txt");
    assert_eq!((r.status, &r.body[..]), (200, &b"Hello over TLS\n"[..]));
    assert_eq!(r.header("strict-transport-security"), None);
    // A TLS handshake on the plain port is not HTTP: 400 and closed, the server serves on.
    let name = ServerName::try_from("localhost").unwrap();
    let cfg = default_client(&pki);
    let sock = TcpStream::connect(server.addrs[0]).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut s = StreamOwned::new(ClientConnection::new(cfg, name).unwrap(), sock);
    assert!(
        s.conn.complete_io(&mut s.sock).is_err() || s.write_all(b"x").is_err() || {
            let mut b = [0u8; 1];
            s.read(&mut b).is_err()
        }
    );
    still_serves(tls_addr(&server), &pki);
    assert_eq!(
        common::Client::connect(server.addrs[0])
            .get("/hello.txt")
            .status,
        200
    );
}
