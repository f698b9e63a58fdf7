//! Content negotiation on `Accept-Encoding` (RFC 9110 §12.5.3): which of the codings a file is
//! stored in the client takes. Pure, no allocation: it runs on every request for a path that has
//! precompressed siblings.

/// The codings a precompressed sibling may be stored in, in the server's order of preference
/// (smallest first: on equal q-values br wins over zstd, zstd over gzip).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Br,
    Zstd,
    Gzip,
}

impl Coding {
    pub const ALL: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    /// The token in `Content-Encoding` (and the sibling's file name suffix without its dot).
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// The suffix of the sibling file that holds this coding.
    pub fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Zstd => ".zst",
            Coding::Gzip => ".gz",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of codings (which siblings exist).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Codings(u8);

impl Codings {
    pub fn with(self, c: Coding) -> Codings {
        Codings(self.0 | c.bit())
    }

    pub fn has(self, c: Coding) -> bool {
        self.0 & c.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Identity,
    Coded(Coding),
    /// The client refused every coding there is, identity included (`identity;q=0` or `*;q=0`
    /// with nothing else it takes): 406.
    None,
}

/// Chooses among `available` codings and identity for an `Accept-Encoding` value (`None`: the
/// field is absent, so identity is sent, as every server does for clients that ask for nothing).
///
/// The highest q-value wins; on a tie the server's order (br, zstd, gzip, then identity).
/// A coding not named takes the q-value of `*` if there is one, else 0; identity not named is
/// acceptable, after every coding the client takes, unless `*` says otherwise. `x-gzip` is gzip (RFC 9110 §8.4.1.3). Names are
/// case-insensitive. An element that does not parse (a bad q-value, stray bytes) is ignored, as
/// if it were not there: a client gets at worst what it would get without it.
pub fn choose(accept: Option<&[u8]>, available: Codings) -> Choice {
    let Some(value) = accept else {
        return Choice::Identity;
    };
    // q-values in thousandths; None: not named.
    let mut named: [Option<u16>; 3] = [None; 3];
    let mut identity: Option<u16> = None;
    let mut star: Option<u16> = None;
    for element in value.split(|&b| b == b',') {
        let Some((name, q)) = element_of(element) else {
            continue;
        };
        // By length first: most names are compared with nothing.
        let slot = match name.len() {
            1 if name == b"*" => &mut star,
            2 if name.eq_ignore_ascii_case(b"br") => &mut named[0],
            4 if name.eq_ignore_ascii_case(b"zstd") => &mut named[1],
            4 if name.eq_ignore_ascii_case(b"gzip") => &mut named[2],
            6 if name.eq_ignore_ascii_case(b"x-gzip") => &mut named[2],
            8 if name.eq_ignore_ascii_case(b"identity") => &mut identity,
            _ => continue,
        };
        // Named twice: the higher q-value counts (a client that lists a coding twice cannot be
        // said to refuse it).
        *slot = Some(slot.map_or(q, |old| old.max(q)));
    }
    // Identity named by no element is acceptable, but least of all: any coding the client
    // takes is preferred to it (the lowest q-value there is; a tie goes to the coding).
    let mut best = Choice::Identity;
    let mut best_q = identity.or(star).unwrap_or(1);
    // Iterating from the least preferred, `>=` lets a more preferred coding win a tie, and any
    // coding win a tie with identity.
    for (i, coding) in Coding::ALL.into_iter().enumerate().rev() {
        if !available.has(coding) {
            continue;
        }
        let q = named[i].or(star).unwrap_or(0);
        if q > 0 && q >= best_q {
            best = Choice::Coded(coding);
            best_q = q;
        }
    }
    if best_q == 0 {
        return Choice::None;
    }
    best
}

/// One list element: `coding [OWS ";" OWS "q=" qvalue]`, with its q-value in thousandths.
/// Empty elements (`a,,b`) and malformed ones give `None`. One pass over the name (this runs
/// per request); parameters, which are rare, are split the simple way.
fn element_of(element: &[u8]) -> Option<(&[u8], u16)> {
    let ows = |b: u8| b == b' ' || b == b'\t';
    let n = element.len();
    let mut j = 0;
    while j < n && ows(element[j]) {
        j += 1;
    }
    let start = j;
    while j < n && TCHAR[usize::from(element[j])] {
        j += 1;
    }
    let name = &element[start..j];
    while j < n && ows(element[j]) {
        j += 1;
    }
    if name.is_empty() {
        return None;
    }
    if j == n {
        return Some((name, 1000));
    }
    if element[j] != b';' {
        return None;
    }
    let mut q = 1000;
    for param in element[j + 1..].split(|&b| b == b';') {
        let param = trim(param);
        let (key, val) = match param.iter().position(|&b| b == b'=') {
            Some(i) => (trim(&param[..i]), trim(&param[i + 1..])),
            None => return None,
        };
        if key.eq_ignore_ascii_case(b"q") {
            q = qvalue(val)?;
        }
        // Other parameters are not defined for codings; they do not change the weight.
    }
    Some((name, q))
}

/// `tchar` (RFC 9110 §5.6.2) as a table.
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = super::request::is_tchar(b as u8);
        b += 1;
    }
    t
};

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for (i, &d) in frac.iter().enumerate() {
        thousandths += u16::from(d - b'0') * [100, 10, 1][i];
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn trim(s: &[u8]) -> &[u8] {
    super::request::trim(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Codings = Codings(0b111);

    fn only(cs: &[Coding]) -> Codings {
        cs.iter().fold(Codings::default(), |s, &c| s.with(c))
    }

    #[test]
    fn table() {
        use Choice::{Coded, Identity, None as Refused};
        use Coding::{Br, Gzip, Zstd};
        let cases: &[(Option<&str>, Codings, Choice)] = &[
            (None, ALL, Identity),
            (Some(""), ALL, Identity),
            (Some("gzip"), ALL, Coded(Gzip)),
            (Some("x-gzip"), ALL, Coded(Gzip)),
            (Some("GZIP"), ALL, Coded(Gzip)),
            (Some("gzip, deflate, br, zstd"), ALL, Coded(Br)),
            (
                Some("gzip, deflate, br, zstd"),
                only(&[Zstd, Gzip]),
                Coded(Zstd),
            ),
            (Some("gzip, deflate, br"), only(&[Zstd]), Identity),
            (Some("br;q=0.5, gzip"), ALL, Coded(Gzip)),
            (Some("br;q=0.5, gzip;q=0.5"), ALL, Coded(Br)),
            (Some("br;q=0, gzip"), only(&[Br]), Identity),
            (Some("br;q=0"), ALL, Identity),
            (Some("*"), ALL, Coded(Br)),
            (Some("*;q=0.1"), only(&[Gzip]), Coded(Gzip)),
            (Some("br;q=0.5"), only(&[Br]), Coded(Br)),
            (Some("br;q=0.5"), only(&[Gzip]), Identity),
            (Some("*;q=0.1, identity;q=0"), only(&[Gzip]), Coded(Gzip)),
            (Some("gzip;q=0.2, identity;q=0.1"), ALL, Coded(Gzip)),
            (Some("gzip;q=0.1, identity;q=0.2"), ALL, Identity),
            (Some("identity;q=0"), ALL, Refused),
            (Some("identity;q=0, gzip"), only(&[Gzip]), Coded(Gzip)),
            (Some("identity;q=0, gzip"), only(&[Br]), Refused),
            (Some("*;q=0"), ALL, Refused),
            (Some("*;q=0, identity"), ALL, Identity),
            (Some("*;q=0, br"), ALL, Coded(Br)),
            (Some("br;q=1.0, gzip;q=1"), ALL, Coded(Br)),
            (Some("br ; q = 0.9 , gzip;q=0.95"), ALL, Coded(Gzip)),
            (Some("br;Q=0.001"), only(&[Br]), Coded(Br)),
            // Malformed elements are ignored (here: the bad br goes, gzip stays).
            (Some("br;q=2, gzip"), ALL, Coded(Gzip)),
            (Some("br;q=1.5"), ALL, Identity),
            (Some("br;q=0.1234"), ALL, Identity),
            (Some("br;q=, gzip;q=0.5"), ALL, Coded(Gzip)),
            (Some("br;q"), ALL, Identity),
            (Some("b r"), ALL, Identity),
            (Some(",,, ,br,"), ALL, Coded(Br)),
            (Some("zstd;q=0.8, br;q=0.8, gzip;q=0.8"), ALL, Coded(Br)),
            (Some("zstd, gzip"), only(&[Br, Gzip]), Coded(Gzip)),
            // Named twice: the higher weight.
            (Some("br;q=0, br"), only(&[Br]), Coded(Br)),
            // Other parameters do not change the weight.
            (Some("br;level=5"), only(&[Br]), Coded(Br)),
            (Some("compress, deflate"), ALL, Identity),
        ];
        for (accept, available, want) in cases {
            assert_eq!(
                choose(accept.map(str::as_bytes), *available),
                *want,
                "{accept:?} with {available:?}"
            );
        }
    }

    #[test]
    fn qvalues() {
        for (v, want) in [
            ("0", Some(0)),
            ("0.", Some(0)),
            ("0.5", Some(500)),
            ("0.05", Some(50)),
            ("0.001", Some(1)),
            ("1", Some(1000)),
            ("1.000", Some(1000)),
            ("1.001", None),
            ("01", None),
            ("-0", None),
            ("", None),
            ("0.1.2", None),
        ] {
            assert_eq!(qvalue(v.as_bytes()), want, "{v}");
        }
    }
}
