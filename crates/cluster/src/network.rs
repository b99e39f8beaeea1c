//! Node-to-node traffic, client side: openraft's RPCs and Myelin's own calls over one tonic
//! channel per peer, on the peer's internal port. Bodies are postcard-encoded (openraft's own
//! serde types); transport failures become openraft's "unreachable" so it backs off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use myelin_proto::myelin::cluster::Envelope;
use myelin_proto::myelin::cluster::cluster_client::ClusterClient;
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{EntryPayload, Snapshot, SnapshotMeta};
use parking_lot::RwLock;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::role::Role;
use crate::types::{Command, Manifest, Member, NodeAddress, NodeId, NodeName, TypeConfig, Vote};

/// The metadata key carrying the internal token (Axon's access-token header).
pub const TOKEN_METADATA_KEY: &str = "axoniq-access-token";

/// How long a call to a peer may take before it counts as unreachable. openraft's own
/// per-RPC deadlines (`RPCOption`) are shorter for heartbeats and apply on top.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Encodes a body for the wire.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

/// Decodes a body from the wire.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("node {0} has no known address")]
    UnknownNode(NodeName),
    #[error("node {node}: {status}")]
    Status { node: NodeName, status: tonic::Status },
    #[error("node {node}: cannot decode the answer: {error}")]
    Decode { node: NodeName, error: postcard::Error },
    #[error("cannot encode the request: {0}")]
    Encode(postcard::Error),
}

/// The address book and one lazily connected channel per peer.
pub struct Peers {
    /// Bytes of events sent to members catching up by snapshot, since start.
    pub transferred_bytes: std::sync::atomic::AtomicU64,
    addresses: RwLock<HashMap<NodeName, NodeAddress>>,
    channels: RwLock<HashMap<NodeName, (String, Channel)>>,
    token: Option<String>,
}

impl Peers {
    pub fn new(token: Option<String>) -> Peers {
        Peers {
            transferred_bytes: std::sync::atomic::AtomicU64::new(0),
            addresses: RwLock::new(HashMap::new()),
            channels: RwLock::new(HashMap::new()),
            token,
        }
    }

    /// Records (or updates) where `address.name` is reachable.
    pub fn learn(&self, address: NodeAddress) {
        self.addresses.write().insert(address.name.clone(), address);
    }

    pub fn address(&self, name: &str) -> Option<NodeAddress> {
        self.addresses.read().get(name).cloned()
    }

    pub fn addresses(&self) -> Vec<NodeAddress> {
        let mut all: Vec<NodeAddress> = self.addresses.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn channel_to(&self, endpoint: &str, key: &str) -> Result<Channel, CallError> {
        if let Some((known, channel)) = self.channels.read().get(key)
            && known == endpoint
        {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| CallError::Status {
                node: key.to_string(),
                status: tonic::Status::invalid_argument(format!("bad endpoint {endpoint}: {e}")),
            })?
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        self.channels
            .write()
            .insert(key.to_string(), (endpoint.to_string(), channel.clone()));
        Ok(channel)
    }

    fn client(&self, node: &str) -> Result<ClusterClient<Channel>, CallError> {
        let address = self
            .address(node)
            .ok_or_else(|| CallError::UnknownNode(node.to_string()))?;
        let channel = self.channel_to(&address.internal_endpoint(), node)?;
        Ok(ClusterClient::new(channel).max_decoding_message_size(usize::MAX))
    }

    /// A client for a node known only by its internal endpoint (joining, before the address
    /// book has it).
    fn client_at(&self, endpoint: &str) -> Result<ClusterClient<Channel>, CallError> {
        let channel = self.channel_to(endpoint, endpoint)?;
        Ok(ClusterClient::new(channel).max_decoding_message_size(usize::MAX))
    }

    fn request(&self, group: &str, body: Vec<u8>) -> tonic::Request<Envelope> {
        let mut request = tonic::Request::new(Envelope {
            group: group.to_string(),
            body,
        });
        if let Some(token) = &self.token
            && let Ok(value) = MetadataValue::try_from(token.as_str())
        {
            request.metadata_mut().insert(TOKEN_METADATA_KEY, value);
        }
        request
    }

    /// Calls `kind` on `node` for `group` with `body`, answering the decoded reply.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        node: &str,
        kind: Call,
        group: &str,
        body: &Req,
    ) -> Result<Resp, CallError> {
        let client = self.client(node)?;
        self.call_with(client, node, kind, group, body).await
    }

    /// As [`Peers::call`], to an endpoint (`http://host:port`) rather than a known node.
    pub async fn call_endpoint<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        endpoint: &str,
        kind: Call,
        group: &str,
        body: &Req,
    ) -> Result<Resp, CallError> {
        let client = self.client_at(endpoint)?;
        self.call_with(client, endpoint, kind, group, body).await
    }

    async fn call_with<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        mut client: ClusterClient<Channel>,
        node: &str,
        kind: Call,
        group: &str,
        body: &Req,
    ) -> Result<Resp, CallError> {
        let request = self.request(group, encode(body).map_err(CallError::Encode)?);
        let status = |status| CallError::Status {
            node: node.to_string(),
            status,
        };
        let reply = match kind {
            Call::AppendEntries => client.append_entries(request).await,
            Call::Vote => client.vote(request).await,
            Call::FullSnapshot => client.full_snapshot(request).await,
            Call::Forward => client.forward(request).await,
            Call::Admin => client.admin(request).await,
            Call::Transfer => client.transfer(request).await,
        }
        .map_err(status)?;
        decode(&reply.into_inner().body).map_err(|error| CallError::Decode {
            node: node.to_string(),
            error,
        })
    }
}

/// The internal RPCs.
#[derive(Debug, Clone, Copy)]
pub enum Call {
    AppendEntries,
    Vote,
    FullSnapshot,
    Forward,
    Admin,
    Transfer,
}

/// openraft's network for one group: a connection per target, all through [`Peers`].
pub struct GroupNetwork {
    pub group: String,
    pub peers: Arc<Peers>,
    /// This node, whose stores a snapshot's missing transactions are read from.
    pub node: std::sync::Weak<myelin_node::Node>,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetwork {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Connection {
        Connection {
            group: self.group.clone(),
            peers: self.peers.clone(),
            target,
            name: node.name.clone(),
            role: node.role,
            node: self.node.clone(),
        }
    }
}

pub struct Connection {
    group: String,
    peers: Arc<Peers>,
    target: NodeId,
    name: NodeName,
    /// The target's role: a MESSAGING_ONLY member gets placeholders in place of events.
    role: Role,
    node: std::sync::Weak<myelin_node::Node>,
}

/// What a MESSAGING_ONLY member receives in place of an entry: events and snapshots become
/// placeholders at the same log id (Axon's `DummyEntry`); everything else is sent as it is.
/// Raft compares log ids only, so the member's log matches the leader's; it must never be
/// promoted (a role change is a removal and a new addition, as in Axon).
pub fn for_role(role: Role, mut rpc: AppendEntriesRequest<TypeConfig>) -> AppendEntriesRequest<TypeConfig> {
    if role.has_storage() {
        return rpc;
    }
    for entry in &mut rpc.entries {
        if matches!(
            entry.payload,
            EntryPayload::Normal(Command::Events(_))
                | EntryPayload::Normal(Command::EventBatch(_))
                | EntryPayload::Normal(Command::Snapshot(_))
        ) {
            entry.payload = EntryPayload::Normal(Command::Dummy);
        }
    }
    rpc
}

type RaftResult<T> = Result<T, RaftError<NodeId>>;

impl Connection {
    async fn raft_call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: Call,
        request: &Req,
    ) -> Result<Resp, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let answer: RaftResult<Resp> = self
            .peers
            .call(&self.name, kind, &self.group, request)
            .await
            .map_err(|e| match e {
                CallError::Encode(_) | CallError::Decode { .. } => RPCError::Network(NetworkError::new(&e)),
                _ => RPCError::Unreachable(Unreachable::new(&e)),
            })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// What a full snapshot carries over the wire.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SnapshotTransfer {
    pub vote: Vote,
    pub meta: SnapshotMeta<NodeId, Member>,
    pub manifest: Manifest,
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let rpc = for_role(self.role, rpc);
        self.raft_call(Call::AppendEntries, &rpc).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.raft_call(Call::Vote, &rpc).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        // The transactions the target lacks go first (none to a member that stores no events).
        if self.role.has_storage() {
            let node = self.node.upgrade().ok_or_else(|| {
                StreamingError::Unreachable(Unreachable::new(&std::io::Error::other("this node is shutting down")))
            })?;
            crate::transfer::send(&self.peers, &node, &self.group, &self.name, &snapshot.snapshot)
                .await
                .map_err(|e| StreamingError::Unreachable(Unreachable::new(&std::io::Error::other(e))))?;
        }
        let transfer = SnapshotTransfer {
            vote,
            meta: snapshot.meta,
            manifest: *snapshot.snapshot,
        };
        let answer: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> = self
            .peers
            .call(&self.name, Call::FullSnapshot, &self.group, &transfer)
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        answer.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::{EntryPayload, Vote};

    use super::*;
    use crate::codec::log_id;
    use crate::types::{ControlCommand, Entry, Transaction};

    fn request() -> AppendEntriesRequest<TypeConfig> {
        let events = Command::Events(Transaction {
            context: "default".into(),
            token: 0,
            events: vec![Bytes::from_static(b"e")],
        });
        let created = Command::Control(ControlCommand::ContextCreated {
            context: "default".into(),
            metadata: Default::default(),
        });
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: vec![
                Entry {
                    log_id: log_id(1, 0),
                    payload: EntryPayload::Blank,
                },
                Entry {
                    log_id: log_id(1, 1),
                    payload: EntryPayload::Normal(created),
                },
                Entry {
                    log_id: log_id(1, 2),
                    payload: EntryPayload::Normal(events),
                },
            ],
        }
    }

    #[test]
    fn a_messaging_only_member_gets_placeholders_for_events_at_the_same_log_ids() {
        let sent = for_role(Role::MessagingOnly, request());
        let original = request();
        assert_eq!(sent.entries.len(), 3);
        for (sent, original) in sent.entries.iter().zip(&original.entries) {
            assert_eq!(sent.log_id, original.log_id);
        }
        assert_eq!(sent.entries[0].payload, EntryPayload::Blank);
        assert_eq!(
            sent.entries[1].payload, original.entries[1].payload,
            "control entries are kept"
        );
        assert_eq!(sent.entries[2].payload, EntryPayload::Normal(Command::Dummy));
    }

    #[test]
    fn members_that_store_events_get_them() {
        for role in [Role::Primary, Role::ActiveBackup, Role::PassiveBackup] {
            assert_eq!(for_role(role, request()).entries, request().entries, "{role}");
        }
    }
}
