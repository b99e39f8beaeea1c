//! `myelin serve`: load the configuration, build the node (control database, identity, every
//! recorded context's stores), serve the Axon gRPC API and the HTTP listener over it until
//! SIGTERM or SIGINT, then stop the listeners and shut the node down (every store flushed,
//! synced and its threads stopped). Wiring only: what a node does is `myelin-node`'s.

use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use myelin_control::{AccessControl, ControlDb};
use myelin_grpc::{EventStoreLimits, GrpcConfig};
use myelin_node::{Node, NodeIdentity, StoreLayout};
use myelin_rest::{RestConfig, RestState};
use myelin_store::DeletionHolds;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{Config, Overrides, StoreKind};

/// Raises the soft limit on open file descriptors to the hard limit, as servers that hold many
/// files and connections do (the default soft limit is often 1,024). Each store holds at most
/// `myelin.open-segment-files` closed segment files of each kind; connections and streams need
/// the rest.
// The crate denies unsafe code; getrlimit/setrlimit have no safe wrapper in std.
#[allow(unsafe_code)]
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        warn!("cannot read the open-file limit: {}", std::io::Error::last_os_error());
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            warn!(
                "cannot raise the open-file limit from {}: {}",
                limit.rlim_cur,
                std::io::Error::last_os_error()
            );
        }
    }
    info!("open-file limit {}", limit.rlim_cur);
}

pub fn run(overrides: Overrides) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("cannot determine the working directory")?;
    let mut config = Config::load(&overrides, process_env(), &cwd)?;
    // Every path the server reports (backup listings above all) is absolute.
    config.make_paths_absolute(&cwd);
    info!("myelin {} starting: {}", env!("CARGO_PKG_VERSION"), config.summary());
    raise_open_file_limit();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Installed before the stores open, so a signal that arrives during a long recovery is held
    // and acted on once opening finishes, rather than killing the process mid-way.
    let mut signals = {
        let _guard = runtime.enter();
        ShutdownSignals::install()?
    };

    let control = Arc::new(ControlDb::open(&config.controldb_path).with_context(|| {
        format!(
            "cannot open the control database in {}",
            config.controldb_path.display()
        )
    })?);
    info!("control database {}", control.path().display());
    // The listeners are bound first so that the node's identity carries the ports they got
    // (port 0 in tests), then the stores open, and only then are the addresses logged and the
    // listeners served: `gRPC listening on` means ready, as it did when binding came last.
    let (grpc, http) = runtime.block_on(bind_listeners(&config))?;
    let (grpc_address, http_address) = (grpc.local_addr()?, http.local_addr()?);
    // A node is in a cluster when it is told how to form one (or that it may be made part of
    // one through the admin API), or was in one before.
    let clustered = config.cluster_enabled
        || config.cluster.autocluster_first.is_some()
        || !control
            .raft_groups()
            .context("cannot read the raft state from the control database")?
            .is_empty();
    let internal = if clustered {
        Some(runtime.block_on(bind(&config, config.internal_port, "internal gRPC"))?)
    } else {
        None
    };
    let internal_port = match &internal {
        Some(listener) => listener.local_addr()?.port(),
        None => config.internal_port,
    };
    let identity = identity(&config, grpc_address.port(), http_address.port(), internal_port);
    let node = Arc::new(Node::new(identity, control, Arc::new(store_layout(&config))));
    // A cluster node serves the contexts its groups create (`myelin.contexts` is the single
    // node's setting): one created here would hold events no log put there.
    let configured: &[String] = if clustered { &[] } else { &config.contexts };
    node.open_contexts(configured)
        .context("cannot read or record contexts in the control database")?;
    let cluster = match internal {
        Some(listener) => Some(runtime.block_on(start_cluster(&config, &node, listener))?),
        None => None,
    };
    info!("gRPC listening on {grpc_address}");
    info!("HTTP listening on {http_address}");
    let served = runtime.block_on(serve_api(&config, node.clone(), grpc, http, &mut signals));
    if let Err(err) = &served {
        error!("{err:#}");
    }
    if let Some((cluster, stop_internal)) = cluster {
        stop_internal.send_replace(true);
        runtime.block_on(cluster.shutdown());
    }
    // Stores close off the async threads, after the listeners stopped taking calls; this
    // includes contexts created through the REST API while serving.
    node.shutdown()?;
    served?;
    info!("stopped cleanly");
    Ok(())
}

/// Where contexts' files live, and the stores' settings.
fn store_layout(config: &Config) -> StoreLayout {
    StoreLayout {
        events_dir: config.storage(StoreKind::Events).storage_dir.clone(),
        snapshots_dir: config.storage(StoreKind::Snapshots).storage_dir.clone(),
        events: config.store_config(StoreKind::Events),
        snapshots: config.store_config(StoreKind::Snapshots),
        // Every store checks the process-wide holds before deleting or rewriting a file.
        deletion_holds: DeletionHolds::global(),
    }
}

/// This node as clients and other nodes see it, with the ports the listeners were bound to.
fn identity(config: &Config, grpc_port: u16, http_port: u16, internal_port: u16) -> NodeIdentity {
    let host_name = config.hostname.clone().unwrap_or_else(machine_hostname);
    NodeIdentity {
        name: config.name.clone().unwrap_or_else(|| host_name.clone()),
        internal_host_name: config.internal_hostname.clone().unwrap_or_else(|| host_name.clone()),
        host_name,
        grpc_port,
        http_port,
        internal_port,
        ..NodeIdentity::default()
    }
}

async fn bind(config: &Config, port: u16, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind((config.bind_address, port))
        .await
        .with_context(|| format!("cannot listen for {what} on {}:{port}", config.bind_address))
}

/// Joins the node to its cluster: serves the internal port, sends every write through the
/// replication groups, and forms or resumes the cluster in the background (a joining node
/// waits for the first one, which may start later). Answers the cluster and the switch that
/// stops the internal listener.
async fn start_cluster(
    config: &Config,
    node: &Arc<Node>,
    listener: TcpListener,
) -> anyhow::Result<(Arc<myelin_cluster::ClusterNode>, watch::Sender<bool>)> {
    let cluster = myelin_cluster::ClusterNode::new(node.clone(), config.cluster.clone())?;
    node.contexts().set_write_path(cluster.clone());
    node.set_replication_logs(cluster.clone());
    // The admin adapters (REST, gRPC) reach the cluster through the node.
    node.set_cluster(cluster.clone());
    let (stop, mut stopping) = watch::channel(false);
    let address = listener.local_addr()?;
    // Without TCP_NODELAY a follower's small answer waits for the leader's delayed ACK: 40 ms
    // stalls on every quiet round trip (measured: p99 44 ms at one client).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = myelin_cluster::service(cluster.clone());
    tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(e) = served {
            error!("internal gRPC listener failed: {e}");
        }
    });
    info!("internal gRPC listening on {address}");
    let forming = cluster.clone();
    tokio::spawn(async move {
        match forming.start().await {
            Ok(formation) => info!("cluster: {formation:?}"),
            Err(e) => error!("cluster formation failed: {e}"),
        }
    });
    Ok((cluster, stop))
}

/// Binds the gRPC and HTTP listeners. Once the stores are open the bound addresses are logged
/// as `gRPC listening on ADDR` / `HTTP listening on ADDR`, so with port 0 a supervisor (or
/// test) learns the ports from the log.
async fn bind_listeners(config: &Config) -> anyhow::Result<(TcpListener, TcpListener)> {
    let bind = |port| (config.bind_address, port);
    let grpc = TcpListener::bind(bind(config.grpc_port))
        .await
        .with_context(|| format!("cannot listen for gRPC on {}:{}", config.bind_address, config.grpc_port))?;
    let http = TcpListener::bind(bind(config.http_port))
        .await
        .with_context(|| format!("cannot listen for HTTP on {}:{}", config.bind_address, config.http_port))?;
    Ok((grpc, http))
}

/// Runs the gRPC (Axon API) and HTTP listeners until a shutdown signal, then stops them.
async fn serve_api(
    config: &Config,
    node: Arc<Node>,
    grpc: TcpListener,
    http: TcpListener,
    signals: &mut ShutdownSignals,
) -> anyhow::Result<()> {
    let control = node.control().clone();
    let access = Arc::new(AccessControl::new(
        config.access_control,
        config.access_token.clone(),
        config.admin_token.clone(),
        control.clone(),
    ));
    if access.enabled() {
        info!("access control enabled: every call needs credentials");
    }
    let limits = EventStoreLimits {
        max_message_bytes: usize::try_from(config.max_message_size_bytes).unwrap_or(usize::MAX),
        max_transaction_bytes: config.max_transaction_bytes,
        max_pending_append_bytes: config.max_pending_append_bytes,
    };
    // One pair of routers, fed by the gRPC services and reported on by the REST API.
    let routing = myelin_routing::Routing::new(Default::default(), Default::default());
    let rest = Arc::new(RestState {
        routing: Some(routing.clone()),
        node: node.clone(),
        access: access.clone(),
        // The holds every store obeys (`store_layout`).
        deletion_holds: DeletionHolds::global(),
        config: RestConfig {
            controldb_backup_location: config.controldb_backup_location.clone(),
            data_dirs: config.data_dirs(),
            disk_space_threshold: config.disk_space_threshold_bytes,
        },
    });
    let grpc_config = GrpcConfig {
        node: node.identity().clone(),
        limits,
        access: Some(access),
        // ReplicationGroupAdminService and ContextAdminService, over this node.
        admin: Some(myelin_grpc::AdminNode(node.clone())),
        routing: Some(routing),
        ..GrpcConfig::default()
    };

    let (stop, stopping) = watch::channel(false);
    let stopped = |mut stopping: watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let mut grpc_task = tokio::spawn(myelin_grpc::serve_with_config(
        grpc,
        node.contexts().clone(),
        grpc_config,
        stopped(stopping.clone()),
    ));
    let mut http_task = tokio::spawn(myelin_rest::serve(http, rest, stopped(stopping)));
    tokio::select! {
        signal = signals.recv() => info!("received {signal}, shutting down"),
        ended = &mut grpc_task => return Err(anyhow!("gRPC listener stopped unexpectedly: {}", describe(ended))),
        ended = &mut http_task => return Err(anyhow!("HTTP listener stopped unexpectedly: {}", describe(ended))),
    }
    stop.send_replace(true);
    grpc_task
        .await
        .context("gRPC listener task failed")?
        .context("gRPC listener failed")?;
    http_task
        .await
        .context("HTTP listener task failed")?
        .context("HTTP listener failed")?;
    Ok(())
}

fn describe<E: std::fmt::Display>(ended: Result<Result<(), E>, tokio::task::JoinError>) -> String {
    match ended {
        Ok(Ok(())) => "it returned".to_string(),
        Ok(Err(err)) => err.to_string(),
        Err(err) => err.to_string(),
    }
}

/// The kernel's hostname, as Axon Server reports it when `axoniq.axonserver.hostname` is unset.
fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The process environment as strings. Variables whose name or value is not valid Unicode
/// cannot be Myelin settings and are skipped (`std::env::vars` would panic on them).
fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
}

#[cfg(unix)]
struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl ShutdownSignals {
    /// Must be called inside the runtime.
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

#[cfg(not(unix))]
struct ShutdownSignals;

#[cfg(not(unix))]
impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        Ok(ShutdownSignals)
    }

    async fn recv(&mut self) -> &'static str {
        // Without a handler to listen with, waiting forever is the only safe answer.
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        }
    }
}
