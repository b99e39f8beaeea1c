//! UmaDB over its own gRPC API (`umadb.v1.DCB`, see `proto/umadb.proto`): appends through
//! [`super::grpc`] (the lean append path every gRPC adapter shares), reads through the tonic
//! client generated from the proto. A client uses one HTTP/2 connection for what it does:
//! appends, or reads (the tonic channel connects on its first read). An aggregate is the DCB way: every event carries the tag
//! `aggregate:<id>`, and reading an aggregate is a Read whose query asks for that tag (served
//! by UmaDB's tag index, in position order, which is sequence order here). Appends are
//! unconditional, as the issue asks: no consistency check, only the durable append. The
//! sequence number is not stored (UmaDB has none); the event's UUID is.

use std::time::Instant;

use anyhow::{Context as _, Result};
use bytes::BytesMut;
use http::Uri;
use tonic::transport::{Channel, Endpoint};

use super::grpc::{GrpcConnection, put_message};
use super::system::{Client, ClientSpec, EventSource, NewEvent, PAYLOAD_TYPE, System, SystemKind};
use super::umadb_proto::dcb_client::DcbClient;
use super::umadb_proto::{
    AppendRequest, AppendResponse, Event, HeadRequest, Query, QueryItem, ReadRequest, SubscribeRequest,
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

const APPEND_PATH: &str = "/umadb.v1.DCB/Append";

pub struct UmadbClient {
    address: String,
    /// Reads; connects on first use.
    client: DcbClient<Channel>,
    /// Appends.
    appends: GrpcConnection,
    append_uri: Uri,
    source: EventSource,
}

impl System for Umadb {
    type Client = UmadbClient;

    fn kind(&self) -> SystemKind {
        SystemKind::Umadb
    }

    async fn connect(&self, spec: ClientSpec) -> Result<UmadbClient> {
        let url = format!("http://{}", self.address);
        let channel = Endpoint::from_shared(url.clone())
            .with_context(|| format!("bad UmaDB address {:?}", self.address))?
            .tcp_nodelay(true)
            .connect_lazy();
        let appends = GrpcConnection::connect(&self.address)
            .await
            .with_context(|| format!("cannot connect to umadb at {url}"))?;
        let append_uri = appends.method_uri(APPEND_PATH)?;
        Ok(UmadbClient {
            address: self.address.clone(),
            client: DcbClient::new(channel),
            appends,
            append_uri,
            source: EventSource::new(spec),
        })
    }
}

pub fn aggregate_tag(aggregate: &str) -> String {
    format!("aggregate:{aggregate}")
}

impl UmadbClient {
    async fn head(&mut self) -> Result<u64> {
        let head = self
            .client
            .head(HeadRequest {})
            .await
            .with_context(|| format!("Head at umadb {}", self.address))?
            .into_inner();
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
        let mut body = BytesMut::new();
        put_message(&mut body, &request);
        let _: AppendResponse = self
            .appends
            .call(&self.append_uri, body.freeze())
            .await
            .with_context(|| format!("Append at umadb {}", self.address))?;
        Ok(())
    }

    async fn read_all(&mut self, count: u64, seen: &mut (dyn FnMut(u64) + Send)) -> Result<u64> {
        let limit = u32::try_from(count).context("UmaDB reads at most 2^32-1 events in one call")?;
        let mut stream = self
            .client
            .read(ReadRequest {
                start: Some(1),
                limit: Some(limit),
                batch_size: Some(BATCH_EVENTS),
                ..ReadRequest::default()
            })
            .await
            .with_context(|| format!("Read at umadb {}", self.address))?
            .into_inner();
        let mut received = 0u64;
        let mut expected = 1u64;
        while let Some(message) = stream
            .message()
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
        let mut stream = self
            .client
            .read(ReadRequest {
                query: Some(Query {
                    items: vec![QueryItem {
                        types: Vec::new(),
                        tags: vec![aggregate_tag(aggregate)],
                    }],
                }),
                batch_size: Some(BATCH_EVENTS),
                ..ReadRequest::default()
            })
            .await
            .with_context(|| format!("Read of {aggregate} at umadb {}", self.address))?
            .into_inner();
        let mut events = 0u64;
        while let Some(message) = stream
            .message()
            .await
            .with_context(|| format!("Read stream of {aggregate} from umadb {}", self.address))?
        {
            events += message.events.len() as u64;
        }
        Ok(events)
    }

    async fn tail(&mut self, until: Instant, seen: &mut (dyn FnMut(u64) + Send)) -> Result<u64> {
        let after = self.head().await?;
        let mut stream = self
            .client
            .subscribe(SubscribeRequest {
                query: None,
                after: Some(after),
                batch_size: Some(BATCH_EVENTS),
            })
            .await
            .with_context(|| format!("Subscribe at umadb {}", self.address))?
            .into_inner();
        let mut received = 0u64;
        loop {
            let next = match tokio::time::timeout_at(until.into(), stream.message()).await {
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
