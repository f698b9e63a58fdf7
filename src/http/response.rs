//! What a connection has to send: response heads and small bodies in one contiguous buffer,
//! with file ranges (sent by `sendfile`) slotted between them. Pipelined answers accumulate here
//! so that they leave in as few writes as possible.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;

use super::request::Version;

/// A range of an open file to be sent after `at` bytes of the buffer have gone.
#[derive(Debug)]
pub struct FileSeg {
    pub at: usize,
    pub file: Arc<File>,
    pub offset: u64,
    pub len: u64,
}

/// The body of a reply as the handler describes it.
#[derive(Debug)]
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    File { file: Arc<File>, offset: u64 },
}

/// A reply planned by a handler: the session adds the status line, Date, Server, Connection and
/// Content-Length, and leaves the body out for HEAD, 304 and friends.
#[derive(Debug)]
pub struct Reply<'a> {
    pub status: u16,
    /// Extra header lines, each ending in CRLF (Content-Type, ETag, Location, …).
    pub headers: &'a [u8],
    /// The Content-Length, which for a file body is also how many bytes to send.
    pub len: u64,
    pub body: Body<'a>,
}

impl Reply<'_> {
    /// A short text answer for errors and redirects.
    pub fn text(status: u16, headers: &'static [u8]) -> Reply<'static> {
        let body = reason(status).as_bytes();
        Reply {
            status,
            headers,
            len: body.len() as u64,
            body: Body::Bytes(body),
        }
    }
}

#[derive(Debug, Default)]
pub struct Output {
    pub buf: Vec<u8>,
    pub files: VecDeque<FileSeg>,
    /// Bytes of `buf` already written.
    pub pos: usize,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len() && self.files.is_empty()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.files.clear();
        self.pos = 0;
    }

    /// Writes a whole response. `date` is the current `Date` value; `extra`, field lines every
    /// answer carries (each ending in CRLF); `head_only` leaves the body out
    /// (HEAD); `close` adds `Connection: close`, `keep_alive_10` adds `Connection: keep-alive`.
    pub fn push_reply(
        &mut self,
        reply: Reply<'_>,
        date: &[u8],
        extra: &[u8],
        head_only: bool,
        conn: ConnHeader,
    ) {
        let b = &mut self.buf;
        b.extend_from_slice(b"HTTP/1.1 ");
        push_status(b, reply.status);
        b.extend_from_slice(b"\r\nServer: edgeserve\r\nDate: ");
        b.extend_from_slice(date);
        b.extend_from_slice(b"\r\n");
        b.extend_from_slice(extra);
        b.extend_from_slice(reply.headers);
        // 1xx, 204 and 304 carry no body and (for 304) keep the length of the representation out.
        let bodiless = reply.status == 304 || reply.status == 204 || reply.status < 200;
        if !bodiless {
            b.extend_from_slice(b"Content-Length: ");
            push_u64(b, reply.len);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(conn.end_of_head());
        if head_only || bodiless {
            return;
        }
        match reply.body {
            Body::Empty => {}
            Body::Bytes(bytes) => b.extend_from_slice(bytes),
            Body::File { file, offset } if reply.len > 0 => {
                let at = b.len();
                self.files.push_back(FileSeg {
                    at,
                    file,
                    offset,
                    len: reply.len,
                });
            }
            Body::File { .. } => {}
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnHeader {
    None,
    Close,
    KeepAlive,
}

impl ConnHeader {
    /// What an answer says about the connection: `close` when it ends, `keep-alive` where
    /// HTTP/1.0 needs it said, nothing for an HTTP/1.1 connection that goes on.
    pub fn new(keep_alive: bool, version: Version) -> ConnHeader {
        match (keep_alive, version) {
            (false, _) => ConnHeader::Close,
            (true, Version::Http10) => ConnHeader::KeepAlive,
            (true, Version::Http11) => ConnHeader::None,
        }
    }

    /// The field (if any) and the blank line that end a head.
    pub fn end_of_head(self) -> &'static [u8] {
        match self {
            ConnHeader::None => b"\r\n",
            ConnHeader::Close => b"Connection: close\r\n\r\n",
            ConnHeader::KeepAlive => b"Connection: keep-alive\r\n\r\n",
        }
    }
}

fn push_status(b: &mut Vec<u8>, status: u16) {
    push_u64(b, u64::from(status));
    b.push(b' ');
    b.extend_from_slice(reason(status).trim_end().as_bytes());
}

/// Reason phrases, with a trailing newline so they double as the body of an error answer.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue\n",
        200 => "OK\n",
        206 => "Partial Content\n",
        301 => "Moved Permanently\n",
        304 => "Not Modified\n",
        400 => "Bad Request\n",
        403 => "Forbidden\n",
        404 => "Not Found\n",
        405 => "Method Not Allowed\n",
        406 => "Not Acceptable\n",
        408 => "Request Timeout\n",
        412 => "Precondition Failed\n",
        413 => "Content Too Large\n",
        414 => "URI Too Long\n",
        416 => "Range Not Satisfiable\n",
        431 => "Request Header Fields Too Large\n",
        500 => "Internal Server Error\n",
        501 => "Not Implemented\n",
        502 => "Bad Gateway\n",
        503 => "Service Unavailable\n",
        504 => "Gateway Timeout\n",
        505 => "HTTP Version Not Supported\n",
        _ => "Unknown\n",
    }
}

/// Decimal digits without going through `fmt`, two at a time.
pub fn push_u64(b: &mut Vec<u8>, mut n: u64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        i -= 2;
        tmp[i..i + 2].copy_from_slice(&PAIRS[n as usize * 2..n as usize * 2 + 2]);
    } else {
        i -= 1;
        tmp[i] = b'0' + n as u8;
    }
    b.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_body_in_one_buffer() {
        let mut out = Output::default();
        let reply = Reply {
            status: 200,
            headers: b"Content-Type: text/plain\r\n",
            len: 2,
            body: Body::Bytes(b"hi"),
        };
        out.push_reply(reply, b"D", b"", false, ConnHeader::None);
        assert_eq!(
            out.buf,
            b"HTTP/1.1 200 OK\r\nServer: edgeserve\r\nDate: D\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
        );
        out.clear();
        out.push_reply(Reply::text(304, b""), b"D", b"", false, ConnHeader::Close);
        assert_eq!(out.buf, b"HTTP/1.1 304 Not Modified\r\nServer: edgeserve\r\nDate: D\r\nConnection: close\r\n\r\n");
    }

    #[test]
    fn numbers() {
        for n in [0u64, 7, 10, 99, 100, 101, 12345, 1_000_000, u64::MAX] {
            let mut b = Vec::new();
            push_u64(&mut b, n);
            assert_eq!(b, n.to_string().as_bytes());
        }
    }
}
