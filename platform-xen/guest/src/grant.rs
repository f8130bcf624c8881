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
//! A guest has one table, shared by every split driver (netfront,
//! blkfront): [`GRANTS`] holds it, set up on first use by
//! `Xen::grant_table`, which hands out a guard ([`SharedGrants`]) that
//! keeps it locked while a driver allocates or ends grants. Drivers take it
//! at boot only (never from the event upcall), one at a time.
//!
//! The entry logic and the shared cell are host-tested over ordinary memory.

use crate::abi::gnttab::*;
use crate::abi::{GrantEntryV1, GrantOpError};
use core::cell::UnsafeCell;
use core::sync::atomic::{fence, AtomicBool, AtomicU16, Ordering};

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

/// The guest's one grant table, behind a lock (see the module docs).
pub struct GrantCell {
    busy: AtomicBool,
    table: UnsafeCell<Option<GrantTable>>,
}

// SAFETY: the table is reached only through a `SharedGrants` guard, and the
// `busy` flag lets at most one guard exist at a time.
unsafe impl Sync for GrantCell {}

impl GrantCell {
    pub const fn new() -> GrantCell {
        GrantCell {
            busy: AtomicBool::new(false),
            table: UnsafeCell::new(None),
        }
    }

    /// Lock the table, building it with `init` on first use. Fails with
    /// `init`'s error (the next call tries again) or with
    /// [`GrantOpError::Busy`] while a guard is alive.
    pub fn get_or_init(
        &'static self,
        init: impl FnOnce() -> Result<GrantTable, GrantOpError>,
    ) -> Result<SharedGrants, GrantOpError> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(GrantOpError::Busy);
        }
        // SAFETY: `busy` is ours: nobody else looks at the slot.
        let slot = unsafe { &mut *self.table.get() };
        if slot.is_none() {
            match init() {
                Ok(t) => *slot = Some(t),
                Err(e) => {
                    self.busy.store(false, Ordering::Release);
                    return Err(e);
                }
            }
        }
        Ok(SharedGrants { cell: self })
    }
}

impl Default for GrantCell {
    fn default() -> Self {
        GrantCell::new()
    }
}

/// The guest's grant table (`Xen::grant_table` sets it up).
pub static GRANTS: GrantCell = GrantCell::new();

/// The locked shared table; unlocks when dropped.
pub struct SharedGrants {
    cell: &'static GrantCell,
}

impl SharedGrants {
    fn table(&self) -> *mut GrantTable {
        // SAFETY: a guard exists only once the slot holds a table
        // (`get_or_init`), and the slot is never emptied.
        match unsafe { &mut *self.cell.table.get() } {
            Some(t) => t,
            None => unreachable!("a SharedGrants guard without a table"),
        }
    }
}

impl core::ops::Deref for SharedGrants {
    type Target = GrantTable;
    fn deref(&self) -> &GrantTable {
        // SAFETY: the guard holds the lock (see `table`).
        unsafe { &*self.table() }
    }
}

impl core::ops::DerefMut for SharedGrants {
    fn deref_mut(&mut self) -> &mut GrantTable {
        // SAFETY: the guard holds the lock, and `&mut self` makes this the
        // only reference through it.
        unsafe { &mut *self.table() }
    }
}

impl Drop for SharedGrants {
    fn drop(&mut self) {
        self.cell.busy.store(false, Ordering::Release);
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
    fn shared_table_is_built_once_and_locked() {
        static CELL: GrantCell = GrantCell::new();
        static mut MEM: [GrantEntryV1; 64] = [GrantEntryV1 {
            flags: 0,
            domid: 0,
            frame: 0,
        }; 64];
        // A failing setup leaves the cell unlocked and empty.
        assert_eq!(
            CELL.get_or_init(|| Err(GrantOpError::Status(-1))).err(),
            Some(GrantOpError::Status(-1))
        );
        let mut builds = 0;
        let mut a = CELL
            .get_or_init(|| {
                builds += 1;
                // SAFETY: the static array outlives the table; only this test uses it.
                Ok(unsafe { GrantTable::new(core::ptr::addr_of_mut!(MEM).cast(), 64) })
            })
            .unwrap();
        let r1 = a.grant_access(0, 1, false).unwrap();
        // A second user while the first holds it: refused, not a second table.
        assert_eq!(
            CELL.get_or_init(|| unreachable!()).err(),
            Some(GrantOpError::Busy)
        );
        drop(a);
        // Netfront and blkfront allocate from the same table.
        let mut b = CELL.get_or_init(|| unreachable!()).unwrap();
        let r2 = b.grant_access(0, 2, false).unwrap();
        assert_eq!(r2, r1 + 1);
        assert_eq!(builds, 1);
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
