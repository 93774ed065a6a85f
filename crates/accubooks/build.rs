//! Marks test builds that have a PostgreSQL to test against (`DATABASE_URL_TEST`), so the
//! PostgreSQL half of the suite shows as `ignored` with a reason instead of silently
//! passing on a machine without one; likewise the real-Prometheus test without a
//! `prometheus` binary on PATH.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(pg_tests)");
    println!("cargo::rerun-if-env-changed=DATABASE_URL_TEST");
    println!("cargo::rustc-check-cfg=cfg(prometheus_tests)");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var("DATABASE_URL_TEST").is_ok_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=pg_tests");
    }
    // The real-Prometheus test needs Debian's `prometheus` binary.
    let prometheus = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("prometheus").is_file())
    });
    if prometheus {
        println!("cargo::rustc-cfg=prometheus_tests");
    }
}
