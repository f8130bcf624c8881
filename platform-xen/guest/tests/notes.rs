//! Builds the smoke kernel for x86_64-unknown-none and checks, with the
//! `object` crate, that the image carries every Xen note a PV boot needs,
//! in a PT_NOTE segment, with ENTRY and HYPERCALL_PAGE naming the right
//! symbols.

use object::elf::{FileHeader64, PT_NOTE};
use object::read::elf::{FileHeader, ProgramHeader};
use object::{LittleEndian as LE, Object, ObjectSymbol};
use platform_xen::notes::XenNotes;
use std::path::PathBuf;
use std::process::Command;

fn build_smoke() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let smoke = manifest.join("../smoke");
    // Its own target dir: the outer cargo holds the lock on ours.
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("target"));
    let target_dir = base.join("xen-smoke-for-tests");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&smoke)
        .args(["build", "--release", "--quiet"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the smoke kernel failed");
    target_dir.join("x86_64-unknown-none/release/xen-smoke")
}

#[test]
fn smoke_kernel_has_the_xen_notes() {
    let path = build_smoke();
    let data = std::fs::read(&path).expect("read smoke kernel");
    let file = object::File::parse(&*data).expect("parse ELF");
    let sym = |name: &str| {
        file.symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("no symbol {name}"))
            .address()
    };

    // The notes must be in a PT_NOTE segment: that is where libelf looks.
    let hdr = FileHeader64::<LE>::parse(&*data).expect("ELF64 header");
    let phdrs = hdr.program_headers(LE, &*data).expect("program headers");
    let mut found = 0;
    for ph in phdrs.iter().filter(|p| p.p_type(LE) == PT_NOTE) {
        let bytes = ph.data(LE, &*data).expect("note segment data");
        let notes = XenNotes::from_section(bytes);
        if notes.guest_os.is_none() {
            continue;
        }
        found += 1;
        assert_eq!(notes.check(), Ok(()));
        assert_eq!(notes.guest_os, Some(&b"unikernel"[..]));
        assert_eq!(notes.xen_version, Some(&b"xen-3.0"[..]));
        assert_eq!(notes.loader, Some(&b"generic"[..]));
        assert_eq!(notes.virt_base, Some(0));
        assert_eq!(notes.paddr_offset, Some(0));
        assert_eq!(notes.entry, Some(sym("_start")));
        assert_eq!(notes.hypercall_page, Some(sym("hypercall_page")));
    }
    assert_eq!(found, 1, "exactly one PT_NOTE segment with the Xen notes");
    assert_eq!(file.entry(), sym("_start"));
    assert_eq!(
        sym("hypercall_page") % 4096,
        0,
        "hypercall page is page aligned"
    );
    // Every loadable segment lies below the hypervisor hole.
    for ph in phdrs {
        assert!(ph.p_vaddr(LE) + ph.p_memsz(LE) < platform_xen::abi::HYPERVISOR_VIRT_START);
    }
}
