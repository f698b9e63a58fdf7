//! Static files: safe path resolution, a bounded cache of metadata, open descriptors and small
//! files' bytes, conditional and range requests.
//!
//! A hot file costs a hash lookup: its headers are rendered once, a small body is held in memory
//! (head and body leave in one write) and a large one keeps its descriptor open for `sendfile`.
//! Entries are revalidated after `cache_valid`, as nginx's open_file_cache and lighttpd's stat
//! cache do, so a changed file is seen within that interval.

pub mod mime;
mod open;
pub mod path;
pub mod range;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use slab::Slab;

use crate::http::request::{Method, Request};
use crate::http::response::{Body, Reply, push_u64};
use crate::http::session::Handler;
use mime::MimeTypes;
use open::{Opened, Root};
use range::RangeSpec;

#[derive(Clone, Debug)]
pub struct FilesConfig {
    pub root: PathBuf,
    /// Serve symlinks whose target lies outside the root.
    pub follow_symlinks_outside: bool,
    pub index: String,
    pub cache_entries: usize,
    pub cache_valid: Duration,
    /// Files up to this size are held in memory.
    pub inline_max: u64,
    pub mime: MimeTypes,
}

/// What a cached path resolves to.
#[derive(Debug)]
enum Kind {
    File(FileInfo),
    /// A directory named without its trailing slash: the Location to send, without the query.
    Redirect(Box<[u8]>),
    Status(u16),
}

#[derive(Debug)]
struct FileInfo {
    /// Content-Type, Last-Modified, ETag and Accept-Ranges lines.
    headers: Vec<u8>,
    /// Last-Modified and ETag lines alone, for 304.
    validators: Vec<u8>,
    etag: String,
    last_modified: String,
    mtime: u64,
    len: u64,
    /// Bytes of a small file, or the open descriptor of a large one.
    content: Content,
}

#[derive(Debug)]
enum Content {
    Bytes(Box<[u8]>),
    File(Arc<File>),
}

#[derive(Debug)]
struct Entry {
    checked: Instant,
    kind: Kind,
}

pub struct Files {
    cfg: FilesConfig,
    /// The root, held open: every file is opened relative to it (see `open`).
    root: Root,
    /// Request path to its entry in `entries`: one hash per hit.
    index: HashMap<Box<str>, usize, foldhash::fast::RandomState>,
    entries: Slab<Entry>,
    inline_bytes: u64,
    /// Headers built per request (Content-Range, Location).
    scratch: Vec<u8>,
}

/// Bytes of small files held in memory across the cache, at most.
const INLINE_BUDGET: u64 = 8 << 20;

impl Files {
    pub fn new(cfg: FilesConfig) -> io::Result<Files> {
        let root = Root::new(&cfg.root, cfg.follow_symlinks_outside)?;
        Ok(Files {
            cfg,
            root,
            index: HashMap::default(),
            entries: Slab::new(),
            inline_bytes: 0,
            scratch: Vec::new(),
        })
    }

    /// The entry for a request path, loaded or revalidated as needed.
    fn lookup(&mut self, key: &str, now: Instant) -> usize {
        if let Some(&i) = self.index.get(key) {
            if now.duration_since(self.entries[i].checked) < self.cfg.cache_valid {
                return i;
            }
            self.index.remove(key);
            self.drop_entry(i);
        }
        if self.entries.len() >= self.cfg.cache_entries {
            self.evict(now);
        }
        let kind = self.load(key);
        if let Kind::File(FileInfo {
            content: Content::Bytes(b),
            ..
        }) = &kind
        {
            self.inline_bytes += b.len() as u64;
        }
        let i = self.entries.insert(Entry { checked: now, kind });
        self.index.insert(key.into(), i);
        i
    }

    fn drop_entry(&mut self, i: usize) {
        if let Kind::File(FileInfo {
            content: Content::Bytes(b),
            ..
        }) = &self.entries.remove(i).kind
        {
            self.inline_bytes -= b.len() as u64;
        }
    }

    /// Drops stale entries; if the cache is still full, drops everything (a burst of distinct
    /// paths should not make the cache a scan of itself on every miss).
    fn evict(&mut self, now: Instant) {
        let valid = self.cfg.cache_valid;
        let Files { index, entries, .. } = self;
        index.retain(|_, i| now.duration_since(entries[*i].checked) < valid);
        entries.retain(|_, e| now.duration_since(e.checked) < valid);
        if entries.len() >= self.cfg.cache_entries {
            index.clear();
            entries.clear();
        }
        self.inline_bytes = entries
            .iter()
            .map(|(_, e)| match &e.kind {
                Kind::File(FileInfo {
                    content: Content::Bytes(b),
                    ..
                }) => b.len() as u64,
                _ => 0,
            })
            .sum();
    }

    /// Resolves a request path on the file system.
    fn load(&self, key: &str) -> Kind {
        let Ok(rel) = path::resolve(key) else {
            return Kind::Status(400);
        };
        let rel = rel.as_os_str().as_bytes();
        match self.root.open(rel) {
            // `/file.txt/` names a directory; the file system says ENOTDIR, so do we.
            Ok(Opened::File(..)) if path::names_directory(key) => Kind::Status(404),
            Ok(Opened::File(file, meta)) => Kind::File(self.file_info(key, file, &meta)),
            Ok(Opened::Dir) if !path::names_directory(key) => Kind::Redirect(location(key)),
            Ok(Opened::Dir) => self.load_index(rel),
            Err(e) => Kind::Status(status_for(&e)),
        }
    }

    /// The index file of directory `rel`, opened from the root (not from the directory's
    /// descriptor), so that an index symlink to elsewhere inside the root works.
    fn load_index(&self, rel: &[u8]) -> Kind {
        let mut joined = rel.to_vec();
        if !joined.is_empty() {
            joined.push(b'/');
        }
        joined.extend_from_slice(self.cfg.index.as_bytes());
        match self.root.open(&joined) {
            Ok(Opened::File(file, meta)) => {
                Kind::File(self.file_info(&self.cfg.index, file, &meta))
            }
            Ok(Opened::Dir) => Kind::Status(403),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Kind::Status(403),
            Err(e) => Kind::Status(status_for(&e)),
        }
    }

    fn file_info(&self, name: &str, mut file: File, meta: &fs::Metadata) -> FileInfo {
        let len = meta.len();
        let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
        let last_modified = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(mtime));
        let etag = format!("\"{mtime:x}-{len:x}\"");
        let validators = format!("Last-Modified: {last_modified}\r\nETag: {etag}\r\n").into_bytes();
        let ty = self.cfg.mime.for_name(name);
        let mut headers = format!("Content-Type: {ty}\r\nAccept-Ranges: bytes\r\n").into_bytes();
        headers.extend_from_slice(&validators);
        let mut content = None;
        if len <= self.cfg.inline_max && self.inline_bytes + len <= INLINE_BUDGET {
            let mut bytes = Vec::with_capacity(len as usize);
            // A file that changes length while read is read again on the next revalidation.
            if file.read_to_end(&mut bytes).is_ok() && bytes.len() as u64 == len {
                content = Some(Content::Bytes(bytes.into_boxed_slice()));
            }
        }
        let content = content.unwrap_or_else(|| Content::File(Arc::new(file)));
        FileInfo {
            headers,
            validators,
            etag,
            last_modified,
            mtime,
            len,
            content,
        }
    }
}

/// The Location of a directory named without its trailing slash, from the normalised path (never
/// the request's spelling, which may start with `//` and so name another origin).
fn location(key: &str) -> Box<[u8]> {
    let mut normal = Vec::new();
    let mut out = Vec::new();
    // `load` only redirects what `path::resolve` accepted, so this cannot fail.
    if path::normalize_into(key, &mut normal).is_ok() {
        path::push_location(&normal, &mut out);
    }
    out.push(b'/');
    out.into_boxed_slice()
}

/// Keeps the query of a redirected request. httparse refuses control bytes in a target, but a
/// header value is no place to trust that: a query with anything but visible ASCII is dropped.
fn push_query(target: &str, out: &mut Vec<u8>) {
    if let Some(q) = target.find('?') {
        let query = &target.as_bytes()[q..];
        if query.iter().all(|b| b.is_ascii_graphic()) {
            out.extend_from_slice(query);
        }
    }
}

fn status_for(e: &io::Error) -> u16 {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename => {
            404
        }
        io::ErrorKind::PermissionDenied => 403,
        // openat2's RESOLVE_BENEATH: the path (a symlink in it) leads outside the root.
        _ if e.raw_os_error() == Some(libc::EXDEV) => 403,
        _ if e.raw_os_error() == Some(libc::ELOOP)
            || e.raw_os_error() == Some(libc::ENAMETOOLONG) =>
        {
            404
        }
        _ => 500,
    }
}

impl Handler for Files {
    fn handle<'s>(&'s mut self, req: &Request<'_>, now: Instant) -> Reply<'s> {
        if req.method == Method::Other {
            return Reply::text(405, b"Allow: GET, HEAD\r\nContent-Type: text/plain\r\n");
        }
        let key = req.path();
        let i = self.lookup(key, now);
        let Files {
            entries, scratch, ..
        } = self;
        let entry = &entries[i];
        let info = match &entry.kind {
            Kind::File(info) => info,
            Kind::Status(s) => return Reply::text(*s, b"Content-Type: text/plain\r\n"),
            Kind::Redirect(location) => {
                scratch.clear();
                scratch.extend_from_slice(b"Location: ");
                scratch.extend_from_slice(location);
                push_query(req.target, scratch);
                scratch.extend_from_slice(b"\r\nContent-Type: text/plain\r\n");
                let body = crate::http::response::reason(301).as_bytes();
                return Reply {
                    status: 301,
                    headers: scratch,
                    len: body.len() as u64,
                    body: Body::Bytes(body),
                };
            }
        };
        if not_modified(req, info) {
            return Reply {
                status: 304,
                headers: &info.validators,
                len: 0,
                body: Body::Empty,
            };
        }
        let spec = match req.range {
            Some(r) if req.method == Method::Get && if_range_holds(req.if_range, info) => {
                range::parse(r, info.len)
            }
            _ => RangeSpec::Ignore,
        };
        match spec {
            RangeSpec::Ignore => Reply {
                status: 200,
                headers: &info.headers,
                len: info.len,
                body: body(info, 0, info.len),
            },
            RangeSpec::Unsatisfiable => {
                scratch.clear();
                scratch.extend_from_slice(b"Content-Type: text/plain\r\nContent-Range: bytes */");
                push_u64(scratch, info.len);
                scratch.extend_from_slice(b"\r\n");
                let text = crate::http::response::reason(416).as_bytes();
                Reply {
                    status: 416,
                    headers: scratch,
                    len: text.len() as u64,
                    body: Body::Bytes(text),
                }
            }
            RangeSpec::Bytes { start, end } => {
                scratch.clear();
                scratch.extend_from_slice(&info.headers);
                scratch.extend_from_slice(b"Content-Range: bytes ");
                push_u64(scratch, start);
                scratch.push(b'-');
                push_u64(scratch, end);
                scratch.push(b'/');
                push_u64(scratch, info.len);
                scratch.extend_from_slice(b"\r\n");
                let len = end - start + 1;
                Reply {
                    status: 206,
                    headers: scratch,
                    len,
                    body: body(info, start, len),
                }
            }
        }
    }
}

fn body(info: &FileInfo, offset: u64, len: u64) -> Body<'_> {
    match &info.content {
        Content::Bytes(b) => Body::Bytes(&b[offset as usize..(offset + len) as usize]),
        Content::File(f) => Body::File {
            file: Arc::clone(f),
            offset,
        },
    }
}

/// RFC 9110 §13.1.2 and §13.1.3: If-None-Match (weak comparison) wins over If-Modified-Since.
fn not_modified(req: &Request<'_>, info: &FileInfo) -> bool {
    if let Some(inm) = req.if_none_match {
        return inm.split(|&b| b == b',').any(|tag| {
            let tag = crate::http::request::trim(tag);
            tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == info.etag.as_bytes()
        });
    }
    match req
        .if_modified_since
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(httpdate::parse_http_date)
    {
        Some(Ok(since)) => {
            info.mtime <= since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
        }
        _ => false,
    }
}

/// RFC 9110 §13.1.5: a Range applies only if If-Range names the current representation
/// (a strong ETag match, or exactly its Last-Modified date).
fn if_range_holds(if_range: Option<&[u8]>, info: &FileInfo) -> bool {
    match if_range {
        None => true,
        Some(v) if v.starts_with(b"\"") => v == info.etag.as_bytes(),
        Some(v) => v == info.last_modified.as_bytes(),
    }
}
