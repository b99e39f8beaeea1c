//! Axon Server's gRPC administration of replication groups and contexts
//! (`io.axoniq.axonserver.grpc.admin`: `ReplicationGroupAdminService`, `ContextAdminService`),
//! thin adapters over the node ([`myelin_node::Node`]) and its cluster
//! ([`myelin_node::ClusterAdmin`]).
//!
//! A call that changes something answers an empty stream that ends once the change is done,
//! as Axon's "stream Empty" calls do; a failure is the stream's status, with Axon's code. On a
//! node that is not clustered, the replication-group calls answer `NOT_RUNNING_IN_CLUSTER` and
//! the context calls act on this node's own contexts. Calls Myelin does not implement answer
//! `UNIMPLEMENTED` with `UNSUPPORTED_INSTRUCTION`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use myelin_node::{
    ClusterAdmin, ClusterNodeInfo, DeleteContext, ErrorCode, GroupMemberInfo, Node, NodeError, ReplicationGroupInfo,
};
use myelin_proto::grpc::admin::context_admin_service_server::ContextAdminService;
use myelin_proto::grpc::admin::replication_group_admin_service_server::ReplicationGroupAdminService;
use myelin_proto::grpc::admin::{
    ContextOverview, ContextUpdate, CreateContextRequest, CreateReplicationGroupRequest, DeleteContextRequest,
    DeleteReplicationGroupRequest, GetContextRequest, GetReplicationGroupRequest, JoinReplicationGroup,
    LeaveReplicationGroup, NodeOverview, ReplicationGroupMember, ReplicationGroupOverview, Role,
    UpdateContextPropertiesRequest,
};
use tonic::{Request, Response, Status};

use crate::error::status;

/// The node the admin services administer. A newtype so that the gRPC settings stay `Debug`.
#[derive(Clone)]
pub struct AdminNode(pub Arc<Node>);

impl fmt::Debug for AdminNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AdminNode").field(&self.0.identity().name).finish()
    }
}

/// A stream of answers, all known when the call answers.
pub type Answers<T> = tokio_stream::Iter<std::vec::IntoIter<Result<T, Status>>>;

/// The empty stream that says "done".
fn done() -> Result<Response<Answers<()>>, Status> {
    Ok(Response::new(tokio_stream::iter(Vec::new())))
}

fn answers<T>(items: Vec<T>) -> Response<Answers<T>> {
    Response::new(tokio_stream::iter(items.into_iter().map(Ok).collect::<Vec<_>>()))
}

fn unsupported(what: &str) -> Status {
    status(NodeError::Unsupported(format!("{what} is not supported by Myelin")))
}

/// Both services, over one node.
#[derive(Clone)]
pub struct Admin {
    node: Arc<Node>,
}

impl Admin {
    pub fn new(node: AdminNode) -> Admin {
        Admin { node: node.0 }
    }

    fn cluster(&self) -> Result<Arc<dyn ClusterAdmin>, Status> {
        self.node.cluster().cloned().map_err(status)
    }

    /// Runs blocking node work (SQLite, files, store shutdown) off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Node) -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, Status> {
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || work(&node))
            .await
            .map_err(|e| status(NodeError::Internal(format!("a background task failed: {e}"))))?
            .map_err(status)
    }

    /// The groups with each member's client address, as the overviews carry them.
    async fn group_overviews(&self, cluster: &dyn ClusterAdmin) -> Result<Vec<ReplicationGroupOverview>, Status> {
        let nodes: HashMap<String, ClusterNodeInfo> = cluster
            .nodes()
            .await
            .map_err(status)?
            .into_iter()
            .map(|node| (node.name.clone(), node))
            .collect();
        let groups = cluster.replication_groups().await.map_err(status)?;
        Ok(groups.into_iter().map(|group| group_overview(group, &nodes)).collect())
    }

    /// Every context with its group: the cluster's, or this node's own.
    async fn context_overviews(&self) -> Result<Vec<ContextOverview>, Status> {
        let records: HashMap<String, BTreeMap<String, String>> = self
            .blocking(|node| Ok(node.control().contexts()?))
            .await?
            .into_iter()
            .map(|record| (record.name, record.metadata))
            .collect();
        let metadata = |name: &str| -> HashMap<String, String> {
            records
                .get(name)
                .map(|m| m.clone().into_iter().collect())
                .unwrap_or_default()
        };
        let Ok(cluster) = self.node.cluster().cloned() else {
            let me = self.node.identity();
            return Ok(self
                .node
                .contexts()
                .names()
                .into_iter()
                .map(|name| ContextOverview {
                    meta_data: metadata(&name),
                    replication_group: Some(ReplicationGroupOverview {
                        name: name.clone(),
                        members: vec![ReplicationGroupMember {
                            node_name: me.name.clone(),
                            host: me.host_name.clone(),
                            port: i32::from(me.grpc_port),
                            role: Role::Primary as i32,
                            pending_delete: false,
                        }],
                        contexts: vec![name.clone()],
                        ..ReplicationGroupOverview::default()
                    }),
                    name,
                    ..ContextOverview::default()
                })
                .collect());
        };
        let mut overviews = Vec::new();
        for group in self.group_overviews(cluster.as_ref()).await? {
            for context in &group.contexts {
                overviews.push(ContextOverview {
                    name: context.clone(),
                    meta_data: metadata(context),
                    change_pending: group.change_pending,
                    replication_group: Some(group.clone()),
                    ..ContextOverview::default()
                });
            }
        }
        overviews.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(overviews)
    }
}

fn group_overview(group: ReplicationGroupInfo, nodes: &HashMap<String, ClusterNodeInfo>) -> ReplicationGroupOverview {
    ReplicationGroupOverview {
        members: group
            .members
            .iter()
            .map(|member| {
                let node = nodes.get(&member.node);
                ReplicationGroupMember {
                    node_name: member.node.clone(),
                    host: node.map(|n| n.host_name.clone()).unwrap_or_default(),
                    port: node.map_or(0, |n| i32::from(n.grpc_port)),
                    role: Role::from_str_name(&format!("ROLE_{}", member.role)).map_or(0, |role| role as i32),
                    pending_delete: false,
                }
            })
            .collect(),
        change_pending: group.change_pending,
        contexts: group.contexts,
        name: group.name,
        pending_since: 0,
    }
}

/// A role number of `admin.proto` as Axon's role name (`PRIMARY`, ...), which the cluster
/// checks; a number that is no role is passed on as it is, to be refused with its value.
fn role_name(number: i32) -> String {
    match Role::try_from(number) {
        Ok(role) => role.as_str_name().trim_start_matches("ROLE_").to_string(),
        Err(_) => number.to_string(),
    }
}

#[tonic::async_trait]
impl ReplicationGroupAdminService for Admin {
    type GetNodesStream = Answers<NodeOverview>;

    async fn get_nodes(&self, _request: Request<()>) -> Result<Response<Answers<NodeOverview>>, Status> {
        let nodes = self.cluster()?.nodes().await.map_err(status)?;
        Ok(answers(
            nodes
                .into_iter()
                .map(|node| NodeOverview {
                    host_name: node.host_name,
                    grpc_port: i32::from(node.grpc_port),
                    http_port: i32::from(node.http_port),
                    node_name: node.name,
                    replication_groups: node.replication_groups,
                    tags: HashMap::new(),
                })
                .collect(),
        ))
    }

    type CreateReplicationGroupStream = Answers<()>;

    async fn create_replication_group(
        &self,
        request: Request<CreateReplicationGroupRequest>,
    ) -> Result<Response<Answers<()>>, Status> {
        let request = request.into_inner();
        let members = request
            .members
            .into_iter()
            .map(|member| GroupMemberInfo {
                node: member.node_name,
                role: role_name(member.role),
            })
            .collect();
        self.cluster()?
            .create_replication_group(request.name, members)
            .await
            .map_err(status)?;
        done()
    }

    type GetReplicationGroupsStream = Answers<ReplicationGroupOverview>;

    async fn get_replication_groups(
        &self,
        _request: Request<()>,
    ) -> Result<Response<Answers<ReplicationGroupOverview>>, Status> {
        let cluster = self.cluster()?;
        Ok(answers(self.group_overviews(cluster.as_ref()).await?))
    }

    async fn get_replication_group(
        &self,
        request: Request<GetReplicationGroupRequest>,
    ) -> Result<Response<ReplicationGroupOverview>, Status> {
        let name = request.into_inner().name;
        let cluster = self.cluster()?;
        self.group_overviews(cluster.as_ref())
            .await?
            .into_iter()
            .find(|group| group.name == name)
            .map(Response::new)
            .ok_or_else(|| {
                status(NodeError::Cluster {
                    code: ErrorCode::ContextNotFound,
                    message: format!("replication group {name} not found"),
                })
            })
    }

    type DeleteReplicationGroupStream = Answers<()>;

    async fn delete_replication_group(
        &self,
        request: Request<DeleteReplicationGroupRequest>,
    ) -> Result<Response<Answers<()>>, Status> {
        let request = request.into_inner();
        self.cluster()?
            .delete_replication_group(request.name, request.preserve_event_store)
            .await
            .map_err(status)?;
        done()
    }

    type AddNodeToReplicationGroupStream = Answers<()>;

    async fn add_node_to_replication_group(
        &self,
        request: Request<JoinReplicationGroup>,
    ) -> Result<Response<Answers<()>>, Status> {
        let request = request.into_inner();
        self.cluster()?
            .add_node_to_replication_group(
                request.replication_group_name,
                request.node_name,
                role_name(request.role),
            )
            .await
            .map_err(status)?;
        done()
    }

    type RemoveNodeFromReplicationGroupStream = Answers<()>;

    async fn remove_node_from_replication_group(
        &self,
        request: Request<LeaveReplicationGroup>,
    ) -> Result<Response<Answers<()>>, Status> {
        let request = request.into_inner();
        self.cluster()?
            .remove_node_from_replication_group(
                request.replication_group_name,
                request.node_name,
                request.preserve_event_store,
            )
            .await
            .map_err(status)?;
        done()
    }
}

#[tonic::async_trait]
impl ContextAdminService for Admin {
    type CreateContextStream = Answers<()>;

    async fn create_context(&self, request: Request<CreateContextRequest>) -> Result<Response<Answers<()>>, Status> {
        let request = request.into_inner();
        if request.dcb_context {
            return Err(unsupported("a DCB context"));
        }
        let metadata: BTreeMap<String, String> = request.meta_data.into_iter().collect();
        match self.node.cluster().cloned() {
            Ok(cluster) => cluster
                .create_context(request.name, request.replication_group_name, Vec::new(), metadata)
                .await
                .map_err(status)?,
            Err(_) => {
                let name = request.name;
                self.blocking(move |node| node.create_context(&name, &metadata)).await?
            }
        }
        done()
    }

    type UpdateContextPropertiesStream = Answers<()>;

    async fn update_context_properties(
        &self,
        _request: Request<UpdateContextPropertiesRequest>,
    ) -> Result<Response<Answers<()>>, Status> {
        Err(unsupported("UpdateContextProperties"))
    }

    type DeleteContextStream = Answers<()>;

    async fn delete_context(&self, request: Request<DeleteContextRequest>) -> Result<Response<Answers<()>>, Status> {
        let request = request.into_inner();
        match self.node.cluster().cloned() {
            Ok(cluster) => cluster
                .delete_context(request.name, request.preserve_event_store)
                .await
                .map_err(status)?,
            Err(_) => {
                let how = DeleteContext {
                    preserve_event_store: request.preserve_event_store,
                    force: false,
                };
                let name = request.name;
                self.blocking(move |node| node.delete_context(&name, how)).await?
            }
        }
        done()
    }

    async fn get_context(&self, request: Request<GetContextRequest>) -> Result<Response<ContextOverview>, Status> {
        let name = request.into_inner().name;
        self.context_overviews()
            .await?
            .into_iter()
            .find(|context| context.name == name)
            .map(Response::new)
            .ok_or_else(|| status(NodeError::UnknownContext(name)))
    }

    type GetContextsStream = Answers<ContextOverview>;

    async fn get_contexts(&self, _request: Request<()>) -> Result<Response<Answers<ContextOverview>>, Status> {
        Ok(answers(self.context_overviews().await?))
    }

    type SubscribeContextUpdatesStream = Answers<ContextUpdate>;

    async fn subscribe_context_updates(
        &self,
        _request: Request<()>,
    ) -> Result<Response<Answers<ContextUpdate>>, Status> {
        Err(unsupported("SubscribeContextUpdates"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_role_numbers_become_axons_role_names() {
        assert_eq!(role_name(0), "PRIMARY");
        assert_eq!(role_name(3), "PASSIVE_BACKUP");
        assert_eq!(role_name(5), "SECONDARY");
        assert_eq!(role_name(1), "1");
    }
}
