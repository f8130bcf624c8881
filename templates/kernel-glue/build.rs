// Link with the platform's script (link-<platform>.ld): where the kernel
// sits, its entry, and the notes its loaders need.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = "link-@PLATFORM@.ld";
    println!("cargo:rustc-link-arg=-T{dir}/{script}");
    println!("cargo:rerun-if-changed={script}");
}
