//! Incremental HTTP/1.1 response framing. The parser sees bytes as they arrive, in any split:
//! half a head, many responses at once, a body spread over many reads. Bodies are counted, never
//! stored, so a 1 MiB answer costs no copy.

/// One framed response, reported when its last body byte has arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    pub status: u16,
    /// The server will close after it (`Connection: close`, or HTTP/1.0 without keep-alive, or a
    /// body delimited by the close).
    pub close: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// This many bytes were used and the response goes on.
    Used(usize),
    /// This many bytes were used and a response is complete.
    Done(usize, Done),
    /// Nothing usable until more bytes arrive (a partial head or chunk-size line).
    Need,
    /// Not HTTP as we know it; the connection cannot be trusted any more.
    Malformed(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Head,
    /// Content-Length bytes still due.
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailer,
    /// No length given: the body ends when the server closes.
    UntilClose,
}

/// Most header lines a response may have.
const MAX_HEADERS: usize = 64;

#[derive(Debug)]
pub struct Parser {
    phase: Phase,
    status: u16,
    close: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Parser {
            phase: Phase::Head,
            status: 0,
            close: false,
        }
    }
}

impl Parser {
    /// Between responses (nothing of the next one seen yet).
    pub fn idle(&self) -> bool {
        self.phase == Phase::Head
    }

    /// The server closed. Completes a body delimited by the close; anything else in progress
    /// was cut short.
    pub fn eof(&mut self) -> Option<Done> {
        if self.phase == Phase::UntilClose {
            self.phase = Phase::Head;
            return Some(Done {
                status: self.status,
                close: true,
            });
        }
        None
    }

    /// Takes what it can from the front of `buf`.
    pub fn step(&mut self, buf: &[u8]) -> Step {
        match self.phase {
            Phase::Head => self.head(buf),
            Phase::Length(due) => {
                let n = (buf.len() as u64).min(due);
                if n == due {
                    self.finish(n as usize)
                } else {
                    self.phase = Phase::Length(due - n);
                    Step::Used(n as usize)
                }
            }
            Phase::ChunkSize => {
                let Some(end) = memchr::memchr(b'\n', buf) else {
                    return Step::Need;
                };
                match chunk_size(&buf[..end]) {
                    Some(0) => {
                        self.phase = Phase::Trailer;
                        Step::Used(end + 1)
                    }
                    Some(n) => {
                        self.phase = Phase::ChunkData(n);
                        Step::Used(end + 1)
                    }
                    None => Step::Malformed("bad chunk size"),
                }
            }
            Phase::ChunkData(due) => {
                let n = (buf.len() as u64).min(due);
                self.phase = if n == due {
                    Phase::ChunkEnd
                } else {
                    Phase::ChunkData(due - n)
                };
                Step::Used(n as usize)
            }
            Phase::ChunkEnd => match buf {
                [b'\r', b'\n', ..] => {
                    self.phase = Phase::ChunkSize;
                    Step::Used(2)
                }
                [b'\n', ..] => {
                    self.phase = Phase::ChunkSize;
                    Step::Used(1)
                }
                [] | [b'\r'] => Step::Need,
                _ => Step::Malformed("no CRLF after chunk data"),
            },
            Phase::Trailer => {
                let Some(end) = memchr::memchr(b'\n', buf) else {
                    return Step::Need;
                };
                if buf[..end].iter().all(|&b| b == b'\r') {
                    self.finish(end + 1)
                } else {
                    Step::Used(end + 1)
                }
            }
            Phase::UntilClose => Step::Used(buf.len()),
        }
    }

    fn finish(&mut self, used: usize) -> Step {
        self.phase = Phase::Head;
        Step::Done(
            used,
            Done {
                status: self.status,
                close: self.close,
            },
        )
    }

    fn head(&mut self, buf: &[u8]) -> Step {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        let used = match res.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Step::Need,
            Err(httparse::Error::TooManyHeaders) => return Step::Malformed("too many headers"),
            Err(_) => return Step::Malformed("bad response head"),
        };
        let status = res.code.unwrap_or(0);
        let http10 = res.version == Some(0);
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut close = http10;
        for h in res.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let Some(n) = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                else {
                    return Step::Malformed("bad Content-Length");
                };
                if length.is_some_and(|l| l != n) {
                    return Step::Malformed("conflicting Content-Length");
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // Chunked is the final coding when it is the last token.
                chunked = last_token(h.value).eq_ignore_ascii_case(b"chunked");
                if !chunked {
                    return Step::Malformed("unsupported Transfer-Encoding");
                }
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if http10 && token.eq_ignore_ascii_case(b"keep-alive") {
                        close = false;
                    }
                }
            }
        }
        self.status = status;
        self.close = close;
        match status {
            // An interim answer; the real one follows.
            100 | 102 | 103 => return Step::Used(used),
            101 => return Step::Malformed("unexpected 101 Switching Protocols"),
            // No body whatever the headers say.
            204 | 304 => return self.finish(used),
            _ => {}
        }
        if chunked {
            self.phase = Phase::ChunkSize;
            Step::Used(used)
        } else if let Some(n) = length {
            if n == 0 {
                return self.finish(used);
            }
            self.phase = Phase::Length(n);
            Step::Used(used)
        } else {
            self.close = true;
            self.phase = Phase::UntilClose;
            Step::Used(used)
        }
    }
}

fn last_token(v: &[u8]) -> &[u8] {
    v.rsplit(|&b| b == b',').next().unwrap_or(v).trim_ascii()
}

/// The hex size of a chunk-size line (extensions after `;` ignored), `None` if not hex.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let hex = line.split(|&b| b == b';').next()?.trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    let s = std::str::from_utf8(hex).ok()?;
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `chunk` bytes, keeping unparsed bytes as the client does, and
    /// returns the responses and whether the framing went wrong.
    fn feed(input: &[u8], chunk: usize) -> (Vec<Done>, bool) {
        let mut p = Parser::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            pending.extend_from_slice(piece);
            let mut pos = 0;
            loop {
                match p.step(&pending[pos..]) {
                    Step::Used(0) | Step::Need => break,
                    Step::Used(n) => pos += n,
                    Step::Done(n, d) => {
                        pos += n;
                        out.push(d);
                    }
                    Step::Malformed(_) => return (out, true),
                }
            }
            pending.drain(..pos);
        }
        (out, false)
    }

    const TWO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\ncontent-length: 3\r\nConnection: close\r\n\r\nnop";

    #[test]
    fn any_split_gives_the_same_responses() {
        for chunk in [1, 2, 3, 7, 40, TWO.len()] {
            let (done, bad) = feed(TWO, chunk);
            assert!(!bad);
            assert_eq!(
                done,
                vec![
                    Done {
                        status: 200,
                        close: false
                    },
                    Done {
                        status: 404,
                        close: true
                    }
                ],
                "split {chunk}"
            );
        }
    }

    #[test]
    fn chunked_bodies() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        for chunk in [1, 4, r.len()] {
            let (done, bad) = feed(r, chunk);
            assert!(!bad);
            assert_eq!(done.len(), 2);
            assert_eq!(done[1].status, 204);
        }
    }

    #[test]
    fn interim_and_empty_bodies() {
        let r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let (done, bad) = feed(r, 3);
        assert!(!bad);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].status, 200);
    }

    #[test]
    fn body_until_close() {
        let mut p = Parser::default();
        let r = b"HTTP/1.0 200 OK\r\n\r\nabc";
        assert!(matches!(p.step(r), Step::Used(19)));
        assert_eq!(p.step(&r[19..]), Step::Used(3));
        assert_eq!(
            p.eof(),
            Some(Done {
                status: 200,
                close: true
            })
        );
    }

    #[test]
    fn short_body_is_not_complete() {
        let mut p = Parser::default();
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert!(matches!(p.step(r), Step::Used(_)));
        assert_eq!(p.step(b"abc"), Step::Used(3));
        assert!(!p.idle());
        assert_eq!(p.eof(), None);
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            &b"HTTX/1.1 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let (_, malformed) = feed(bad, bad.len());
            assert!(malformed, "{}", String::from_utf8_lossy(bad));
        }
    }
}
