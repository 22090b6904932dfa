//! Gives memory the run freed back to the system before the step that needs the most.
//!
//! Why by hand: glibc's allocator keeps an arena per thread and keeps what is freed in it for
//! that thread's next allocations. A run's extraction parses and totals its pages on the
//! runtime's worker threads; planning then runs on another thread, whose arena grows while the
//! pages' memory lies free in the others. `malloc_trim` hands every arena's free pages back, so
//! that the run's peak is what planning holds, not that plus what extraction left behind
//! (docs/PERFORMANCE.md: 1–3 MiB less at a million users on Postgres). No crate offers it short
//! of replacing the allocator, which was measured and not kept.

/// Returns the free memory of every allocator arena to the system (glibc's `malloc_trim`); a
/// no-op with other C libraries.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer of ours; it only walks glibc's own free lists,
    // under their locks, and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
