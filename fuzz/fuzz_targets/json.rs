//! The strict JSON parser and the canonicaliser: anything accepted has a canonical form,
//! which is accepted again and is a fixed point.
#![no_main]

use idem::fingerprint::{canonical, parse_strict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if parse_strict(data).is_ok() {
        let c = canonical(data).expect("an accepted body has a canonical form");
        let again = canonical(c.as_bytes()).expect("the canonical form is accepted");
        assert_eq!(again, c);
    }
});
