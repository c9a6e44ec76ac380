//! [`TermTasks`]: the tasks of one leadership term, started when the term begins,
//! cancelled **and joined** when it ends.
//!
//! Every leader action checks the leadership deadline, so a task of an ended term fails
//! closed. Joining adds what the deadline cannot: when a term has ended, none of its
//! tasks is still running, so a new term never overlaps the old one's supervisor,
//! sweeper or procedures, and shutdown waits for them.

use std::future::Future;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{warn, Instrument};

/// A term's token and its running tasks.
#[derive(Debug)]
pub struct TermTasks {
    token: CancellationToken,
    tasks: JoinSet<()>,
}

impl TermTasks {
    /// Tasks under `token`: cancelling it (or [`end`](Self::end)) stops them.
    pub fn new(token: CancellationToken) -> Self {
        Self {
            token,
            tasks: JoinSet::new(),
        }
    }

    /// The term's token; a task stops when it is cancelled.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Runs `task` until it finishes or the term ends, whichever is first. Finished tasks
    /// are reaped here, so a long term's set holds only the running ones.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        while self.tasks.try_join_next().is_some() {}
        let token = self.token.clone();
        self.tasks.spawn(
            async move {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = task => {}
                }
            }
            .instrument(tracing::info_span!("term_task", task = name)),
        );
    }

    /// How many tasks run.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no task runs.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Ends the term: cancels every task and waits until each has stopped.
    pub async fn end(mut self) {
        self.token.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(err) = joined {
                if err.is_panic() {
                    warn!(error = %err, "a term task panicked");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Counts its drops: a task holding one has stopped once it is dropped.
    struct Stopped(Arc<AtomicUsize>);

    impl Drop for Stopped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ending_a_term_cancels_every_task_and_returns_only_once_each_has_stopped() {
        let stopped = Arc::new(AtomicUsize::new(0));
        let mut term = TermTasks::new(CancellationToken::new());
        for _ in 0..3 {
            let guard = Stopped(stopped.clone());
            term.spawn("ticker", async move {
                let _guard = guard;
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
        // A task that never looks at the token is stopped by the term all the same.
        let guard = Stopped(stopped.clone());
        term.spawn("oblivious", async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        tokio::time::sleep(Duration::from_millis(35)).await;
        assert_eq!((term.len(), stopped.load(Ordering::SeqCst)), (4, 0));
        term.end().await;
        assert_eq!(
            stopped.load(Ordering::SeqCst),
            4,
            "every task stopped before end returned"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_the_terms_token_stops_its_tasks() {
        let stopped = Arc::new(AtomicUsize::new(0));
        let mut term = TermTasks::new(CancellationToken::new());
        assert!(term.is_empty());
        let guard = Stopped(stopped.clone());
        term.spawn("oblivious", async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        assert!(!term.is_empty());
        term.token().cancel();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            stopped.load(Ordering::SeqCst),
            1,
            "stopped by the token alone"
        );
        term.end().await;
    }

    #[tokio::test(start_paused = true)]
    async fn finished_tasks_are_reaped_as_new_ones_start() {
        let mut term = TermTasks::new(CancellationToken::new());
        term.spawn("quick", async {});
        tokio::task::yield_now().await;
        term.spawn("quick", async {});
        assert_eq!(term.len(), 1, "the first, finished, was reaped");
        term.end().await;
    }
}
