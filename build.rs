// refinery embeds migrations/ at compile time, but cargo does not know the
// SQL files are inputs: without this, an edited migration is not embedded
// until some Rust file changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
