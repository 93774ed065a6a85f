//! The `Idempotency-Key` parser: anything accepted is 1–255 visible ASCII characters.
#![no_main]

use idem::key::{IdempotencyKey, MAX_KEY_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = IdempotencyKey::parse(data) {
        let k = key.as_str();
        assert!(!k.is_empty() && k.len() <= MAX_KEY_LEN);
        assert!(k.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
});
