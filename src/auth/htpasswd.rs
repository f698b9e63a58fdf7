//! Apache htpasswd files: `user:hash` lines, read once at startup. bcrypt (`$2y$`, `$2b$`,
//! `$2a$`, `htpasswd -B`) and SHA-256/512-crypt (`$5$`, `$6$`, `htpasswd -2` / `-5`) are
//! checked; every other format (MD5 `$apr1$`, `{SHA}`, DES crypt, plain text) is refused at
//! startup with the file and line named, since each can be cracked or read as is.

use std::collections::HashMap;
use std::path::Path;

#[cfg(feature = "auth-sha")]
use super::basic::encode_le;
use super::basic::{decode, encode_be, same};

/// bcrypt's base64 alphabet.
const BCRYPT_B64: &[u8; 64] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// crypt(3)'s base64 alphabet (SHA-crypt).
const CRYPT_B64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The highest bcrypt cost taken (`htpasswd -C` allows 4 to 17). Each step doubles the work: a
/// cost of 31 would hold the verifier for days per check.
const MAX_BCRYPT_COST: u32 = 17;
/// The most SHA-crypt rounds taken (`htpasswd -r`; 5000 by default), for the same reason.
const MAX_SHA_ROUNDS: u32 = 1_000_000;

/// A stored password hash, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hash {
    Bcrypt {
        cost: u32,
        salt: [u8; 16],
        /// The 31 base64 characters of the hash part, as stored.
        hash: Box<[u8]>,
    },
    /// SHA-256-crypt (`$5$`) or SHA-512-crypt (`$6$`), with the feature `auth-sha`.
    #[cfg_attr(not(feature = "auth-sha"), allow(dead_code))]
    ShaCrypt {
        sha512: bool,
        rounds: u32,
        /// The salt as stored (crypt hashes the salt's characters, not decoded bytes).
        salt: Box<[u8]>,
        hash: Box<[u8]>,
    },
}

impl Hash {
    /// True when `password` hashes to this. The comparison is constant-time; the stored hash
    /// itself is just another wrong password (it is hashed like any other).
    pub fn verify(&self, password: &[u8]) -> bool {
        let mut computed = Vec::with_capacity(86);
        match self {
            Hash::Bcrypt { cost, salt, hash } => {
                // bcrypt hashes the password with its NUL, at most 72 bytes (as OpenBSD's and
                // Apache's do: longer passwords are cut, not refused).
                let mut key = Vec::with_capacity(password.len() + 1);
                key.extend_from_slice(password);
                key.push(0);
                key.truncate(72);
                let out = bcrypt::bcrypt(*cost, *salt, &key);
                key.fill(0);
                encode_be(&out[..23], BCRYPT_B64, &mut computed);
                same(&computed, hash)
            }
            #[cfg(not(feature = "auth-sha"))]
            Hash::ShaCrypt { .. } => false, // refused at startup
            #[cfg(feature = "auth-sha")]
            Hash::ShaCrypt {
                sha512,
                rounds,
                salt,
                hash,
            } => {
                let Ok(params) = sha_crypt::Params::new(*rounds) else {
                    return false; // checked at startup
                };
                if *sha512 {
                    let raw = sha_crypt::sha512_crypt(password, salt, params);
                    encode_le(&transpose(&raw, &SHA512_ORDER), CRYPT_B64, &mut computed);
                } else {
                    let raw = sha_crypt::sha256_crypt(password, salt, params);
                    encode_le(&transpose(&raw, &SHA256_ORDER), CRYPT_B64, &mut computed);
                }
                same(&computed, hash)
            }
        }
    }

    /// A hash no password matches, costing about what `like` costs: an unknown user's check
    /// takes the time a known one's does, so timing does not tell which users exist.
    pub fn decoy(like: Option<&Hash>) -> Hash {
        match like {
            Some(Hash::ShaCrypt { sha512, rounds, .. }) => Hash::ShaCrypt {
                sha512: *sha512,
                rounds: *rounds,
                salt: b"decoy".as_slice().into(),
                hash: Box::default(),
            },
            Some(Hash::Bcrypt { cost, .. }) => Hash::Bcrypt {
                cost: *cost,
                salt: [0x5a; 16],
                hash: Box::default(),
            },
            None => Hash::Bcrypt {
                cost: 5,
                salt: [0x5a; 16],
                hash: Box::default(),
            },
        }
    }
}

#[cfg(feature = "auth-sha")]
/// crypt(3) writes the SHA-crypt digest in this byte order (the groups of its `b64_from_24bit`
/// calls, each least significant byte first).
const SHA256_ORDER: [usize; 32] = [
    20, 10, 0, 11, 1, 21, 2, 22, 12, 23, 13, 3, 14, 4, 24, 5, 25, 15, 26, 16, 6, 17, 7, 27, 8, 28,
    18, 29, 19, 9, 30, 31,
];
#[cfg(feature = "auth-sha")]
const SHA512_ORDER: [usize; 64] = [
    42, 21, 0, 1, 43, 22, 23, 2, 44, 45, 24, 3, 4, 46, 25, 26, 5, 47, 48, 27, 6, 7, 49, 28, 29, 8,
    50, 51, 30, 9, 10, 52, 31, 32, 11, 53, 54, 33, 12, 13, 55, 34, 35, 14, 56, 57, 36, 15, 16, 58,
    37, 38, 17, 59, 60, 39, 18, 19, 61, 40, 41, 20, 62, 63,
];

#[cfg(feature = "auth-sha")]
fn transpose(raw: &[u8], order: &[usize]) -> Vec<u8> {
    order.iter().map(|&i| raw[i]).collect()
}

/// The users of one htpasswd file.
#[derive(Debug, Default)]
pub struct Users {
    users: HashMap<Box<[u8]>, Hash>,
    /// What an unknown user's password is checked against.
    decoy: Option<Hash>,
}

impl Users {
    /// Reads `path`. Errors are one line naming the file (and line).
    pub fn load(path: &Path) -> Result<Users, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Users::parse(&text).map_err(|(line, why)| match line {
            0 => format!("{}: {why}", path.display()),
            n => format!("{}:{n}: {why}", path.display()),
        })
    }

    /// Parses a file's text; an error is `(line, why)`, line 0 for the file as a whole.
    pub fn parse(text: &[u8]) -> Result<Users, (usize, String)> {
        let mut users = HashMap::new();
        let mut most_costly: Option<Hash> = None;
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            let n = i + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(|b| b.is_ascii_whitespace()) || line.starts_with(b"#") {
                continue;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return Err((n, "expected user:hash".into()));
            };
            let (user, hash) = (&line[..colon], &line[colon + 1..]);
            if user.is_empty() {
                return Err((n, "empty user name".into()));
            }
            let hash = parse_hash(hash).map_err(|why| (n, why))?;
            if cost(&hash) > most_costly.as_ref().map_or(0, cost) {
                most_costly = Some(hash.clone());
            }
            if users.insert(user.into(), hash).is_some() {
                return Err((
                    n,
                    format!("user {:?} appears twice", String::from_utf8_lossy(user)),
                ));
            }
        }
        if users.is_empty() {
            return Err((0, "no users".into()));
        }
        Ok(Users {
            users,
            decoy: Some(Hash::decoy(most_costly.as_ref())),
        })
    }

    /// True when `user` exists and `password` is theirs. An unknown user costs a decoy check.
    pub fn verify(&self, user: &[u8], password: &[u8]) -> bool {
        match self.users.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                if let Some(d) = &self.decoy {
                    d.verify(password);
                }
                false
            }
        }
    }
}

/// A rough measure of a hash's work, to pick the decoy.
fn cost(h: &Hash) -> u64 {
    match h {
        // 2^cost Blowfish key setups of about 4 KiB of state each ~ 2^cost * 1000 SHA rounds.
        Hash::Bcrypt { cost, .. } => (1u64 << cost) * 1000,
        Hash::ShaCrypt { rounds, .. } => u64::from(*rounds),
    }
}

fn parse_hash(h: &[u8]) -> Result<Hash, String> {
    if let Some(rest) = h
        .strip_prefix(b"$2y$")
        .or_else(|| h.strip_prefix(b"$2b$"))
        .or_else(|| h.strip_prefix(b"$2a$"))
    {
        return parse_bcrypt(rest);
    }
    for (id, sha512) in [(b"$5$", false), (b"$6$", true)] {
        if let Some(rest) = h.strip_prefix(id) {
            if cfg!(not(feature = "auth-sha")) {
                return Err(
                    "SHA-crypt ($5$, $6$): this build has bcrypt only (cargo feature \"auth-sha\")"
                        .into(),
                );
            }
            return parse_sha_crypt(rest, sha512);
        }
    }
    let what = if h.starts_with(b"$apr1$") || h.starts_with(b"$1$") {
        "MD5 ($apr1$)"
    } else if h.starts_with(b"{SHA}") {
        "SHA-1 ({SHA})"
    } else if h.starts_with(b"$") {
        "this hash"
    } else {
        "crypt or plain-text"
    };
    Err(format!(
        "{what} passwords are not supported: make them with htpasswd -B (bcrypt), -5 or -2"
    ))
}

/// `CC$` + 22 characters of salt + 31 of hash.
fn parse_bcrypt(rest: &[u8]) -> Result<Hash, String> {
    let bad = || "malformed bcrypt hash".to_string();
    if rest.len() != 56 || rest[2] != b'$' || !rest[..2].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let cost = u32::from(rest[0] - b'0') * 10 + u32::from(rest[1] - b'0');
    if !(4..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(format!("bcrypt cost {cost} outside 4 to {MAX_BCRYPT_COST}"));
    }
    let salt = decode(&rest[3..25], BCRYPT_B64).ok_or_else(bad)?;
    let hash = &rest[25..];
    if decode(hash, BCRYPT_B64).is_none() {
        return Err(bad());
    }
    Ok(Hash::Bcrypt {
        cost,
        salt: salt[..16].try_into().map_err(|_| bad())?,
        hash: hash.into(),
    })
}

/// `[rounds=N$]salt$hash`: a salt of at most 16 characters, a hash of 43 (SHA-256) or 86.
fn parse_sha_crypt(rest: &[u8], sha512: bool) -> Result<Hash, String> {
    let bad = || "malformed SHA-crypt hash".to_string();
    let (rounds, rest) = match rest.strip_prefix(b"rounds=") {
        Some(r) => {
            let end = r.iter().position(|&b| b == b'$').ok_or_else(bad)?;
            let digits = std::str::from_utf8(&r[..end]).map_err(|_| bad())?;
            let n: u32 = digits.parse().map_err(|_| bad())?;
            if !(1000..=MAX_SHA_ROUNDS).contains(&n) {
                return Err(format!(
                    "SHA-crypt rounds {n} outside 1000 to {MAX_SHA_ROUNDS}"
                ));
            }
            (n, &r[end + 1..])
        }
        None => (5000, rest),
    };
    let dollar = rest.iter().position(|&b| b == b'$').ok_or_else(bad)?;
    let (salt, hash) = (&rest[..dollar], &rest[dollar + 1..]);
    let want = if sha512 { 86 } else { 43 };
    let in_alphabet = |s: &[u8]| s.iter().all(|b| CRYPT_B64.contains(b));
    if salt.len() > 16 || hash.len() != want || !in_alphabet(hash) || salt.contains(&b':') {
        return Err(bad());
    }
    Ok(Hash::ShaCrypt {
        sha512,
        rounds,
        salt: salt.into(),
        hash: hash.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `htpasswd -nbB -C 4 alice secret`, `htpasswd -nb2 bob hunter2` and
    // `htpasswd -nb5 -r 1000 carol 'pa:ss'`.
    #[cfg(feature = "auth-sha")]
    const FILE: &str = "\
# a comment
alice:$2y$04$B3CwSdQdvBN7JqNjXhvW1uxv4Q3woi85K2C9umU/0B.kabi6iYIVy
bob:$5$pzyLFZIHVQxUOn4d$Gi3Om7BymipbH9JDzqmTOCTpc9rHj9fir7dnMxKAgsD

carol:$6$rounds=1000$IbYwDxjONgTeUlsB$HJJNjDqH09Jm80p1XnVTrsaH5yrVjrZIsw.e69Dso5fV4h.1OANVPIxrNAQcsM/9NNzl177OnX97NO9ah3do..
";

    #[test]
    #[cfg(feature = "auth-sha")]
    fn checks_each_format() {
        let u = Users::parse(FILE.as_bytes()).unwrap();
        assert!(u.verify(b"alice", b"secret"));
        assert!(!u.verify(b"alice", b"secreT"));
        assert!(!u.verify(b"alice", b""));
        assert!(u.verify(b"bob", b"hunter2"));
        assert!(!u.verify(b"bob", b"hunter3"));
        assert!(u.verify(b"carol", b"pa:ss"));
        assert!(!u.verify(b"carol", b"pa"));
        assert!(!u.verify(b"dave", b"secret"));
        // The stored hash is no password.
        for line in FILE
            .lines()
            .filter(|l| l.contains(':') && !l.starts_with('#'))
        {
            let (user, hash) = line.split_once(':').unwrap();
            assert!(!u.verify(user.as_bytes(), hash.as_bytes()), "{user}");
        }
    }

    #[test]
    fn refuses_weak_or_broken_lines() {
        for (text, line, what) in [
            ("a:$apr1$x$y\n", 1, "MD5"),
            ("\n\nb:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", 3, "SHA-1"),
            ("c:abcdefghijklm\n", 1, "crypt or plain"),
            ("d:plain\n", 1, "crypt or plain"),
            ("e\n", 1, "user:hash"),
            (
                ":$2y$04$MOAaBmP4AYXe2Y8n2OAt5OGAU6.57aKt/AxdF1hM4HQqyLD3Lt4oG\n",
                1,
                "empty user",
            ),
            ("f:$2y$04$short\n", 1, "malformed bcrypt"),
            (
                "g:$2y$31$MOAaBmP4AYXe2Y8n2OAt5OGAU6.57aKt/AxdF1hM4HQqyLD3Lt4oG\n",
                1,
                "cost 31",
            ),
            (
                "h:$5$rounds=10$s$9NmCv3UHdeNObKOHqHSsWlTQlcQ9rUHjJUmGlF5l/e6\n",
                1,
                "rounds 10",
            ),
            ("i:$6$salt$short\n", 1, "malformed SHA-crypt"),
            (
                "j:$2x$04$MOAaBmP4AYXe2Y8n2OAt5OGAU6.57aKt/AxdF1hM4HQqyLD3Lt4oG\n",
                1,
                "not supported",
            ),
            (
                "k:$2y$04$MOAaBmP4AYXe2Y8n2OAt5OGAU6.57aKt/AxdF1hM4HQqyLD3Lt4oG\nk:$2y$04$MOAaBmP4AYXe2Y8n2OAt5OGAU6.57aKt/AxdF1hM4HQqyLD3Lt4oG\n",
                2,
                "twice",
            ),
            ("# only a comment\n", 0, "no users"),
        ] {
            let sha = text.contains("$5$") || text.contains("$6$");
            let what = if sha && cfg!(not(feature = "auth-sha")) {
                "auth-sha"
            } else {
                what
            };
            let (n, why) = Users::parse(text.as_bytes()).unwrap_err();
            assert_eq!(n, line, "{text:?}: {why}");
            assert!(why.contains(what), "{text:?}: {why}");
        }
    }

    #[test]
    fn long_passwords_are_cut_at_72_bytes_as_bcrypt_does() {
        // `htpasswd -nbB -C 4 x $(printf 'a%.0s' $(seq 72))`
        let u = Users::parse(b"x:$2y$04$5qMzsaXRZGQdhBBEkQMi3ed4NdxPlpMkL/jIZKX9EQio984S5WJMa")
            .unwrap();
        assert!(u.verify(b"x", &[b'a'; 72]));
        assert!(u.verify(b"x", &[b'a'; 80]));
        assert!(!u.verify(b"x", &[b'a'; 71]));
    }
}
