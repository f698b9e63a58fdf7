//! Opening files below the document root with `openat2(2)`.
//!
//! Containment is checked by the kernel while it resolves the path, relative to a descriptor of
//! the root held since startup: a directory swapped for a symlink between a check and an open
//! (the race a `canonicalize` + `starts_with` + `open` sequence has) cannot lead outside.
//! Symlinks that stay inside the root still work; one leading outside fails with EXDEV.
//! The kind of what was opened comes from `fstat` on the descriptor, never from the path.

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
}

/// What a path below the root names.
#[derive(Debug)]
pub enum Opened {
    File(File, Metadata),
    Dir,
}

/// How often an open is retried when the kernel says a concurrent rename may have disturbed
/// a RESOLVE_BENEATH walk (EAGAIN): it asks the caller to try again.
const RETRIES: usize = 3;

impl Root {
    /// Opens the root as an `O_PATH` directory descriptor. Fails (a clear startup error) when
    /// the kernel has no `openat2` (before Linux 5.6): serving without it would reopen the race
    /// this module exists to close.
    pub fn new(path: &Path, follow_symlinks_outside: bool) -> io::Result<Root> {
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
        let root = Root {
            fd,
            beneath: !follow_symlinks_outside,
        };
        match root.openat2(c".") {
            Ok(_) => Ok(root),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("openat2(2) is unavailable ({e}); Linux 5.6 or later is needed"),
                ))
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
        let file = self.openat2(&c)?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            Ok(Opened::Dir)
        } else if meta.is_file() {
            Ok(Opened::File(file, meta))
        } else {
            // A FIFO, socket or device: opened without blocking (O_NONBLOCK), never served.
            Err(io::Error::from(io::ErrorKind::PermissionDenied))
        }
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
