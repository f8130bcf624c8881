//! The `unikernel-hvt` command ([`unikernel_hvt::cli`]).
fn main() {
    std::process::exit(unikernel_hvt::cli::main(std::env::args_os().collect()));
}
