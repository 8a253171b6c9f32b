//! How much freed memory the daemons' heap keeps. glibc's defaults suit
//! short programs: an arena per thread (up to eight per core), each keeping
//! what its threads freed, and an mmap threshold that rises to 32 MiB after
//! the first large block is freed, so from then on the chunk and batch
//! buffers (up to a few MiB, allocated and freed on many FUSE and fetch
//! threads) come from the arenas and stay resident. Measured on the
//! start-up benchmark (see BENCHMARKS.md), reading a whole 67 MB image
//! through the store peaked at 176 MiB RSS with glibc's defaults and at
//! about 100 MiB with these settings.

/// Two arenas, and large blocks mapped (and unmapped when freed) from
/// 128 KiB on. Call before threads start; a no-op off glibc.
pub fn limit_retained_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; it is called before
    // any other thread exists.
    unsafe {
        // The return values say whether glibc took the setting; either way
        // the daemon works, only its memory use differs.
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}
