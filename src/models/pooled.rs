//! The models where a connection is driven by whichever thread gets it, not by the loop:
//!
//! - `reactor-pool` (half-sync/half-reactive): the loop thread only waits for readiness and
//!   queues ready connections; worker threads read, parse, handle and write, then hand the
//!   connection back. The queue is bounded: when it is full, ready connections stay unread on
//!   the reactor's ready list until a worker is free (backpressure).
//! - `leader-followers`: the threads take turns to wait on the one poller. The leader takes one
//!   ready connection and, before working on it, hands the wait on to a follower (releases the
//!   turn lock); then it drives the connection and joins the followers.
//!
//! Both keep the reactor behind a lock and never hold it while waiting. Connections are
//! registered one-shot and re-armed when handed back, so two threads never drive one.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use polling::{Events, Poller};

use super::queue::Queue;
use crate::app::App;
use crate::config::Config;
use crate::conn::{Env, Next, Pools};
use crate::http::date::DateCache;
use crate::http::session::Ctx;
#[cfg(feature = "proxy")]
use crate::proxy::upstream::Upstreams;
use crate::reactor::{Reactor, Taken};

/// Lent connections waiting for a worker, per worker.
const QUEUED_PER_WORKER: usize = 4;

/// What a thread needs to drive connections: its own handler (and file cache), buffers and
/// dates.
pub struct Worker {
    app: App,
    pools: Pools,
    dates: DateCache,
    cfg: Arc<Config>,
    routes: crate::config::Routes,
    /// Reloads, and the generation this worker's handler was built from.
    current: Arc<crate::reload::Current>,
    seen: u64,
    #[cfg(feature = "proxy")]
    poller: Arc<Poller>,
    #[cfg(feature = "proxy")]
    upstreams: Arc<Mutex<Upstreams>>,
    #[cfg(feature = "proxy")]
    tunnels: Arc<crate::conn::TunnelLimit>,
    #[cfg(feature = "auth")]
    auth: Option<crate::auth::Gate>,
    #[cfg(feature = "tls")]
    https: Option<Arc<crate::conn::tls::Https>>,
}

impl Worker {
    pub fn new(reactor: &Reactor) -> Result<Worker, crate::Error> {
        let cfg = reactor.config();
        Ok(Worker {
            app: App::new(cfg)?,
            pools: Pools::default(),
            dates: DateCache::default(),
            cfg: Arc::clone(cfg),
            routes: cfg.proxies.clone().into(),
            current: reactor.current(),
            seen: reactor.current().generation(),
            #[cfg(feature = "proxy")]
            poller: reactor.poller(),
            #[cfg(feature = "proxy")]
            upstreams: reactor.shared_upstreams(),
            #[cfg(feature = "proxy")]
            tunnels: reactor.tunnels(),
            #[cfg(feature = "auth")]
            auth: reactor.auth_gate(),
            #[cfg(feature = "tls")]
            https: reactor.https(),
        })
    }

    /// Takes up a reload (see `Reactor::reconfigure`): its own handler, settings and routes.
    fn reconfigure(&mut self) {
        let Some(loaded) = self.current.newer(&mut self.seen) else {
            return;
        };
        let cfg = Arc::clone(&loaded.config);
        match loaded.app() {
            Ok(app) => self.app = app,
            Err(e) => return log::error!("reload not applied in a worker: {e}"),
        }
        self.routes = cfg.proxies.clone().into();
        self.cfg = cfg;
    }

    fn drive(&mut self, t: &mut Taken) -> Next {
        self.reconfigure();
        self.dates.update(SystemTime::now());
        let mut env = Env {
            ctx: Ctx {
                now: Instant::now(),
                date: self.dates.http(),
                limits: &self.cfg.limits,
                head_extra: b"",
            },
            log_date: self.dates.clf(),
            routes: &self.routes,
            trust_forwarded: self.cfg.proxy_trust_forwarded,
            health: self.cfg.health.as_deref(),
            handler: &mut self.app,
            pools: &mut self.pools,
            budget: self.cfg.budget,
            #[cfg(feature = "proxy")]
            poller: &self.poller,
            #[cfg(feature = "proxy")]
            upstreams: &self.upstreams,
            #[cfg(feature = "proxy")]
            tunnels: &self.tunnels,
            key: t.key,
            draining: t.draining,
            #[cfg(feature = "tls")]
            https: self.https.as_deref(),
            secure: false,
            workers: None,
            #[cfg(feature = "auth")]
            auth: self.auth.as_ref(),
        };
        let next = t.conn.drive(&mut env);
        log::logger().flush();
        next
    }

    /// Drives a lent connection and hands it back.
    fn serve(&mut self, reactor: &Mutex<Reactor>, mut t: Taken) {
        let next = self.drive(&mut t);
        lock(reactor).put_back(t, next);
    }
}

fn lock(r: &Mutex<Reactor>) -> MutexGuard<'_, Reactor> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn reactor_pool(mut reactor: Reactor, workers: Vec<Worker>) -> io::Result<()> {
    reactor.lend_connections();
    let poller = reactor.poller();
    let capacity = workers.len() * QUEUED_PER_WORKER;
    let reactor = Mutex::new(reactor);
    let queue: Queue<Taken> = Queue::new(capacity);
    std::thread::scope(|s| {
        for (i, mut w) in workers.into_iter().enumerate() {
            let (reactor, queue) = (&reactor, &queue);
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn_scoped(s, move || {
                    while let Some(t) = queue.pop() {
                        w.serve(reactor, t);
                    }
                })?;
        }
        let result = (|| {
            let mut events = Events::new();
            loop {
                let timeout = {
                    let mut r = lock(&reactor);
                    if r.is_finished() {
                        return Ok(());
                    }
                    while queue.has_room() {
                        let Some(t) = r.take_ready() else { break };
                        if let Err(t) = queue.try_push(t) {
                            r.put_back(t, Next::Again);
                            break;
                        }
                    }
                    r.wait_timeout(Instant::now())
                };
                events.clear();
                poller.wait(&mut events, timeout)?;
                lock(&reactor).after_wait(events.iter());
            }
        })();
        // Connections still queued go back to the finished reactor, which closes them.
        for t in queue.close() {
            lock(&reactor).put_back(t, Next::Close);
        }
        result
    })
}

pub fn leader_followers(mut reactor: Reactor, workers: Vec<Worker>) -> io::Result<()> {
    reactor.lend_connections();
    let poller = reactor.poller();
    let reactor = Mutex::new(reactor);
    // Whoever holds this is the leader: the one thread allowed to wait on the poller.
    let turn = Mutex::new(());
    std::thread::scope(|s| {
        let threads = workers
            .into_iter()
            .enumerate()
            .map(|(i, mut w)| {
                let (reactor, turn, poller) = (&reactor, &turn, &poller);
                std::thread::Builder::new()
                    .name(format!("leader-follower-{i}"))
                    .spawn_scoped(s, move || -> io::Result<()> {
                        let mut events = Events::new();
                        loop {
                            let taken = {
                                let _leading = turn.lock().unwrap_or_else(|e| e.into_inner());
                                lead(reactor, poller, &mut events)?
                            };
                            // The turn is released: a follower leads while this thread works.
                            match taken {
                                Some(t) => w.serve(reactor, t),
                                None => return Ok(()),
                            }
                        }
                    })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut result = Ok(());
        for t in threads {
            if let Ok(Err(e)) = t.join() {
                // One leader failed in `wait`: stop the others too.
                lock(&reactor)
                    .stop_flag()
                    .request(crate::reactor::Stop::GRACEFUL);
                let _ = poller.notify();
                result = Err(e);
            }
        }
        result
    })
}

/// The leader's turn: wait until a connection is ready, and take it (`None`: shutdown is done).
fn lead(
    reactor: &Mutex<Reactor>,
    poller: &Poller,
    events: &mut Events,
) -> io::Result<Option<Taken>> {
    loop {
        let timeout = {
            let mut r = lock(reactor);
            if r.is_finished() {
                return Ok(None);
            }
            if let Some(t) = r.take_ready() {
                return Ok(Some(t));
            }
            r.wait_timeout(Instant::now())
        };
        events.clear();
        poller.wait(events, timeout)?;
        lock(reactor).after_wait(events.iter());
    }
}
