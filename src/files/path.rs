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
    Ok(segments.iter().map(|s| OsStr::from_bytes(s)).collect())
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
}
