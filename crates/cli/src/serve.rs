//! `myelin serve`: load the configuration, open every configured context's stores, run until
//! SIGTERM or SIGINT, then shut every store down (flush, sync, stop its threads).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use myelin_store::ContextStore;
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
    let signal = runtime.block_on(signals.recv());
    info!("received {signal}, shutting down");
    shut_down_all(stores)?;
    info!("stopped cleanly");
    Ok(())
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
