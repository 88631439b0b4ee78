//! Rebuilds the crate when a migration is added: the migrations are embedded at compile time, and
//! Cargo does not see a new file in a folder by itself.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
