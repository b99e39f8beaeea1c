//! The gRPC server in-process: a real server on 127.0.0.1:0 over a context registry of stores in
//! a temporary directory, stopped by a signal, its stores shut down after it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use myelin_grpc::{Contexts, GrpcConfig, ServeError, serve_with_config};
use myelin_proto::grpc::event::event_store_client::EventStoreClient;
use myelin_store::ContextStore;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::store::small_segments;

/// A stop must finish within this; longer is a hang.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A server on a port of 127.0.0.1 with one store per context, segments of
/// [`SEGMENT_BYTES`](crate::store::SEGMENT_BYTES).
pub struct TestServer {
    pub address: SocketAddr,
    pub contexts: Arc<Contexts>,
    names: Vec<String>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
    _dir: TempDir,
}

/// A server with the default configuration and context `default`.
pub async fn start() -> TestServer {
    start_with(GrpcConfig::default(), &["default"]).await
}

/// A server with `config` and the contexts `names`.
pub async fn start_with(config: GrpcConfig, names: &[&str]) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let contexts = Arc::new(Contexts::new());
    let store_config = small_segments();
    for name in names {
        let events = dir.path().join(name).join("events");
        let snapshots = dir.path().join(name).join("snapshots");
        std::fs::create_dir_all(&events).expect("events dir");
        std::fs::create_dir_all(&snapshots).expect("snapshots dir");
        let store = ContextStore::open(name, events, snapshots, store_config.clone(), store_config.clone())
            .expect("store opens");
        contexts.insert(store);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_with_config(listener, contexts.clone(), config, async move {
        let _ = stopped.await;
    }));
    TestServer {
        address,
        contexts,
        names: names.iter().map(|n| n.to_string()).collect(),
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

impl TestServer {
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.address))
            .expect("endpoint")
            .connect()
            .await
            .expect("connects")
    }

    pub async fn event_store(&self) -> EventStoreClient<Channel> {
        EventStoreClient::new(self.channel().await)
    }

    /// Stops the server (it must stop by itself, within a bound) and closes the stores.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(STOP_TIMEOUT, &mut self.task)
            .await
            .expect("server stops")
            .expect("server task")
            .expect("server ends cleanly");
        let contexts = self.contexts.clone();
        let names = std::mem::take(&mut self.names);
        tokio::task::spawn_blocking(move || {
            for name in &names {
                if let Some(store) = contexts.remove(name) {
                    store.shutdown().expect("store shuts down");
                }
            }
        })
        .await
        .expect("stores shut down");
    }
}

/// A test that failed before `stop` still shuts the stores down, on a plain thread:
/// `ContextStore::shutdown` blocks, which tokio forbids on its own threads.
impl Drop for TestServer {
    fn drop(&mut self) {
        let contexts = self.contexts.clone();
        let names = std::mem::take(&mut self.names);
        let _ = std::thread::spawn(move || {
            for name in &names {
                if let Some(store) = contexts.get(name) {
                    let _ = store.store().shutdown();
                }
            }
        })
        .join();
    }
}
