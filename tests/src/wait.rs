//! Waiting for state: polling with a deadline, and "never" windows.

use std::time::Duration;

/// Asserts `check` on every poll for the whole `window` (a "this never happens" window:
/// a single failing poll fails the test, naming `what`).
pub async fn always_for<F, Fut>(what: &str, window: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    let mut polls = 0u64;
    while start.elapsed() < window {
        polls += 1;
        assert!(
            check().await,
            "{what}: violated after {:?} (poll {polls})",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(polls > 0, "{what}: never checked");
}

/// Polls `check` until it returns `Some`, or panics after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
