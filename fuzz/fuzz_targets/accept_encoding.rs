//! `http::accept::choose` against a model written another way (each candidate's weight found by
//! its own scan of the list, q-values read as decimal strings): the same choice for every value
//! and set of siblings. Also: a coding chosen is one that exists and that the client gave a
//! non-zero weight; a sibling the client does not take changes nothing; it never panics.
//!
//! Input: byte 0's low three bits are the siblings that exist (br, zstd, gzip), bit 3 set means
//! no Accept-Encoding field at all; the rest is the field's value.
#![no_main]

use edgeserve::http::accept::{Choice, Coding, Codings, choose};
use libfuzzer_sys::fuzz_target;

/// The weight the list gives `names` (thousandths), if some element names one of them; the
/// highest if several do. Malformed elements count for nothing.
fn weight(value: &[u8], names: &[&str]) -> Option<u32> {
    let mut best = None;
    for element in value.split(|&b| b == b',') {
        let mut parts = element.split(|&b| b == b';');
        let name = trim(parts.next().unwrap_or_default());
        let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
        if name.is_empty() || !name.iter().all(tchar) {
            continue;
        }
        let mut q = Some(1000);
        for p in parts {
            let p = trim(p);
            let Some(eq) = p.iter().position(|&b| b == b'=') else {
                q = None;
                break;
            };
            if trim(&p[..eq]).eq_ignore_ascii_case(b"q") {
                q = q.and(qvalue(trim(&p[eq + 1..])));
            }
        }
        let Some(q) = q else { continue };
        if names.iter().any(|n| name.eq_ignore_ascii_case(n.as_bytes())) {
            best = Some(best.map_or(q, |b: u32| b.max(q)));
        }
    }
    best
}

fn qvalue(v: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(v).ok()?;
    let ok = match s.as_bytes() {
        [b'0'] | [b'1'] => true,
        [b'0', b'.', rest @ ..] => rest.len() <= 3 && rest.iter().all(u8::is_ascii_digit),
        [b'1', b'.', rest @ ..] => rest.len() <= 3 && rest.iter().all(|&b| b == b'0'),
        _ => false,
    };
    if !ok {
        return None;
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = format!("{frac:0<3}");
    Some(int.parse::<u32>().ok()? * 1000 + frac.parse::<u32>().ok()?)
}

fn trim(s: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    &s[start..end]
}

fn model(value: Option<&[u8]>, available: &[Coding]) -> Choice {
    let Some(value) = value else { return Choice::Identity };
    let star = weight(value, &["*"]);
    // Identity: named, else `*`, else acceptable after everything else (weight 1 of 1000).
    let mut best = (weight(value, &["identity"]).or(star).unwrap_or(1), Choice::Identity);
    for c in [Coding::Gzip, Coding::Zstd, Coding::Br] {
        if !available.contains(&c) {
            continue;
        }
        let names: &[&str] = match c {
            Coding::Gzip => &["gzip", "x-gzip"],
            Coding::Zstd => &["zstd"],
            Coding::Br => &["br"],
        };
        let q = weight(value, names).or(star).unwrap_or(0);
        if q > 0 && q >= best.0 {
            best = (q, Choice::Coded(c));
        }
    }
    if best.0 == 0 { Choice::None } else { best.1 }
}

fuzz_target!(|data: &[u8]| {
    let Some((&tag, value)) = data.split_first() else { return };
    let field = (tag & 8 == 0).then_some(value);
    let available: Vec<Coding> =
        Coding::ALL.into_iter().filter(|&c| tag & (1 << c as u8) != 0).collect();
    let set = available.iter().fold(Codings::default(), |s, &c| s.with(c));
    let got = choose(field, set);
    assert_eq!(got, model(field, &available), "{:?} with {available:?}", field.map(String::from_utf8_lossy));
    if let Choice::Coded(c) = got {
        assert!(set.has(c));
        // Taking away a sibling that was not chosen changes nothing.
        for other in available.iter().filter(|&&o| o != c) {
            let fewer = available.iter().filter(|&x| x != other).fold(Codings::default(), |s, &x| s.with(x));
            assert_eq!(choose(field, fewer), got);
        }
    }
});
