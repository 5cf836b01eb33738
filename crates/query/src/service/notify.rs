//! Notifications: the targets in force and each one's delivery (`GET …/notifications`,
//! the metrics). The notifier itself (`failed-tasks-notify`) is composed by the facade; the
//! use cases only show what it keeps in the store.

use std::sync::Arc;

use failed_tasks_store::notify::TargetDelivery;

use super::{FailedTaskService, QueryError};

/// A target as it may be shown: no secret, the URL's scheme and host only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTargetInfo {
    /// Its name.
    pub name: String,
    /// Scheme and host of its URL.
    pub url: String,
    /// `json` or `slack`.
    pub format: String,
    /// The event kinds it gets.
    pub events: Vec<String>,
    /// The lowest level it gets.
    pub min_level: String,
    /// Whether its messages are signed.
    pub signed: bool,
}

impl FailedTaskService {
    /// The same service showing the delivery of `targets`.
    #[must_use]
    pub fn with_notify_targets(mut self, targets: Vec<NotifyTargetInfo>) -> Self {
        self.notify_targets = Arc::new(targets);
        self
    }

    /// The notification targets in force (none when notifications are off).
    pub fn notify_targets(&self) -> &[NotifyTargetInfo] {
        &self.notify_targets
    }

    /// Each target with its delivery as the store keeps it (the same on every replica).
    pub async fn notifications(
        &self,
    ) -> Result<Vec<(NotifyTargetInfo, TargetDelivery)>, QueryError> {
        if self.notify_targets.is_empty() {
            return Ok(Vec::new());
        }
        let Some(store) = self.stores.notify.clone() else {
            return Ok(Vec::new());
        };
        let targets = self.notify_targets.clone();
        self.checked(async move {
            let mut out = Vec::with_capacity(targets.len());
            for t in targets.iter() {
                out.push((t.clone(), store.target_delivery(&t.name).await?));
            }
            Ok(out)
        })
        .await
    }
}
