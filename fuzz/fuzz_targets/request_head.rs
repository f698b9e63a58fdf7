//! Request heads: `find_head_end` finds the same end however the bytes arrive (resuming from the
//! offset it returned, as the session does), and an accepted head says the same thing once it is
//! written out again from the parsed fields and parsed a second time.
//!
//! Input: raw bytes, as read from a socket.
#![no_main]

use edgeserve::http::request::{
    BodyFraming, Request, Version, find_head_end, leading_crlfs, parse,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let skip = leading_crlfs(data);
    assert!(skip <= data.len() && skip % 2 == 0);
    let whole = find_head_end(data, 0);
    check_resumed_scan(data, whole);
    // Whatever the input, parsing it (even past a head end, with few header slots) must not panic.
    let _ = parse(data, 3);
    let Ok(end) = whole else { return };
    assert!(end <= data.len() && data[end - 1] == b'\n', "end {end}");
    let Ok(req) = parse(&data[..end], 64) else { return };
    check_fields(&req);
    let again = serialize(&req);
    assert_eq!(find_head_end(&again, 0), Ok(again.len()));
    match parse(&again, 64) {
        Ok(req2) => assert_eq!(req, req2, "re-serialized as {:?}", String::from_utf8_lossy(&again)),
        Err(e) => panic!(
            "accepted {req:?} but refused its re-serialization {:?}: {e:?}",
            String::from_utf8_lossy(&again)
        ),
    }
});

/// The session scans a growing buffer, resuming at the offset the last scan returned; that must
/// find exactly what one scan of the whole buffer finds, wherever the buffer was cut.
fn check_resumed_scan(data: &[u8], whole: Result<usize, usize>) {
    if let Err(from) = whole {
        assert!(from <= data.len());
    }
    let mut cuts = vec![0, 1, data.len() / 2, data.len().saturating_sub(1)];
    // Cuts around the first few line ends and around the head end are the interesting ones.
    for (i, _) in data.iter().enumerate().filter(|&(_, &b)| b == b'\n').take(4) {
        cuts.extend([i, i + 1, i + 2]);
    }
    if let Ok(end) = whole {
        cuts.extend((1..=4).filter_map(|d| end.checked_sub(d)));
    }
    for cut in cuts.into_iter().filter(|&c| c <= data.len()) {
        match find_head_end(&data[..cut], 0) {
            Ok(e) => assert_eq!(whole, Ok(e), "prefix of {cut} bytes ends at {e}"),
            Err(from) => {
                assert!(from <= cut, "resume offset {from} past cut {cut}");
                assert_eq!(find_head_end(data, from), whole, "cut {cut}, resumed at {from}");
            }
        }
    }
}

/// Consistency of fields among themselves.
fn check_fields(req: &Request<'_>) {
    assert!(req.target.is_ascii());
    assert!(!req.path().is_empty());
    if req.body == BodyFraming::Chunked {
        assert_eq!(req.version, Version::Http11, "chunked in HTTP/1.0");
    }
    assert_ne!(req.body, BodyFraming::Length(0), "Length(0) is None");
    if req.version == Version::Http11 {
        assert!(req.host.is_some(), "HTTP/1.1 without Host accepted");
    }
}

/// Writes a head carrying every field `Request` exposes. The destructuring is exhaustive on
/// purpose: a new field fails to compile here until it is written out too.
fn serialize(req: &Request<'_>) -> Vec<u8> {
    let Request {
        method: _,
        method_str,
        target,
        version,
        host,
        body,
        keep_alive,
        if_none_match,
        if_modified_since,
        range,
        if_range,
        accept_encoding,
        expect_continue,
        upgrade,
        authorization,
        // Derived from the target, not sent: checked against it instead.
        path_end,
    } = *req;
    assert_eq!(
        path_end,
        target.find(['?', '#']).unwrap_or(target.len()),
        "the path ends at the first ? or #"
    );
    let mut v = Vec::new();
    v.extend_from_slice(method_str.as_bytes());
    v.push(b' ');
    // The path of an absolute-form target without a path ("http://h?q") is just its query, which
    // can only be sent in absolute-form again.
    let as_is = target.starts_with('/')
        || method_str == "CONNECT"
        || (method_str == "OPTIONS" && target == "*");
    if !as_is {
        v.extend_from_slice(b"http://h");
    }
    v.extend_from_slice(target.as_bytes());
    v.push(b' ');
    v.extend_from_slice(version.as_str().as_bytes());
    v.extend_from_slice(b"\r\n");
    let mut header = |name: &str, value: &[u8]| {
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(b": ");
        v.extend_from_slice(value);
        v.extend_from_slice(b"\r\n");
    };
    if let Some(h) = host {
        header("Host", h);
    }
    match body {
        BodyFraming::None => {}
        BodyFraming::Length(n) => header("Content-Length", n.to_string().as_bytes()),
        BodyFraming::Chunked => header("Transfer-Encoding", b"chunked"),
    }
    match (version, keep_alive) {
        (Version::Http11, false) => header("Connection", b"close"),
        (Version::Http10, true) => header("Connection", b"keep-alive"),
        _ => {}
    }
    if upgrade {
        // Only HTTP/1.1 parses as an upgrade; a second Connection field adds its token.
        header("Upgrade", b"websocket");
        header("Connection", b"upgrade");
    }
    for (name, value) in [
        ("If-None-Match", if_none_match),
        ("If-Modified-Since", if_modified_since),
        ("Range", range),
        ("If-Range", if_range),
        ("Accept-Encoding", accept_encoding),
        ("Authorization", authorization),
    ] {
        if let Some(value) = value {
            header(name, value);
        }
    }
    if expect_continue {
        header("Expect", b"100-continue");
    }
    v.extend_from_slice(b"\r\n");
    v
}
