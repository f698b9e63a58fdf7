//! CPU lists (`0,2-3`) and pinning with sched_setaffinity, so that the server and the load
//! generator do not fight over the same cores and the numbers mean something.

use std::io;

/// Parses `0`, `0-3`, `0,2,4-5` into sorted, distinct CPU numbers.
pub fn parse(flag: &str, s: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("{flag}: expected a CPU list such as 0 or 0-3 or 0,2, got {s:?}");
    let max = libc::CPU_SETSIZE as usize;
    let mut cpus = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let lo: usize = lo.trim().parse().map_err(|_| bad())?;
        let hi: usize = hi.trim().parse().map_err(|_| bad())?;
        if lo > hi || hi >= max {
            return Err(bad());
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// `1,3-5` from a list.
pub fn format(cpus: &[usize]) -> String {
    cpus.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The CPUs this process may run on (what taskset or a cgroup left us), in order.
pub fn allowed() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; sched_getaffinity fills at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ok != 0 {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (0..n).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: cpu is below CPU_SETSIZE, inside the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// The default split: the server gets the first half, the client the rest; with one CPU both
/// share it.
pub fn split(all: &[usize]) -> (Vec<usize>, Vec<usize>) {
    match all.len() {
        0 => (vec![0], vec![0]),
        1 => (all.to_vec(), all.to_vec()),
        n => {
            let (server, client) = all.split_at(n / 2);
            (server.to_vec(), client.to_vec())
        }
    }
}

/// The set for sched_setaffinity. Built before a fork so the child only makes the syscall.
pub fn set_of(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: all-zero is the empty set; parse() kept every cpu below CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// Pins `pid` (0: the calling thread) to `set`. Async-signal-safe: one syscall.
pub fn pin(pid: libc::pid_t, set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let r = unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(parse("-c", "0").unwrap(), vec![0]);
        assert_eq!(parse("-c", "3,0-1,1").unwrap(), vec![0, 1, 3]);
        assert!(parse("-c", "2-1").is_err());
        assert!(parse("-c", "x").is_err());
        assert!(parse("-c", "").is_err());
        assert_eq!(format(&[0, 2]), "0,2");
    }

    #[test]
    fn split_halves() {
        assert_eq!(split(&[0, 1]), (vec![0], vec![1]));
        assert_eq!(split(&[0]), (vec![0], vec![0]));
        assert_eq!(split(&[0, 1, 2, 3]), (vec![0, 1], vec![2, 3]));
        assert!(!allowed().is_empty());
    }
}
