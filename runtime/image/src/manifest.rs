//! The image manifest: an ELF note (name [`NOTE_NAME`], type [`NOTE_TYPE`])
//! written by the builder and read by the monitor and `cargo unikernel inspect`.
//!
//! Encoding (all integers little-endian):
//!
//! ```text
//! magic    8 bytes  "UKMANIF1"
//! version  u32      MANIFEST_VERSION
//! platform u32      Platform as u32
//! memory   u64      default guest memory in bytes (0 = monitor default)
//! app_entry, app_base, app_phdr, app_end   u64 each (guest addresses)
//! app_phnum, app_phent                     u32 each
//! name              string
//! args, env, components, component_reasons, devices, ports, options, disks
//!                   list of strings each
//! files_addr, files_len  u64 each (the embedded-files archive; 0, 0 = none)
//! build_id          bytes
//! string/bytes: u32 length + bytes; list: u32 count + strings
//! ```
//!
//! Version 2 added `component_reasons`, `devices`, `ports` and `options`;
//! version 3 added `disks` (`NAME=MOUNT`, see [`crate::disks`]) and the
//! embedded-files archive (see [`crate::files`]); older images are refused
//! (rebuild them).
//!
//! Decoding never panics: any short or malformed note is a [`ManifestError`].
#[cfg(any(feature = "alloc", test))]
use alloc::{string::String, vec::Vec};

/// The note's name. Four bytes with its NUL, and the builder pads the
/// descriptor to a multiple of 8, so the note reads the same whether a
/// loader walks notes with 4- or 8-byte alignment (QEMU's PVH loader
/// crashed now and then on the earlier 10-byte "UNIKERNEL" name).
pub const NOTE_NAME: &str = "UKM";
pub const NOTE_TYPE: u32 = 0x4d46; // "MF"
pub const MAGIC: &[u8; 8] = b"UKMANIF1";
pub const MANIFEST_VERSION: u32 = 3;

/// The platform an image was built for.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    Hvt = 1,
    Kvm = 2,
    Xen = 3,
}

impl Platform {
    pub fn from_u32(v: u32) -> Option<Platform> {
        match v {
            1 => Some(Platform::Hvt),
            2 => Some(Platform::Kvm),
            3 => Some(Platform::Xen),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Platform::Hvt => "hvt",
            Platform::Kvm => "kvm",
            Platform::Xen => "xen",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestError {
    Truncated,
    BadMagic,
    UnsupportedVersion(u32),
    UnknownPlatform(u32),
    BadUtf8,
    /// `component_reasons` does not have one entry per component.
    ReasonsMismatch,
}

impl core::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ManifestError::Truncated => write!(f, "manifest note is truncated"),
            ManifestError::BadMagic => write!(f, "manifest note has a bad magic"),
            ManifestError::UnsupportedVersion(v) => write!(
                f,
                "manifest version {v} is not supported (this tool reads version {MANIFEST_VERSION})"
            ),
            ManifestError::UnknownPlatform(p) => write!(f, "manifest names unknown platform {p}"),
            ManifestError::BadUtf8 => write!(f, "manifest holds a string that is not UTF-8"),
            ManifestError::ReasonsMismatch => write!(
                f,
                "manifest lists a different number of component reasons than components"
            ),
        }
    }
}

#[cfg(any(feature = "std", test))]
impl std::error::Error for ManifestError {}

/// The decoded manifest.
#[cfg(any(feature = "alloc", test))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub platform: Platform,
    pub memory: u64,
    pub app_entry: u64,
    pub app_base: u64,
    pub app_phdr: u64,
    pub app_end: u64,
    pub app_phnum: u32,
    pub app_phent: u32,
    pub name: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// Linked components (`"net"`), sorted.
    pub components: Vec<String>,
    /// Why each component was chosen, parallel to `components` (`"the app
    /// calls socket, bind, accept4"`).
    pub component_reasons: Vec<String>,
    /// Devices the image wants from its platform (`"net"`).
    pub devices: Vec<String>,
    /// Published ports as the user wrote them (see [`crate::ports`]).
    pub ports: Vec<String>,
    /// Runtime option defaults, `UNIKERNEL_*=VALUE` each (see [`crate::options`]).
    pub options: Vec<String>,
    /// Declared data volumes, `NAME=MOUNT` each (see [`crate::disks`]).
    pub disks: Vec<String>,
    /// Guest address and length of the embedded-files archive (see
    /// [`crate::files`]); both 0 when the image embeds no files. The
    /// archive is loaded as part of the app's range (`app_end` covers it).
    pub files_addr: u64,
    pub files_len: u64,
    pub build_id: Vec<u8>,
}

#[cfg(any(feature = "alloc", test))]
impl Manifest {
    /// Encode into the note's descriptor bytes.
    pub fn encode(&self) -> Vec<u8> {
        fn bytes(out: &mut Vec<u8>, b: &[u8]) {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        fn list(out: &mut Vec<u8>, l: &[String]) {
            out.extend_from_slice(&(l.len() as u32).to_le_bytes());
            for s in l {
                bytes(out, s.as_bytes());
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.platform as u32).to_le_bytes());
        for v in [
            self.memory,
            self.app_entry,
            self.app_base,
            self.app_phdr,
            self.app_end,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.app_phnum.to_le_bytes());
        out.extend_from_slice(&self.app_phent.to_le_bytes());
        bytes(&mut out, self.name.as_bytes());
        list(&mut out, &self.args);
        list(&mut out, &self.env);
        for l in [
            &self.components,
            &self.component_reasons,
            &self.devices,
            &self.ports,
            &self.options,
            &self.disks,
        ] {
            list(&mut out, l);
        }
        out.extend_from_slice(&self.files_addr.to_le_bytes());
        out.extend_from_slice(&self.files_len.to_le_bytes());
        bytes(&mut out, &self.build_id);
        out
    }

    /// Decode a note descriptor. Trailing bytes (note padding) are ignored.
    pub fn decode(data: &[u8]) -> Result<Manifest, ManifestError> {
        let mut r = Reader { data, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err(ManifestError::BadMagic);
        }
        let version = r.u32()?;
        if version != MANIFEST_VERSION {
            return Err(ManifestError::UnsupportedVersion(version));
        }
        let p = r.u32()?;
        let platform = Platform::from_u32(p).ok_or(ManifestError::UnknownPlatform(p))?;
        let m = Manifest {
            platform,
            memory: r.u64()?,
            app_entry: r.u64()?,
            app_base: r.u64()?,
            app_phdr: r.u64()?,
            app_end: r.u64()?,
            app_phnum: r.u32()?,
            app_phent: r.u32()?,
            name: r.string()?,
            args: r.list()?,
            env: r.list()?,
            components: r.list()?,
            component_reasons: r.list()?,
            devices: r.list()?,
            ports: r.list()?,
            options: r.list()?,
            disks: r.list()?,
            files_addr: r.u64()?,
            files_len: r.u64()?,
            build_id: r.bytes()?.to_vec(),
        };
        if m.component_reasons.len() != m.components.len() {
            return Err(ManifestError::ReasonsMismatch);
        }
        Ok(m)
    }

    /// The reason recorded for `component`, if it is linked.
    pub fn reason(&self, component: &str) -> Option<&str> {
        let i = self.components.iter().position(|c| c == component)?;
        self.component_reasons.get(i).map(String::as_str)
    }
}

#[cfg(any(feature = "alloc", test))]
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

#[cfg(any(feature = "alloc", test))]
impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ManifestError> {
        let end = self.pos.checked_add(n).ok_or(ManifestError::Truncated)?;
        let s = self
            .data
            .get(self.pos..end)
            .ok_or(ManifestError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, ManifestError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
    fn u64(&mut self) -> Result<u64, ManifestError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8], ManifestError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, ManifestError> {
        let b = self.bytes()?;
        core::str::from_utf8(b)
            .map(String::from)
            .map_err(|_| ManifestError::BadUtf8)
    }
    fn list(&mut self) -> Result<Vec<String>, ManifestError> {
        let n = self.u32()? as usize;
        // Each entry takes at least 4 bytes: refuse absurd counts before allocating.
        if n > self.data.len() / 4 {
            return Err(ManifestError::Truncated);
        }
        (0..n).map(|_| self.string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            platform: Platform::Hvt,
            memory: 64 << 20,
            app_entry: 0x20_1234,
            app_base: 0x20_0000,
            app_phdr: 0x20_0040,
            app_end: 0x28_0000,
            app_phnum: 10,
            app_phent: 56,
            name: "hello".into(),
            args: vec!["a".into(), "b c".into()],
            env: vec!["K=V".into()],
            components: vec!["net".into()],
            component_reasons: vec!["the app calls socket, bind".into()],
            devices: vec!["net".into()],
            ports: vec!["8080:80".into(), "udp:5353:53".into()],
            options: vec!["UNIKERNEL_IP=10.0.0.2/24".into()],
            disks: vec!["data=/data".into()],
            files_addr: 0x29_0000,
            files_len: 1234,
            build_id: vec![1, 2, 3],
        }
    }

    #[test]
    fn roundtrip() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let e = sample().encode();
        for n in 0..e.len() {
            assert!(Manifest::decode(&e[..n]).is_err(), "prefix {n} decoded");
        }
    }

    #[test]
    fn bad_magic_version_platform() {
        let mut e = sample().encode();
        e[0] = b'X';
        assert_eq!(Manifest::decode(&e), Err(ManifestError::BadMagic));
        let mut e = sample().encode();
        e[8] = 9;
        assert_eq!(
            Manifest::decode(&e),
            Err(ManifestError::UnsupportedVersion(9))
        );
        let mut e = sample().encode();
        e[12] = 7;
        assert_eq!(Manifest::decode(&e), Err(ManifestError::UnknownPlatform(7)));
    }

    #[test]
    fn version_1_is_refused_with_a_clear_message() {
        let mut e = sample().encode();
        e[8] = 1;
        let err = Manifest::decode(&e).unwrap_err();
        assert_eq!(err, ManifestError::UnsupportedVersion(1));
        assert_eq!(
            err.to_string(),
            "manifest version 1 is not supported (this tool reads version 3)"
        );
    }

    #[test]
    fn reasons_must_match_components() {
        let mut m = sample();
        m.component_reasons.clear();
        assert_eq!(
            Manifest::decode(&m.encode()),
            Err(ManifestError::ReasonsMismatch)
        );
        assert_eq!(sample().reason("net"), Some("the app calls socket, bind"));
        assert_eq!(sample().reason("fs"), None);
    }

    /// Garbage, flipped bytes and absurd counts: always an error or a
    /// manifest, never a panic or a huge allocation.
    #[test]
    fn garbage_never_panics() {
        let e = sample().encode();
        // Every single byte replaced by a few values.
        for i in 0..e.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut g = e.clone();
                g[i] = v;
                let _ = Manifest::decode(&g);
            }
        }
        // A list count of u32::MAX right after the header fields.
        let lists_at = 8 + 4 + 4 + 5 * 8 + 2 * 4;
        let mut g = e.clone();
        g[lists_at..lists_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Manifest::decode(&g), Err(ManifestError::Truncated));
        // Pseudo-random bytes behind a valid magic and version.
        let mut x: u32 = 0x1234_5678;
        for len in 0..600 {
            let mut g = MAGIC.to_vec();
            g.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                g.push(x as u8);
            }
            let _ = Manifest::decode(&g);
        }
    }

    #[test]
    fn trailing_padding_is_ignored() {
        let mut e = sample().encode();
        e.extend_from_slice(&[0; 7]);
        assert_eq!(Manifest::decode(&e), Ok(sample()));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn list() -> impl Strategy<Value = Vec<String>> {
            proptest::collection::vec("\\PC{0,12}", 0..4)
        }

        fn manifest() -> impl Strategy<Value = Manifest> {
            (
                (0u32..3, any::<[u64; 7]>(), any::<[u32; 2]>(), "\\PC{0,16}"),
                (list(), list(), list(), list(), list(), list()),
                proptest::collection::vec(any::<u8>(), 0..40),
            )
                .prop_map(
                    |(
                        (p, n, w, name),
                        (args, env, components, devices, ports, options),
                        build_id,
                    )| {
                        let reasons = components.iter().map(|c| format!("why {c}")).collect();
                        Manifest {
                            platform: [Platform::Hvt, Platform::Kvm, Platform::Xen][p as usize],
                            memory: n[0],
                            app_entry: n[1],
                            app_base: n[2],
                            app_phdr: n[3],
                            app_end: n[4],
                            app_phnum: w[0],
                            app_phent: w[1],
                            name,
                            args,
                            env,
                            components,
                            component_reasons: reasons,
                            devices,
                            ports,
                            options: options.clone(),
                            disks: options,
                            files_addr: n[5],
                            files_len: n[6],
                            build_id,
                        }
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            #[test]
            fn any_manifest_decodes_to_itself(m in manifest()) {
                prop_assert_eq!(Manifest::decode(&m.encode()), Ok(m));
            }

            /// Truncated, mutated or random descriptors: an error or a
            /// manifest, never a panic.
            #[test]
            fn broken_descriptors_never_panic(
                m in manifest(),
                cut in any::<prop::sample::Index>(),
                flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
                junk in proptest::collection::vec(any::<u8>(), 0..200),
            ) {
                let mut bytes = m.encode();
                for (at, v) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] ^= v;
                }
                let n = cut.index(bytes.len() + 1);
                let _ = Manifest::decode(&bytes[..n]);
                let _ = Manifest::decode(&junk);
                let mut magic = MAGIC.to_vec();
                magic.extend_from_slice(&junk);
                let _ = Manifest::decode(&magic);
            }
        }
    }
}
