//! `proactor-pool` (half-sync/half-async): the loop does every socket read and write; a complete
//! request head goes through a bounded queue to a worker thread, which runs the handler (resolve,
//! open, stat, plan the reply) and hands the reply back, waking the loop with `Poller::notify`.
//! Workers never touch a socket. When the queue is full a request waits, unread input behind it,
//! on its connection (the reactor's `stalled` list) until workers have replied to others.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use polling::Poller;

use super::queue::Queue;
use crate::app::App;
use crate::app::Handler;
use crate::config::Config;
use crate::http::request;
use crate::http::response::{Body, Reply};

/// Requests queued for the workers, per worker; more wait on their connections.
const QUEUED_PER_WORKER: usize = 64;

/// A request head for a worker, addressed to its connection.
pub struct Job {
    pub key: usize,
    pub generation: u32,
    pub head: Box<[u8]>,
}

pub type Jobs = Queue<Job>;

/// A worker's reply on its way back to the loop.
pub struct Done {
    pub key: usize,
    pub generation: u32,
    pub head: Box<[u8]>,
    pub reply: OwnedReply,
}

/// The loop's ends of the two queues.
pub struct Link {
    jobs: Arc<Jobs>,
    done: Arc<Mutex<Vec<Done>>>,
    /// Requests that found the workers' queue full, oldest first. Their connections wait for
    /// the answer and read nothing more meanwhile (backpressure), so this list holds at most
    /// one request per connection.
    stalled: VecDeque<Job>,
}

impl Link {
    pub fn take_done(&self) -> Vec<Done> {
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Hands a request to the workers, or keeps it until they have room (behind the older
    /// ones, so that requests go in the order they came).
    pub fn submit(&mut self, job: Job) {
        if !self.stalled.is_empty() {
            self.stalled.push_back(job);
        } else if let Err(job) = self.jobs.try_push(job) {
            self.stalled.push_back(job);
        }
    }

    /// Workers made room: the requests kept by [`Link::submit`] go now, oldest first.
    pub fn retry_stalled(&mut self) {
        while let Some(job) = self.stalled.pop_front() {
            if let Err(job) = self.jobs.try_push(job) {
                self.stalled.push_front(job);
                break;
            }
        }
    }
}

/// A reply that owns its parts, so it can cross threads (a handler's reply borrows its cache).
pub struct OwnedReply {
    status: u16,
    headers: Vec<u8>,
    len: u64,
    body: OwnedBody,
}

enum OwnedBody {
    Empty,
    Bytes(Vec<u8>),
    File { file: Arc<File>, offset: u64 },
}

impl OwnedReply {
    fn new(r: Reply<'_>) -> OwnedReply {
        OwnedReply {
            status: r.status,
            headers: r.headers.to_vec(),
            len: r.len,
            body: match r.body {
                Body::Empty => OwnedBody::Empty,
                Body::Bytes(b) => OwnedBody::Bytes(b.to_vec()),
                Body::File { file, offset } => OwnedBody::File { file, offset },
            },
        }
    }

    pub fn as_reply(&self) -> Reply<'_> {
        Reply {
            status: self.status,
            headers: &self.headers,
            len: self.len,
            body: match &self.body {
                OwnedBody::Empty => Body::Empty,
                OwnedBody::Bytes(b) => Body::Bytes(b),
                OwnedBody::File { file, offset } => Body::File {
                    file: Arc::clone(file),
                    offset: *offset,
                },
            },
        }
    }
}

/// The workers, built before the server starts so that a bad document root fails at startup.
pub struct Workers {
    apps: Vec<App>,
    jobs: Arc<Jobs>,
    done: Arc<Mutex<Vec<Done>>>,
}

impl Workers {
    pub fn new(cfg: &Config, n: usize) -> Result<(Workers, Link), crate::Error> {
        let apps = (0..n)
            .map(|_| App::new(cfg))
            .collect::<Result<Vec<_>, _>>()?;
        let jobs = Arc::new(Queue::new(n * QUEUED_PER_WORKER));
        let done = Arc::new(Mutex::new(Vec::new()));
        let link = Link {
            jobs: Arc::clone(&jobs),
            done: Arc::clone(&done),
            stalled: VecDeque::new(),
        };
        Ok((Workers { apps, jobs, done }, link))
    }

    pub fn spawn(
        self,
        cfg: &Arc<Config>,
        current: &Arc<crate::reload::Current>,
        poller: &Arc<Poller>,
    ) -> io::Result<Running> {
        let mut threads = Vec::new();
        for (i, mut app) in self.apps.into_iter().enumerate() {
            let (jobs, done, poller, mut cfg, current) = (
                Arc::clone(&self.jobs),
                Arc::clone(&self.done),
                Arc::clone(poller),
                Arc::clone(cfg),
                Arc::clone(current),
            );
            let mut seen = current.generation();
            let t = std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    while let Some(job) = jobs.pop() {
                        // A reload: this worker's own handler, built from the new settings.
                        if let Some(l) = current.newer(&mut seen) {
                            match l.app() {
                                Ok(a) => (app, cfg) = (a, Arc::clone(&l.config)),
                                Err(e) => log::error!("reload not applied in a worker: {e}"),
                            }
                        }
                        let reply = match request::parse(&job.head, cfg.limits.max_headers) {
                            Ok(req) => OwnedReply::new(app.handle(&req, Instant::now())),
                            // The loop parsed this head already; it cannot fail here.
                            Err(e) => OwnedReply::new(Reply::text(e.status(), b"")),
                        };
                        let mut list = done.lock().unwrap_or_else(|e| e.into_inner());
                        list.push(Done {
                            key: job.key,
                            generation: job.generation,
                            head: job.head,
                            reply,
                        });
                        // The first reply of a batch wakes the loop; it takes the whole list.
                        let wake = list.len() == 1;
                        drop(list);
                        if wake {
                            let _ = poller.notify();
                        }
                    }
                })?;
            threads.push(t);
        }
        Ok(Running {
            jobs: self.jobs,
            threads,
        })
    }
}

pub struct Running {
    jobs: Arc<Jobs>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// Drops the requests no worker has started (their connections are closed) and waits for
    /// the handlers running now.
    pub fn stop(self) {
        drop(self.jobs.close());
        for t in self.threads {
            let _ = t.join();
        }
    }
}
