//! The storage lamfat reads and writes: a byte stream over the block cache,
//! plus the clock lamfat stamps directory entries with.
//!
//! Writes to the FAT reserved region (boot sector, FSInfo, backup boot
//! sector) are dropped: the only things lamfat writes there while mounted
//! are the "volume dirty" flag and the FSInfo free-cluster hints. Under the
//! journal a volume is never half-updated, so the dirty flag has no job;
//! and the FSInfo hints stay "unknown" (as `host::create` writes them), so
//! `fsck.fat` never finds a stale count and lamfat counts free clusters at
//! mount.

use crate::cache::BlockCache;
use alloc::sync::Arc;
use lamfat::{Date, DateTime, IoBase, IoError, Read, Seek, SeekFrom, Time, TimeProvider, Write};
use spin::Mutex;
use unikernel_runtime::errno::*;

/// An I/O error for lamfat: the errno the device or cache gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoErr(pub Errno);

impl IoError for IoErr {
    fn is_interrupted(&self) -> bool {
        false
    }
    fn new_unexpected_eof_error() -> Self {
        IoErr(EIO)
    }
    fn new_write_zero_error() -> Self {
        IoErr(ENOSPC)
    }
}

/// The volume as lamfat sees it.
pub struct VolumeIo {
    cache: Arc<Mutex<BlockCache>>,
    pos: u64,
    len: u64,
    reserved_bytes: u64,
}

impl VolumeIo {
    pub fn new(cache: Arc<Mutex<BlockCache>>, reserved_bytes: u64) -> VolumeIo {
        let len = cache.lock().volume_bytes();
        VolumeIo {
            cache,
            pos: 0,
            len,
            reserved_bytes,
        }
    }
}

impl IoBase for VolumeIo {
    type Error = IoErr;
}

impl Read for VolumeIo {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoErr> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        self.cache
            .lock()
            .read(self.pos, &mut buf[..n])
            .map_err(IoErr)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for VolumeIo {
    fn write(&mut self, buf: &[u8]) -> Result<usize, IoErr> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        let end = self.pos + n as u64;
        // Drop the part inside the reserved region (see the module docs).
        let skip = self.reserved_bytes.saturating_sub(self.pos).min(n as u64) as usize;
        if skip < n {
            self.cache
                .lock()
                .write(self.pos + skip as u64, &buf[skip..n])
                .map_err(IoErr)?;
        }
        self.pos = end;
        Ok(n)
    }
    fn flush(&mut self) -> Result<(), IoErr> {
        Ok(())
    }
}

impl Seek for VolumeIo {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64, IoErr> {
        let new = match pos {
            SeekFrom::Start(x) => Some(x),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) if p <= self.len => {
                self.pos = p;
                Ok(p)
            }
            _ => Err(IoErr(EINVAL)),
        }
    }
}

/// Wall-clock seconds since the Unix epoch.
pub type NowFn = fn() -> i64;

/// lamfat's clock, from a [`NowFn`].
#[derive(Clone, Copy)]
pub struct Clock(pub NowFn);

impl core::fmt::Debug for Clock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Clock")
    }
}

impl TimeProvider for Clock {
    fn get_current_date(&self) -> Date {
        to_fat((self.0)()).date
    }
    fn get_current_date_time(&self) -> DateTime {
        to_fat((self.0)())
    }
}

// Civil-date conversions (Howard Hinnant's days_from_civil algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// FAT stores 1980-01-01 .. 2107-12-31 (local time; we store UTC).
const FAT_MIN: i64 = 315_532_800;
const FAT_MAX: i64 = 4_354_819_199;

/// Unix seconds to a FAT date and time (clamped to FAT's range).
pub fn to_fat(unix: i64) -> DateTime {
    let t = unix.clamp(FAT_MIN, FAT_MAX);
    let (y, m, d) = civil_from_days(t.div_euclid(86400));
    let s = t.rem_euclid(86400);
    DateTime::new(
        Date::new(y as u16, m as u16, d as u16),
        Time::new((s / 3600) as u16, (s / 60 % 60) as u16, (s % 60) as u16, 0),
    )
}

/// A FAT date and time to Unix seconds.
pub fn from_fat(dt: DateTime) -> i64 {
    let days = days_from_civil(
        i64::from(dt.date.year),
        i64::from(dt.date.month),
        i64::from(dt.date.day),
    );
    days * 86400
        + i64::from(dt.time.hour) * 3600
        + i64::from(dt.time.min) * 60
        + i64::from(dt.time.sec)
}

/// A FAT date (midnight) to Unix seconds.
pub fn from_fat_date(d: Date) -> i64 {
    days_from_civil(i64::from(d.year), i64::from(d.month), i64::from(d.day)) * 86400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat_time_round_trip() {
        // 2024-02-29 13:45:58 UTC (FAT keeps even seconds).
        let t = 1_709_214_358;
        let dt = to_fat(t);
        assert_eq!((dt.date.year, dt.date.month, dt.date.day), (2024, 2, 29));
        assert_eq!(from_fat(dt), t);
        assert_eq!(from_fat(to_fat(0)), FAT_MIN);
    }
}
