//! How a context's writes become durable. On a single node they go straight into the context's
//! store. On a cluster node the cluster installs a [`WritePath`] that sends them through the
//! replication group's log and answers once they are committed and applied; the gRPC and REST
//! layers call [`crate::Contexts::append_events`] and never know which.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use myelin_store::{Appended, PreparedEvent, PreparedSnapshot};

use crate::contexts::Context;
use crate::error::NodeError;

/// A boxed future, as a trait object's method must return.
pub type WriteFuture = Pin<Box<dyn Future<Output = Result<Appended, NodeError>> + Send + 'static>>;

/// A replacement for the local store's append, installed by the cluster layer.
pub trait WritePath: Send + Sync {
    /// Stores one transaction of events of `context`; resolves once it is durable where the
    /// path promises (for a cluster: committed under the role rules and applied).
    fn append_events(&self, context: &Arc<Context>, events: Vec<PreparedEvent>) -> WriteFuture;

    /// Stores one snapshot of `context`, with the same promise.
    fn append_snapshot(&self, context: &Arc<Context>, snapshot: PreparedSnapshot) -> WriteFuture;
}

/// The single node's path: the context's own store, fsync before the answer.
pub(crate) async fn local_events(context: Arc<Context>, events: Vec<PreparedEvent>) -> Result<Appended, NodeError> {
    let ticket = context.store().append_prepared(events).map_err(NodeError::write)?;
    ticket.await.map_err(NodeError::write)
}

pub(crate) async fn local_snapshot(context: Arc<Context>, snapshot: PreparedSnapshot) -> Result<Appended, NodeError> {
    let ticket = context
        .store()
        .append_prepared_snapshot(snapshot)
        .map_err(NodeError::write)?;
    ticket.await.map_err(NodeError::write)
}
