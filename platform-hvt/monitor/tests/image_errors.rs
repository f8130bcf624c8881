//! Images the monitor must refuse before the guest runs: one clear line on
//! stderr, exit code 125, never a panic. (These need no /dev/kvm: the image
//! is checked before KVM is opened.)
mod common;

use common::*;
use unikernel_image::manifest::Platform;

fn refused(name: &str, bytes: &[u8], extra: &[&str], expect: &str) {
    let path = write_image(name, bytes);
    let mut args: Vec<&str> = extra.to_vec();
    args.push(path.to_str().unwrap());
    let out = monitor(&args);
    let err = stderr(&out);
    assert!(err.contains(expect), "expected {expect:?} in stderr: {err}");
    assert!(err.starts_with("unikernel-hvt: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(125));
}

fn good() -> Vec<u8> {
    elf(&[kernel(&[0xf4], b"")], Some(&manifest(Platform::Hvt)))
}

#[test]
fn not_elf() {
    refused("notelf", b"#!/bin/sh\necho hi\n", &[], "not an ELF file");
    refused("empty", b"", &[], "not an ELF file");
}

#[test]
fn truncated_images() {
    let g = good();
    refused("trunc-header", &g[..40], &[], "truncated");
    refused("trunc-phdrs", &g[..100], &[], "truncated");
    // Cut inside the kernel segment's bytes.
    refused(
        "trunc-segment",
        &g[..g.len() - 100],
        &[],
        "beyond the end of the file",
    );
}

#[test]
fn missing_manifest() {
    let img = elf(&[kernel(&[0xf4], b"")], None);
    refused(
        "nomanifest",
        &img,
        &[],
        "not a unikernel image (no UNIKERNEL manifest note)",
    );
}

/// An image from a builder that wrote manifest version 1 (before devices,
/// ports and options): refused, saying which version this monitor reads.
#[test]
fn old_manifest_version() {
    let mut img = good();
    let at = img
        .windows(8)
        .position(|w| w == unikernel_image::manifest::MAGIC)
        .expect("the manifest is in the image")
        + 8;
    img[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
    let expect = format!(
        "manifest version 1 is not supported (this tool reads version {})",
        unikernel_image::manifest::MANIFEST_VERSION
    );
    refused("manifest-v1", &img, &[], &expect);
}

#[test]
fn wrong_platform() {
    let img = elf(&[kernel(&[0xf4], b"")], Some(&manifest(Platform::Kvm)));
    refused("kvmimage", &img, &[], "image was built for platform kvm");
}

#[test]
fn wrong_machine() {
    let mut g = good();
    g[18] = 183; // EM_AARCH64
    refused("aarch64", &g, &[], "not a 64-bit x86_64 ET_EXEC ELF");
}

#[test]
fn segments_out_of_range_or_overlapping() {
    let m = manifest(Platform::Hvt);
    let low = Seg {
        gpa: 0x1000,
        bytes: vec![1],
        memsz: 0x1000,
        flags: 4,
    };
    refused(
        "low",
        &elf(&[kernel(&[0xf4], b""), low], Some(&m)),
        &[],
        "lies outside guest memory",
    );
    let over = Seg {
        gpa: common::KERNEL_SIZE + hvt_abi::layout::KERNEL_BASE - 0x10,
        bytes: vec![],
        memsz: 0x20,
        flags: 4,
    };
    refused(
        "overlap",
        &elf(&[kernel(&[0xf4], b""), over], Some(&m)),
        &[],
        "overlap",
    );
    let big = Seg {
        gpa: 0x20_0000,
        bytes: vec![0; 0x20],
        memsz: 0x10,
        flags: 4,
    };
    refused(
        "filesz",
        &elf(&[kernel(&[0xf4], b""), big], Some(&m)),
        &[],
        "larger than its memory size",
    );
}

#[test]
fn memory_too_small_for_the_image() {
    let m = manifest(Platform::Hvt);
    let app = Seg {
        gpa: 0x18_0000,
        bytes: vec![0; 16],
        memsz: 0x4000,
        flags: 4 | 2,
    };
    let img = elf(&[kernel(&[0xf4], b""), app], Some(&m));
    refused(
        "small",
        &img,
        &["--mem", "1M"],
        "--mem 1M is too small: the image needs at least 1552 KiB",
    );
}

#[test]
fn bad_options() {
    let path = write_image("opts", &good());
    let p = path.to_str().unwrap();
    for (args, expect) in [
        (vec!["--mem", "12X", p], "unknown suffix"),
        (vec!["--mem", "5000", p], "not a multiple of 4K"),
        (vec!["--mem", "4G", p], "too large"),
        (vec!["--env", "NOEQUALS", p], "expected KEY=VALUE"),
    ] {
        let out = monitor(&args);
        assert!(stderr(&out).contains(expect), "{args:?}: {}", stderr(&out));
        assert_eq!(out.status.code(), Some(125), "{args:?}");
    }
    let out = monitor(&["/nonexistent/image"]);
    assert!(stderr(&out).contains("cannot read image /nonexistent/image"));
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn help_documents_the_cli() {
    let out = monitor(&["--help"]);
    let s = stdout(&out);
    for word in [
        "--mem",
        "--env",
        "--trace-syscalls",
        "IMAGE",
        "ARGS",
        "125",
        "254",
        "255",
    ] {
        assert!(s.contains(word), "--help lacks {word}: {s}");
    }
    assert_eq!(out.status.code(), Some(0));
}

mod mutated {
    use super::*;
    use proptest::prelude::*;
    use unikernel_hvt::image::Image;
    use unikernel_hvt::memory::GuestMemory;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// A valid image with random bytes changed, cut at a random point,
        /// or grown with junk: the loader refuses it with an error or takes
        /// it, and a taken one loads into guest memory or is refused there;
        /// it never panics.
        #[test]
        fn mutated_images_never_panic_the_loader(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            cut in proptest::option::weighted(0.2, any::<prop::sample::Index>()),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = good();
            for (at, v) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= v;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes.extend_from_slice(&tail);
            if let Ok(img) = Image::parse(bytes) {
                let mut mem = GuestMemory::new(16 << 20).unwrap();
                let _ = img.load(&mut mem);
            }
        }
    }
}
