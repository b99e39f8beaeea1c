//! Myelin (or Axon Server) over the Axon gRPC API, through [`super::grpc`] (the lean client
//! every gRPC adapter shares), one HTTP/2 connection per client: one AppendEvent stream per
//! transaction, ListEvents with Axon's permits for tracking reads, ListAggregateEvents for
//! aggregates. Of each event read, only the token or sequence number it checks is decoded.
//! Requests name no context, so they go to `default`, as the Axon clients' do.

use std::time::Instant;

use anyhow::{Context as _, Result};
use bytes::BytesMut;
use http::Uri;
use myelin_proto::grpc::SerializedObject;
use myelin_proto::grpc::event::{
    ConfirmationWithConsistencyMarker, Event, GetAggregateEventsRequest, GetEventsRequest, GetLastTokenRequest,
    TrackingToken,
};
use prost::Message;

use super::grpc::{GrpcConnection, framed, put_message};
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

/// The path prefix of the EventStore service's methods.
pub const EVENT_STORE: &str = "/io.axoniq.axonserver.grpc.event.EventStore/";

/// The EventStore methods the generator calls.
struct Methods {
    append_event: Uri,
    list_events: Uri,
    list_aggregate_events: Uri,
    get_last_token: Uri,
}

impl Methods {
    fn of(connection: &GrpcConnection) -> Result<Methods> {
        let uri = |method: &str| connection.method_uri(&format!("{EVENT_STORE}{method}"));
        Ok(Methods {
            append_event: uri("AppendEvent")?,
            list_events: uri("ListEvents")?,
            list_aggregate_events: uri("ListAggregateEvents")?,
            get_last_token: uri("GetLastToken")?,
        })
    }
}

/// What the generator checks of an `EventWithToken`: its token (the event is skipped).
#[derive(Clone, PartialEq, Message)]
struct TokenOnly {
    #[prost(int64, tag = "1")]
    token: i64,
}

/// What the generator checks of an `Event`: its sequence number (the rest is skipped).
#[derive(Clone, PartialEq, Message)]
struct SequenceOnly {
    #[prost(int64, tag = "3")]
    aggregate_sequence_number: i64,
}

pub struct MyelinClient {
    address: String,
    connection: GrpcConnection,
    methods: Methods,
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
        let connection = GrpcConnection::connect(&self.address)
            .await
            .with_context(|| format!("cannot connect to myelin at http://{}", self.address))?;
        let methods = Methods::of(&connection)?;
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
            connection,
            methods,
            source,
            template,
            permits: self.permits,
        })
    }
}

/// The last token of the `default` context at `address` (-1 when empty), through a
/// connection of its own: what `myelin-load last-token` polls while a node catches up.
pub async fn last_token(address: &str) -> Result<i64> {
    let spec = ClientSpec {
        index: u32::MAX,
        payload_bytes: 0,
    };
    Myelin::new(address, PERMITS_DEFAULT)
        .connect(spec)
        .await?
        .last_token()
        .await
}

impl MyelinClient {
    async fn last_token(&mut self) -> Result<i64> {
        let token: TrackingToken = self
            .connection
            .call(&self.methods.get_last_token, framed(&GetLastTokenRequest {}))
            .await
            .with_context(|| format!("GetLastToken at myelin {}", self.address))?;
        Ok(token.token)
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
        let window = self.permits;
        let top_up = window * 4 / 5;
        let open = GetEventsRequest {
            tracking_token: first_token,
            number_of_permits: window,
            client_id: format!("myelin-load-{}", std::process::id()),
            component_name: "myelin-load".to_string(),
            processor: "bench".to_string(),
            ..GetEventsRequest::default()
        };
        let mut call = self
            .connection
            .open(&self.methods.list_events, framed(&open), false)
            .await
            .with_context(|| format!("ListEvents at myelin {}", self.address))?;
        let mut received = 0u64;
        let mut left = window;
        let mut expected_token = first_token;
        loop {
            if count.is_some_and(|count| received >= count) {
                break;
            }
            let next = match until {
                Some(until) => match tokio::time::timeout_at(until.into(), call.next_message()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => call.next_message().await,
            };
            let Some(message) = next.with_context(|| format!("ListEvents stream from myelin {}", self.address))? else {
                break;
            };
            let event = TokenOnly::decode(message).context("an EventWithToken from ListEvents")?;
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
                let _ = call.send(framed(&GetEventsRequest {
                    number_of_permits: top_up,
                    ..GetEventsRequest::default()
                }));
            }
        }
        // Dropping the call cancels it; the server frees the stream at once.
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
            .connection
            .call(&self.methods.append_event, body.freeze())
            .await
            .with_context(|| format!("AppendEvent at myelin {}", self.address))?;
        anyhow::ensure!(confirmation.success, "myelin did not confirm the transaction");
        Ok(())
    }

    async fn read_all(&mut self, count: u64, seen: &mut (dyn FnMut(u64) + Send)) -> Result<u64> {
        self.track(0, Some(count), None, seen).await
    }

    async fn read_aggregate(&mut self, aggregate: &str) -> Result<u64> {
        let request = GetAggregateEventsRequest {
            aggregate_id: aggregate.to_string(),
            initial_sequence: 0,
            allow_snapshots: false,
            ..GetAggregateEventsRequest::default()
        };
        let mut call = self
            .connection
            .open(&self.methods.list_aggregate_events, framed(&request), true)
            .await
            .with_context(|| format!("ListAggregateEvents at myelin {}", self.address))?;
        let mut events = 0u64;
        while let Some(message) = call
            .next_message()
            .await
            .with_context(|| format!("ListAggregateEvents stream from myelin {}", self.address))?
        {
            let event = SequenceOnly::decode(message).context("an Event from ListAggregateEvents")?;
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
