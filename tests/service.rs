//! Running as a service: systemd socket activation (LISTEN_FDS) and `--user`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Site, TempDir};

/// Reads stderr until `n` `listening on` lines and returns the addresses in them.
fn listening_addrs(child: &mut Child, n: usize) -> Vec<SocketAddr> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.trim().parse::<SocketAddr>().ok());
            }
        }
    });
    let mut addrs = Vec::new();
    while addrs.len() < n {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(addr)) => addrs.push(addr),
            other => {
                let _ = child.kill();
                panic!(
                    "{} of {n} 'listening on' lines, then {other:?}",
                    addrs.len()
                );
            }
        }
    }
    addrs
}

/// Starts the binary as systemd would with these sockets as descriptors 3, 4, ...
fn activated(listeners: &[TcpListener], root: &std::path::Path) -> Child {
    let fds: Vec<i32> = listeners.iter().map(|l| l.as_raw_fd()).collect();
    let mut cmd = Command::new("sh");
    // LISTEN_PID must be the server's pid: `exec` keeps the shell's.
    cmd.args([
        "-c",
        r#"LISTEN_PID=$$ LISTEN_FDS=$2 exec "$0" --root "$1" --access-log off"#,
    ])
    .arg(env!("CARGO_BIN_EXE_edgeserve"))
    .arg(root)
    .arg(fds.len().to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    // SAFETY: dup(2), dup2(2) and close(2) are async-signal-safe. Each socket is first moved
    // above the range 3.. (so that placing one cannot overwrite another not yet placed), then
    // dup2 puts it at 3 + i without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            let high: Vec<i32> = fds
                .iter()
                .map(|&fd| libc::fcntl(fd, libc::F_DUPFD, 64))
                .collect();
            for (i, &fd) in high.iter().enumerate() {
                if fd < 0 || libc::dup2(fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

fn stop(mut child: Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn serves_the_socket_systemd_hands_over() {
    let site = Site::new("activation");
    site.write("hello.txt", b"Hello, World!");
    // The "systemd" side: a bound, listening socket that the child finds as descriptor 3.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut child = activated(std::slice::from_ref(&listener), &site.root());
    assert_eq!(
        listening_addrs(&mut child, 1),
        [addr],
        "it must serve the inherited socket, not bind its own"
    );
    drop(listener); // only the child's copy is left
    let r = common::get(addr, "/hello.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
    stop(child);
}

/// `LISTEN_FDS=3`: every socket handed over is served, and no other is bound.
#[test]
fn serves_every_socket_systemd_hands_over() {
    let site = Site::new("activation-several");
    site.write("hello.txt", b"Hello, World!");
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut child = activated(&listeners, &site.root());
    assert_eq!(listening_addrs(&mut child, 3), addrs);
    drop(listeners);
    for addr in addrs {
        let r = common::get(addr, "/hello.txt");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
    }
    stop(child);
}

/// `LISTEN_FDS=2` where descriptor 4 is not a socket: one clear line, nothing served.
#[test]
fn activation_with_a_bad_second_descriptor_is_one_clear_error() {
    let dir = TempDir::new("activation-bad-second");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"LISTEN_PID=$$ LISTEN_FDS=2 exec "$0" --root "$1" 4</dev/null"#,
    ])
    .arg(env!("CARGO_BIN_EXE_edgeserve"))
    .arg(dir.path());
    // SAFETY: dup2(2) is async-signal-safe; it places the listener at 3 without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::fcntl(3, libc::F_SETFD, 0);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("descriptor 4"), "{err}");
}

#[test]
fn activation_without_a_socket_is_one_clear_error() {
    let dir = TempDir::new("activation-bad");
    let out = Command::new("sh")
        .args([
            "-c",
            r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" --root "$1" 3</dev/null"#,
        ])
        .arg(env!("CARGO_BIN_EXE_edgeserve"))
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("socket activation"), "{err}");
}

/// As root, `--user nobody` leaves the process running as nobody's uid and still serving; as
/// anyone else, switching users fails with one clear line.
#[test]
fn user_drops_root_after_binding() {
    let site = Site::new("user");
    site.write("hello.txt", b"Hello, World!");
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let nobody: u32 = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .and_then(|l| l.split(':').nth(2)?.parse().ok())
        .expect("a nobody user");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgeserve"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--access-log",
            "off",
            "--user",
            "nobody",
            "--root",
        ])
        .arg(site.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // SAFETY: getuid(2) has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        let status = child.wait().unwrap();
        assert!(!status.success(), "switching users without root must fail");
        return;
    }
    let addr = listening_addrs(&mut child, 1)[0];
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let uids: Vec<u32> = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|u| u.parse().unwrap())
        .collect();
    assert_eq!(uids, [nobody; 4], "real, effective, saved and fs uid");
    let r = common::get(addr, "/hello.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
    stop(child);
}

#[test]
fn unknown_user_is_one_clear_error() {
    let dir = TempDir::new("user-bad");
    let out = Command::new(env!("CARGO_BIN_EXE_edgeserve"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--user",
            "no-such-user-here",
            "--root",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no-such-user-here"), "{err}");
}
