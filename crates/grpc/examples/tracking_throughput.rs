//! Tracking-read throughput over loopback: fills a store, then times one ListEvents stream
//! reading every event through a tonic client. `cargo run --release -p myelin-grpc --example
//! tracking_throughput [events]`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use myelin_grpc::{Contexts, NodeIdentity, serve};
use myelin_proto::grpc::SerializedObject;
use myelin_proto::grpc::event::event_store_client::EventStoreClient;
use myelin_proto::grpc::event::{Event, GetEventsRequest};
use myelin_store::{ContextStore, Durability, StoreConfig};
use prost::Message;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let config = StoreConfig {
        durability: Durability::Interval {
            interval: std::time::Duration::from_millis(100),
        },
        ..StoreConfig::default()
    };
    let store = ContextStore::open("default", dir.path().into(), dir.path().into(), config.clone(), config)?;
    let fill = Instant::now();
    let writer = store.clone();
    tokio::task::spawn_blocking(move || -> Result<(), myelin_store::StoreError> {
        for chunk in 0..total.div_ceil(1000) {
            let events: Vec<Bytes> = (0..1000.min(total - chunk * 1000))
                .map(|i| {
                    Event {
                        message_identifier: format!("{chunk}-{i}"),
                        timestamp: 1_700_000_000_000,
                        payload: Some(SerializedObject {
                            r#type: "com.example.Tick".into(),
                            revision: String::new(),
                            data: vec![7; 64],
                        }),
                        ..Event::default()
                    }
                    .encode_to_vec()
                    .into()
                })
                .collect();
            writer.append(events)?.wait()?;
        }
        Ok(())
    })
    .await??;
    println!("filled {total} events in {:?}", fill.elapsed());

    let contexts = Arc::new(Contexts::new());
    contexts.insert(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, contexts.clone(), NodeIdentity::default(), async move {
        let _ = stopped.await;
    }));

    let mut client = EventStoreClient::connect(format!("http://{address}")).await?;
    let (requests, receiver) = tokio::sync::mpsc::channel(16);
    // Permits as the Java connector grants them: a window, topped up as it drains.
    let window = 5000i64;
    requests
        .send(GetEventsRequest {
            tracking_token: 0,
            number_of_permits: window,
            ..Default::default()
        })
        .await?;
    let start = Instant::now();
    let mut stream = client
        .list_events(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await?
        .into_inner();
    let mut received = 0usize;
    let mut since_grant = 0i64;
    while received < total {
        let Some(event) = stream.message().await? else { break };
        assert_eq!(event.token, received as i64);
        received += 1;
        since_grant += 1;
        if since_grant == window / 2 {
            requests
                .send(GetEventsRequest {
                    number_of_permits: since_grant,
                    ..Default::default()
                })
                .await?;
            since_grant = 0;
        }
    }
    let elapsed = start.elapsed();
    println!(
        "tracked {received} events in {elapsed:?}: {:.0} events/s",
        received as f64 / elapsed.as_secs_f64()
    );
    drop(requests);
    drop(stream);
    let _ = stop.send(());
    server.await??;
    contexts.remove("default");
    tokio::task::spawn_blocking(move || store.shutdown()).await??;
    Ok(())
}
