//! The heap in use, from the allocator's own statistics.
//!
//! RSS says how much memory the process holds, not what for: freed memory the allocator
//! keeps, and fragmentation, count too. The allocator knows how many bytes are handed
//! out and not yet freed, which is what a cost model (bytes per route, per node) needs,
//! and what an operator watching a leak wants. The metasrv uses the system allocator; on
//! glibc, `mallinfo2` (glibc 2.33 or later) sums every arena. Elsewhere the figure is not
//! available. A different allocator preloaded with `LD_PRELOAD` is not seen: the gauge
//! then reports glibc's own, nearly empty, heap.

/// Bytes allocated and not yet freed (small chunks in the arenas plus large mmapped
/// ones), or `None` where the allocator does not say.
pub fn allocated_bytes() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments, only reads the allocator's counters
        // under its own locks, and returns a plain struct by value.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_live_allocation_shows_in_the_heap_figure() {
        let before = super::allocated_bytes().expect("glibc reports");
        let block = vec![1u8; 64 << 20];
        let during = super::allocated_bytes().expect("glibc reports");
        assert!(
            during >= before + (64 << 20) - (1 << 20),
            "{before} -> {during}"
        );
        drop(block);
    }
}
