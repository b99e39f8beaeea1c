//! The gRPC listener: every service on one port, with Axon's keep-alive and message limits,
//! stopped by a future (mini-redis style) so tests can bind `127.0.0.1:0` and stop cleanly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use myelin_control::AccessControl;
use myelin_proto::grpc::admin::context_admin_service_server::ContextAdminServiceServer;
use myelin_proto::grpc::admin::replication_group_admin_service_server::ReplicationGroupAdminServiceServer;
use myelin_proto::server::{CommandServiceServer, PlatformServiceServer, QueryServiceServer};
use myelin_routing::{QueryLimits, RouterLimits, Routing};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::access::AccessLayer;
use crate::admin::{Admin, AdminNode};
use crate::commands::Commands;
use crate::error::RequestErrors;
use crate::event_store::{EventStoreLimits, EventStoreService};
use crate::platform::Platform;
use crate::queries::Queries;
use myelin_node::{Contexts, NodeIdentity};

/// gRPC listener settings. Defaults are Axon Server's where it has one.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    pub node: NodeIdentity,
    pub limits: EventStoreLimits,
    /// HTTP/2 pings to idle clients (`axoniq.axonserver.keep-alive-time`, 2.5 s); `None`: never.
    /// Pings *from* clients are always answered: h2 has no ping-strike policy, so clients that
    /// ping every second never get GOAWAY `too_many_pings`.
    pub keep_alive_time: Option<Duration>,
    /// A connection whose ping is not answered within this is closed
    /// (`axoniq.axonserver.keep-alive-timeout`, 5 s).
    pub keep_alive_timeout: Duration,
    /// How often the server sends a Heartbeat on each PlatformService instruction stream.
    pub heartbeat_interval: Duration,
    /// After the shutdown future fires, open calls get this long to finish before the server
    /// stops waiting for them. Tracking and instruction streams end at once by themselves.
    pub shutdown_grace: Duration,
    /// Access control; `None` (or disabled) lets every call through, as Axon does by default.
    pub access: Option<Arc<AccessControl>>,
    /// The node the admin services (`ReplicationGroupAdminService`, `ContextAdminService`)
    /// administer; `None`: they are not served.
    pub admin: Option<AdminNode>,
    /// Routes commands and queries between this node's clients (and counts them); `None`:
    /// routers of its own with the default limits.
    pub routing: Option<Routing>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            node: NodeIdentity::default(),
            limits: EventStoreLimits::default(),
            keep_alive_time: Some(Duration::from_millis(2500)),
            keep_alive_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
            access: None,
            admin: None,
            routing: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read the listener's address: {0}")]
    Listener(#[from] std::io::Error),
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Serves the Axon gRPC API on `listener` with default settings until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    contexts: Arc<Contexts>,
    node: NodeIdentity,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let config = GrpcConfig {
        node,
        ..GrpcConfig::default()
    };
    serve_with_config(listener, contexts, config, shutdown).await
}

/// Serves the Axon gRPC API on `listener` until `shutdown` completes, then lets open calls
/// finish (at most `shutdown_grace`). The stores stay open: closing them is the caller's job.
pub async fn serve_with_config(
    listener: TcpListener,
    contexts: Arc<Contexts>,
    mut config: GrpcConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let address = listener.local_addr()?;
    if config.node.grpc_port == 0 {
        config.node.grpc_port = address.port();
    }
    let (stopping_sender, stopping) = watch::channel(false);
    let node_name = config.node.name.clone();
    let event_store = EventStoreService::new(contexts.clone(), config.limits, stopping.clone());
    // The generated service decodes its requests with tonic's codec: its decoding errors get
    // the same statuses as the EventStore's ([`RequestErrors`]).
    let platform = RequestErrors(
        PlatformServiceServer::new(Platform::new(
            contexts,
            config.node,
            config.heartbeat_interval,
            stopping.clone(),
            config.admin.as_ref().map(|admin| admin.0.clone()),
        ))
        .max_decoding_message_size(config.limits.max_message_bytes),
    );
    let routing = config
        .routing
        .clone()
        .unwrap_or_else(|| Routing::new(RouterLimits::default(), QueryLimits::default()));
    let commands = RequestErrors(
        CommandServiceServer::new(Commands::new(&routing, node_name.clone(), stopping.clone()))
            .max_decoding_message_size(config.limits.max_message_bytes),
    );
    let queries = RequestErrors(
        QueryServiceServer::new(Queries::new(&routing, node_name.clone(), stopping.clone()))
            .max_decoding_message_size(config.limits.max_message_bytes),
    );
    // Served only with a node to administer; otherwise tonic answers their calls UNIMPLEMENTED.
    let admin = config.admin.clone().map(Admin::new);
    let replication_groups = admin
        .clone()
        .map(|admin| RequestErrors(ReplicationGroupAdminServiceServer::new(admin)));
    let context_admin = admin.map(|admin| RequestErrors(ContextAdminServiceServer::new(admin)));
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = Server::builder()
        .http2_keepalive_interval(config.keep_alive_time)
        .http2_keepalive_timeout(Some(config.keep_alive_timeout))
        .layer(tower::util::option_layer(AccessLayer::new(config.access.clone())))
        .add_service(event_store)
        .add_service(platform)
        .add_service(commands)
        .add_service(queries)
        .add_optional_service(replication_groups)
        .add_optional_service(context_admin)
        .serve_with_incoming_shutdown(incoming, async {
            shutdown.await;
            info!(%address, "gRPC listener shutting down");
            stopping_sender.send_replace(true);
        });
    info!(%address, "gRPC listener serving the Axon Server API");
    let mut late = stopping.clone();
    let grace = config.shutdown_grace;
    tokio::select! {
        served = server => served?,
        _ = async { crate::stopped(&mut late).await; tokio::time::sleep(grace).await } => {
            warn!(%address, ?grace, "calls still open after the shutdown grace period; no longer waiting for them");
        }
    }
    Ok(())
}
