//! Access-log lines in Common Log Format plus the time taken, formatted by hand: at a million
//! requests a second, `fmt` machinery was a quarter of the loop's time.

use std::net::IpAddr;
use std::time::Duration;

use super::response::push_u64;

/// What the log says the request was: its parsed line, or the raw first line of a bad one.
#[derive(Clone, Copy, Debug)]
pub enum Line<'a> {
    Parsed {
        method: &'a str,
        target: &'a str,
        version: &'a str,
    },
    Raw(&'a [u8]),
}

/// Appends the peer's address, or `-` without one. IPv4 by hand: `Display` goes through the
/// formatting machinery octet by octet, and this runs per request (access lines,
/// X-Forwarded-For).
pub fn push_peer(out: &mut Vec<u8>, peer: Option<IpAddr>) {
    match peer {
        Some(IpAddr::V4(ip)) => {
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
        }
        Some(ip) => {
            use std::io::Write;
            let _ = write!(out, "{ip}");
        }
        None => out.push(b'-'),
    }
}

/// Appends `peer - - [date] "line" status bytes seconds` to `out`.
pub fn format(
    out: &mut Vec<u8>,
    peer: Option<IpAddr>,
    date: &str,
    line: Line<'_>,
    status: u16,
    bytes: u64,
    took: Duration,
) {
    push_peer(out, peer);
    out.extend_from_slice(b" - - [");
    out.extend_from_slice(date.as_bytes());
    out.extend_from_slice(b"] \"");
    match line {
        Line::Parsed {
            method,
            target,
            version,
        } => {
            out.extend_from_slice(method.as_bytes());
            out.push(b' ');
            escaped(out, target.as_bytes());
            out.push(b' ');
            out.extend_from_slice(version.as_bytes());
        }
        Line::Raw(raw) => escaped(out, raw),
    }
    out.extend_from_slice(b"\" ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    push_u64(out, bytes);
    out.push(b' ');
    let micros = took.as_micros().min(u128::from(u64::MAX)) as u64;
    push_u64(out, micros / 1_000_000);
    out.push(b'.');
    let frac = micros % 1_000_000;
    let mut digits = [b'0'; 6];
    let mut f = frac;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (f % 10) as u8;
        f /= 10;
    }
    out.extend_from_slice(&digits);
}

/// Copies `s`, writing `"`, `\` and bytes outside printable ASCII as `\xHH` so that a line can
/// always be split back into its fields.
fn escaped(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in s {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clf_line() {
        let mut out = Vec::new();
        let line = Line::Parsed {
            method: "GET",
            target: "/a\"b",
            version: "HTTP/1.1",
        };
        format(
            &mut out,
            Some([127, 0, 0, 1].into()),
            "D",
            line,
            200,
            13,
            Duration::from_micros(1_500_042),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"127.0.0.1 - - [D] "GET /a\x22b HTTP/1.1" 200 13 1.500042"#
        );
        let mut out = Vec::new();
        format(
            &mut out,
            None,
            "D",
            Line::Raw(b"\x01bad"),
            400,
            0,
            Duration::ZERO,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"- - - [D] "\x01bad" 400 0 0.000000"#
        );
    }
}
