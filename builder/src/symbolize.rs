//! Crash reports in source terms (docs/debugging.md): the guest reports raw
//! addresses (the crash line on the console, and on hvt also the halt
//! call's crash record); this turns them into functions and `file:line`
//! with the image's `.app.debug` and `.kernel.debug` files (gimli, through
//! `addr2line`), inlined frames included.
use std::path::{Path, PathBuf};

use crate::elf_input::{check_app, check_kernel_at, ElfInput};
use crate::image::Image;

/// What a crash line, a crash record or a panic's backtrace says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crash {
    pub kind: Kind,
    /// Where the guest loaded the app's lowest segment, if it said.
    pub app_base: Option<u64>,
    /// Innermost first; `true`: found by scanning the stack (may be stale).
    pub frames: Vec<(u64, bool)>,
}

/// Where a [`Crash`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A CPU fault: `frames[0]` is the faulting instruction, the others
    /// return addresses.
    Fault,
    /// A panic of the runtime: every frame is a return address.
    Panic,
    /// The backtrace std printed for a panic of the app
    /// (`RUST_BACKTRACE`): return addresses.
    Backtrace,
}

impl Kind {
    fn title(self) -> &'static str {
        match self {
            Kind::Fault => "crash report (fault",
            Kind::Panic => "crash report (panic",
            Kind::Backtrace => "panic backtrace (RUST_BACKTRACE",
        }
    }
}

const MARK: &str = "unikernel-crash v";

/// The crash line in `line`, if it holds one (`None`: it does not;
/// `Some(Err)`: it does, in a form this builder cannot read).
pub fn parse_line(line: &str) -> Option<Result<Crash, String>> {
    let at = line.find(MARK)?;
    let mut words = line[at + MARK.len()..].split_whitespace();
    Some(parse_words(&mut words))
}

fn parse_words<'a>(words: &mut impl Iterator<Item = &'a str>) -> Result<Crash, String> {
    let version = words.next().unwrap_or("");
    if version != "1" {
        return Err(format!(
            "a crash line of version {version:?}; this cargo-unikernel reads version 1"
        ));
    }
    let kind = match words.next() {
        Some("fault") => Kind::Fault,
        Some("panic") => Kind::Panic,
        other => return Err(format!("a crash line of unknown kind {other:?}")),
    };
    let hex = |s: &str| {
        u64::from_str_radix(s.trim_start_matches("0x"), 16)
            .map_err(|_| format!("a crash line with a bad address {s:?}"))
    };
    let mut crash = Crash {
        kind,
        app_base: None,
        frames: Vec::new(),
    };
    for w in words {
        if let Some(base) = w.strip_prefix("app=") {
            crash.app_base = Some(hex(base)?);
        } else if let Some(pc) = w.strip_suffix('~') {
            crash.frames.push((hex(pc)?, true));
        } else {
            crash.frames.push((hex(w)?, false));
        }
    }
    Ok(crash)
}

/// A frame line of std's backtrace when std cannot name the frame, as in a
/// unikernel (`  12:     0x16dfff - <unknown>`): its number and address.
pub fn parse_backtrace_frame(line: &str) -> Option<(usize, u64)> {
    let (n, rest) = line.trim_start().split_once(':')?;
    let n = n.parse().ok()?;
    let addr = rest.trim().strip_suffix("- <unknown>")?.trim_end();
    let addr = u64::from_str_radix(addr.strip_prefix("0x")?, 16).ok()?;
    Some((n, addr))
}

/// Gathers the frame lines of one std backtrace as they pass, line by line.
#[derive(Default)]
pub struct BacktraceLines {
    frames: Vec<(u64, bool)>,
    /// Frame lines seen (beyond [`Self::MAX`] they are counted, not kept).
    seen: usize,
}

impl BacktraceLines {
    /// Most frames kept (a deep recursion must not grow this without end).
    const MAX: usize = 256;

    /// Takes the next console line; returns the backtrace this line ended
    /// (it is not the next frame line of the one gathered).
    pub fn line(&mut self, line: &str) -> Option<Crash> {
        let Some((n, addr)) = parse_backtrace_frame(line) else {
            return self.finish();
        };
        let ended = if n != self.seen { self.finish() } else { None };
        if n == self.seen {
            if self.frames.len() < Self::MAX {
                self.frames.push((addr, false));
            }
            self.seen += 1;
        }
        ended
    }

    /// The backtrace gathered so far, if any (the stream ended).
    pub fn finish(&mut self) -> Option<Crash> {
        self.seen = 0;
        if self.frames.is_empty() {
            return None;
        }
        Some(Crash {
            kind: Kind::Backtrace,
            app_base: None,
            frames: std::mem::take(&mut self.frames),
        })
    }
}

/// One ELF with its debug info.
struct Module {
    what: &'static str,
    loader: addr2line::Loader,
    elf: ElfInput,
}

impl Module {
    fn contains(&self, pc: u64, bias: u64) -> bool {
        let Some(va) = pc.checked_sub(bias) else {
            return false;
        };
        self.elf
            .loads
            .iter()
            .any(|s| (s.vaddr..s.vaddr + s.memsz).contains(&va))
    }
}

/// The debug files of one image.
pub struct Symbolizer {
    app: Option<Module>,
    kernel: Option<Module>,
    /// Where the image puts the app's lowest segment.
    image_app_base: Option<u64>,
    /// Why a debug file is missing, for the report.
    pub missing: Vec<String>,
}

/// `<image>.<which>.debug` next to the image, else `<build id>.<which>.debug`
/// or `<image name>.<which>.debug` in `debug_dir`.
fn find_debug(
    image: &Path,
    build_id: &str,
    which: &str,
    debug_dir: Option<&Path>,
) -> Option<PathBuf> {
    let next_to = crate::pipeline::debug_path(image, which);
    if next_to.is_file() {
        return Some(next_to);
    }
    let dir = debug_dir?;
    let mut names = vec![format!("{build_id}.{which}.debug")];
    if let Some(n) = image.file_name() {
        names.push(format!("{}.{which}.debug", n.to_string_lossy()));
    }
    names.into_iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

impl Symbolizer {
    /// The debug files of `image` (see [`find_debug`]); a missing or
    /// unreadable one is named in [`Symbolizer::missing`], not an error.
    pub fn open(image: &Path, debug_dir: Option<&Path>) -> Result<Symbolizer, String> {
        let data =
            std::fs::read(image).map_err(|e| format!("cannot read {}: {e}", image.display()))?;
        let img = Image::parse(&data).map_err(|e| format!("{}: {e:?}", image.display()))?;
        let build_id = crate::messages::hex(&img.manifest.build_id);
        let app_base = img
            .segments
            .iter()
            .filter(|s| img.owner(s) == crate::image::Owner::App)
            .map(|s| s.vaddr)
            .min();
        let kernel_base = crate::link::kernel_base(img.manifest.platform);
        let mut missing = Vec::new();
        let mut load = |which: &'static str| -> Option<(addr2line::Loader, ElfInput)> {
            let Some(path) = find_debug(image, &build_id, which, debug_dir) else {
                missing.push(format!(
                    "no {which} debug file (neither {} nor {build_id}.{which}.debug in --debug-dir)",
                    crate::pipeline::debug_path(image, which).display()
                ));
                return None;
            };
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|d| {
                    let what = path.display().to_string();
                    if which == "app" {
                        check_app(&d, &what)
                    } else {
                        check_kernel_at(&d, &what, kernel_base)
                    }
                })
                .and_then(|elf| {
                    addr2line::Loader::new(&path)
                        .map(|l| (l, elf))
                        .map_err(|e| e.to_string())
                });
            match parsed {
                Ok(m) => Some(m),
                Err(e) => {
                    missing.push(format!("{}: unreadable ({e})", path.display()));
                    None
                }
            }
        };
        let module = |what| move |(loader, elf)| Module { what, loader, elf };
        let kernel = load("kernel").map(module("kernel"));
        let app = load("app").map(module("app"));
        Ok(Symbolizer {
            app,
            kernel,
            image_app_base: app_base,
            missing,
        })
    }

    /// The report: one line per function (inlined ones first), innermost
    /// first, numbered as gdb numbers frames.
    pub fn describe(&self, crash: &Crash) -> Vec<String> {
        // Each module with its run-time minus ELF address; the guest's word
        // on where the app is wins over the image's.
        let base = crash.app_base.or(self.image_app_base);
        let modules: Vec<(&Module, u64)> = (self.kernel.iter().map(|k| (k, 0)))
            .chain(self.app.iter().map(|a| (a, app_bias(&a.elf, base))))
            .collect();
        let mut out = Vec::new();
        let mut n = 0;
        for (i, &(pc, guessed)) in crash.frames.iter().enumerate() {
            // A return address points after the call: look up the call.
            let probe_pc = if i == 0 && crash.kind == Kind::Fault {
                pc
            } else {
                pc.saturating_sub(1)
            };
            let guess = if guessed {
                " (stack scan: may be stale)"
            } else {
                ""
            };
            let Some(&(m, bias)) = modules.iter().find(|(m, bias)| m.contains(pc, *bias)) else {
                out.push(format!(
                    "#{n:<2} {pc:#018x} ?? (outside the app and the kernel){guess}"
                ));
                n += 1;
                continue;
            };
            let va = probe_pc - bias;
            let mut any = false;
            if let Ok(mut frames) = m.loader.find_frames(va) {
                while let Ok(Some(f)) = frames.next() {
                    let name = f
                        .function
                        .as_ref()
                        .and_then(|f| f.demangle().ok().map(|s| s.into_owned()))
                        .or_else(|| m.loader.find_symbol(va).map(demangle))
                        .unwrap_or_else(|| "??".to_string());
                    let at = f.location.as_ref().map(location).unwrap_or_default();
                    out.push(format!("#{n:<2} {pc:#018x} {name}{at} [{}]{guess}", m.what));
                    n += 1;
                    any = true;
                }
            }
            if !any {
                let name = m
                    .loader
                    .find_symbol(va)
                    .map(demangle)
                    .unwrap_or_else(|| "??".into());
                out.push(format!(
                    "#{n:<2} {pc:#018x} {name} [{}, no line info]{guess}",
                    m.what
                ));
                n += 1;
            }
        }
        out
    }
}

fn demangle(s: &str) -> String {
    addr2line::demangle_auto(s.into(), None).into_owned()
}

fn location(l: &addr2line::Location) -> String {
    let Some(file) = l.file else {
        return String::new();
    };
    let file = file.strip_prefix("./").unwrap_or(file);
    match (l.line, l.column) {
        (Some(line), Some(col)) if col > 0 => format!(" at {file}:{line}:{col}"),
        (Some(line), _) => format!(" at {file}:{line}"),
        _ => format!(" at {file}"),
    }
}

/// Where the guest runs the app's debug file's addresses: run-time minus
/// ELF address (gdb's `add-symbol-file -o`); `None` without a readable
/// image or app debug file.
pub fn app_offset(image: &Path) -> Option<u64> {
    let s = Symbolizer::open(image, None).ok()?;
    let app = s.app.as_ref()?;
    Some(app_bias(&app.elf, s.image_app_base))
}

/// Run-time minus ELF address of the app: a static-pie app's addresses
/// start at 0 and move with it; an `ET_EXEC` app runs where it is linked.
fn app_bias(elf: &ElfInput, base: Option<u64>) -> u64 {
    match base {
        Some(b) if elf.position_independent => b.wrapping_sub(elf.start() & !0xfff),
        _ => 0,
    }
}

/// The report of `crash` for `image`, as lines for stderr: the frames,
/// or why there are none.
pub fn report(image: &Path, debug_dir: Option<&Path>, crash: &Crash) -> Vec<String> {
    report_with(image, &Symbolizer::open(image, debug_dir), crash)
}

/// [`report`] with the debug files already opened (a log may hold many
/// crash lines: they are read once).
fn report_with(image: &Path, symbols: &Result<Symbolizer, String>, crash: &Crash) -> Vec<String> {
    let mut lines = vec![format!(
        "{}; symbols from {}):",
        crash.kind.title(),
        image.display()
    )];
    match symbols {
        Ok(s) => {
            lines.extend(s.describe(crash).into_iter().map(|l| format!("  {l}")));
            lines.extend(s.missing.iter().map(|m| format!("  note: {m}")));
        }
        Err(e) => lines.push(format!("  cannot symbolize: {e}")),
    }
    lines
}

/// `cargo unikernel symbolize`: copy `input` to `output`, with the report
/// of each crash line after it, and of each std backtrace after its last
/// frame line. Returns how many it expanded.
pub fn filter(
    image: &Path,
    debug_dir: Option<&Path>,
    input: impl std::io::BufRead,
    mut output: impl std::io::Write,
) -> Result<usize, String> {
    let mut count = 0;
    let mut symbols = None;
    let mut backtrace = BacktraceLines::default();
    let mut expand = |crash: &Crash, output: &mut dyn std::io::Write| {
        let symbols = symbols.get_or_insert_with(|| Symbolizer::open(image, debug_dir));
        for l in report_with(image, symbols, crash) {
            writeln!(output, "{l}").map_err(|e| format!("writing: {e}"))?;
        }
        count += 1;
        Ok::<_, String>(())
    };
    for line in input.split(b'\n') {
        let line = line.map_err(|e| format!("reading the log: {e}"))?;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\r');
        if let Some(bt) = backtrace.line(text) {
            expand(&bt, &mut output)?;
        }
        output
            .write_all(&line)
            .and_then(|_| output.write_all(b"\n"))
            .map_err(|e| format!("writing: {e}"))?;
        match parse_line(text) {
            None => {}
            Some(Ok(crash)) => expand(&crash, &mut output)?,
            Some(Err(e)) => {
                writeln!(output, "  (cannot read this crash line: {e})")
                    .map_err(|e| format!("writing: {e}"))?;
            }
        }
    }
    if let Some(bt) = backtrace.finish() {
        expand(&bt, &mut output)?;
    }
    Ok(count)
}

/// The crash line and the std backtrace the last kvm run's console showed.
static CONSOLE_CRASH: std::sync::Mutex<Vec<Crash>> = std::sync::Mutex::new(Vec::new());

/// Takes what [`CrashWatch::publish`] left: the last crash line's crash and
/// the last backtrace, each if seen.
pub fn take_console_crashes() -> Vec<Crash> {
    std::mem::take(&mut *CONSOLE_CRASH.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Watches a console stream for the crash line and std's backtraces
/// (kvm: QEMU's output passes through it; hvt: the monitor's console
/// writes), keeping the last of each.
#[derive(Default)]
pub struct CrashWatch {
    line: Vec<u8>,
    pub last: Option<Crash>,
    pub backtrace: Option<Crash>,
    lines: BacktraceLines,
}

impl CrashWatch {
    /// Longest line looked at (a crash line is under 800 bytes).
    const MAX_LINE: usize = 4096;

    pub fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                let text = String::from_utf8_lossy(&self.line);
                let text = text.trim_end_matches('\r');
                if let Some(bt) = self.lines.line(text) {
                    self.backtrace = Some(bt);
                }
                if let Some(Ok(c)) = parse_line(text) {
                    self.last = Some(c);
                }
                self.line.clear();
            } else if self.line.len() < Self::MAX_LINE {
                self.line.push(b);
            }
        }
    }

    /// The stream ended: what it showed, for [`take_console_crashes`].
    pub fn publish(mut self) {
        self.feed(b"\n");
        if let Some(bt) = self.lines.finish() {
            self.backtrace = Some(bt);
        }
        let mut all = CONSOLE_CRASH.lock().unwrap_or_else(|e| e.into_inner());
        all.extend(self.last.into_iter().chain(self.backtrace));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_lines_parse() {
        let c = parse_line("unikernel-crash v1 fault app=0x137000 0x141c2a 0x1420f1 0x13d002~\r")
            .unwrap()
            .unwrap();
        assert_eq!(
            c,
            Crash {
                kind: Kind::Fault,
                app_base: Some(0x137000),
                frames: vec![(0x141c2a, false), (0x1420f1, false), (0x13d002, true)],
            }
        );
        // Anywhere in a line (a cloud console's prefix).
        let c = parse_line("[  1.2] unikernel-crash v1 panic 0x10")
            .unwrap()
            .unwrap();
        assert_eq!(c.kind, Kind::Panic);
        assert_eq!(c.app_base, None);
        assert!(parse_line("hello").is_none());
        assert!(parse_line("unikernel-crash v2 fault 0x1").unwrap().is_err());
        assert!(parse_line("unikernel-crash v1 oops 0x1").unwrap().is_err());
        assert!(parse_line("unikernel-crash v1 fault 0xzz")
            .unwrap()
            .is_err());
    }

    #[test]
    fn the_watch_keeps_the_last_crash_across_chunks() {
        let mut w = CrashWatch::default();
        w.feed(b"boot\nunikernel-crash v1 fa");
        assert!(w.last.is_none());
        w.feed(b"ult app=0x1000 0x2000\nmore\n");
        assert_eq!(w.last.as_ref().unwrap().frames, [(0x2000, false)]);
    }

    #[test]
    fn std_backtrace_frames_are_gathered_block_by_block() {
        assert_eq!(
            parse_backtrace_frame("  12:           0x16dfff - <unknown>"),
            Some((12, 0x16dfff))
        );
        assert_eq!(parse_backtrace_frame("   0: std::rt::lang_start"), None);
        assert_eq!(parse_backtrace_frame("note: 0x10 - <unknown>"), None);
        let mut w = CrashWatch::default();
        w.feed(b"stack backtrace:\n   0:   0x10 - <unknown>\n   1:   0x20 - <unknown>\r\n");
        assert!(w.backtrace.is_none(), "the block has not ended yet");
        // A new block (frame 0 again) ends the first.
        w.feed(b"   0:   0x30 - <unknown>\n");
        let first = w.backtrace.take().unwrap();
        assert_eq!(first.kind, Kind::Backtrace);
        assert_eq!(first.frames, [(0x10, false), (0x20, false)]);
        // A frame out of order ends the block and starts none.
        w.feed(b"   5:   0x40 - <unknown>\nafter\n");
        assert_eq!(w.backtrace.take().unwrap().frames, [(0x30, false)]);
        w.feed(b"   0:   0x50 - <unknown>");
        w.publish();
        let got = take_console_crashes();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].frames, [(0x50, false)]);
    }

    #[test]
    fn the_log_filter_puts_a_backtraces_report_after_its_last_frame() {
        let log = b"stack backtrace:\n   0:   0x10 - <unknown>\n   1:   0x20 - <unknown>\nexit\n";
        let mut out = Vec::new();
        let n = filter(Path::new("/nonexistent/image"), None, &log[..], &mut out).unwrap();
        assert_eq!(n, 1);
        let out = String::from_utf8(out).unwrap();
        let report = out
            .find("panic backtrace (RUST_BACKTRACE; symbols from")
            .unwrap();
        assert!(report > out.find("0x20 - <unknown>").unwrap(), "{out}");
        assert!(report < out.find("exit").unwrap(), "{out}");
        assert!(
            out.contains("cannot symbolize: cannot read /nonexistent/image"),
            "{out}"
        );
    }
}
