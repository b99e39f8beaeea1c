//! UmaDB over its own gRPC API (`umadb.v1.DCB`, see `proto/umadb.proto`), through
//! [`super::grpc`] (the lean client every gRPC adapter shares), one HTTP/2 connection per
//! client. An aggregate is the DCB way: every event carries the tag `aggregate:<id>`, and
//! reading an aggregate is a Read whose query asks for that tag (served by UmaDB's tag index,
//! in position order, which is sequence order here). Appends are unconditional, as the issue
//! asks: no consistency check, only the durable append. The sequence number is not stored
//! (UmaDB has none); the event's UUID is. Of each event read, only its position is decoded.

use std::time::Instant;

use anyhow::{Context as _, Result};
use http::Uri;
use prost::Message;

use super::grpc::{GrpcCall, GrpcConnection, framed};
use super::system::{Client, ClientSpec, EventSource, NewEvent, PAYLOAD_TYPE, System, SystemKind};
use super::umadb_proto::{
    AppendRequest, AppendResponse, Event, HeadRequest, HeadResponse, Query, QueryItem, ReadRequest, SubscribeRequest,
};

/// Events per Read/Subscribe message asked for (UmaDB's own default).
const BATCH_EVENTS: u32 = 1024;

pub struct Umadb {
    address: String,
}

impl Umadb {
    /// `address`: `host:port` the server listens on.
    pub fn new(address: &str) -> Self {
        Umadb {
            address: address.to_string(),
        }
    }
}

const SERVICE: &str = "/umadb.v1.DCB/";

/// The DCB methods the generator calls.
struct Methods {
    append: Uri,
    read: Uri,
    subscribe: Uri,
    head: Uri,
}

impl Methods {
    fn of(connection: &GrpcConnection) -> Result<Methods> {
        let uri = |method: &str| connection.method_uri(&format!("{SERVICE}{method}"));
        Ok(Methods {
            append: uri("Append")?,
            read: uri("Read")?,
            subscribe: uri("Subscribe")?,
            head: uri("Head")?,
        })
    }
}

/// What the generator checks of a `ReadResponse` or `SubscribeResponse` (both carry their
/// `SequencedEvent`s in field 1): each event's position (the event itself is skipped).
#[derive(Clone, PartialEq, Message)]
struct Positions {
    #[prost(message, repeated, tag = "1")]
    events: Vec<PositionOnly>,
}

#[derive(Clone, PartialEq, Message)]
struct PositionOnly {
    #[prost(uint64, tag = "1")]
    position: u64,
}

pub struct UmadbClient {
    address: String,
    connection: GrpcConnection,
    methods: Methods,
    source: EventSource,
}

impl System for Umadb {
    type Client = UmadbClient;

    fn kind(&self) -> SystemKind {
        SystemKind::Umadb
    }

    async fn connect(&self, spec: ClientSpec) -> Result<UmadbClient> {
        let connection = GrpcConnection::connect(&self.address)
            .await
            .with_context(|| format!("cannot connect to umadb at http://{}", self.address))?;
        let methods = Methods::of(&connection)?;
        Ok(UmadbClient {
            address: self.address.clone(),
            connection,
            methods,
            source: EventSource::new(spec),
        })
    }
}

/// The next message's events, or `None` at the end of the call.
async fn next_positions(call: &mut GrpcCall) -> Result<Option<Positions>> {
    match call.next_message().await? {
        Some(message) => Ok(Some(Positions::decode(message).context("a Read/Subscribe response")?)),
        None => Ok(None),
    }
}

pub fn aggregate_tag(aggregate: &str) -> String {
    format!("aggregate:{aggregate}")
}

impl UmadbClient {
    async fn head(&mut self) -> Result<u64> {
        let head: HeadResponse = self
            .connection
            .call(&self.methods.head, framed(&HeadRequest {}))
            .await
            .with_context(|| format!("Head at umadb {}", self.address))?;
        // Unset on an empty store; positions start at 1 and have no gaps.
        Ok(head.position.unwrap_or(0))
    }
}

impl Client for UmadbClient {
    async fn append(&mut self, events: &[NewEvent<'_>]) -> Result<()> {
        let request = AppendRequest {
            events: events
                .iter()
                .map(|e| Event {
                    event_type: PAYLOAD_TYPE.to_string(),
                    tags: vec![aggregate_tag(e.aggregate)],
                    data: self.source.payload().to_vec(),
                    uuid: self.source.next_identifier(),
                    metadata: Vec::new(),
                })
                .collect(),
            condition: None,
            tracking_info: None,
        };
        let _: AppendResponse = self
            .connection
            .call(&self.methods.append, framed(&request))
            .await
            .with_context(|| format!("Append at umadb {}", self.address))?;
        Ok(())
    }

    async fn read_all(&mut self, count: u64, seen: &mut (dyn FnMut(u64) + Send)) -> Result<u64> {
        let limit = u32::try_from(count).context("UmaDB reads at most 2^32-1 events in one call")?;
        let request = ReadRequest {
            start: Some(1),
            limit: Some(limit),
            batch_size: Some(BATCH_EVENTS),
            ..ReadRequest::default()
        };
        let mut call = self
            .connection
            .open(&self.methods.read, framed(&request), true)
            .await
            .with_context(|| format!("Read at umadb {}", self.address))?;
        let mut received = 0u64;
        let mut expected = 1u64;
        while let Some(message) = next_positions(&mut call)
            .await
            .with_context(|| format!("Read stream from umadb {}", self.address))?
        {
            if let (Some(first), Some(last)) = (message.events.first(), message.events.last()) {
                anyhow::ensure!(
                    first.position == expected,
                    "Read sent position {} where {expected} was next",
                    first.position
                );
                expected = last.position + 1;
            }
            let n = message.events.len() as u64;
            received += n;
            seen(n);
        }
        Ok(received)
    }

    async fn read_aggregate(&mut self, aggregate: &str) -> Result<u64> {
        let request = ReadRequest {
            query: Some(Query {
                items: vec![QueryItem {
                    types: Vec::new(),
                    tags: vec![aggregate_tag(aggregate)],
                }],
            }),
            batch_size: Some(BATCH_EVENTS),
            ..ReadRequest::default()
        };
        let mut call = self
            .connection
            .open(&self.methods.read, framed(&request), true)
            .await
            .with_context(|| format!("Read of {aggregate} at umadb {}", self.address))?;
        let mut events = 0u64;
        while let Some(message) = next_positions(&mut call)
            .await
            .with_context(|| format!("Read stream of {aggregate} from umadb {}", self.address))?
        {
            events += message.events.len() as u64;
        }
        Ok(events)
    }

    async fn tail(&mut self, until: Instant, seen: &mut (dyn FnMut(u64) + Send)) -> Result<u64> {
        let after = self.head().await?;
        let request = SubscribeRequest {
            query: None,
            after: Some(after),
            batch_size: Some(BATCH_EVENTS),
        };
        let mut call = self
            .connection
            .open(&self.methods.subscribe, framed(&request), true)
            .await
            .with_context(|| format!("Subscribe at umadb {}", self.address))?;
        let mut received = 0u64;
        loop {
            let next = match tokio::time::timeout_at(until.into(), next_positions(&mut call)).await {
                Ok(next) => next,
                Err(_) => break,
            };
            let Some(message) = next.with_context(|| format!("Subscribe stream from umadb {}", self.address))? else {
                break;
            };
            let n = message.events.len() as u64;
            received += n;
            seen(n);
        }
        Ok(received)
    }

    async fn event_count(&mut self) -> Result<u64> {
        self.head().await
    }
}
