//! The Xen ELF notes that make an ELF a PV kernel, and a reader for them.
//!
//! Xen's domain builder (libelf, used by `xl create`) reads notes named
//! "Xen" from the image's PT_NOTE segment to learn where to load the
//! kernel and where to enter it:
//!
//! | note | value | why |
//! |---|---|---|
//! | GUEST_OS | "unikernel" | shown by the toolstack |
//! | GUEST_VERSION | the crate version | shown by the toolstack |
//! | XEN_VERSION | "xen-3.0" | the PV ABI we speak |
//! | LOADER | "generic" | load the ELF segments as they are |
//! | VIRT_BASE | 0 | virtual == pseudo-physical (the runtime's identity map) |
//! | PADDR_OFFSET | 0 | as above |
//! | ENTRY | `_start` | first instruction, `%rsi` = `start_info` |
//! | HYPERCALL_PAGE | `hypercall_page` | the builder fills it with the call stubs |
//!
//! No FEATURES note: the platform needs no optional feature (it writes page
//! tables through `mmu_update`, so it does not ask for
//! `writable_page_tables`), and it does not support suspend, so no
//! SUSPEND_CANCEL either. The image must keep the `.note.Xen` section in a
//! PT_NOTE segment (`link-xen.ld`).
//!
//! [`XenNotes`] parses a note section; the host test `tests/notes.rs` uses
//! it on the built smoke kernel, and the builder can use it to refuse an
//! image that would not boot.

use crate::abi::elfnote;

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .macro XEN_NOTE type, desc:vararg
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 2f - 1f
    .long \type
    .asciz "Xen"
    .balign 4
1:  \desc
2:  .balign 4
    .popsection
    .endm

    XEN_NOTE {guest_os}, .asciz "unikernel"
"#,
    concat!("XEN_NOTE {guest_version}, .asciz \"", env!("CARGO_PKG_VERSION"), "\""),
    r#"
    XEN_NOTE {xen_version}, .asciz "xen-3.0"
    XEN_NOTE {loader}, .asciz "generic"
    XEN_NOTE {virt_base}, .quad 0
    XEN_NOTE {paddr_offset}, .quad 0
    XEN_NOTE {entry}, .quad _start
    XEN_NOTE {hypercall_page}, .quad hypercall_page
"#,
    guest_os = const elfnote::GUEST_OS,
    guest_version = const elfnote::GUEST_VERSION,
    xen_version = const elfnote::XEN_VERSION,
    loader = const elfnote::LOADER,
    virt_base = const elfnote::VIRT_BASE,
    paddr_offset = const elfnote::PADDR_OFFSET,
    entry = const elfnote::ENTRY,
    hypercall_page = const elfnote::HYPERCALL_PAGE,
    options(att_syntax)
);

/// One ELF note: name, type, descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Note<'a> {
    pub name: &'a [u8],
    pub kind: u32,
    pub desc: &'a [u8],
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Iterate the notes of a (little-endian) note section or segment. Stops
/// at the first malformed note.
pub fn parse(data: &[u8]) -> impl Iterator<Item = Note<'_>> {
    let mut at = 0usize;
    core::iter::from_fn(move || {
        let namesz = u32_at(data, at)? as usize;
        let descsz = u32_at(data, at + 4)? as usize;
        let kind = u32_at(data, at + 8)?;
        let name_at = at + 12;
        let desc_at = align4(name_at.checked_add(namesz)?)?;
        let end = align4(desc_at.checked_add(descsz)?)?;
        let mut name = data.get(name_at..name_at + namesz)?;
        if let [rest @ .., 0] = name {
            name = rest;
        }
        let desc = data.get(desc_at..desc_at + descsz)?;
        at = end;
        Some(Note { name, kind, desc })
    })
}

/// The Xen notes of an image, as the domain builder would read them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenNotes<'a> {
    pub guest_os: Option<&'a [u8]>,
    pub xen_version: Option<&'a [u8]>,
    pub loader: Option<&'a [u8]>,
    pub virt_base: Option<u64>,
    pub paddr_offset: Option<u64>,
    pub entry: Option<u64>,
    pub hypercall_page: Option<u64>,
}

fn string(desc: &[u8]) -> &[u8] {
    desc.split(|&b| b == 0).next().unwrap_or(desc)
}

fn number(desc: &[u8]) -> Option<u64> {
    match desc.len() {
        4 => Some(u32::from_le_bytes(desc.try_into().ok()?) as u64),
        8 => Some(u64::from_le_bytes(desc.try_into().ok()?)),
        _ => None,
    }
}

impl<'a> XenNotes<'a> {
    /// Collect the "Xen" notes of a note section.
    pub fn from_section(data: &'a [u8]) -> XenNotes<'a> {
        let mut n = XenNotes::default();
        for note in parse(data).filter(|n| n.name == b"Xen") {
            match note.kind {
                elfnote::GUEST_OS => n.guest_os = Some(string(note.desc)),
                elfnote::XEN_VERSION => n.xen_version = Some(string(note.desc)),
                elfnote::LOADER => n.loader = Some(string(note.desc)),
                elfnote::VIRT_BASE => n.virt_base = number(note.desc),
                elfnote::PADDR_OFFSET => n.paddr_offset = number(note.desc),
                elfnote::ENTRY => n.entry = number(note.desc),
                elfnote::HYPERCALL_PAGE => n.hypercall_page = number(note.desc),
                _ => {}
            }
        }
        n
    }

    /// Check what a 64-bit PV boot needs; the error names the missing or wrong note.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.guest_os.is_none() {
            return Err("no GUEST_OS note: xl refuses an image without Xen notes");
        }
        match self.xen_version {
            Some(b"xen-3.0") => {}
            Some(_) => return Err("XEN_VERSION note is not \"xen-3.0\""),
            None => return Err("no XEN_VERSION note"),
        }
        if self.loader != Some(b"generic") {
            return Err("LOADER note is missing or not \"generic\"");
        }
        if self.entry.is_none() {
            return Err("no ENTRY note: Xen would not know where to start the kernel");
        }
        if self.hypercall_page.is_none() {
            return Err("no HYPERCALL_PAGE note: the kernel could not make hypercalls");
        }
        if self.virt_base != Some(0) || self.paddr_offset != Some(0) {
            return Err("VIRT_BASE and PADDR_OFFSET must both be 0 (identity map)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(out: &mut Vec<u8>, name: &[u8], kind: u32, desc: &[u8]) {
        out.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
        out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(name);
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(desc);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }

    fn good() -> Vec<u8> {
        let mut s = Vec::new();
        note(&mut s, b"Xen", elfnote::GUEST_OS, b"unikernel\0");
        note(&mut s, b"Xen", elfnote::XEN_VERSION, b"xen-3.0\0");
        note(&mut s, b"GNU", 3, b"buildid!");
        note(&mut s, b"Xen", elfnote::LOADER, b"generic\0");
        note(&mut s, b"Xen", elfnote::VIRT_BASE, &0u64.to_le_bytes());
        note(&mut s, b"Xen", elfnote::PADDR_OFFSET, &0u64.to_le_bytes());
        note(&mut s, b"Xen", elfnote::ENTRY, &0x1234u64.to_le_bytes());
        note(
            &mut s,
            b"Xen",
            elfnote::HYPERCALL_PAGE,
            &0x2000u64.to_le_bytes(),
        );
        s
    }

    #[test]
    fn parses_all_notes_in_order() {
        let s = good();
        let all: Vec<_> = parse(&s).collect();
        assert_eq!(all.len(), 8);
        assert_eq!(all[2].name, b"GNU");
        assert_eq!(all[2].desc, b"buildid!");
        let n = XenNotes::from_section(&s);
        assert_eq!(n.guest_os, Some(&b"unikernel"[..]));
        assert_eq!(n.entry, Some(0x1234));
        assert_eq!(n.hypercall_page, Some(0x2000));
        assert_eq!(n.check(), Ok(()));
    }

    #[test]
    fn missing_entry_is_named() {
        let mut s = Vec::new();
        note(&mut s, b"Xen", elfnote::GUEST_OS, b"x\0");
        note(&mut s, b"Xen", elfnote::XEN_VERSION, b"xen-3.0\0");
        note(&mut s, b"Xen", elfnote::LOADER, b"generic\0");
        let err = XenNotes::from_section(&s).check().unwrap_err();
        assert!(err.contains("ENTRY"), "{err}");
    }

    #[test]
    fn truncated_section_stops_cleanly() {
        let s = good();
        let n = parse(&s[..s.len() - 3]).count();
        assert_eq!(n, 7);
        assert_eq!(parse(&[1, 0, 0]).count(), 0);
        // a huge namesz must not panic or overflow
        let mut bad = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 0, 0, 0];
        bad.extend_from_slice(b"Xen\0");
        assert_eq!(parse(&bad).count(), 0);
    }

    #[test]
    fn four_byte_numbers_are_accepted() {
        let mut s = Vec::new();
        note(&mut s, b"Xen", elfnote::ENTRY, &0x55u32.to_le_bytes());
        assert_eq!(XenNotes::from_section(&s).entry, Some(0x55));
    }
}
