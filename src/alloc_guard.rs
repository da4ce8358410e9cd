//! The global allocator: the system allocator, except that huge single allocations are served
//! by lazily committed anonymous mappings.
//!
//! Why: the protocol codec sizes a `Vec` from an array length read off the wire before it
//! decodes any element, so a 10-byte request can ask for hundreds of gigabytes. The system
//! allocator would fail and the process would abort. A `MAP_NORESERVE` mapping reserves only
//! address space; the decoder then fails on the first missing element, the vector is dropped,
//! and the connection is closed with nothing committed. No legitimate allocation in the
//! broker comes near the threshold (frames are capped at `socket.request.max.bytes`).

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at or above this size are mapped rather than malloc'ed.
const HUGE: usize = 1 << 30;

pub struct GuardedAllocator;

unsafe fn map_huge(layout: Layout) -> *mut u8 {
    // Mappings are page aligned, which satisfies any alignment up to a page.
    if layout.align() > 4096 {
        return std::ptr::null_mut();
    }
    // SAFETY: an anonymous private mapping with no address hint has no preconditions.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            layout.size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

unsafe impl GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE {
            unsafe { map_huge(layout) }
        } else {
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE {
            // Fresh anonymous mappings are zero-filled.
            unsafe { map_huge(layout) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= HUGE {
            // SAFETY: `ptr` came from `map_huge` with this same size.
            unsafe {
                libc::munmap(ptr as *mut libc::c_void, layout.size());
            }
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < HUGE && new_size < HUGE {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Crossing or beyond the threshold: allocate, copy, free, each through this allocator.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn absurd_capacity_does_not_abort() {
        // 2^31 elements of 72 bytes, as a hostile array length would ask for.
        let v: Vec<[u8; 72]> = Vec::with_capacity(i32::MAX as usize);
        assert!(v.capacity() >= i32::MAX as usize);
        drop(v);
        let mut small: Vec<u8> = Vec::with_capacity(16);
        small.extend_from_slice(b"still works");
        assert_eq!(&small[..5], b"still");
    }
}
