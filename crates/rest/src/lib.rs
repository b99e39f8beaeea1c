//! Axon Server's REST API on the HTTP port (8024): the backup endpoints with upstream's exact
//! shapes, context/user/application administration, Axon EE's cluster administration
//! ([`cluster`]), health, Prometheus metrics, the OpenAPI
//! document and Swagger UI, all behind the same access control as the gRPC API.
//!
//! * Every route is registered once, through [`utoipa_axum`], so the OpenAPI document at
//!   `/v3/api-docs` is generated from the handlers and cannot list a route the router does not
//!   serve (or miss one it does).
//! * Every route belongs to exactly one access class ([`auth::Access`]): `Open` (only the
//!   liveness probe), `Authenticated` (any valid credential) or `Admin`. The class is applied
//!   as a route layer per group in [`router`], so a new route cannot be added without one.
//! * Handlers never touch files beyond what the store lists: the store says which segment
//!   files are complete and durable (and how much of the active one is committed), the file
//!   endpoint serves only those, the control database makes its own backups.

#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::expect_used, clippy::panic))]

pub mod admin;
pub mod auth;
pub mod backup;
pub mod backup_files;
pub mod cluster;
pub mod error;
pub mod extract;
pub mod health;
pub mod lease;
pub mod metrics;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::response::{Html, IntoResponse, Redirect};
use axum::{Router, middleware};
use myelin_control::AccessControl;
use myelin_node::Node;
use myelin_store::DeletionHolds;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

pub use auth::Access;
pub use error::RestError;

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/v3/api-docs";

/// Settings of the REST API.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Absolute directory for control-database backups
    /// (`axoniq.axonserver.controldb-backup-location`).
    pub controldb_backup_location: PathBuf,
    /// Directories whose free space the health endpoint reports.
    pub data_dirs: Vec<PathBuf>,
    /// Below this many free bytes the disk-space health detail turns WARN.
    pub disk_space_threshold: u64,
}

/// Everything a handler can reach.
pub struct RestState {
    /// The node: its identity, control database and contexts, and their lifecycle.
    pub node: Arc<Node>,
    pub access: Arc<AccessControl>,
    /// Where backup leases are kept: the registry the stores check before deleting or
    /// rewriting a listed file. The server passes [`DeletionHolds::global`], which every store
    /// obeys by default.
    pub deletion_holds: Arc<DeletionHolds>,
    pub config: RestConfig,
    /// The command and query routers the gRPC services feed, for their figures; `None`: no
    /// routing figures.
    pub routing: Option<myelin_routing::Routing>,
}

pub type SharedState = Arc<RestState>;

/// Serves the REST API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "HTTP listener serving the REST API");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The whole HTTP API: every route with its access class, Swagger UI and the OpenAPI document.
pub fn router(state: SharedState) -> Router {
    let (router, mut openapi) = api_router(state.clone()).split_for_parts();
    document_error_answers(&mut openapi);
    let docs: Router = SwaggerUi::new("/swagger-ui").url(OPENAPI_PATH, openapi).into();
    let docs = docs
        .route("/swagger-ui.html", axum::routing::get(swagger_ui_redirect))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), Access::Authenticated),
            auth::enforce,
        ));
    // Paths no route matches (a traversal attempt with extra segments, say) get the same JSON
    // error as every other refusal rather than an empty body.
    router.merge(docs).fallback(no_route).with_state(())
}

/// The answer for a path no route serves.
async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> RestError {
    RestError::NotFound(format!("No route for {method} {}", uri.path()))
}

/// The routes that the OpenAPI document describes (all but the documentation itself).
pub fn api_router(state: SharedState) -> OpenApiRouter {
    let open = OpenApiRouter::new().routes(routes!(health::liveness));
    let authenticated = OpenApiRouter::new()
        .routes(routes!(landing_page))
        .routes(routes!(health::health))
        .routes(routes!(health::readiness))
        .routes(routes!(metrics::prometheus))
        .routes(routes!(admin::public_contexts))
        .routes(routes!(admin::me))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), Access::Authenticated),
            auth::enforce,
        ));
    let admin = OpenApiRouter::new()
        .routes(routes!(backup::filenames))
        .routes(routes!(backup::eventstore))
        .routes(routes!(backup::log_filenames))
        .routes(routes!(backup::clean_log_entries))
        .routes(routes!(backup::create_control_db_backup))
        .routes(routes!(backup::create_control_db_backup_v1))
        .routes(routes!(backup_files::download))
        .routes(routes!(backup_files::download_log))
        .routes(routes!(backup_files::control_db_zip))
        .routes(routes!(lease::create_lease))
        .routes(routes!(lease::renew_lease, lease::release_lease))
        .routes(routes!(admin::list_contexts, admin::create_context))
        .routes(routes!(admin::delete_context))
        .routes(routes!(admin::list_users, admin::upsert_user))
        .routes(routes!(admin::public_users))
        .routes(routes!(admin::delete_user))
        .routes(routes!(admin::list_applications, admin::create_application))
        .routes(routes!(admin::public_applications))
        .routes(routes!(admin::delete_application, admin::rotate_application_token))
        .routes(routes!(cluster::init))
        .routes(routes!(cluster::nodes, cluster::join))
        .routes(routes!(cluster::node, cluster::remove_node))
        .routes(routes!(cluster::replication_groups))
        .routes(routes!(cluster::create_replication_group))
        .routes(routes!(cluster::add_node_to_group, cluster::remove_node_from_group))
        .routes(routes!(cluster::delete_replication_group))
        .routes(routes!(cluster::roles))
        .route_layer(middleware::from_fn_with_state(
            (state.clone(), Access::Admin),
            auth::enforce,
        ));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(open)
        .merge(authenticated)
        .merge(admin)
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Myelin REST API",
        description = "Axon Server's REST API: backups, administration, health and metrics."
    ),
    modifiers(&SecurityModifier),
    security(("AxonIQ-Access-Token" = []), ("basic" = [])),
    tags(
        (name = "backup", description = "Axon Server's backup endpoints"),
        (name = "admin", description = "Contexts, users and applications"),
        (name = "cluster", description = "Axon Server EE's cluster administration: nodes and replication groups"),
        (name = "status", description = "Health, metrics and this node")
    )
)]
struct ApiDoc;

use auth::SecuritySchemes as SecurityModifier;

/// Adds to every operation of the finished document the error answers that come from the
/// layers around its handler rather than from the handler itself, so a client (or a fuzzer
/// checking conformance) finds every status the route can answer documented, with the JSON
/// error body all of them carry:
///
/// * 401 and 403 on every route that needs credentials ([`auth::enforce`], when access control
///   is on);
/// * 400 on every route with parameters (a malformed path or query, [`extract`]);
/// * 400, 413 and 415 on every route with a request body (malformed JSON, a body over the
///   limit, a body not declared JSON).
fn document_error_answers(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::SecurityRequirement;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

    let error = |description: &str| -> RefOr<utoipa::openapi::Response> {
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build();
        ResponseBuilder::new()
            .description(description)
            .content("application/json", content)
            .build()
            .into()
    };
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            // `security: [{}]` (the liveness probe) is open; no `security` means the
            // document-wide requirement.
            let open = operation
                .security
                .as_ref()
                .is_some_and(|requirements| requirements.contains(&SecurityRequirement::default()));
            let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let has_body = operation.request_body.is_some();
            let responses = &mut operation.responses.responses;
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| error(description));
            };
            if !open {
                add(
                    "401",
                    "No credentials, or credentials that match nothing (access control on)",
                );
                add(
                    "403",
                    "Valid credentials without the right this route needs (access control on)",
                );
            }
            if has_parameters || has_body {
                add("400", "A malformed parameter or request body");
            }
            if has_body {
                add("413", "The request body is over the size limit");
                add("415", "The request body is not declared as JSON");
            }
        }
    }
}

/// The landing page.
#[utoipa::path(get, path = "/", tag = "status", responses((status = OK, description = "A small HTML page", content_type = "text/html")))]
async fn landing_page() -> Html<String> {
    let version = env!("CARGO_PKG_VERSION");
    Html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Myelin {version}</title></head>\n\
         <body><h1>Myelin</h1><p>A drop-in Axon Server, version {version}.</p>\n\
         <ul><li><a href=\"/swagger-ui/index.html\">REST API (Swagger UI)</a></li>\n\
         <li><a href=\"/actuator/health\">Health</a></li>\n\
         <li><a href=\"/actuator/prometheus\">Metrics</a></li></ul></body></html>\n"
    ))
}

/// Axon's Swagger UI address.
async fn swagger_ui_redirect() -> impl IntoResponse {
    Redirect::permanent("/swagger-ui/index.html")
}
