//! Static files: safe path resolution, a bounded cache of metadata, open descriptors and small
//! files' bytes, conditional and range requests.
//!
//! A hot file costs a hash lookup: its headers are rendered once, a small body is held in memory
//! (head and body leave in one write) and a large one keeps its descriptor open for `sendfile`.
//! Entries are revalidated after `cache_valid`, as nginx's open_file_cache and lighttpd's stat
//! cache do, so a changed file is seen within that interval.
//!
//! Descriptors are a resource the whole process shares, so the cache is keyed by what a path
//! names (its normalised form, not its spelling), an entry unused for a while is dropped, and the
//! descriptors kept open by every cache of the process (one per loop or worker) count against
//! one budget, [`descriptor_budget`], which the default `--max-conns` leaves room for. Past the
//! budget a large file is still served, with a descriptor closed after its response.

pub mod mime;
mod open;
pub mod path;
pub mod range;

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use slab::Slab;

use crate::app::Handler;
use crate::http::request::{Method, Request};
use crate::http::response::{Body, Reply, push_u64};
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

/// What a cached path resolves to: only definite answers are cached.
#[derive(Debug)]
enum Kind {
    File(FileInfo),
    /// A directory named without its trailing slash: the Location to send, without the query.
    Redirect(Box<[u8]>),
    /// 404 or 403.
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
    /// A large file's descriptor, counted in the process's budget while the entry holds it.
    File(Arc<File>, Slot),
    /// A large file opened when the budget was spent: the descriptor goes with one response
    /// (taken out by `handle`), and the entry is not cached.
    Uncached(Option<Arc<File>>),
}

#[derive(Debug)]
struct Entry {
    /// When the file system was last asked (revalidation after `cache_valid`).
    checked: Instant,
    /// When a request last used it (dropped after `idle`).
    used: Instant,
    kind: Kind,
}

/// Where the answer to a request is.
enum Found {
    Cached(usize),
    /// In `Files::transient`: not kept past this request.
    Transient,
    /// The file system failed for a reason that may pass (EMFILE, ENFILE, ENOMEM, EIO, ...):
    /// answered 503 and not cached, so the next request tries again.
    Unavailable,
}

pub struct Files {
    cfg: FilesConfig,
    /// The root, held open: every file is opened relative to it (see `open`).
    root: Root,
    /// Normalised path (`path::normalize_into`) to its entry in `entries`: one hash per hit.
    index: HashMap<Box<[u8]>, usize, foldhash::fast::RandomState>,
    entries: Slab<Entry>,
    inline_bytes: u64,
    /// Descriptors this process's caches may hold in all (shared with every other `Files`).
    fd_budget: usize,
    /// Entries unused for this long are dropped at the next sweep.
    idle: Duration,
    next_sweep: Instant,
    /// The answer for a request that could not be cached, and its descriptor until the reply
    /// takes it.
    transient: Option<Entry>,
    transient_file: Option<Arc<File>>,
    /// The normalised form of a request path that was not normal already (reused).
    key: Vec<u8>,
    /// Headers built per request (Content-Range, Location).
    scratch: Vec<u8>,
}

/// Bytes of small files held in memory across the cache, at most.
const INLINE_BUDGET: u64 = 8 << 20;

/// An entry is idle after this many `cache_valid` intervals without a request (nginx's
/// `open_file_cache inactive`), and never sooner than `MIN_IDLE`.
const IDLE_INTERVALS: u32 = 10;
const MIN_IDLE: Duration = Duration::from_secs(1);

/// Descriptors held open by the file caches of this process, whatever the model: shards and
/// workers each have a cache, but the descriptor limit they all run into is the process's.
static CACHED_FDS: AtomicUsize = AtomicUsize::new(0);

/// How many descriptors the file caches of a process may keep open in all, given
/// `--cache-entries` and the descriptor limit: the rest is for connections and the loops.
pub fn descriptor_budget(cache_entries: usize, nofile: usize) -> usize {
    cache_entries.min(nofile / 2)
}

/// One descriptor counted in [`CACHED_FDS`]; given back when the entry holding it is dropped.
#[derive(Debug)]
struct Slot(());

impl Slot {
    fn take(budget: usize) -> Option<Slot> {
        CACHED_FDS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < budget).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        CACHED_FDS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The soft descriptor limit now (the server raised it before building its handlers).
fn nofile() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to write.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    usize::try_from(lim.rlim_cur.min(1 << 24)).unwrap_or(1024)
}

impl Files {
    pub fn new(cfg: FilesConfig) -> io::Result<Files> {
        let root = Root::new(&cfg.root, cfg.follow_symlinks_outside)?;
        Ok(Files {
            fd_budget: descriptor_budget(cfg.cache_entries, nofile()),
            idle: (cfg.cache_valid * IDLE_INTERVALS).max(MIN_IDLE),
            next_sweep: Instant::now(),
            cfg,
            root,
            index: HashMap::default(),
            entries: Slab::new(),
            inline_bytes: 0,
            transient: None,
            transient_file: None,
            key: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// The entry for a normalised path, loaded or revalidated as needed.
    fn lookup(&mut self, key: &[u8], now: Instant) -> Found {
        self.sweep(now);
        if let Some(&i) = self.index.get(key) {
            let e = &mut self.entries[i];
            if now.duration_since(e.checked) < self.cfg.cache_valid {
                e.used = now;
                return Found::Cached(i);
            }
            self.index.remove(key);
            self.drop_entry(i);
        }
        let Ok(kind) = self.load(key) else {
            return Found::Unavailable;
        };
        let entry = Entry {
            checked: now,
            used: now,
            kind,
        };
        if let Kind::File(FileInfo {
            content: Content::Uncached(_),
            ..
        }) = &entry.kind
        {
            self.transient = Some(entry);
            return Found::Transient;
        }
        if self.entries.len() >= self.cfg.cache_entries {
            self.evict(now);
        }
        self.inline_bytes += inline_len(&entry);
        let i = self.entries.insert(entry);
        self.index.insert(key.into(), i);
        Found::Cached(i)
    }

    fn drop_entry(&mut self, i: usize) {
        let e = self.entries.remove(i);
        self.inline_bytes -= inline_len(&e);
    }

    /// Drops stale entries; if the cache is still full, drops everything (a burst of distinct
    /// paths should not make the cache a scan of itself on every miss).
    fn evict(&mut self, now: Instant) {
        let valid = self.cfg.cache_valid;
        self.retain(|e| now.duration_since(e.checked) < valid);
        // Error answers go before files: a stream of distinct missing paths must not push the
        // hot files out with it.
        if self.entries.len() >= self.cfg.cache_entries {
            self.retain(|e| !matches!(e.kind, Kind::Status(_)));
        }
        if self.entries.len() >= self.cfg.cache_entries {
            self.retain(|_| false);
        }
    }

    /// Every `idle / 4`, drops the entries unused for `idle`, closing their descriptors: a full
    /// scan, but at most four per idle period, so a few nanoseconds a request amortised.
    fn sweep(&mut self, now: Instant) {
        // A comparison, not a subtraction: this runs on every request.
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + self.idle / 4;
        let idle = self.idle;
        self.retain(|e| now.duration_since(e.used) < idle);
        self.transient = None;
    }

    fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        let Files { index, entries, .. } = self;
        entries.retain(|_, e| keep(e));
        index.retain(|_, i| entries.contains(*i));
        self.inline_bytes = entries.iter().map(|(_, e)| inline_len(e)).sum();
    }

    /// Resolves a normalised path on the file system. `Err` only for failures that may pass.
    fn load(&self, key: &[u8]) -> Result<Kind, io::Error> {
        let dir_form = key.ends_with(b"/");
        let rel = key.strip_prefix(b"/").unwrap_or(key);
        let rel = rel.strip_suffix(b"/").unwrap_or(rel);
        let name = std::str::from_utf8(rel).unwrap_or("");
        Ok(match self.root.open(rel) {
            // `/file.txt/` names a directory; the file system says ENOTDIR, so do we.
            Ok(Opened::File(..)) if dir_form => Kind::Status(404),
            Ok(Opened::File(file, meta)) => Kind::File(self.file_info(name, file, &meta)),
            Ok(Opened::Dir) if !dir_form => Kind::Redirect(location(key)),
            Ok(Opened::Dir) => self.load_index(rel)?,
            Err(e) => Kind::Status(definite_status(&e).ok_or(e)?),
        })
    }

    /// The index file of directory `rel`, opened from the root (not from the directory's
    /// descriptor), so that an index symlink to elsewhere inside the root works.
    fn load_index(&self, rel: &[u8]) -> Result<Kind, io::Error> {
        let mut joined = rel.to_vec();
        if !joined.is_empty() {
            joined.push(b'/');
        }
        joined.extend_from_slice(self.cfg.index.as_bytes());
        Ok(match self.root.open(&joined) {
            Ok(Opened::File(file, meta)) => {
                Kind::File(self.file_info(&self.cfg.index, file, &meta))
            }
            Ok(Opened::Dir) => Kind::Status(403),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Kind::Status(403),
            Err(e) => Kind::Status(definite_status(&e).ok_or(e)?),
        })
    }

    fn file_info(&self, name: &str, mut file: File, meta: &Metadata) -> FileInfo {
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
        let content = content.unwrap_or_else(|| match Slot::take(self.fd_budget) {
            Some(slot) => Content::File(Arc::new(file), slot),
            None => Content::Uncached(Some(Arc::new(file))),
        });
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

    /// The answer for a request path: a normal path is its own key (no allocation); any other
    /// spelling is normalised first, so that all spellings of one file share one entry.
    fn find(&mut self, path: &str, now: Instant) -> Option<Found> {
        // The previous uncached answer's descriptor, if its reply did not take it (304, 416).
        self.transient_file = None;
        if path::is_normal(path) {
            return Some(self.lookup(path.as_bytes(), now));
        }
        let mut key = std::mem::take(&mut self.key);
        let found = path::normalize_into(path, &mut key)
            .ok()
            .map(|()| self.lookup(&key, now));
        self.key = key;
        found
    }
}

fn inline_len(e: &Entry) -> u64 {
    match &e.kind {
        Kind::File(FileInfo {
            content: Content::Bytes(b),
            ..
        }) => b.len() as u64,
        _ => 0,
    }
}

/// The Location of a directory named without its trailing slash, from the normalised path (never
/// the request's spelling, which may start with `//` and so name another origin).
fn location(key: &[u8]) -> Box<[u8]> {
    let mut out = Vec::new();
    path::push_location(key, &mut out);
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

/// The status for an open that failed in a way that will not pass by itself (so it may be
/// cached); `None` for the rest (out of descriptors or memory, I/O errors).
fn definite_status(e: &io::Error) -> Option<u16> {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename => {
            Some(404)
        }
        io::ErrorKind::PermissionDenied => Some(403),
        _ => match e.raw_os_error() {
            Some(libc::ELOOP | libc::ENAMETOOLONG) => Some(404),
            // openat2's RESOLVE_BENEATH: the path (a symlink in it) leads outside the root.
            Some(libc::EXDEV) => Some(403),
            _ => None,
        },
    }
}

impl Handler for Files {
    fn handle<'s>(&'s mut self, req: &Request<'_>, now: Instant) -> Reply<'s> {
        if req.method == Method::Other {
            return Reply::text(405, b"Allow: GET, HEAD\r\nContent-Type: text/plain\r\n");
        }
        let found = match self.find(req.path(), now) {
            None => return Reply::text(400, b"Content-Type: text/plain\r\n"),
            Some(Found::Unavailable) => {
                return Reply::text(503, b"Retry-After: 1\r\nContent-Type: text/plain\r\n");
            }
            Some(found) => found,
        };
        let Files {
            entries,
            transient,
            transient_file,
            scratch,
            ..
        } = self;
        let entry = match found {
            Found::Cached(i) => &entries[i],
            _ => {
                let Some(entry) = transient.as_mut() else {
                    return Reply::text(503, b"Retry-After: 1\r\nContent-Type: text/plain\r\n");
                };
                if let Kind::File(FileInfo {
                    content: Content::Uncached(file),
                    ..
                }) = &mut entry.kind
                {
                    *transient_file = file.take();
                }
                &*entry
            }
        };
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
                body: body(info, 0, info.len, transient_file),
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
                    body: body(info, start, len, transient_file),
                }
            }
        }
    }
}

/// The body of a reply; an uncached file's descriptor is `spare`, which the reply takes.
fn body<'a>(info: &'a FileInfo, offset: u64, len: u64, spare: &mut Option<Arc<File>>) -> Body<'a> {
    match &info.content {
        Content::Bytes(b) => Body::Bytes(&b[offset as usize..(offset + len) as usize]),
        Content::File(f, _) => Body::File {
            file: Arc::clone(f),
            offset,
        },
        Content::Uncached(_) => match spare.take() {
            Some(file) => Body::File { file, offset },
            // `handle` moved the descriptor to `spare` just before; a reply never finds it gone.
            None => Body::Empty,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream of distinct missing paths fills the cache with 404s; when it is full, they go
    /// before the hot file does.
    #[test]
    fn missing_paths_do_not_push_hot_files_out() {
        let dir = std::env::temp_dir().join(format!("edgeserve-evict-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hot.txt"), b"hot").unwrap();
        let mut files = Files::new(FilesConfig {
            root: dir.clone(),
            follow_symlinks_outside: false,
            index: "index.html".into(),
            cache_entries: 8,
            cache_valid: Duration::from_secs(60),
            inline_max: 16,
            mime: MimeTypes::default(),
        })
        .unwrap();
        let now = Instant::now();
        assert!(matches!(files.lookup(b"/hot.txt", now), Found::Cached(_)));
        let hot = files.index[&b"/hot.txt"[..]];
        for i in 0..40 {
            let missing = format!("/missing-{i}");
            files.lookup(missing.as_bytes(), now);
            assert!(files.entries.len() <= 8);
        }
        assert_eq!(
            files.index.get(&b"/hot.txt"[..]),
            Some(&hot),
            "the hot file was evicted"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
