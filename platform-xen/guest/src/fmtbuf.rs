//! A fixed-size text buffer for `write!` without an allocator (messages
//! are formatted whole, then written to the console in one go).

/// Collects formatted text; what does not fit is cut off.
pub struct FmtBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> FmtBuf<N> {
    pub const fn new() -> Self {
        FmtBuf {
            buf: [0; N],
            len: 0,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl<const N: usize> Default for FmtBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Write for FmtBuf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Format Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC, proleptic Gregorian).
pub fn utc(secs: u64) -> FmtBuf<19> {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let mut out = FmtBuf::new();
    let _ = core::fmt::Write::write_fmt(
        &mut out,
        format_args!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        ),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn cuts_off_at_capacity() {
        let mut b = FmtBuf::<5>::new();
        write!(b, "hello world").unwrap();
        assert_eq!(b.as_bytes(), b"hello");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0).as_bytes(), b"1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400).as_bytes(), b"2000-02-29 00:00:00");
        assert_eq!(utc(1_700_000_000).as_bytes(), b"2023-11-14 22:13:20");
    }
}
