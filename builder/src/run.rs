//! `cargo unikernel run`: boot an image with the bundled hvt monitor,
//! in-process, and hand back its exit code.
use std::path::Path;

use unikernel_hvt::RunConfig;

/// Boot `image`. `args` `None` keeps the image's default arguments. Returns
/// the monitor's exit code (the app's, or the monitor's own 125/254/255,
/// whose message it has already printed).
pub fn boot(
    image: &Path,
    mem: Option<u64>,
    env: Vec<String>,
    args: Option<Vec<String>>,
    trace_syscalls: bool,
) -> Result<u8, String> {
    let config = RunConfig {
        image: image.to_path_buf(),
        mem,
        env,
        args,
        trace_syscalls,
    };
    let code = unikernel_hvt::run(&config);
    Ok((code & 0xff) as u8)
}
