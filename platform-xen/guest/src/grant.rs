//! Grant tables (version 1): how a PV guest lets another domain (the
//! backend of a split driver in dom0) access one of its pages.
//!
//! The table is an array of 8-byte entries `{flags: u16, domid: u16,
//! frame: u32}` in pages Xen gives the guest (`GNTTABOP_setup_table`
//! returns their machine frames; the guest maps them). To grant page F to
//! domain D: write `domid = D` and `frame = mfn(F)`, then — after a write
//! barrier — `flags = GTF_permit_access` (| `GTF_readonly`). The grant
//! *reference* (the entry index) travels to the backend through xenstore
//! or a ring. To end access, clear `flags` with a compare-and-swap that
//! fails if the backend has it mapped (`GTF_reading`/`GTF_writing` set).
//! Refs 0..8 are reserved for the toolstack.
//!
//! The entry logic is host-tested over ordinary memory.

use crate::abi::gnttab::*;
use crate::abi::GrantEntryV1;
use core::sync::atomic::{fence, AtomicU16, Ordering};

/// A grant reference: index into the table.
pub type GrantRef = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// All entries are in use.
    Full,
    /// The reference is out of range or reserved.
    BadRef,
    /// The other domain still has the page mapped.
    InUse,
}

/// The entry that grants `frame` to `domid`.
pub fn encode(domid: u16, frame: u32, readonly: bool) -> GrantEntryV1 {
    GrantEntryV1 {
        flags: GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 },
        domid,
        frame,
    }
}

/// A v1 grant table in mapped memory, with a simple allocator of references.
pub struct GrantTable {
    entries: *mut GrantEntryV1,
    len: u32,
    /// Bit n set = ref n in use (refs up to 64 * USED_WORDS).
    used: [u64; USED_WORDS],
}

const USED_WORDS: usize = 8;

// SAFETY: one vCPU; entries are touched with volatile/atomic accesses.
unsafe impl Send for GrantTable {}

impl GrantTable {
    /// # Safety
    /// `entries` must point at `len` mapped grant entries that stay mapped.
    pub unsafe fn new(entries: *mut GrantEntryV1, len: u32) -> GrantTable {
        let mut used = [0u64; USED_WORDS];
        used[0] = (1u64 << NR_RESERVED_ENTRIES) - 1;
        GrantTable {
            entries,
            len: len.min((USED_WORDS * 64) as u32),
            used,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.len
    }

    fn flags(&self, r: GrantRef) -> &AtomicU16 {
        // SAFETY: r < len (checked by callers); flags is the first u16 of
        // an 8-byte aligned entry, shared with Xen, accessed atomically.
        unsafe {
            &*(core::ptr::addr_of_mut!((*self.entries.add(r as usize)).flags) as *const AtomicU16)
        }
    }

    /// Read an entry (for checks and tests).
    pub fn entry(&self, r: GrantRef) -> Option<GrantEntryV1> {
        // SAFETY: bounds checked.
        (r < self.len).then(|| unsafe { self.entries.add(r as usize).read_volatile() })
    }

    /// Grant `domid` access to machine frame `frame`; returns the reference.
    pub fn grant_access(
        &mut self,
        domid: u16,
        frame: u32,
        readonly: bool,
    ) -> Result<GrantRef, GrantError> {
        let r = (0..self.len)
            .find(|&r| self.used[r as usize / 64] & (1 << (r % 64)) == 0)
            .ok_or(GrantError::Full)?;
        self.used[r as usize / 64] |= 1 << (r % 64);
        let e = encode(domid, frame, readonly);
        // SAFETY: r < len; the entry is ours (flags 0: Xen does not look at it).
        unsafe {
            let p = self.entries.add(r as usize);
            core::ptr::addr_of_mut!((*p).domid).write_volatile(e.domid);
            core::ptr::addr_of_mut!((*p).frame).write_volatile(e.frame);
        }
        // domid and frame must be visible before the entry becomes valid.
        fence(Ordering::Release);
        self.flags(r).store(e.flags, Ordering::Release);
        Ok(r)
    }

    /// End access through `r`; fails (and keeps the grant) while the other
    /// domain has the page mapped.
    pub fn end_access(&mut self, r: GrantRef) -> Result<(), GrantError> {
        if r < NR_RESERVED_ENTRIES
            || r >= self.len
            || self.used[r as usize / 64] & (1 << (r % 64)) == 0
        {
            return Err(GrantError::BadRef);
        }
        let f = self.flags(r);
        let mut cur = f.load(Ordering::Acquire);
        loop {
            if cur & (GTF_READING | GTF_WRITING) != 0 {
                return Err(GrantError::InUse);
            }
            match f.compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.used[r as usize / 64] &= !(1 << (r % 64));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_encoding_matches_grant_table_h() {
        let e = encode(0, 0x1234_5678, false);
        assert_eq!(e.flags, 1);
        let ro = encode(7, 1, true);
        assert_eq!(ro.flags, 1 | 4);
        // Byte layout: flags, domid, frame (little endian).
        // SAFETY: GrantEntryV1 is 8 bytes of plain integers.
        let bytes: [u8; 8] = unsafe { core::mem::transmute(encode(0x0102, 0x0a0b0c0d, true)) };
        assert_eq!(bytes, [5, 0, 2, 1, 0x0d, 0x0c, 0x0b, 0x0a]);
    }

    #[test]
    fn grant_and_end_access() {
        let mut mem = vec![GrantEntryV1::default(); 512];
        // SAFETY: the vector outlives the table.
        let mut t = unsafe { GrantTable::new(mem.as_mut_ptr(), 512) };
        let r = t.grant_access(0, 0xabc, false).unwrap();
        assert_eq!(
            r, NR_RESERVED_ENTRIES,
            "first free ref after the reserved ones"
        );
        assert_eq!(t.entry(r), Some(encode(0, 0xabc, false)));
        let r2 = t.grant_access(3, 0xdef, true).unwrap();
        assert_eq!(r2, r + 1);
        t.end_access(r).unwrap();
        assert_eq!(t.entry(r).unwrap().flags, 0);
        // The freed ref is reused.
        assert_eq!(t.grant_access(1, 1, false).unwrap(), r);
        assert_eq!(t.end_access(2), Err(GrantError::BadRef));
        assert_eq!(t.end_access(100), Err(GrantError::BadRef));
        let _ = t;
        assert_eq!(mem[r2 as usize].domid, 3);
    }

    #[test]
    fn mapped_grant_cannot_be_ended() {
        let mut mem = vec![GrantEntryV1::default(); 16];
        // SAFETY: the vector outlives the table.
        let mut t = unsafe { GrantTable::new(mem.as_mut_ptr(), 16) };
        let r = t.grant_access(0, 5, false).unwrap();
        // The backend maps it: Xen sets GTF_reading.
        // SAFETY: test-only poke at the shared entry.
        unsafe { (*mem.as_mut_ptr().add(r as usize)).flags |= GTF_READING };
        assert_eq!(t.end_access(r), Err(GrantError::InUse));
        // SAFETY: as above.
        unsafe { (*mem.as_mut_ptr().add(r as usize)).flags &= !GTF_READING };
        assert_eq!(t.end_access(r), Ok(()));
    }

    #[test]
    fn table_fills_up() {
        let mut mem = vec![GrantEntryV1::default(); 10];
        // SAFETY: the vector outlives the table.
        let mut t = unsafe { GrantTable::new(mem.as_mut_ptr(), 10) };
        t.grant_access(0, 1, false).unwrap();
        t.grant_access(0, 2, false).unwrap();
        assert_eq!(t.grant_access(0, 3, false), Err(GrantError::Full));
    }
}
