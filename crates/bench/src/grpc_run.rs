//! Appends over gRPC, end to end: a real `myelin-grpc` server on `127.0.0.1:0` over a real store,
//! and closed-loop clients (one HTTP/2 connection each) sending one AppendEvent stream per
//! transaction through the load generator's lean gRPC client ([`crate::load::grpc`]), each
//! waiting for its confirmation before the next. Client and server share this process and its
//! two CPUs, as they would share a machine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use bytes::BytesMut;
use myelin_grpc::{Contexts, NodeIdentity};
use myelin_proto::grpc::SerializedObject;
use myelin_proto::grpc::event::{ConfirmationWithConsistencyMarker, Event};
use myelin_store::{ContextStore, StoreConfig};
use tokio::net::TcpListener;

use crate::load::grpc::{GrpcConnection, put_message};
use crate::load::myelin::EVENT_STORE;
use crate::stats::{Samples, Summary, rate_per_sec};

pub struct GrpcRunConfig {
    pub dir: PathBuf,
    pub clients: usize,
    pub events_per_tx: usize,
    pub payload_bytes: usize,
    pub seconds: Duration,
    pub warmup: Duration,
}

pub struct GrpcOutcome {
    pub events_per_sec: f64,
    pub transactions_per_sec: f64,
    pub latency: Summary,
}

pub fn run(config: &GrpcRunConfig) -> Result<GrpcOutcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let dir = config
        .dir
        .join(format!("grpc-c{}-e{}", config.clients, config.events_per_tx));
    let outcome = runtime.block_on(drive(config, dir.clone()));
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn template(payload_bytes: usize) -> Event {
    let data = (0..payload_bytes).map(|i| (i.wrapping_mul(31) % 251) as u8).collect();
    Event {
        message_identifier: "be000000-0000-4000-0000-000000000000".to_string(),
        aggregate_type: "BenchAggregate".to_string(),
        timestamp: crate::event::now_ms(),
        payload: Some(SerializedObject {
            r#type: "io.myelin.bench.SomethingHappened".to_string(),
            revision: "1".to_string(),
            data,
        }),
        ..Event::default()
    }
}

async fn drive(config: &GrpcRunConfig, dir: PathBuf) -> Result<GrpcOutcome> {
    let store = ContextStore::open(
        "default",
        dir.clone(),
        dir,
        StoreConfig::default(),
        StoreConfig::default(),
    )?;
    let contexts = Arc::new(Contexts::new());
    contexts.insert(store.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(myelin_grpc::serve(listener, contexts, NodeIdentity::default(), async {
        let _ = stopped.await;
    }));

    let measure_from = Instant::now() + config.warmup;
    let until = measure_from + config.seconds;
    let mut clients = Vec::with_capacity(config.clients);
    for number in 0..config.clients {
        let mut connection = GrpcConnection::connect(&address.to_string()).await?;
        let append_uri = connection.method_uri(&format!("{EVENT_STORE}AppendEvent"))?;
        let template = template(config.payload_bytes);
        let events_per_tx = config.events_per_tx;
        clients.push(tokio::spawn(async move {
            let aggregate = format!("grpc-client-{number}");
            let mut samples = Samples::with_capacity(1 << 14);
            let mut sequence = 0i64;
            while Instant::now() < until {
                let mut transaction = BytesMut::new();
                for _ in 0..events_per_tx {
                    let mut event = template.clone();
                    event.aggregate_identifier.clone_from(&aggregate);
                    event.aggregate_sequence_number = sequence;
                    sequence += 1;
                    put_message(&mut transaction, &event);
                }
                let started = Instant::now();
                let confirmation: ConfirmationWithConsistencyMarker = connection
                    .call(&append_uri, transaction.freeze())
                    .await
                    .with_context(|| format!("client {number} append at sequence {sequence}"))?;
                ensure!(confirmation.success, "client {number}: the append was not confirmed");
                let done = Instant::now();
                if started >= measure_from && done <= until {
                    samples.record(done - started);
                }
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Samples::default();
    for client in clients {
        samples.merge(client.await??);
    }
    let _ = stop.send(());
    server.await??;
    tokio::task::spawn_blocking(move || store.shutdown()).await??;
    let latency = samples.summary();
    let transactions_per_sec = rate_per_sec(latency.count, config.seconds);
    Ok(GrpcOutcome {
        events_per_sec: transactions_per_sec * config.events_per_tx as f64,
        transactions_per_sec,
        latency,
    })
}
