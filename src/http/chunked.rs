//! A strict decoder for the chunked transfer coding (RFC 9112 §7.1), fed in any pieces.
//!
//! httparse's `parse_chunk_size` is lenient where a server must not be (an empty size line, bare
//! LF, unbounded extensions), so this is a byte-level state machine of our own. Every deviation
//! from the grammar is an error; nothing is guessed.

use super::request::is_tchar;

/// Longest chunk-size line (size plus extensions) and longest trailer section we accept.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    Malformed(&'static str),
    TooLarge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In the hex digits of a chunk size; `digits` so far.
    Size {
        digits: u8,
    },
    /// After the size, in optional whitespace or extensions, until CR.
    Ext(Ext),
    /// Saw CR of the size line.
    SizeLf,
    /// `remaining` data bytes of the current chunk to come.
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// In a trailer field name.
    TrailerName,
    /// In a trailer field value, until CR.
    TrailerValue,
    TrailerLf,
    /// Saw CR of the final empty line.
    EndLf,
    Done,
}

/// Where we are inside `chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ext {
    /// Right after the size or an extension: `;`, whitespace or CR.
    BeforeSemi,
    /// Whitespace after the size or an extension (BWS): only more of it or `;` may follow.
    Bws,
    /// After `;`, before the name.
    BeforeName,
    Name,
    /// After the name: whitespace, `=`, `;` or CR.
    AfterName,
    /// After `=`, before the value.
    BeforeValue,
    Token,
    Quoted,
    QuotedEscape,
}

#[derive(Clone, Debug)]
pub struct Decoder {
    state: State,
    size: u64,
    remaining: u64,
    line_len: usize,
    trailer_len: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Size { digits: 0 },
            size: 0,
            remaining: 0,
            line_len: 0,
            trailer_len: 0,
        }
    }
}

impl Decoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes a size line has announced (or is announcing, digit by digit) that have not
    /// been handed out yet: with what was handed out, a lower bound of the body's size, so a
    /// body over a limit is refused at its size line rather than read up to the limit.
    pub fn announced(&self) -> u64 {
        match self.state {
            State::Size { .. } | State::Ext(_) | State::SizeLf => self.size,
            State::Data => self.remaining,
            _ => 0,
        }
    }

    /// Decodes from `input`, handing chunk data to `data`. Returns how many bytes were consumed:
    /// all of `input`, or fewer when the body ended inside it (the rest is the next request).
    pub fn feed(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            if self.state == State::Data {
                let n =
                    (input.len() - i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                data(&input[i..i + n]);
                i += n;
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            self.step(input[i])?;
            i += 1;
        }
        Ok(i)
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        use ChunkError::Malformed;
        if matches!(self.state, State::Size { .. } | State::Ext(_)) {
            self.line_len += 1;
            if self.line_len > MAX_LINE {
                return Err(ChunkError::TooLarge);
            }
        }
        if matches!(
            self.state,
            State::TrailerStart | State::TrailerName | State::TrailerValue
        ) {
            self.trailer_len += 1;
            if self.trailer_len > MAX_TRAILERS {
                return Err(ChunkError::TooLarge);
            }
        }
        self.state = match self.state {
            State::Size { digits } => match hex(b) {
                Some(v) => {
                    if digits >= 16 {
                        return Err(ChunkError::TooLarge);
                    }
                    self.size = self.size << 4 | u64::from(v);
                    State::Size { digits: digits + 1 }
                }
                None if digits == 0 => return Err(Malformed("chunk size expected")),
                None => self.ext(Ext::BeforeSemi, b)?,
            },
            State::Ext(e) => self.ext(e, b)?,
            State::SizeLf => {
                expect(b, b'\n')?;
                self.line_len = 0;
                if self.size == 0 {
                    State::TrailerStart
                } else {
                    self.remaining = self.size;
                    State::Data
                }
            }
            State::Data => unreachable!("data is consumed in feed"),
            State::DataCr => expect(b, b'\r').map(|_| State::DataLf)?,
            State::DataLf => {
                expect(b, b'\n')?;
                self.size = 0;
                State::Size { digits: 0 }
            }
            State::TrailerStart => match b {
                b'\r' => State::EndLf,
                b if is_tchar(b) => State::TrailerName,
                _ => return Err(Malformed("malformed trailer")),
            },
            State::TrailerName => match b {
                b':' => State::TrailerValue,
                b if is_tchar(b) => State::TrailerName,
                _ => return Err(Malformed("malformed trailer name")),
            },
            State::TrailerValue => match b {
                b'\r' => State::TrailerLf,
                b'\t' => State::TrailerValue,
                b if b < 0x20 || b == 0x7f => {
                    return Err(Malformed("control character in trailer"));
                }
                _ => State::TrailerValue,
            },
            State::TrailerLf => expect(b, b'\n').map(|_| State::TrailerStart)?,
            State::EndLf => expect(b, b'\n').map(|_| State::Done)?,
            State::Done => State::Done,
        };
        Ok(())
    }

    fn ext(&mut self, e: Ext, b: u8) -> Result<State, ChunkError> {
        use ChunkError::Malformed;
        let ws = b == b' ' || b == b'\t';
        let next = match (e, b) {
            (Ext::BeforeSemi | Ext::Token, b'\r') => return Ok(State::SizeLf),
            (Ext::BeforeSemi | Ext::Bws | Ext::AfterName | Ext::Token, b';') => Ext::BeforeName,
            (Ext::BeforeSemi | Ext::Bws | Ext::Token, _) if ws => Ext::Bws,
            (Ext::BeforeName, _) if ws => Ext::BeforeName,
            (Ext::BeforeName | Ext::Name, _) if is_tchar(b) => Ext::Name,
            (Ext::Name, _) if ws => Ext::AfterName,
            (Ext::AfterName, _) if ws => Ext::AfterName,
            (Ext::Name | Ext::AfterName, b'=') => Ext::BeforeValue,
            (Ext::Name, b'\r') => return Ok(State::SizeLf),
            (Ext::Name, b';') => Ext::BeforeName,
            (Ext::BeforeValue, _) if ws => Ext::BeforeValue,
            (Ext::BeforeValue, b'"') => Ext::Quoted,
            (Ext::BeforeValue | Ext::Token, _) if is_tchar(b) => Ext::Token,
            (Ext::Quoted, b'"') => Ext::BeforeSemi,
            (Ext::Quoted, b'\\') => Ext::QuotedEscape,
            (Ext::Quoted, _) if b == b'\t' || (b >= 0x20 && b != 0x7f) => Ext::Quoted,
            (Ext::QuotedEscape, _) if b == b'\t' || (b >= 0x20 && b != 0x7f) => Ext::Quoted,
            _ => return Err(Malformed("malformed chunk size line")),
        };
        Ok(State::Ext(next))
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn expect(b: u8, want: u8) -> Result<(), ChunkError> {
    if b == want {
        Ok(())
    } else {
        Err(ChunkError::Malformed("CRLF expected"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let n = d.feed(input, |b| out.extend_from_slice(b))?;
        Ok((out, n, d.is_done()))
    }

    #[test]
    fn decodes_and_stops_at_end() {
        let input = b"5\r\nhello\r\n6;a=b;c=\"x\\\"y\"\r\n world\r\n0\r\nX-T: v\r\n\r\nNEXT";
        let (out, n, done) = decode(input).unwrap();
        assert_eq!(out, b"hello world");
        assert!(done);
        assert_eq!(n, input.len() - 4);
    }

    #[test]
    fn any_split_gives_the_same_result() {
        let input = b"a ; ext = tok\r\n0123456789\r\n00\r\n\r\nNEXT";
        let whole = decode(input).unwrap();
        for cut in 0..input.len() {
            let mut d = Decoder::default();
            let mut out = Vec::new();
            let a = d.feed(&input[..cut], |b| out.extend_from_slice(b)).unwrap();
            assert_eq!(a, cut.min(whole.1));
            let b = d.feed(&input[cut..], |b| out.extend_from_slice(b)).unwrap();
            assert_eq!((out.clone(), a + b, d.is_done()), whole, "cut {cut}");
        }
    }

    #[test]
    fn rejects_every_deviation() {
        let bad: &[&[u8]] = &[
            b"\r\n",                  // empty size line
            b"5\nhello\r\n0\r\n\r\n", // bare LF
            b"5\r\nhelloX\r\n",       // missing CRLF after data
            b"5\r\nhello\n0\r\n\r\n",
            b"-5\r\n",
            b"0x5\r\n",
            b"5 5\r\n",
            b"5;\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n", // whitespace with no extension after it
            b"5;a=b \r\nhello\r\n0\r\n\r\n",
            b"5;a=\r\n",
            b"5;a\x00\r\n",
            b"5;a=\"x\r\n\"\r\n",
            b"11111111111111111\r\n", // 17 hex digits
            b"0\r\nbad trailer\r\n\r\n",
            b"0\r\nX: a\x01\r\n\r\n",
            b"0\r\n\n",
        ];
        for b in bad {
            assert!(decode(b).is_err(), "{:?}", String::from_utf8_lossy(b));
        }
    }

    /// Where httparse reads a size line as complete, so do we: the two never disagree on where
    /// a chunk ends (the chunked fuzz target checks this on whole bodies).
    #[test]
    fn size_lines_agree_with_httparse() {
        for line in [
            &b"ffffffffffffffff\r\n"[..],
            b"0000000000000001\r\n",
            b"10000000000000000\r\n",
            b"1;a=\"b\"\r\n",
        ] {
            let ours = Decoder::default().feed(line, |_| {}).is_ok();
            let theirs = matches!(
                httparse::parse_chunk_size(line),
                Ok(httparse::Status::Complete(_))
            );
            assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn bounds_extensions() {
        let mut line = b"1;".to_vec();
        line.extend(std::iter::repeat_n(b'a', MAX_LINE));
        assert_eq!(decode(&line).unwrap_err(), ChunkError::TooLarge);
    }
}
