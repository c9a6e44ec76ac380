//! The wall clock, read through one seam.
//!
//! Rule: wall-clock time is read only through [`unix_millis`], and it only labels things
//! (a node's epoch, message timestamps, when a procedure started); leases use monotonic
//! clocks. A deterministic simulation [`install`]s its simulated clock once per process,
//! so a run's timestamps are a function of its seed; production installs none and reads
//! the system clock.

use std::sync::OnceLock;

/// A wall-clock source: milliseconds since the Unix epoch, or `None` to fall back to the
/// system clock (for example on a thread outside the simulation).
pub type Source = fn() -> Option<u64>;

static SOURCE: OnceLock<Source> = OnceLock::new();

/// Installs `source` for the rest of the process. Returns `false` (and changes nothing)
/// if one was installed already.
pub fn install(source: Source) -> bool {
    SOURCE.set(source).is_ok()
}

/// Milliseconds since the Unix epoch: used for `node_epoch` and message timestamps, which
/// are identities and labels, never lease arithmetic (leases use monotonic clocks).
pub fn unix_millis() -> u64 {
    if let Some(ms) = SOURCE.get().and_then(|source| source()) {
        return ms;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installed_source_is_read_and_falls_back_to_the_system_clock() {
        fn simulated() -> Option<u64> {
            IN_SIM.with(|s| s.get().then_some(42))
        }
        thread_local! {
            static IN_SIM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        assert!(install(simulated));
        assert!(!install(simulated), "installed once per process");
        assert!(
            unix_millis() > 1_600_000_000_000,
            "the system clock outside"
        );
        IN_SIM.with(|s| s.set(true));
        assert_eq!(unix_millis(), 42);
    }
}
