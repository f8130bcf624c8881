//! The physical frame allocator.
//!
//! Frames come from the free ranges the platform reported: first from a
//! per-range bump pointer, then from an intrusive free list (a freed frame
//! holds the address of the next free one). Every frame handed out is zeroed.
//! Contiguous runs (for the kernel heap) come from the bump ranges only.

use crate::platform::{MemRange, MAX_FREE_RANGES};
use spin::Mutex;

pub const FRAME_SIZE: u64 = 4096;

pub struct FrameAllocator {
    ranges: [MemRange; MAX_FREE_RANGES],
    count: usize,
    free_head: u64,
    free_frames: u64,
    total_frames: u64,
}

impl FrameAllocator {
    pub const fn empty() -> FrameAllocator {
        FrameAllocator {
            ranges: [MemRange { start: 0, end: 0 }; MAX_FREE_RANGES],
            count: 0,
            free_head: 0,
            free_frames: 0,
            total_frames: 0,
        }
    }

    pub fn add_range(&mut self, r: MemRange) {
        let start = (r.start + FRAME_SIZE - 1) & !(FRAME_SIZE - 1);
        let end = r.end & !(FRAME_SIZE - 1);
        if end > start && self.count < MAX_FREE_RANGES {
            self.ranges[self.count] = MemRange { start, end };
            self.count += 1;
            self.total_frames += (end - start) / FRAME_SIZE;
        }
    }

    /// One zeroed frame.
    pub fn alloc(&mut self) -> Option<u64> {
        let frame = if self.free_head != 0 {
            let f = self.free_head;
            // SAFETY: free frames are identity-mapped RAM owned by the allocator;
            // the first word holds the next free frame.
            self.free_head = unsafe { (f as *const u64).read() };
            self.free_frames -= 1;
            f
        } else {
            self.alloc_contiguous(1)?
        };
        // SAFETY: the frame is ours now and identity-mapped writable.
        unsafe { core::ptr::write_bytes(frame as *mut u8, 0, FRAME_SIZE as usize) };
        Some(frame)
    }

    /// `n` physically contiguous frames (not zeroed) from the bump ranges.
    pub fn alloc_contiguous(&mut self, n: u64) -> Option<u64> {
        let bytes = n.checked_mul(FRAME_SIZE)?;
        for r in self.ranges[..self.count].iter_mut() {
            if r.end - r.start >= bytes {
                let f = r.start;
                r.start += bytes;
                return Some(f);
            }
        }
        None
    }

    pub fn free(&mut self, frame: u64) {
        // SAFETY: the caller gives back a frame it got from us and no longer maps.
        unsafe { (frame as *mut u64).write(self.free_head) };
        self.free_head = frame;
        self.free_frames += 1;
    }

    /// Frames still available (bump + free list).
    pub fn available(&self) -> u64 {
        self.free_frames
            + self.ranges[..self.count]
                .iter()
                .map(|r| (r.end - r.start) / FRAME_SIZE)
                .sum::<u64>()
    }

    pub fn total(&self) -> u64 {
        self.total_frames
    }
}

pub static FRAMES: Mutex<FrameAllocator> = Mutex::new(FrameAllocator::empty());

pub fn alloc_frame() -> Option<u64> {
    FRAMES.lock().alloc()
}

pub fn free_frame(frame: u64) {
    FRAMES.lock().free(frame)
}
