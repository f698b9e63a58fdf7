//! The two heads a proxy rewrites, without I/O: the request it sends upstream and the response
//! it passes back. Hop-by-hop fields go (RFC 9110 §7.6.1); response framing is checked with the
//! same strictness as requests, so a bad upstream never reaches the client as a desync.

use std::mem::MaybeUninit;
use std::net::IpAddr;

use crate::http::request::{self, BodyFraming, Method, Request};
use crate::http::response::push_u64;

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes: the client connection closes after it too.
    Close,
}

/// A parsed upstream response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: Framing,
    /// The upstream connection may carry another request after this response.
    pub reusable: bool,
    /// The head rewritten for the client (without its final CRLF, so `Connection: close` can
    /// still be added). A 101 keeps its `Upgrade` field and says `Connection: upgrade`.
    pub head: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    Malformed(&'static str),
    TooLarge,
}

/// True for fields that describe one connection and must not be forwarded.
fn hop_by_hop(name: &str, connection_tokens: &Tokens<'_, '_>) -> bool {
    // RFC 9110 §7.6.1 (Proxy-Connection falls under `proxy-`). Transfer-Encoding stays: bodies
    // (and their trailers) are relayed as they came, so it still describes them. By length
    // first: this runs for every field of every request and answer relayed.
    let fixed = match name.len() {
        2 => name.eq_ignore_ascii_case("te"),
        7 => name.eq_ignore_ascii_case("upgrade"),
        10 => name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive"),
        _ => false,
    };
    fixed
        || name.len() > 6 && name.as_bytes()[..6].eq_ignore_ascii_case(b"proxy-")
        || !connection_tokens.is_empty()
            && !protected(name)
            && connection_tokens
                .iter()
                .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

/// Fields a `Connection` header cannot remove. Content-Length and Transfer-Encoding frame the
/// body we relay unchanged, and Host names the target: a next hop that did not see them would
/// read a different message from the bytes than we did (request smuggling, an unframed answer).
fn protected(name: &str) -> bool {
    ["content-length", "transfer-encoding", "host"]
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f))
}

/// The tokens of a head's `Connection` fields, read where they are (no list is built: a head
/// has few fields, and a proxied request should not cost an allocation for them). Empty when
/// the head has no `Connection` field, the common case, which then costs one pass.
struct Tokens<'a, 'h>(&'h [httparse::Header<'a>]);

impl<'a> Tokens<'a, '_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.0
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .map(request::trim)
            .filter(|t| !t.is_empty())
    }
}

fn connection_tokens<'a, 'h>(headers: &'h [httparse::Header<'a>]) -> Tokens<'a, 'h> {
    let any = headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("connection"));
    Tokens(if any { headers } else { &[] })
}

/// Who may tell us where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardedTrust {
    /// Anyone may connect: a client's X-Forwarded-For, X-Real-IP, Forwarded, X-Forwarded-Proto
    /// and X-Forwarded-Host are forgeries until shown otherwise; the chain starts at the peer.
    Peer,
    /// The peer is a proxy of ours (`--proxy-trust-forwarded`): its chain is kept and extended.
    Chain,
}

/// Fields that say where a request came from: replaced unless the peer is trusted.
const FORWARDED_FIELDS: [&str; 5] = [
    "x-forwarded-for",
    "x-real-ip",
    "forwarded",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Writes the head to send upstream for `req`, whose raw head is `raw`: the request line in
/// origin-form and HTTP/1.1, every end-to-end field as received, and the forwarded fields as
/// `trust` says: X-Forwarded-For ends with `client`, X-Real-IP and X-Forwarded-Proto are ours
/// unless a trusted peer sent them. Host and the body framing are written from `req`
/// itself, not copied, so the upstream reads exactly the message we parsed (and relay): the body
/// goes on with the framing it arrived with. An HTTP/1.0 request without Host gets
/// `Host: default_host`, since HTTP/1.1 requires one.
///
/// Refused (400, `Err` with the reason, `out` left partly written) are messages that servers
/// behind us could frame differently from us (RFC 9112 §11.2): a field whose name is a look-alike
/// of Content-Length or Transfer-Encoding (`Transfer_Encoding`, `Content--Length`), which some
/// servers read as the real one, and a GET or HEAD with a body, which some servers ignore and
/// would then read as the next request on the pooled connection.
///
/// An upgrade (`req.upgrade`) keeps its `Upgrade` field and gets `Connection: upgrade`: both
/// are hop-by-hop, and asked of this hop again. Any other request loses them.
pub fn request_head(
    out: &mut Vec<u8>,
    raw: &[u8],
    req: &Request<'_>,
    client: Option<IpAddr>,
    default_host: &str,
    trust: ForwardedTrust,
    // "http" or "https": what the client spoke to us (X-Forwarded-Proto).
    scheme: &[u8],
) -> Result<(), &'static str> {
    if matches!(req.method, Method::Get | Method::Head) && req.body != BodyFraming::None {
        return Err("a GET or HEAD with a body");
    }
    let mut storage =
        [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; request::MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    // The head was parsed once already with these rules; this second pass only lists the fields.
    let _ = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        raw,
        &mut storage,
    );
    out.extend_from_slice(req.method_str.as_bytes());
    out.push(b' ');
    let target = req.target;
    if target.starts_with('?') {
        out.push(b'/');
    }
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    // An HTTP/1.0 request may have no Host, or an empty one: HTTP/1.1 wants a name.
    match req.host {
        Some(host) if !host.is_empty() => out.extend_from_slice(host),
        _ => out.extend_from_slice(default_host.as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    let tokens = connection_tokens(parsed.headers);
    let mut chain: Vec<&[u8]> = Vec::new();
    let (mut real_ip, mut proto) = (false, false);
    let mut zero_length = false;
    for h in parsed.headers.iter() {
        let name = h.name;
        if framing_look_alike(name) {
            return Err("a look-alike of a framing field");
        }
        if FORWARDED_FIELDS
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f))
        {
            if trust == ForwardedTrust::Peer || hop_by_hop(name, &tokens) {
                continue;
            }
            if name.eq_ignore_ascii_case("x-forwarded-for") {
                // Every field, in order: one chain, extended below.
                chain.push(h.value);
                continue;
            }
            real_ip |= name.eq_ignore_ascii_case("x-real-ip");
            proto |= name.eq_ignore_ascii_case("x-forwarded-proto");
        }
        if protected(h.name) {
            // Written from `req` below. A `Content-Length: 0` is kept as such: some servers
            // want a length on every POST.
            zero_length |= h.name.eq_ignore_ascii_case("content-length");
            continue;
        }
        if req.upgrade && name.eq_ignore_ascii_case("upgrade") {
            // Hop-by-hop, but the upgrade is asked of the upstream too (with a `Connection`
            // below that names only it).
            push_field(out, h.name.as_bytes(), h.value);
            continue;
        }
        if hop_by_hop(h.name, &tokens) {
            continue;
        }
        push_field(out, h.name.as_bytes(), h.value);
    }
    if req.upgrade {
        push_field(out, b"Connection", b"upgrade");
    }
    match req.body {
        BodyFraming::None if zero_length => push_field(out, b"Content-Length", b"0"),
        BodyFraming::None => {}
        BodyFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        // `request::parse` takes no coding but chunked (others are 501).
        BodyFraming::Chunked => push_field(out, b"Transfer-Encoding", b"chunked"),
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    for hop in chain
        .iter()
        .map(|v| request::trim(v))
        .filter(|v| !v.is_empty())
    {
        out.extend_from_slice(hop);
        out.extend_from_slice(b", ");
    }
    // The peer's address is written in place (no string per request), and copied from there.
    let peer_at = out.len();
    crate::http::access::push_peer(out, client);
    let peer = peer_at..out.len();
    out.extend_from_slice(b"\r\n");
    if !real_ip && client.is_some() {
        out.extend_from_slice(b"X-Real-IP: ");
        out.extend_from_within(peer);
        out.extend_from_slice(b"\r\n");
    }
    if !proto {
        push_field(out, b"X-Forwarded-Proto", scheme);
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// True for a name that is not Content-Length or Transfer-Encoding but reads as one once `_` and
/// `-` are ignored: servers that map `_` to `-` (CGI-style) or drop punctuation see a framing
/// field we did not.
fn framing_look_alike(name: &str) -> bool {
    if !(13..=40).contains(&name.len()) {
        return false;
    }
    let mut letters = [0u8; 16];
    let mut n = 0;
    for b in name.bytes().filter(|&b| b != b'-' && b != b'_') {
        if n == letters.len() {
            return false;
        }
        letters[n] = b.to_ascii_lowercase();
        n += 1;
    }
    let folded = &letters[..n];
    (folded == b"contentlength" || folded == b"transferencoding")
        && !name.eq_ignore_ascii_case("content-length")
        && !name.eq_ignore_ascii_case("transfer-encoding")
}

/// Removes every `name` field from a head written by [`request_head`] (the request line is
/// kept whatever it holds). Its lines end in CRLF and no value holds CR or LF (httparse refused
/// them), so each line is one field.
pub fn remove_field(head: &mut Vec<u8>, name: &[u8]) {
    let Some(first) = memchr::memmem::find(head, b"\r\n") else {
        return;
    };
    let mut kept = first + 2;
    let mut at = kept;
    while let Some(len) = memchr::memmem::find(&head[at..], b"\r\n").map(|i| i + 2) {
        let line = at..at + len;
        at += len;
        let named = head[line.clone()]
            .split(|&b| b == b':')
            .next()
            .is_some_and(|n| n.len() < len && n.eq_ignore_ascii_case(name));
        if !named {
            head.copy_within(line, kept);
            kept += len;
        }
    }
    head.copy_within(at.., kept);
    head.truncate(kept + (head.len() - at));
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Parses an upstream response head from the start of `buf`. `Ok(None)`: not complete yet.
/// `Ok(Some((head, n)))`: the head took `n` bytes.
/// `dechunk`: the client speaks HTTP/1.0, which has no chunked coding; a chunked body will be
/// decoded on the way and run to the close, so Transfer-Encoding is left out of the head.
pub fn response_head(
    buf: &[u8],
    method: Method,
    max_head: usize,
    dechunk: bool,
) -> Result<Option<(ResponseHead, usize)>, UpstreamError> {
    let mut head = Vec::new();
    let parsed = response_head_into(&mut head, buf, method, max_head, dechunk)?;
    Ok(parsed.map(|(meta, n)| {
        (
            ResponseHead {
                status: meta.status,
                framing: meta.framing,
                reusable: meta.reusable,
                head,
            },
            n,
        )
    }))
}

/// What [`response_head_into`] found, beside the head it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseMeta {
    pub status: u16,
    pub framing: Framing,
    pub reusable: bool,
    /// The upstream sent its own Strict-Transport-Security (ours is then not added).
    pub sts: bool,
}

/// [`response_head`], with the rewritten head appended to `head` (the client's output, so the
/// relay copies it once and allocates nothing). On `Err` and `Ok(None)`, `head` is as it was.
pub fn response_head_into(
    head: &mut Vec<u8>,
    buf: &[u8],
    method: Method,
    max_head: usize,
    dechunk: bool,
) -> Result<Option<(ResponseMeta, usize)>, UpstreamError> {
    let start = head.len();
    let parsed = write_response_head(head, buf, method, max_head, dechunk);
    if !matches!(parsed, Ok(Some(_))) {
        head.truncate(start);
    }
    parsed
}

fn write_response_head(
    head: &mut Vec<u8>,
    buf: &[u8],
    method: Method,
    max_head: usize,
    dechunk: bool,
) -> Result<Option<(ResponseMeta, usize)>, UpstreamError> {
    let end = match request::find_head_end(buf, 0) {
        Ok(end) if end <= max_head => end,
        Ok(_) => return Err(UpstreamError::TooLarge),
        Err(_) if buf.len() > max_head => return Err(UpstreamError::TooLarge),
        Err(_) => return Ok(None),
    };
    let raw = &buf[..end];
    if request::has_bare_lf(raw) {
        return Err(UpstreamError::Malformed("bare LF"));
    }
    let mut storage =
        [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; request::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        raw,
        &mut storage,
    ) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(UpstreamError::Malformed("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(UpstreamError::TooLarge),
        Err(_) => return Err(UpstreamError::Malformed("malformed response head")),
    }
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(UpstreamError::Malformed("malformed status line"));
    };
    if !(100..=999).contains(&status) {
        return Err(UpstreamError::Malformed("malformed status code"));
    }
    let tokens = connection_tokens(resp.headers);
    let switching = status == 101;
    let mut length: Option<u64> = None;
    let mut te = false;
    let mut chunked = false;
    let mut sts = false;
    head.reserve(end + 32);
    head.extend_from_slice(b"HTTP/1.1 ");
    push_u64(head, u64::from(status));
    head.push(b' ');
    head.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value;
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Err(UpstreamError::Malformed("malformed Content-Length"));
            }
            let n = v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|m| m != n) {
                return Err(UpstreamError::Malformed("differing Content-Length"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            for coding in h
                .value
                .split(|&b| b == b',')
                .map(request::trim)
                .filter(|c| !c.is_empty())
            {
                if chunked {
                    return Err(UpstreamError::Malformed(
                        "chunked is not the last transfer coding",
                    ));
                }
                chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
            if dechunk {
                continue;
            }
        }
        if switching && h.name.eq_ignore_ascii_case("upgrade") {
            // The protocol switched to, for the client (re-added with `Connection` below).
        } else if hop_by_hop(h.name, &tokens) {
            continue;
        }
        sts |= h.name.eq_ignore_ascii_case("strict-transport-security");
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
    if te && length.is_some() {
        return Err(UpstreamError::Malformed(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if switching {
        head.extend_from_slice(b"Connection: upgrade\r\n");
    }
    let closes = tokens.iter().any(|t| t.eq_ignore_ascii_case(b"close"));
    let keep_alive = if minor == 1 {
        !closes
    } else {
        tokens.iter().any(|t| t.eq_ignore_ascii_case(b"keep-alive"))
    };
    let bodiless = method == Method::Head || status < 200 || status == 204 || status == 304;
    let framing = if bodiless {
        Framing::None
    } else if te && chunked {
        Framing::Chunked
    } else if te {
        // A coding we cannot find the end of: the body runs to the close.
        Framing::Close
    } else {
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    // After a 101 the connection speaks another protocol: never HTTP again.
    let reusable = keep_alive && framing != Framing::Close && !switching;
    Ok(Some((
        ResponseMeta {
            status,
            framing,
            reusable,
            sts,
        },
        end,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_a_field_by_name() {
        let mut h = b"GET /authorization: HTTP/1.1\r\nHost: h\r\nAuthorization: Basic x\r\nX-Authorization: y\r\nauthorization:z\r\nAccept: */*\r\n\r\n".to_vec();
        remove_field(&mut h, b"authorization");
        assert_eq!(
            h,
            b"GET /authorization: HTTP/1.1\r\nHost: h\r\nX-Authorization: y\r\nAccept: */*\r\n\r\n"
        );
    }

    fn req_head(raw: &str, ip: Option<IpAddr>) -> String {
        let req = request::parse(raw.as_bytes(), 64).unwrap();
        let mut out = Vec::new();
        request_head(
            &mut out,
            raw.as_bytes(),
            &req,
            ip,
            "up:1",
            ForwardedTrust::Peer,
            b"http",
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_http10_request_without_host_gets_one() {
        let out = req_head("GET /a HTTP/1.0\r\n\r\n", None);
        assert!(
            out.starts_with("GET /a HTTP/1.1\r\nHost: up:1\r\n"),
            "{out}"
        );
    }

    #[test]
    fn request_loses_hop_by_hop_fields_and_gains_forwarded_ones() {
        let raw = "POST http://h/api?x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: ws\r\nProxy-Authorization: x\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nTransfer-Encoding: chunked\r\nAccept: */*\r\n\r\n";
        let out = req_head(raw, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(
            out,
            "POST /api?x HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 10.0.0.9\r\nX-Real-IP: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
    }

    #[test]
    fn connection_cannot_remove_the_framing_or_host() {
        let raw = "POST /a HTTP/1.1\r\nHost: h\r\nConnection: Content-Length, Host, X\r\nContent-Length: 3\r\nX: 1\r\n\r\n";
        assert_eq!(
            req_head(raw, None),
            "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX-Forwarded-For: -\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
        let raw = "POST /a HTTP/1.1\r\nHost: h\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(req_head(raw, None).contains("\r\nTransfer-Encoding: chunked\r\n"));
        let raw = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
        assert!(req_head(raw, None).contains("\r\nContent-Length: 0\r\n"));
        for (raw, framing) in [
            (
                "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\n",
                "Content-Length: 5\r\n",
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding: chunked\r\n",
            ),
        ] {
            let (h, _) = resp(raw, Method::Get).unwrap().unwrap();
            assert!(h.head.ends_with(framing.as_bytes()), "{raw:?}");
        }
    }

    #[test]
    fn an_http10_request_with_an_empty_host_gets_one() {
        let out = req_head("GET /a HTTP/1.0\r\nHost: \r\n\r\n", None);
        assert!(
            out.starts_with("GET /a HTTP/1.1\r\nHost: up:1\r\n"),
            "{out}"
        );
    }

    #[test]
    fn messages_another_server_could_frame_differently_are_refused() {
        for (raw, forwarded) in [
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent_Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer---Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContentLength: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContentL-ength: 5\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n",
            "HEAD / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]
        .map(|raw| (raw, false))
        .into_iter()
        .chain(
            [
                "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Content-Length: 1\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Type: x\r\n\r\n",
            ]
            .map(|raw| (raw, true)),
        ) {
            let req = request::parse(raw.as_bytes(), 64).unwrap();
            let mut out = Vec::new();
            let r = request_head(
                &mut out,
                raw.as_bytes(),
                &req,
                None,
                "u",
                ForwardedTrust::Peer,
                b"http",
            );
            assert_eq!(r.is_ok(), forwarded, "{raw:?}: {r:?}");
        }
    }

    #[test]
    fn forwarded_fields_are_replaced_unless_the_peer_is_trusted() {
        let raw = "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nForwarded: for=x\r\nX-Real-IP: 9.9.9.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: e\r\nX-Forwarded-For: 2.2.2.2\r\n\r\n";
        let req = request::parse(raw.as_bytes(), 64).unwrap();
        let ip = Some("10.0.0.9".parse().unwrap());
        let head = |trust| {
            let mut out = Vec::new();
            request_head(&mut out, raw.as_bytes(), &req, ip, "up", trust, b"http").unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            head(ForwardedTrust::Peer),
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\nX-Real-IP: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
        assert_eq!(
            head(ForwardedTrust::Chain),
            "GET / HTTP/1.1\r\nHost: h\r\nForwarded: for=x\r\nX-Real-IP: 9.9.9.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: e\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\n\r\n"
        );
    }

    fn resp(raw: &str, method: Method) -> Result<Option<(ResponseHead, usize)>, UpstreamError> {
        response_head(raw.as_bytes(), method, 8192, false)
    }

    #[test]
    fn response_framing() {
        let (h, n) = resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: x\r\nX: y\r\n\r\nhello",
            Method::Get,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (h.status, h.framing, h.reusable, n),
            (200, Framing::Length(5), true, 59)
        );
        assert_eq!(h.head, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n");
        let (h, _) = resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::Get,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(String::from_utf8_lossy(&h.head).contains("Transfer-Encoding: chunked"));
        let (h, _) = resp("HTTP/1.0 200 OK\r\n\r\n", Method::Get)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.reusable), (Framing::Close, false));
        let (h, _) = resp(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            Method::Get,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::None);
        let (h, _) = resp("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", Method::Head)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.reusable), (Framing::None, true));
        let (h, _) = resp("HTTP/1.1 100 Continue\r\n\r\n", Method::Get)
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.framing), (100, Framing::None));
        assert_eq!(resp("HTTP/1.1 200 OK\r\nContent-Le", Method::Get), Ok(None));
    }

    #[test]
    fn only_an_upgrade_keeps_upgrade_and_connection_upgrade_upstream() {
        let raw = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: k\r\nKeep-Alive: 5\r\n\r\n";
        assert_eq!(
            req_head(raw, None),
            "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nConnection: upgrade\r\nX-Forwarded-For: -\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
        for plain in [
            "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
            "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\r\n",
            "GET /ws HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        ] {
            let out = req_head(plain, None).to_ascii_lowercase();
            assert!(!out.contains("\r\nupgrade:"), "{plain:?}: {out}");
            assert!(!out.contains("\r\nconnection:"), "{plain:?}: {out}");
        }
    }

    #[test]
    fn a_101_keeps_upgrade_and_says_connection_upgrade() {
        let raw = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: a\r\nKeep-Alive: 5\r\n\r\nearly";
        let (h, n) = resp(raw, Method::Get).unwrap().unwrap();
        assert_eq!(
            (h.status, h.framing, h.reusable),
            (101, Framing::None, false)
        );
        assert_eq!(n, raw.len() - 5);
        assert_eq!(
            String::from_utf8(h.head).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\nConnection: upgrade\r\n"
        );
        // Without Upgrade it is passed on as it came (the client judges it), still a switch.
        let (h, _) = resp("HTTP/1.1 101 OK\r\n\r\n", Method::Get)
            .unwrap()
            .unwrap();
        assert_eq!(h.head, b"HTTP/1.1 101 OK\r\nConnection: upgrade\r\n");
        // Any other answer loses both.
        let (h, _) = resp(
            "HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nConnection: upgrade\r\nContent-Length: 0\r\n\r\n",
            Method::Get,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.head, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n");
    }

    #[test]
    fn bad_upstream_framing_is_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\nContent-Length: 5\n\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n",
        ] {
            assert!(resp(raw, Method::Get).is_err(), "{raw:?}");
        }
    }
}
