//! The `log` backend: access lines (target `access`) to stdout, a file or nowhere; everything else
//! to stderr. Writes are buffered and flushed once per loop turn, not once per request.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::AccessLog;
use crate::http::access;
use crate::http::session::Exchange;

pub const ACCESS: &str = "access";

struct Logger {
    access: Option<Mutex<BufWriter<Box<dyn Write + Send>>>>,
    /// The access log's file, reopened on SIGHUP (after logrotate moved it away).
    access_path: Option<PathBuf>,
    level: LevelFilter,
    color: bool,
}

/// An access log is open: checked once per request, before anything is formatted (cheaper
/// than asking the `log` facade, which calls the logger through a vtable).
static ACCESS_ON: AtomicBool = AtomicBool::new(false);

/// True when access lines go somewhere.
pub fn access_enabled() -> bool {
    ACCESS_ON.load(Ordering::Relaxed)
}

/// The installed logger, for [`reopen`].
static LOGGER: OnceLock<&'static Logger> = OnceLock::new();

/// Installs the logger. Fails only if the access log file cannot be opened.
pub fn init(access: &AccessLog, level: LevelFilter) -> Result<(), String> {
    let (sink, access_path): (Option<Box<dyn Write + Send>>, _) = match access {
        AccessLog::Off => (None, None),
        AccessLog::Stdout => (Some(Box::new(io::stdout())), None),
        AccessLog::File(p) => (
            Some(Box::new(
                open(p).map_err(|e| format!("--access-log {}: {e}", p.display()))?,
            )),
            Some(p.clone()),
        ),
    };
    let logger: &'static Logger = Box::leak(Box::new(Logger {
        access: sink.map(|w| Mutex::new(BufWriter::with_capacity(64 * 1024, w))),
        access_path,
        level,
        color: io::stderr().is_terminal(),
    }));
    let max = if logger.access.is_some() {
        LevelFilter::Info.max(level)
    } else {
        level
    };
    if log::set_logger(logger).is_ok() {
        log::set_max_level(max);
        ACCESS_ON.store(logger.access.is_some(), Ordering::Relaxed);
        let _ = LOGGER.set(logger);
    }
    Ok(())
}

fn open(p: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}

/// Flushes the access log and opens its file again by name (SIGHUP). A file that cannot be
/// opened is logged, and lines keep going to the old one: nothing is lost.
pub fn reopen() {
    let Some(logger) = LOGGER.get() else { return };
    let (Some(access), Some(path)) = (&logger.access, &logger.access_path) else {
        log::info!("SIGHUP: no access log file to reopen");
        return;
    };
    match open(path) {
        Ok(file) => {
            let mut w = access.lock().unwrap_or_else(|e| e.into_inner());
            let _ = w.flush();
            *w = BufWriter::with_capacity(64 * 1024, Box::new(file));
            drop(w);
            log::info!("reopened the access log {}", path.display());
        }
        Err(e) => log::error!("cannot reopen the access log {}: {e}", path.display()),
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        if m.target() == ACCESS {
            self.access.is_some()
        } else {
            m.level() <= self.level
        }
    }

    fn log(&self, r: &Record<'_>) {
        if r.target() == ACCESS {
            if let Some(w) = &self.access {
                let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                let _ = writeln!(w, "{}", r.args());
            }
            return;
        }
        if r.level() > self.level {
            return;
        }
        let (pre, post) = match (self.color, r.level()) {
            (true, Level::Error) => ("\x1b[31m", "\x1b[0m"),
            (true, Level::Warn) => ("\x1b[33m", "\x1b[0m"),
            _ => ("", ""),
        };
        let _ = writeln!(
            io::stderr().lock(),
            "{pre}edgeserve: {}: {}{post}",
            r.level().as_str().to_lowercase(),
            r.args()
        );
    }

    fn flush(&self) {
        if let Some(w) = &self.access {
            let _ = w.lock().unwrap_or_else(|e| e.into_inner()).flush();
        }
    }
}

thread_local! {
    /// The access line being built, reused so that logging allocates nothing per request.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Logs one access line (target [`ACCESS`]) for an exchange the protocol core reported;
/// `upstream` names the server a proxied answer came from. Nothing is formatted when the
/// access log is off.
pub fn access(peer: Option<IpAddr>, date: &str, x: &Exchange<'_>, upstream: Option<&str>) {
    if !access_enabled() {
        return;
    }
    LINE.with_borrow_mut(|buf| {
        buf.clear();
        access::format(buf, peer, date, x.line, x.status, x.bytes, x.took());
        if let Some(up) = upstream {
            buf.extend_from_slice(b" upstream=");
            buf.extend_from_slice(up.as_bytes());
        }
        // `access::format` escapes every byte outside printable ASCII.
        log::info!(target: ACCESS, "{}", String::from_utf8_lossy(buf));
    });
}
