//! Which requests go upstream: longest prefix on the normalised path, refusing spellings that
//! an upstream could resolve differently from us.

use crate::config::Route;

/// Where a request path goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteMatch {
    /// No proxy route: the handler (static files) answers.
    Local,
    /// Forwarded on this route, with the target as sent.
    Forward(usize),
    /// A path that touches a proxy prefix only in some spelling (dot segments, encoded slashes,
    /// an encoded prefix): 400, since the upstream might resolve it differently from us.
    Refuse,
}

/// Routes `path` (the target's path, undecoded). Prefixes are compared with the normalised path
/// (the static files' rules: split on raw `/`, percent-decoded, `.` and empty segments dropped,
/// `..` resolved), so an odd spelling can neither leave a prefix on its way upstream nor dodge
/// one and be served from files. A path is forwarded only when the spelling sent matches the
/// same route and holds nothing an upstream could resolve otherwise; else it is refused.
pub fn route_for(routes: &[Route], path: &str) -> RouteMatch {
    if routes.is_empty() {
        return RouteMatch::Local;
    }
    let raw = longest_prefix(routes, path.as_bytes());
    if is_plain(path) {
        // Already normal (the common case): no allocation.
        return raw.map_or(RouteMatch::Local, RouteMatch::Forward);
    }
    let Some(normal) = normalise(path) else {
        // Undecodable, an encoded separator, or above the root: the files refuse it too.
        return if raw.is_some() {
            RouteMatch::Refuse
        } else {
            RouteMatch::Local
        };
    };
    match (raw, longest_prefix(routes, &normal)) {
        (None, None) => RouteMatch::Local,
        (Some(a), Some(b)) if a == b && !has_dot_segment(path) => RouteMatch::Forward(a),
        _ => RouteMatch::Refuse,
    }
}

/// The route whose prefix is the longest that starts `path`.
fn longest_prefix(routes: &[Route], path: &[u8]) -> Option<usize> {
    routes
        .iter()
        .enumerate()
        .filter(|(_, r)| path.starts_with(r.prefix.as_bytes()))
        .max_by_key(|(_, r)| r.prefix.len())
        .map(|(i, _)| i)
}

/// True when `path` is its own normal form: no percent-encoding, backslash, empty segment
/// (`//`) or dot segment. One pass over the bytes: without `%`, a dot segment can only be
/// spelled `.` or `..`.
fn is_plain(path: &str) -> bool {
    let path = path.as_bytes();
    let dots = |seg: &[u8]| seg == b"." || seg == b"..";
    let mut seg_start = 0;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' | b'\\' => return false,
            b'/' => {
                let seg = &path[seg_start..i];
                if i > 0 && (seg.is_empty() || dots(seg)) {
                    return false;
                }
                seg_start = i + 1;
            }
            _ => {}
        }
    }
    !dots(&path[seg_start..])
}

/// A `.` or `..` segment, plain or percent-encoded (`%2e`, `.%2E`, ...).
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| {
        let seg = seg.as_bytes();
        if seg.len() > 6 || memchr::memchr2(b'.', b'%', seg).is_none() {
            return false;
        }
        let mut dots = 0;
        let mut i = 0;
        while i < seg.len() {
            if seg[i] == b'.' {
                i += 1;
            } else if seg[i..].len() >= 3 && seg[i + 1..i + 3].eq_ignore_ascii_case(b"2e") {
                i += 3;
            } else {
                return false;
            }
            dots += 1;
        }
        (1..=2).contains(&dots)
    })
}

/// The normal form of `path` as the static files resolve it (`files::path::resolve`), written as
/// a path: `/` plus the decoded segments, with a trailing `/` when the last segment was empty, `.`
/// or `..` (RFC 3986 §5.2.4). `None` where the files refuse the path: malformed `%`, an encoded
/// `/`, a `\` or NUL, or `..` above the root.
fn normalise(path: &str) -> Option<Vec<u8>> {
    let rest = path.strip_prefix('/')?;
    let mut out = Vec::with_capacity(path.len());
    let mut dir = false;
    for raw in rest.split('/') {
        let seg = crate::files::path::decode(raw.as_bytes()).ok()?;
        if seg.iter().any(|&b| b == 0 || b == b'/' || b == b'\\') {
            return None;
        }
        dir = matches!(seg.as_slice(), b"" | b"." | b"..");
        match seg.as_slice() {
            b"" | b"." => {}
            b".." => {
                let cut = memchr::memrchr(b'/', &out)?;
                out.truncate(cut);
            }
            _ => {
                out.push(b'/');
                out.extend_from_slice(&seg);
            }
        }
    }
    if dir || out.is_empty() {
        out.push(b'/');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass check agrees with its definition on every path over a small alphabet.
    #[test]
    fn is_plain_is_its_definition() {
        fn by_definition(path: &str) -> bool {
            !path.contains(['%', '\\']) && !path.contains("//") && !has_dot_segment(path)
        }
        let alphabet = ['/', '.', 'a', '%', '\\'];
        let mut level = vec![String::new()];
        let mut checked = 0;
        for _ in 0..6 {
            level = level
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            for p in &level {
                assert_eq!(is_plain(p), by_definition(p), "{p:?}");
                checked += 1;
            }
        }
        assert!(checked > 10_000);
    }

    fn routes() -> Vec<Route> {
        ["/api/", "/api/v2/", "/x"]
            .iter()
            .map(|p| Route {
                prefix: p.to_string(),
                upstreams: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn plain_paths_route_on_the_prefix() {
        let r = routes();
        assert_eq!(route_for(&r, "/api/a"), RouteMatch::Forward(0));
        assert_eq!(route_for(&r, "/api/v2/a"), RouteMatch::Forward(1));
        assert_eq!(route_for(&r, "/xyz"), RouteMatch::Forward(2));
        assert_eq!(route_for(&r, "/api"), RouteMatch::Local);
        assert_eq!(route_for(&r, "/a.b/c..d/.e"), RouteMatch::Local);
        assert_eq!(route_for(&[], "/api/../x"), RouteMatch::Local);
        assert!(is_plain("/api/a.b/..c/.d/e.."));
    }

    #[test]
    fn encoded_but_normal_paths_are_forwarded_as_sent() {
        let r = routes();
        assert_eq!(route_for(&r, "/api/a%20b"), RouteMatch::Forward(0));
        assert_eq!(route_for(&r, "/api//a"), RouteMatch::Forward(0));
        assert_eq!(route_for(&r, "/api/a%2ejson"), RouteMatch::Forward(0));
        assert_eq!(route_for(&r, "/static/a%20b"), RouteMatch::Local);
        assert_eq!(route_for(&r, "/static/../a"), RouteMatch::Local);
    }

    #[test]
    fn odd_spellings_that_touch_a_prefix_are_refused() {
        let r = routes();
        for p in [
            "/api/../admin",
            "/api/%2e%2e/admin",
            "/api/.%2E/admin",
            "/api/..%2fadmin",
            "/api/..%5cadmin",
            "/api/..\\admin",
            "/api/./a",
            "/api/a/..",
            "/api/v2/../a",
            "/api/v%32/a",
            "/static/../api/a",
            "/%61pi/a",
            "//api/a",
            "/api/%zz",
            "/api/%00",
            "/api/../../a",
        ] {
            assert_eq!(route_for(&r, p), RouteMatch::Refuse, "{p}");
        }
    }

    #[test]
    fn normalises_as_the_files_do() {
        for (p, want) in [
            ("/", Some("/")),
            ("/a//b/./c/", Some("/a/b/c/")),
            ("/a/../b", Some("/b")),
            ("/a/b/..", Some("/a/")),
            ("/a/%2e", Some("/a/")),
            ("/a%20b", Some("/a b")),
            ("/..", None),
            ("/a%2fb", None),
            ("/a%5cb", None),
            ("/%", None),
            ("a", None),
        ] {
            let got = normalise(p);
            assert_eq!(got.as_deref(), want.map(str::as_bytes), "{p}");
            assert_eq!(got.is_some(), crate::files::path::resolve(p).is_ok(), "{p}");
        }
    }
}
