//! Test fixture: a component for the `wasi:cli/command` world, not for
//! `corral:tool`. The registry must refuse it and say what is missing.
fn main() {
    println!("I am not a Corral tool");
}
