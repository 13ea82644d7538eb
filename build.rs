// `sqlx::migrate!` embeds `migrations/` at compile time; without this, adding a migration file
// would not rebuild the crate, and a binary built before it would migrate to an older schema.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
