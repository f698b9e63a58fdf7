//! Running as a service: a listener handed over by systemd (socket activation) and dropping root
//! after binding.

use std::io;
use std::net::TcpListener;
use std::os::fd::FromRawFd;

/// The first socket passed by systemd socket activation (`LISTEN_PID` is us and `LISTEN_FDS`
/// is at least 1), or `None` when the server was not started that way. The variables are removed
/// so that children (none today) do not take the socket for theirs.
pub fn inherited_listener() -> Option<io::Result<TcpListener>> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds == 0 {
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
    // SAFETY: systemd passes descriptor 3 open and owned by us from here on.
    let listener = unsafe { TcpListener::from_raw_fd(SD_LISTEN_FDS_START) };
    Some(check_listener(&listener).map(|()| listener))
}

fn check_listener(l: &TcpListener) -> io::Result<()> {
    let sock = socket2::SockRef::from(l);
    if sock.r#type()? != socket2::Type::STREAM || !sock.is_listener()? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptor 3 is not a listening TCP socket",
        ));
    }
    l.set_nonblocking(true)?;
    // The socket's own close-on-exec flag is systemd's to choose; ours is set here.
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe { libc::fcntl(3, libc::F_SETFD, libc::FD_CLOEXEC) };
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
