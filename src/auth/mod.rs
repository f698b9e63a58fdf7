//! Basic authentication in front of path prefixes (`--auth PREFIX=HTPASSWD_FILE`, cargo feature
//! `auth`).
//!
//! A request whose normalised path is under a protected prefix (longest prefix wins, matched the
//! way the proxy's prefixes are: `/a/../private/x` and `/%70rivate/x` are `/private/x`) needs
//! `Authorization: Basic` credentials of a user in that prefix's htpasswd file. The check is
//! [`Gate::check`], on the loop:
//! - no or garbled credentials: 401 with the prefix's challenge, at once;
//! - credentials checked successfully a short while ago (`--auth-cache`): passed at once. The
//!   cache keeps a keyed hash (SipHash with a random key) of prefix, user and password, never
//!   the password;
//! - otherwise the password hash is checked on a verifier thread (bcrypt is slow on purpose) and
//!   the request waits on its connection; the verdict comes back through the connection's
//!   [`Mailbox`] and `Poller::notify`, the way the proactor's workers reply.
//!
//! Fairness: identical credentials in flight share one check (a browser's parallel requests
//! after a login); a client address (an IPv6 /64) has at most one check of its own in flight, a
//! second gets 429 at once; the verifiers' queue is bounded, and a full queue gets 503. So a
//! client flooding wrong passwords holds one verifier slot, never the loop, and another user's
//! first login waits behind at most one check per flooding address.
//!
//! SIGHUP reads the prefixes, realms and htpasswd files again ([`Rules::read`], checked before
//! anything is published) and swaps them in ([`Guard::replace`]); the cache of successful
//! checks is emptied with the swap, so a removed user or a changed password stops working at
//! once. A check already running finishes under the rules it started with.

pub mod basic;
pub mod htpasswd;

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use polling::Poller;

use crate::config::Config;
use crate::files::path::{is_normal, normalize_into};
use crate::http::request::Request;
use crate::http::response::{Body, Reply};
use crate::models::queue::Queue;
use basic::Credentials;
use htpasswd::Users;

/// Checks of their own in flight per client address.
const PER_CLIENT: u32 = 1;
/// Checks queued per verifier thread; more are refused with 503.
const QUEUED_PER_THREAD: usize = 16;
/// Most successful checks remembered.
const CACHED: usize = 1024;
/// Longer passwords are refused without a check: SHA-crypt's work grows with the password's
/// length (bcrypt reads 72 bytes at most), and no person types more.
const MAX_PASSWORD: usize = 512;

const TEXT: &[u8] = b"Content-Type: text/plain\r\n";
const RETRY: &[u8] = b"Content-Type: text/plain\r\nRetry-After: 1\r\n";

/// A protected prefix.
struct Protected {
    prefix: String,
    /// `WWW-Authenticate: Basic realm="..."` and the rest of the 401's fields (interned: a
    /// 401 borrows them for as long as it is written, across reloads).
    challenge: &'static [u8],
    /// Its users, in `Rules::tables`.
    table: usize,
}

/// The protected prefixes and their users, as one reading of the settings and files found them.
pub struct Rules {
    rules: Vec<Protected>,
    tables: Vec<Users>,
    /// Distinguishes the cache keys and shared checks of one reading from another's.
    generation: u64,
}

/// The shared part: the rules, the cache, the checks in flight and the verifiers' queue. One
/// per server, whatever the model, so that its limits hold for the whole server.
pub struct Guard {
    rules: RwLock<Arc<Rules>>,
    forward: bool,
    ttl: Duration,
    threads: usize,
    keys: (RandomState, RandomState),
    state: Mutex<State>,
    jobs: Queue<Job>,
}

#[derive(Default)]
struct State {
    /// Keyed hash of (table, user, password) -> valid until.
    cache: HashMap<u128, Instant>,
    /// Checks queued or running, with the requests that wait for each.
    in_flight: HashMap<u128, Vec<Waiter>>,
    /// Checks in flight per client address.
    clients: HashMap<IpAddr, u32>,
}

struct Waiter {
    mailbox: Arc<Mailbox>,
    key: usize,
    generation: u32,
}

struct Job {
    id: u128,
    /// The rules the request was judged by, and its table in them.
    rules: Arc<Rules>,
    table: usize,
    creds: Credentials,
    client: IpAddr,
}

/// The verdict on a connection's waiting request.
#[derive(Clone, Copy, Debug)]
pub struct Verdict {
    pub key: usize,
    pub generation: u32,
    pub ok: bool,
}

/// Where verdicts for one loop's connections arrive (one per poller).
pub struct Mailbox {
    verdicts: Mutex<Vec<Verdict>>,
    poller: Arc<Poller>,
}

impl Mailbox {
    fn post(&self, v: Verdict) {
        let mut list = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        list.push(v);
        // The first verdict of a batch wakes the loop; it takes the whole list.
        let wake = list.len() == 1;
        drop(list);
        if wake {
            let _ = self.poller.notify();
        }
    }
}

/// What a request may do.
pub enum Check<'g> {
    /// Not under a protected prefix.
    Open,
    /// Authenticated (a cached check).
    Pass,
    /// Answered with this (401, 400, 429, 503).
    Deny(Reply<'g>),
    /// Checked on a verifier; the request waits for its [`Verdict`].
    Wait,
}

impl Rules {
    /// Reads the htpasswd files of `cfg.auth`; `None` when no prefix is protected. An error is
    /// one line naming the file (and line) or the flag.
    pub fn read(cfg: &Config) -> Result<Option<Rules>, String> {
        static GENERATION: AtomicU64 = AtomicU64::new(0);
        for (prefix, _) in &cfg.auth_realms {
            if !cfg.auth.iter().any(|a| a.prefix == *prefix) {
                return Err(format!("--auth-realm: no --auth for the prefix {prefix:?}"));
            }
        }
        if cfg.auth.is_empty() {
            return Ok(None);
        }
        let mut files: Vec<PathBuf> = Vec::new();
        let mut tables = Vec::new();
        let mut rules = Vec::new();
        for a in &cfg.auth {
            let table = match files.iter().position(|f| *f == a.file) {
                Some(i) => i,
                None => {
                    tables.push(Users::load(&a.file)?);
                    files.push(a.file.clone());
                    files.len() - 1
                }
            };
            let realm = a
                .realm
                .as_deref()
                .or_else(|| {
                    let given = cfg.auth_realms.iter().find(|(p, _)| *p == a.prefix);
                    given.map(|(_, r)| r.as_str())
                })
                .unwrap_or(&a.prefix);
            rules.push(Protected {
                prefix: a.prefix.clone(),
                challenge: intern(challenge(realm)),
                table,
            });
        }
        Ok(Some(Rules {
            rules,
            tables,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        }))
    }

    /// The protected prefix `path` is under: the longest that starts its normal form. `Err`: a
    /// path with no normal form (malformed escapes, an encoded `/`, `..` above the root), which
    /// no handler serves either; it is refused (400) rather than judged on its spelling.
    fn rule_for(&self, path: &str) -> Option<Result<&Protected, ()>> {
        // `*` (OPTIONS) names no resource.
        if !path.starts_with('/') {
            return None;
        }
        let mut buf = Vec::new();
        let normal = if is_normal(path) {
            path.as_bytes()
        } else if normalize_into(path, &mut buf).is_ok() {
            &buf
        } else {
            return Some(Err(()));
        };
        self.rules
            .iter()
            .filter(|r| normal.starts_with(r.prefix.as_bytes()))
            .max_by_key(|r| r.prefix.len())
            .map(Ok)
    }
}

/// A challenge as a `'static` slice, one copy per distinct realm for the process's life: a 401
/// in flight keeps pointing at it whatever a reload does, and reloading the same realms again
/// and again allocates nothing new.
fn intern(challenge: Vec<u8>) -> &'static [u8] {
    static INTERNED: Mutex<Vec<&'static [u8]>> = Mutex::new(Vec::new());
    let mut all = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&c) = all.iter().find(|c| ***c == challenge[..]) {
        return c;
    }
    let c: &'static [u8] = Box::leak(challenge.into_boxed_slice());
    all.push(c);
    c
}

impl Guard {
    /// Reads the htpasswd files of `cfg.auth`; `None` when no prefix is protected. An error is one
    /// line naming the file (and line) or the flag.
    pub fn new(cfg: &Config) -> Result<Option<Guard>, String> {
        let Some(rules) = Rules::read(cfg)? else {
            return Ok(None);
        };
        let threads = cfg.auth_threads.max(1);
        Ok(Some(Guard {
            rules: RwLock::new(Arc::new(rules)),
            forward: cfg.auth_forward,
            ttl: cfg.auth_cache,
            threads,
            keys: (RandomState::new(), RandomState::new()),
            state: Mutex::default(),
            jobs: Queue::new(threads * QUEUED_PER_THREAD),
        }))
    }

    /// New rules for the requests that come from now on (a reload); successful checks of the
    /// old ones are forgotten.
    pub fn replace(&self, rules: Rules) {
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
        self.state().cache.clear();
    }

    fn rules(&self) -> Arc<Rules> {
        Arc::clone(&self.rules.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cache's key for these credentials under `table`.
    fn id(&self, rules: &Rules, table: usize, c: &Credentials) -> u128 {
        let half = |s: &RandomState| {
            let mut h = s.build_hasher();
            h.write_u64(rules.generation);
            h.write_usize(table);
            h.write_usize(c.user().len());
            h.write(c.user());
            h.write(c.password());
            h.finish()
        };
        (u128::from(half(&self.keys.0)) << 64) | u128::from(half(&self.keys.1))
    }

    /// Starts the verifier threads; they stop when [`Verifiers::stop`] closes the queue.
    pub fn spawn(self: &Arc<Guard>) -> io::Result<Verifiers> {
        let threads = (0..self.threads)
            .map(|i| {
                let g = Arc::clone(self);
                std::thread::Builder::new()
                    .name(format!("auth-{i}"))
                    .spawn(move || g.verify_loop())
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Verifiers {
            guard: Arc::clone(self),
            threads,
        })
    }

    fn verify_loop(&self) {
        while let Some(job) = self.jobs.pop() {
            let ok = job.rules.tables[job.table].verify(job.creds.user(), job.creds.password());
            let now = Instant::now();
            let waiters = {
                let mut st = self.state();
                if ok && !self.ttl.is_zero() {
                    st.remember(job.id, now + self.ttl, now);
                }
                if let Some(n) = st.clients.get_mut(&job.client) {
                    *n -= 1;
                    if *n == 0 {
                        st.clients.remove(&job.client);
                    }
                }
                st.in_flight.remove(&job.id).unwrap_or_default()
            };
            for w in waiters {
                w.mailbox.post(Verdict {
                    key: w.key,
                    generation: w.generation,
                    ok,
                });
            }
        }
    }
}

impl State {
    fn remember(&mut self, id: u128, until: Instant, now: Instant) {
        if self.cache.len() >= CACHED {
            self.cache.retain(|_, t| *t > now);
        }
        if self.cache.len() < CACHED {
            self.cache.insert(id, until);
        }
    }
}

/// The fields of a 401 for `realm` (a quoted-string: `"` and `\` escaped).
fn challenge(realm: &str) -> Vec<u8> {
    let mut h = b"WWW-Authenticate: Basic realm=\"".to_vec();
    for &b in realm.as_bytes() {
        if b == b'"' || b == b'\\' {
            h.push(b'\\');
        }
        h.push(b);
    }
    h.extend_from_slice(b"\", charset=\"UTF-8\"\r\nContent-Type: text/plain\r\n");
    h
}

/// The running verifier threads.
pub struct Verifiers {
    guard: Arc<Guard>,
    threads: Vec<JoinHandle<()>>,
}

impl Verifiers {
    /// Drops the checks not started (nobody waits for them after shutdown) and waits for the
    /// ones running.
    pub fn stop(self) {
        drop(self.guard.jobs.close());
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One loop's way to the guard: the guard, and where its verdicts come back.
#[derive(Clone)]
pub struct Gate {
    guard: Arc<Guard>,
    mailbox: Arc<Mailbox>,
}

/// Checks in flight are counted per address; an IPv6 client has a /64 to itself, so the /64
/// counts as one.
fn client_of(peer: Option<IpAddr>) -> IpAddr {
    match peer {
        Some(IpAddr::V6(a)) if a.to_ipv4_mapped().is_none() => {
            let s = a.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        Some(IpAddr::V6(a)) => IpAddr::V4(a.to_ipv4_mapped().unwrap_or([0; 4].into())),
        Some(a) => a,
        None => IpAddr::V4([0; 4].into()),
    }
}

impl Gate {
    pub fn new(guard: Arc<Guard>, poller: Arc<Poller>) -> Gate {
        Gate {
            guard,
            mailbox: Arc::new(Mailbox {
                verdicts: Mutex::new(Vec::new()),
                poller,
            }),
        }
    }

    /// The Authorization field goes upstream with an authenticated request (`--auth-forward`).
    pub fn forward(&self) -> bool {
        self.guard.forward
    }

    /// Verdicts that came back since the last call.
    pub fn take_verdicts(&self) -> Vec<Verdict> {
        let mut list = self
            .mailbox
            .verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *list)
    }

    /// What `req`, from `peer` on connection `key` (of `generation`), may do; see the module's
    /// docs. On `Wait` the connection must hold the request until its verdict comes.
    pub fn check(
        &self,
        req: &Request<'_>,
        peer: Option<IpAddr>,
        key: usize,
        generation: u32,
        now: Instant,
    ) -> Check<'_> {
        let g = &*self.guard;
        let rules = g.rules();
        let rule = match rules.rule_for(req.path()) {
            None => return Check::Open,
            Some(Ok(rule)) => rule,
            Some(Err(())) => return Check::Deny(Reply::text(400, TEXT)),
        };
        let Some(value) = req.authorization else {
            return Check::Deny(refusal(rule));
        };
        let creds = match basic::parse(value) {
            Ok(c) => c,
            Err(why) => {
                log::debug!("authorization: {why:?}");
                return Check::Deny(refusal(rule));
            }
        };
        if creds.password().len() > MAX_PASSWORD {
            log::debug!(
                "authorization: a password of {} bytes",
                creds.password().len()
            );
            return Check::Deny(refusal(rule));
        }
        let id = g.id(&rules, rule.table, &creds);
        let client = client_of(peer);
        let mut st = g.state();
        if st.cache.get(&id).is_some_and(|&until| until > now) {
            return Check::Pass;
        }
        let waiter = Waiter {
            mailbox: Arc::clone(&self.mailbox),
            key,
            generation,
        };
        if let Some(waiting) = st.in_flight.get_mut(&id) {
            waiting.push(waiter);
            return Check::Wait;
        }
        let mine = st.clients.get(&client).copied().unwrap_or(0);
        if mine >= PER_CLIENT {
            log::debug!("authorization: a check from {client} is in flight already: 429");
            return Check::Deny(Reply::text(429, RETRY));
        }
        let table = rule.table;
        let job = Job {
            id,
            rules: Arc::clone(&rules),
            table,
            creds,
            client,
        };
        // Under the state lock, so that no request joins a check that is then not queued.
        if g.jobs.try_push(job).is_err() {
            log::debug!("authorization: the verifiers' queue is full: 503");
            return Check::Deny(Reply::text(503, RETRY));
        }
        st.clients.insert(client, mine + 1);
        st.in_flight.insert(id, vec![waiter]);
        Check::Wait
    }

    /// The answer to a request whose check failed: 401 with its prefix's challenge.
    pub fn refuse(&self, req: &Request<'_>) -> Reply<'static> {
        match self.guard.rules().rule_for(req.path()) {
            Some(Ok(rule)) => refusal(rule),
            _ => Reply::text(400, TEXT),
        }
    }
}

fn refusal(rule: &Protected) -> Reply<'static> {
    const BODY: &[u8] = b"Unauthorized\n";
    Reply {
        status: 401,
        headers: rule.challenge,
        len: BODY.len() as u64,
        body: Body::Bytes(BODY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realms_are_quoted() {
        assert_eq!(
            challenge(r#"a "b" \c"#),
            b"WWW-Authenticate: Basic realm=\"a \\\"b\\\" \\\\c\", charset=\"UTF-8\"\r\nContent-Type: text/plain\r\n"
        );
    }

    #[test]
    fn ipv6_clients_count_by_64() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert_eq!(client_of(Some(a)), client_of(Some(b)));
        let m: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_of(Some(m)), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
