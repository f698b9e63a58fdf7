//! The `Range` header for one byte range (RFC 9110 §14.1.2).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// Serve bytes `start..=end` (206).
    Bytes { start: u64, end: u64 },
    /// A valid range that starts past the end of the representation (416).
    Unsatisfiable,
    /// Not a single byte range we understand: serve the whole representation (200), as RFC 9110
    /// lets a server ignore Range.
    Ignore,
}

/// Parses `value` for a representation of `len` bytes.
pub fn parse(value: &[u8], len: u64) -> RangeSpec {
    let Some(spec) = value.strip_prefix(b"bytes=") else {
        return RangeSpec::Ignore;
    };
    let spec = super::super::http::request::trim(spec);
    if spec.contains(&b',') {
        // Several ranges would need multipart/byteranges; a full answer is allowed.
        return RangeSpec::Ignore;
    }
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return RangeSpec::Ignore;
    };
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    match (number(first), number(last)) {
        // suffix range: the last N bytes
        (None, Some(n)) if first.is_empty() => {
            if n == 0 || len == 0 {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes {
                    start: len.saturating_sub(n),
                    end: len - 1,
                }
            }
        }
        (Some(start), None) if last.is_empty() => {
            if start >= len {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes {
                    start,
                    end: len - 1,
                }
            }
        }
        (Some(start), Some(end)) if start <= end => {
            if start >= len {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Bytes {
                    start,
                    end: end.min(len - 1),
                }
            }
        }
        _ => RangeSpec::Ignore,
    }
}

fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::RangeSpec::*;
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse(b"bytes=0-4", 10), Bytes { start: 0, end: 4 });
        assert_eq!(parse(b"bytes=5-", 10), Bytes { start: 5, end: 9 });
        assert_eq!(parse(b"bytes=-3", 10), Bytes { start: 7, end: 9 });
        assert_eq!(parse(b"bytes=-30", 10), Bytes { start: 0, end: 9 });
        assert_eq!(parse(b"bytes=8-100", 10), Bytes { start: 8, end: 9 });
        assert_eq!(parse(b"bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse(b"bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse(b"bytes=0-0", 0), Unsatisfiable);
        for v in [
            &b"bytes=5-1"[..],
            b"bytes=0-1,3-4",
            b"items=0-1",
            b"bytes=a-b",
            b"bytes=-",
            b"bytes=1",
        ] {
            assert_eq!(parse(v, 10), Ignore, "{:?}", String::from_utf8_lossy(v));
        }
    }
}
