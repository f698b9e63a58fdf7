//! The request head sent upstream: for any head `http::request::parse` accepts, the head written
//! by `proxy::message::request_head` parses (httparse, and our own `parse`) to the same method,
//! the same target in origin-form, the same Host (or the default one, for HTTP/1.0 without Host or with an empty one)
//! and the same body framing. Whatever the `Connection` header names, the upstream reads the
//! message we read and relay: no request smuggling through the rewrite.
//!
//! Input: the first byte picks trusted forwarding (bit 0); the rest is a raw request head.
#![no_main]

use edgeserve::http::request::{self, BodyFraming, find_head_end, parse};
use edgeserve::proxy::message::{ForwardedTrust, request_head};
use libfuzzer_sys::fuzz_target;

const DEFAULT_HOST: &str = "upstream.test:8080";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, raw)) = data.split_first() else {
        return;
    };
    let Ok(end) = find_head_end(raw, 0) else {
        return;
    };
    let raw = &raw[..end];
    let Ok(req) = parse(raw, 64) else { return };
    let trust = if flags & 1 == 1 {
        ForwardedTrust::Chain
    } else {
        ForwardedTrust::Peer
    };
    let mut out = Vec::new();
    // Refused messages (framing look-alikes, GET/HEAD with a body) are answered 400 instead.
    // The scheme the client spoke to us: both spellings are fields the upstream must parse.
    let scheme: &[u8] = if flags & 2 == 2 { b"https" } else { b"http" };
    let client = Some([10, 0, 0, 1].into());
    if request_head(&mut out, raw, &req, client, DEFAULT_HOST, trust, scheme).is_err() {
        return;
    }
    let what = String::from_utf8_lossy(&out);

    let mut headers = [httparse::EMPTY_HEADER; request::MAX_HEADERS];
    let mut theirs = httparse::Request::new(&mut headers);
    match theirs.parse(&out) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, out.len(), "{what}"),
        other => panic!("httparse: {other:?}: {what}"),
    }
    let ours = parse(&out, request::MAX_HEADERS)
        .unwrap_or_else(|e| panic!("refused our own head ({e:?}): {what}"));

    let target = if req.target.starts_with('?') {
        format!("/{}", req.target)
    } else {
        req.target.to_string()
    };
    let host = req
        .host
        .filter(|h| !h.is_empty())
        .unwrap_or(DEFAULT_HOST.as_bytes());
    assert_eq!(theirs.method, Some(req.method_str), "{what}");
    assert_eq!(theirs.path, Some(target.as_str()), "{what}");
    assert_eq!(theirs.version, Some(1), "{what}");
    assert_eq!((ours.method, ours.target), (req.method, target.as_str()), "{what}");
    assert_eq!(ours.host, Some(host), "{what}");
    assert_eq!(ours.body, req.body, "{what}");
    // httparse's view of the framing agrees with ours.
    let field = |name: &str| {
        theirs
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    };
    let (cl, te) = (field("content-length"), field("transfer-encoding"));
    match req.body {
        BodyFraming::None => assert_eq!(te, 0, "{what}"),
        BodyFraming::Length(_) => assert_eq!((cl, te), (1, 0), "{what}"),
        BodyFraming::Chunked => assert_eq!((cl, te), (0, 1), "{what}"),
    }
    assert_eq!(field("host"), 1, "{what}");
    assert_eq!(field("connection"), 0, "{what}");
    assert_eq!(field("x-forwarded-for"), 1, "{what}");
});
