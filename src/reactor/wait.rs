//! The single-threaded loop's wait: one `epoll_wait` on the poller's own epoll descriptor.
//!
//! `polling` 3.11's `Poller::wait` makes four more syscalls on every call, whatever the timeout:
//! `timerfd_settime` and `epoll_ctl` to arm its timerfd, then a `read` of its eventfd and an
//! `epoll_ctl` to re-arm it (smol-rs/polling#224; 3.11 is the latest). With one connection the
//! loop waits once per request, so that was five syscalls of the six it made per request beside
//! the floor's three (`../shared/bench/floor.c`). Everything else stays with `polling`:
//! registration, modes, `notify`, and the pooled models' waits.
//!
//! What `polling` keeps on that descriptor is still honoured: its notifier (an eventfd) and its
//! timerfd are registered one-shot under the notify key. When either shows up here, one
//! `Poller::wait` with a zero timeout follows at once: it clears the notifier and arms it again
//! (a `notify` from another thread is never lost), and whatever else it returns is handled with
//! the rest. The timerfd is never armed by this path (the timeout goes to `epoll_wait` itself,
//! rounded up to whole milliseconds: deadlines here are seconds, and waking a little late
//! never fires a deadline early).
//!
//! Client sockets of this loop are registered here too ([`watch`]), with EPOLLRDHUP beside what
//! `polling` asks for, and an event that carries it (or HUP, ERR) is marked as an interrupt: the
//! connection then knows the peer's FIN has arrived even when a read returned data before it,
//! which is what lets a short read stand for "drained" (see `Conn::read_in`).

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use polling::{Event, Events, Poller};

/// The key `polling` gives its own notifier and timerfd.
const NOTIFY_KEY: usize = usize::MAX;

/// Events taken per wait; more ready ones wait for the next call (level of readiness is kept
/// by the kernel's ready list, so none is lost).
const BATCH: usize = 1024;

pub struct Waiter {
    raw: Vec<libc::epoll_event>,
    n: usize,
    /// What the follow-up `Poller::wait` returned, after a notification.
    fallback: Events,
}

impl Default for Waiter {
    fn default() -> Waiter {
        Waiter {
            raw: vec![libc::epoll_event { events: 0, u64: 0 }; BATCH],
            n: 0,
            fallback: Events::new(),
        }
    }
}

impl Waiter {
    /// Waits up to `timeout` (`None`: until an event) for events on `poller`.
    pub fn wait(&mut self, poller: &Poller, timeout: Option<Duration>) -> io::Result<()> {
        self.fallback.clear();
        let ms = match timeout {
            None => -1,
            // Rounded up: a wait that ends before its deadline would only spin.
            Some(t) => t
                .as_nanos()
                .div_ceil(1_000_000)
                .try_into()
                .unwrap_or(i32::MAX),
        };
        // SAFETY: `raw` holds `BATCH` initialised entries that the kernel may overwrite, and the
        // descriptor is the poller's epoll descriptor, open while `poller` is borrowed.
        let n = unsafe {
            libc::epoll_wait(poller.as_raw_fd(), self.raw.as_mut_ptr(), BATCH as i32, ms)
        };
        if n < 0 {
            self.n = 0;
            let e = io::Error::last_os_error();
            // A signal: the loop goes round (its own signals come through their pipe).
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        self.n = n as usize;
        if self.raw[..self.n].iter().any(|e| key_of(e) == NOTIFY_KEY) {
            poller.wait(&mut self.fallback, Some(Duration::ZERO))?;
        }
        Ok(())
    }

    /// The events of the last wait, read as `polling` reads them.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        let raw = self.raw[..self.n]
            .iter()
            .filter(|e| key_of(e) != NOTIFY_KEY)
            .map(|e| {
                let flags = e.events as libc::c_int;
                // `polling`'s mapping: read interest is IN|HUP|ERR|PRI, write is OUT|HUP|ERR.
                let readable =
                    flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLPRI) != 0;
                let writable = flags & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0;
                let ev = Event::new(key_of(e), readable, writable);
                if flags & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                    ev.with_interrupt()
                } else {
                    ev
                }
            });
        raw.chain(self.fallback.iter())
    }
}

/// Registers a client socket under `key`, edge-triggered for reading and writing as
/// `Poller::add_with_mode(.., Event::all(key), PollMode::Edge)` would, and for the peer's FIN
/// (EPOLLRDHUP), which `polling` cannot ask for.
///
/// # Safety
/// As for `Poller::add_with_mode`: the socket must be deleted from the poller before it is
/// closed.
pub unsafe fn watch(poller: &Poller, sock: &TcpStream, key: usize) -> io::Result<()> {
    let flags = libc::EPOLLIN
        | libc::EPOLLPRI
        | libc::EPOLLOUT
        | libc::EPOLLHUP
        | libc::EPOLLERR
        | libc::EPOLLRDHUP
        | libc::EPOLLET;
    let mut ev = libc::epoll_event {
        events: flags as u32,
        u64: key as u64,
    };
    // SAFETY: both descriptors are open for the call, and `ev` is a valid event to read.
    let r = unsafe {
        libc::epoll_ctl(
            poller.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            sock.as_raw_fd(),
            &mut ev,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn key_of(e: &libc::epoll_event) -> usize {
    // A copy: the struct is packed on x86-64.
    let data = e.u64;
    data as usize
}
