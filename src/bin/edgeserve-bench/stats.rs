//! What a run measured: correct answers, errors by kind, bytes and the latency histogram, per
//! thread and then merged; and the two ways to print it (text for people, JSON for scripts).

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Why a request (or a connection attempt) did not end in a correct answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The connection could not be made (refused, unreachable, no answer to SYN in time).
    Connect,
    /// The connection broke with a request unanswered: reset, read or write error, or a close
    /// before the response was complete (a short body).
    Read,
    /// No response within --timeout of sending.
    Timeout,
    /// A complete response with another status than expected.
    Status,
    /// Bytes that are not an HTTP/1.1 response, or a response nobody asked for.
    Malformed,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Errors {
    pub connect: u64,
    pub read: u64,
    pub timeout: u64,
    pub status: u64,
    pub malformed: u64,
}

impl Errors {
    pub fn count(&mut self, kind: ErrorKind) {
        match kind {
            ErrorKind::Connect => self.connect += 1,
            ErrorKind::Read => self.read += 1,
            ErrorKind::Timeout => self.timeout += 1,
            ErrorKind::Status => self.status += 1,
            ErrorKind::Malformed => self.malformed += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.connect + self.read + self.timeout + self.status + self.malformed
    }

    /// Errors that ended a request (a failed connect attempt carried none).
    pub fn of_requests(&self) -> u64 {
        self.total() - self.connect
    }

    fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.read += o.read;
        self.timeout += o.timeout;
        self.status += o.status;
        self.malformed += o.malformed;
    }
}

/// Latencies are recorded in microseconds, up to an hour, to 3 significant digits.
const HIST_MAX_US: u64 = 3_600_000_000;

#[derive(Clone, Debug)]
pub struct Stats {
    pub correct: u64,
    pub errors: Errors,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Latency of correct answers only, in microseconds.
    pub hist: Histogram<u64>,
    /// Set when a `--requests` run gave up because nothing answered for a while.
    pub stalled: bool,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            correct: 0,
            errors: Errors::default(),
            bytes_read: 0,
            bytes_written: 0,
            hist: Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds"),
            stalled: false,
        }
    }
}

impl Stats {
    pub fn record(&mut self, latency: Duration) {
        self.hist
            .saturating_record((latency.as_micros() as u64).clamp(1, HIST_MAX_US));
    }

    /// Requests that got an outcome: correct answers plus errors that ended a request.
    pub fn answered(&self) -> u64 {
        self.correct + self.errors.of_requests()
    }

    pub fn merge(&mut self, o: &Stats) {
        self.correct += o.correct;
        self.errors.add(&o.errors);
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&o.hist);
        self.stalled |= o.stalled;
    }
}

/// A finished run: the merged numbers and what produced them.
#[derive(Clone, Debug)]
pub struct Report {
    pub url: String,
    pub connections: usize,
    pub threads: usize,
    pub pipeline: usize,
    pub rate: Option<f64>,
    pub elapsed: Duration,
    pub stats: Stats,
}

/// The percentiles every report shows, with their JSON keys.
const PERCENTILES: [(f64, &str); 4] =
    [(50.0, "p50"), (90.0, "p90"), (99.0, "p99"), (99.9, "p99_9")];

impl Report {
    /// Correct answers per second: errors do not count as throughput.
    pub fn requests_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.stats.correct as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency percentile in microseconds (0 when there were no correct answers).
    pub fn percentile_us(&self, p: f64) -> u64 {
        if self.stats.hist.is_empty() {
            0
        } else {
            self.stats.hist.value_at_percentile(p)
        }
    }

    pub fn text(&self) -> String {
        let s = &self.stats;
        let e = &s.errors;
        let mode = match self.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".to_string(),
        };
        let mut out = String::new();
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let _ = writeln!(
            out,
            "{}: {}, {}, pipeline {}, {mode}",
            self.url,
            plural(self.connections, "connection"),
            plural(self.threads, "thread"),
            self.pipeline
        );
        let _ = writeln!(
            out,
            "  requests/s  {:.1} (correct answers / elapsed)",
            self.requests_per_s()
        );
        let _ = writeln!(
            out,
            "  correct     {} in {:.2} s",
            s.correct,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "  errors      {} (connect {}, reset/read {}, timeout {}, bad status {}, malformed {})",
            e.total(),
            e.connect,
            e.read,
            e.timeout,
            e.status,
            e.malformed
        );
        let _ = writeln!(
            out,
            "  transfer    {} read, {} written",
            human_bytes(s.bytes_read),
            human_bytes(s.bytes_written)
        );
        let mut lat = String::new();
        for (p, key) in PERCENTILES {
            let _ = write!(
                lat,
                "{} {}  ",
                key.replace('_', "."),
                human_us(self.percentile_us(p))
            );
        }
        let _ = writeln!(lat, "max {}", human_us(s.hist.max()));
        let _ = write!(out, "  latency     {lat}");
        if s.stalled {
            let _ = writeln!(
                out,
                "  stopped early: no response for longer than the timeout"
            );
        }
        out
    }

    /// One JSON object on one line, written by hand (no serde in this crate).
    pub fn json(&self) -> String {
        let s = &self.stats;
        let e = &s.errors;
        let rate = self.rate.map_or("null".to_string(), |r| format!("{r}"));
        let mut lat = String::new();
        for (p, key) in PERCENTILES {
            let _ = write!(lat, "\"{key}\":{},", self.percentile_us(p));
        }
        let _ = write!(
            lat,
            "\"max\":{},\"mean\":{:.1}",
            s.hist.max(),
            s.hist.mean()
        );
        format!(
            concat!(
                "{{\"url\":\"{}\",\"connections\":{},\"threads\":{},\"pipeline\":{},\"rate\":{},",
                "\"elapsed_s\":{:.6},\"requests\":{},\"correct\":{},\"requests_per_s\":{:.1},",
                "\"errors\":{{\"total\":{},\"connect\":{},\"read\":{},\"timeout\":{},",
                "\"status\":{},\"malformed\":{}}},\"bytes_read\":{},\"bytes_written\":{},",
                "\"latency_us\":{{{}}},\"stalled\":{}}}"
            ),
            json_escape(&self.url),
            self.connections,
            self.threads,
            self.pipeline,
            rate,
            self.elapsed.as_secs_f64(),
            s.answered(),
            s.correct,
            self.requests_per_s(),
            e.total(),
            e.connect,
            e.read,
            e.timeout,
            e.status,
            e.malformed,
            s.bytes_read,
            s.bytes_written,
            lat,
            s.stalled
        )
    }
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

pub fn human_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{us}us")
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_everything() {
        let mut a = Stats {
            correct: 2,
            ..Stats::default()
        };
        a.record(Duration::from_micros(100));
        a.record(Duration::from_micros(300));
        a.errors.count(ErrorKind::Status);
        let mut b = Stats {
            correct: 1,
            ..Stats::default()
        };
        b.record(Duration::from_millis(2));
        b.errors.count(ErrorKind::Connect);
        a.merge(&b);
        assert_eq!(a.correct, 3);
        assert_eq!(a.hist.len(), 3);
        assert_eq!(a.errors.total(), 2);
        assert_eq!(a.answered(), 4);
        assert!(a.hist.max() >= 1999);
    }

    #[test]
    fn json_is_one_line() {
        let r = Report {
            url: "http://127.0.0.1:1/\"x\"".into(),
            connections: 1,
            threads: 1,
            pipeline: 1,
            rate: None,
            elapsed: Duration::from_secs(1),
            stats: Stats::default(),
        };
        let j = r.json();
        assert!(!j.contains('\n'));
        assert!(j.starts_with('{') && j.ends_with('}'));
        assert!(j.contains("\"correct\":0"));
        assert!(j.contains("\\\"x\\\""));
    }
}
