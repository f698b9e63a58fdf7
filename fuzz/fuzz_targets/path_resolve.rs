//! `files::path::resolve`: whatever it accepts is a relative path of plain segments (none empty,
//! `.`, `..`, or holding `/`, `\` or NUL) that stays below the root once joined to it, and
//! percent-encoding its segments again resolves to the same path. The file cache's key agrees:
//! `normalize_into` gives a normal path (`is_normal`), a normal path is its own key, and every
//! accepted path's key names the same segments. No file system access.
//!
//! Input: the request path (bytes taken as UTF-8, lossily; real targets are ASCII).
#![no_main]

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use edgeserve::files::path::{is_normal, normalize_into, resolve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    let mut key = Vec::new();
    let keyed = normalize_into(&path, &mut key).is_ok();
    assert_eq!(keyed, resolve(&path).is_ok(), "{path:?}: the cache key and resolve disagree");
    if is_normal(&path) {
        assert_eq!(key, path.as_bytes(), "{path:?} is normal but keys as {key:?}");
    }
    // (Decoded segments may be any bytes; `is_normal` judges text.)
    if keyed && let Ok(key) = String::from_utf8(key.clone()) {
        assert!(
            is_normal(&key) || key.contains('%') || key.contains('\\'),
            "{path:?} keys as {key:?}, not normal"
        );
    }
    let Ok(rel) = resolve(&path) else { return };
    assert!(path.starts_with('/'), "accepted a path without a leading /");
    assert!(rel.is_relative(), "{rel:?}");
    let mut segments: Vec<&[u8]> = Vec::new();
    for c in rel.components() {
        let Component::Normal(seg) = c else { panic!("{path:?} -> {rel:?}: component {c:?}") };
        let seg = seg.as_bytes();
        assert!(
            !seg.is_empty() && seg != b"." && seg != b"..",
            "{path:?} -> {rel:?}: segment {seg:?}"
        );
        assert!(
            !seg.iter().any(|&b| b == b'/' || b == b'\\' || b == 0),
            "{path:?} -> {rel:?}: segment {seg:?}"
        );
        segments.push(seg);
    }
    // The segments are all there is: nothing was split or merged when they became a path.
    assert_eq!(rel.as_os_str().as_bytes(), segments.join(&b'/').as_slice());

    let root = Path::new("/srv/root");
    let joined = normalize(&root.join(&rel));
    assert!(joined.starts_with(root), "{path:?} -> {rel:?} escapes to {joined:?}");
    assert_eq!(joined, root.join(&rel), "{path:?} -> {rel:?} is not normal");

    // Round trip: the canonical spelling of the result resolves to the result.
    let mut again = String::from("/");
    for (i, seg) in segments.iter().enumerate() {
        if i > 0 {
            again.push('/');
        }
        for &b in *seg {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                again.push(b as char);
            } else {
                again.push_str(&format!("%{b:02X}"));
            }
        }
    }
    assert_eq!(resolve(&again).as_deref(), Ok(rel.as_path()), "{path:?} respelled {again:?}");
    assert_eq!(resolve(&(again + "/")).as_deref(), Ok(rel.as_path()));
});

/// Lexical normalization, as an attacker-friendly OS would do it: `..` pops, `.` vanishes.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    out
}

