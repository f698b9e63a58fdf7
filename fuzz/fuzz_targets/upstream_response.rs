//! Upstream response heads: `proxy::message::response_head` never panics, and a head it accepts
//! is rewritten into one that tells the client exactly the framing the relay will use. The
//! client head (plus the `Connection` line the relay adds and the final CRLF; a 101 has its own
//! `Connection: upgrade`) parses with httparse as a response with the same status, holds no
//! `Connection` of the upstream's, and its
//! Content-Length / Transfer-Encoding agree with the returned `Framing` (for an HTTP/1.0 client,
//! `dechunk`, a chunked body is decoded and runs to the close, so no Transfer-Encoding is left).
//!
//! Input: raw bytes, as read from an upstream. Each is tried with GET and HEAD, with and without
//! `dechunk`.
#![no_main]

use edgeserve::http::request::Method;
use edgeserve::proxy::message::{Framing, response_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for method in [Method::Get, Method::Head] {
        for dechunk in [false, true] {
            check(data, method, dechunk);
        }
    }
});

fn check(data: &[u8], method: Method, dechunk: bool) {
    let Ok(Some((head, n))) = response_head(data, method, 8192, dechunk) else {
        return;
    };
    assert!(n <= data.len() && n > 0);
    // A 101 says `Connection: upgrade` itself (the relay hands it to a tunnel as it is);
    // every other head gets the relay's own Connection line.
    let switching = head.status == 101;
    let mut client = head.head.clone();
    if switching {
        client.extend_from_slice(b"\r\n");
    } else {
        client.extend_from_slice(b"Connection: keep-alive\r\n\r\n");
    }
    let mut headers = [httparse::EMPTY_HEADER; 160];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&client) {
        Ok(httparse::Status::Complete(len)) => assert_eq!(len, client.len()),
        other => panic!(
            "rewritten head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(&client)
        ),
    }
    assert_eq!(resp.code, Some(head.status));
    assert_eq!(resp.version, Some(1));
    let field = |name: &str| {
        resp.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect::<Vec<_>>()
    };
    let ours: &[u8] = if switching { b"upgrade" } else { b"keep-alive" };
    assert_eq!(field("connection"), [ours], "upstream Connection leaked");
    let lengths: Vec<u64> = field("content-length")
        .iter()
        .map(|v| std::str::from_utf8(v).unwrap().parse().unwrap())
        .collect();
    let codings: Vec<Vec<u8>> = field("transfer-encoding")
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|c| c.trim_ascii().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    let te = !field("transfer-encoding").is_empty();
    let last_chunked = codings.last().is_some_and(|c| c == b"chunked");
    let what = String::from_utf8_lossy(&client);
    if dechunk {
        assert!(!te, "Transfer-Encoding to an HTTP/1.0 client: {what}");
    }
    match head.framing {
        Framing::None => assert!(
            method == Method::Head || head.status < 200 || head.status == 204 || head.status == 304,
            "no body for a {} answer to {method:?}: {what}",
            head.status
        ),
        Framing::Length(k) => {
            assert!(!te, "{what}");
            assert!(!lengths.is_empty() && lengths.iter().all(|&l| l == k), "{what}");
        }
        // Decoded on the way for an HTTP/1.0 client: close-delimited for it.
        Framing::Chunked if dechunk => assert!(lengths.is_empty(), "{what}"),
        Framing::Chunked => assert!(last_chunked && lengths.is_empty(), "{what}"),
        Framing::Close => {
            assert!(lengths.is_empty() && !last_chunked, "{what}");
            assert!(!head.reusable);
        }
    }
}
