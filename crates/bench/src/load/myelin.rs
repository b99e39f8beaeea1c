//! Myelin (or Axon Server) over the Axon gRPC API: one AppendEvent stream per transaction,
//! sent through [`super::grpc`] (the lean append path every gRPC adapter shares), and
//! ListEvents with permits for tracking reads and ListAggregateEvents for aggregates through
//! the tonic client generated from `myelin-proto`. A client uses one HTTP/2 connection for
//! what it does: appends, or reads (the tonic channel connects on its first read). Requests
//! name no context, so they go to `default`, as the Axon clients' do.

use std::time::Instant;

use anyhow::{Context as _, Result, anyhow};
use bytes::BytesMut;
use http::Uri;
use myelin_proto::grpc::SerializedObject;
use myelin_proto::grpc::event::event_store_client::EventStoreClient;
use myelin_proto::grpc::event::{
    ConfirmationWithConsistencyMarker, Event, GetAggregateEventsRequest, GetEventsRequest, GetLastTokenRequest,
};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use super::grpc::{GrpcConnection, put_message};
use super::system::{
    AGGREGATE_TYPE, Client, ClientSpec, EventSource, NewEvent, PAYLOAD_REVISION, PAYLOAD_TYPE, System, SystemKind,
    now_ms,
};

/// Permits granted when a tracking stream opens, and the top-up once only a fifth of them is
/// left: Axon Framework's defaults for an event processor (`initial-nr-of-permits` 5000,
/// `nr-of-new-permits` 4000, `new-permits-threshold` 1000), scaled together.
pub const PERMITS_DEFAULT: i64 = 5000;

pub struct Myelin {
    address: String,
    permits: i64,
}

impl Myelin {
    /// `address`: `host:port` of the gRPC port.
    pub fn new(address: &str, permits: i64) -> Self {
        Myelin {
            address: address.to_string(),
            permits: permits.max(5),
        }
    }
}

const APPEND_EVENT_PATH: &str = "/io.axoniq.axonserver.grpc.event.EventStore/AppendEvent";

pub struct MyelinClient {
    address: String,
    /// Reads; connects on first use.
    client: EventStoreClient<Channel>,
    /// Appends.
    appends: GrpcConnection,
    append_uri: Uri,
    source: EventSource,
    template: Event,
    permits: i64,
}

impl System for Myelin {
    type Client = MyelinClient;

    fn kind(&self) -> SystemKind {
        SystemKind::Myelin
    }

    async fn connect(&self, spec: ClientSpec) -> Result<MyelinClient> {
        let url = format!("http://{}", self.address);
        let channel = Endpoint::from_shared(url.clone())
            .with_context(|| format!("bad Myelin address {:?}", self.address))?
            .tcp_nodelay(true)
            .connect_lazy();
        let appends = GrpcConnection::connect(&self.address)
            .await
            .with_context(|| format!("cannot connect to myelin at {url}"))?;
        let append_uri = appends.method_uri(APPEND_EVENT_PATH)?;
        let source = EventSource::new(spec);
        let template = Event {
            aggregate_type: AGGREGATE_TYPE.to_string(),
            payload: Some(SerializedObject {
                r#type: PAYLOAD_TYPE.to_string(),
                revision: PAYLOAD_REVISION.to_string(),
                data: source.payload().to_vec(),
            }),
            ..Event::default()
        };
        Ok(MyelinClient {
            address: self.address.clone(),
            client: EventStoreClient::new(channel),
            appends,
            append_uri,
            source,
            template,
            permits: self.permits,
        })
    }
}

impl MyelinClient {
    async fn last_token(&mut self) -> Result<i64> {
        let token = self
            .client
            .get_last_token(GetLastTokenRequest {})
            .await
            .with_context(|| format!("GetLastToken at myelin {}", self.address))?
            .into_inner()
            .token;
        Ok(token)
    }

    /// Streams events from `first_token` with Axon's permit scheme until `enough` says stop or
    /// the deadline passes; returns how many arrived.
    async fn track(
        &mut self,
        first_token: i64,
        count: Option<u64>,
        until: Option<Instant>,
        seen: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64> {
        let (requests, receiver) = mpsc::channel(4);
        let window = self.permits;
        let top_up = window * 4 / 5;
        requests
            .send(GetEventsRequest {
                tracking_token: first_token,
                number_of_permits: window,
                client_id: format!("myelin-load-{}", std::process::id()),
                component_name: "myelin-load".to_string(),
                processor: "bench".to_string(),
                ..GetEventsRequest::default()
            })
            .await
            .map_err(|_| anyhow!("ListEvents request stream closed"))?;
        let mut stream = self
            .client
            .list_events(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
            .with_context(|| format!("ListEvents at myelin {}", self.address))?
            .into_inner();
        let mut received = 0u64;
        let mut left = window;
        let mut expected_token = first_token;
        loop {
            if count.is_some_and(|count| received >= count) {
                break;
            }
            let next = match until {
                Some(until) => match tokio::time::timeout_at(until.into(), stream.message()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => stream.message().await,
            };
            let Some(event) = next.with_context(|| format!("ListEvents stream from myelin {}", self.address))? else {
                break;
            };
            anyhow::ensure!(
                event.token == expected_token,
                "ListEvents sent token {} where {expected_token} was next",
                event.token
            );
            expected_token += 1;
            received += 1;
            seen(1);
            left -= 1;
            if left <= window - top_up {
                left += top_up;
                // The stream may already be ending; a lost top-up then does not matter.
                let _ = requests
                    .send(GetEventsRequest {
                        number_of_permits: top_up,
                        ..GetEventsRequest::default()
                    })
                    .await;
            }
        }
        // Dropping the response stream cancels the call; the server frees the stream at once.
        Ok(received)
    }
}

impl Client for MyelinClient {
    async fn append(&mut self, events: &[NewEvent<'_>]) -> Result<()> {
        let timestamp = now_ms();
        let mut body = BytesMut::new();
        for e in events {
            let mut event = self.template.clone();
            event.message_identifier = self.source.next_identifier();
            event.aggregate_identifier = e.aggregate.to_string();
            event.aggregate_sequence_number = e.sequence;
            event.timestamp = timestamp;
            put_message(&mut body, &event);
        }
        let confirmation: ConfirmationWithConsistencyMarker = self
            .appends
            .call(&self.append_uri, body.freeze())
            .await
            .with_context(|| format!("AppendEvent at myelin {}", self.address))?;
        anyhow::ensure!(confirmation.success, "myelin did not confirm the transaction");
        Ok(())
    }

    async fn read_all(&mut self, count: u64, seen: &mut (dyn FnMut(u64) + Send)) -> Result<u64> {
        self.track(0, Some(count), None, seen).await
    }

    async fn read_aggregate(&mut self, aggregate: &str) -> Result<u64> {
        let mut stream = self
            .client
            .list_aggregate_events(GetAggregateEventsRequest {
                aggregate_id: aggregate.to_string(),
                initial_sequence: 0,
                allow_snapshots: false,
                ..GetAggregateEventsRequest::default()
            })
            .await
            .with_context(|| format!("ListAggregateEvents at myelin {}", self.address))?
            .into_inner();
        let mut events = 0u64;
        while let Some(event) = stream
            .message()
            .await
            .with_context(|| format!("ListAggregateEvents stream from myelin {}", self.address))?
        {
            anyhow::ensure!(
                event.aggregate_sequence_number == events as i64,
                "aggregate {aggregate}: sequence {} where {events} was next",
                event.aggregate_sequence_number
            );
            events += 1;
        }
        Ok(events)
    }

    async fn tail(&mut self, until: Instant, seen: &mut (dyn FnMut(u64) + Send)) -> Result<u64> {
        let next = self.last_token().await? + 1;
        self.track(next, None, Some(until), seen).await
    }

    async fn event_count(&mut self) -> Result<u64> {
        Ok(u64::try_from(self.last_token().await? + 1).unwrap_or(0))
    }
}
