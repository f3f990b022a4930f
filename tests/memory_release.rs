//! The memory thread's trim hands back the free middle of an arena, which glibc keeps resident
//! on its own. Its own test binary: the resident size of the process is what it measures.

use sluice_broker::memory::{anonymous_resident_bytes, release_unused};

const CHUNK_BYTES: usize = 100 * 1024; // below glibc's mmap threshold: served from an arena
const CHUNKS: usize = 2_000;
const KEPT_EVERY: usize = 16;

#[test]
fn free_memory_in_the_middle_of_an_arena_goes_back_to_the_system() {
    // A thread of its own allocates, so the memory sits in that thread's arena; one chunk in
    // KEPT_EVERY stays allocated, which keeps glibc from shrinking the arena by itself.
    let kept = std::thread::spawn(|| {
        let mut chunks: Vec<Vec<u8>> = (0..CHUNKS)
            .map(|i| vec![i as u8 | 1; CHUNK_BYTES])
            .collect();
        let kept: Vec<Vec<u8>> = chunks
            .iter_mut()
            .step_by(KEPT_EVERY)
            .map(std::mem::take)
            .collect();
        drop(chunks);
        kept
    })
    .join()
    .unwrap();
    let freed = (CHUNKS - kept.len()) * CHUNK_BYTES;
    let resident = anonymous_resident_bytes().expect("RssAnon");
    assert!(
        release_unused(u64::MAX).is_none(),
        "nothing is released below the threshold"
    );
    let released = release_unused(0).expect("free memory above a zero threshold");
    assert!(released.resident_before_bytes >= resident - (16 << 20));
    let dropped = released.resident_before_bytes - released.resident_after_bytes;
    assert!(
        dropped as usize >= freed / 2,
        "{} MiB freed, resident dropped by {} MiB",
        freed >> 20,
        dropped >> 20
    );
    assert!(kept.iter().all(|c| c.iter().all(|&b| b & 1 == 1)));
}
