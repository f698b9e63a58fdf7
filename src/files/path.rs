//! From a request path to a path below the document root, or a refusal. Pure: no file system.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Malformed percent-encoding, NUL, a backslash, an encoded slash, or a `..` above the root.
    Bad,
}

/// Turns the path of a request target (no query) into a relative path of decoded segments.
///
/// Segments are split on the raw `/` before decoding, so an encoded slash can never make a new
/// segment; `.` and empty segments are dropped and `..` removes the segment before it (RFC 3986
/// §5.2.4), and climbing above the root is refused rather than clamped. No segment of the result
/// is empty, `.`, `..`, or holds `/`, `\` or NUL, so joining it to the root stays below the root.
pub fn resolve(path: &str) -> Result<PathBuf, PathError> {
    let segments = segments(path)?;
    Ok(segments.iter().map(|s| OsStr::from_bytes(s)).collect())
}

/// The decoded segments of a request path, dot segments applied (see [`resolve`]).
fn segments(path: &str) -> Result<Vec<Vec<u8>>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::Bad);
    }
    let mut segments: Vec<Vec<u8>> = Vec::new();
    for raw in path.split('/') {
        let seg = decode(raw.as_bytes())?;
        if seg.iter().any(|&b| b == 0 || b == b'/' || b == b'\\') {
            return Err(PathError::Bad);
        }
        match seg.as_slice() {
            b"" | b"." => {}
            b".." => {
                segments.pop().ok_or(PathError::Bad)?;
            }
            _ => segments.push(seg),
        }
    }
    Ok(segments)
}

/// True when `path` is already its own [`normalize_into`] form, so it can be used as is:
/// no `%`, `\` or NUL, no empty, `.` or `..` segment (a final empty one, the trailing slash
/// of a directory, is fine). A cheap scan, no allocation: the hot path's test.
pub fn is_normal(path: &str) -> bool {
    // One pass over the bytes (this runs on every request): each segment is judged at the `/`
    // that ends it, the end of the path counting as one.
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    let mut start = 1;
    for i in 1..=b.len() {
        match b.get(i).copied().unwrap_or(b'/') {
            b'%' | b'\\' | 0 => return false,
            b'/' => {
                let seg = &b[start..i];
                if seg == b"." || seg == b".." || (seg.is_empty() && i < b.len()) {
                    return false;
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    true
}

/// Writes the one spelling of what a request path names: `/`, the decoded segments joined by
/// `/`, and a final `/` when it names a directory. Every spelling of one file (`//a`, `/./a`,
/// `/x/../a`, `/%61`) gives the same bytes, so the file cache keys on them. A normal path
/// ([`is_normal`]) gives itself back.
pub fn normalize_into(path: &str, out: &mut Vec<u8>) -> Result<(), PathError> {
    let segments = segments(path)?;
    out.clear();
    for seg in &segments {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if segments.is_empty() || names_directory(path) {
        out.push(b'/');
    }
    Ok(())
}

/// Appends a normalised path (see [`normalize_into`]) to a Location header, percent-encoding
/// every byte that RFC 3986 does not allow as is in a path segment (unreserved, sub-delims,
/// `:` and `@`). `%` itself is encoded, so the result decodes to exactly these segments.
///
/// A normalised path has no empty segment, so what this writes never starts with `//` (which a
/// browser would take as another origin, a protocol-relative reference).
pub fn push_location(normal: &[u8], out: &mut Vec<u8>) {
    debug_assert!(normal.starts_with(b"/") && !normal.starts_with(b"//"));
    for &b in normal {
        if b == b'/' || b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// True when a request path names a directory: it ends in `/`, or in a `.` or `..` segment
/// (encoded or not), so that a file must not answer it (`/hello.txt/` is 404, as on disk).
pub fn names_directory(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or("");
    matches!(decode(last.as_bytes()).as_deref(), Ok(b"" | b"." | b".."))
}

/// Percent-decoding (RFC 3986 §2.1); a `%` not followed by two hex digits is an error.
pub fn decode(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return Err(PathError::Bad),
            }
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn normalizes() {
        assert_eq!(resolve("/").unwrap(), Path::new(""));
        assert_eq!(resolve("/a//b/./c/").unwrap(), Path::new("a/b/c"));
        assert_eq!(resolve("/a/../b").unwrap(), Path::new("b"));
        assert_eq!(resolve("/a%20b").unwrap(), Path::new("a b"));
        assert_eq!(resolve("/a/%2e/b").unwrap(), Path::new("a/b"));
    }

    #[test]
    fn directory_forms() {
        for p in ["/", "/a/", "/a/.", "/a/%2e", "/a/b/.."] {
            assert!(names_directory(p), "{p}");
        }
        for p in ["/a", "/a/b.txt", "/a/.b", "/a/..b"] {
            assert!(!names_directory(p), "{p}");
        }
    }

    #[test]
    fn refuses_escapes() {
        for p in [
            "/..",
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/.%2e/x",
            "/a%2f..%2f..%2fb",
            "/a%2fb",
            "/a%5cb",
            "/a\\b",
            "/a%00b",
            "/%",
            "/%zz",
            "/%2",
            "etc/passwd",
            "",
        ] {
            assert_eq!(resolve(p), Err(PathError::Bad), "{p}");
        }
    }

    #[test]
    fn normal_forms() {
        let key = |p: &str| {
            let mut out = Vec::new();
            normalize_into(p, &mut out).map(|()| String::from_utf8(out).unwrap())
        };
        for p in ["/", "/a", "/a/", "/a/b.txt", "/a/.b", "/a/..b", "/a b"] {
            assert!(is_normal(p), "{p}");
            assert_eq!(key(p).unwrap(), p);
        }
        for (p, k) in [
            ("//a", "/a"),
            ("/./a", "/a"),
            ("/x/../a", "/a"),
            ("/%61", "/a"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a/..", "/"),
            ("//", "/"),
            ("/a//b/", "/a/b/"),
            ("/%2561", "/%61"),
        ] {
            assert!(!is_normal(p), "{p}");
            assert_eq!(key(p).unwrap(), k, "{p}");
        }
        for p in ["", "a", "/a\\b", "/..", "/a%00"] {
            assert!(!is_normal(p), "{p}");
        }
        assert_eq!(key("/../a"), Err(PathError::Bad));
    }

    #[test]
    fn locations_stay_on_this_origin() {
        let loc = |p: &str| {
            let mut key = Vec::new();
            normalize_into(p, &mut key).unwrap();
            let mut out = Vec::new();
            push_location(&key, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(loc("//evil.example/../dir"), "/dir");
        assert_eq!(loc("///evil.example/%2e%2e/dir"), "/dir");
        assert_eq!(loc("/my%20dir"), "/my%20dir");
        assert_eq!(loc("/%2561%3f%23"), "/%2561%3F%23");
        assert_eq!(loc("/a:b@c;d=e"), "/a:b@c;d=e");
        assert_eq!(loc("/%C3%A9"), "/%C3%A9");
        // What a Location says resolves to what was asked for.
        for p in ["/%2561%3f%23", "/my%20dir", "/%C3%A9/%0d%0a"] {
            assert_eq!(resolve(&loc(p)), resolve(p), "{p}");
        }
    }
}
