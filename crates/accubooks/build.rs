//! Marks test builds that have a PostgreSQL to test against (`DATABASE_URL_TEST`), so the
//! PostgreSQL half of the suite shows as `ignored` with a reason instead of silently
//! passing on a machine without one.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(pg_tests)");
    println!("cargo::rerun-if-env-changed=DATABASE_URL_TEST");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("DATABASE_URL_TEST").is_ok_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=pg_tests");
    }
}
