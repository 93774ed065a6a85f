//! The list query and cursor decoder never panic on any query string.
#![no_main]

use accubooks::web::ListQuery;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = ListQuery::parse(Some(s), &["status"]);
    }
});
