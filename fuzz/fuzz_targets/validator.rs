//! The field validator over any JSON body: no panic; accepted text has no NUL and fits
//! its limit; accepted dates round-trip.
#![no_main]

use accubooks::validate::{Sign, Validator, NAME_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = idem::fingerprint::parse_strict(data) else {
        return;
    };
    let mut v = Validator::new();
    let allowed = [
        "name", "amount", "on", "n", "id", "currency", "flag", "email",
    ];
    if let Some(o) = v.object(&body, "", &allowed) {
        if let Some(name) = v.text(o, "", "name", NAME_MAX, true) {
            assert!(!name.contains('\0') && name.chars().count() <= NAME_MAX);
        }
        let _ = v.email(o, "", "email", false);
        if let Some(m) = v.money(o, "", "amount", Sign::NonZero, false) {
            assert!(m.0 != 0);
        }
        if let Some(d) = v.date(o, "", "on", false) {
            assert_eq!(
                o.get("on").and_then(|x| x.as_str()),
                Some(d.format("%Y-%m-%d").to_string().as_str())
            );
        }
        let _ = v.integer(o, "", "n", 0, 365, false);
        let _ = v.uuid(o, "", "id", false);
        let _ = v.currency(o, "", "currency", false);
        let _ = v.boolean(o, "", "flag", false);
    }
    let _ = v.finish();
});
