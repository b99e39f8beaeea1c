//! Node-to-node traffic, server side: the `myelin.cluster.Cluster` service on the internal
//! port. Each call names its group; openraft's calls go to that group's Raft, forwarded writes
//! and admin calls to the cluster. With an internal token configured, calls without it are
//! refused before anything is decoded.

use std::sync::Arc;

use myelin_proto::myelin::cluster::Envelope;
use myelin_proto::myelin::cluster::cluster_server::{Cluster, ClusterServer};
use openraft::Snapshot;
use serde::Serialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};

use crate::cluster::{AdminRequest, ClusterNode, Forwarded};
use crate::group::Group;
use crate::network::{SnapshotTransfer, TOKEN_METADATA_KEY, decode, encode};
use crate::types::VoteRequest;

/// The service, ready to add to a tonic server.
pub fn service(cluster: Arc<ClusterNode>) -> ClusterServer<ClusterService> {
    ClusterServer::new(ClusterService { cluster })
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

pub struct ClusterService {
    cluster: Arc<ClusterNode>,
}

fn reply<T: Serialize>(group: String, value: &T) -> Result<Response<Envelope>, Status> {
    let body = encode(value).map_err(|e| Status::internal(format!("cannot encode the answer: {e}")))?;
    Ok(Response::new(Envelope { group, body }))
}

fn body<T: DeserializeOwned>(envelope: &Envelope) -> Result<T, Status> {
    decode(&envelope.body).map_err(|e| Status::invalid_argument(format!("cannot decode the request: {e}")))
}

impl ClusterService {
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(expected) = &self.cluster.config().internal_token else {
            return Ok(());
        };
        let given = request
            .metadata()
            .get(TOKEN_METADATA_KEY)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if bool::from(given.ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(Status::permission_denied("the internal token is missing or wrong"))
        }
    }

    fn open(&self, request: Request<Envelope>) -> Result<(Envelope, Arc<Group>), Status> {
        self.check(&request)?;
        let envelope = request.into_inner();
        let group = self
            .cluster
            .group(&envelope.group)
            .ok_or_else(|| Status::not_found(format!("group {} is not open on this node", envelope.group)))?;
        Ok((envelope, group))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn append_entries(&self, request: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let (envelope, group) = self.open(request)?;
        group.heard_from_leader();
        let answer = group.raft.append_entries(body(&envelope)?).await;
        reply(envelope.group, &answer)
    }

    async fn vote(&self, request: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let (envelope, group) = self.open(request)?;
        let vote: VoteRequest = body(&envelope)?;
        let answer = group.raft.vote(vote.clone()).await;
        if let Ok(response) = &answer {
            group.after_vote(&vote, response);
        }
        reply(envelope.group, &answer)
    }

    async fn full_snapshot(&self, request: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let (envelope, group) = self.open(request)?;
        let transfer: SnapshotTransfer = body(&envelope)?;
        let snapshot = Snapshot {
            meta: transfer.meta,
            snapshot: Box::new(transfer.manifest),
        };
        let answer = group.raft.install_full_snapshot(transfer.vote, snapshot).await;
        reply(envelope.group, &answer)
    }

    async fn forward(&self, request: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        self.check(&request)?;
        let envelope = request.into_inner();
        let forwarded: Forwarded = body(&envelope)?;
        let answer = self.cluster.forwarded(&envelope.group, forwarded).await;
        reply(envelope.group, &answer)
    }

    async fn transfer(&self, request: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        self.check(&request)?;
        let envelope = request.into_inner();
        let transfer: crate::transfer::TransferRequest = body(&envelope)?;
        let answer = crate::transfer::receive(&self.cluster, &envelope.group, transfer).await;
        reply(envelope.group, &answer)
    }

    async fn admin(&self, request: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        self.check(&request)?;
        let envelope = request.into_inner();
        let admin: AdminRequest = body(&envelope)?;
        let answer = self.cluster.admin(admin).await;
        reply(envelope.group, &answer)
    }
}
