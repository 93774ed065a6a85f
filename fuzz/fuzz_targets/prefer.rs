//! The `Prefer: wait=N` parser never panics on any header value.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = HeaderValue::from_bytes(data) {
        let mut h = HeaderMap::new();
        h.insert("prefer", v);
        let _ = idem::http::prefer_wait(&h);
    }
});
