//! edgeserve: a single-threaded, event-driven HTTP/1.1 server on an edge-triggered poller, with an
//! explicit state machine per connection.
//!
//! ```text
//! listener ──accept (drain until WouldBlock)──▶ slab<Conn> (key = poller key)
//! poller.wait(edge) ─▶ readiness flags on Conn ─▶ Conn::drive()
//!     transport (plain TCP): read / write / sendfile, one result type (Io)
//!     protocol slot: HTTP session (sans-I/O: bytes in, events out) ─▶ route: files | relay
//!                    relay to an upstream ─▶ on 101: tunnel (bytes both ways)
//!     output: [head bytes | file range] ─▶ transport
//!     lifecycle: open ─▶ lingering ─▶ closed (the slab slot is freed)
//! ```
//!
//! The protocol core ([`http`]) does no I/O and imports nothing else of the server, so it runs
//! unchanged in unit tests and fuzz targets; sockets, files and the poller live in [`reactor`],
//! [`conn`], [`files`] and [`proxy`].
#![forbid(unsafe_op_in_unsafe_fn)]
// Every unsafe block says why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod app;
pub mod config;
pub mod conn;
pub mod files;
pub mod http;
pub mod listen;
pub mod logging;
pub mod models;
#[cfg(feature = "proxy")]
pub mod proxy;
pub mod proxy_protocol;
pub mod reactor;
pub mod reload;
pub mod service;
pub mod signal;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use polling::Poller;

use app::App;
pub use config::{Config, Model};
#[cfg(feature = "models")]
use models::pooled::Worker;
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
    plan: Plan,
}

/// The loops and threads of a model, built (and their errors reported) before it runs.
enum Plan {
    Single(Reactor),
    #[cfg(feature = "models")]
    Sharded(Vec<Reactor>),
    #[cfg(feature = "models")]
    Proactor(Reactor, models::proactor::Workers),
    #[cfg(feature = "models")]
    ReactorPool(Reactor, Vec<Worker>),
    #[cfg(feature = "models")]
    LeaderFollowers(Reactor, Vec<Worker>),
}

/// Stops a running server from another thread: a graceful shutdown, as on SIGTERM.
#[derive(Clone)]
pub struct ServerHandle {
    loops: Vec<(Arc<Poller>, Arc<reactor::Stop>)>,
}

impl ServerHandle {
    fn of(r: &Reactor) -> ServerHandle {
        ServerHandle {
            loops: vec![(r.poller(), r.stop_flag())],
        }
    }

    /// Begins a graceful shutdown, as SIGTERM does.
    pub fn shutdown(&self) {
        self.request(reactor::Stop::GRACEFUL);
    }

    /// Ends the grace period now, as a second SIGTERM does.
    pub fn stop_now(&self) {
        self.request(reactor::Stop::NOW);
    }

    /// Wakes the loops (to take up a reload).
    pub fn wake(&self) {
        for (poller, _) in &self.loops {
            let _ = poller.notify();
        }
    }

    /// True once every loop of the server has finished.
    pub fn is_done(&self) -> bool {
        self.loops.iter().all(|(_, stop)| stop.is_done())
    }

    fn request(&self, level: u8) {
        for (poller, stop) in &self.loops {
            stop.request(level);
            let _ = poller.notify();
        }
    }
}

impl Server {
    /// Binds every `config.listen` and prepares the document root.
    pub fn bind(config: Config) -> Result<Server, Error> {
        let sharded = config.model == Model::Sharded;
        let listeners = listen::bind_all(&config.listen, config.backlog, sharded)
            .map_err(|(addr, e)| Error::Bind(addr, e))?;
        Server::build(config, listeners, sharded)
    }

    /// Serves on listeners made elsewhere (systemd socket activation): each takes the
    /// `config.listen` of its address, if there is one, for its settings; no other is bound.
    /// Shards then share those sockets (they cannot bind more with SO_REUSEPORT).
    pub fn with_listeners(config: Config, socks: Vec<TcpListener>) -> Result<Server, Error> {
        let listeners = listen::adopt(socks, &config.listen)?;
        let server = Server::build(config, listeners, false)?;
        // systemd owns these sockets: a reload leaves them as they are.
        server.first().current().set_layout(1, true);
        Ok(server)
    }

    fn build(
        config: Config,
        listeners: Vec<listen::Listener>,
        reuse_port: bool,
    ) -> Result<Server, Error> {
        for l in &listeners {
            l.sock.set_nonblocking(true)?;
        }
        supported(&config)?;
        let max_conns = config
            .max_conns
            .unwrap_or_else(|| default_max_conns(config.cache_entries));
        let cfg = Arc::new(config);
        let _ = reuse_port; // only shards bind more listeners
        #[cfg(feature = "tls")]
        let https = match listeners.iter().find(|l| l.spec.tls) {
            // Redirects go to the first TLS listener's port.
            Some(l) => Some(Arc::new(
                conn::tls::Https::new(&cfg.tls, l.local_addr().port()).map_err(Error::Config)?,
            )),
            None => None,
        };
        let reactor = |listeners, max_conns| -> Result<Reactor, Error> {
            #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
            let mut r = Reactor::new(Arc::clone(&cfg), listeners, App::new(&cfg)?, max_conns)?;
            #[cfg(feature = "tls")]
            if let Some(https) = &https {
                r.set_https(Arc::clone(https));
            }
            Ok(r)
        };
        let plan = match cfg.model {
            Model::Single => Plan::Single(reactor(listeners, max_conns)?),
            #[cfg(not(feature = "models"))]
            _ => unreachable!("refused above"),
            #[cfg(feature = "models")]
            Model::Sharded => {
                let mut sets = Vec::with_capacity(cfg.threads());
                for _ in 1..cfg.threads() {
                    let set = listeners
                        .iter()
                        .map(|l| {
                            l.for_shard(cfg.backlog, reuse_port)
                                .map_err(|e| Error::Bind(l.local_addr(), e))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    sets.push(set);
                }
                sets.insert(0, listeners);
                let mut shards = sets
                    .into_iter()
                    .map(|l| reactor(l, max_conns))
                    .collect::<Result<Vec<_>, _>>()?;
                let current = shards[0].current();
                current.set_layout(shards.len(), false);
                for (i, r) in shards.iter_mut().enumerate().skip(1) {
                    r.share_current(Arc::clone(&current), i);
                }
                let pollers = shards.iter().map(|r| r.poller()).collect();
                let limit = Arc::new(reactor::SharedLimit::new(max_conns, pollers));
                #[cfg(feature = "proxy")]
                let tunnels = shards[0].tunnels();
                for r in &mut shards {
                    r.share_limit(Arc::clone(&limit));
                    #[cfg(feature = "proxy")]
                    r.share_tunnels(Arc::clone(&tunnels));
                }
                let peers = shards[1..].iter().map(ServerHandle::of).collect();
                shards[0].set_peers(peers);
                Plan::Sharded(shards)
            }
            #[cfg(feature = "models")]
            Model::ProactorPool => {
                let (workers, link) = models::proactor::Workers::new(&cfg, cfg.threads())?;
                let mut r = reactor(listeners, max_conns)?;
                r.set_proactor(link);
                Plan::Proactor(r, workers)
            }
            #[cfg(feature = "models")]
            Model::ReactorPool | Model::LeaderFollowers => {
                let r = reactor(listeners, max_conns)?;
                let workers = (0..cfg.threads())
                    .map(|_| Worker::new(&r))
                    .collect::<Result<Vec<_>, _>>()?;
                if cfg.model == Model::ReactorPool {
                    Plan::ReactorPool(r, workers)
                } else {
                    Plan::LeaderFollowers(r, workers)
                }
            }
        };
        Ok(Server { plan })
    }

    /// The loop that owns the signals (and whose address is the server's).
    fn first(&self) -> &Reactor {
        match &self.plan {
            Plan::Single(r) => r,
            #[cfg(feature = "models")]
            Plan::Proactor(r, _) | Plan::ReactorPool(r, _) | Plan::LeaderFollowers(r, _) => r,
            #[cfg(feature = "models")]
            Plan::Sharded(shards) => &shards[0],
        }
    }

    fn first_mut(&mut self) -> &mut Reactor {
        match &mut self.plan {
            Plan::Single(r) => r,
            #[cfg(feature = "models")]
            Plan::Proactor(r, _) | Plan::ReactorPool(r, _) | Plan::LeaderFollowers(r, _) => r,
            #[cfg(feature = "models")]
            Plan::Sharded(shards) => &mut shards[0],
        }
    }

    /// The address of the first listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.first().local_addrs()[0].addr
    }

    /// Every listener's address (the real port where port 0 was asked for) and settings, in
    /// the order given.
    pub fn listening(&self) -> &[config::Listen] {
        self.first().local_addrs()
    }

    pub fn handle(&self) -> ServerHandle {
        match &self.plan {
            #[cfg(feature = "models")]
            Plan::Sharded(shards) => ServerHandle {
                loops: shards
                    .iter()
                    .flat_map(|r| ServerHandle::of(r).loops)
                    .collect(),
            },
            _ => ServerHandle::of(self.first()),
        }
    }

    /// SIGINT and SIGTERM begin a graceful shutdown (for the binary; tests use [`ServerHandle`]).
    pub fn handle_signals(&mut self) -> Result<(), Error> {
        Ok(self.first_mut().handle_signals()?)
    }

    /// Runs until shut down; returns once the connections in flight are done or the grace period
    /// is over.
    pub fn run(self) -> io::Result<()> {
        match self.plan {
            Plan::Single(mut r) => r.run(),
            #[cfg(feature = "models")]
            Plan::Sharded(shards) => models::sharded(shards),
            #[cfg(feature = "models")]
            Plan::Proactor(mut r, workers) => {
                let running = workers.spawn(r.config(), &r.current(), &r.poller())?;
                let result = r.run();
                running.stop();
                result
            }
            #[cfg(feature = "models")]
            Plan::ReactorPool(r, workers) => models::pooled::reactor_pool(r, workers),
            #[cfg(feature = "models")]
            Plan::LeaderFollowers(r, workers) => models::pooled::leader_followers(r, workers),
        }
    }
}

/// Refuses what this build cannot do.
fn supported(config: &Config) -> Result<(), Error> {
    config::check_tls(config).map_err(Error::Config)?;
    if cfg!(not(feature = "proxy")) && !config.proxies.is_empty() {
        return Err(Error::Config(
            "this build has no proxy (cargo feature \"proxy\")".into(),
        ));
    }
    if cfg!(not(feature = "models")) && config.model != Model::Single {
        return Err(Error::Config(format!(
            "--model {}: this build has the single model only (cargo feature \"models\")",
            config.model.name()
        )));
    }
    Ok(())
}

/// What a reload checks before it publishes a configuration: what this build supports, and
/// what a handler built from it opens (the document root, the mime table). Features that read
/// files named by their settings (certificates, password files) check them here too.
pub fn check_reloadable(config: &Config) -> Result<(), Error> {
    supported(config)?;
    App::new(config)?;
    // The certificate and key load and belong together (what a TLS listener would serve).
    #[cfg(feature = "tls")]
    if config.listen.iter().any(|l| l.tls) {
        conn::tls::Https::new(&config.tls, 0).map_err(Error::Config)?;
    }
    Ok(())
}

/// `--check-config`: everything starting would check short of binding and switching user:
/// the flags (parsed already), what this build supports, the document root, the mime table,
/// and that the access log can be opened for appending.
pub fn check(config: &Config) -> Result<(), Error> {
    check_reloadable(config)?;
    if let config::AccessLog::File(p) = &config.access_log {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| Error::Config(format!("--access-log {}: {e}", p.display())))?;
    }
    Ok(())
}

/// Raises the descriptor limit to its hard maximum and leaves room for the file caches and the
/// loops' own descriptors. The caches of every shard and worker share one descriptor budget
/// (`files::descriptor_budget`), so the reserve is the same whatever the model.
fn default_max_conns(cache_entries: usize) -> usize {
    let Some(nofile) = service::raise_nofile_limit() else {
        return 1024;
    };
    let nofile = nofile.min(1 << 24) as usize;
    let reserve = 16 + files::descriptor_budget(cache_entries, nofile);
    nofile.saturating_sub(reserve).max(1)
}
