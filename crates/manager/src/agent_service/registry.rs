//! The streams this replica holds, one per cluster.
//!
//! Why a registry: the single watcher of the replica must reach the stream of a cluster in O(1)
//! when its spec changes, and a second stream of the same cluster (an agent that reconnected
//! before the old TCP connection died) must take over from the first, so that the old stream's
//! end does not mark a connected cluster as disconnected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// `(namespace, name)` of a WorkloadCluster.
pub type ClusterKey = (String, String);

/// Signals to one stream. `Notify` keeps one permit, so signals coalesce: a burst of spec
/// changes wakes the stream once and it reads the newest state (bounded memory per stream).
#[derive(Debug, Default)]
pub struct Signals {
    /// The cluster or its profile changed.
    pub spec_changed: Notify,
    /// A newer stream of the same cluster took over; this one must end.
    pub replaced: Notify,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    signals: Arc<Signals>,
}

/// Streams held by this replica, by cluster.
#[derive(Debug, Default)]
pub struct Registry {
    entries: Mutex<HashMap<ClusterKey, Entry>>,
    next_id: AtomicU64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClusterKey, Entry>> {
        // The map stays consistent even if a holder panicked: every operation is one insert or
        // remove.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new stream for `key`, replacing (and signalling) any previous one.
    /// Returns the stream's id and its signals.
    pub fn register(&self, key: ClusterKey) -> (u64, Arc<Signals>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let signals = Arc::new(Signals::default());
        let previous = self.lock().insert(
            key,
            Entry {
                id,
                signals: signals.clone(),
            },
        );
        if let Some(previous) = previous {
            previous.signals.replaced.notify_one();
        }
        (id, signals)
    }

    /// Removes stream `id` of `key`; false if a newer stream has replaced it (then the newer
    /// stream owns the cluster's connection state and the caller must not touch it).
    pub fn unregister(&self, key: &ClusterKey, id: u64) -> bool {
        let mut entries = self.lock();
        match entries.get(key) {
            Some(entry) if entry.id == id => {
                entries.remove(key);
                true
            }
            _ => false,
        }
    }

    /// Whether stream `id` still holds `key`.
    pub fn holds(&self, key: &ClusterKey, id: u64) -> bool {
        self.lock().get(key).is_some_and(|entry| entry.id == id)
    }

    /// Wakes the stream of `key`, if this replica holds one.
    pub fn notify(&self, key: &ClusterKey) {
        if let Some(entry) = self.lock().get(key) {
            entry.signals.spec_changed.notify_one();
        }
    }

    /// Wakes every stream whose cluster matches `filter` (a profile changed, or a re-list).
    pub fn notify_where(&self, mut filter: impl FnMut(&ClusterKey) -> bool) {
        for (key, entry) in self.lock().iter() {
            if filter(key) {
                entry.signals.spec_changed.notify_one();
            }
        }
    }

    /// Number of streams held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ClusterKey {
        ("team-a".to_string(), name.to_string())
    }

    #[tokio::test]
    async fn a_second_stream_replaces_the_first() {
        let registry = Registry::default();
        let (first, first_signals) = registry.register(key("a"));
        let (second, _) = registry.register(key("a"));
        // The first stream is told to end, and its end does not unregister the second.
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            first_signals.replaced.notified(),
        )
        .await
        .expect("replaced signal");
        assert!(!registry.unregister(&key("a"), first));
        assert!(registry.holds(&key("a"), second));
        assert!(registry.unregister(&key("a"), second));
        assert_eq!(registry.len(), 0);
    }

    #[tokio::test]
    async fn notifications_coalesce_into_one_wakeup() {
        let registry = Registry::default();
        let (_, signals) = registry.register(key("a"));
        registry.notify(&key("a"));
        registry.notify(&key("a"));
        registry.notify(&key("b"));
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            signals.spec_changed.notified(),
        )
        .await
        .expect("one wakeup");
    }
}
