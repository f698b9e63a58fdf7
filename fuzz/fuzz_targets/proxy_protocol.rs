//! `proxy_protocol::parse`, the PROXY v1/v2 header read before a connection's first request:
//! it never reads past the header it reports (the same header from exactly its bytes), every
//! strict prefix of an accepted header asks for more, a refusal stays a refusal whatever
//! follows, nothing waits for more than the size limits allow, and a v1 source address is the
//! one written in the line.
#![no_main]

use edgeserve::proxy_protocol::{MAX_V1, MAX_V2, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let got = parse(data);
    match got {
        Ok(Some(h)) => {
            assert!(h.len <= data.len() && h.len <= MAX_V2, "{h:?}");
            assert_eq!(parse(&data[..h.len]), Ok(Some(h)));
            for cut in [0, 1, h.len / 2, h.len - 1] {
                assert_eq!(parse(&data[..cut]), Ok(None), "prefix {cut} of {h:?}");
            }
            if data.starts_with(b"PROXY ") {
                assert!(h.len <= MAX_V1);
                if let Some(src) = h.source {
                    let line = String::from_utf8_lossy(&data[..h.len]);
                    let words: Vec<&str> = line.trim_end().split(' ').collect();
                    assert_eq!(words[2].parse::<std::net::IpAddr>().ok(), Some(src.ip()), "{line}");
                    assert_eq!(words[4], src.port().to_string(), "{line}");
                }
            }
        }
        Ok(None) => assert!(data.len() < MAX_V2, "waits for more after {} bytes", data.len()),
        Err(e) => {
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\0\x21\x11");
            assert!(parse(&more).is_err(), "{e:?} became valid with more bytes");
        }
    }
});
