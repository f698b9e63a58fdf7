//! `files::range::parse` against a small model of RFC 9110 §14.1.2 single byte ranges: a range it
//! serves lies inside the representation (start <= end < len) and is the one the model computes;
//! Unsatisfiable only for a syntactically valid range; Ignore only for what is not a single valid
//! range (or has a number too long to bother with, which RFC 9110 lets a server ignore).
//!
//! Input: byte 0 < 0xf0 is the length itself; otherwise the next 8 bytes (little-endian) are.
//! The rest is the header value.
#![no_main]

use edgeserve::files::range::{RangeSpec, parse};
use libfuzzer_sys::fuzz_target;

#[derive(Debug)]
enum Model {
    /// first-pos "-" [ last-pos ]
    Int(u128, Option<u128>),
    /// "-" suffix-length
    Suffix(u128),
    Invalid,
}

/// `bytes=` OWS spec OWS with one range-spec; numbers of any length (saturating).
fn model(value: &[u8]) -> (Model, bool) {
    let Some(spec) = value.strip_prefix(b"bytes=") else { return (Model::Invalid, false) };
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = spec.iter().position(|b| !ows(b)).unwrap_or(spec.len());
    let end = spec.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    let spec = &spec[start..end];
    let Some(dash) = spec.iter().position(|&b| b == b'-') else { return (Model::Invalid, false) };
    let (a, b) = (&spec[..dash], &spec[dash + 1..]);
    let num = |s: &[u8]| {
        (!s.is_empty() && s.iter().all(u8::is_ascii_digit)).then(|| {
            s.iter().fold(0u128, |n, &d| n.saturating_mul(10).saturating_add(u128::from(d - b'0')))
        })
    };
    let long = a.len() > 19 || b.len() > 19;
    let m = match (num(a), num(b)) {
        (None, Some(n)) if a.is_empty() => Model::Suffix(n),
        (Some(f), None) if b.is_empty() => Model::Int(f, None),
        (Some(f), Some(l)) if f <= l => Model::Int(f, Some(l)),
        _ => Model::Invalid,
    };
    (m, long)
}

fuzz_target!(|data: &[u8]| {
    let Some((&tag, rest)) = data.split_first() else { return };
    let (len, value) = if tag < 0xf0 {
        (u64::from(tag), rest)
    } else {
        let (n, value) = rest.split_at(rest.len().min(8));
        let mut b = [0u8; 8];
        b[..n.len()].copy_from_slice(n);
        (u64::from_le_bytes(b), value)
    };
    let got = parse(value, len);
    let (m, long) = model(value);
    let l = u128::from(len);
    let want = match m {
        Model::Invalid => RangeSpec::Ignore,
        _ if long => {
            // A server may ignore Range; a number of 20+ digits is a fine reason.
            if got == RangeSpec::Ignore {
                return;
            }
            panic!("{:?} (len {len}) -> {got:?} with a 20+ digit number", String::from_utf8_lossy(value));
        }
        Model::Suffix(n) if n == 0 || l == 0 => RangeSpec::Unsatisfiable,
        Model::Suffix(n) => RangeSpec::Bytes { start: (l - n.min(l)) as u64, end: len - 1 },
        Model::Int(f, _) if f >= l => RangeSpec::Unsatisfiable,
        Model::Int(f, last) => RangeSpec::Bytes {
            start: f as u64,
            end: last.map_or(l - 1, |x| x.min(l - 1)) as u64,
        },
    };
    if let RangeSpec::Bytes { start, end } = got {
        assert!(start <= end && end < len, "{got:?} for len {len}");
    }
    assert_eq!(got, want, "{:?} (len {len}), model {m:?}", String::from_utf8_lossy(value));
});
