// Link with platform-xen's script: image at 0, Xen notes in a PT_NOTE segment.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg=-T{dir}/../guest/link-xen.ld");
    println!("cargo:rerun-if-changed=../guest/link-xen.ld");
}
