//! The URL under test: `http://IP[:PORT][/path]`. Only IP literals: the load generator never
//! resolves names, so a benchmark cannot silently measure the resolver or a remote host.

use std::net::{IpAddr, SocketAddr};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// The authority as written, for the Host header.
    pub host: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => return Err(format!("--url {url:?}: https is not supported")),
            _ => return Err(format!("--url {url:?}: expected http://IP[:PORT]/path")),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "--url {url:?}: the path has spaces or control characters"
            ));
        }
        let (ip, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (ip, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("--url {url:?}: unclosed [ in the host"))?;
            (ip, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((ip, port)) => (ip, Some(port)),
                None => (authority, None),
            }
        };
        let ip: IpAddr = ip.parse().map_err(|_| {
            format!("--url {url:?}: the host must be an IPv4 or [IPv6] address (no DNS)")
        })?;
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("--url {url:?}: bad port {p:?}")),
            },
        };
        Ok(Target {
            addr: SocketAddr::new(ip, port),
            host: authority.to_string(),
            path,
        })
    }

    /// The request every connection sends, as wrk sends it: no headers beyond Host, so the
    /// server's keep-alive default (HTTP/1.1) applies.
    pub fn request(&self) -> Vec<u8> {
        format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", self.path, self.host).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literals() {
        let t = Target::parse("http://127.0.0.1:8080/a/b?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.path, "/a/b?x=1");
        let t = Target::parse("http://[::1]:9/").unwrap();
        assert_eq!(t.addr, "[::1]:9".parse().unwrap());
        let t = Target::parse("http://10.0.0.1").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.path, "/");
        let t = Target::parse("http://10.0.0.1?q").unwrap();
        assert_eq!(t.path, "/?q");
    }

    #[test]
    fn rejects_others() {
        for bad in [
            "nothttp://x",
            "https://127.0.0.1/",
            "http://localhost/",
            "http://127.0.0.1:0/",
            "http://127.0.0.1:99999/",
            "http://[::1/",
            "127.0.0.1:80",
            "http://127.0.0.1/a b",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
