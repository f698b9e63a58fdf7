//! Reload on SIGHUP: the configuration is read again the way the command line first said (the
//! `--config` file and the files settings name), checked as startup checks it, and published
//! here; every loop and worker thread picks it up at its next turn (one atomic load when nothing
//! changed) and rebuilds what it owns from it: its handler (file cache, mime table, root), its
//! routes, the upstream pool's policy, its listeners (an address new in the file is bound here
//! first, one socket per shard, so that a port in use fails the reload; one gone from the file
//! is closed by each loop; one that stays keeps its socket and its backlog, so no connect fails
//! during a reload). Requests already routed keep the routes they started with
//! (a relay holds them); the next request uses the new settings. A reload that fails publishes
//! nothing: the server goes on as it was and one line says why.
//!
//! A feature that reads files named by its settings (certificates, password files) re-reads them
//! where the handler or transport is rebuilt from a new [`Config`], and checks them in
//! [`crate::check_reloadable`], which a reload runs before it publishes anything.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::app::App;
use crate::config::{self, Command, Config, Listen};
use crate::files::mime::MimeTypes;
use crate::listen::{self, Listener};
use crate::reactor::MAX_LISTENERS;

/// A configuration and what was read from the files it names, once for every thread (so that
/// no thread reads a file that changed again since, or went). Files read here: the mime table;
/// certificates and password files belong here too.
pub struct Loaded {
    pub config: Arc<Config>,
    mime: MimeTypes,
    /// Listeners this reload opened (addresses new in the file), one set per loop: each loop
    /// takes its own when it picks the reload up.
    opened: Mutex<Vec<Vec<Listener>>>,
}

impl Loaded {
    /// Reads the files `config` names and checks what a handler built from it opens.
    fn read(config: Config) -> Result<Loaded, crate::Error> {
        crate::check_reloadable(&config)?;
        let mime = config.mime().map_err(crate::Error::Config)?;
        Ok(Loaded {
            config: Arc::new(config),
            mime,
            opened: Mutex::new(Vec::new()),
        })
    }

    /// The listeners opened for loop number `shard` (once).
    pub fn take_opened(&self, shard: usize) -> Vec<Listener> {
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        opened
            .get_mut(shard)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// A handler for one thread (its own file cache).
    pub fn app(&self) -> Result<App, crate::Error> {
        App::with_mime(&self.config, self.mime.clone())
    }
}

/// The configuration in force, and a counter that changes with it.
pub struct Current {
    generation: AtomicU64,
    /// Loops that each hold a socket of every listener (the shards), and whether the sockets
    /// came from systemd (then they are systemd's to change, not a reload's).
    loops: AtomicUsize,
    activated: AtomicBool,
    /// `None` until the first reload: each thread built its handler at startup.
    loaded: Mutex<Option<Arc<Loaded>>>,
    /// The configuration the server started with (what a reload parses again).
    first: Arc<Config>,
}

impl Current {
    pub fn new(config: Arc<Config>) -> Arc<Current> {
        Arc::new(Current {
            generation: AtomicU64::new(0),
            loops: AtomicUsize::new(1),
            activated: AtomicBool::new(false),
            loaded: Mutex::new(None),
            first: config,
        })
    }

    /// How the server holds its listeners: `loops` sets of them (one per shard), bound with
    /// SO_REUSEPORT when there are several, or handed over by systemd.
    pub fn set_layout(&self, loops: usize, activated: bool) {
        self.loops.store(loops.max(1), Ordering::Relaxed);
        self.activated.store(activated, Ordering::Relaxed);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// What a reload published, if it did since generation `seen` (which is moved on).
    pub fn newer(&self, seen: &mut u64) -> Option<Arc<Loaded>> {
        if self.generation.load(Ordering::Acquire) == *seen {
            return None;
        }
        let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        *seen = self.generation.load(Ordering::Acquire);
        loaded.clone()
    }

    fn config(&self) -> Arc<Config> {
        let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        loaded
            .as_ref()
            .map_or_else(|| Arc::clone(&self.first), |l| Arc::clone(&l.config))
    }

    fn publish(&self, loaded: Loaded) {
        let mut current = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        *current = Some(Arc::new(loaded));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Reads, checks and publishes the configuration again (SIGHUP). Logs one line either way.
pub fn reload(current: &Current) {
    let old = current.config();
    match load(&old, current) {
        Ok(new) => {
            current.publish(new);
            match &old.config_file {
                Some(f) => log::info!("reloaded {}", f.display()),
                None => log::info!("reloaded the files named by the command line"),
            }
        }
        Err(e) => log::error!("reload failed, the running configuration stays: {e}"),
    }
}

/// The configuration as the command line says now, checked; settings read only at startup keep
/// their running values (with a warning when the file changed them).
fn load(old: &Config, current: &Current) -> Result<Loaded, String> {
    // A server built in code (tests, embedders) has no command line: its files are re-read.
    let mut new = if old.args.is_empty() {
        old.clone()
    } else {
        match config::parse_args(old.args.iter().cloned())? {
            Command::Run(c) | Command::Check(c) => *c,
            Command::Help | Command::Version => return Err("the command line changed".into()),
        }
    };
    keep_startup_settings(old, &mut new);
    if current.activated.load(Ordering::Relaxed) && new.listen != old.listen {
        log::warn!("reload: the listeners came from systemd; change them there");
        new.listen = old.listen.clone();
    }
    if new.listen.iter().any(|l| l.tls) && !old.listen.iter().any(|l| l.tls) {
        return Err("a first TLS listener takes effect at restart only".into());
    }
    if new.listen.len() > MAX_LISTENERS {
        return Err(format!("more than {MAX_LISTENERS} listeners"));
    }
    let loaded = Loaded::read(new).map_err(|e| e.to_string())?;
    // Bound before anything is published: a port in use fails the whole reload.
    let added: Vec<Listen> = loaded
        .config
        .listen
        .iter()
        .filter(|l| !old.listen.iter().any(|o| o.addr == l.addr))
        .cloned()
        .collect();
    let loops = current.loops.load(Ordering::Relaxed);
    let mut opened = Vec::with_capacity(loops);
    if !added.is_empty() {
        let first = listen::bind_all(&added, old.backlog, loops > 1)
            .map_err(|(addr, e)| format!("cannot listen on {addr}: {e}"))?;
        for _ in 1..loops {
            let set = first
                .iter()
                .map(|l| l.for_shard(old.backlog, true))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("cannot listen: {e}"))?;
            opened.push(set);
        }
        for l in &first {
            let scheme = if l.spec.tls { "https" } else { "http" };
            log::info!("listening on {scheme}://{}", l.spec.addr);
        }
        opened.insert(0, first);
    }
    *loaded.opened.lock().unwrap_or_else(|e| e.into_inner()) = opened;
    Ok(loaded)
}

/// Settings that shape the process (threads, sockets, limits sized at startup, the logger): a
/// reload cannot change them; a restart (SIGTERM drains, then start again) can.
fn keep_startup_settings(old: &Config, new: &mut Config) {
    macro_rules! keep {
        ($($field:ident $(. $sub:ident)? => $name:literal),* $(,)?) => {$(
            if new.$field $(.$sub)? != old.$field $(.$sub)? {
                log::warn!("reload: {} takes effect at restart only; keeping the running value", $name);
                new.$field $(.$sub)? = old.$field $(.$sub)?.clone();
            }
        )*};
    }
    keep!(
        backlog => "backlog",
        max_conns => "max-conns",
        max_tunnels => "max-tunnels",
        model => "model",
        workers => "workers",
        user => "user",
        access_log => "access-log",
        log_level => "log-level",
        // The certificate files themselves are read again on every SIGHUP
        // (`Reactor::reload_certificates`); where they are and what answers over TLS carry is
        // set up once, shared by every loop.
        tls => "tls-cert, tls-key, redirect-https and hsts",
    );
}
