//! Which components go into the kernel, and why.
//!
//! Two sources, both recorded in the manifest (`components` and, parallel
//! to it, `component_reasons`; `cargo unikernel inspect` prints them):
//!
//! * the metadata's `components = [...]`;
//! * the metadata's `disks = [...]`: a declared data volume needs `fs` (the
//!   block cache and the on-disk filesystem; the platform's block driver
//!   comes with it);
//! * the app itself. A static musl executable holds a libc function only
//!   when the program calls it (the linker drops unreferenced archive
//!   members and, for Rust, unused std code), and the symbol table
//!   (`.symtab`) names what is there. An app with `socket`, `bind`,
//!   `accept4`, `getaddrinfo`, ... gets `net`. A plain std hello has none
//!   of them (checked on `tests/apps/hello-min`, see docs/manifest.md).
//!   Go makes its own system calls, without libc: its wrappers
//!   (`syscall.socket`, `golang.org/x/sys/unix.connect`, ...) are linked
//!   only when the program uses them, so they count the same way.
//!
//! A stripped app has no `.symtab` (and a static executable has no other
//! symbol table): nothing can be learned from it, so only the metadata
//! counts and the build prints a warning saying how to list the component.
//! Scanning the code for `syscall` instructions was rejected: the socket
//! system-call numbers are plain immediates that other code contains too.
use object::read::elf::{ElfFile64, Sym};
use object::LittleEndian as LE;

/// The libc functions that mean "this app uses the network", in the order
/// a reason lists them. `socketpair` is not among them: Unix socket pairs
/// work without the network component.
pub const NET_SYMBOLS: &[&str] = &[
    "socket",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "getaddrinfo",
    "gethostbyname",
    "getnameinfo",
];

/// The packages whose wrappers a Go program calls instead of libc's
/// functions (`syscall.socket` stands for `socket`).
const GO_SYSCALL_PACKAGES: &[&str] = &["syscall.", "golang.org/x/sys/unix."];

/// Does `name` (a symbol) stand for the libc function `call`? The builder's
/// system-call shim (`crate::shim`) replaces some of musl's functions, so
/// an app built by it holds `__wrap_accept4` where musl's `accept4` was.
fn is_call(name: &str, call: &str) -> bool {
    name == call
        || name.strip_prefix("__wrap_") == Some(call)
        || GO_SYSCALL_PACKAGES
            .iter()
            .any(|p| name.strip_prefix(p) == Some(call))
}

/// One chosen component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub name: String,
    /// Why: "listed in [package.metadata.unikernel] components" and/or
    /// "the app calls socket, bind, accept4".
    pub reason: String,
}

/// What the app's symbol table says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppSymbols {
    /// Defined function and object names found in `.symtab`.
    Present(Vec<String>),
    /// No `.symtab` (stripped).
    Stripped,
}

/// The defined symbol names of the app ELF (already checked by
/// `elf_input::check_app`; an unreadable table counts as stripped).
pub fn app_symbols(app: &[u8]) -> AppSymbols {
    let Ok(elf) = ElfFile64::<LE>::parse(app) else {
        return AppSymbols::Stripped;
    };
    let table = elf.elf_symbol_table();
    if table.is_empty() {
        return AppSymbols::Stripped;
    }
    let names = table
        .iter()
        .filter(|s| !s.is_undefined(LE))
        .filter_map(|s| table.symbol_name(LE, s).ok())
        .filter_map(|n| std::str::from_utf8(n).ok())
        .map(String::from)
        .collect();
    AppSymbols::Present(names)
}

/// The components for `listed` (from the metadata, already checked), the
/// declared disks' names and the app's symbols, sorted by name; plus
/// warnings to print.
pub fn choose(
    listed: &[String],
    disks: &[String],
    symbols: &AppSymbols,
) -> (Vec<Choice>, Vec<String>) {
    choose_from(listed, &ListedIn::CARGO, disks, symbols)
}

/// Where the listed components were written, for reasons and warnings.
#[derive(Clone, Copy, Debug)]
pub struct ListedIn {
    /// "listed in ..." in a reason.
    pub reason: &'static str,
    /// How to list `net` for a stripped app.
    pub hint: &'static str,
}

impl ListedIn {
    /// A cargo build: the crate's metadata.
    pub const CARGO: ListedIn = ListedIn {
        reason: "listed in [package.metadata.unikernel] components",
        hint: "add components = [\"net\"] to [package.metadata.unikernel] (or build it with strip = false)",
    };
    /// `pack`: its `--components` or the config file.
    pub const PACK: ListedIn = ListedIn {
        reason: "listed in --components or the Unikernel.toml components",
        hint: "pass --components net (or components = [\"net\"] in Unikernel.toml)",
    };
}

/// [`choose`] with the listed components' origin named.
pub fn choose_from(
    listed: &[String],
    listed_in: &ListedIn,
    disks: &[String],
    symbols: &AppSymbols,
) -> (Vec<Choice>, Vec<String>) {
    let mut warnings = Vec::new();
    let net_calls: Vec<&str> = match symbols {
        AppSymbols::Present(names) => NET_SYMBOLS
            .iter()
            .copied()
            .filter(|s| names.iter().any(|n| is_call(n, s)))
            .collect(),
        AppSymbols::Stripped => {
            if !listed.iter().any(|c| c == "net") {
                warnings.push(format!(
                    "the app has no symbol table (stripped), so cargo-unikernel cannot see whether it uses the network; if it does, {}",
                    listed_in.hint
                ));
            }
            Vec::new()
        }
    };
    let mut names: Vec<&str> = listed.iter().map(String::as_str).collect();
    if !net_calls.is_empty() {
        names.push("net");
    }
    if !disks.is_empty() {
        names.push("fs");
    }
    names.sort_unstable();
    names.dedup();
    let choices = names
        .into_iter()
        .map(|name| {
            let mut why = Vec::new();
            if listed.iter().any(|c| c == name) {
                why.push(listed_in.reason.to_string());
            }
            if name == "net" && !net_calls.is_empty() {
                why.push(format!("the app calls {}", net_calls.join(", ")));
            }
            if name == "fs" && !disks.is_empty() {
                let quoted: Vec<String> = disks.iter().map(|d| format!("\"{d}\"")).collect();
                let noun = if disks.len() == 1 { "disk" } else { "disks" };
                why.push(format!("the image declares {noun} {}", quoted.join(", ")));
            }
            Choice {
                name: name.to_string(),
                reason: why.join("; "),
            }
        })
        .collect();
    (choices, warnings)
}

/// The devices the chosen components need from the platform (`net`,
/// `block`).
pub fn devices(choices: &[Choice]) -> Vec<String> {
    choices
        .iter()
        .filter_map(|c| platform_feature(&c.name))
        .map(str::to_string)
        .collect()
}

/// The platform crate's driver feature a component needs (`fs` -> `block`).
pub fn platform_feature(component: &str) -> Option<&'static str> {
    match component {
        "net" => Some("net"),
        "fs" => Some("block"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::musl_hello;

    fn syms(names: &[&str]) -> AppSymbols {
        AppSymbols::Present(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn nothing_for_a_plain_app() {
        let (c, w) = choose(&[], &[], &syms(&["main", "write", "socketpair", "sendmsg"]));
        assert!(c.is_empty() && w.is_empty(), "{c:?} {w:?}");
        assert!(devices(&c).is_empty());
    }

    #[test]
    fn net_from_symbols_names_the_calls_in_order() {
        let (c, _) = choose(&[], &[], &syms(&["accept4", "main", "bind", "socket"]));
        assert_eq!(
            c,
            [Choice {
                name: "net".into(),
                reason: "the app calls socket, bind, accept4".into()
            }]
        );
        assert_eq!(devices(&c), ["net"]);
    }

    #[test]
    fn a_wrapped_call_counts_as_the_call() {
        let (c, _) = choose(&[], &[], &syms(&["__wrap_accept4", "main"]));
        assert_eq!(c[0].reason, "the app calls accept4");
        let (c, _) = choose(&[], &[], &syms(&["__wrap_read", "__wrap_recv"]));
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn net_from_the_metadata() {
        let (c, w) = choose(&["net".into()], &[], &syms(&["main"]));
        assert_eq!(
            c[0].reason,
            "listed in [package.metadata.unikernel] components"
        );
        assert!(w.is_empty());
        let (c, _) = choose(&["net".into()], &[], &syms(&["getaddrinfo"]));
        assert_eq!(
            c[0].reason,
            "listed in [package.metadata.unikernel] components; the app calls getaddrinfo"
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn fs_from_declared_disks() {
        let (c, w) = choose(&[], &["data".into()], &syms(&["main"]));
        assert!(w.is_empty());
        assert_eq!(
            c,
            [Choice {
                name: "fs".into(),
                reason: "the image declares disk \"data\"".into()
            }]
        );
        assert_eq!(devices(&c), ["block"]);
        let (c, _) = choose(
            &["fs".into()],
            &["a".into(), "b".into()],
            &syms(&["socket"]),
        );
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0].reason,
            "listed in [package.metadata.unikernel] components; the image declares disks \"a\", \"b\""
        );
        assert_eq!(devices(&c), ["block", "net"]);
    }

    #[test]
    fn go_wrappers_count_as_calls() {
        let (c, _) = choose(
            &[],
            &[],
            &syms(&[
                "main.main",
                "syscall.socket",
                "golang.org/x/sys/unix.connect",
                "syscall.Socket",
            ]),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].reason, "the app calls socket, connect");
        let (c, _) = choose(
            &[],
            &[],
            &syms(&["syscall.socketpair", "mysyscall.socket", "syscall.write"]),
        );
        assert!(c.is_empty(), "{c:?}");
    }

    #[test]
    fn stripped_apps_warn_unless_listed() {
        let (c, w) = choose(&[], &[], &AppSymbols::Stripped);
        assert!(c.is_empty());
        assert!(w[0].contains("components = [\"net\"]"), "{w:?}");
        let (c, w) = choose(&["net".into()], &[], &AppSymbols::Stripped);
        assert_eq!(c.len(), 1);
        assert!(w.is_empty());
    }

    #[test]
    fn symbols_of_a_real_musl_binary() {
        // testutil's hello: a static musl Rust program that only prints.
        match app_symbols(&musl_hello()) {
            AppSymbols::Present(names) => {
                assert!(names.iter().any(|n| n == "main"), "{names:?}");
                assert!(!names.iter().any(|n| n == "socket"));
            }
            AppSymbols::Stripped => panic!("testutil's hello has a symbol table"),
        }
        assert_eq!(app_symbols(b"not an elf"), AppSymbols::Stripped);
    }
}
