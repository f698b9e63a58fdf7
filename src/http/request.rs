//! Request heads: where a head ends, what it says, and the framing rules of RFC 9112 that decide
//! how many body bytes follow it. No I/O; every rule rejects rather than guesses.

use std::mem::MaybeUninit;

/// Most header lines a head may carry, whatever the configuration asks for: the array lives on the
/// stack of the parser.
pub const MAX_HEADERS: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// A method we know but do not serve on files (answered 405 with `Allow`).
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the body after a head is framed (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Why a head was refused; each maps to one status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed syntax or ambiguous framing: 400, and the connection closes.
    Bad(&'static str),
    /// The request line alone is over the head limit: 414.
    UriTooLong,
    /// The head is over the size or header-count limit: 431.
    TooLarge,
    /// A method or transfer coding we do not implement: 501.
    NotImplemented,
    /// A major version other than 1: 505.
    Version,
}

impl HeadError {
    pub fn status(self) -> u16 {
        match self {
            HeadError::Bad(_) => 400,
            HeadError::UriTooLong => 414,
            HeadError::TooLarge => 431,
            HeadError::NotImplemented => 501,
            HeadError::Version => 505,
        }
    }
}

/// A parsed request head, borrowing the bytes it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method,
    pub method_str: &'a str,
    /// The request target as sent (origin-form, or the path of an absolute-form target).
    pub target: &'a str,
    pub version: Version,
    pub host: Option<&'a [u8]>,
    pub body: BodyFraming,
    /// What the client asked for; the session may still close.
    pub keep_alive: bool,
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub range: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
    /// `Accept-Encoding`, for precompressed files. Sent twice, it counts as absent (identity is
    /// served): the two lists are not joined, and a client that splits its list is rare.
    pub accept_encoding: Option<&'a [u8]>,
    /// `Expect: 100-continue`: the client may hold its body back until told to send it.
    pub expect_continue: bool,
    /// An HTTP/1.1 request with an `Upgrade` field and the `upgrade` token in `Connection`
    /// (RFC 9110 §7.8): the connection may switch protocols after the answer. HTTP/1.0 has no
    /// upgrades (a 1.0 proxy could have passed the fields on without understanding them).
    pub upgrade: bool,
    /// The `Authorization` field (a singleton: a repeated one is refused, since a server behind
    /// us could pick the other one).
    pub authorization: Option<&'a [u8]>,
    /// Where the target's path ends (at `?`, `#` or the end): found once at parse time, asked
    /// for often. Read it through [`Request::path`].
    pub path_end: usize,
}

impl Request<'_> {
    /// The target's path without query or fragment.
    pub fn path(&self) -> &str {
        if self.path_end == 0 {
            "/"
        } else {
            &self.target[..self.path_end]
        }
    }
}

/// Finds the end of a head (the byte after its blank line) in `buf`, scanning from `from`
/// (a previous scan's stopping point, so a slow drip is not rescanned from byte 0).
/// Returns `Err(next_from)` when no end is there yet.
pub fn find_head_end(buf: &[u8], from: usize) -> Result<usize, usize> {
    // A blank line is "\n\n" or "\n\r\n"; back up two bytes so a terminator split across reads
    // is found. (A search for CRLF CRLF costs more on a head of a few lines: memmem's setup.)
    let start = from.saturating_sub(2);
    for nl in memchr::memchr_iter(b'\n', &buf[start..]).map(|i| start + i) {
        match buf.get(nl + 1) {
            Some(b'\n') => return Ok(nl + 2),
            Some(b'\r') => match buf.get(nl + 2) {
                Some(b'\n') => return Ok(nl + 3),
                Some(_) => {}
                None => return Err(nl),
            },
            Some(_) => {}
            None => return Err(nl),
        }
    }
    Err(buf.len())
}

/// True when `buf` has a LF that no CR comes right before (a line end we refuse), counting one
/// at its very start.
pub fn has_bare_lf(buf: &[u8]) -> bool {
    let Some(&first) = buf.first() else {
        return false;
    };
    // Without early exit, so that it compiles to a vector loop: a head is a few hundred bytes.
    let inner = buf[1..].iter().zip(buf).fold(false, |bare, (&b, &before)| {
        bare | ((b == b'\n') & (before != b'\r'))
    });
    first == b'\n' || inner
}

/// False when `buf`, the start of a request head not complete yet, can no longer be the start of
/// a valid request line (`token SP target SP HTTP/d.d CRLF`, RFC 9112 §3): a TLS ClientHello on
/// the plain port, binary noise, a stray response. Only what has arrived of the first line is
/// judged, so a slow but valid request is never refused; `parse` decides the rest.
pub fn could_begin(buf: &[u8]) -> bool {
    const VERSION: &[u8] = b"HTTP/d.d\r\n";
    if buf == b"\r" {
        return true; // the start of an empty line before the request (RFC 9112 §2.2)
    }
    let line = match memchr::memchr(b'\n', buf) {
        Some(i) => &buf[..=i],
        None => buf,
    };
    let mut part = 0; // method, target, version
    let mut len = 0; // bytes of the current part
    for &b in line {
        match part {
            0 if b == b' ' && len > 0 => (part, len) = (1, 0),
            0 if is_tchar(b) => len += 1,
            1 if b == b' ' && len > 0 => (part, len) = (2, 0),
            1 if b.is_ascii_graphic() => len += 1,
            2 if len < VERSION.len() => {
                let ok = match VERSION[len] {
                    b'd' => b.is_ascii_digit(),
                    want => b == want,
                };
                if !ok {
                    return false;
                }
                len += 1;
            }
            _ => return false,
        }
    }
    true
}

/// Number of empty lines (CRLF) before a request line, which RFC 9112 §2.2 lets a server skip.
pub fn leading_crlfs(buf: &[u8]) -> usize {
    let mut n = 0;
    while buf[n..].starts_with(b"\r\n") {
        n += 2;
    }
    n
}

/// Parses a complete head `buf` (from the request line through its blank line).
pub fn parse(buf: &[u8], max_headers: usize) -> Result<Request<'_>, HeadError> {
    // RFC 9112 §2.2 lets a recipient accept a bare LF; we do not, since two parsers that disagree
    // on line ends are the start of a desync.
    if has_bare_lf(buf) {
        return Err(HeadError::Bad("bare LF"));
    }
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let storage = &mut storage[..max_headers.min(MAX_HEADERS)];
    let mut req = httparse::Request::new(&mut []);
    let config = httparse::ParserConfig::default();
    match config.parse_request_with_uninit_headers(&mut req, buf, storage) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Bad("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(_) => return Err(HeadError::Bad("malformed head")),
    }
    let (Some(method_str), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Bad("malformed request line"));
    };
    let version = if minor == 1 {
        Version::Http11
    } else {
        Version::Http10
    };
    let method = match method_str {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" | "PUT" | "DELETE" | "OPTIONS" | "PATCH" | "TRACE" | "CONNECT" => Method::Other,
        _ => return Err(HeadError::NotImplemented),
    };
    let target = check_target(method_str, target)?;

    let mut out = Request {
        method,
        method_str,
        target,
        version,
        host: None,
        body: BodyFraming::None,
        keep_alive: version == Version::Http11,
        if_none_match: None,
        if_modified_since: None,
        range: None,
        if_range: None,
        accept_encoding: None,
        expect_continue: false,
        upgrade: false,
        authorization: None,
        path_end: memchr::memchr2(b'?', b'#', target.as_bytes()).unwrap_or(target.len()),
    };
    let (mut upgrade_field, mut connection_upgrade) = (false, false);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut saw_te = false;
    let mut hosts = 0;
    let mut accept_encodings = 0;
    for h in req.headers.iter() {
        // httparse has refused control characters and DEL in names and values already.
        let value = h.value;
        let name = h.name.as_bytes();
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                hosts += 1;
                check_host(value)?;
                out.host = Some(value);
            }
            5 if name.eq_ignore_ascii_case(b"range") => out.range = Some(value),
            6 if name.eq_ignore_ascii_case(b"expect") => {
                out.expect_continue = value.eq_ignore_ascii_case(b"100-continue")
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => upgrade_field |= !trim(value).is_empty(),
            8 if name.eq_ignore_ascii_case(b"if-range") => out.if_range = Some(value),
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in list(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        out.keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive")
                        && version == Version::Http10
                    {
                        out.keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        connection_upgrade = true;
                    }
                }
            }
            13 if name.eq_ignore_ascii_case(b"if-none-match") => out.if_none_match = Some(value),
            // (The guard records the field; it matches only for a second one.)
            13 if name.eq_ignore_ascii_case(b"authorization")
                && out.authorization.replace(value).is_some() =>
            {
                return Err(HeadError::Bad("repeated Authorization"));
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let n = parse_content_length(value)?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(HeadError::Bad("differing Content-Length"));
                }
                content_length = Some(n);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                if version == Version::Http10 {
                    return Err(HeadError::Bad("Transfer-Encoding in HTTP/1.0"));
                }
                saw_te = true;
                for coding in list(value) {
                    if chunked {
                        // Anything after chunked, even a second chunked (RFC 9112 §6.1).
                        return Err(HeadError::Bad("chunked is not the last transfer coding"));
                    }
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        chunked = true;
                    } else if !is_token(coding) {
                        return Err(HeadError::Bad("malformed Transfer-Encoding"));
                    }
                }
            }
            17 if name.eq_ignore_ascii_case(b"if-modified-since") => {
                out.if_modified_since = Some(value)
            }
            15 if name.eq_ignore_ascii_case(b"accept-encoding") => {
                accept_encodings += 1;
                out.accept_encoding = (accept_encodings == 1).then_some(value);
            }
            _ => {}
        }
    }
    out.upgrade = version == Version::Http11 && upgrade_field && connection_upgrade;
    if hosts > 1 {
        return Err(HeadError::Bad("repeated Host"));
    }
    if hosts == 0 && version == Version::Http11 {
        return Err(HeadError::Bad("missing Host"));
    }
    if out.host == Some(b"") && version == Version::Http11 {
        // Our targets are origin-form, so the URI always has an authority to name.
        return Err(HeadError::Bad("empty Host"));
    }
    out.body = match (saw_te, content_length) {
        (true, Some(_)) => return Err(HeadError::Bad("both Content-Length and Transfer-Encoding")),
        (true, None) if !chunked => {
            return Err(HeadError::Bad("chunked is not the last transfer coding"));
        }
        (true, None) if has_other_coding(&req) => return Err(HeadError::NotImplemented),
        (true, None) => BodyFraming::Chunked,
        (false, Some(0)) | (false, None) => BodyFraming::None,
        (false, Some(n)) => BodyFraming::Length(n),
    };
    Ok(out)
}

/// A transfer coding before `chunked` that we would have to undo: not implemented (501).
fn has_other_coding(req: &httparse::Request<'_, '_>) -> bool {
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|h| list(h.value))
        .any(|c| !c.eq_ignore_ascii_case(b"chunked"))
}

/// httparse only knows 1.0 and 1.1: a well-formed `HTTP/x.y` with another number gets 505,
/// anything else is malformed.
fn version_error(buf: &[u8]) -> HeadError {
    // Only a request line of exactly three parts (single spaces) names a version at all.
    let line = buf.split(|&b| b == b'\r').next().unwrap_or(buf);
    let mut parts = line.split(|&b| b == b' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor]), None)
            if !m.is_empty()
                && !t.is_empty()
                && major.is_ascii_digit()
                && minor.is_ascii_digit() =>
        {
            HeadError::Version
        }
        _ => HeadError::Bad("malformed request line"),
    }
}

/// Origin-form, absolute-form (its path is used), `*` for OPTIONS, authority-form for CONNECT
/// (RFC 9112 §3.2).
fn check_target<'a>(method: &str, target: &'a str) -> Result<&'a str, HeadError> {
    // httparse lets bytes above 0x7f through; a URI has none (RFC 3986 §2).
    if !target.is_ascii() {
        return Err(HeadError::Bad("non-ASCII request target"));
    }
    if target.starts_with('/') {
        return Ok(target);
    }
    if target == "*" && method == "OPTIONS" {
        return Ok(target);
    }
    if method == "CONNECT" {
        return Ok(target);
    }
    let lower = target.get(..8).map(|s| s.to_ascii_lowercase());
    let rest = match lower.as_deref() {
        Some(p) if p.starts_with("http://") => &target[7..],
        Some("https://") => &target[8..],
        _ => return Err(HeadError::Bad("malformed request target")),
    };
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..path_start];
    if authority.is_empty() || authority.contains('@') {
        return Err(HeadError::Bad("malformed request target"));
    }
    check_host(authority.as_bytes())?;
    match &rest[path_start..] {
        "" => Ok("/"),
        // "http://host?q": an empty path is "/" (RFC 9112 §3.2.2); `path()` reads it so.
        p => Ok(p),
    }
}

/// Host = uri-host [ ":" port ]; we check the characters a reg-name, an IP literal and a port
/// may hold, which keeps whitespace, slashes and userinfo out.
fn check_host(value: &[u8]) -> Result<(), HeadError> {
    const fn allowed() -> [bool; 256] {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            t[b] = c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'['
                        | b']'
                        | b'%'
                );
            b += 1;
        }
        t
    }
    static ALLOWED: [bool; 256] = allowed();
    if value.iter().all(|&b| ALLOWED[usize::from(b)]) {
        Ok(())
    } else {
        Err(HeadError::Bad("malformed Host"))
    }
}

/// Content-Length = 1*DIGIT. A list ("5, 5") is refused, as is anything that overflows.
fn parse_content_length(value: &[u8]) -> Result<u64, HeadError> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Bad("malformed Content-Length"));
    }
    Ok(value
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Elements of a comma-separated list, trimmed of optional whitespace, empty ones skipped.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|s| !s.is_empty())
}

pub fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end]
}

pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

pub const fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Request<'_>, HeadError> {
        parse(s.as_bytes(), 64)
    }

    #[test]
    fn simple_get() {
        let r = p("GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path(), "/a");
        assert!(r.keep_alive);
        assert_eq!(r.body, BodyFraming::None);
    }

    #[test]
    fn authorization_is_a_singleton() {
        let r = p("GET / HTTP/1.1\r\nHost: x\r\nauthorization: Basic YTpi\r\n\r\n").unwrap();
        assert_eq!(r.authorization, Some(&b"Basic YTpi"[..]));
        assert_eq!(
            p("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap()
                .authorization,
            None
        );
        let twice = "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n";
        assert_eq!(p(twice).unwrap_err().status(), 400);
    }

    #[test]
    fn upgrade_needs_http11_the_field_and_the_connection_token() {
        let up = |s: &str| p(s).unwrap().upgrade;
        assert!(up(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        ));
        assert!(up(
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, upgrade\r\nUpgrade: h2c\r\n\r\n"
        ));
        assert!(up(
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: UPGRADE\r\nupgrade: x\r\n\r\n"
        ));
        for plain in [
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: \r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrades\r\n\r\n",
            "GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX-Upgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        ] {
            assert!(!up(plain), "{plain:?}");
        }
    }

    #[test]
    fn head_end_found_across_splits() {
        let full = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
        for cut in 0..full.len() {
            let mut from = 0;
            if let Err(f) = find_head_end(&full[..cut], 0) {
                from = f;
            }
            assert_eq!(find_head_end(full, from), Ok(27), "cut {cut}");
        }
        assert_eq!(find_head_end(b"GET / HTTP/1.0\n\n", 0), Ok(16));
    }

    /// The fast search (CRLF CRLF) and the line-by-line scan agree on every head, and on every
    /// cut of it, bare LFs and all.
    #[test]
    fn head_end_agrees_with_a_line_by_line_scan() {
        fn by_lines(buf: &[u8]) -> Option<usize> {
            (0..buf.len()).find_map(|i| match &buf[i..] {
                [b'\n', b'\n', ..] => Some(i + 2),
                [b'\n', b'\r', b'\n', ..] => Some(i + 3),
                _ => None,
            })
        }
        let heads: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody",
            b"GET / HTTP/1.1\nHost: x\n\nbody",
            b"GET / HTTP/1.1\r\nHost: x\n\r\nbody",
            b"GET / HTTP/1.1\r\nA: b\nC: d\r\n\r\n",
            b"\nGET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n",
        ];
        for head in heads {
            for cut in 0..=head.len() {
                let part = &head[..cut];
                let mut from = 0;
                for upto in 0..=cut {
                    match find_head_end(&part[..upto], from) {
                        Ok(end) => {
                            assert_eq!(Some(end), by_lines(part), "{head:?} cut {cut} at {upto}");
                            break;
                        }
                        Err(next) => from = next,
                    }
                    if upto == cut {
                        assert_eq!(by_lines(part), None, "{head:?} cut {cut}");
                    }
                }
            }
        }
        assert!(has_bare_lf(b"\n"));
        assert!(has_bare_lf(b"a\nb"));
        assert!(!has_bare_lf(b"a\r\nb\r\n"));
        assert!(!has_bare_lf(b""));
    }

    #[test]
    fn framing_rules() {
        let bad = [
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\nHost: x\n\n",
            "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            "GET x HTTP/1.1\r\nHost: x\r\n\r\n",
        ];
        for b in bad {
            assert!(
                matches!(p(b), Err(HeadError::Bad(_))),
                "{b:?} -> {:?}",
                p(b)
            );
        }
    }

    #[test]
    fn early_rejection_judges_only_the_request_line_so_far() {
        let full = b"OPTIONS http://h/a?b=c HTTP/1.1\r\nHost: h\r\n";
        for cut in 0..=full.len() {
            assert!(could_begin(&full[..cut]), "cut {cut}");
        }
        assert!(
            could_begin(b"\r"),
            "a leading empty line split after its CR"
        );
        for bad in [
            &b"\x16\x03\x01\x02\x00\x01"[..],
            b"\x00",
            b" GET /",
            b"GET\t/",
            b"GET  /",
            b"GET /a\x01",
            b"GET / HTTQ",
            b"GET / HTTP/1.1x",
            b"GET / HTTP/1.1\n",
            b"HTTP/1.1 200 OK\r\n",
        ] {
            assert!(!could_begin(bad), "{bad:?}");
        }
    }

    #[test]
    fn empty_host_is_refused_on_http11() {
        assert!(p("GET / HTTP/1.1\r\nHost: \r\n\r\n").is_err());
        assert!(p("GET / HTTP/1.0\r\nHost: \r\n\r\n").is_ok());
    }

    #[test]
    fn status_errors() {
        assert_eq!(
            p("BREW / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HeadError::NotImplemented)
        );
        assert_eq!(
            p("GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
            Err(HeadError::Version)
        );
        assert_eq!(
            p("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(HeadError::NotImplemented)
        );
        let many: String = (0..70).map(|i| format!("X{i}: y\r\n")).collect();
        assert_eq!(
            p(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn bodies_and_keep_alive() {
        let r = p("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert_eq!(r.body, BodyFraming::Length(5));
        assert!(!r.keep_alive);
        let r = p("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(r.body, BodyFraming::Chunked);
        let r = p("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(r.keep_alive);
        assert!(!p("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
    }

    #[test]
    fn absolute_form_uses_its_path() {
        let r = p("GET http://example.com:80/a/b?q HTTP/1.1\r\nHost: example.com\r\n\r\n").unwrap();
        assert_eq!(r.target, "/a/b?q");
        let r = p("GET HTTP://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n").unwrap();
        assert_eq!(r.target, "/");
        assert!(p("GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n").is_err());
        let r = p("GET http://example.com?q=1 HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert_eq!((r.path(), r.target), ("/", "?q=1"));
        assert!(r.expect_continue);
        assert!(p("GET /\u{3b4} HTTP/1.1\r\nHost: x\r\n\r\n").is_err());
    }
}
