//! Running as a service: systemd socket activation (LISTEN_FDS) and `--user`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Site, TempDir};

/// Reads stderr until the `listening on` line and returns the address in it.
fn listening_addr(child: &mut Child) -> SocketAddr {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.trim().parse::<SocketAddr>().ok());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Some(addr)) => addr,
        other => {
            let _ = child.kill();
            panic!("no 'listening on' line: {other:?}");
        }
    }
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
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    // LISTEN_PID must be the server's pid: `exec` keeps the shell's.
    cmd.args([
        "-c",
        r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" --root "$1" --access-log off"#,
    ])
    .arg(env!("CARGO_BIN_EXE_edgeserve"))
    .arg(site.root())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    // SAFETY: dup2(2) and fcntl(2) are async-signal-safe. dup2 gives a descriptor 3 without
    // close-on-exec; when the listener is descriptor 3 already, dup2 would do nothing, so its flag
    // is cleared instead.
    unsafe {
        cmd.pre_exec(move || {
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if ok < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    assert_eq!(
        listening_addr(&mut child),
        addr,
        "it must serve the inherited socket, not bind its own"
    );
    drop(listener); // only the child's copy is left
    let r = common::get(addr, "/hello.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
    stop(child);
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
    let addr = listening_addr(&mut child);
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
