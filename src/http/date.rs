//! The two clocks a response needs, formatted once per second rather than once per request:
//! the `Date` header (RFC 9110 §5.6.7) and the access log's Common Log Format time.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct DateCache {
    second: u64,
    http: String,
    clf: String,
}

impl Default for DateCache {
    fn default() -> Self {
        let mut d = DateCache {
            second: u64::MAX,
            http: String::new(),
            clf: String::new(),
        };
        d.update(SystemTime::now());
        d
    }
}

impl DateCache {
    /// Refreshes both strings if the second has changed.
    pub fn update(&mut self, now: SystemTime) {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs == self.second {
            return;
        }
        self.second = secs;
        // Rewritten in place: the strings keep their capacity, so this allocates nothing.
        self.http.clear();
        let _ = write!(self.http, "{}", httpdate::HttpDate::from(now));
        self.clf.clear();
        write_clf(&mut self.clf, secs);
    }

    pub fn http(&self) -> &[u8] {
        self.http.as_bytes()
    }

    pub fn clf(&self) -> &str {
        &self.clf
    }
}

/// Appends `26/Nov/2026:23:36:16 +0000` for a Unix time.
pub fn write_clf(out: &mut String, secs: u64) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d) = civil_from_days((secs / 86400) as i64);
    let t = secs % 86400;
    let month = MONTHS[m as usize - 1];
    let (h, min, s) = (t / 3600, t / 60 % 60, t % 60);
    let _ = write!(out, "{d:02}/{month}/{y}:{h:02}:{min:02}:{s:02} +0000");
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    fn clf(secs: u64) -> String {
        let mut s = String::new();
        super::write_clf(&mut s, secs);
        s
    }

    #[test]
    fn clf_dates() {
        assert_eq!(clf(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(clf(1_795_737_376), "26/Nov/2026:23:56:16 +0000");
        assert_eq!(clf(951_782_400), "29/Feb/2000:00:00:00 +0000");
    }
}
