//! Catching a member up by snapshot, as Axon's InstallSnapshot does (CLUSTER.md §1.3, §10.5): a
//! snapshot is only a manifest of the stores' heads, so before the leader sends it, it asks the
//! member for its own heads and sends the transactions it lacks, in token order. A member that
//! is merely behind receives only what it is missing, never the whole store.
//!
//! The member appends what it receives straight into its stores — the same bytes at the same
//! tokens as on the leader — holding the group's write lock, so a transfer and the state
//! machine never write one store at once. A batch that overlaps what the member holds (a retry)
//! is trimmed; one that would leave a gap is refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use myelin_node::{Node, NodeError};
use myelin_store::{ContextStore, Cursor};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::cluster::ClusterNode;
use crate::network::{Call, Peers};
use crate::types::Manifest;

/// Transactions per batch, and the bytes a batch stops growing at.
const BATCH_EVENTS: usize = 2_000;
const BATCH_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub enum TransferRequest {
    /// Create the group's contexts where missing and answer each one's heads.
    Heads {
        contexts: BTreeMap<String, BTreeMap<String, String>>,
    },
    /// Store `events` (one snapshot per entry for the snapshot store) from `first_token` on.
    Batch {
        context: String,
        snapshots: bool,
        first_token: i64,
        events: Vec<Bytes>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum TransferAnswer {
    /// Per context: next event token, next snapshot token.
    Heads(BTreeMap<String, (i64, i64)>),
    /// The store's next token after the batch.
    Stored { head: i64 },
}

pub type TransferReply = Result<TransferAnswer, String>;

/// Leader side: brings `target`'s stores up to `manifest` before the snapshot is installed.
/// Answers the bytes of events sent.
pub async fn send(peers: &Peers, node: &Node, group: &str, target: &str, manifest: &Manifest) -> Result<u64, String> {
    let heads = match call(
        peers,
        target,
        group,
        TransferRequest::Heads {
            contexts: manifest.contexts.clone(),
        },
    )
    .await?
    {
        TransferAnswer::Heads(heads) => heads,
        TransferAnswer::Stored { .. } => return Err(format!("{target} answered heads with a batch result")),
    };
    let mut sent = 0u64;
    for (context, (event_head, snapshot_head)) in heads {
        let Some(local) = node.contexts().get(&context) else {
            continue;
        };
        let store = local.store();
        let wanted_events = manifest.event_heads.get(&context).copied().unwrap_or(0);
        let wanted_snapshots = manifest.snapshot_heads.get(&context).copied().unwrap_or(0);
        sent += send_family(peers, store, group, target, &context, false, event_head, wanted_events).await?;
        sent += send_family(
            peers,
            store,
            group,
            target,
            &context,
            true,
            snapshot_head,
            wanted_snapshots,
        )
        .await?;
    }
    peers.transferred_bytes.fetch_add(sent, Ordering::Relaxed);
    if sent > 0 {
        info!(%group, %target, bytes = sent, "sent a snapshot's missing transactions");
    }
    Ok(sent)
}

#[allow(clippy::too_many_arguments)]
async fn send_family(
    peers: &Peers,
    store: &Arc<ContextStore>,
    group: &str,
    target: &str,
    context: &str,
    snapshots: bool,
    from: i64,
    until: i64,
) -> Result<u64, String> {
    let mut sent = 0u64;
    let mut cursor = Cursor::new(u64::try_from(from).unwrap_or(0));
    let mut next = from;
    while next < until {
        let mut read: Vec<(u64, Bytes)> = Vec::new();
        let want = usize::try_from(until - next).unwrap_or(usize::MAX).min(BATCH_EVENTS);
        let result = if snapshots {
            store.read_snapshots(&mut cursor, want, &mut read)
        } else {
            store.read_events(&mut cursor, want, &mut read)
        };
        result.map_err(|e| format!("reading {context} from token {next}: {e}"))?;
        let mut events = Vec::new();
        let mut bytes = 0usize;
        for (token, event) in read {
            if token as i64 >= until || bytes >= BATCH_BYTES {
                break;
            }
            bytes += event.len();
            events.push(event);
        }
        if events.is_empty() {
            return Err(format!(
                "{context}: the leader's store ends before token {until} (at {next})"
            ));
        }
        let count = events.len() as i64;
        let answer = call(
            peers,
            target,
            group,
            TransferRequest::Batch {
                context: context.to_string(),
                snapshots,
                first_token: next,
                events,
            },
        )
        .await?;
        match answer {
            TransferAnswer::Stored { head } if head >= next + count => {}
            other => return Err(format!("{target} stored a batch of {context} wrongly: {other:?}")),
        }
        next += count;
        cursor = Cursor::new(u64::try_from(next).unwrap_or(0));
        sent += bytes as u64;
    }
    Ok(sent)
}

async fn call(peers: &Peers, target: &str, group: &str, request: TransferRequest) -> Result<TransferAnswer, String> {
    let reply: TransferReply = peers
        .call(target, Call::Transfer, group, &request)
        .await
        .map_err(|e| e.to_string())?;
    reply
}

/// Member side.
pub async fn receive(cluster: &ClusterNode, group: &str, request: TransferRequest) -> TransferReply {
    let local = cluster
        .group(group)
        .ok_or_else(|| format!("group {group} is not open on {}", cluster.me().name))?;
    let _writing = local.writes.lock().await;
    match request {
        TransferRequest::Heads { contexts } => {
            let mut heads = BTreeMap::new();
            for (context, metadata) in contexts {
                match cluster.node().create_context(&context, &metadata) {
                    Ok(()) | Err(NodeError::ContextExists(_)) => {}
                    Err(e) => return Err(format!("creating context {context}: {e}")),
                }
                if let Err(e) = cluster.place(&context, group) {
                    warn!(%context, %group, "cannot record where the context lives yet: {e}");
                }
                let store = cluster.node().contexts().resolve(&context).map_err(|e| e.to_string())?;
                heads.insert(
                    context,
                    (store.store().head() as i64, store.store().snapshot_head() as i64),
                );
            }
            Ok(TransferAnswer::Heads(heads))
        }
        TransferRequest::Batch {
            context,
            snapshots,
            first_token,
            events,
        } => {
            let store = cluster
                .node()
                .contexts()
                .resolve(&context)
                .map_err(|e| e.to_string())?
                .store()
                .clone();
            let head = if snapshots { store.snapshot_head() } else { store.head() } as i64;
            if first_token > head {
                return Err(format!(
                    "{context}: a batch from token {first_token} would leave a gap after {head}"
                ));
            }
            let skip = usize::try_from(head - first_token).unwrap_or(usize::MAX);
            let fresh: Vec<Bytes> = events.into_iter().skip(skip).collect();
            let stored = if fresh.is_empty() {
                head
            } else if snapshots {
                let mut last = head;
                for snapshot in fresh {
                    let ticket = store.append_snapshot(snapshot).map_err(|e| e.to_string())?;
                    let appended = ticket.await.map_err(|e| e.to_string())?;
                    last = (appended.first_token + appended.count) as i64;
                }
                last
            } else {
                let ticket = store.append(fresh).map_err(|e| e.to_string())?;
                let appended = ticket.await.map_err(|e| e.to_string())?;
                (appended.first_token + appended.count) as i64
            };
            Ok(TransferAnswer::Stored { head: stored })
        }
    }
}
