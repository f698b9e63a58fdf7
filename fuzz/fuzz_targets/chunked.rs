//! The chunked decoder gives the same result however its input is split: the same data bytes, and
//! either the same error or the same consumed count and end state. Consumption never exceeds the
//! input, and stops short of a piece only once the body is done. A body it decodes completely is
//! also decoded, to the same data and the same end, by httparse's (more lenient) chunk-size parser
//! plus httparse's header parser for the trailers: the two must never disagree on where a chunk
//! or the body ends.
//!
//! Input: byte 0 = number of cuts (mod 16), then the cut descriptors of `common::split`, then the
//! chunked body (and whatever follows it).
#![no_main]

mod common;

use edgeserve::http::chunked::{ChunkError, Decoder};
use libfuzzer_sys::fuzz_target;

type Outcome = (Vec<u8>, Result<(usize, bool), ChunkError>);

fn decode<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut d = Decoder::default();
    let mut data = Vec::new();
    let mut used = 0;
    for piece in pieces {
        match d.feed(piece, |b| data.extend_from_slice(b)) {
            Ok(n) => {
                assert!(n <= piece.len(), "consumed {n} of {}", piece.len());
                assert!(n == piece.len() || d.is_done(), "stopped early while not done");
                used += n;
            }
            Err(e) => return (data, Err(e)),
        }
    }
    assert!(data.len() <= used, "more data than input");
    (data, Ok((used, d.is_done())))
}

/// httparse reads the size lines and the trailer section; the data and CRLFs are checked here.
fn reference(input: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut pos = 0;
    let mut data = Vec::new();
    loop {
        let Ok(httparse::Status::Complete((n, size))) = httparse::parse_chunk_size(&input[pos..])
        else {
            return None;
        };
        pos += n;
        if size == 0 {
            break;
        }
        let end = pos.checked_add(usize::try_from(size).ok()?)?;
        if input.get(end..end.checked_add(2)?)? != b"\r\n" {
            return None;
        }
        data.extend_from_slice(&input[pos..end]);
        pos = end + 2;
    }
    let mut headers = vec![httparse::EMPTY_HEADER; 4096];
    match httparse::parse_headers(&input[pos..], &mut headers) {
        Ok(httparse::Status::Complete((n, _))) => Some((data, pos + n)),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else { return };
    let Some((stream, pieces)) = common::split(usize::from(k % 16), rest) else { return };
    let whole = decode([stream]);
    let split = decode(pieces.iter().map(|&(p, _)| p));
    assert_eq!(whole, split, "pieces {:?}", pieces.iter().map(|p| p.0.len()).collect::<Vec<_>>());
    if let (data, Ok((used, true))) = whole {
        assert_eq!(reference(stream), Some((data, used)), "httparse disagrees");
    }
});
