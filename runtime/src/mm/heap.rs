//! The kernel heap: a buddy allocator (`buddy_system_allocator`) that grows
//! by claiming contiguous frames when it runs out.

use super::frame::{FRAMES, FRAME_SIZE};
use buddy_system_allocator::Heap;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use spin::Mutex;

pub struct KernelHeap {
    heap: Mutex<Heap<32>>,
}

/// Smallest growth step.
const MIN_GROWTH: u64 = 64 * 1024;

impl KernelHeap {
    pub const fn new() -> KernelHeap {
        KernelHeap {
            heap: Mutex::new(Heap::empty()),
        }
    }

    fn grow(&self, heap: &mut Heap<32>, layout: Layout) -> bool {
        let need = (layout.size().max(layout.align()) as u64).next_power_of_two() * 2;
        let bytes = need.max(MIN_GROWTH);
        let frames = bytes.div_ceil(FRAME_SIZE);
        let Some(start) = FRAMES.lock().alloc_contiguous(frames) else {
            return false;
        };
        // SAFETY: the frames are identity-mapped RAM that nobody else owns.
        unsafe { heap.add_to_heap(start as usize, (start + frames * FRAME_SIZE) as usize) };
        true
    }

    /// Bytes in use / bytes owned (for reports).
    pub fn stats(&self) -> (usize, usize) {
        let h = self.heap.lock();
        (h.stats_alloc_actual(), h.stats_total_bytes())
    }
}

impl Default for KernelHeap {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: the buddy heap is behind a lock; memory added to it is owned by it.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut heap = self.heap.lock();
        loop {
            if let Ok(p) = heap.alloc(layout) {
                return p.as_ptr();
            }
            if !self.grow(&mut heap, layout) {
                return core::ptr::null_mut();
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            self.heap.lock().dealloc(p, layout)
        }
    }
}
