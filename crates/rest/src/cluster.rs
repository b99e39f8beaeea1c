//! Axon Server EE's cluster administration over REST (CLUSTER.md §6.1): the cluster's nodes,
//! init and join, replication groups and their members, with Axon's paths, JSON shapes and
//! status codes. Every handler asks the node's cluster ([`myelin_node::Node::cluster`]), which
//! a node that is not clustered answers with `NOT_RUNNING_IN_CLUSTER`; what an operation does,
//! and where it runs, is the cluster's business.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use myelin_node::{ClusterAdmin, ClusterNodeInfo, GroupMemberInfo, NodeError, ReplicationGroupInfo};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::SharedState;
use crate::admin::{ContextJson, NodeRoleJson};
use crate::error::{ErrorBody, RestError};
use crate::extract::{JsonBody, Path, Query};

/// Axon's answer to a change it accepted (or refused with a reason of its own).
#[derive(Debug, Serialize, ToSchema)]
pub struct RestResponse {
    pub success: bool,
    pub message: String,
}

fn accepted(message: String) -> (StatusCode, Json<RestResponse>) {
    (StatusCode::ACCEPTED, Json(RestResponse { success: true, message }))
}

fn ok(message: String) -> (StatusCode, Json<RestResponse>) {
    (StatusCode::OK, Json(RestResponse { success: true, message }))
}

type Answer = Result<(StatusCode, Json<RestResponse>), RestError>;

fn cluster(state: &SharedState) -> Result<std::sync::Arc<dyn ClusterAdmin>, RestError> {
    Ok(state.node.cluster()?.clone())
}

/// A node of the cluster (Axon's `JsonClusterNode`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JsonClusterNode {
    pub name: String,
    pub internal_host_name: String,
    pub internal_grpc_port: u16,
    pub host_name: String,
    pub grpc_port: u16,
    pub http_port: u16,
    /// Whether the node answering can reach it now.
    pub connected: bool,
    pub tags: BTreeMap<String, String>,
}

fn json_node(node: ClusterNodeInfo) -> JsonClusterNode {
    JsonClusterNode {
        name: node.name,
        internal_host_name: node.internal_host_name,
        internal_grpc_port: node.internal_grpc_port,
        host_name: node.host_name,
        grpc_port: node.grpc_port,
        http_port: node.http_port,
        connected: node.connected,
        tags: BTreeMap::new(),
    }
}

#[derive(Debug, Deserialize)]
pub struct InitParams {
    pub context: Option<String>,
}

/// Makes this node a cluster of one: `_admin` plus `default` (or the context given), led by it.
#[utoipa::path(
    post,
    path = "/v1/context/init",
    tag = "cluster",
    params(("context" = Option<String>, Query, description = "The context to create with the cluster (default: `default`)")),
    responses(
        (status = OK, description = "The cluster is initialised"),
        (status = BAD_REQUEST, description = "Not a cluster node, or a bad context name", body = ErrorBody),
        (status = NOT_ACCEPTABLE, description = "The node is part of a cluster already (ALREADY_MEMBER_OF_CLUSTER)", body = ErrorBody),
    )
)]
pub async fn init(State(state): State<SharedState>, Query(params): Query<InitParams>) -> Result<StatusCode, RestError> {
    let context = params
        .context
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| myelin_node::DEFAULT_CONTEXT.to_string());
    cluster(&state)?.init(vec![context]).await?;
    Ok(StatusCode::OK)
}

/// Body of `POST /v1/cluster` (Axon's `ClusterJoinRequest`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterJoinRequest {
    /// The internal host name of a node of the cluster to join.
    #[schema(min_length = 1)]
    pub internal_host_name: String,
    /// Its internal gRPC port (Axon's default 8224).
    #[schema(minimum = 1, maximum = 65535)]
    pub internal_grpc_port: u16,
    /// Join this context's replication group only (default: every group).
    pub context: Option<String>,
    /// Join no replication group, only the cluster.
    #[serde(default)]
    pub no_contexts: bool,
}

/// Makes this node join the cluster of the node named in the body.
#[utoipa::path(
    post,
    path = "/v1/cluster",
    tag = "cluster",
    request_body = ClusterJoinRequest,
    responses(
        (status = ACCEPTED, description = "Joined", body = RestResponse),
        (status = BAD_REQUEST, description = "Not a cluster node, `context` with `noContexts`, or the join failed", body = ErrorBody),
        (status = CONFLICT, description = "This node is already in a cluster of more than one node", body = RestResponse),
    )
)]
pub async fn join(State(state): State<SharedState>, JsonBody(request): JsonBody<ClusterJoinRequest>) -> Answer {
    let cluster = cluster(&state)?;
    if request.context.is_some() && request.no_contexts {
        return Err(RestError::BadRequest(
            "give either context or noContexts, not both".to_string(),
        ));
    }
    if request.internal_host_name.is_empty() || request.internal_grpc_port == 0 {
        return Err(RestError::BadRequest(
            "internalHostName and internalGrpcPort (1 to 65535) are required".to_string(),
        ));
    }
    if cluster.nodes().await?.len() > 1 {
        return Ok((
            StatusCode::CONFLICT,
            Json(RestResponse {
                success: false,
                message: format!("{} is already part of a cluster", cluster.node_name()),
            }),
        ));
    }
    let contexts = match (request.context, request.no_contexts) {
        (Some(context), _) => Some(vec![context]),
        (None, true) => Some(Vec::new()),
        (None, false) => None,
    };
    let target = format!("{}:{}", request.internal_host_name, request.internal_grpc_port);
    cluster
        .join(request.internal_host_name, request.internal_grpc_port, contexts)
        .await?;
    Ok(accepted(format!(
        "{} joined the cluster through {target}",
        cluster.node_name()
    )))
}

/// The nodes of the cluster.
#[utoipa::path(get, path = "/v1/cluster", tag = "cluster", responses(
    (status = OK, description = "Success", body = Vec<JsonClusterNode>),
    (status = BAD_REQUEST, description = "Not a cluster node", body = ErrorBody),
))]
pub async fn nodes(State(state): State<SharedState>) -> Result<Json<Vec<JsonClusterNode>>, RestError> {
    let nodes = cluster(&state)?.nodes().await?;
    Ok(Json(nodes.into_iter().map(json_node).collect()))
}

/// One node of the cluster.
#[utoipa::path(
    get,
    path = "/v1/cluster/{name}",
    tag = "cluster",
    params(("name" = String, Path, description = "The node")),
    responses(
        (status = OK, description = "Success", body = JsonClusterNode),
        (status = BAD_REQUEST, description = "Not a cluster node", body = ErrorBody),
        (status = NOT_FOUND, description = "No such node", body = ErrorBody),
    )
)]
pub async fn node(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> Result<Json<JsonClusterNode>, RestError> {
    let nodes = cluster(&state)?.nodes().await?;
    nodes
        .into_iter()
        .find(|node| node.name == name)
        .map(|node| Json(json_node(node)))
        .ok_or_else(|| {
            RestError::Node(NodeError::Cluster {
                code: myelin_node::ErrorCode::NoSuchNode,
                message: format!("node {name} is not a node of this cluster"),
            })
        })
}

/// Removes a node from every replication group and from the cluster.
#[utoipa::path(
    delete,
    path = "/v1/cluster/{name}",
    tag = "cluster",
    params(("name" = String, Path, description = "The node")),
    responses(
        (status = OK, description = "Removed", body = RestResponse),
        (status = BAD_REQUEST, description = "Not a cluster node", body = ErrorBody),
        (status = NOT_FOUND, description = "No such node", body = ErrorBody),
        (status = NOT_ACCEPTABLE, description = "The node is the last PRIMARY of a group", body = ErrorBody),
    )
)]
pub async fn remove_node(State(state): State<SharedState>, Path(name): Path<String>) -> Answer {
    cluster(&state)?.remove_node(name.clone()).await?;
    Ok(ok(format!("Node {name} removed from the cluster")))
}

/// A replication group (Axon's `ReplicationGroupJSON`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationGroupJson {
    pub name: String,
    /// The leader's name; empty while the answering node knows none.
    pub leader: String,
    pub roles: Vec<NodeRoleJson>,
    pub change_pending: bool,
    pub pending_since: i64,
    pub contexts: Vec<ContextJson>,
}

/// Every context of a group, as `GET /v1/public/context` shows it on a cluster.
pub(crate) fn contexts_json(
    group: &ReplicationGroupInfo,
    metadata: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<ContextJson> {
    group
        .contexts
        .iter()
        .map(|context| ContextJson {
            context: context.clone(),
            replication_group: Some(group.name.clone()),
            meta_data: metadata.get(context).cloned().unwrap_or_default(),
            nodes: group.members.iter().map(|m| m.node.clone()).collect(),
            leader: group.leader.clone().unwrap_or_default(),
            roles: roles_json(&group.members),
            pending_since: 0,
            change_pending: group.change_pending,
            created_at: None,
        })
        .collect()
}

pub(crate) fn roles_json(members: &[GroupMemberInfo]) -> Vec<NodeRoleJson> {
    members
        .iter()
        .map(|member| NodeRoleJson {
            node: member.node.clone(),
            role: member.role.clone(),
        })
        .collect()
}

/// The contexts' metadata this node records (a member of their group records them).
pub(crate) async fn context_metadata(
    state: &SharedState,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, RestError> {
    let control = state.node.control().clone();
    let records = crate::error::blocking(move || Ok(control.contexts()?)).await?;
    Ok(records.into_iter().map(|r| (r.name, r.metadata)).collect())
}

/// The replication groups with their members, leader and contexts.
#[utoipa::path(get, path = "/v1/public/replicationgroups", tag = "cluster", responses(
    (status = OK, description = "Success", body = Vec<ReplicationGroupJson>),
    (status = BAD_REQUEST, description = "Not a cluster node", body = ErrorBody),
))]
pub async fn replication_groups(
    State(state): State<SharedState>,
) -> Result<Json<Vec<ReplicationGroupJson>>, RestError> {
    let groups = cluster(&state)?.replication_groups().await?;
    let metadata = context_metadata(&state).await?;
    Ok(Json(
        groups
            .into_iter()
            .map(|group| ReplicationGroupJson {
                contexts: contexts_json(&group, &metadata),
                roles: roles_json(&group.members),
                leader: group.leader.unwrap_or_default(),
                change_pending: group.change_pending,
                pending_since: 0,
                name: group.name,
            })
            .collect(),
    ))
}

/// Body of `POST /v1/replicationgroups`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateReplicationGroupJson {
    /// Context-name rules: ASCII letters, digits, `_`, `-`, `.`; not starting with `_`.
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
    /// The members and their roles; at least one PRIMARY.
    pub roles: Vec<NodeRoleJson>,
}

/// Creates a replication group with its members.
#[utoipa::path(
    post,
    path = "/v1/replicationgroups",
    tag = "cluster",
    request_body = CreateReplicationGroupJson,
    responses(
        (status = OK, description = "Created; every member is part of it", body = RestResponse),
        (status = BAD_REQUEST, description = "No roles, no PRIMARY, an unknown or unsupported role, a bad name, or the group exists", body = ErrorBody),
        (status = NOT_FOUND, description = "A member is not a node of the cluster", body = ErrorBody),
    )
)]
pub async fn create_replication_group(
    State(state): State<SharedState>,
    JsonBody(body): JsonBody<CreateReplicationGroupJson>,
) -> Answer {
    let members = body
        .roles
        .into_iter()
        .map(|role| GroupMemberInfo {
            node: role.node,
            role: role.role,
        })
        .collect();
    cluster(&state)?
        .create_replication_group(body.name.clone(), members)
        .await?;
    Ok(ok(format!("Replication group {} created", body.name)))
}

#[derive(Debug, Deserialize)]
pub struct RoleParams {
    pub role: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreserveParams {
    #[serde(default)]
    pub preserve_event_store: bool,
}

/// Adds a node to a replication group with a role (PRIMARY by default); a member with another
/// role is removed (keeping its event store) and added again with the new one.
#[utoipa::path(
    post,
    path = "/v1/replicationgroups/{group}/{node}",
    tag = "cluster",
    params(
        ("group" = String, Path, description = "The replication group"),
        ("node" = String, Path, description = "The node"),
        ("role" = Option<String>, Query, description = "PRIMARY (default), ACTIVE_BACKUP, PASSIVE_BACKUP or MESSAGING_ONLY"),
    ),
    responses(
        (status = ACCEPTED, description = "The node is a member", body = RestResponse),
        (status = BAD_REQUEST, description = "An unknown or unsupported role, or not a cluster node", body = ErrorBody),
        (status = NOT_FOUND, description = "No such group or node", body = ErrorBody),
    )
)]
pub async fn add_node_to_group(
    State(state): State<SharedState>,
    Path((group, node)): Path<(String, String)>,
    Query(params): Query<RoleParams>,
) -> Answer {
    let role = params.role.unwrap_or_else(|| "PRIMARY".to_string());
    cluster(&state)?
        .add_node_to_replication_group(group.clone(), node.clone(), role.clone())
        .await?;
    Ok(accepted(format!(
        "Started to add node {node} to replication group {group} with role {}",
        role.to_ascii_uppercase()
    )))
}

/// Removes a node from a replication group; it deletes its copy of the group's event stores
/// unless `preserveEventStore`.
#[utoipa::path(
    delete,
    path = "/v1/replicationgroups/{group}/{node}",
    tag = "cluster",
    params(
        ("group" = String, Path, description = "The replication group"),
        ("node" = String, Path, description = "The node"),
        ("preserveEventStore" = Option<bool>, Query, description = "Keep the node's event and snapshot files (default false)"),
    ),
    responses(
        (status = ACCEPTED, description = "The node left the group", body = RestResponse),
        (status = BAD_REQUEST, description = "Not a cluster node", body = ErrorBody),
        (status = FORBIDDEN, description = "The node is not a member of the group", body = ErrorBody),
        (status = NOT_FOUND, description = "No such group", body = ErrorBody),
        (status = NOT_ACCEPTABLE, description = "The node is the group's last PRIMARY (CANNOT_REMOVE_LAST_NODE)", body = ErrorBody),
    )
)]
pub async fn remove_node_from_group(
    State(state): State<SharedState>,
    Path((group, node)): Path<(String, String)>,
    Query(params): Query<PreserveParams>,
) -> Answer {
    cluster(&state)?
        .remove_node_from_replication_group(group.clone(), node.clone(), params.preserve_event_store)
        .await?;
    Ok(accepted(format!("Removed node {node} from replication group {group}")))
}

/// Deletes a replication group with its contexts.
#[utoipa::path(
    delete,
    path = "/v1/replicationgroups/{name}",
    tag = "cluster",
    params(
        ("name" = String, Path, description = "The replication group"),
        ("preserveEventStore" = Option<bool>, Query, description = "Keep the members' event and snapshot files (default false)"),
    ),
    responses(
        (status = OK, description = "Deleted", body = RestResponse),
        (status = BAD_REQUEST, description = "Not a cluster node", body = ErrorBody),
        (status = FORBIDDEN, description = "An internal group (`_admin`): CANNOT_DELETE_INTERNAL_CONTEXT", body = ErrorBody),
        (status = NOT_FOUND, description = "No such group", body = ErrorBody),
    )
)]
pub async fn delete_replication_group(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    Query(params): Query<PreserveParams>,
) -> Answer {
    cluster(&state)?
        .delete_replication_group(name.clone(), params.preserve_event_store)
        .await?;
    Ok(ok(format!("Replication group {name} deleted")))
}

/// The roles a node can have in a replication group.
#[utoipa::path(get, path = "/v1/replicationgroups/roles", tag = "cluster", responses(
    (status = OK, description = "The role names", body = Vec<String>),
))]
pub async fn roles() -> Json<Vec<&'static str>> {
    Json(
        myelin_control::REPLICATION_ROLES
            .iter()
            .map(|(_, name)| *name)
            .collect(),
    )
}
