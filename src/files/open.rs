//! Opening files below the document root with `openat2(2)`.
//!
//! Containment is checked by the kernel while it resolves the path, relative to a descriptor of
//! the root held since startup: a directory swapped for a symlink between a check and an open
//! (the race a `canonicalize` + `starts_with` + `open` sequence has) cannot lead outside.
//! Symlinks that stay inside the root still work; one leading outside fails with EXDEV.
//! The kind of what was opened comes from `fstat` on the descriptor, never from the path.
//!
//! Where `openat2` is missing (Linux before 5.6, which small boards still run; valgrind; some
//! seccomp sandboxes) the file is opened relative to the root's descriptor and the descriptor
//! itself is checked: its real path (`/proc/self/fd/N`) must lie below the root's. That is
//! race-free too (what is checked is what was opened), at the cost of one `readlink` per open.

use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The document root, held open.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    /// RESOLVE_BENEATH: refuse symlinks (and anything else) leading outside the root.
    beneath: bool,
    /// Without `openat2`: the root's real path, which every opened file's must start with.
    fallback: Option<std::path::PathBuf>,
}

/// What a path below the root names.
#[derive(Debug)]
pub enum Opened {
    File(File, Metadata),
    /// A directory, opened for reading (its listing).
    Dir(File),
}

/// How often an open is retried when the kernel says a concurrent rename may have disturbed
/// a RESOLVE_BENEATH walk (EAGAIN): it asks the caller to try again.
const RETRIES: usize = 3;

impl Root {
    /// Opens the root as an `O_PATH` directory descriptor. Fails (a clear startup error) when
    /// the kernel has no `openat2` (before Linux 5.6): serving without it would reopen the race
    /// this module exists to close.
    pub fn new(path: &Path, follow_symlinks_outside: bool) -> io::Result<Root> {
        Root::open_root(path, follow_symlinks_outside, false)
    }

    /// `new`, or with `checked_only` the way it works where `openat2` is missing (for tests).
    fn open_root(
        path: &Path,
        follow_symlinks_outside: bool,
        checked_only: bool,
    ) -> io::Result<Root> {
        let c = CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: `c` is a valid NUL-terminated path; the flags ask for no file creation.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by open(2) and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut root = Root {
            fd,
            beneath: !follow_symlinks_outside,
            fallback: None,
        };
        let probe = if checked_only {
            Err(io::Error::from_raw_os_error(libc::ENOSYS))
        } else {
            root.openat2(c".").map(drop)
        };
        match probe {
            Ok(()) => Ok(root),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                let real = std::fs::canonicalize(path)?;
                // The check needs /proc: without it there is no safe way to serve.
                std::fs::read_link(format!("/proc/self/fd/{}", root.fd.as_raw_fd())).map_err(
                    |p| {
                        io::Error::new(
                            io::ErrorKind::Unsupported,
                            format!("openat2(2) is unavailable ({e}) and so is /proc ({p})"),
                        )
                    },
                )?;
                log::warn!(
                    "openat2(2) is unavailable ({e}): checking the real path of every file opened"
                );
                root.fallback = Some(real);
                Ok(root)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens `rel`, decoded segments joined by `/` with no `.`, `..` or empty segment (what
    /// `path::normalize_into` gives, without its slashes at either end); empty is the root.
    /// Anything but a regular file or a directory is refused (PermissionDenied).
    pub fn open(&self, rel: &[u8]) -> io::Result<Opened> {
        let c = if rel.is_empty() {
            CString::from(c".")
        } else {
            CString::new(rel).map_err(|_| io::Error::from(io::ErrorKind::InvalidFilename))?
        };
        let file = match &self.fallback {
            None => self.openat2(&c)?,
            Some(real_root) => self.openat_checked(&c, real_root)?,
        };
        let meta = file.metadata()?;
        if meta.is_dir() {
            Ok(Opened::Dir(file))
        } else if meta.is_file() {
            Ok(Opened::File(file, meta))
        } else {
            // A FIFO, socket or device: opened without blocking (O_NONBLOCK), never served.
            Err(io::Error::from(io::ErrorKind::PermissionDenied))
        }
    }

    /// Opens `rel` below the root with plain `openat`, then checks where the descriptor really
    /// leads (unless symlinks may leave the root): below the root, or refused as `openat2`
    /// refuses it (EXDEV).
    fn openat_checked(&self, rel: &std::ffi::CStr, real_root: &Path) -> io::Result<File> {
        let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;
        // SAFETY: a valid directory descriptor and a NUL-terminated relative path; the flags
        // create nothing.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), rel.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: openat returned a new descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        if self.beneath {
            let real = std::fs::read_link(format!("/proc/self/fd/{fd}"))?;
            if !real.starts_with(real_root) {
                return Err(io::Error::from_raw_os_error(libc::EXDEV));
            }
        }
        Ok(file)
    }

    fn openat2(&self, rel: &std::ffi::CStr) -> io::Result<File> {
        // SAFETY: open_how is plain old data (three u64); all-zero is its documented default.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        // O_NONBLOCK: opening a FIFO must not block the loop (it is refused after fstat).
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY) as u64;
        how.resolve = libc::RESOLVE_NO_MAGICLINKS;
        if self.beneath {
            how.resolve |= libc::RESOLVE_BENEATH;
        }
        for _ in 0..RETRIES {
            // SAFETY: a valid directory descriptor, a NUL-terminated path, and a pointer to an
            // initialised open_how with its exact size, as openat2(2) requires.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.fd.as_raw_fd(),
                    rel.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if fd >= 0 {
                // SAFETY: openat2 returned a new descriptor that nothing else owns.
                return Ok(unsafe { File::from_raw_fd(fd as i32) });
            }
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
                return Err(e);
            }
        }
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree(tag: &str) -> std::path::PathBuf {
        let base =
            std::env::temp_dir().join(format!("edgeserve-open-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("root/d")).unwrap();
        std::fs::create_dir_all(base.join("out")).unwrap();
        std::fs::write(base.join("root/d/f"), b"inside").unwrap();
        std::fs::write(base.join("out/f"), b"SECRET").unwrap();
        symlink("d", base.join("root/near")).unwrap();
        symlink(base.join("out"), base.join("root/far")).unwrap();
        base
    }

    fn content(o: io::Result<Opened>) -> io::Result<Vec<u8>> {
        match o? {
            Opened::File(mut f, _) => {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut v)?;
                Ok(v)
            }
            Opened::Dir(_) => Ok(b"dir".to_vec()),
        }
    }

    /// Both ways of opening agree: a symlink inside the root is followed, one leading out is
    /// refused (EXDEV), and `--follow-symlinks` lets it out.
    #[test]
    fn symlinks_leading_out_are_refused_either_way() {
        let base = tree("modes");
        for checked in [false, true] {
            let root = Root::open_root(&base.join("root"), false, checked).unwrap();
            assert_eq!(
                content(root.open(b"near/f")).unwrap(),
                b"inside",
                "checked {checked}"
            );
            let err = content(root.open(b"far/f")).unwrap_err();
            assert_eq!(
                err.raw_os_error(),
                Some(libc::EXDEV),
                "checked {checked}: {err}"
            );
            let free = Root::open_root(&base.join("root"), true, checked).unwrap();
            assert_eq!(
                content(free.open(b"far/f")).unwrap(),
                b"SECRET",
                "checked {checked}"
            );
        }
        let _ = std::fs::remove_dir_all(&base);
    }

    /// The fallback checks what it opened, not a name: a directory swapped for a symlink to the
    /// outside while files are opened through it never yields the outside file.
    #[test]
    fn the_checked_fallback_has_no_race() {
        let base = tree("race");
        let root = Root::open_root(&base.join("root"), false, true).unwrap();
        let (a, b) = (base.join("root/d"), base.join("root/far"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let stop = std::sync::Arc::clone(&stop);
            let (a, b) = (
                CString::new(a.as_os_str().as_bytes()).unwrap(),
                CString::new(b.as_os_str().as_bytes()).unwrap(),
            );
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 200_000 {
                    // SAFETY: two valid NUL-terminated paths and a flag this kernel knows.
                    unsafe {
                        libc::renameat2(
                            libc::AT_FDCWD,
                            a.as_ptr(),
                            libc::AT_FDCWD,
                            b.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        )
                    };
                    n += 1;
                }
            })
        };
        let (mut inside, mut refused) = (0, 0);
        for _ in 0..5000 {
            match content(root.open(b"d/f")) {
                Ok(v) => {
                    assert_eq!(v, b"inside", "served the outside file");
                    inside += 1;
                }
                Err(_) => refused += 1,
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        assert!(refused > 0 || inside > 0);
        let _ = std::fs::remove_dir_all(&base);
    }
}
