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

pub mod headers;
#[cfg(feature = "dir-listing")]
mod listing;
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
use crate::http::accept::{self, Choice, Coding, Codings};
use crate::http::request::{Method, Request};
use crate::http::response::{Body, Reply, push_u64};
use headers::HeaderRules;
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
    /// Extra header lines by path prefix (`--header`).
    pub headers: HeaderRules,
    /// Pages for error statuses (`--error-page`): the status and the normalised path.
    pub error_pages: Vec<(u16, Box<[u8]>)>,
    /// Serve precompressed siblings (`--precompressed`).
    pub precompressed: bool,
    /// List directories without an index file (`--dir-listing`).
    pub dir_listing: bool,
}

impl FilesConfig {
    /// The defaults of the command line for a root (the tests' starting point).
    pub fn new(root: PathBuf) -> FilesConfig {
        FilesConfig {
            root,
            follow_symlinks_outside: false,
            index: "index.html".into(),
            cache_entries: 1024,
            cache_valid: Duration::from_secs(1),
            inline_max: 16 * 1024,
            mime: MimeTypes::default(),
            headers: HeaderRules::default(),
            error_pages: Vec::new(),
            precompressed: false,
            dir_listing: false,
        }
    }
}

/// What a cached path resolves to: only definite answers are cached.
#[derive(Debug)]
enum Kind {
    File(FileInfo),
    /// A directory named without its trailing slash: the Location to send, without the query.
    Redirect(Box<[u8]>),
    /// 404 or 403.
    Status(u16),
    /// A directory's HTML index (`--dir-listing`): its header lines and the page.
    #[cfg_attr(not(feature = "dir-listing"), allow(dead_code))]
    Listing(Box<[u8]>, Box<[u8]>),
}

#[derive(Debug)]
struct FileInfo {
    /// Content-Type, Content-Encoding (of a precompressed sibling), Accept-Ranges, then the
    /// `validators`.
    headers: Vec<u8>,
    /// Last-Modified, ETag, Vary (a file with precompressed siblings) and `--header` lines:
    /// what a 304 repeats.
    validators: Vec<u8>,
    /// Bytes of the Content-Type line at the start of `headers` (an error page's type).
    type_len: usize,
    etag: String,
    last_modified: String,
    mtime: u64,
    len: u64,
    /// Bytes of a small file, or the open descriptor of a large one.
    content: Content,
    /// Which precompressed siblings exist (`--precompressed`), loaded and revalidated with the
    /// file, so that choosing one costs no system call.
    codings: Codings,
    /// The siblings, by `Coding` (none without any).
    coded: Option<Box<[Option<FileInfo>; 3]>>,
}

impl FileInfo {
    /// The representation for `coding` (the file itself for identity).
    fn variant(&self, coding: Option<Coding>) -> &FileInfo {
        match (coding, &self.coded) {
            (Some(c), Some(coded)) => coded[c as usize].as_ref().unwrap_or(self),
            _ => self,
        }
    }

    fn variant_mut(&mut self, coding: Option<Coding>) -> &mut FileInfo {
        let held = match (coding, &self.coded) {
            (Some(c), Some(coded)) => coded[c as usize].is_some(),
            _ => false,
        };
        match coding {
            // Decided before borrowing, so the borrow checker sees the two ways apart.
            Some(c) if held => self
                .coded
                .as_mut()
                .and_then(|v| v[c as usize].as_mut())
                .expect("held"),
            _ => self,
        }
    }

    fn representations(&self) -> impl Iterator<Item = &FileInfo> {
        std::iter::once(self).chain(self.coded.iter().flat_map(|c| c.iter().flatten()))
    }
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

/// What an answer is, decided before the reply borrows from the cache.
enum Plan {
    Error(u16, Lines),
    Redirect,
    Listing,
    /// A file in the coding chosen (`None`: identity).
    File(Option<Coding>, FileAnswer),
}

enum FileAnswer {
    NotModified,
    Whole,
    Part { start: u64, end: u64 },
}

/// Header lines an error answer carries beside Content-Type and `--header`'s.
#[derive(Clone, Copy, Default)]
struct Lines {
    allow: bool,
    retry_after: bool,
    /// The path has precompressed siblings.
    vary: bool,
    /// `Content-Range: bytes */N` (416).
    range_of: Option<u64>,
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
        if let Kind::File(info) = &entry.kind
            && info
                .representations()
                .any(|r| matches!(r.content, Content::Uncached(_)))
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
            Ok(Opened::File(file, meta)) => {
                Kind::File(self.file_entry(rel, name, file, &meta, key))
            }
            Ok(Opened::Dir(_)) if !dir_form => Kind::Redirect(location(key)),
            Ok(Opened::Dir(dir)) => self.load_index(rel, key, dir)?,
            Err(e) => Kind::Status(definite_status(&e).ok_or(e)?),
        })
    }

    /// The index file of directory `rel`, opened from the root (not from the directory's
    /// descriptor), so that an index symlink to elsewhere inside the root works.
    /// With `--dir-listing`, a directory without one is listed (`dir`, open, is read for it).
    #[cfg_attr(not(feature = "dir-listing"), allow(unused_variables))]
    fn load_index(&self, rel: &[u8], key: &[u8], dir: File) -> Result<Kind, io::Error> {
        let mut joined = rel.to_vec();
        if !joined.is_empty() {
            joined.push(b'/');
        }
        joined.extend_from_slice(self.cfg.index.as_bytes());
        Ok(match self.root.open(&joined) {
            Ok(Opened::File(file, meta)) => {
                Kind::File(self.file_entry(&joined, &self.cfg.index, file, &meta, key))
            }
            Ok(Opened::Dir(_)) => Kind::Status(403),
            #[cfg(feature = "dir-listing")]
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.cfg.dir_listing => {
                let page = listing::render(dir, rel, key, &self.root)?;
                let mut headers = b"Content-Type: text/html; charset=utf-8\r\n".to_vec();
                headers.extend_from_slice(self.cfg.headers.for_path(key));
                Kind::Listing(headers.into(), page.into())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Kind::Status(403),
            Err(e) => Kind::Status(definite_status(&e).ok_or(e)?),
        })
    }

    /// A file (`rel` below the root, `name` for its type) and, with `--precompressed`, the
    /// siblings it has: `rel.br`, `rel.zst`, `rel.gz`, opened through the root like any file
    /// (a sibling the symlink rule refuses does not exist). `key` is the path it answers.
    fn file_entry(
        &self,
        rel: &[u8],
        name: &str,
        file: File,
        meta: &Metadata,
        key: &[u8],
    ) -> FileInfo {
        let mut coded: [Option<FileInfo>; 3] = [None, None, None];
        let mut codings = Codings::default();
        if self.cfg.precompressed {
            let mut sibling = rel.to_vec();
            for c in Coding::ALL {
                sibling.truncate(rel.len());
                sibling.extend_from_slice(c.suffix().as_bytes());
                if let Ok(Opened::File(f, m)) = self.root.open(&sibling) {
                    coded[c as usize] = Some(self.file_info(name, f, &m, Some(c), true, key));
                    codings = codings.with(c);
                }
            }
        }
        let vary = !codings.is_empty();
        let mut info = self.file_info(name, file, meta, None, vary, key);
        if vary {
            info.codings = codings;
            info.coded = Some(Box::new(coded));
        }
        info
    }

    /// One representation of a file: itself, or a sibling holding it in `coding`.
    fn file_info(
        &self,
        name: &str,
        mut file: File,
        meta: &Metadata,
        coding: Option<Coding>,
        vary: bool,
        key: &[u8],
    ) -> FileInfo {
        let len = meta.len();
        let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
        let last_modified = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(mtime));
        // Each coding has its own tag: a cache holding the br bytes must not revalidate them
        // against the gzip ones (RFC 9110 §8.8.3).
        let etag = match coding {
            None => format!("\"{mtime:x}-{len:x}\""),
            Some(c) => format!("\"{mtime:x}-{len:x}-{}\"", c.token()),
        };
        let mut validators =
            format!("Last-Modified: {last_modified}\r\nETag: {etag}\r\n").into_bytes();
        if vary {
            validators.extend_from_slice(b"Vary: Accept-Encoding\r\n");
        }
        validators.extend_from_slice(self.cfg.headers.for_path(key));
        let ty = self.cfg.mime.for_name(name);
        let mut headers = format!("Content-Type: {ty}\r\n").into_bytes();
        let type_len = headers.len();
        if let Some(c) = coding {
            headers.extend_from_slice(b"Content-Encoding: ");
            headers.extend_from_slice(c.token().as_bytes());
            headers.extend_from_slice(b"\r\n");
        }
        headers.extend_from_slice(b"Accept-Ranges: bytes\r\n");
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
            type_len,
            etag,
            last_modified,
            mtime,
            len,
            content,
            codings: Codings::default(),
            coded: None,
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
        Kind::File(info) => info
            .representations()
            .map(|r| match &r.content {
                Content::Bytes(b) => b.len() as u64,
                _ => 0,
            })
            .sum(),
        Kind::Listing(_, page) => page.len() as u64,
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
            let lines = Lines {
                allow: true,
                ..Lines::default()
            };
            return self.error(405, lines, req, false, now);
        }
        let found = match self.find(req.path(), now) {
            None => return self.error(400, Lines::default(), req, false, now),
            Some(Found::Unavailable) => {
                let lines = Lines {
                    retry_after: true,
                    ..Lines::default()
                };
                return self.error(503, lines, req, true, now);
            }
            Some(found) => found,
        };
        // First what to answer, from a borrow that ends here (an error page needs the cache
        // again); then the reply, borrowing the entry.
        let plan = match self.entry(&found) {
            None => Plan::Error(
                503,
                Lines {
                    retry_after: true,
                    ..Lines::default()
                },
            ),
            Some(entry) => plan(&entry.kind, req),
        };
        let (coding, answer) = match plan {
            Plan::Error(status, lines) => return self.error(status, lines, req, true, now),
            Plan::File(coding, answer) => (coding, answer),
            Plan::Redirect | Plan::Listing => {
                let Files {
                    entries,
                    transient,
                    scratch,
                    cfg,
                    key,
                    ..
                } = self;
                let entry = match found {
                    Found::Cached(i) => &entries[i],
                    _ => match transient {
                        Some(e) => &*e,
                        None => return Reply::text(503, b"Content-Type: text/plain\r\n"),
                    },
                };
                return match &entry.kind {
                    Kind::Listing(headers, page) => Reply {
                        status: 200,
                        headers,
                        len: page.len() as u64,
                        body: Body::Bytes(page),
                    },
                    Kind::Redirect(location) => {
                        scratch.clear();
                        scratch.extend_from_slice(b"Location: ");
                        scratch.extend_from_slice(location);
                        push_query(req.target, scratch);
                        scratch.extend_from_slice(b"\r\nContent-Type: text/plain\r\n");
                        scratch.extend_from_slice(cfg.headers.for_path(normal_key(req, key)));
                        let body = crate::http::response::reason(301).as_bytes();
                        Reply {
                            status: 301,
                            headers: scratch,
                            len: body.len() as u64,
                            body: Body::Bytes(body),
                        }
                    }
                    _ => Reply::text(503, b"Content-Type: text/plain\r\n"),
                };
            }
        };
        let Files {
            entries,
            transient,
            transient_file,
            scratch,
            ..
        } = self;
        let info = match found {
            Found::Cached(i) => match &entries[i].kind {
                Kind::File(info) => info.variant(coding),
                _ => return Reply::text(503, b"Content-Type: text/plain\r\n"),
            },
            _ => match transient.as_mut().map(|e| &mut e.kind) {
                Some(Kind::File(info)) => {
                    let info = info.variant_mut(coding);
                    if let Content::Uncached(file) = &mut info.content {
                        *transient_file = file.take();
                    }
                    &*info
                }
                _ => return Reply::text(503, b"Content-Type: text/plain\r\n"),
            },
        };
        match answer {
            FileAnswer::NotModified => Reply {
                status: 304,
                headers: &info.validators,
                len: 0,
                body: Body::Empty,
            },
            FileAnswer::Whole => Reply {
                status: 200,
                headers: &info.headers,
                len: info.len,
                body: body(info, 0, info.len, transient_file),
            },
            FileAnswer::Part { start, end } => {
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

/// What to answer with an entry: its status, or which representation of a file and how.
fn plan(kind: &Kind, req: &Request<'_>) -> Plan {
    let info = match kind {
        Kind::File(info) => info,
        Kind::Status(s) => return Plan::Error(*s, Lines::default()),
        Kind::Redirect(_) => return Plan::Redirect,
        Kind::Listing(..) => return Plan::Listing,
    };
    let vary = info.coded.is_some();
    let coding = if vary {
        match accept::choose(req.accept_encoding, info.codings) {
            Choice::Identity => None,
            Choice::Coded(c) => Some(c),
            Choice::None => {
                let lines = Lines {
                    vary,
                    ..Lines::default()
                };
                return Plan::Error(406, lines);
            }
        }
    } else {
        None
    };
    // Conditions and ranges apply to the representation chosen.
    let info = info.variant(coding);
    if not_modified(req, info) {
        return Plan::File(coding, FileAnswer::NotModified);
    }
    let spec = match req.range {
        Some(r) if req.method == Method::Get && if_range_holds(req.if_range, info) => {
            range::parse(r, info.len)
        }
        _ => RangeSpec::Ignore,
    };
    match spec {
        RangeSpec::Ignore => Plan::File(coding, FileAnswer::Whole),
        RangeSpec::Bytes { start, end } => Plan::File(coding, FileAnswer::Part { start, end }),
        RangeSpec::Unsatisfiable => {
            let lines = Lines {
                vary,
                range_of: Some(info.len),
                ..Lines::default()
            };
            Plan::Error(416, lines)
        }
    }
}

/// The normalised path of the request just found: the path itself when it was normal, else
/// what `find` wrote to `key`.
fn normal_key<'a>(req: &'a Request<'_>, key: &'a [u8]) -> &'a [u8] {
    let path = req.path();
    if path::is_normal(path) {
        path.as_bytes()
    } else {
        key
    }
}

impl Files {
    /// The `--header` lines for a proxied answer to `path` (the request's, not yet normalised).
    pub fn header_block(&self, path: &str) -> Option<headers::HeaderBlock> {
        if self.cfg.headers.is_empty() {
            return None;
        }
        if path::is_normal(path) {
            return self.cfg.headers.block(path.as_bytes());
        }
        // Rare (the proxy forwards few spellings that are not normal): a key of its own.
        let mut key = Vec::new();
        path::normalize_into(path, &mut key).ok()?;
        self.cfg.headers.block(&key)
    }

    /// The entry `find` found.
    fn entry(&self, found: &Found) -> Option<&Entry> {
        match found {
            Found::Cached(i) => self.entries.get(*i),
            _ => self.transient.as_ref(),
        }
    }

    /// An error answer: the `--error-page` for its status if there is one and it is a file (else
    /// the built-in text), with the `--header` lines for the request's path. `keyed`: `find`
    /// normalised the path (else the lines are those of the path as sent).
    fn error<'s>(
        &'s mut self,
        status: u16,
        lines: Lines,
        req: &Request<'_>,
        keyed: bool,
        now: Instant,
    ) -> Reply<'s> {
        let page = self.error_page(status, now);
        let Files {
            cfg,
            key,
            scratch,
            entries,
            transient,
            transient_file,
            ..
        } = self;
        let page = match page {
            Some(Found::Cached(i)) => match &entries[i].kind {
                Kind::File(info) => Some(info),
                _ => None,
            },
            Some(Found::Transient) => match transient.as_mut().map(|e| &mut e.kind) {
                Some(Kind::File(info)) => {
                    if let Content::Uncached(file) = &mut info.content {
                        *transient_file = file.take();
                    }
                    Some(&*info)
                }
                _ => None,
            },
            _ => None,
        };
        scratch.clear();
        match page {
            Some(info) => scratch.extend_from_slice(&info.headers[..info.type_len]),
            None => scratch.extend_from_slice(b"Content-Type: text/plain\r\n"),
        }
        if lines.allow {
            scratch.extend_from_slice(b"Allow: GET, HEAD\r\n");
        }
        if lines.retry_after {
            scratch.extend_from_slice(b"Retry-After: 1\r\n");
        }
        if lines.vary {
            scratch.extend_from_slice(b"Vary: Accept-Encoding\r\n");
        }
        if let Some(len) = lines.range_of {
            scratch.extend_from_slice(b"Content-Range: bytes */");
            push_u64(scratch, len);
            scratch.extend_from_slice(b"\r\n");
        }
        if !cfg.headers.is_empty() {
            let path = if keyed {
                normal_key(req, key)
            } else {
                req.path().as_bytes()
            };
            scratch.extend_from_slice(cfg.headers.for_path(path));
        }
        match page {
            Some(info) => Reply {
                status,
                headers: scratch,
                len: info.len,
                body: body(info, 0, info.len, transient_file),
            },
            None => {
                let text = crate::http::response::reason(status).as_bytes();
                Reply {
                    status,
                    headers: scratch,
                    len: text.len() as u64,
                    body: Body::Bytes(text),
                }
            }
        }
    }

    /// The entry of the page for `status`, looked up through the cache like any file, so the
    /// root's symlink rule holds for it too. What it finds is used only if it is a file: a
    /// missing page gives the built-in text, never another error page.
    fn error_page(&mut self, status: u16, now: Instant) -> Option<Found> {
        if self.cfg.error_pages.is_empty() {
            return None;
        }
        let pages = std::mem::take(&mut self.cfg.error_pages);
        let found = pages
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, key)| self.lookup(key, now));
        self.cfg.error_pages = pages;
        found
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
            cache_entries: 8,
            cache_valid: Duration::from_secs(60),
            inline_max: 16,
            ..FilesConfig::new(dir.clone())
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
