//! `--dir-listing`: the HTML index of a directory without an index file.
//!
//! What is listed is what would be served: an entry the symlink rule refuses (a link leading out
//! of the root, without `--follow-symlinks`) is left out and never followed, and so is anything
//! but a file or a directory, or a name no request can reach (one with a backslash). Names starting with `.` are left out too (they are still served
//! when named, as lighttpd's `dir-listing.hide-dotfiles` has it). The work is bounded, since it
//! runs on the loop: at most [`MAX_ENTRIES`] entries are listed and [`MAX_READ`] names read, and
//! the page says when there were more. The page is cached like a file and rebuilt after
//! `--cache-valid`.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, UNIX_EPOCH};

use super::open::{Opened, Root};

/// Most entries on a page.
pub const MAX_ENTRIES: usize = 1000;
/// Most names read from the directory for one page (hidden and refused ones included).
pub const MAX_READ: usize = 10 * MAX_ENTRIES;

struct Item {
    name: Vec<u8>,
    dir: bool,
    size: u64,
    mtime: i64,
}

/// The page for directory `dir`, which is `rel` below the root (no slashes at either end) and is
/// named `key` in URLs (its normalised request path, ending in `/`).
pub fn render(dir: File, rel: &[u8], key: &[u8], root: &Root) -> io::Result<Vec<u8>> {
    let (mut items, more) = read(dir, rel, root)?;
    // Directories first, then by name, as bytes: the same order whatever the locale.
    items.sort_unstable_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.cmp(&b.name)));
    let mut page = Vec::with_capacity(512 + items.len() * 160);
    let title = String::from_utf8_lossy(key);
    page.extend_from_slice(
        b"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of ",
    );
    push_escaped(&mut page, &title);
    page.extend_from_slice(b"</title></head>\n<body>\n<h1>Index of ");
    push_escaped(&mut page, &title);
    page.extend_from_slice(
        b"</h1>\n<table>\n<tr><th>Name</th><th>Size</th><th>Modified</th></tr>\n",
    );
    if key != b"/" {
        page.extend_from_slice(b"<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    for item in &items {
        page.extend_from_slice(b"<tr><td><a href=\"");
        push_href(&mut page, &item.name);
        if item.dir {
            page.push(b'/');
        }
        page.extend_from_slice(b"\">");
        push_escaped(&mut page, &String::from_utf8_lossy(&item.name));
        if item.dir {
            page.extend_from_slice(b"/</a></td><td>-");
        } else {
            page.extend_from_slice(b"</a></td><td>");
            crate::http::response::push_u64(&mut page, item.size);
        }
        page.extend_from_slice(b"</td><td>");
        let mtime = UNIX_EPOCH + Duration::from_secs(u64::try_from(item.mtime).unwrap_or(0));
        page.extend_from_slice(httpdate::fmt_http_date(mtime).as_bytes());
        page.extend_from_slice(b"</td></tr>\n");
    }
    page.extend_from_slice(b"</table>\n");
    if more {
        page.extend_from_slice(
            b"<p>This directory has more entries than are listed here (at most ",
        );
        crate::http::response::push_u64(&mut page, MAX_ENTRIES as u64);
        page.extend_from_slice(b" are shown).</p>\n");
    }
    page.extend_from_slice(b"</body></html>\n");
    Ok(page)
}

/// An open directory stream, closed on drop.
struct DirStream(*mut libc::DIR);

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: the stream came from fdopendir and is closed only here.
        unsafe { libc::closedir(self.0) };
    }
}

/// The entries to list, and whether the directory had more than were read.
fn read(dir: File, rel: &[u8], root: &Root) -> io::Result<(Vec<Item>, bool)> {
    let fd = dir.into_raw_fd();
    // SAFETY: `fd` is an open directory descriptor we own; fdopendir takes it over.
    let stream = unsafe { libc::fdopendir(fd) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `fd` is still ours to close.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    let stream = DirStream(stream);
    // SAFETY: a valid directory stream.
    let dfd = unsafe { libc::dirfd(stream.0) };
    let mut items = Vec::new();
    let mut read = 0;
    loop {
        // SAFETY: errno is thread-local; clearing it tells the end of the stream from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: a valid directory stream, used by this thread only.
        let ent = unsafe { libc::readdir64(stream.0) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            if e.raw_os_error().unwrap_or(0) != 0 {
                return Err(e);
            }
            return Ok((items, false));
        }
        if items.len() == MAX_ENTRIES || read == MAX_READ {
            return Ok((items, true));
        }
        read += 1;
        // SAFETY: readdir returned an entry whose d_name is NUL-terminated; it stays valid until
        // the next readdir on this stream, and is copied before that.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        // A backslash is refused in request paths (400): such a name cannot be served.
        if name.to_bytes().starts_with(b".") || name.to_bytes().contains(&b'\\') {
            continue;
        }
        if let Some(item) = item(dfd, name, rel, root) {
            items.push(item);
        }
    }
}

/// What an entry is, if it may be listed.
fn item(dfd: libc::c_int, name: &CStr, rel: &[u8], root: &Root) -> Option<Item> {
    // SAFETY: stat is plain old data; all-zero is a valid value to be overwritten.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    // SAFETY: a valid directory descriptor, a NUL-terminated name, a stat buffer to write.
    let r = unsafe { libc::fstatat64(dfd, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r != 0 {
        return None;
    }
    let name = name.to_bytes().to_vec();
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Some(Item {
            name,
            dir: false,
            size: st.st_size as u64,
            mtime: st.st_mtime,
        }),
        libc::S_IFDIR => Some(Item {
            name,
            dir: true,
            size: 0,
            mtime: st.st_mtime,
        }),
        // A symlink is listed only if it is served: opened through the root, under the same rule
        // as any request (what it leads to is described, as a request would find it).
        libc::S_IFLNK => {
            let mut path = rel.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            let (dir, meta) = match root.open(&path).ok()? {
                Opened::File(_, meta) => (false, meta),
                Opened::Dir(d) => (true, d.metadata().ok()?),
            };
            Some(Item {
                name,
                dir,
                size: if dir { 0 } else { meta.len() },
                mtime: meta.mtime(),
            })
        }
        _ => None,
    }
}

/// HTML text or attribute value.
fn push_escaped(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            b'\'' => out.extend_from_slice(b"&#39;"),
            _ => out.push(b),
        }
    }
}

/// A name as a relative reference: every byte but the unreserved ones percent-encoded, so no
/// name can be read as a scheme (`javascript:`), a query, a fragment or another segment, and the
/// result needs no HTML escaping.
fn push_href(out: &mut Vec<u8>, name: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in name {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_encoded() {
        let mut v = Vec::new();
        push_escaped(&mut v, "<script>alert('x')</script>&\"");
        assert_eq!(
            v,
            b"&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        let mut v = Vec::new();
        push_href(&mut v, b"javascript:a b/<\"%\xff");
        assert_eq!(v, b"javascript%3Aa%20b%2F%3C%22%25%FF");
    }
}
