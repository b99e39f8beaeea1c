//! `myelin serve`: load the configuration, open every configured context's stores, serve the
//! Axon gRPC API and the HTTP listener until SIGTERM or SIGINT, then stop the listeners and shut
//! every store down (flush, sync, stop its threads).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use myelin_api::{Contexts, EventStoreLimits, GrpcConfig, NodeInfoConfig};
use myelin_store::ContextStore;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info};

use crate::config::{Config, Overrides, StoreKind};

pub fn run(overrides: Overrides) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("cannot determine the working directory")?;
    let config = Config::load(&overrides, process_env(), &cwd)?;
    info!("myelin {} starting: {}", env!("CARGO_PKG_VERSION"), config.summary());

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

    let stores = open_all(&config, &cwd)?;
    let served = runtime.block_on(serve_api(&config, &stores, &mut signals));
    if let Err(err) = &served {
        error!("{err:#}");
    }
    // Stores close off the async threads, after the listeners stopped taking calls.
    shut_down_all(stores)?;
    served?;
    info!("stopped cleanly");
    Ok(())
}

/// Runs the gRPC (Axon API) and HTTP listeners until a shutdown signal, then stops them.
/// The bound addresses are logged as `gRPC listening on ADDR` / `HTTP listening on ADDR`, so
/// with port 0 a supervisor (or test) learns the ports from the log.
async fn serve_api(config: &Config, stores: &OpenStores, signals: &mut ShutdownSignals) -> anyhow::Result<()> {
    let contexts = Arc::new(Contexts::new());
    for (_, store) in stores {
        contexts.insert(store.clone());
    }
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
    let limits = EventStoreLimits {
        max_message_bytes: usize::try_from(config.max_message_size_bytes).unwrap_or(usize::MAX),
        max_transaction_bytes: config.max_transaction_bytes,
    };
    let grpc_config = GrpcConfig {
        node,
        limits,
        ..GrpcConfig::default()
    };

    let (stop, stopping) = watch::channel(false);
    let stopped = |mut stopping: watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let mut grpc_task = tokio::spawn(myelin_api::serve_with_config(
        grpc,
        contexts,
        grpc_config,
        stopped(stopping.clone()),
    ));
    let mut http_task = tokio::spawn(myelin_api::serve_http(http, stopped(stopping)));
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

type OpenStores = Vec<(String, Arc<ContextStore>)>;

/// Opens each context in turn. If one fails, the ones already open are shut down before the
/// error is returned, so their last appends are synced either way.
fn open_all(config: &Config, cwd: &Path) -> anyhow::Result<OpenStores> {
    let events = config.store_config(StoreKind::Events);
    let snapshots = config.store_config(StoreKind::Snapshots);
    let mut stores = OpenStores::with_capacity(config.contexts.len());
    for context in &config.contexts {
        let events_dir = config.context_dir(StoreKind::Events, context);
        let snapshots_dir = config.context_dir(StoreKind::Snapshots, context);
        let opened = ContextStore::open(
            context,
            events_dir.clone(),
            snapshots_dir.clone(),
            events.clone(),
            snapshots.clone(),
        );
        match opened {
            Ok(store) => {
                let last_token = store.last_token();
                info!(
                    "context {context}: events in {}, snapshots in {}, last token {last_token}{}",
                    absolute(cwd, &events_dir),
                    absolute(cwd, &snapshots_dir),
                    if last_token < 0 { " (empty)" } else { "" },
                );
                stores.push((context.clone(), store));
            }
            Err(err) => {
                let failure = anyhow!(
                    "cannot open context {context} (events in {}, snapshots in {}): {err}",
                    absolute(cwd, &events_dir),
                    absolute(cwd, &snapshots_dir),
                );
                if let Err(shutdown) = shut_down_all(stores) {
                    error!("{shutdown:#}");
                }
                return Err(failure);
            }
        }
    }
    Ok(stores)
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

/// For log lines: relative paths are resolved against the working directory (dropping `.`
/// components), so an operator reading the log knows exactly where the files are.
fn absolute(cwd: &Path, path: &Path) -> String {
    let relative: PathBuf = path.components().filter(|c| !matches!(c, Component::CurDir)).collect();
    cwd.join(relative).display().to_string()
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
