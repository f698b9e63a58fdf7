//! Serving a device's web interface: precompressed siblings (`--precompressed`), error pages
//! (`--error-page`), extra headers (`--header`) and directory listings (`--dir-listing`).
//! Real sockets, every model (`EDGESERVE_TEST_MODEL`); curl where a real client's decoding
//! matters.

mod common;
#[cfg(feature = "proxy")]
#[path = "common/upstream.rs"]
mod upstream;

use std::os::unix::fs::symlink;
use std::process::Command;
use std::time::Duration;

use common::{BinaryServer, Response, SECRET, Site, TestServer, find, run_binary};

const APP: &[u8] = b"console.log('the original, uncompressed script');\n";

/// A valid gzip member holding `data` in a stored deflate block (no compression library needed:
/// a real client must decode it all the same).
fn gzip(data: &[u8]) -> Vec<u8> {
    assert!(data.len() < 65536);
    let mut v = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let len = data.len() as u16;
    v.push(1); // BFINAL, stored
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(&(!len).to_le_bytes());
    v.extend_from_slice(data);
    v.extend_from_slice(&crc32(data).to_le_bytes());
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid brotli stream holding `data` in one uncompressed meta-block (RFC 7932 §9.2).
fn brotli(data: &[u8]) -> Vec<u8> {
    assert!(!data.is_empty() && data.len() <= 65536);
    // WBITS=16 (one 0 bit), ISLAST=0, MNIBBLES=4 (00), MLEN-1 in 16 bits, ISUNCOMPRESSED=1,
    // then zero bits to the byte boundary.
    let bits = ((data.len() as u32 - 1) << 4) | (1 << 20);
    let mut v = bits.to_le_bytes()[..3].to_vec();
    v.extend_from_slice(data);
    v.push(0b11); // ISLAST, ISLASTEMPTY
    v
}

/// A valid zstd frame holding `data` in one raw block (RFC 8878 §3.1.1).
fn zstd(data: &[u8]) -> Vec<u8> {
    assert!(data.len() < 256);
    let mut v = 0xFD2F_B528u32.to_le_bytes().to_vec();
    v.push(0x20); // Single_Segment, one byte of Frame_Content_Size
    v.push(data.len() as u8);
    let block = 1 | ((data.len() as u32) << 3); // Last_Block, Raw
    v.extend_from_slice(&block.to_le_bytes()[..3]);
    v.extend_from_slice(data);
    v
}

/// Files with every combination the tests need.
fn site() -> Site {
    let site = Site::new("webui");
    site.write("app.js", APP);
    site.write("app.js.br", &brotli(APP));
    site.write("app.js.zst", &zstd(APP));
    site.write("app.js.gz", &gzip(APP));
    site.write("two.js", APP);
    site.write("two.js.zst", &zstd(APP));
    site.write("two.js.gz", &gzip(APP));
    site.write("gz.css", b"p { color: red }\n");
    site.write("gz.css.gz", &gzip(b"p { color: red }\n"));
    site.write("plain.txt", b"no siblings\n");
    // A sibling without its original, and one leading out of the root.
    site.write("orphan.js.br", b"ORPHAN");
    site.write("leak.js", b"the original\n");
    symlink(
        site.base.path().join("secret.txt"),
        site.root().join("leak.js.br"),
    )
    .unwrap();
    site.write("assets/logo.svg", b"<svg/>\n");
    site.write("404.html", b"<h1>custom not found</h1>\n");
    site.write("sub/index.html", b"<p>sub</p>\n");
    site
}

fn server(site: &Site) -> TestServer {
    TestServer::with(site, |c| c.precompressed = true)
}

fn get(server: &TestServer, path: &str, headers: &str) -> Response {
    let mut c = server.client();
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes());
    c.response()
}

fn head(server: &TestServer, path: &str, headers: &str) -> Response {
    let mut c = server.client();
    c.send(format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes());
    let r = c.head();
    // Nothing follows the head: a GET on the same connection gets its own answer, whose head
    // says the same (a stray body would be read as the next status line).
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes());
    let g = c.response();
    assert_eq!(g.status, r.status, "HEAD and GET differ");
    assert_eq!(
        g.content_length(),
        r.content_length(),
        "HEAD and GET differ"
    );
    r
}

fn accept(v: &str) -> String {
    format!("Accept-Encoding: {v}\r\n")
}

#[test]
fn every_encoding_choice() {
    let site = site();
    let server = server(&site);
    let br = brotli(APP);
    let zst = zstd(APP);
    let gz = gzip(APP);
    // (path, Accept-Encoding (None: absent), expected coding, expected body)
    type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);
    let cases: &[Case] = &[
        ("/app.js", None, None, APP),
        ("/app.js", Some(""), None, APP),
        ("/app.js", Some("gzip, deflate, br, zstd"), Some("br"), &br),
        ("/app.js", Some("gzip, deflate"), Some("gzip"), &gz),
        ("/app.js", Some("x-gzip"), Some("gzip"), &gz),
        ("/app.js", Some("zstd"), Some("zstd"), &zst),
        ("/app.js", Some("gzip;q=1, br;q=0.5"), Some("gzip"), &gz),
        (
            "/app.js",
            Some("gzip;q=0.5, zstd;q=0.5, br;q=0.5"),
            Some("br"),
            &br,
        ),
        ("/app.js", Some("br;q=0, gzip;q=0.1"), Some("gzip"), &gz),
        ("/app.js", Some("br;q=0"), None, APP),
        ("/app.js", Some("*"), Some("br"), &br),
        ("/app.js", Some("*;q=0.5, br;q=0"), Some("zstd"), &zst),
        ("/app.js", Some("gzip;q=0.5, identity;q=1"), None, APP),
        ("/app.js", Some("identity;q=0, gzip"), Some("gzip"), &gz),
        ("/app.js", Some("deflate, compress"), None, APP),
        ("/app.js", Some("br;q=2"), None, APP), // a malformed element counts for nothing
        ("/two.js", Some("br, gzip, zstd"), Some("zstd"), &zst),
        ("/two.js", Some("br"), None, APP),
        (
            "/gz.css",
            Some("br, zstd, gzip"),
            Some("gzip"),
            &gzip(b"p { color: red }\n"),
        ),
    ];
    for &(path, ae, coding, body) in cases {
        let r = get(&server, path, &ae.map(accept).unwrap_or_default());
        let what = format!("{path} with {ae:?}");
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(r.header("content-encoding"), coding, "{what}");
        assert_eq!(r.body, body, "{what}");
        // The original's type whatever the coding; Vary on every answer for such a path.
        let ty = if path.ends_with(".css") {
            "text/css"
        } else {
            "text/javascript"
        };
        assert_eq!(r.header("content-type"), Some(ty), "{what}");
        assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{what}");
    }
    // A file without siblings is not negotiated: no Vary, identity whatever is asked.
    let r = get(&server, "/plain.txt", &accept("br, gzip"));
    assert_eq!(
        (r.header("vary"), r.header("content-encoding")),
        (None, None)
    );
}

#[test]
fn identity_refused_and_nothing_else_available_is_406() {
    let site = site();
    let server = server(&site);
    let r = get(&server, "/app.js", &accept("identity;q=0"));
    assert_eq!(r.status, 406);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let r = get(&server, "/gz.css", &accept("br, identity;q=0"));
    assert_eq!(r.status, 406);
    let r = get(&server, "/gz.css", &accept("*;q=0"));
    assert_eq!(r.status, 406);
    // `*;q=0` refuses only what is not named.
    let r = get(&server, "/gz.css", &accept("*;q=0, identity"));
    assert_eq!((r.status, r.header("content-encoding")), (200, None));
    // A path without siblings is not negotiated: the file, as without --precompressed.
    let r = get(&server, "/plain.txt", &accept("identity;q=0"));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"no siblings\n"[..]));
    // The field twice counts as absent: the lists are not joined, identity is served.
    let r = get(
        &server,
        "/app.js",
        "Accept-Encoding: identity;q=0\r\nAccept-Encoding: br\r\n",
    );
    assert_eq!((r.status, r.header("content-encoding")), (200, None));
    assert_eq!(r.body, APP);
}

#[test]
fn etags_differ_per_coding_and_304_is_per_variant() {
    let site = site();
    let server = server(&site);
    let tag = |ae: &str| {
        get(&server, "/app.js", &accept(ae))
            .header("etag")
            .unwrap()
            .to_string()
    };
    let tags = [tag("identity"), tag("br"), tag("zstd"), tag("gzip")];
    for (i, a) in tags.iter().enumerate() {
        for b in &tags[i + 1..] {
            assert_ne!(a, b, "two codings share an ETag: {tags:?}");
        }
    }
    let br_tag = &tags[1];
    // The br tag revalidates the br variant...
    let r = get(
        &server,
        "/app.js",
        &format!("Accept-Encoding: br\r\nIf-None-Match: {br_tag}\r\n"),
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(br_tag.as_str()));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert!(r.body.is_empty());
    // ...and not the gzip one, nor identity: they are other representations.
    let r = get(
        &server,
        "/app.js",
        &format!("Accept-Encoding: gzip\r\nIf-None-Match: {br_tag}\r\n"),
    );
    assert_eq!(
        (r.status, r.header("content-encoding")),
        (200, Some("gzip"))
    );
    let r = get(&server, "/app.js", &format!("If-None-Match: {br_tag}\r\n"));
    assert_eq!((r.status, r.header("content-encoding")), (200, None));
    assert_eq!(r.body, APP);
    // The identity tag revalidates identity, with Vary too.
    let r = get(
        &server,
        "/app.js",
        &format!("If-None-Match: {}\r\n", tags[0]),
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
}

#[test]
fn range_applies_to_the_variant_served() {
    let site = site();
    let server = server(&site);
    let br = brotli(APP);
    let r = get(
        &server,
        "/app.js",
        "Accept-Encoding: br\r\nRange: bytes=2-9\r\n",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 2-9/{}", br.len()).as_str())
    );
    assert_eq!(r.body, &br[2..10]);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    // If-Range with the br tag holds for br only.
    let br_tag = get(&server, "/app.js", &accept("br"))
        .header("etag")
        .unwrap()
        .to_string();
    let r = get(
        &server,
        "/app.js",
        &format!("Accept-Encoding: br\r\nRange: bytes=0-0\r\nIf-Range: {br_tag}\r\n"),
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &br[..1]));
    let r = get(
        &server,
        "/app.js",
        &format!("Accept-Encoding: gzip\r\nRange: bytes=0-0\r\nIf-Range: {br_tag}\r\n"),
    );
    assert_eq!(r.status, 200, "If-Range with another coding's tag");
    assert_eq!(r.body, gzip(APP));
    // Past the end of the br variant (but inside the original): 416 with the variant's length.
    let r = get(
        &server,
        "/app.js",
        &format!("Accept-Encoding: br\r\nRange: bytes={}-\r\n", br.len()),
    );
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{}", br.len()).as_str())
    );
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
}

#[test]
fn head_gives_the_variants_length_and_no_body() {
    let site = site();
    let server = server(&site);
    let r = head(&server, "/app.js", &accept("gzip"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.content_length(), Some(gzip(APP).len() as u64));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
}

#[test]
fn large_variants_go_by_sendfile_and_ranges_too() {
    let site = site();
    let big = common::pseudo_random(60_000, 3);
    site.write("big.bin", b"identity");
    site.write("big.bin.gz", &big);
    let server = TestServer::with(&site, |c| {
        c.precompressed = true;
        c.inline_max = 1024;
    });
    let r = get(&server, "/big.bin", &accept("gzip"));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    common::assert_same_bytes(&r.body, &big, "large gzip variant");
    let r = get(
        &server,
        "/big.bin",
        "Accept-Encoding: gzip\r\nRange: bytes=50000-50099\r\n",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &big[50_000..50_100]);
    assert_eq!(get(&server, "/big.bin", "").body, b"identity");
}

/// With one descriptor for the cache (`--cache-entries 1`) and nothing held in memory, the file
/// takes the descriptor and its siblings cannot be kept: the entry is answered once and not
/// cached, each representation with the descriptor opened for it, again and again.
#[test]
fn siblings_beyond_the_descriptor_budget_are_served_uncached() {
    let site = site();
    let big = common::pseudo_random(50_000, 9);
    let big_gz = common::pseudo_random(30_000, 10);
    site.write("fat.bin", &big);
    site.write("fat.bin.gz", &big_gz);
    let server = BinaryServer::start(
        &site.root(),
        &[
            "--precompressed",
            "--cache-entries",
            "1",
            "--inline-max",
            "0",
        ],
    );
    for _ in 0..3 {
        let mut c = server.client();
        c.send(b"GET /fat.bin HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
        let r = c.response();
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        common::assert_same_bytes(&r.body, &big_gz, "uncached gzip sibling");
        c.send(b"GET /fat.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=49990-\r\n\r\n");
        let r = c.response();
        assert_eq!((r.status, r.body.as_slice()), (206, &big[49_990..]));
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        c.send(b"HEAD /fat.bin HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
        assert_eq!(c.head().content_length(), Some(30_000));
    }
}

#[test]
fn a_sibling_serves_alone_only_by_its_own_name() {
    let site = site();
    let server = server(&site);
    // No orphan.js: its .br sibling does not stand in for it.
    let r = get(&server, "/orphan.js", &accept("br"));
    assert_eq!(r.status, 404);
    // Named itself, it is a file like any other (no Content-Encoding: it is what was asked).
    let r = get(&server, "/orphan.js.br", &accept("br"));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ORPHAN"[..]));
    assert_eq!(r.header("content-encoding"), None);
}

#[test]
fn a_sibling_leading_out_of_the_root_is_never_served() {
    let site = site();
    let server = server(&site);
    let r = get(&server, "/leak.js", &accept("br, gzip"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"the original\n");
    assert_eq!(r.header("content-encoding"), None);
    assert!(find(&r.body, SECRET).is_none());
}

#[test]
fn a_sibling_that_is_no_file_does_not_exist() {
    let site = site();
    site.write("odd.js", b"plain odd\n");
    site.mkdir("odd.js.br");
    let fifo = std::ffi::CString::new(site.root().join("odd.js.gz").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let server = server(&site);
    let r = get(&server, "/odd.js", &accept("br, gzip"));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"plain odd\n"[..]));
    assert_eq!(
        (r.header("content-encoding"), r.header("vary")),
        (None, None)
    );
}

#[test]
fn siblings_are_seen_after_revalidation() {
    let site = site();
    site.write("late.js", APP);
    let server = TestServer::with(&site, |c| {
        c.precompressed = true;
        c.cache_valid = Duration::from_millis(50);
    });
    let r = get(&server, "/late.js", &accept("gzip"));
    assert_eq!(
        (r.header("content-encoding"), r.header("vary")),
        (None, None)
    );
    site.write("late.js.gz", &gzip(APP));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&server, "/late.js", &accept("gzip"));
        if r.header("content-encoding") == Some("gzip") {
            assert_eq!(r.body, gzip(APP));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "new sibling never served"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(site.root().join("late.js.gz")).unwrap();
    loop {
        let r = get(&server, "/late.js", &accept("gzip"));
        if r.header("content-encoding").is_none() {
            assert_eq!(r.body, APP);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "removed sibling still served"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn without_the_flag_siblings_are_ignored() {
    let site = site();
    let server = TestServer::with(&site, |_| {});
    let r = get(&server, "/app.js", &accept("br, gzip"));
    assert_eq!(
        (r.header("content-encoding"), r.header("vary")),
        (None, None)
    );
    assert_eq!(r.body, APP);
}

/// curl with `--compressed` sends a browser's Accept-Encoding and decodes what it gets: the
/// variants must be what they claim to be, framed right.
#[test]
fn curl_decodes_every_variant() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl is not installed: skipped (.ci/run installs it)");
        return;
    }
    let site = site();
    let server = server(&site);
    for (path, want_coding, want_body) in [
        ("/app.js", "br", APP),
        ("/two.js", "zstd", APP),
        ("/gz.css", "gzip", &b"p { color: red }\n"[..]),
    ] {
        let headers = site.base.path().join("curl-headers");
        let out = Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--compressed",
                "--max-time",
                "10",
            ])
            .arg("--dump-header")
            .arg(&headers)
            .arg(format!("http://{}{path}", server.addr))
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "curl {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, want_body, "curl's decoded {path}");
        let headers = std::fs::read_to_string(&headers).unwrap().to_lowercase();
        assert!(
            headers.contains(&format!("content-encoding: {want_coding}\r\n")),
            "{path}: {headers}"
        );
        assert!(headers.contains("vary: accept-encoding\r\n"), "{headers}");
    }
}

// ---------------------------------------------------------------------------------------------
// Error pages
// ---------------------------------------------------------------------------------------------

#[test]
fn error_pages_keep_the_status_and_head_has_no_body() {
    let site = site();
    site.mkdir("noindex");
    site.write("403.txt", b"go away\n");
    let server = TestServer::with(&site, |c| {
        c.error_pages = vec![(404, "/404.html".into()), (403, "/403.txt".into())];
    });
    let r = get(&server, "/missing", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.body, b"<h1>custom not found</h1>\n");
    assert_eq!(r.header("content-type"), Some("text/html"));
    // A page is no file answer: no validators to revalidate an error with.
    assert_eq!((r.header("etag"), r.header("last-modified")), (None, None));
    let r = head(&server, "/missing", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.content_length(), Some(26));
    // A directory without an index: 403, its own page.
    let r = get(&server, "/noindex/", "");
    assert_eq!((r.status, r.body.as_slice()), (403, &b"go away\n"[..]));
    // Statuses without a page keep the built-in text.
    let r = get(&server, "/app.js", "Range: bytes=9999-\r\n");
    assert_eq!(
        (r.status, r.header("content-type")),
        (416, Some("text/plain"))
    );
    // The page itself, asked for, is an ordinary file.
    let r = get(&server, "/404.html", "");
    assert_eq!(r.status, 200);
}

#[test]
fn a_missing_or_refused_error_page_falls_back_to_the_built_in_text() {
    let site = site();
    symlink(
        site.base.path().join("secret.txt"),
        site.root().join("out.html"),
    )
    .unwrap();
    let server = TestServer::with(&site, |c| {
        c.error_pages = vec![
            (404, "/gone.html".into()),
            (403, "/out.html".into()),
            (405, "/sub".into()),
        ];
    });
    // The page is a directory: the text, not a redirect.
    let mut c = server.client();
    c.send(b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (405, "Method Not Allowed\n"));
    assert_eq!(r.header("location"), None);
    // The page is missing: the 404 for it is not served again (no loop), the text is.
    let r = get(&server, "/missing", "");
    assert_eq!((r.status, r.text().as_str()), (404, "Not Found\n"));
    // The page leads out of the root: the symlink rule holds for it as for any file.
    let r = get(&server, "/out.html", "");
    assert_eq!(r.status, 403);
    assert!(find(&r.body, SECRET).is_none(), "{r:?}");
    assert_eq!(r.text(), "Forbidden\n");
    // The next request still works (nothing was left half done).
    assert_eq!(get(&server, "/plain.txt", "").status, 200);
}

#[test]
fn error_page_for_a_method_and_for_a_bad_path() {
    let site = site();
    site.write("err.html", b"<p>oops</p>\n");
    let server = TestServer::with(&site, |c| {
        c.error_pages = vec![(405, "/err.html".into()), (400, "/err.html".into())];
    });
    let mut c = server.client();
    c.send(b"DELETE /app.js HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.as_slice()), (405, &b"<p>oops</p>\n"[..]));
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = get(&server, "/%2e%2e/secret.txt", "");
    assert_eq!((r.status, r.body.as_slice()), (400, &b"<p>oops</p>\n"[..]));
}

// ---------------------------------------------------------------------------------------------
// Extra headers
// ---------------------------------------------------------------------------------------------

fn header_rules() -> Vec<edgeserve::config::ExtraHeader> {
    let rule = |prefix: &str, line: &str| edgeserve::config::ExtraHeader {
        prefix: prefix.into(),
        line: line.into(),
    };
    vec![
        rule("/", "X-Frame-Options: DENY"),
        rule("/assets/", "Cache-Control: max-age=31536000, immutable"),
        rule("/app.js", "Access-Control-Allow-Origin: *"),
    ]
}

#[test]
fn headers_by_prefix_on_every_file_answer() {
    let site = site();
    let server = TestServer::with(&site, |c| {
        c.headers = header_rules();
        c.precompressed = true;
        c.error_pages = vec![(404, "/404.html".into())];
    });
    let check = |r: &Response, what: &str, cache: bool, cors: bool| {
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}: {r:?}");
        assert_eq!(r.header("cache-control").is_some(), cache, "{what}: {r:?}");
        assert_eq!(
            r.header("access-control-allow-origin").is_some(),
            cors,
            "{what}: {r:?}"
        );
    };
    let r = get(&server, "/assets/logo.svg", "");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("cache-control"),
        Some("max-age=31536000, immutable")
    );
    check(&r, "file under /assets/", true, false);
    let tag = r.header("etag").unwrap().to_string();
    let r = get(
        &server,
        "/assets/logo.svg",
        &format!("If-None-Match: {tag}\r\n"),
    );
    assert_eq!(r.status, 304);
    check(&r, "304 under /assets/", true, false);
    // Every spelling of a path gets the headers of what it names.
    check(
        &get(&server, "/x/../assets/logo.svg", ""),
        "dot spelling",
        true,
        false,
    );
    check(
        &get(&server, "/assets/missing", ""),
        "404 under /assets/",
        true,
        false,
    );
    check(&get(&server, "/missing", ""), "404 page", false, false);
    check(&get(&server, "/plain.txt", ""), "file", false, false);
    check(&get(&server, "/sub", ""), "redirect", false, false);
    check(
        &get(&server, "/app.js", &accept("br")),
        "br variant",
        false,
        true,
    );
    check(
        &get(&server, "/app.js", "Range: bytes=0-1\r\n"),
        "range",
        false,
        true,
    );
    check(
        &get(&server, "/app.js", &accept("identity;q=0, compress")),
        "406",
        false,
        true,
    );
    check(&head(&server, "/app.js", ""), "HEAD", false, true);
    // Not a prefix of the path as sent, but of what it names: `/app.jsx` is under `/app.js`
    // (prefixes are bytes, as the proxy's are).
    site.write("app.jsx", b"x");
    check(&get(&server, "/app.jsx", ""), "byte prefix", false, true);
}

/// nginx's add_header applies to proxied answers, and so does `--header`: after the upstream's
/// own fields (which are kept), on the final answer only, whatever its framing; the gateway's own
/// 502 does not get them.
#[cfg(feature = "proxy")]
#[test]
fn headers_on_proxied_answers() {
    let site = site();
    let up = upstream::Upstream::start(|req| match req.target.as_str() {
        "/api/chunked" => upstream::chunked(&[b"one ", b"two"], ""),
        "/api/continue" => upstream::raw(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        _ => upstream::reply(200, "OK", &[("Cache-Control", "private")], b"from upstream"),
    });
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_addr = down.local_addr().unwrap();
    drop(down);
    let server = TestServer::with(&site, |c| {
        c.headers = header_rules();
        c.headers.push(edgeserve::config::ExtraHeader {
            prefix: "/api/".into(),
            line: "X-Api: yes".into(),
        });
        c.proxies = vec![
            edgeserve::config::Route {
                prefix: "/api/".into(),
                upstreams: vec![up.addr],
            },
            edgeserve::config::Route {
                prefix: "/down/".into(),
                upstreams: vec![down_addr],
            },
        ];
    });
    let mut c = server.client();
    let r = c.get("/api/x");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"from upstream"[..]));
    assert_eq!(
        r.header("cache-control"),
        Some("private"),
        "upstream's kept"
    );
    assert_eq!(r.header("x-api"), Some("yes"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    // Chunked, on the same connection.
    c.send(b"GET /api/chunked HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.head();
    assert_eq!(r.header("x-api"), Some("yes"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let body = c.take(b"4\r\none \r\n3\r\ntwo\r\n0\r\n\r\n".len());
    assert_eq!(body, b"4\r\none \r\n3\r\ntwo\r\n0\r\n\r\n");
    // An interim answer passes as it came; the final one gets the lines, once.
    c.send(b"GET /api/continue HTTP/1.1\r\nHost: t\r\n\r\n");
    let interim = c.head();
    assert_eq!((interim.status, interim.header("x-api")), (100, None));
    let r = c.response();
    assert_eq!((r.status, r.header("x-api")), (200, Some("yes")));
    assert_eq!(c.get("/plain.txt").header("x-api"), None);
    let r = c.get("/down/x");
    assert_eq!((r.status, r.header("x-frame-options")), (502, None));
}

#[test]
fn bad_header_flags_are_refused_at_startup() {
    let site = site();
    let root = site.root();
    let root = root.to_str().unwrap();
    for bad in [
        "Content-Length: 5",
        "transfer-encoding: chunked",
        "Connection: close",
        "Keep-Alive: timeout=5",
        "Upgrade: h2c",
        "/x=Content-Type: text/html",
        "Date: now",
        "Bad Name: x",
        "NoColon",
        ": empty name",
        "X-Ok: a\r\nX-Injected: b",
        "X-Ok: a\nb",
        "X-Ok: caf\u{e9}",
        "/prefix-without-equals",
    ] {
        let (status, out, err) = run_binary(&["--listen", "127.0.0.1:0", "--header", bad, root]);
        assert_eq!(status.code(), Some(2), "{bad:?}: {err}");
        assert!(out.is_empty(), "{bad:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
        assert!(err.contains("--header"), "{bad:?}: {err}");
    }
    for bad in [
        "404",
        "200=/a.html",
        "404=relative.html",
        "404=/dir/",
        "404=/../x",
        "999=/x",
    ] {
        let (status, _, err) = run_binary(&["--listen", "127.0.0.1:0", "--error-page", bad, root]);
        assert_eq!(status.code(), Some(2), "{bad:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
        assert!(err.contains("--error-page"), "{bad:?}: {err}");
    }
}

/// The four settings come from a config file as from flags, and a SIGHUP applies a changed file
/// to new requests: new header lines, a new error page, precompressed siblings turned off.
/// A file with a bad header line changes nothing.
#[test]
fn a_reload_changes_headers_pages_and_siblings() {
    let site = site();
    site.write("other404.html", b"<p>another page</p>\n");
    let conf = site.base.path().join("edgeserve.conf");
    let write = |text: &str| {
        let tmp = conf.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &conf).unwrap();
    };
    write("header /assets/=X-Gen: 1\nerror-page 404=/404.html\nprecompressed\n");
    let server = BinaryServer::start(&site.root(), &["--config", conf.to_str().unwrap()]);
    let get = |path: &str, headers: &str| {
        let mut c = server.client();
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes());
        c.response()
    };
    assert_eq!(get("/assets/logo.svg", "").header("x-gen"), Some("1"));
    assert_eq!(get("/missing", "").body, b"<h1>custom not found</h1>\n");
    assert_eq!(
        get("/app.js", &accept("br")).header("content-encoding"),
        Some("br")
    );
    write("header /assets/=X-Gen: 2\nerror-page 404=/other404.html\n");
    server.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get("/assets/logo.svg", "").header("x-gen") != Some("2") {
        assert!(std::time::Instant::now() < deadline, "reload not applied");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(get("/missing", "").body, b"<p>another page</p>\n");
    let r = get("/app.js", &accept("br"));
    assert_eq!(
        (r.header("content-encoding"), r.body.as_slice()),
        (None, APP)
    );
    // A bad line: the reload fails as a whole, the running settings stay.
    write("header Content-Length: 1\n");
    server.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("reload failed") {
        assert!(
            std::time::Instant::now() < deadline,
            "no failed reload logged"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(get("/assets/logo.svg", "").header("x-gen"), Some("2"));
}

// ---------------------------------------------------------------------------------------------
// Directory listings
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "dir-listing")]
fn listing_site() -> Site {
    let site = Site::new("listing");
    site.write("list/b.txt", b"bb");
    site.write("list/a file.txt", b"a");
    site.write("list/<script>alert(1)<%2Fscript>.html", b"x");
    // A backslash: never served (400), so never listed.
    site.write("list/back\\slash", b"x");
    site.write("list/q\"uote&amp.txt", b"x");
    site.write("list/javascript:alert(1)", b"x");
    site.write("list/.hidden", b"x");
    site.mkdir("list/zdir");
    site.write("list/with-index/index.html", b"<p>index</p>\n");
    symlink(
        site.base.path().join("secret.txt"),
        site.root().join("list/out-file"),
    )
    .unwrap();
    symlink(site.base.path(), site.root().join("list/out-dir")).unwrap();
    symlink("b.txt", site.root().join("list/in-link")).unwrap();
    symlink("nowhere", site.root().join("list/dangling")).unwrap();
    site
}

#[cfg(feature = "dir-listing")]
fn hrefs(page: &str) -> Vec<String> {
    page.split("href=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .collect()
}

#[cfg(feature = "dir-listing")]
#[test]
fn listing_escapes_names_and_leaves_out_what_is_not_served() {
    let site = listing_site();
    let server = TestServer::with(&site, |c| c.dir_listing = true);
    let r = get(&server, "/list/", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let page = r.text();
    assert!(!page.contains("<script>"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;%2Fscript&gt;.html"),
        "{page}"
    );
    assert!(page.contains("q&quot;uote&amp;amp.txt"), "{page}");
    // Directories first, then names in byte order; links leading out, dangling ones and
    // dotfiles are not there.
    assert_eq!(
        hrefs(&page),
        [
            "../",
            "with-index/",
            "zdir/",
            "%3Cscript%3Ealert%281%29%3C%252Fscript%3E.html",
            "a%20file.txt",
            "b.txt",
            "in-link",
            "javascript%3Aalert%281%29",
            "q%22uote%26amp.txt",
        ],
        "{page}"
    );
    for absent in ["out-", "hidden", "dangling", "slash"] {
        assert!(!page.contains(absent), "{absent}: {page}");
    }
    // Every href leads where it says.
    for href in hrefs(&page).iter().filter(|h| !h.ends_with('/')) {
        let r = get(&server, &format!("/list/{href}"), "");
        assert_eq!(r.status, 200, "{href}");
    }
    // A directory with an index is not listed.
    assert_eq!(
        get(&server, "/list/with-index/", "").text(),
        "<p>index</p>\n"
    );
    // Links leading out are not followed through a listing either.
    assert_eq!(get(&server, "/list/out-dir/", "").status, 403);
    let r = head(&server, "/list/", "");
    assert_eq!(r.content_length(), Some(page.len() as u64));
}

#[cfg(feature = "dir-listing")]
#[test]
fn listing_is_off_by_default() {
    let site = listing_site();
    let server = TestServer::with(&site, |_| {});
    assert_eq!(get(&server, "/list/", "").status, 403);
}

#[cfg(feature = "dir-listing")]
#[test]
fn a_huge_directory_is_listed_in_part() {
    let site = Site::new("listing-huge");
    site.mkdir("huge");
    for i in 0..1500 {
        std::fs::write(site.root().join(format!("huge/f{i:05}")), b"").unwrap();
    }
    let server = TestServer::with(&site, |c| c.dir_listing = true);
    let r = get(&server, "/huge/", "");
    assert_eq!(r.status, 200);
    let page = r.text();
    assert_eq!(hrefs(&page).len(), 1 + 1000, "parent link and the cap");
    assert!(
        page.contains("more entries than are listed"),
        "{}",
        &page[page.len() - 300..]
    );
    // The sorted part is sorted.
    let names = hrefs(&page);
    assert!(names[1..].windows(2).all(|w| w[0] < w[1]));
}
