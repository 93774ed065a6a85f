//! The strict JSON parser and the canonicaliser: the canonical form of anything accepted
//! parses again, is a fixed point and has the same fingerprint.
#![no_main]

use idem::fingerprint::{canonical, parse_strict, Fingerprint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = parse_strict(data) {
        let c = canonical(&v);
        let again = parse_strict(c.as_bytes()).expect("the canonical form parses");
        assert_eq!(canonical(&again), c);
        assert_eq!(
            Fingerprint::compute("POST", "/api/x", &v),
            Fingerprint::compute("POST", "/api/x", &again)
        );
    }
});
