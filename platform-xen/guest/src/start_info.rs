//! Reading `start_info`, the page the domain builder hands the kernel in `%rsi`.
//!
//! The first check of every boot is the magic string: a 64-bit PV loader
//! writes "xen-3.0-x86_64". Anything else (a 32-bit loader's
//! "xen-3.0-x86_32p", garbage from a loader that is not Xen) means none of
//! the other fields can be trusted, and the boot stops with a message
//! ([`MagicError`]).
//!
//! The rest is plain data: memory size, the shared-info page, the console
//! and xenstore rings and their event channels, the bootstrap page tables,
//! the pfn -> mfn list, and the command line.

use crate::abi::{StartInfo, START_INFO_MAGIC};

pub const PAGE_SIZE: u64 = 4096;

/// The magic was not "xen-3.0-x86_64".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MagicError {
    pub found: [u8; 32],
}

impl MagicError {
    /// The found magic as printable text (non-printable bytes shown as '?').
    pub fn found_text(&self) -> impl Iterator<Item = char> + '_ {
        let end = self.found.iter().position(|&b| b == 0).unwrap_or(32);
        self.found[..end].iter().map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
    }

    /// Whether it still looks like a Xen loader (then the console ring
    /// fields are probably where we expect them and worth a try).
    pub fn looks_like_xen(&self) -> bool {
        self.found.starts_with(b"xen-")
    }
}

impl core::fmt::Display for MagicError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("start_info magic is \"")?;
        for c in self.found_text() {
            core::fmt::Write::write_char(f, c)?;
        }
        write!(
            f,
            "\", expected \"xen-3.0-x86_64\": this kernel must be started by Xen as a 64-bit PV guest (xl create with type = \"pv\")"
        )
    }
}

/// Check the magic: exactly "xen-3.0-x86_64" followed by a NUL.
pub fn check_magic(magic: &[u8; 32]) -> Result<(), MagicError> {
    let n = START_INFO_MAGIC.len();
    if &magic[..n] == START_INFO_MAGIC && magic[n] == 0 {
        Ok(())
    } else {
        Err(MagicError { found: *magic })
    }
}

/// The command line (up to the first NUL, at most 1024 bytes); bytes that
/// are not UTF-8 end it early.
pub fn cmdline(si: &StartInfo) -> &str {
    let end = si
        .cmd_line
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(si.cmd_line.len());
    let bytes = &si.cmd_line[..end];
    match core::str::from_utf8(bytes) {
        Ok(s) => s,
        // SAFETY-free fallback: the valid prefix.
        Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    }
}

/// First pseudo-physical frame after the bootstrap elements (kernel,
/// module, p2m list, start_info, xenstore and console pages, page tables,
/// and the one-page bootstrap stack): everything from here up to
/// `nr_pages` is free RAM.
pub fn first_free_pfn(si: &StartInfo) -> u64 {
    si.pt_base.div_ceil(PAGE_SIZE) + si.nr_pt_frames + 1
}

#[cfg(test)]
pub(crate) fn sample() -> StartInfo {
    // SAFETY: StartInfo is plain integers and arrays: all-zero is valid.
    let mut si: StartInfo = unsafe { core::mem::zeroed() };
    si.magic[..14].copy_from_slice(b"xen-3.0-x86_64");
    si.nr_pages = 8192;
    si.pt_base = 0x40_3000;
    si.nr_pt_frames = 6;
    si
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_magic() {
        assert_eq!(check_magic(&sample().magic), Ok(()));
    }

    #[test]
    fn wrong_magic_is_reported_readably() {
        let mut si = sample();
        si.magic = [0; 32];
        si.magic[..15].copy_from_slice(b"xen-3.0-x86_32p");
        let e = check_magic(&si.magic).unwrap_err();
        assert!(e.looks_like_xen());
        let msg = e.to_string();
        assert!(
            msg.starts_with("start_info magic is \"xen-3.0-x86_32p\", expected \"xen-3.0-x86_64\""),
            "{msg}"
        );
        // A longer string with the right prefix is wrong too.
        let mut m = sample().magic;
        m[14] = b'!';
        assert!(check_magic(&m).is_err());
        // Garbage is shown without control characters.
        let g = MagicError { found: [7; 32] };
        assert!(!g.looks_like_xen());
        assert_eq!(g.found_text().collect::<String>(), "?".repeat(32));
    }

    #[test]
    fn cmdline_stops_at_nul_and_bad_utf8() {
        let mut si = sample();
        si.cmd_line[..7].copy_from_slice(b"7 hello");
        assert_eq!(cmdline(&si), "7 hello");
        si.cmd_line[2] = 0xff;
        assert_eq!(cmdline(&si), "7 ");
        si.cmd_line = [b'a'; 1024];
        assert_eq!(cmdline(&si).len(), 1024);
    }

    #[test]
    fn free_ram_starts_after_the_bootstrap_stack() {
        let si = sample();
        // pt_base 0x403000 -> pfn 0x403, 6 table frames, 1 stack page.
        assert_eq!(first_free_pfn(&si), 0x403 + 6 + 1);
    }
}
