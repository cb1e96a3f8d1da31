//! The process's allocator: jemalloc, tuned for training's allocation pattern.
//!
//! A training step allocates and frees the same few large buffers (activations, unfolded
//! images, gradients: up to 42 MB each) hundreds of times per second. With glibc, or with
//! jemalloc's defaults, every such buffer comes back from the kernel as fresh pages and each
//! page faults on first touch: for the reference CNN that cost more time than the arithmetic.
//! Two settings keep the memory mapped and reused instead:
//! - `oversize_threshold:0`: no separate arena for allocations over 8 MB (that arena returns
//!   memory to the kernel as soon as it is freed);
//! - zeroed allocations are filled with zeros by us: jemalloc zeroes a recycled large block by
//!   handing its pages back to the kernel (`madvise`), so that every page faults again.

use std::alloc::{GlobalAlloc, Layout};

use tikv_jemallocator::Jemalloc;

#[global_allocator]
static ALLOCATOR: ReusingAllocator = ReusingAllocator;

/// jemalloc reads its options from this symbol at start-up (`_rjem_` is the crate's prefix).
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 21] = b"oversize_threshold:0\0";

struct ReusingAllocator;

// SAFETY: every call is forwarded to jemalloc with the caller's layout; `alloc_zeroed` zeroes
// exactly the `layout.size()` bytes it was given.
unsafe impl GlobalAlloc for ReusingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { Jemalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe {
            let ptr = Jemalloc.alloc(layout);
            if !ptr.is_null() {
                ptr.write_bytes(0, layout.size());
            }
            ptr
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { Jemalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { Jemalloc.realloc(ptr, layout, new_size) }
    }
}
