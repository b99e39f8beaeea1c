//! Administration: contexts, users and applications, with Axon Server's paths and JSON shapes,
//! and `/v1/public/me`.
//!
//! Creating and deleting a context is the node's business ([`myelin_node::Node`]: the order of
//! the steps, the roll-back, the in-use and backup-lease refusals); these handlers parse the
//! request, run the node's method off the async threads and render its answer. On a cluster
//! node they ask the cluster instead ([`myelin_node::ClusterAdmin`]): a context lives in a
//! replication group, and listings show its group, members and leader.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use myelin_control::{ApplicationRecord, Grant, Principal, Role, UserRecord};
use myelin_node::DeleteContext;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::SharedState;
use crate::error::{ErrorBody, RestError, blocking};
use crate::extract::{JsonBody, Path, Query};

/// One context as `GET /v1/public/context` describes it (Axon EE's shape).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextJson {
    pub context: String,
    /// The replication group the context lives in (cluster nodes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_group: Option<String>,
    pub meta_data: BTreeMap<String, String>,
    pub nodes: Vec<String>,
    pub leader: String,
    pub roles: Vec<NodeRoleJson>,
    pub pending_since: i64,
    pub change_pending: bool,
    /// When the context was created (epoch ms), if the control database knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeRoleJson {
    pub role: String,
    pub node: String,
}

/// A context with what the store says about it (`GET /v1/context`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextDetailJson {
    #[serde(flatten)]
    pub context: ContextJson,
    pub first_token: i64,
    pub last_token: i64,
    pub tracking_streams: usize,
    pub connected_clients: usize,
    /// Why appends are refused, if they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poisoned: Option<String>,
}

async fn context_records(state: &SharedState) -> Result<HashMap<String, myelin_control::ContextRecord>, RestError> {
    let control = state.node.control().clone();
    let records = blocking(move || Ok(control.contexts()?)).await?;
    Ok(records.into_iter().map(|r| (r.name.clone(), r)).collect())
}

fn context_json(state: &SharedState, name: &str, record: Option<&myelin_control::ContextRecord>) -> ContextJson {
    let node = state.node.identity().name.clone();
    ContextJson {
        context: name.to_string(),
        replication_group: None,
        meta_data: record.map(|r| r.metadata.clone()).unwrap_or_default(),
        nodes: vec![node.clone()],
        leader: node.clone(),
        roles: vec![NodeRoleJson {
            role: "PRIMARY".to_string(),
            node,
        }],
        pending_since: 0,
        change_pending: false,
        created_at: record.map(|r| r.created_at_ms),
    }
}

/// On a cluster node, every context of the cluster as listings show it, by name; `None` on a
/// single node.
async fn cluster_contexts(state: &SharedState) -> Result<Option<BTreeMap<String, ContextJson>>, RestError> {
    let Ok(cluster) = state.node.cluster() else {
        return Ok(None);
    };
    let groups = cluster.replication_groups().await?;
    let metadata = crate::cluster::context_metadata(state).await?;
    Ok(Some(
        groups
            .iter()
            .flat_map(|group| crate::cluster::contexts_json(group, &metadata))
            .map(|context| (context.context.clone(), context))
            .collect(),
    ))
}

/// The contexts this node serves (on a cluster: every context of the cluster, with its
/// replication group and members).
#[utoipa::path(get, path = "/v1/public/context", tag = "admin", responses((status = OK, description = "Success", body = Vec<ContextJson>)))]
pub async fn public_contexts(State(state): State<SharedState>) -> Result<Json<Vec<ContextJson>>, RestError> {
    if let Some(contexts) = cluster_contexts(&state).await? {
        return Ok(Json(contexts.into_values().collect()));
    }
    let records = context_records(&state).await?;
    let names = state.node.contexts().names();
    Ok(Json(
        names
            .iter()
            .map(|name| context_json(&state, name, records.get(name)))
            .collect(),
    ))
}

/// The contexts with their store's state.
#[utoipa::path(get, path = "/v1/context", tag = "admin", responses((status = OK, description = "Success", body = Vec<ContextDetailJson>)))]
pub async fn list_contexts(State(state): State<SharedState>) -> Result<Json<Vec<ContextDetailJson>>, RestError> {
    let records = context_records(&state).await?;
    let mut clustered = cluster_contexts(&state).await?;
    let details = state
        .node
        .contexts()
        .names()
        .iter()
        .filter_map(|name| {
            let context = state.node.contexts().get(name)?;
            let store = context.store();
            let json = match clustered.as_mut().and_then(|contexts| contexts.remove(name)) {
                Some(json) => ContextJson {
                    created_at: records.get(name).map(|r| r.created_at_ms),
                    ..json
                },
                None => context_json(&state, name, records.get(name)),
            };
            Some(ContextDetailJson {
                context: json,
                first_token: store.first_token(),
                last_token: store.last_token(),
                tracking_streams: context.tracking_streams(),
                connected_clients: state.node.contexts().connected_clients(name),
                poisoned: store.poisoned(),
            })
        })
        .collect();
    Ok(Json(details))
}

/// Body of `POST /v1/context`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateContextJson {
    /// 1 to 255 ASCII letters, digits, `_`, `-` and `.`; not starting with `_` (reserved),
    /// and not `.` or `..`.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^([A-Za-z0-9-][A-Za-z0-9_.-]*|\.[A-Za-z0-9_-]|\.[A-Za-z0-9_.-]{2,})$"
    )]
    pub context: String,
    #[serde(default)]
    pub meta_data: BTreeMap<String, String>,
    /// On a cluster: the replication group to create the context in (default: the context's
    /// name). Ignored on a single node.
    #[serde(default)]
    pub replication_group: Option<String>,
    /// On a cluster: the members of the replication group, when it has to be created.
    #[serde(default)]
    pub roles: Vec<NodeRoleJson>,
}

/// Creates a context and opens its stores (on a cluster: in its replication group, created
/// first when it does not exist and roles are given).
#[utoipa::path(
    post,
    path = "/v1/context",
    tag = "admin",
    request_body = CreateContextJson,
    responses(
        (status = OK, description = "Created; its stores are open"),
        (status = BAD_REQUEST, description = "Invalid name; on a cluster also: a group to create without roles, an unknown role", body = ErrorBody),
        (status = CONFLICT, description = "The context exists, or a file holds the place of its directory", body = ErrorBody),
    )
)]
pub async fn create_context(
    State(state): State<SharedState>,
    JsonBody(body): JsonBody<CreateContextJson>,
) -> Result<StatusCode, RestError> {
    if let Ok(cluster) = state.node.cluster() {
        let members = body
            .roles
            .into_iter()
            .map(|role| myelin_node::GroupMemberInfo {
                node: role.node,
                role: role.role,
            })
            .collect();
        let group = body.replication_group.unwrap_or_default();
        cluster
            .create_context(body.context, group, members, body.meta_data)
            .await?;
        return Ok(StatusCode::OK);
    }
    let node = state.node.clone();
    blocking(move || Ok(node.create_context(&body.context, &body.meta_data)?)).await?;
    Ok(StatusCode::OK)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteContextParams {
    #[serde(default)]
    pub preserve_event_store: bool,
    #[serde(default)]
    pub force: bool,
}

/// Deletes a context.
#[utoipa::path(
    delete,
    path = "/v1/context/{name}",
    tag = "admin",
    params(
        ("name" = String, Path, description = "The context"),
        ("preserveEventStore" = Option<bool>, Query, description = "Keep the event and snapshot files (default false)"),
        ("force" = Option<bool>, Query, description = "Delete even while clients use it (default false)"),
    ),
    responses(
        (status = OK, description = "Deleted"),
        (status = NOT_FOUND, description = "No such resource", body = ErrorBody),
        (status = CONFLICT, description = "Clients use the context, or a backup lease is live and the files would be deleted", body = ErrorBody),
    )
)]
pub async fn delete_context(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    Query(params): Query<DeleteContextParams>,
) -> Result<StatusCode, RestError> {
    if let Ok(cluster) = state.node.cluster() {
        // The cluster decides on every member; clients there do not hold the deletion up.
        cluster.delete_context(name, params.preserve_event_store).await?;
        return Ok(StatusCode::OK);
    }
    let how = DeleteContext {
        preserve_event_store: params.preserve_event_store,
        force: params.force,
    };
    let node = state.node.clone();
    blocking(move || Ok(node.delete_context(&name, how)?)).await?;
    Ok(StatusCode::OK)
}

/// A role on a context: `{"context": "default", "role": "READ"}`. `"*"` is every context.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct RoleJson {
    /// `*` (every context) or a context name.
    #[schema(pattern = r"^(\*|[A-Za-z0-9_.-]{1,255})$")]
    pub context: String,
    /// ADMIN, READ, WRITE or USE_CONTEXT, case-insensitive.
    #[schema(
        pattern = r"^([Aa][Dd][Mm][Ii][Nn]|[Rr][Ee][Aa][Dd]|[Ww][Rr][Ii][Tt][Ee]|[Uu][Ss][Ee]_[Cc][Oo][Nn][Tt][Ee][Xx][Tt])$"
    )]
    pub role: String,
}

/// A role as text: `ROLE` (on every context) or `ROLE@context`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(
    pattern = r"^([Aa][Dd][Mm][Ii][Nn]|[Rr][Ee][Aa][Dd]|[Ww][Rr][Ii][Tt][Ee]|[Uu][Ss][Ee]_[Cc][Oo][Nn][Tt][Ee][Xx][Tt])(@(\*|[A-Za-z0-9_.-]{1,255}))?$"
)]
pub struct RoleText(pub String);

/// A role as Axon SE wrote it (`"ADMIN"`, every context) or EE writes it (an object); also
/// `"ROLE@context"`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RoleSpec {
    Text(RoleText),
    Object(RoleJson),
}

fn grant(spec: RoleSpec) -> Result<Grant, RestError> {
    let (role, context) = match spec {
        RoleSpec::Text(RoleText(text)) => match text.split_once('@') {
            Some((role, context)) => (role.to_string(), context.to_string()),
            None => (text, "*".to_string()),
        },
        RoleSpec::Object(json) => (json.role, json.context),
    };
    let role: Role = role.parse().map_err(|_| {
        RestError::BadRequest(format!(
            "Unknown role '{role}'; accepted: ADMIN, READ, WRITE, USE_CONTEXT"
        ))
    })?;
    Ok(Grant { context, role })
}

fn role_json(grant: &Grant) -> RoleJson {
    RoleJson {
        context: grant.context.clone(),
        role: grant.role.to_string(),
    }
}

/// A user as listed (never with its password).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserJson {
    pub user_name: String,
    pub roles: Vec<RoleJson>,
}

fn user_json(user: &UserRecord) -> UserJson {
    UserJson {
        user_name: user.name.clone(),
        roles: user.roles.iter().map(role_json).collect(),
    }
}

/// Body of `POST /v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateUserJson {
    /// 1 to 255 bytes, no control characters.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub user_name: String,
    #[schema(min_length = 1)]
    pub password: String,
    #[serde(default)]
    pub roles: Vec<RoleSpec>,
}

async fn users(state: &SharedState) -> Result<Json<Vec<UserJson>>, RestError> {
    let control = state.node.control().clone();
    let users = blocking(move || Ok(control.users()?)).await?;
    Ok(Json(users.iter().map(user_json).collect()))
}

/// The users.
#[utoipa::path(get, path = "/v1/users", tag = "admin", responses((status = OK, description = "Success", body = Vec<UserJson>)))]
pub async fn list_users(State(state): State<SharedState>) -> Result<Json<Vec<UserJson>>, RestError> {
    users(&state).await
}

/// The users (Axon's public path).
#[utoipa::path(get, path = "/v1/public/users", tag = "admin", responses((status = OK, description = "Success", body = Vec<UserJson>)))]
pub async fn public_users(State(state): State<SharedState>) -> Result<Json<Vec<UserJson>>, RestError> {
    users(&state).await
}

/// Creates a user, or replaces its password and roles.
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "admin",
    request_body = CreateUserJson,
    responses((status = OK, description = "Stored"), (status = BAD_REQUEST, description = "Bad or missing parameter", body = ErrorBody))
)]
pub async fn upsert_user(
    State(state): State<SharedState>,
    JsonBody(body): JsonBody<CreateUserJson>,
) -> Result<StatusCode, RestError> {
    let grants = body.roles.into_iter().map(grant).collect::<Result<Vec<_>, _>>()?;
    let control = state.node.control().clone();
    blocking(move || Ok(control.upsert_user(&body.user_name, &body.password, &grants)?)).await?;
    Ok(StatusCode::OK)
}

/// Deletes a user.
#[utoipa::path(
    delete,
    path = "/v1/users/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "The user")),
    responses((status = OK, description = "Deleted"), (status = NOT_FOUND, description = "No such resource", body = ErrorBody))
)]
pub async fn delete_user(State(state): State<SharedState>, Path(name): Path<String>) -> Result<StatusCode, RestError> {
    let control = state.node.control().clone();
    let deleted = blocking(move || Ok(control.delete_user(&name).map(|deleted| (deleted, name))?)).await?;
    match deleted {
        (true, _) => Ok(StatusCode::OK),
        (false, name) => Err(RestError::NotFound(format!("User {name} not found"))),
    }
}

/// An application's roles on one context (Axon EE's shape).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ApplicationRolesJson {
    /// `*` (every context) or a context name.
    #[schema(pattern = r"^(\*|[A-Za-z0-9_.-]{1,255})$")]
    pub context: String,
    /// ADMIN, READ, WRITE or USE_CONTEXT, case-insensitive.
    #[schema(value_type = Vec<RoleName>)]
    pub roles: Vec<String>,
}

/// ADMIN, READ, WRITE or USE_CONTEXT, case-insensitive (documentation only: roles travel as
/// strings).
#[derive(ToSchema)]
#[schema(
    pattern = r"^([Aa][Dd][Mm][Ii][Nn]|[Rr][Ee][Aa][Dd]|[Ww][Rr][Ii][Tt][Ee]|[Uu][Ss][Ee]_[Cc][Oo][Nn][Tt][Ee][Xx][Tt])$"
)]
pub struct RoleName(pub String);

/// An application as listed (never with its token).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationJson {
    pub name: String,
    pub description: String,
    pub roles: Vec<ApplicationRolesJson>,
    pub created_at: i64,
}

fn application_json(application: &ApplicationRecord) -> ApplicationJson {
    let mut by_context: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for grant in &application.roles {
        by_context
            .entry(&grant.context)
            .or_default()
            .push(grant.role.to_string());
    }
    ApplicationJson {
        name: application.name.clone(),
        description: application.description.clone(),
        roles: by_context
            .into_iter()
            .map(|(context, roles)| ApplicationRolesJson {
                context: context.to_string(),
                roles,
            })
            .collect(),
        created_at: application.created_at_ms,
    }
}

/// Body of `POST /v1/applications`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateApplicationJson {
    /// 1 to 255 bytes, no control characters.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub name: String,
    /// At most 4096 bytes.
    #[serde(default)]
    #[schema(max_length = 4096)]
    pub description: String,
    #[serde(default)]
    pub roles: Vec<ApplicationRolesJson>,
    /// Not accepted (leave it out, or null): Myelin generates every token, so that each is
    /// long and random.
    #[serde(default)]
    #[schema(schema_with = absent)]
    pub token: Option<String>,
}

/// The schema of a field that must be absent or null.
fn absent() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Null)
        .description(Some("Not accepted: leave it out or null"))
        .build()
}

async fn applications(state: &SharedState) -> Result<Json<Vec<ApplicationJson>>, RestError> {
    let control = state.node.control().clone();
    let applications = blocking(move || Ok(control.applications()?)).await?;
    Ok(Json(applications.iter().map(application_json).collect()))
}

/// The applications.
#[utoipa::path(get, path = "/v1/applications", tag = "admin", responses((status = OK, description = "Success", body = Vec<ApplicationJson>)))]
pub async fn list_applications(State(state): State<SharedState>) -> Result<Json<Vec<ApplicationJson>>, RestError> {
    applications(&state).await
}

/// The applications (Axon's public path).
#[utoipa::path(get, path = "/v1/public/applications", tag = "admin", responses((status = OK, description = "Success", body = Vec<ApplicationJson>)))]
pub async fn public_applications(State(state): State<SharedState>) -> Result<Json<Vec<ApplicationJson>>, RestError> {
    applications(&state).await
}

fn token_response(token: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], token)
}

/// Registers an application and answers its token (shown once; only a hash is kept).
#[utoipa::path(
    post,
    path = "/v1/applications",
    tag = "admin",
    request_body = CreateApplicationJson,
    responses(
        (status = OK, description = "The new token", body = String, content_type = "text/plain"),
        (status = BAD_REQUEST, description = "Bad or missing parameter", body = ErrorBody),
        (status = CONFLICT, description = "The application exists", body = ErrorBody),
    )
)]
pub async fn create_application(
    State(state): State<SharedState>,
    JsonBody(body): JsonBody<CreateApplicationJson>,
) -> Result<impl IntoResponse, RestError> {
    if body.token.is_some() {
        return Err(RestError::BadRequest(
            "Myelin generates application tokens; leave 'token' out and use the answer".to_string(),
        ));
    }
    let mut grants = Vec::new();
    for roles in body.roles {
        for role in roles.roles {
            grants.push(grant(RoleSpec::Object(RoleJson {
                context: roles.context.clone(),
                role,
            }))?);
        }
    }
    let control = state.node.control().clone();
    let token = blocking(move || Ok(control.create_application(&body.name, &body.description, &grants)?)).await?;
    Ok(token_response(token))
}

/// Deletes an application; its token stops working.
#[utoipa::path(
    delete,
    path = "/v1/applications/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "The application")),
    responses((status = OK, description = "Deleted"), (status = NOT_FOUND, description = "No such resource", body = ErrorBody))
)]
pub async fn delete_application(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> Result<StatusCode, RestError> {
    let control = state.node.control().clone();
    let deleted = blocking(move || Ok(control.delete_application(&name).map(|deleted| (deleted, name))?)).await?;
    match deleted {
        (true, _) => Ok(StatusCode::OK),
        (false, name) => Err(RestError::NotFound(format!("Application {name} not found"))),
    }
}

/// Gives an application a new token (Axon's "renew token"); the old one stops working.
#[utoipa::path(
    patch,
    path = "/v1/applications/{name}",
    tag = "admin",
    params(("name" = String, Path, description = "The application")),
    responses((status = OK, description = "The new token", body = String, content_type = "text/plain"), (status = NOT_FOUND, description = "No such resource", body = ErrorBody))
)]
pub async fn rotate_application_token(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, RestError> {
    let control = state.node.control().clone();
    let token = blocking(move || Ok(control.rotate_token(&name)?)).await?;
    Ok(token_response(token))
}

/// This node (Axon's `/v1/public/me`), plus who is asking.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeJson {
    pub authentication: bool,
    pub clustered: bool,
    pub ssl: bool,
    pub admin_node: bool,
    pub development_mode: bool,
    pub storage_context_names: Vec<String>,
    pub context_names: Vec<String>,
    pub name: String,
    pub host_name: String,
    pub internal_host_name: String,
    pub grpc_internal_port: u16,
    pub grpc_port: u16,
    pub http_port: u16,
    pub version: String,
    /// The caller's name and roles.
    pub user: UserJson,
}

/// This node and the caller.
#[utoipa::path(get, path = "/v1/public/me", tag = "status", responses((status = OK, description = "Success", body = MeJson)))]
pub async fn me(State(state): State<SharedState>, Extension(principal): Extension<Principal>) -> Json<MeJson> {
    let names = state.node.contexts().names();
    let node = state.node.identity();
    Json(MeJson {
        authentication: state.access.enabled(),
        clustered: state.node.is_clustered(),
        ssl: false,
        admin_node: true,
        development_mode: false,
        storage_context_names: names.clone(),
        context_names: names,
        name: node.name.clone(),
        host_name: node.host_name.clone(),
        internal_host_name: node.internal_host_name.clone(),
        grpc_internal_port: node.internal_port,
        grpc_port: node.grpc_port,
        http_port: node.http_port,
        version: env!("CARGO_PKG_VERSION").to_string(),
        user: UserJson {
            user_name: principal.name.clone(),
            roles: principal.grants.iter().map(role_json).collect(),
        },
    })
}
