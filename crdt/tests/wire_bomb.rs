//! A zstd bomb is refused before anything is allocated for it. Its own test binary, because it
//! counts allocations with a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Read as _;

use meshward_crdt::{MAX_DECODED, SyncMessage, WireError};

/// The system allocator, noting the largest allocation asked for on each thread.
struct Peak;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is passed on unchanged to the system allocator; noting the size touches
// only a const-initialised thread-local cell, which never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: a pointer and layout this allocator handed out, as the caller guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static PEAK: Peak = Peak;

/// `len` zero bytes compressed by a streaming encoder (nothing of `len` bytes is allocated),
/// with the size stated in the frame header.
fn bomb(len: usize) -> std::io::Result<Vec<u8>> {
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3)?;
    encoder.include_contentsize(true)?;
    encoder.set_pledged_src_size(Some(len as u64))?;
    std::io::copy(&mut std::io::repeat(0).take(len as u64), &mut encoder)?;
    encoder.finish()
}

#[test]
fn a_zstd_bomb_declaring_the_largest_message_is_refused_without_allocating_it() {
    let bomb = bomb(MAX_DECODED).expect("compress");
    assert!(bomb.len() <= 64 * 1024, "{} bytes of input", bomb.len());
    LARGEST.with(|l| l.set(0));
    let decoded = SyncMessage::decode(&bomb);
    let largest = LARGEST.with(Cell::get);
    assert!(
        matches!(decoded, Err(WireError::TooLarge { len, .. }) if len == MAX_DECODED),
        "{decoded:?}"
    );
    assert!(
        largest < 64 * 1024,
        "decoding asked for an allocation of {largest} bytes"
    );
}
