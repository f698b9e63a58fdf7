//! The load generator: one edge-triggered `polling` loop per thread, each owning a share of the
//! connections. A connection is a small state machine (down, connecting, open) with a pipeline of
//! requests in flight; readiness is remembered across edges (writable) or drained at once
//! (readable), as edge mode requires.
//!
//! Closed loop (default): a connection sends its next request when an answer frees a pipeline
//! slot, and latency runs from that send. Open loop (`--rate`): every connection has a fixed
//! schedule; a request that comes due waits in the connection's queue until the pipeline has
//! room (or the connection is back up), and its latency runs from when it was *due*, so a stalled
//! server cannot hide its stall by slowing the client down (no coordinated omission).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use polling::{Event, Events, PollMode, Poller};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::cpus;
use crate::parse::{Done, Parser, Step};
use crate::stats::{ErrorKind, Report, Stats};
use crate::target::Target;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// Send for this long.
    Duration(Duration),
    /// Send exactly this many requests in all, and wait for their answers.
    Requests(u64),
    /// Send for at least `at_least`, then on until `min_correct` correct answers came in all
    /// (each thread its share) or `at_most` has passed: a cell whose answers take longer than
    /// its window (1 MiB to each of 1024 connections) still measures some.
    Window {
        at_least: Duration,
        min_correct: u64,
        at_most: Duration,
    },
}

#[derive(Clone, Debug)]
pub struct Options {
    pub target: Target,
    pub connections: usize,
    pub limit: Limit,
    /// Most requests in flight per connection.
    pub pipeline: usize,
    pub threads: usize,
    /// Open loop: requests per second across all connections.
    pub rate: Option<f64>,
    pub expect_status: u16,
    /// No answer this long after sending (or no connect) is an error.
    pub timeout: Duration,
    /// Pin the client's threads to these CPUs.
    pub cpus: Option<Vec<usize>>,
}

/// How often a loop checks timeouts and reconnects; also its longest sleep.
const TICK: Duration = Duration::from_millis(10);
/// A loop reads into one buffer of this size shared by its connections.
const READ_BUF: usize = 64 * 1024;
/// Unparsed bytes a connection may hold (a response head or chunk line split across reads).
const MAX_CARRY: usize = 64 * 1024;
/// Retry delays after failed connects: from the first to the last, doubling.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// A `--requests` run gives up when nothing was answered for the timeout plus this.
const STALL_GRACE: Duration = Duration::from_secs(1);

/// Runs the load and merges what every thread measured.
pub fn run(opts: &Options) -> Result<Report, String> {
    let conns = opts.connections.max(1);
    let threads = opts.threads.clamp(1, conns);
    let request = opts.target.request();
    let start = Instant::now();
    let results: Vec<Result<(Stats, Instant), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                // Thread t owns the global connection numbers first..end.
                let first = conns * t / threads;
                let end = conns * (t + 1) / threads;
                let share = |n: u64, i: usize| (n as u128 * i as u128 / conns as u128) as u64;
                let quota = match opts.limit {
                    Limit::Requests(n) => Some(share(n, end) - share(n, first)),
                    Limit::Duration(_) | Limit::Window { .. } => None,
                };
                let min_correct = match opts.limit {
                    Limit::Window { min_correct, .. } => {
                        share(min_correct, end) - share(min_correct, first)
                    }
                    _ => 0,
                };
                let request = &request;
                std::thread::Builder::new()
                    .name(format!("bench-{t}"))
                    .spawn_scoped(s, move || {
                        Worker::new(opts, request, first..end, quota, start)?
                            .with_min_correct(min_correct)
                            .run(start)
                    })
                    .map_err(|e| format!("cannot start a client thread: {e}"))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err("a client thread panicked".into())),
                Err(e) => Err(e),
            })
            .collect()
    });
    let mut stats = Stats::default();
    let mut end = start;
    for r in results {
        let (s, e) = r?;
        stats.merge(&s);
        end = end.max(e);
    }
    Ok(Report {
        url: format!("http://{}{}", opts.target.host, opts.target.path),
        connections: conns,
        threads,
        pipeline: opts.pipeline,
        rate: opts.rate,
        elapsed: end - start,
        stats,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No socket; (re)connect at this time.
    Down {
        retry_at: Instant,
    },
    Connecting {
        since: Instant,
    },
    Open,
}

/// A request written (or queued to be written) and not yet answered.
#[derive(Clone, Copy, Debug)]
struct Sent {
    /// Where latency runs from: the send in closed loop, the schedule in open loop.
    intended: Instant,
    /// Where the timeout runs from.
    sent: Instant,
}

struct Conn {
    /// The poller key: the index in its loop's connections.
    key: usize,
    sock: Option<Socket>,
    state: State,
    /// Edge mode reports writability once: remember it until a write would block.
    writable: bool,
    out: Vec<u8>,
    out_pos: usize,
    inflight: VecDeque<Sent>,
    /// Open loop: requests that came due and wait for a pipeline slot.
    pending: VecDeque<Instant>,
    /// Open loop: when the next request of this connection's schedule is due.
    next_due: Instant,
    parser: Parser,
    /// Bytes of a response head (or chunk line) that arrived without their end.
    carry: Vec<u8>,
    backoff: Duration,
}

/// Why a connection stopped while its bytes were being handled.
struct Closed;

/// Everything a loop owns except its connections, so that a connection and the loop's state can
/// be borrowed at once.
struct Shared<'a> {
    opts: &'a Options,
    request: &'a [u8],
    addr: SockAddr,
    poller: Poller,
    stats: Stats,
    /// `--requests`: this thread's share.
    quota: Option<u64>,
    /// Closed loop: requests handed to connections and not given back. Open loop: requests
    /// scheduled.
    issued: u64,
    /// Open loop: the time between two requests of one connection.
    interval: Option<Duration>,
    /// No request is sent from then on.
    deadline: Option<Instant>,
    /// `Limit::Window`: from this time on, the run ends once `min_correct` answers are in.
    soft_end: Option<Instant>,
    min_correct: u64,
}

struct Worker<'a> {
    shared: Shared<'a>,
    conns: Vec<Conn>,
    buf: Box<[u8]>,
}

impl<'a> Worker<'a> {
    fn new(
        opts: &'a Options,
        request: &'a [u8],
        global: std::ops::Range<usize>,
        quota: Option<u64>,
        start: Instant,
    ) -> Result<Worker<'a>, String> {
        let poller = Poller::new().map_err(|e| format!("cannot create a poller: {e}"))?;
        // Per connection, so that C connections at R requests/s together send R.
        let interval = opts
            .rate
            .map(|r| Duration::from_secs_f64(opts.connections.max(1) as f64 / r));
        let first = global.start;
        let conns = global
            .map(|g| Conn {
                key: g - first,
                sock: None,
                state: State::Down { retry_at: start },
                writable: false,
                out: Vec::new(),
                out_pos: 0,
                inflight: VecDeque::new(),
                pending: VecDeque::new(),
                // Staggered, so the connections' schedules interleave evenly instead of bursting.
                next_due: start
                    + interval.map_or(Duration::ZERO, |i| {
                        i.mul_f64(g as f64 / opts.connections.max(1) as f64)
                    }),
                parser: Parser::default(),
                carry: Vec::new(),
                backoff: BACKOFF_MIN,
            })
            .collect();
        Ok(Worker {
            shared: Shared {
                opts,
                request,
                addr: SockAddr::from(opts.target.addr),
                poller,
                stats: Stats::default(),
                quota,
                issued: 0,
                interval,
                deadline: match opts.limit {
                    Limit::Duration(d) => Some(start + d),
                    Limit::Window { at_most, .. } => Some(start + at_most),
                    Limit::Requests(_) => None,
                },
                soft_end: match opts.limit {
                    Limit::Window { at_least, .. } => Some(start + at_least),
                    _ => None,
                },
                min_correct: 0,
            },
            conns,
            buf: vec![0; READ_BUF].into_boxed_slice(),
        })
    }

    fn with_min_correct(mut self, n: u64) -> Worker<'a> {
        self.shared.min_correct = n;
        self
    }

    fn run(mut self, start: Instant) -> Result<(Stats, Instant), String> {
        if let Some(list) = &self.shared.opts.cpus {
            cpus::pin(0, &cpus::set_of(list)).map_err(|e| {
                format!("cannot pin the client to CPUs {}: {e}", cpus::format(list))
            })?;
        }
        let mut events = Events::new();
        let mut next_tick = start;
        let mut next_schedule = start;
        let mut last_answered = (0, start);
        let end = loop {
            let now = Instant::now();
            if self.shared.finished(now) {
                break now;
            }
            if now >= next_tick {
                self.housekeeping(now);
                next_tick = now + TICK;
                // A `--requests` run must end even if the server stops answering for good.
                let answered = self.shared.stats.answered();
                if answered != last_answered.0 {
                    last_answered = (answered, now);
                } else if self.shared.quota.is_some()
                    && now - last_answered.1 > self.shared.opts.timeout + STALL_GRACE
                {
                    self.shared.stats.stalled = true;
                    break now;
                }
            }
            if self.shared.interval.is_some() && now >= next_schedule {
                next_schedule = self.schedule(now);
            }
            let mut wake = next_tick;
            if self.shared.interval.is_some() {
                wake = wake.min(next_schedule);
            }
            if let Some(d) = self.shared.deadline {
                wake = wake.min(d);
            }
            if let Some(d) = self.shared.soft_end.filter(|&d| d > now) {
                wake = wake.min(d);
            }
            events.clear();
            match self
                .shared
                .poller
                .wait(&mut events, Some(wake.saturating_duration_since(now)))
            {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("poller: {e}")),
            }
            for ev in events.iter() {
                if let Some(conn) = self.conns.get_mut(ev.key) {
                    self.shared
                        .on_event(conn, ev.readable, ev.writable, &mut self.buf);
                }
            }
        };
        for conn in &mut self.conns {
            // A reset, not a FIN: the measurement is over and nothing in flight is wanted. The
            // server learns it at once (after a FIN a server may keep waiting, up to its grace
            // period, to deliver answers in flight) and no TIME_WAIT is left per connection.
            if let Some(sock) = &conn.sock {
                let _ = sock.set_linger(Some(Duration::ZERO));
            }
            self.shared.drop_socket(conn);
        }
        Ok((self.shared.stats, end))
    }

    /// Reconnects what is down, and fails what waited too long.
    fn housekeeping(&mut self, now: Instant) {
        let timeout = self.shared.opts.timeout;
        for conn in &mut self.conns {
            match conn.state {
                State::Down { retry_at } if now >= retry_at && self.shared.wants(conn, now) => {
                    self.shared.connect(conn, now);
                }
                State::Connecting { since } if now - since > timeout => {
                    self.shared.connect_failed(conn, now);
                }
                State::Open
                    if conn
                        .inflight
                        .front()
                        .is_some_and(|s| now - s.sent > timeout) =>
                {
                    self.shared.fail(conn, ErrorKind::Timeout, now);
                }
                _ => {}
            }
        }
    }

    /// Open loop: queues every request that has come due and sends what the pipelines allow.
    /// Returns when the next one is due.
    fn schedule(&mut self, now: Instant) -> Instant {
        let Some(interval) = self.shared.interval else {
            return now + TICK;
        };
        let mut next = now + TICK;
        for conn in &mut self.conns {
            while conn.next_due <= now && self.shared.may_issue(now) {
                conn.pending.push_back(conn.next_due);
                conn.next_due += interval;
                self.shared.issued += 1;
            }
            next = next.min(conn.next_due);
            if !conn.pending.is_empty() && conn.state == State::Open {
                self.shared.send_more(conn, now);
            }
        }
        next
    }
}

impl Shared<'_> {
    fn finished(&self, now: Instant) -> bool {
        if let Some(soft) = self.soft_end
            && now >= soft
            && self.stats.correct >= self.min_correct
        {
            return true;
        }
        match (self.deadline, self.quota) {
            (Some(d), _) => now >= d,
            (None, Some(q)) => self.stats.answered() >= q,
            (None, None) => false,
        }
    }

    /// Whether another request may be sent (closed loop) or scheduled (open loop).
    fn may_issue(&self, now: Instant) -> bool {
        self.deadline.is_none_or(|d| now < d) && self.quota.is_none_or(|q| self.issued < q)
    }

    /// Whether a connection that is down has anything to send if it came back up.
    fn wants(&self, conn: &Conn, now: Instant) -> bool {
        !conn.pending.is_empty() || self.may_issue(now)
    }

    fn connect(&mut self, conn: &mut Conn, now: Instant) {
        let addr = self.opts.target.addr;
        let sock = match new_socket(addr) {
            Ok(s) => s,
            Err(_) => return self.connect_failed(conn, now),
        };
        let state = match sock.connect(&self.addr) {
            Ok(()) => State::Open,
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                State::Connecting { since: now }
            }
            Err(_) => return self.connect_failed(conn, now),
        };
        // SAFETY: the socket is deleted from the poller before it is dropped (drop_socket).
        if unsafe {
            self.poller
                .add_with_mode(&sock, Event::all(conn.key), PollMode::Edge)
        }
        .is_err()
        {
            return self.connect_failed(conn, now);
        }
        conn.sock = Some(sock);
        conn.state = state;
        // Sending waits for the first edge in both cases: an established socket reports
        // writable as soon as it is added.
    }

    fn connect_failed(&mut self, conn: &mut Conn, now: Instant) {
        self.stats.errors.count(ErrorKind::Connect);
        let wait = conn.backoff;
        conn.backoff = (conn.backoff * 2).min(BACKOFF_MAX);
        self.close(conn, now + wait);
    }

    fn on_event(&mut self, conn: &mut Conn, readable: bool, writable: bool, buf: &mut [u8]) {
        let now = Instant::now();
        match conn.state {
            State::Down { .. } => return,
            State::Connecting { .. } => {
                let Some(sock) = &conn.sock else { return };
                // SO_ERROR, read once the connect has an outcome.
                match sock.take_error() {
                    Ok(None) if writable => {}
                    Ok(None) => return,
                    Ok(Some(_)) | Err(_) => return self.connect_failed(conn, now),
                }
                conn.state = State::Open;
                conn.backoff = BACKOFF_MIN;
            }
            State::Open => {}
        }
        if writable {
            conn.writable = true;
        }
        if readable && self.read(conn, buf).is_err() {
            return;
        }
        self.send_more(conn, now);
    }

    /// Reads until the socket would block (edge mode: the next edge comes only for new bytes).
    fn read(&mut self, conn: &mut Conn, buf: &mut [u8]) -> Result<(), Closed> {
        loop {
            let Some(mut sock) = conn.sock.as_ref() else {
                return Err(Closed);
            };
            match sock.read(buf) {
                Ok(0) => {
                    self.on_eof(conn, Instant::now());
                    return Err(Closed);
                }
                Ok(n) => {
                    self.stats.bytes_read += n as u64;
                    // The answers in these bytes arrived now.
                    self.on_bytes(conn, &buf[..n], Instant::now())?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.fail(conn, ErrorKind::Read, Instant::now());
                    return Err(Closed);
                }
            }
        }
    }

    fn on_bytes(&mut self, conn: &mut Conn, data: &[u8], now: Instant) -> Result<(), Closed> {
        if conn.carry.is_empty() {
            let used = self.parse(conn, data, now)?;
            conn.carry.extend_from_slice(&data[used..]);
        } else {
            let mut carry = std::mem::take(&mut conn.carry);
            carry.extend_from_slice(data);
            let used = self.parse(conn, &carry, now)?;
            carry.drain(..used);
            conn.carry = carry;
        }
        if conn.carry.len() > MAX_CARRY {
            self.fail(conn, ErrorKind::Malformed, now);
            return Err(Closed);
        }
        Ok(())
    }

    /// Frames responses out of `data`; returns how much was used.
    fn parse(&mut self, conn: &mut Conn, data: &[u8], now: Instant) -> Result<usize, Closed> {
        let mut pos = 0;
        while pos < data.len() {
            match conn.parser.step(&data[pos..]) {
                Step::Used(0) | Step::Need => break,
                Step::Used(n) => pos += n,
                Step::Done(n, done) => {
                    pos += n;
                    self.complete(conn, done, now)?;
                }
                Step::Malformed(_) => {
                    self.fail(conn, ErrorKind::Malformed, now);
                    return Err(Closed);
                }
            }
        }
        Ok(pos)
    }

    /// A response arrived whole: it answers the oldest request in flight.
    fn complete(&mut self, conn: &mut Conn, done: Done, now: Instant) -> Result<(), Closed> {
        let Some(sent) = conn.inflight.pop_front() else {
            // An answer to nothing: the stream is out of step with our requests.
            self.fail(conn, ErrorKind::Malformed, now);
            return Err(Closed);
        };
        if done.status == self.opts.expect_status {
            self.stats.correct += 1;
            self.stats
                .record(now.saturating_duration_since(sent.intended));
        } else {
            self.stats.errors.count(ErrorKind::Status);
        }
        if done.close {
            // The server said it closes: what we pipelined behind this was never read, so it
            // goes back to be sent on the next connection rather than counting as failed.
            self.close(conn, now);
            return Err(Closed);
        }
        Ok(())
    }

    fn on_eof(&mut self, conn: &mut Conn, now: Instant) {
        if let Some(done) = conn.parser.eof() {
            // A body delimited by the close; complete() closes the connection.
            let _ = self.complete(conn, done, now);
        } else if !conn.inflight.is_empty() || !conn.parser.idle() {
            // Closed with an answer due or half-delivered (a short body).
            self.fail(conn, ErrorKind::Read, now);
        } else {
            // An idle keep-alive connection the server let go: just reconnect.
            self.close(conn, now);
        }
    }

    /// The request being answered failed with `kind`; the connection is closed and the
    /// requests behind it are given back.
    fn fail(&mut self, conn: &mut Conn, kind: ErrorKind, now: Instant) {
        if conn.inflight.pop_front().is_some() || kind == ErrorKind::Malformed {
            self.stats.errors.count(kind);
        }
        self.close(conn, now);
    }

    /// Closes the socket, gives back the requests still in flight, and schedules a reconnect.
    fn close(&mut self, conn: &mut Conn, retry_at: Instant) {
        self.drop_socket(conn);
        let unanswered = conn.inflight.len() as u64;
        if self.interval.is_some() {
            // Open loop: back to the front of the queue, keeping their due times.
            while let Some(s) = conn.inflight.pop_back() {
                conn.pending.push_front(s.intended);
            }
        } else {
            self.issued -= unanswered;
            conn.inflight.clear();
        }
        conn.state = State::Down { retry_at };
        conn.writable = false;
        conn.out.clear();
        conn.out_pos = 0;
        conn.parser = Parser::default();
        conn.carry.clear();
        // Straight back (a `Connection: close` server must not cost a tick per request); after
        // a failed connect the retry waits for its backoff in housekeeping.
        let now = Instant::now();
        if retry_at <= now && self.wants(conn, now) {
            self.connect(conn, now);
        }
    }

    fn drop_socket(&mut self, conn: &mut Conn) {
        if let Some(sock) = conn.sock.take() {
            let _ = self.poller.delete(&sock);
        }
    }

    /// Fills the pipeline and writes what is queued.
    fn send_more(&mut self, conn: &mut Conn, now: Instant) {
        if conn.state != State::Open {
            return;
        }
        while conn.inflight.len() < self.opts.pipeline {
            let intended = if self.interval.is_some() {
                match conn.pending.pop_front() {
                    Some(due) => due,
                    None => break,
                }
            } else if self.may_issue(now) {
                self.issued += 1;
                now
            } else {
                break;
            };
            conn.out.extend_from_slice(self.request);
            conn.inflight.push_back(Sent {
                intended,
                sent: now,
            });
        }
        self.flush(conn, now);
    }

    /// Writes until done or the socket would block (then the next writable edge resumes).
    fn flush(&mut self, conn: &mut Conn, now: Instant) {
        while conn.writable && conn.out_pos < conn.out.len() {
            let Some(sock) = &conn.sock else { return };
            match sock.send_with_flags(&conn.out[conn.out_pos..], libc::MSG_NOSIGNAL) {
                Ok(n) => {
                    conn.out_pos += n;
                    self.stats.bytes_written += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.fail(conn, ErrorKind::Read, now),
            }
        }
        if conn.out_pos == conn.out.len() {
            conn.out.clear();
            conn.out_pos = 0;
        }
    }
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    // Small requests must leave at once, not wait for Nagle.
    sock.set_tcp_nodelay(true)?;
    Ok(sock)
}
