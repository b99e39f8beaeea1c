//! The registry of open contexts: each context's store, the signal that wakes tracking readers
//! after a commit, and who is using it (open tracking streams, connected clients).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::future::Future;

use crate::error::NodeError;
use crate::write::WritePath;
use myelin_store::{Appended, ContextStore, PreparedEvent, PreparedSnapshot};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

/// The context of requests that name none (the Python and Rust clients never do).
pub const DEFAULT_CONTEXT: &str = "default";

/// One open context: its store and a signal that fires after every event commit.
pub struct Context {
    store: Arc<ContextStore>,
    /// Bumped by the store's writer thread after each commit. Readers use it only as a wake-up
    /// and read the head from the store itself, so a commit that lands between registering
    /// this listener and reading the head can never be missed.
    committed: watch::Sender<u64>,
    /// Open ListEvents streams.
    tracking_streams: AtomicUsize,
}

impl Context {
    pub fn store(&self) -> &Arc<ContextStore> {
        &self.store
    }

    /// A receiver that changes after every commit.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// How many ListEvents streams are open on this context right now.
    pub fn tracking_streams(&self) -> usize {
        self.tracking_streams.load(Ordering::Relaxed)
    }

    /// Counts a ListEvents stream opened; pair with [`Context::tracking_stream_closed`].
    pub fn tracking_stream_opened(&self) {
        self.tracking_streams.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tracking_stream_closed(&self) {
        self.tracking_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The registry of open contexts, shared by every service.
#[derive(Default)]
pub struct Contexts {
    contexts: RwLock<HashMap<String, Arc<Context>>>,
    /// Contexts whose stores could not be opened at startup (damaged files, say), with why.
    /// Their calls fail with the reason; the other contexts serve as usual.
    failed: RwLock<HashMap<String, String>>,
    /// Open PlatformService instruction streams per context name (connected applications).
    clients: Arc<Mutex<HashMap<String, usize>>>,
    /// Where writes go instead of the local stores (a cluster node's replication).
    write_path: RwLock<Option<Arc<dyn WritePath>>>,
}

/// Counts one connected client of a context for as long as it lives.
pub struct ClientGuard {
    clients: Arc<Mutex<HashMap<String, usize>>>,
    context: String,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let mut clients = self.clients.lock();
        if let Some(count) = clients.get_mut(&self.context) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                clients.remove(&self.context);
            }
        }
    }
}

impl Contexts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends every later write through `path` (the cluster's replication) instead of straight
    /// into the local stores.
    pub fn set_write_path(&self, path: Arc<dyn WritePath>) {
        *self.write_path.write() = Some(path);
    }

    /// Stores one transaction of events of `context` along this node's write path, answering
    /// once it is durable there.
    pub fn append_events(
        &self,
        context: &Arc<Context>,
        events: Vec<PreparedEvent>,
    ) -> impl Future<Output = Result<Appended, NodeError>> + Send + 'static {
        let path = self.write_path.read().clone();
        let context = context.clone();
        async move {
            match path {
                Some(path) => path.append_events(&context, events).await,
                None => crate::write::local_events(context, events).await,
            }
        }
    }

    /// Stores one snapshot of `context` along this node's write path.
    pub fn append_snapshot(
        &self,
        context: &Arc<Context>,
        snapshot: PreparedSnapshot,
    ) -> impl Future<Output = Result<Appended, NodeError>> + Send + 'static {
        let path = self.write_path.read().clone();
        let context = context.clone();
        async move {
            match path {
                Some(path) => path.append_snapshot(&context, snapshot).await,
                None => crate::write::local_snapshot(context, snapshot).await,
            }
        }
    }

    /// Makes `store` reachable under its name, replacing any store registered under it.
    pub fn insert(&self, store: Arc<ContextStore>) {
        let (committed, _) = watch::channel(store.head());
        let notify = committed.clone();
        // Runs on the writer thread: a lock, a store and a wake-up, nothing more.
        store.on_commit(Box::new(move |head| {
            notify.send_replace(head);
        }));
        let name = store.name().to_string();
        self.failed.write().remove(&name);
        self.contexts.write().insert(
            name,
            Arc::new(Context {
                store,
                committed,
                tracking_streams: AtomicUsize::new(0),
            }),
        );
    }

    /// Removes a context; streams already reading it keep their reference until they end.
    pub fn remove(&self, name: &str) -> Option<Arc<ContextStore>> {
        self.contexts.write().remove(name).map(|c| c.store.clone())
    }

    /// Records that context `name` could not be opened, and why.
    pub fn mark_failed(&self, name: &str, reason: String) {
        self.contexts.write().remove(name);
        self.failed.write().insert(name.to_string(), reason);
    }

    /// Contexts that could not be opened, with why, sorted by name.
    pub fn failures(&self) -> Vec<(String, String)> {
        let mut failed: Vec<(String, String)> = self
            .failed
            .read()
            .iter()
            .map(|(name, reason)| (name.clone(), reason.clone()))
            .collect();
        failed.sort();
        failed
    }

    /// Forgets a failed context (it is being deleted or re-created).
    pub fn forget_failure(&self, name: &str) -> Option<String> {
        self.failed.write().remove(name)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Context>> {
        self.contexts.read().get(name).cloned()
    }

    /// Names of the open contexts, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.contexts.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// Registers a connected client (an open instruction stream) of context `name`.
    pub fn client_connected(&self, name: &str) -> ClientGuard {
        *self.clients.lock().entry(name.to_string()).or_default() += 1;
        ClientGuard {
            clients: self.clients.clone(),
            context: name.to_string(),
        }
    }

    /// How many clients hold an instruction stream open for context `name`.
    pub fn connected_clients(&self, name: &str) -> usize {
        self.clients.lock().get(name).copied().unwrap_or(0)
    }

    /// The open context called `name`, or why there is none.
    pub fn resolve(&self, name: &str) -> Result<Arc<Context>, NodeError> {
        if let Some(context) = self.get(name) {
            return Ok(context);
        }
        match self.failed.read().get(name) {
            Some(reason) => Err(NodeError::ContextUnavailable {
                context: name.to_string(),
                reason: reason.clone(),
            }),
            None => Err(NodeError::ContextNotFound(name.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_clients_are_counted_while_their_guard_lives() {
        let contexts = Contexts::new();
        let first = contexts.client_connected("orders");
        let second = contexts.client_connected("orders");
        assert_eq!(contexts.connected_clients("orders"), 2);
        assert_eq!(contexts.connected_clients("default"), 0);
        drop(first);
        assert_eq!(contexts.connected_clients("orders"), 1);
        drop(second);
        assert_eq!(contexts.connected_clients("orders"), 0);
    }

    #[test]
    fn a_failed_context_answers_why_and_an_unknown_one_is_not_found() {
        let contexts = Contexts::new();
        contexts.mark_failed("broken", "bad checksum".into());
        assert!(matches!(
            contexts.resolve("broken"),
            Err(NodeError::ContextUnavailable { reason, .. }) if reason == "bad checksum"
        ));
        assert!(matches!(contexts.resolve("nope"), Err(NodeError::ContextNotFound(name)) if name == "nope"));
    }
}
