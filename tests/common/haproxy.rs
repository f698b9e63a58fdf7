//! HAProxy in front of edgeserve, for the PROXY protocol tests: a child process given two
//! listening sockets on 127.0.0.1:0 (`bind fd@N`, so no port is guessed), one forwarding with
//! `send-proxy` (v1) and one with `send-proxy-v2`, both health-checking `/healthz` through the
//! header. The configuration is the one README's "Scaling out" shows. Killed (by its pid) on drop.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The haproxy binary, if installed.
pub fn path() -> Option<PathBuf> {
    [
        "/usr/sbin/haproxy",
        "/usr/local/sbin/haproxy",
        "/usr/bin/haproxy",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

pub struct Haproxy {
    child: Child,
    /// Frontends: to edgeserve with a v1 header, with a v2 header.
    pub v1: SocketAddr,
    pub v2: SocketAddr,
    _listeners: [TcpListener; 2],
}

/// The configuration under test (README "Scaling out" has it with real addresses).
pub fn config(fd_v1: i32, fd_v2: i32, edgeserve: SocketAddr) -> String {
    format!(
        "global
    maxconn 256

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend www_v1
    bind fd@{fd_v1}
    default_backend edgeserve_v1

frontend www_v2
    bind fd@{fd_v2}
    default_backend edgeserve_v2

backend edgeserve_v1
    option httpchk GET /healthz
    server e1 {edgeserve} send-proxy check check-send-proxy inter 200ms

backend edgeserve_v2
    option httpchk GET /healthz
    server e1 {edgeserve} send-proxy-v2 check check-send-proxy inter 200ms
"
    )
}

impl Haproxy {
    pub fn start(haproxy: &Path, edgeserve: SocketAddr, dir: &Path) -> Haproxy {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config(fa, fb, edgeserve)).unwrap();
        let mut cmd = Command::new(haproxy);
        cmd.arg("-db").arg("-f").arg(&cfg);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: fcntl(2) is async-signal-safe; it clears close-on-exec on two descriptors
        // that stay open in the parent until the child is gone.
        unsafe {
            cmd.pre_exec(move || {
                for fd in [fa, fb] {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn haproxy");
        Haproxy {
            child,
            v1: a.local_addr().unwrap(),
            v2: b.local_addr().unwrap(),
            _listeners: [a, b],
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
