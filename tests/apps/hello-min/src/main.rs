//! The smallest std app: one line, exit 0. Used by the launch benchmark.
fn main() {
    println!("hello from hello-min");
}
