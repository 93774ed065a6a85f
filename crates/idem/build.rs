//! Rebuild when a migration is added or changed: `sqlx::migrate!` embeds them at compile
//! time, and a proc macro cannot tell cargo which files it read.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
