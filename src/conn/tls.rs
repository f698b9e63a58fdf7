//! TLS under the connection machine: rustls's `ServerConnection` is sans-I/O, so it sits between
//! the socket and [`Conn`](super::Conn) as one more [`Transport`]. Socket bytes go in
//! (`read_tls`, `process_new_packets`) and plaintext comes out (`reader`); plaintext goes in
//! (`writer`) and records come out (`write_tls`).
//!
//! Edge-triggered at both levels: `read` hands out plaintext rustls already holds before it
//! touches the socket, and says `WouldBlock` only when both are empty, so a record holding
//! several requests is never left waiting for an edge that will not come. Output is bounded:
//! a write encrypts at most [`CHUNK`] bytes, and the next one waits until those records are on
//! the socket, so a slow reader costs one chunk of records whatever the size of the file.
//!
//! The certificates live in [`Certs`], shared by every loop; [`Certs::reload`] swaps them for new
//! handshakes (SIGHUP) and keeps the old ones when the new files are bad.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, ServerConnection};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::transport::{Io, Transport, send};
use crate::config::TlsConfig;

/// Plaintext encrypted per write: a slow reader holds at most this much in records.
pub const CHUNK: usize = 32 * 1024;

/// The answer to a plain HTTP request on a TLS port (nginx answers the same way), readable in
/// a browser and by curl.
const PLAIN_HTTP_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nServer: edgeserve\r\n\
Content-Type: text/plain\r\nContent-Length: 51\r\nConnection: close\r\n\r\n\
The plain HTTP request was sent to an HTTPS port.\r\n";

/// Where a TLS connection is in its life, beside what rustls knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing read yet: the first byte says whether this is TLS at all.
    Sniff,
    /// TLS records.
    Records,
    /// close_notify is queued: the socket is shut for writing once the records are out.
    Closing,
    /// Our side is shut.
    Shut,
}

/// A TLS connection over a nonblocking TCP socket.
pub struct Tls {
    sock: TcpStream,
    tls: ServerConnection,
    phase: Phase,
    /// Plaintext bytes taken by the last `write` or `send_file` whose records are not all on the
    /// socket yet. They are reported written once they are; the caller, having met
    /// `WouldBlock`, calls again with the same bytes first, which are then skipped.
    held: usize,
    /// The socket said end-of-file.
    eof: bool,
}

impl Tls {
    pub fn new(sock: TcpStream, https: &Https) -> io::Result<Tls> {
        let tls = ServerConnection::new(https.config.clone()).map_err(io::Error::other)?;
        Ok(Tls {
            sock,
            tls,
            phase: Phase::Sniff,
            held: 0,
            eof: false,
        })
    }

    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Sends the queued records: `Ok(true)` once none is left.
    fn push(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut Socket(&self.sock)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        if self.phase == Phase::Closing {
            let _ = self.sock.shutdown(Shutdown::Write);
            self.phase = Phase::Shut;
        }
        Ok(true)
    }

    /// After `n` plaintext bytes were taken: `Done(n)` once their records are out, else they are
    /// held until they are.
    fn sent(&mut self, n: usize) -> Io {
        match self.push() {
            Ok(true) => Io::Done(n),
            Ok(false) => {
                self.held = n;
                Io::WouldBlock
            }
            Err(e) => Io::Error(e),
        }
    }

    /// Before new plaintext is taken: the records of the last are out (`None`), or the answer for
    /// this call.
    fn ready_for_more(&mut self) -> Option<Io> {
        match self.push() {
            Ok(true) if self.held > 0 => Some(Io::Done(std::mem::take(&mut self.held))),
            Ok(true) => None,
            Ok(false) => Some(Io::WouldBlock),
            Err(e) => Some(Io::Error(e)),
        }
    }

    /// The first byte decides: a TLS handshake record goes on; a plain HTTP request gets a
    /// readable 400 in plaintext; anything else is closed at once.
    fn sniff(&mut self) -> Option<Io> {
        let mut first = [0u8; 1];
        match self.sock.peek(&mut first) {
            Ok(0) => return Some(Io::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return self.sniff(),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Some(Io::WouldBlock),
            Err(e) => return Some(Io::Error(e)),
        }
        // 22: the handshake content type.
        if first[0] == 22 {
            self.phase = Phase::Records;
            return None;
        }
        if first[0].is_ascii_uppercase() {
            // Read what came (so that the close sends FIN, not a reset that would destroy the
            // answer), answer, and close.
            let mut sink = [0u8; 4096];
            for _ in 0..16 {
                match (&self.sock).read(&mut sink) {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
            let _ = send(&self.sock, PLAIN_HTTP_ON_TLS, false);
            let _ = self.sock.shutdown(Shutdown::Write);
            log::debug!("plain HTTP on a TLS port: answered 400");
        } else {
            log::debug!("not TLS (first byte {:#04x}): closed", first[0]);
        }
        self.phase = Phase::Shut;
        Some(Io::Error(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a TLS client",
        )))
    }
}

impl Transport for Tls {
    fn read(&mut self, buf: &mut [u8]) -> Io {
        if self.phase == Phase::Sniff
            && let Some(io) = self.sniff()
        {
            return io;
        }
        loop {
            // Plaintext already decrypted goes first: the socket may have nothing more.
            match self.tls.reader().read(buf) {
                Ok(0) => return Io::Closed, // close_notify
                Ok(n) => return Io::Done(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket closed without close_notify: the end, all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Io::Closed,
                Err(e) => return Io::Error(e),
            }
            if self.eof {
                return Io::Closed;
            }
            match self.tls.read_tls(&mut Socket(&self.sock)) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Io::WouldBlock,
                Err(e) => return Io::Error(e),
            }
            if let Err(e) = self.tls.process_new_packets() {
                // rustls queued an alert saying why: a best-effort send before the close.
                let _ = self.push();
                log::debug!("TLS: {e}");
                return Io::Error(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake flights and tickets go out as they are made. If the socket is full
            // they wait: `wants_write` makes the connection flush them on the next edge.
            if let Err(e) = self.push() {
                return Io::Error(e);
            }
        }
    }

    fn write(&mut self, buf: &[u8], _more: bool) -> Io {
        if let Some(io) = self.ready_for_more() {
            return io;
        }
        let n = buf.len().min(CHUNK);
        match self.tls.writer().write(&buf[..n]) {
            Ok(0) if n > 0 => Io::Error(io::ErrorKind::WriteZero.into()),
            Ok(n) => self.sent(n),
            Err(e) => Io::Error(e),
        }
    }

    /// No sendfile through TLS: the file is read (pread) a chunk at a time and encrypted, and the
    /// next chunk waits until this one's records are on the socket.
    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> Io {
        if let Some(io) = self.ready_for_more() {
            return io;
        }
        let mut chunk = [0u8; CHUNK];
        let want = len.min(CHUNK);
        let n = loop {
            match file.read_at(&mut chunk[..want], offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Io::Error(e),
                Ok(n) => break n,
            }
        };
        if n == 0 {
            return Io::Done(0); // the file ended early
        }
        match self.tls.writer().write_all(&chunk[..n]) {
            Ok(()) => self.sent(n),
            Err(e) => Io::Error(e),
        }
    }

    fn shutdown_write(&mut self) {
        if matches!(self.phase, Phase::Sniff | Phase::Records) {
            self.tls.send_close_notify();
            self.phase = Phase::Closing;
            let _ = self.push();
        }
    }

    /// Records rustls has queued (handshake flights, tickets, alerts, close_notify), or the
    /// socket still to be shut after them.
    fn wants_write(&self) -> bool {
        self.tls.wants_write() || self.phase == Phase::Closing
    }

    fn flush(&mut self) -> Io {
        match self.push() {
            Ok(true) => Io::Done(0),
            Ok(false) => Io::WouldBlock,
            Err(e) => Io::Error(e),
        }
    }

    fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    fn is_secure(&self) -> bool {
        true
    }

    fn close(&mut self) {
        // close_notify, best effort: the socket closes right after.
        self.shutdown_write();
    }
}

/// The socket as rustls sees it: `send` without SIGPIPE.
struct Socket<'a>(&'a TcpStream);

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        socket2::SockRef::from(self.0).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// HTTPS for the whole server, shared by every loop and thread: the certificate and key, the
/// rustls configuration that hands them to new handshakes, and what answers over TLS (and plain
/// answers, with `--redirect-https`) carry.
pub struct Https {
    config: Arc<ServerConfig>,
    current: Arc<Current>,
    /// The port of the first TLS listener, for redirects.
    pub port: u16,
    /// `--redirect-https`.
    pub redirect: bool,
    /// The Strict-Transport-Security line (CRLF-ended) answers over TLS carry, or nothing.
    pub hsts: Vec<u8>,
}

/// The certificate new handshakes get: swapped by a reload.
#[derive(Debug)]
struct Current {
    key: RwLock<Arc<CertifiedKey>>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl Https {
    /// Loads the certificate chain and key (PEM) and checks that they belong together. The
    /// error is one line for the user.
    pub fn new(t: &TlsConfig, port: u16) -> Result<Https, String> {
        let (Some(cert_path), Some(key_path)) = (&t.cert, &t.key) else {
            return Err("--listen-tls needs --tls-cert and --tls-key".into());
        };
        let key = certified_key(cert_path, key_path)?;
        let current = Arc::new(Current {
            key: RwLock::new(Arc::new(key)),
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
        });
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
                .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Resumption both ways: tickets (stateless, TLS 1.2 and 1.3) and the default in-memory
        // session cache for clients that do not take tickets.
        config.ticketer = provider::Ticketer::new().map_err(|e| e.to_string())?;
        let hsts = t
            .hsts
            .map(|age| format!("Strict-Transport-Security: max-age={age}\r\n").into_bytes())
            .unwrap_or_default();
        Ok(Https {
            config: Arc::new(config),
            current,
            port,
            redirect: t.redirect,
            hsts,
        })
    }

    /// Reads the certificate and key files again; new handshakes get them, connections in
    /// flight keep theirs. A failure keeps the old ones and says why.
    pub fn reload(&self) -> Result<(), String> {
        let key = certified_key(&self.current.cert_path, &self.current.key_path)?;
        *self.current.key.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }
}

impl std::fmt::Debug for Https {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Https")
            .field("cert", &self.current.cert_path)
            .finish()
    }
}

/// A certificate chain and its key from PEM files, checked to belong together.
fn certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in the file",
            cert_path.display()
        ));
    }
    // PKCS#8, PKCS#1 (RSA) or SEC1 (EC), whichever the file holds.
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("--tls-key {}: {e}", key_path.display()))?;
    let signer = provider::sign::any_supported_type(&key)
        .map_err(|e| format!("--tls-key {}: {e}", key_path.display()))?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match().map_err(|e| {
        format!(
            "--tls-cert {} and --tls-key {} do not match: {e}",
            cert_path.display(),
            key_path.display()
        )
    })?;
    Ok(ck)
}
