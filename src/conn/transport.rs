//! The transport seam: how a connection's bytes move, whatever carries them. A connection reads
//! and writes through a [`Transport`] and sees one small result type, [`Io`]; plain TCP is
//! [`Tcp`], and a scripted fake in the tests drives the same connection machine through short
//! writes, `WouldBlock` at every call, EOF and resets. TLS, a child's pipes or io_uring
//! completions sit here later without the machine above changing.

use std::fs::File;
use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;

/// What one read or write came to.
#[derive(Debug)]
pub enum Io {
    /// `n` bytes moved (never 0 for a non-empty buffer).
    Done(usize),
    /// Nothing can move until the next readiness edge.
    WouldBlock,
    /// The peer closed its side (a read of 0 bytes).
    Closed,
    /// The connection is broken (reset, and the like).
    Error(io::Error),
}

impl Io {
    /// Sorts a std result; EINTR is the caller's to retry.
    fn of(r: io::Result<usize>) -> Io {
        match r {
            Ok(0) => Io::Closed,
            Ok(n) => Io::Done(n),
            // The raw code, not `kind()`: this is the end of every drain, once per edge.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Io::WouldBlock,
            Err(e) => Io::Error(e),
        }
    }
}

/// Calls `f` again while it is interrupted by a signal.
fn retrying(mut f: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            r => return r,
        }
    }
}

/// A byte stream a connection can drive: nonblocking, readiness-based.
pub trait Transport {
    fn read(&mut self, buf: &mut [u8]) -> Io;
    /// Writes from `buf`; `more`: more bytes follow at once (a file after its head), so a
    /// partial segment may wait for them. After `WouldBlock` the caller calls again with the
    /// same bytes at the front of `buf` (more may follow them): TLS has taken and encrypted
    /// some of them already and reports them written only once their records are out.
    fn write(&mut self, buf: &[u8], more: bool) -> Io;
    /// Sends up to `len` bytes of `file` from `offset` without copying them through us where
    /// the transport can. `Done(0)` means the file ended early (it shrank). After
    /// `WouldBlock`, called again from the same offset, as `write`.
    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> Io;
    /// No more bytes from us: FIN after what is queued.
    fn shutdown_write(&mut self);
    /// A read that returned less than asked emptied the kernel's queue (plain TCP; not a
    /// transport whose reads go through a record layer).
    fn short_read_drains(&self) -> bool {
        false
    }
    /// The transport holds bytes of its own for the peer (a TLS handshake flight, an alert),
    /// to go out with [`Transport::flush`] once the socket takes them.
    fn wants_write(&self) -> bool {
        false
    }
    /// Sends what [`Transport::wants_write`] says is held: `Done(0)` once it is all out.
    fn flush(&mut self) -> Io {
        Io::Done(0)
    }
    /// A handshake is in progress (the header timeout covers it).
    fn is_handshaking(&self) -> bool {
        false
    }
    /// The bytes are encrypted (HTTPS).
    fn is_secure(&self) -> bool {
        false
    }
    /// The connection is about to be closed: a last word (TLS close_notify), best effort.
    fn close(&mut self) {}
}

/// What a served connection runs over: plain TCP, or TLS (boxed, so that a plain connection
/// does not grow by the size of a TLS session).
pub enum Stream {
    Plain(Tcp),
    #[cfg(feature = "tls")]
    Tls(Box<super::tls::Tls>),
}

impl Stream {
    /// The socket, for registering it with the poller.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(t) => t.socket(),
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.socket(),
        }
    }
}

/// Calls the same method on whichever transport it is.
macro_rules! either {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            Stream::Plain($t) => $e,
            #[cfg(feature = "tls")]
            Stream::Tls($t) => $e,
        }
    };
}

impl Transport for Stream {
    fn read(&mut self, buf: &mut [u8]) -> Io {
        either!(self, t => t.read(buf))
    }
    fn write(&mut self, buf: &[u8], more: bool) -> Io {
        either!(self, t => t.write(buf, more))
    }
    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> Io {
        either!(self, t => t.send_file(file, offset, len))
    }
    fn shutdown_write(&mut self) {
        either!(self, t => t.shutdown_write())
    }
    fn wants_write(&self) -> bool {
        either!(self, t => t.wants_write())
    }
    fn flush(&mut self) -> Io {
        either!(self, t => t.flush())
    }
    fn is_handshaking(&self) -> bool {
        either!(self, t => t.is_handshaking())
    }
    fn is_secure(&self) -> bool {
        either!(self, t => t.is_secure())
    }
    fn close(&mut self) {
        either!(self, t => t.close())
    }
    fn short_read_drains(&self) -> bool {
        either!(self, t => t.short_read_drains())
    }
}

/// Plain TCP.
#[derive(Debug)]
pub struct Tcp(TcpStream);

impl Tcp {
    pub fn new(sock: TcpStream) -> Tcp {
        Tcp(sock)
    }

    /// The socket, for registering it with the poller.
    pub fn socket(&self) -> &TcpStream {
        &self.0
    }
}

impl Transport for Tcp {
    fn read(&mut self, buf: &mut [u8]) -> Io {
        Io::of(retrying(|| (&self.0).read(buf)))
    }

    fn write(&mut self, buf: &[u8], more: bool) -> Io {
        send(&self.0, buf, more)
    }

    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> Io {
        let mut off = offset as libc::off_t;
        let r = retrying(|| {
            // SAFETY: both descriptors are open for the call (the socket is ours, `file` is
            // borrowed); `off` is a valid offset for sendfile to read and update.
            let n = unsafe { libc::sendfile(self.0.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match r {
            // A file that ended early is not a closed peer: the caller decides.
            Ok(0) if len > 0 => Io::Done(0),
            r => Io::of(r),
        }
    }

    fn shutdown_write(&mut self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }

    fn short_read_drains(&self) -> bool {
        true
    }
}

/// One `send` on a TCP socket: without SIGPIPE (a closed peer is an error, not a signal), and
/// with MSG_MORE when `more` (a head shares a segment with the file data after it).
pub fn send(sock: &TcpStream, buf: &[u8], more: bool) -> Io {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    let sock = socket2::SockRef::from(sock);
    match retrying(|| sock.send_with_flags(buf, flags)) {
        Ok(0) if !buf.is_empty() => Io::WouldBlock,
        r => Io::of(r),
    }
}

/// One `recv` on a TCP socket.
pub fn recv(sock: &TcpStream, buf: &mut [u8]) -> Io {
    let mut sock = sock;
    Io::of(retrying(|| sock.read(buf)))
}
