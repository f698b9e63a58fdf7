//! The handler a server runs: the static files, with the bench routes in front when asked for.
//! Every thread that runs handlers builds its own (its own file cache), so none is shared.

use std::time::Instant;

use crate::config::Config;
use crate::files::headers::HeaderBlock;
use crate::files::mime::MimeTypes;
use crate::files::{Files, FilesConfig};
use crate::http::request::Request;
use crate::http::response::Reply;

/// Something that answers requests at once: the static files, the bench routes, a test double.
/// The protocol core never calls it; the connection does, for the heads the core hands out.
pub trait Handler {
    fn handle<'s>(&'s mut self, req: &Request<'_>, now: Instant) -> Reply<'s>;

    /// The `--header` lines for a proxied answer to a request for `path`, if any apply.
    fn proxied_headers(&self, _path: &str) -> Option<HeaderBlock> {
        None
    }
}

pub struct App {
    files: Files,
    #[cfg(feature = "bench-routes")]
    bench: bool,
}

impl App {
    pub fn new(config: &Config) -> Result<App, crate::Error> {
        let mime = config.mime().map_err(crate::Error::Config)?;
        App::with_mime(config, mime)
    }

    /// A handler with a mime table read already (a reload reads it once for every thread).
    pub fn with_mime(config: &Config, mime: MimeTypes) -> Result<App, crate::Error> {
        let files = Files::new(FilesConfig {
            root: config.root.clone(),
            follow_symlinks_outside: config.follow_symlinks_outside,
            index: config.index.clone(),
            cache_entries: config.cache_entries,
            cache_valid: config.cache_valid,
            inline_max: config.inline_max,
            mime,
            headers: crate::files::headers::HeaderRules::new(&config.headers),
            error_pages: config
                .error_pages
                .iter()
                .map(|(status, path)| {
                    let mut key = Vec::new();
                    // Checked when the flag was parsed.
                    let _ = crate::files::path::normalize_into(path, &mut key);
                    (*status, key.into_boxed_slice())
                })
                .collect(),
            precompressed: config.precompressed,
            dir_listing: config.dir_listing,
        })
        .map_err(|e| crate::Error::Root(config.root.clone(), e))?;
        Ok(App {
            files,
            #[cfg(feature = "bench-routes")]
            bench: config.bench_routes,
        })
    }
}

impl Handler for App {
    fn handle<'s>(&'s mut self, req: &Request<'_>, now: Instant) -> Reply<'s> {
        #[cfg(feature = "bench-routes")]
        if self.bench
            && let Some(name) = req.path().strip_prefix("/_bench/")
        {
            return bench::handle(name, req.target);
        }
        self.files.handle(req, now)
    }

    fn proxied_headers(&self, path: &str) -> Option<HeaderBlock> {
        self.files.header_block(path)
    }
}

/// Stand-ins for the logic unit of a real service: CPU work and a blocking call.
#[cfg(feature = "bench-routes")]
mod bench {
    use std::time::Duration;

    use crate::http::response::{Body, Reply};

    /// Caps, so that a typo cannot stall a handler thread for hours.
    const MAX_CPU_US: u64 = 1_000_000;
    const MAX_SLEEP_MS: u64 = 10_000;

    pub fn handle(name: &str, target: &str) -> Reply<'static> {
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let param = |key: &str, max: u64| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&v| v <= max)
        };
        match name {
            "cpu" => match param("us", MAX_CPU_US) {
                Some(us) => {
                    spin(Duration::from_micros(us));
                    ok()
                }
                None => Reply::text(400, b"Content-Type: text/plain\r\n"),
            },
            "sleep" => match param("ms", MAX_SLEEP_MS) {
                Some(ms) => {
                    std::thread::sleep(Duration::from_millis(ms));
                    ok()
                }
                None => Reply::text(400, b"Content-Type: text/plain\r\n"),
            },
            _ => Reply::text(404, b"Content-Type: text/plain\r\n"),
        }
    }

    /// Spins until this thread has used `d` of CPU time (not wall time: a spin preempted by
    /// another thread on the same core would otherwise count that thread's work as its own).
    fn spin(d: Duration) {
        let start = thread_cpu_time();
        let mut x = 0u64;
        while thread_cpu_time().saturating_sub(start) < d {
            // Work the optimiser cannot drop, between clock reads.
            for i in 0..64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
    }

    fn thread_cpu_time() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    fn ok() -> Reply<'static> {
        Reply {
            status: 200,
            headers: b"Content-Type: text/plain\r\nCache-Control: no-store\r\n",
            len: 3,
            body: Body::Bytes(b"ok\n"),
        }
    }
}
