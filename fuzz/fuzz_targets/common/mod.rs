//! Input layout shared by the targets that compare a whole stream with the same stream in pieces.
//!
//! `count` cut descriptors (little-endian u16 each) come first; the rest of the input is the
//! stream. Descriptor `d` makes the next piece `(d & 0x7fff) % (remaining + 1)` bytes long and
//! carries the flag `d >> 15`; whatever is left after the last descriptor is one final piece
//! (flag set). Pieces may be empty: an empty read is a case too.

/// Splits `data` into `(stream, pieces)`; `None` when it is too short for its descriptors.
pub fn split(count: usize, data: &[u8]) -> Option<(&[u8], Vec<(&[u8], bool)>)> {
    let (descs, stream) = data.split_at_checked(count * 2)?;
    let mut pieces = Vec::with_capacity(count + 1);
    let mut rest = stream;
    for d in descs.chunks_exact(2) {
        let d = u16::from_le_bytes([d[0], d[1]]);
        let n = usize::from(d & 0x7fff) % (rest.len() + 1);
        let (piece, tail) = rest.split_at(n);
        pieces.push((piece, d >> 15 == 1));
        rest = tail;
    }
    pieces.push((rest, true));
    Some((stream, pieces))
}
