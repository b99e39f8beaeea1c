//! `myelin serve`: load the configuration, open every configured context's stores, serve the
//! Axon gRPC API and the HTTP listener until SIGTERM or SIGINT, then stop the listeners and shut
//! every store down (flush, sync, stop its threads).

use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use myelin_grpc::{Contexts, EventStoreLimits, GrpcConfig, NodeInfoConfig};
use myelin_control::{AccessControl, ControlDb};
use myelin_rest::{NodeDescription, Provisioner, RestConfig, RestState};
use myelin_store::{ContextStore, DeletionHolds};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{Config, Overrides, StoreKind};

/// Raises the soft limit on open file descriptors to the hard limit, as servers that hold many
/// files and connections do (the default soft limit is often 1,024). Each store holds at most
/// `myelin.open-segment-files` closed segment files of each kind; connections and streams need
/// the rest.
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
    // The configured contexts, and those created through the REST API since.
    let mut names = config.contexts.clone();
    for context in &config.contexts {
        control
            .ensure_context(context)
            .with_context(|| format!("cannot record context {context} in the control database"))?;
    }
    for record in control
        .contexts()
        .context("cannot read contexts from the control database")?
    {
        if !names.contains(&record.name) {
            names.push(record.name);
        }
    }
    let contexts = Arc::new(Contexts::new());
    open_all(&config, &names, &contexts);
    let served = runtime.block_on(serve_api(&config, contexts.clone(), control, &mut signals));
    if let Err(err) = &served {
        error!("{err:#}");
    }
    // Stores close off the async threads, after the listeners stopped taking calls; this
    // includes contexts created through the REST API while serving.
    let open: OpenStores = contexts
        .names()
        .into_iter()
        .filter_map(|name| contexts.remove(&name).map(|store| (name, store)))
        .collect();
    shut_down_all(open)?;
    served?;
    info!("stopped cleanly");
    Ok(())
}

/// Runs the gRPC (Axon API) and HTTP listeners until a shutdown signal, then stops them.
/// The bound addresses are logged as `gRPC listening on ADDR` / `HTTP listening on ADDR`, so
/// with port 0 a supervisor (or test) learns the ports from the log.
async fn serve_api(
    config: &Config,
    contexts: Arc<Contexts>,
    control: Arc<ControlDb>,
    signals: &mut ShutdownSignals,
) -> anyhow::Result<()> {
    let bind = |port| (config.bind_address, port);
    let grpc = TcpListener::bind(bind(config.grpc_port))
        .await
        .with_context(|| format!("cannot listen for gRPC on {}:{}", config.bind_address, config.grpc_port))?;
    let http = TcpListener::bind(bind(config.http_port))
        .await
        .with_context(|| format!("cannot listen for HTTP on {}:{}", config.bind_address, config.http_port))?;
    let (grpc_address, http_address) = (grpc.local_addr()?, http.local_addr()?);
    info!("gRPC listening on {grpc_address}");
    info!("HTTP listening on {http_address}");

    let host_name = config.hostname.clone().unwrap_or_else(machine_hostname);
    let node = NodeInfoConfig {
        node_name: config.name.clone().unwrap_or_else(|| host_name.clone()),
        host_name,
        grpc_port: grpc_address.port(),
        http_port: http_address.port(),
        version: 0,
    };
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
    let rest = Arc::new(RestState {
        contexts: contexts.clone(),
        control,
        access: access.clone(),
        provisioner: Arc::new(StoreProvisioner { config: config.clone() }),
        // Every store checks the process-wide holds before deleting or rewriting a file.
        deletion_holds: DeletionHolds::global(),
        config: RestConfig {
            node: NodeDescription {
                name: node.node_name.clone(),
                host_name: node.host_name.clone(),
                grpc_port: node.grpc_port,
                http_port: node.http_port,
            },
            controldb_backup_location: config.controldb_backup_location.clone(),
            data_dirs: config.data_dirs(),
            disk_space_threshold: config.disk_space_threshold_bytes,
        },
    });
    let grpc_config = GrpcConfig {
        node,
        limits,
        access: Some(access),
        ..GrpcConfig::default()
    };

    let (stop, stopping) = watch::channel(false);
    let stopped = |mut stopping: watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let mut grpc_task = tokio::spawn(myelin_grpc::serve_with_config(
        grpc,
        contexts,
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

/// Opens and deletes the stores of contexts created and deleted through the REST API, in the
/// configured storage directories.
struct StoreProvisioner {
    config: Config,
}

impl Provisioner for StoreProvisioner {
    fn check_new_context(&self, name: &str) -> Result<(), String> {
        for kind in [StoreKind::Events, StoreKind::Snapshots] {
            let dir = self.config.context_dir(kind, name);
            if dir.exists() && !dir.is_dir() {
                return Err(format!(
                    "{} exists and is not a directory: context {name} cannot use it",
                    dir.display()
                ));
            }
        }
        Ok(())
    }

    fn open_context(&self, name: &str) -> Result<Arc<ContextStore>, String> {
        open_context(&self.config, name).map_err(|e| format!("{e:#}"))
    }

    fn delete_context_data(&self, name: &str) -> Result<(), String> {
        for kind in [StoreKind::Events, StoreKind::Snapshots] {
            let dir = self.config.context_dir(kind, name);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => info!("context {name}: deleted {}", dir.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot delete {}: {e}", dir.display())),
            }
        }
        Ok(())
    }
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

type OpenStores = Vec<(String, Arc<ContextStore>)>;

/// Opens the stores of one context in the configured directories.
fn open_context(config: &Config, context: &str) -> anyhow::Result<Arc<ContextStore>> {
    let events_dir = config.context_dir(StoreKind::Events, context);
    let snapshots_dir = config.context_dir(StoreKind::Snapshots, context);
    let store = ContextStore::open(
        context,
        events_dir.clone(),
        snapshots_dir.clone(),
        config.store_config(StoreKind::Events),
        config.store_config(StoreKind::Snapshots),
    )
    .with_context(|| {
        format!(
            "cannot open context {context} (events in {}, snapshots in {})",
            events_dir.display(),
            snapshots_dir.display()
        )
    })?;
    let last_token = store.last_token();
    info!(
        "context {context}: events in {}, snapshots in {}, last token {last_token}{}",
        events_dir.display(),
        snapshots_dir.display(),
        if last_token < 0 { " (empty)" } else { "" },
    );
    Ok(store)
}

/// Opens each context in turn. A context that cannot be opened (damaged files, a directory
/// it may not read) is reported and left out; the others open and serve as usual, and calls
/// to the failed one answer with the reason (AXONIQ-9000) until it is repaired and the
/// server restarted.
fn open_all(config: &Config, names: &[String], contexts: &Contexts) {
    for name in names {
        match open_context(config, name) {
            Ok(store) => contexts.insert(store),
            Err(failure) => {
                error!("context {name} is unavailable: {failure:#}");
                contexts.mark_failed(name, format!("{:#}", failure.root_cause()));
            }
        }
    }
}

/// Shuts every store down, even after one fails, and reports every failure.
fn shut_down_all(stores: OpenStores) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for (context, store) in stores {
        match store.shutdown() {
            Ok(()) => info!("context {context}: closed"),
            Err(err) => {
                error!("context {context}: shutdown failed: {err}");
                failed.push(context);
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("shutdown failed for context(s) {}", failed.join(", ")))
    }
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
