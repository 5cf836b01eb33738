//! A background loop's handle (a janitor, the retry scheduler): dropping it stops the loop.

use std::future::Future;

use tokio::task::JoinHandle;

/// A loop running as a tokio task, stopped when this handle is dropped, by
/// [`stop`](Self::stop), or by [`shutdown`](Self::shutdown), which also waits until it has
/// ended. Stopping abandons the step in progress at its next await point: the loops that
/// use it (retention janitors, the retry scheduler) make each store call atomic, so an
/// abandoned step leaves nothing half done.
#[derive(Debug)]
pub struct Background {
    task: JoinHandle<()>,
}

impl Background {
    /// Run `work` on the current tokio runtime.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn spawn(work: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            task: tokio::spawn(work),
        }
    }

    /// Stop the loop without waiting.
    pub fn stop(self) {
        self.task.abort();
    }

    /// Stop the loop and wait until it has ended.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.task.abort();
    }
}
