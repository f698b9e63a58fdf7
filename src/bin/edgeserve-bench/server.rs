//! The server under test as a child process: started pinned to its CPUs, its port read from the
//! "listening on" line, stopped with SIGTERM and reaped with wait4 so that the resource usage is
//! that child's alone (getrusage(RUSAGE_CHILDREN) would sum every server of the comparison).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cpus;

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of stderr kept for error messages.
const TAIL: usize = 8;

pub struct Spec<'a> {
    pub binary: &'a Path,
    pub model: &'a str,
    pub workers: Option<usize>,
    pub root: &'a Path,
    pub cpus: &'a [usize],
    /// More server flags (the proxy route).
    pub extra: &'a [String],
}

pub struct Running {
    pid: libc::pid_t,
    pub port: u16,
    tail: Arc<Mutex<VecDeque<String>>>,
    drain: Option<JoinHandle<()>>,
}

/// What the server used over its whole life, from wait4.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_s: f64,
    pub ctx_switches: u64,
    pub max_rss_kib: u64,
    /// It ignored SIGTERM for STOP_TIMEOUT and was killed.
    pub killed: bool,
    /// Exit code, or 128 + signal.
    pub exit: i32,
}

pub fn start(spec: &Spec<'_>) -> Result<Running, String> {
    let mut cmd = Command::new(spec.binary);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--access-log",
        "off",
        "--log-level",
        "info",
    ])
    .args(["--model", spec.model]);
    if let Some(w) = spec.workers {
        cmd.arg("--workers").arg(w.to_string());
    }
    cmd.arg("--bench-routes")
        .args(spec.extra)
        .arg(spec.root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let set = cpus::set_of(spec.cpus);
    // SAFETY: the closure makes one syscall on a set built before the fork (async-signal-safe).
    unsafe {
        cmd.pre_exec(move || cpus::pin(0, &set));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", spec.binary.display()))?;
    let pid = child.id() as libc::pid_t;
    let stderr = child.stderr.take().expect("stderr is piped");
    // The child is reaped with wait4 (for its rusage), never through `Child`.
    drop(child);

    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let (tx, rx) = mpsc::channel();
    let drain = {
        let tail = Arc::clone(&tail);
        std::thread::spawn(move || {
            // Reads to the end, so the server never blocks on a full stderr pipe.
            let mut announced = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !announced && let Some(port) = port_of(&line) {
                    announced = true;
                    let _ = tx.send(port);
                }
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        })
    };
    let mut running = Running {
        pid,
        port: 0,
        tail,
        drain: Some(drain),
    };
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(port) => {
            running.port = port;
            Ok(running)
        }
        Err(RecvTimeoutError::Disconnected) => {
            let usage = running.stop();
            Err(format!(
                "server exited (status {}) before listening: {}",
                usage.exit,
                running.last_line()
            ))
        }
        Err(RecvTimeoutError::Timeout) => {
            running.stop();
            Err(format!(
                "server printed no \"listening on\" line within {} s: {}",
                START_TIMEOUT.as_secs(),
                running.last_line()
            ))
        }
    }
}

/// The port in `... listening on http://127.0.0.1:PORT`.
fn port_of(line: &str) -> Option<u16> {
    let (_, rest) = line.split_once("listening on http://")?;
    let addr = rest.split_whitespace().next()?;
    addr.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
}

impl Running {
    /// CPU time (all threads) the server has used so far, from /proc: taken before and after
    /// the load, it is the CPU of the measured window alone (wait4's total also has the start
    /// and the drain at the stop). Each thread's schedstat counts nanoseconds on a CPU; where it
    /// is missing, utime + stime of /proc/PID/stat (clock ticks, as
    /// `../shared/bench/compare.sh` reads them: coarse for a short cell).
    pub fn cpu_s(&self) -> Option<f64> {
        let ns: Option<u64> = std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .ok()?
            .map(|t| {
                let t = t.ok()?.path().join("schedstat");
                std::fs::read_to_string(t)
                    .ok()?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        if let Some(ns) = ns {
            return Some(ns as f64 / 1e9);
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut f = rest.split_whitespace();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let utime: u64 = f.nth(11)?.parse().ok()?;
        let stime: u64 = f.next()?.parse().ok()?;
        // SAFETY: sysconf only reads a constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        (hz > 0).then(|| (utime + stime) as f64 / hz as f64)
    }

    /// The last thing the server said, for error messages.
    pub fn last_line(&self) -> String {
        let t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        t.back().cloned().unwrap_or_else(|| "(no output)".into())
    }

    /// SIGTERM, then wait up to STOP_TIMEOUT, then SIGKILL. Idempotent.
    pub fn stop(&mut self) -> Usage {
        let mut usage = Usage::default();
        if self.pid <= 0 {
            return usage;
        }
        let pid = std::mem::replace(&mut self.pid, 0);
        // SAFETY: plain syscalls on our own child's pid, which is not reaped until wait4 below.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut status = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
            if r == pid {
                break;
            }
            if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                // Not our child any more (cannot happen unless someone else reaped it).
                return usage;
            }
            if Instant::now() >= deadline {
                usage.killed = true;
                unsafe { libc::kill(pid, libc::SIGKILL) };
                while unsafe { libc::wait4(pid, &mut status, 0, &mut ru) } < 0 {
                    if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                        return usage;
                    }
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        usage.cpu_s = secs(ru.ru_utime) + secs(ru.ru_stime);
        usage.ctx_switches = (ru.ru_nvcsw + ru.ru_nivcsw) as u64;
        // Linux reports ru_maxrss in KiB.
        usage.max_rss_kib = ru.ru_maxrss as u64;
        usage.exit = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            -1
        };
        // The pipe is at EOF now that the server is gone.
        if let Some(h) = self.drain.take() {
            let _ = h.join();
        }
        usage
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Never leave a server behind, even on an early return.
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_port() {
        assert_eq!(
            port_of("2025-01-01T00:00:00Z INFO listening on http://127.0.0.1:43210"),
            Some(43210)
        );
        assert_eq!(port_of("listening on http://[::1]:8 (x)"), Some(8));
        assert_eq!(port_of("something else"), None);
    }
}
