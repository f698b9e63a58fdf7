//! edgeserve: a single-threaded, event-driven HTTP/1.1 server on an edge-triggered poller, with an
//! explicit state machine per connection.
//!
//! ```text
//! listener ──accept (drain until WouldBlock)──▶ slab<Conn> (key = poller key)
//! poller.wait(edge) ─▶ readiness flags on Conn ─▶ Conn::drive()
//!     read until WouldBlock (budgeted) ─▶ Session (sans-I/O): bytes ─▶ requests ─▶ Files
//!     output: [head bytes | file range] ─▶ send / sendfile until WouldBlock
//!     keep-alive ─▶ back to reading   |   close ─▶ slab slot freed
//! ```
//!
//! The protocol core ([`http`]) does no I/O, so it runs unchanged in unit tests and fuzz targets;
//! sockets, files and the poller live in [`reactor`], [`conn`] and [`files`].
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod config;
pub mod conn;
pub mod files;
pub mod http;
pub mod logging;
#[cfg(feature = "proxy")]
pub mod proxy;
pub mod reactor;
pub mod service;
pub mod signal;
pub mod timer;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use polling::Poller;
use socket2::{Domain, Protocol, Socket, Type};

pub use config::Config;
use files::{Files, FilesConfig};
use reactor::Reactor;

/// Errors a user can cause at startup; each prints as one line.
#[derive(Debug)]
pub enum Error {
    Root(std::path::PathBuf, io::Error),
    Bind(SocketAddr, io::Error),
    Config(String),
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Root(p, e) => write!(f, "document root {}: {e}", p.display()),
            Error::Bind(a, e) => write!(f, "cannot listen on {a}: {e}"),
            Error::Config(s) => f.write_str(s),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// A bound server, ready to run.
pub struct Server {
    reactor: Reactor,
}

/// Stops a running server from another thread: a graceful shutdown, as on SIGTERM.
#[derive(Clone)]
pub struct ServerHandle {
    poller: Arc<Poller>,
    stop: Arc<AtomicBool>,
}

impl ServerHandle {
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.poller.notify();
    }
}

impl Server {
    /// Binds `config.listen` and prepares the document root.
    pub fn bind(config: Config) -> Result<Server, Error> {
        let listener =
            listen(config.listen, config.backlog).map_err(|e| Error::Bind(config.listen, e))?;
        Server::with_listener(config, listener)
    }

    /// Serves on a listener made elsewhere (systemd socket activation); `config.listen` is unused.
    pub fn with_listener(config: Config, listener: TcpListener) -> Result<Server, Error> {
        listener.set_nonblocking(true)?;
        if cfg!(not(feature = "proxy")) && !config.proxies.is_empty() {
            return Err(Error::Config(
                "this build has no proxy (cargo feature \"proxy\")".into(),
            ));
        }
        let mime = config.mime().map_err(Error::Config)?;
        let files = Files::new(FilesConfig {
            root: config.root.clone(),
            follow_symlinks_outside: config.follow_symlinks_outside,
            index: config.index.clone(),
            cache_entries: config.cache_entries,
            cache_valid: config.cache_valid,
            inline_max: config.inline_max,
            mime,
        })
        .map_err(|e| Error::Root(config.root.clone(), e))?;
        let max_conns = config
            .max_conns
            .unwrap_or_else(|| default_max_conns(config.cache_entries));
        let reactor = Reactor::new(config, listener, files, max_conns)?;
        Ok(Server { reactor })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.reactor.local_addr()
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            poller: self.reactor.poller(),
            stop: self.reactor.stop_flag(),
        }
    }

    /// SIGINT and SIGTERM begin a graceful shutdown (for the binary; tests use [`ServerHandle`]).
    pub fn handle_signals(&mut self) -> Result<(), Error> {
        Ok(self.reactor.handle_signals()?)
    }

    /// Runs until shut down; returns once the connections in flight are done or the grace period
    /// is over.
    pub fn run(mut self) -> io::Result<()> {
        self.reactor.run()
    }
}

fn listen(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_tcp_nodelay(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// Raises the descriptor limit to its hard maximum and leaves room for the file cache and the
/// loop's own descriptors.
fn default_max_conns(cache_entries: usize) -> usize {
    let Some(nofile) = service::raise_nofile_limit() else {
        return 1024;
    };
    let nofile = nofile.min(1 << 24) as usize;
    let reserve = 16 + cache_entries.min(nofile / 2);
    nofile.saturating_sub(reserve).max(1)
}
