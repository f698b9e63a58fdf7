//! `auth::basic::parse` (the Authorization field) and `auth::htpasswd::Users::parse` on any
//! bytes: no panic; credentials that parse are re-encoded and parse back the same, their user
//! holds no colon, and the field began with the scheme `Basic`; the base64 codec round-trips any
//! bytes. (The hashes are not computed here: a fuzzed bcrypt cost would only measure patience.)
#![no_main]

use edgeserve::auth::basic::{STANDARD, decode, encode_be, parse};
use edgeserve::auth::htpasswd::Users;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = parse(data) {
        assert!(data.len() > 5 && data[..5].eq_ignore_ascii_case(b"basic"));
        assert!(!c.user().contains(&b':'));
        let mut joined = c.user().to_vec();
        joined.push(b':');
        joined.extend_from_slice(c.password());
        let mut field = b"Basic ".to_vec();
        encode_be(&joined, STANDARD, &mut field);
        let again = parse(&field).expect("re-encoded credentials parse");
        assert_eq!((again.user(), again.password()), (c.user(), c.password()));
    }
    let mut enc = Vec::new();
    encode_be(data, STANDARD, &mut enc);
    assert_eq!(decode(&enc, STANDARD).as_deref(), Some(data));
    let _ = Users::parse(data);
});
