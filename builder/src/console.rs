//! The kvm guest's console as `cargo unikernel run` relays it: COM1 bytes
//! go to stdout as they arrive, except the guest's last line
//! `[unikernel] exit N`, which is taken out and becomes the exit code. The
//! line is recognized only at the start of a line and only when nothing
//! follows it, so an app printing the same text mid-run is relayed intact.
use std::io::Write;

/// The text of the guest's exit line before the code.
pub const EXIT_PREFIX: &[u8] = b"[unikernel] exit ";

/// A streaming filter over the COM1 bytes.
#[derive(Debug)]
pub struct ExitLineFilter {
    /// Bytes of the current line held back because they may be the exit line.
    partial: Vec<u8>,
    /// A complete exit line (with its newline) and its code, held back until
    /// we know whether anything follows it.
    held: Option<(Vec<u8>, u8)>,
    at_line_start: bool,
}

impl Default for ExitLineFilter {
    fn default() -> Self {
        ExitLineFilter {
            partial: Vec::new(),
            held: None,
            at_line_start: true,
        }
    }
}

/// `[unikernel] exit N` (N = 0..255, an optional `\r`) -> N.
pub fn parse_exit_line(line: &[u8]) -> Option<u8> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.strip_prefix(EXIT_PREFIX)?;
    if digits.is_empty() || digits.len() > 3 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Could `bytes` (a line start without its newline) still become an exit line?
fn may_become_exit_line(bytes: &[u8]) -> bool {
    let n = bytes.len().min(EXIT_PREFIX.len());
    if bytes[..n] != EXIT_PREFIX[..n] {
        return false;
    }
    let rest = &bytes[n..];
    let (digits, cr) = match rest.strip_suffix(b"\r") {
        Some(d) => (d, true),
        None => (rest, false),
    };
    digits.len() <= 3 && digits.iter().all(u8::is_ascii_digit) && (!cr || !digits.is_empty())
}

impl ExitLineFilter {
    /// Relay `data` to `out`, holding back what may be the exit line.
    pub fn feed(&mut self, data: &[u8], out: &mut impl Write) {
        let mut rest = data;
        while !rest.is_empty() {
            if let Some((line, _)) = self.held.take() {
                // Something follows the exit line: it was the app's text.
                let _ = out.write_all(&line);
            }
            let (chunk, newline) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..=i], true),
                None => (rest, false),
            };
            rest = &rest[chunk.len()..];
            if !self.at_line_start && self.partial.is_empty() {
                // The middle of a line already relayed.
                let _ = out.write_all(chunk);
                self.at_line_start = newline;
                continue;
            }
            self.partial.extend_from_slice(chunk);
            if newline {
                let line = std::mem::take(&mut self.partial);
                match parse_exit_line(&line) {
                    Some(code) => self.held = Some((line, code)),
                    None => {
                        let _ = out.write_all(&line);
                    }
                }
                self.at_line_start = true;
            } else if !may_become_exit_line(&self.partial) {
                let _ = out.write_all(&std::mem::take(&mut self.partial));
                self.at_line_start = false;
            }
        }
        let _ = out.flush();
    }

    /// End of the stream: the exit code if the last line was the exit line.
    /// Anything else still held back is relayed.
    pub fn finish(mut self, out: &mut impl Write) -> Option<u8> {
        let mut code = self.held.take().map(|(_, code)| code);
        if !self.partial.is_empty() {
            match parse_exit_line(&self.partial) {
                // The exit line without its newline.
                Some(c) if code.is_none() => code = Some(c),
                _ => {
                    if let Some(c) = code.take() {
                        let _ = writeln!(out, "[unikernel] exit {c}");
                    }
                    let _ = out.write_all(&self.partial);
                }
            }
        }
        let _ = out.flush();
        code
    }
}

/// The exit code of `run` when the guest printed no exit line: from QEMU's
/// isa-debug-exit status, or 255 with the reason.
pub fn exit_without_line(status: Option<i32>) -> (u8, String) {
    match status {
        Some(s) if s > 1 && s % 2 == 1 && s <= 511 => (
            ((s - 1) >> 1) as u8,
            String::new(),
        ),
        Some(1) => (
            125,
            "QEMU exited with status 1 and the guest printed no exit line: QEMU could not start the guest (its message is above), or the guest wrote 0 to isa-debug-exit without an exit line".to_string(),
        ),
        Some(s) => (
            255,
            format!("the guest stopped without an exit line (QEMU exit status {s}: the guest reset, powered off or crashed)"),
        ),
        None => (
            255,
            "the guest stopped without an exit line (QEMU was killed by a signal)".to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (String, Option<u8>) {
        let mut f = ExitLineFilter::default();
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, &mut out);
        }
        let code = f.finish(&mut out);
        (String::from_utf8(out).unwrap(), code)
    }

    #[test]
    fn exit_line_is_taken_out() {
        assert_eq!(
            run(&[b"hello\n[unikernel] exit 3\n"]),
            ("hello\n".into(), Some(3))
        );
        assert_eq!(run(&[b"[unikernel] exit 0\r\n"]), ("".into(), Some(0)));
        assert_eq!(
            run(&[b"x\n[unikernel] exit 255"]),
            ("x\n".into(), Some(255))
        );
    }

    #[test]
    fn split_anywhere() {
        let text = b"line one\npartial [unikernel] exit 4\nlast\n[unikernel] exit 42\n";
        for cut in 0..text.len() {
            for cut2 in cut..text.len() {
                let (out, code) = run(&[&text[..cut], &text[cut..cut2], &text[cut2..]]);
                assert_eq!(
                    (out.as_str(), code),
                    ("line one\npartial [unikernel] exit 4\nlast\n", Some(42)),
                    "cuts {cut} {cut2}"
                );
            }
        }
    }

    #[test]
    fn an_exit_line_followed_by_more_output_is_the_apps() {
        assert_eq!(
            run(&[b"[unikernel] exit 1\n", b"more\n", b"[unikernel] exit 2\n"]),
            ("[unikernel] exit 1\nmore\n".into(), Some(2))
        );
        assert_eq!(
            run(&[b"[unikernel] exit 1\n[unikernel] exit 2\n"]),
            ("[unikernel] exit 1\n".into(), Some(2))
        );
    }

    #[test]
    fn lookalikes_are_relayed() {
        for text in [
            "[unikernel] exit 256\n",
            "[unikernel] exit -1\n",
            "[unikernel] exit \n",
            "[unikernel] exit 1x\n",
            "[unikernel] exit 1",
        ] {
            let want = if text == "[unikernel] exit 1" {
                ("".to_string(), Some(1))
            } else {
                (text.to_string(), None)
            };
            assert_eq!(run(&[text.as_bytes()]), want, "{text:?}");
        }
        assert_eq!(run(&[b"prompt> "]), ("prompt> ".into(), None));
    }

    #[test]
    fn partial_lines_are_not_delayed() {
        let mut f = ExitLineFilter::default();
        let mut out = Vec::new();
        f.feed(b"prompt> ", &mut out);
        assert_eq!(out, b"prompt> ");
        f.feed(b"[unik", &mut out);
        assert_eq!(out, b"prompt> [unik", "mid-line: relayed at once");
        f.feed(b"\n[unik", &mut out);
        assert_eq!(
            out, b"prompt> [unik\n",
            "a line start that may be the exit line waits"
        );
    }

    #[test]
    fn fallback_codes() {
        assert_eq!(exit_without_line(Some(7)).0, 3);
        assert_eq!(exit_without_line(Some(511)).0, 255);
        assert_eq!(exit_without_line(Some(1)).0, 125);
        let (code, msg) = exit_without_line(Some(0));
        assert_eq!(code, 255);
        assert!(
            msg.contains("the guest stopped without an exit line"),
            "{msg}"
        );
        assert_eq!(exit_without_line(None).0, 255);
    }
}
