//! The credentials of an `Authorization: Basic` field (RFC 7617), without I/O, and the base64
//! codecs the password hashes need. Pure functions of bytes: a fuzz target drives [`parse`].

/// A user id and password as the client sent them (any bytes; RFC 7617 suggests UTF-8).
#[derive(Debug, PartialEq, Eq)]
pub struct Credentials {
    /// `user-id ":" password`, decoded.
    decoded: Vec<u8>,
    colon: usize,
}

impl Credentials {
    pub fn user(&self) -> &[u8] {
        &self.decoded[..self.colon]
    }

    pub fn password(&self) -> &[u8] {
        &self.decoded[self.colon + 1..]
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        // Not a guarantee (copies may exist), but the buffer does not linger with a password.
        self.decoded.fill(0);
    }
}

/// Why a field gave no credentials. Every case is answered 401 with the challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Garbled {
    /// Another scheme (Bearer, Digest, ...), or no scheme.
    NotBasic,
    /// `Basic` without a token, a token that is not base64, or a decoded value without `:`.
    Malformed,
}

/// The standard base64 alphabet (RFC 4648 §4).
pub const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Parses the value of an Authorization field: `Basic` (any case), one or more spaces, a token68
/// in standard base64 (padding optional, but only at the end), optional trailing whitespace.
pub fn parse(value: &[u8]) -> Result<Credentials, Garbled> {
    let value = trim_end(value);
    let scheme_end = value.iter().position(|&b| b == b' ').unwrap_or(value.len());
    if !value[..scheme_end].eq_ignore_ascii_case(b"basic") {
        return Err(Garbled::NotBasic);
    }
    let token = trim_start(&value[scheme_end..]);
    let unpadded = match token.iter().position(|&b| b == b'=') {
        Some(i) if token[i..].iter().all(|&b| b == b'=') && token.len().is_multiple_of(4) => {
            &token[..i]
        }
        Some(_) => return Err(Garbled::Malformed),
        None => token,
    };
    if unpadded.is_empty() || token.len() - unpadded.len() > 2 {
        return Err(Garbled::Malformed);
    }
    let decoded = decode(unpadded, STANDARD).ok_or(Garbled::Malformed)?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(Garbled::Malformed)?;
    Ok(Credentials { decoded, colon })
}

fn trim_start(b: &[u8]) -> &[u8] {
    let i = b
        .iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(b.len());
    &b[i..]
}

fn trim_end(b: &[u8]) -> &[u8] {
    let i = b
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(0, |i| i + 1);
    &b[..i]
}

/// The value of each character of `alphabet`, 0xff for others.
const fn reverse(alphabet: &[u8; 64]) -> [u8; 256] {
    let mut t = [0xff; 256];
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
}

/// Decodes unpadded base64 over `alphabet`, most significant bits first (RFC 4648's order, also
/// bcrypt's). Bits left over after the last whole byte are dropped; a length that leaves a lone
/// character (6 bits, no byte) or a character outside the alphabet is an error.
pub fn decode(input: &[u8], alphabet: &[u8; 64]) -> Option<Vec<u8>> {
    let table = reverse(alphabet);
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in input {
        let v = table[usize::from(c)];
        if v == 0xff {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Encodes without padding, most significant bits first (bcrypt's hash part).
pub fn encode_be(input: &[u8], alphabet: &[u8; 64], out: &mut Vec<u8>) {
    for chunk in input.chunks(3) {
        let mut w = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            w |= u32::from(b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(alphabet[((w >> (18 - 6 * i)) & 63) as usize]);
        }
    }
}

/// Encodes without padding, least significant bits first: the byte order of crypt(3)'s
/// SHA-crypt hashes (after their transposition).
pub fn encode_le(input: &[u8], alphabet: &[u8; 64], out: &mut Vec<u8>) {
    for chunk in input.chunks(3) {
        let mut w = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            w |= u32::from(b) << (8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(alphabet[((w >> (6 * i)) & 63) as usize]);
        }
    }
}

/// Equality whose time depends on the lengths only, not on where the bytes differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(v: &str) -> Result<(String, String), Garbled> {
        parse(v.as_bytes()).map(|c| {
            (
                String::from_utf8_lossy(c.user()).into_owned(),
                String::from_utf8_lossy(c.password()).into_owned(),
            )
        })
    }

    #[test]
    fn basic_credentials() {
        // RFC 7617 §2's example.
        let ok = |u: &str, p: &str| Ok((u.to_string(), p.to_string()));
        assert_eq!(
            creds("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            ok("Aladdin", "open sesame")
        );
        assert_eq!(
            creds("basic  QWxhZGRpbjpvcGVuIHNlc2FtZQ "),
            ok("Aladdin", "open sesame")
        );
        assert_eq!(
            creds("BASIC QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            ok("Aladdin", "open sesame")
        );
        // "a:b:c": the password may hold colons; "a:" an empty password; ":" an empty user.
        assert_eq!(creds("Basic YTpiOmM="), ok("a", "b:c"));
        assert_eq!(creds("Basic YTo="), ok("a", ""));
        assert_eq!(creds("Basic Og=="), ok("", ""));
    }

    #[test]
    fn garbled_fields() {
        for (v, want) in [
            ("", Garbled::NotBasic),
            ("Bearer abc", Garbled::NotBasic),
            ("Basicx YTpi", Garbled::NotBasic),
            ("Basic", Garbled::Malformed),
            ("Basic ", Garbled::Malformed),
            ("Basic ====", Garbled::Malformed),
            ("Basic YWJj", Garbled::Malformed), // "abc": no colon
            ("Basic YTpi!", Garbled::Malformed),
            ("Basic YT=pi", Garbled::Malformed),
            ("Basic YTpiY", Garbled::Malformed), // a lone sixth of a byte
            ("Basic YTo===", Garbled::Malformed),
            ("Basic YTo= x", Garbled::Malformed),
        ] {
            assert_eq!(creds(v), Err(want), "{v:?}");
        }
    }

    #[test]
    fn codecs_round_trip() {
        let data: Vec<u8> = (0..=255).collect();
        for n in 0..40 {
            let mut enc = Vec::new();
            encode_be(&data[..n], STANDARD, &mut enc);
            assert_eq!(decode(&enc, STANDARD).unwrap(), &data[..n]);
        }
        let mut enc = Vec::new();
        encode_be(b"Aladdin:open sesame", STANDARD, &mut enc);
        assert_eq!(enc, b"QWxhZGRpbjpvcGVuIHNlc2FtZQ");
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}
