//! A background loop's handle (a janitor, the retry scheduler): one periodic loop, stopped
//! between two of its steps.

use std::future::Future;
use std::ops::ControlFlow;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The longest [`Background::shutdown`] waits for the step in progress before abandoning it.
/// Steps are bounded by the store's command timeouts, far below this.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// A loop that runs one step every interval as a tokio task. Dropping the handle,
/// [`stop`](Self::stop) or [`shutdown`](Self::shutdown) ends it *between* steps: a step in
/// progress (a janitor's trim, a scheduler's delivery, and the counters it updates) always
/// finishes, so what it did and what it reports agree.
#[derive(Debug)]
pub struct Background {
    task: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Background {
    /// Run `step` every `interval` (the first at once; a late step delays the next rather
    /// than bunching them) on the current tokio runtime, until the handle stops it or a step
    /// answers [`ControlFlow::Break`].
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn every<F, Fut>(interval: Duration, mut step: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ControlFlow<()>> + Send,
    {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    // A stop request, or the handle gone: end before the next step.
                    _ = stopped.changed() => return,
                    _ = ticks.tick() => {}
                }
                if *stopped.borrow() || step().await.is_break() {
                    return;
                }
            }
        });
        Self {
            task: Some(task),
            stop,
        }
    }

    /// Ask the loop to stop after the step in progress, without waiting for it.
    pub fn stop(self) {
        let _ = self.stop.send(true);
    }

    /// Ask the loop to stop and wait until it has ended: the step in progress finishes, for
    /// at most [`SHUTDOWN_WAIT`], after which it is abandoned.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_WAIT, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for Background {
    /// Dropping the handle stops the loop after its current step (the sender going away
    /// is the signal).
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// A step in progress when shutdown is asked for finishes, and no step starts after.
    #[tokio::test(start_paused = true)]
    async fn shutdown_lets_the_step_in_progress_finish_and_starts_no_other() {
        let started = Arc::new(AtomicU32::new(0));
        let finished = Arc::new(AtomicU32::new(0));
        let (entered_tx, mut entered) = tokio::sync::mpsc::channel::<()>(1);
        let (s, f) = (started.clone(), finished.clone());
        let handle = Background::every(Duration::from_secs(1), move || {
            let (s, f, entered) = (s.clone(), f.clone(), entered_tx.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                let _ = entered.send(()).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
                f.fetch_add(1, Ordering::SeqCst);
                ControlFlow::Continue(())
            }
        });
        entered.recv().await.unwrap();
        handle.shutdown().await;
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }

    /// A step answering Break ends the loop by itself: no step runs after it.
    #[tokio::test(start_paused = true)]
    async fn a_step_can_end_the_loop() {
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let _handle = Background::every(Duration::from_millis(10), move || {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }
        });
        // A hundred intervals later (paused time advances by itself).
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
