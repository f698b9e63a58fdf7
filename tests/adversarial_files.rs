//! Static files under attack: redirects that point elsewhere, a directory swapped for a symlink
//! while it is being opened, and descriptor exhaustion through the file cache.

mod common;

use common::{Site, TestServer};

// --- 3. open redirect -------------------------------------------------------------------------

#[test]
fn directory_redirects_stay_on_this_origin() {
    let site = Site::new("adv-redirect");
    site.write("dir/index.html", b"<p>dir</p>\n");
    site.write("my dir/index.html", b"<p>spaced</p>\n");
    let server = TestServer::with(&site, |_| {});
    let mut c = server.client();
    // (request target, expected Location)
    let cases = [
        ("//evil.example/../dir", "/dir/"),
        ("//evil.example/%2e%2e/dir", "/dir/"),
        ("///evil.example/../dir", "/dir/"),
        ("//dir", "/dir/"),
        ("/./dir", "/dir/"),
        ("/x/../dir", "/dir/"),
        ("/%64ir", "/dir/"),
        ("/my%20dir", "/my%20dir/"),
        ("/dir?a=1&b=%2F", "/dir/?a=1&b=%2F"),
        ("//evil.example/../dir?x=//y", "/dir/?x=//y"),
    ];
    let mut failures = Vec::new();
    for (target, want) in cases {
        let r = c.get(target);
        let loc = r.header("location").unwrap_or("");
        if r.status != 301 || loc != want || loc.starts_with("//") {
            failures.push(format!(
                "{target}: {} Location {loc:?}, want 301 {want:?}",
                r.status
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Each Location, followed, serves the directory's index.
    assert_eq!(c.get("/my%20dir/").body, b"<p>spaced</p>\n");
}
