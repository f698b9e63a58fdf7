//! Listening sockets: one per `--listen`, bound here (a second set with SO_REUSEPORT for each
//! further shard), or handed over by systemd (socket activation, `LISTEN_FDS` of them).

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Listen;

/// A listening socket and what its connections speak.
#[derive(Debug)]
pub struct Listener {
    pub sock: TcpListener,
    /// Its `--listen`; `addr` is the address bound (the real port where 0 was asked for).
    pub spec: Listen,
}

impl Listener {
    pub fn local_addr(&self) -> SocketAddr {
        self.spec.addr
    }

    /// Another socket for the same address, for another shard: bound anew with SO_REUSEPORT
    /// (the kernel spreads connections over them), or, for an inherited socket that cannot be
    /// bound again, a duplicate of this one.
    pub fn for_shard(&self, backlog: i32, reuse_port: bool) -> io::Result<Listener> {
        let sock = if reuse_port {
            bind(self.spec.addr, backlog, true)?
        } else {
            self.sock.try_clone()?
        };
        Ok(Listener {
            sock,
            spec: self.spec.clone(),
        })
    }
}

/// Binds every listener of `specs`, in order. The error names the address that failed.
pub fn bind_all(
    specs: &[Listen],
    backlog: i32,
    reuse_port: bool,
) -> Result<Vec<Listener>, (SocketAddr, io::Error)> {
    specs
        .iter()
        .map(|spec| {
            let sock = bind(spec.addr, backlog, reuse_port).map_err(|e| (spec.addr, e))?;
            let addr = sock.local_addr().map_err(|e| (spec.addr, e))?;
            Ok(Listener {
                sock,
                spec: Listen {
                    addr,
                    ..spec.clone()
                },
            })
        })
        .collect()
}

/// Sockets handed over by systemd, each taking the `--listen` of the same address (so that
/// its TLS or PROXY protocol setting applies) or plain HTTP when no `--listen` names it.
pub fn adopt(socks: Vec<TcpListener>, specs: &[Listen]) -> io::Result<Vec<Listener>> {
    socks
        .into_iter()
        .map(|sock| {
            let addr = sock.local_addr()?;
            let spec = specs
                .iter()
                .find(|s| s.addr == addr)
                .map_or_else(|| Listen::plain(addr), |s| s.clone());
            Ok(Listener { sock, spec })
        })
        .collect()
}

fn bind(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<TcpListener> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    // `[::]:80` beside `0.0.0.0:80` must not collide: each family gets its own listener.
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_tcp_nodelay(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}
