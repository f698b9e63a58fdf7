//! Signals as a readable pipe (the self-pipe trick), so that shutdown and log reopening reach the
//! loop as one more event rather than a flag polled in a busy loop.
//!
//! - SIGINT, SIGTERM: graceful shutdown; a second one during the grace period stops at once.
//! - SIGHUP: reload the configuration (`reload.rs`) and reopen the access log (logrotate's
//!   `postrotate kill -HUP`).
//! - SIGUSR1: reopen the access log only (nginx's USR1).
//! - SIGUSR2: ignored, so that a stray one does not kill the server.
//!
//! The handler writes the signal's number as one byte, so the loop learns which ones came.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The pipe's write end while a [`SignalPipe`] lives, else -1. Reset before the descriptor is
/// closed, so that a late signal cannot write into whatever file reuses its number.
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

const HANDLED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1];

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) and errno access are async-signal-safe; errno is restored so the
        // interrupted code does not see ours. A full pipe drops the byte (EAGAIN): the loop
        // has unread signals of that kind already or will drain soon.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, (&raw const byte).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// What arrived since the pipe was last drained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Arrived {
    /// SIGINT or SIGTERM, with how many of them.
    pub stop: usize,
    /// SIGHUP or SIGUSR1: reopen the access log.
    pub reopen: bool,
    /// SIGHUP: read the configuration again.
    pub reload: bool,
}

/// The read end of the pipe; readable once a signal has arrived.
pub struct SignalPipe {
    read: File,
    write: File,
}

impl SignalPipe {
    /// Installs the handlers. Call once per process (a second pipe would take the signals over).
    pub fn install() -> io::Result<SignalPipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 just returned these descriptors and nothing else owns them.
        let (read, write) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        WRITE_FD.store(fds[1], Ordering::Relaxed);
        let pipe = SignalPipe { read, write };
        for sig in HANDLED {
            set_action(sig, on_signal as *const () as usize)?;
        }
        set_action(libc::SIGUSR2, libc::SIG_IGN)?;
        Ok(pipe)
    }

    pub fn source(&self) -> &File {
        &self.read
    }

    /// Empties the pipe and says which signals had arrived.
    pub fn drain(&self) -> Arrived {
        let mut buf = [0u8; 64];
        let mut got = Arrived::default();
        while let Ok(n) = (&self.read).read(&mut buf) {
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                match libc::c_int::from(b) {
                    libc::SIGINT | libc::SIGTERM => got.stop += 1,
                    libc::SIGHUP => {
                        got.reopen = true;
                        got.reload = true;
                    }
                    libc::SIGUSR1 => got.reopen = true,
                    _ => {}
                }
            }
        }
        got
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        // Stop writing into the pipe before it closes (its number may be reused at once), and
        // give the signals their default meaning back: nothing is left to hear them.
        if WRITE_FD
            .compare_exchange(
                self.write.as_raw_fd(),
                -1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            for sig in HANDLED {
                let _ = set_action(sig, libc::SIG_DFL);
            }
        }
    }
}

fn set_action(sig: libc::c_int, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: a zeroed sigaction with a plain handler (or SIG_IGN/SIG_DFL), an empty mask and
    // SA_RESTART is valid; `on_signal` only does async-signal-safe work.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signal that arrives after the pipe closed must not write into whatever file takes its
    /// descriptor number next: the handler's target is reset when the pipe goes.
    #[test]
    fn the_handler_forgets_the_pipe_when_it_closes() {
        let pipe = SignalPipe::install().unwrap();
        assert_eq!(WRITE_FD.load(Ordering::Relaxed), pipe.write.as_raw_fd());
        drop(pipe);
        assert_eq!(WRITE_FD.load(Ordering::Relaxed), -1);
        on_signal(libc::SIGTERM); // writes nowhere
    }
}
