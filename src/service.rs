//! Running as a service: a listener handed over by systemd (socket activation) and dropping root
//! after binding.

use std::io;
use std::net::TcpListener;
use std::os::fd::FromRawFd;

/// The sockets passed by systemd socket activation (`LISTEN_PID` is us and `LISTEN_FDS` is at
/// least 1: descriptors 3, 4, ...), or `None` when the server was not started that way. The
/// variables are removed so that children (CGI, later) do not take the sockets for theirs.
pub fn inherited_listeners() -> Option<io::Result<Vec<TcpListener>>> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: i32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds <= 0 {
        return None;
    }
    // SAFETY: removing variables while no other thread runs (this is called before the loop
    // starts and the binary has no other threads).
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    const SD_LISTEN_FDS_START: i32 = 3;
    // More than a few hundred is not a socket set but a broken environment.
    if fds > 1024 {
        return Some(Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("LISTEN_FDS={fds}: too many sockets"),
        )));
    }
    // Each descriptor is checked before it is owned: one that is not an open listening socket
    // must not be closed (or later used) as if it were ours.
    let listeners = (SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + fds)
        .map(|fd| {
            check_listener(fd)?;
            // SAFETY: systemd passes descriptors 3.. open and owned by us from here on, and
            // `check_listener` saw a listening TCP socket at `fd`.
            Ok(unsafe { TcpListener::from_raw_fd(fd) })
        })
        .collect();
    Some(listeners)
}

fn check_listener(fd: i32) -> io::Result<()> {
    // SAFETY: the descriptor is only borrowed for the checks; it is open (fcntl F_GETFD
    // succeeding says so) and not closed while borrowed.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not open"),
        ));
    }
    // SAFETY: `fd` is open (checked above) and stays open for the borrow.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&borrowed);
    let named = |e: io::Error| io::Error::new(e.kind(), format!("descriptor {fd}: {e}"));
    if sock.r#type().map_err(named)? != socket2::Type::STREAM
        || !sock.is_listener().map_err(named)?
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a listening TCP socket"),
        ));
    }
    sock.set_nonblocking(true)?;
    // The socket's own close-on-exec flag is systemd's to choose; ours is set here.
    sock.set_cloexec(true)?;
    Ok(())
}

/// Raises the soft descriptor limit to the hard one (as Go's runtime does) and returns the soft
/// limit in force afterwards, or `None` when it cannot be read.
pub fn raise_nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill and setrlimit to read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Some(lim.rlim_cur)
}

/// Switches to `user` (its uid, gid and no supplementary groups) and checks that root cannot be
/// regained. Reads /etc/passwd directly, so that a static build needs no NSS modules.
pub fn drop_privileges(user: &str) -> Result<(), String> {
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|e| format!("--user: /etc/passwd: {e}"))?;
    let (uid, gid) = passwd
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 4 && f[0] == user)
                .then(|| (f[2].parse::<u32>().ok(), f[3].parse::<u32>().ok()))
        })
        .next()
        .and_then(|(u, g)| Some((u?, g?)))
        .ok_or_else(|| format!("--user: no user {user:?} in /etc/passwd"))?;
    // SAFETY: plain credential syscalls; the order (groups, gid, uid) is the one that works.
    unsafe {
        if libc::getuid() == 0 && libc::setgroups(1, &gid) != 0 {
            return Err(format!("--user: setgroups: {}", io::Error::last_os_error()));
        }
        if libc::setgid(gid) != 0 {
            return Err(format!(
                "--user: setgid({gid}): {}",
                io::Error::last_os_error()
            ));
        }
        if libc::setuid(uid) != 0 {
            return Err(format!(
                "--user: setuid({uid}): {}",
                io::Error::last_os_error()
            ));
        }
        if uid != 0 && (libc::setuid(0) == 0 || libc::geteuid() == 0) {
            return Err("--user: root privileges could be regained; refusing to run".into());
        }
    }
    Ok(())
}
