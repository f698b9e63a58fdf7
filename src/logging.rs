//! The `log` backend: access lines (target `access`) to stdout, a file or nowhere; everything else
//! to stderr. Writes are buffered and flushed once per loop turn, not once per request.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::AccessLog;

pub const ACCESS: &str = "access";

struct Logger {
    access: Option<Mutex<BufWriter<Box<dyn Write + Send>>>>,
    level: LevelFilter,
    color: bool,
}

/// Installs the logger. Fails only if the access log file cannot be opened.
pub fn init(access: &AccessLog, level: LevelFilter) -> Result<(), String> {
    let sink: Option<Box<dyn Write + Send>> = match access {
        AccessLog::Off => None,
        AccessLog::Stdout => Some(Box::new(io::stdout())),
        AccessLog::File(p) => Some(Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("--access-log {}: {e}", p.display()))?,
        )),
    };
    let logger = Logger {
        access: sink.map(|w| Mutex::new(BufWriter::with_capacity(64 * 1024, w))),
        level,
        color: io::stderr().is_terminal(),
    };
    let max = if logger.access.is_some() {
        LevelFilter::Info.max(level)
    } else {
        level
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max);
    }
    Ok(())
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
