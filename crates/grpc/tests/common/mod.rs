//! A real server on 127.0.0.1:0 over stores in a temporary directory, and event helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use myelin_grpc::{Contexts, GrpcConfig, ServeError, serve_with_config};
use myelin_proto::grpc::event::event_store_client::EventStoreClient;
use myelin_proto::grpc::event::{Event, GetLastTokenRequest};
use myelin_proto::grpc::{MetaDataValue, SerializedObject, meta_data_value};
use myelin_store::{ContextStore, StoreConfig};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// Segments this small roll every few dozen events, so tests cross segment boundaries.
pub const SEGMENT_BYTES: u64 = 8 * 1024;

pub struct TestServer {
    pub address: SocketAddr,
    pub contexts: Arc<Contexts>,
    names: Vec<String>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
    _dir: TempDir,
}

pub async fn start() -> TestServer {
    start_with(GrpcConfig::default(), &["default"]).await
}

pub async fn start_with(config: GrpcConfig, names: &[&str]) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let contexts = Arc::new(Contexts::new());
    let store_config = StoreConfig {
        segment_size_bytes: SEGMENT_BYTES,
        ..StoreConfig::default()
    };
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
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
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

/// A domain event with everything a client may set, including an empty message id.
pub fn event(aggregate: &str, sequence: i64) -> Event {
    let mut meta_data = HashMap::new();
    meta_data.insert(
        "text".to_string(),
        MetaDataValue {
            data: Some(meta_data_value::Data::TextValue(format!("t{sequence}"))),
        },
    );
    meta_data.insert(
        "number".to_string(),
        MetaDataValue {
            data: Some(meta_data_value::Data::NumberValue(-sequence - 1)),
        },
    );
    meta_data.insert(
        "flag".to_string(),
        MetaDataValue {
            data: Some(meta_data_value::Data::BooleanValue(true)),
        },
    );
    meta_data.insert(
        "double".to_string(),
        MetaDataValue {
            data: Some(meta_data_value::Data::DoubleValue(0.5)),
        },
    );
    meta_data.insert(
        "bytes".to_string(),
        MetaDataValue {
            data: Some(meta_data_value::Data::BytesValue(SerializedObject {
                r#type: "b".into(),
                revision: "r".into(),
                data: vec![0, 1, 2],
            })),
        },
    );
    Event {
        message_identifier: String::new(),
        aggregate_identifier: aggregate.to_string(),
        aggregate_sequence_number: sequence,
        aggregate_type: "Order".to_string(),
        timestamp: 1_600_000_000_000 + sequence,
        payload: Some(SerializedObject {
            r#type: "com.example.OrderPlaced".into(),
            revision: "1".into(),
            data: format!("payload of {aggregate} #{sequence}").into_bytes(),
        }),
        meta_data,
        snapshot: false,
    }
}

/// An event that belongs to no aggregate (no sequence check, not indexed).
pub fn loose_event(payload_type: &str, n: i64) -> Event {
    Event {
        message_identifier: format!("loose-{n}"),
        timestamp: 1_600_000_000_000 + n,
        payload: Some(SerializedObject {
            r#type: payload_type.into(),
            revision: String::new(),
            data: n.to_be_bytes().to_vec(),
        }),
        ..Event::default()
    }
}

pub fn snapshot(aggregate: &str, sequence: i64) -> Event {
    Event {
        snapshot: true,
        message_identifier: format!("snap-{aggregate}-{sequence}"),
        ..event(aggregate, sequence)
    }
}

/// Appends one transaction through the gRPC client.
pub async fn append(client: &mut EventStoreClient<Channel>, events: Vec<Event>) -> Result<(), tonic::Status> {
    let reply = client.append_event(tokio_stream::iter(events)).await?.into_inner();
    assert!(reply.success);
    Ok(())
}

pub async fn last_token(client: &mut EventStoreClient<Channel>) -> i64 {
    client
        .get_last_token(GetLastTokenRequest {})
        .await
        .expect("GetLastToken")
        .into_inner()
        .token
}

/// A request stream the test feeds by hand.
pub fn request_stream<T>() -> (mpsc::Sender<T>, ReceiverStream<T>) {
    let (sender, receiver) = mpsc::channel(16);
    (sender, ReceiverStream::new(receiver))
}

pub fn error_code(status: &tonic::Status) -> Option<&str> {
    status.metadata().get("axoniq-errorcode")?.to_str().ok()
}
