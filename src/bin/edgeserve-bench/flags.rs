//! Command-line helpers shared by the subcommands: `--flag value` / `--flag=value` iteration and
//! the value parsers (times, counts, lists). Every error is one line naming the flag.

use std::time::Duration;

/// Walks the arguments as flags, each with an optional `=value` or a following value.
pub struct Flags {
    args: std::vec::IntoIter<String>,
    /// The value given inline as `--flag=value`, if the current flag had one.
    inline: Option<String>,
}

impl Flags {
    pub fn new(args: Vec<String>) -> Flags {
        Flags {
            args: args.into_iter(),
            inline: None,
        }
    }

    /// The next flag name, or `None` at the end. A bare word is an error: no subcommand takes
    /// positional arguments.
    pub fn next_flag(&mut self) -> Result<Option<String>, String> {
        if let Some(v) = self.inline.take() {
            return Err(format!("unexpected value {v:?}"));
        }
        let Some(arg) = self.args.next() else {
            return Ok(None);
        };
        if !arg.starts_with('-') {
            return Err(format!("unexpected argument {arg:?} (flags start with --)"));
        }
        match arg.split_once('=') {
            Some((name, value)) => {
                self.inline = Some(value.to_string());
                Ok(Some(name.to_string()))
            }
            None => Ok(Some(arg)),
        }
    }

    /// The value of `flag`: inline or the next argument.
    pub fn value(&mut self, flag: &str) -> Result<String, String> {
        self.inline
            .take()
            .or_else(|| self.args.next())
            .ok_or_else(|| format!("{flag} needs a value"))
    }

    /// For flags without a value: rejects `--flag=value`.
    pub fn no_value(&mut self, flag: &str) -> Result<(), String> {
        match self.inline.take() {
            Some(v) => Err(format!("{flag} takes no value (got {v:?})")),
            None => Ok(()),
        }
    }
}

/// `500ms`, `5s`, `1m`, `2h`, or a bare number of seconds (as the server's flags).
pub fn duration(flag: &str, s: &str) -> Result<Duration, String> {
    let bad = || format!("{flag}: expected a time such as 500ms, 5s or 1m, got {s:?}");
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 1e7 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A whole number in `min..=max`.
pub fn number(flag: &str, s: &str, min: u64, max: u64) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{flag}: expected a number from {min} to {max}, got {s:?}"
        )),
    }
}

/// A positive rate (requests per second), fractions allowed.
pub fn rate(flag: &str, s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1e9 => Ok(r),
        _ => Err(format!(
            "{flag}: expected requests per second above 0, got {s:?}"
        )),
    }
}

/// A comma-separated list, each item parsed by `item`; empty items are errors.
pub fn list<T>(
    flag: &str,
    s: &str,
    mut item: impl FnMut(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!("{flag}: empty item in {s:?}"));
        }
        out.push(item(part)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("-d", "5s").unwrap(), Duration::from_secs(5));
        assert_eq!(duration("-d", "300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(duration("-d", "2").unwrap(), Duration::from_secs(2));
        assert_eq!(duration("-d", "1m").unwrap(), Duration::from_secs(60));
        assert!(duration("-d", "0s").is_err());
        assert!(duration("-d", "5x").is_err());
        assert!(duration("-d", "").is_err());
    }

    #[test]
    fn flags_inline_and_separate() {
        let mut f = Flags::new(vec!["--a=1".into(), "--b".into(), "2".into(), "--c".into()]);
        assert_eq!(f.next_flag().unwrap().as_deref(), Some("--a"));
        assert_eq!(f.value("--a").unwrap(), "1");
        assert_eq!(f.next_flag().unwrap().as_deref(), Some("--b"));
        assert_eq!(f.value("--b").unwrap(), "2");
        assert_eq!(f.next_flag().unwrap().as_deref(), Some("--c"));
        assert!(f.value("--c").is_err());
        assert_eq!(f.next_flag().unwrap(), None);
    }

    #[test]
    fn lists() {
        let l = list("--c", "1,16, 128", |s| number("--c", s, 1, 100_000)).unwrap();
        assert_eq!(l, vec![1, 16, 128]);
        assert!(list("--c", "1,,2", |s| number("--c", s, 1, 9)).is_err());
    }
}
