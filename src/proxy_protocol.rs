//! The PROXY protocol header (HAProxy's, versions 1 and 2) that a load balancer sends before a
//! connection's first byte, telling who the client really is. Sans-I/O: bytes in, a verdict out;
//! it imports nothing of the server, so it runs in unit tests and a fuzz target unchanged.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.
//! - v1: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n` (or `TCP6`, or `UNKNOWN ...`), at most
//!   107 bytes.
//! - v2: a 12-byte signature, version/command, family/transport, a 16-bit length, then the
//!   addresses and optional TLVs (skipped). We accept up to [`MAX_V2`] bytes in all.
//!
//! A `LOCAL` command (the balancer's own health check), an `UNKNOWN` or `UNSPEC` family and a
//! UNIX socket leave the socket's address as the client's: [`Header::source`] is `None`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest v1 header, CRLF included (the spec's own bound).
pub const MAX_V1: usize = 107;
/// The longest v2 header we take: the 16 fixed bytes, the largest address block (UNIX, 216)
/// and room for a few TLVs. A balancer sending more is misconfigured or hostile.
pub const MAX_V2: usize = 512;

const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";

/// A complete header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Bytes the header took: what follows is the client's own stream.
    pub len: usize,
    /// The client's address, when the header names one.
    pub source: Option<SocketAddr>,
}

/// Why a header was refused (the connection is closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The bytes do not begin either version's header.
    NotProxy,
    /// Longer than [`MAX_V1`] / [`MAX_V2`].
    TooLong,
    /// A v1 line that does not follow the grammar.
    BadV1,
    /// A v2 header with an unknown version, command, family or transport, or a length too short
    /// for its addresses.
    BadV2,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::NotProxy => "no PROXY protocol header",
            Error::TooLong => "PROXY protocol header too long",
            Error::BadV1 => "malformed PROXY v1 header",
            Error::BadV2 => "malformed PROXY v2 header",
        })
    }
}

/// Reads a header from the start of `buf`: `Ok(None)` while more bytes are needed (every prefix
/// of a valid header, and nothing else, is `Ok(None)`).
pub fn parse(buf: &[u8]) -> Result<Option<Header>, Error> {
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] {
        return v1(buf);
    }
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] == V2_SIG[..n] {
        return v2(buf);
    }
    Err(Error::NotProxy)
}

fn v1(buf: &[u8]) -> Result<Option<Header>, Error> {
    let Some(lf) = memchr::memchr(b'\n', &buf[..buf.len().min(MAX_V1)]) else {
        return if buf.len() >= MAX_V1 {
            Err(Error::TooLong)
        } else {
            Ok(None)
        };
    };
    let line = buf[..lf].strip_suffix(b"\r").ok_or(Error::BadV1)?;
    let line = std::str::from_utf8(&line[V1_PREFIX.len()..]).map_err(|_| Error::BadV1)?;
    let len = lf + 1;
    let mut words = line.split(' ');
    let source = match words.next() {
        // Whatever follows UNKNOWN is to be ignored.
        Some("UNKNOWN") => return Ok(Some(Header { len, source: None })),
        Some("TCP4") => {
            let [src, _dst, sport, _dport] = four(&mut words)?;
            let ip: Ipv4Addr = src.parse().map_err(|_| Error::BadV1)?;
            let _: Ipv4Addr = _dst.parse().map_err(|_| Error::BadV1)?;
            SocketAddr::new(IpAddr::V4(ip), port(sport)?)
        }
        Some("TCP6") => {
            let [src, _dst, sport, _dport] = four(&mut words)?;
            let ip: Ipv6Addr = src.parse().map_err(|_| Error::BadV1)?;
            let _: Ipv6Addr = _dst.parse().map_err(|_| Error::BadV1)?;
            SocketAddr::new(IpAddr::V6(ip), port(sport)?)
        }
        _ => return Err(Error::BadV1),
    };
    Ok(Some(Header {
        len,
        source: Some(source),
    }))
}

/// Exactly four more space-separated words, the ports among them valid.
fn four<'a>(words: &mut impl Iterator<Item = &'a str>) -> Result<[&'a str; 4], Error> {
    let mut out = [""; 4];
    for w in &mut out {
        *w = words.next().ok_or(Error::BadV1)?;
    }
    if words.next().is_some() {
        return Err(Error::BadV1);
    }
    port(out[3])?;
    Ok(out)
}

/// A port in decimal, no sign, no leading zero (the spec's form).
fn port(s: &str) -> Result<u16, Error> {
    let ok = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten().ok_or(Error::BadV1)
}

fn v2(buf: &[u8]) -> Result<Option<Header>, Error> {
    if buf.len() < 16 {
        // The version nibble can be judged as soon as it is here.
        if buf.len() > 12 && buf[12] >> 4 != 2 {
            return Err(Error::BadV2);
        }
        return Ok(None);
    }
    let (ver, cmd) = (buf[12] >> 4, buf[12] & 0xf);
    let (family, transport) = (buf[13] >> 4, buf[13] & 0xf);
    if ver != 2 || cmd > 1 || family > 3 || transport > 2 {
        return Err(Error::BadV2);
    }
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > MAX_V2 {
        return Err(Error::TooLong);
    }
    if buf.len() < len {
        return Ok(None);
    }
    let a = &buf[16..len];
    let source = match family {
        // LOCAL: the balancer speaking for itself; the address block (whatever its family
        // says) is to be ignored.
        _ if cmd == 0 => None,
        1 if a.len() < 12 => return Err(Error::BadV2),
        2 if a.len() < 36 => return Err(Error::BadV2),
        3 if a.len() < 216 => return Err(Error::BadV2),
        1 => {
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        2 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[32], a[33]]);
            Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port))
        }
        // UNSPEC, UNIX: no address of the kind we log.
        _ => None,
    };
    Ok(Some(Header { len, source }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(cmd: u8, family: u8, addrs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(0x20 | cmd);
        h.push(family << 4 | 1);
        h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h
    }

    /// Every strict prefix of a valid header asks for more; the whole one parses.
    fn check_prefixes(h: &[u8]) -> Header {
        for i in 0..h.len() {
            assert_eq!(parse(&h[..i]), Ok(None), "prefix {i} of {h:?}");
        }
        let mut with_more = h.to_vec();
        with_more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let got = parse(&with_more).unwrap().unwrap();
        assert_eq!(got.len, h.len());
        got
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let h = check_prefixes(b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n");
        assert_eq!(h.source, Some("192.0.2.7:56324".parse().unwrap()));
        let h = check_prefixes(b"PROXY TCP6 2001:db8::1 ::1 65535 80\r\n");
        assert_eq!(h.source, Some("[2001:db8::1]:65535".parse().unwrap()));
        assert_eq!(check_prefixes(b"PROXY UNKNOWN\r\n").source, None);
        let h = check_prefixes(b"PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 65535 65535\r\n");
        assert_eq!(h.source, None);
    }

    #[test]
    fn v1_refusals() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..], // bare LF
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 x\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Err(Error::BadV1),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // No line end within the limit.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(MAX_V1 - 1, b'x');
        assert_eq!(parse(&long), Ok(None));
        long.push(b'x');
        assert_eq!(parse(&long), Err(Error::TooLong));
    }

    #[test]
    fn not_a_header_is_refused_at_the_first_wrong_byte() {
        assert_eq!(parse(b"G"), Err(Error::NotProxy));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(Error::NotProxy));
        assert_eq!(parse(b"PROXX"), Err(Error::NotProxy));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQUIX"), Err(Error::NotProxy));
        assert_eq!(parse(b""), Ok(None));
    }

    #[test]
    fn v2_inet_inet6_local_unspec_unix() {
        let mut a = vec![203, 0, 113, 9, 10, 0, 0, 1];
        a.extend_from_slice(&40000u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        let h = check_prefixes(&v2_header(1, 1, &a));
        assert_eq!(h.source, Some("203.0.113.9:40000".parse().unwrap()));
        // TLVs after the addresses are skipped.
        let mut with_tlv = a.clone();
        with_tlv.extend_from_slice(&[0x04, 0, 3, 1, 2, 3]);
        let h = check_prefixes(&v2_header(1, 1, &with_tlv));
        assert_eq!(h.source, Some("203.0.113.9:40000".parse().unwrap()));
        // LOCAL: the balancer's own connection, addresses ignored.
        assert_eq!(check_prefixes(&v2_header(0, 1, &a)).source, None);
        assert_eq!(check_prefixes(&v2_header(0, 0, &[])).source, None);
        let mut a6 = vec![0u8; 36];
        a6[0] = 0x20;
        a6[1] = 0x01;
        a6[15] = 5;
        a6[32..34].copy_from_slice(&8080u16.to_be_bytes());
        let h = check_prefixes(&v2_header(1, 2, &a6));
        assert_eq!(h.source, Some("[2001::5]:8080".parse().unwrap()));
        assert_eq!(check_prefixes(&v2_header(1, 0, &[])).source, None);
        assert_eq!(check_prefixes(&v2_header(1, 3, &[0; 216])).source, None);
    }

    #[test]
    fn v2_refusals() {
        let a = [0u8; 12];
        let mut h = v2_header(1, 1, &a);
        h[12] = 0x11; // version 1 in binary form
        assert_eq!(parse(&h[..13]), Err(Error::BadV2));
        for (byte, value) in [(12, 0x22), (13, 0x41), (13, 0x13)] {
            let mut h = v2_header(1, 1, &a);
            h[byte] = value;
            assert_eq!(parse(&h), Err(Error::BadV2), "byte {byte} = {value:#x}");
        }
        // Too short for its family.
        assert_eq!(parse(&v2_header(1, 1, &a[..11])), Err(Error::BadV2));
        assert_eq!(parse(&v2_header(1, 2, &[0; 35])), Err(Error::BadV2));
        // Longer than our limit: refused before the bytes arrive.
        let mut h = v2_header(1, 1, &a);
        h[14..16].copy_from_slice(&((MAX_V2 - 15) as u16).to_be_bytes());
        assert_eq!(parse(&h[..16]), Err(Error::TooLong));
        h[14..16].copy_from_slice(&((MAX_V2 - 16) as u16).to_be_bytes());
        assert_eq!(parse(&h[..16]), Ok(None));
    }
}
