//! The query router (MESSAGING.md §3.4; Axon Server SE's `QueryDispatcher`): which handler
//! streams of a context subscribed which query names under which component, and the queries
//! under way.
//!
//! A query goes to **one handler stream per component** (round robin within a component),
//! through that stream's queue and permits, with `SERVER_SUPPORTS_STREAMING=false` appended so
//! that handlers answer at once (streaming with server-side flow control comes later). Answers
//! reach the dispatcher as they come; an error answer is held and sent only if no handler
//! answered successfully by the time every handler completed. The dispatcher's stream ends when
//! every handler completed, failed, went away or ran out of time:
//!
//! | situation | code | message |
//! |---|---|---|
//! | no handler for the name in the context | 5000 | `No handler for query: <name>` |
//! | a query with the same id is under way | 5007 | `Query with supplied ID already present` |
//! | a handler's stream ended while it had the query | 4001 | `Connection to handler <client stream id> lost` |
//! | no completion within its `TIMEOUT` (300 s without one) | 5006 | `Query cancelled due to timeout` |
//! | the handler's queue is full | 1900 | `Failed to add request to queue <client stream id>` |
//! | the sender let more than `max_waiting_answers` answers wait | 1900 | `more than <n> answers waited …` |
//!
//! A dispatcher that cancels its call makes the router send `query_cancel` to the handlers
//! that have the query and take it out of the queues of those that do not yet.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use myelin_node::ErrorCode;
use myelin_proto::grpc::query::{
    QueryProviderInbound, QueryReference, QueryRequest, QueryResponse, SubscriptionQuery, SubscriptionQueryRequest,
    SubscriptionQueryResponse, query_provider_inbound, subscription_query_request,
};
use myelin_proto::grpc::{ErrorMessage, MetaDataValue, ProcessingInstruction, ProcessingKey, meta_data_value};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tracing::debug;

use crate::commands::{LOCATION, StreamId, TOO_MANY_REQUESTS};
use crate::handlers::{Source, start};
use crate::ids::uuid;

const NO_HANDLER_FOR_QUERY: ErrorCode = ErrorCode::NoHandlerForQuery;
const QUERY_TIMEOUT: ErrorCode = ErrorCode::QueryTimeout;
const QUERY_DUPLICATED: ErrorCode = ErrorCode::QueryDuplicated;
const CONNECTION_TO_HANDLER_LOST: ErrorCode = ErrorCode::ConnectionToHandlerLost;

/// The router's bounds, with Axon's property names and defaults where it has them.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Queries a handler's queue takes (`axoniq.axonserver.query-queue-capacity-per-client`, 10 000).
    pub queue_capacity: usize,
    /// How long a query without a `TIMEOUT` instruction may run (`default-query-timeout`, 300 s).
    pub timeout: Duration,
    /// Queries under way, over all handlers.
    pub max_active: usize,
    /// Answers of one query waiting for its sender to read them; a sender that lets more pile
    /// up gets code 1900 and the query is cancelled on the handlers.
    pub max_waiting_answers: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            queue_capacity: 10_000,
            timeout: Duration::from_secs(300),
            max_active: 100_000,
            max_waiting_answers: 1024,
        }
    }
}

type Handler = crate::handlers::Handler<QueryRequest, QueryProviderInbound>;

/// A query under way.
struct Active {
    /// The dispatcher's `Query` stream; dropped to end it.
    /// Holds at most `max_waiting_answers`; its last place is kept for a final error.
    dispatcher: mpsc::Sender<QueryResponse>,
    /// Handler streams that have not completed yet, and whether each was sent the query.
    pending: HashMap<StreamId, bool>,
    held_error: Option<QueryResponse>,
    answered: bool,
}

#[derive(Default)]
struct State {
    handlers: HashMap<StreamId, Handler>,
    /// (context, query name) → component → its handler streams (in subscription order).
    registry: HashMap<(String, String), BTreeMap<String, Vec<StreamId>>>,
    /// Round-robin position per (context, query name, component).
    turns: HashMap<(String, String, String), usize>,
    active: HashMap<String, Active>,
    /// Subscription queries by subscription id.
    subscriptions: HashMap<String, Subscribed>,
}

/// A subscription query (MESSAGING.md §3.5): every handler stream of its query got the
/// `subscribe`, and their answers for its id go to its sender.
struct Subscribed {
    context: String,
    query: String,
    request: SubscriptionQuery,
    sender: mpsc::UnboundedSender<SubscriptionQueryResponse>,
    handlers: HashSet<StreamId>,
}

/// Why a subscription query cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionRefused {
    /// No handler stream of the context handles the query (Axon code 5000).
    NoHandler(String),
    /// An initial result asked for a subscription the stream did not make first.
    NotSubscribed(String),
    /// A subscription with the same id is under way.
    Duplicate(String),
}

impl fmt::Display for SubscriptionRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubscriptionRefused::NoHandler(query) => write!(f, "No handler for query: {query}"),
            SubscriptionRefused::NotSubscribed(_) => f.write_str("Initial result asked before subscription"),
            SubscriptionRefused::Duplicate(id) => write!(f, "Subscription query {id} is already under way"),
        }
    }
}

pub struct QueryRouter {
    state: Mutex<State>,
    limits: QueryLimits,
}

impl fmt::Debug for QueryRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("QueryRouter")
            .field("handlers", &state.handlers.len())
            .field("active", &state.active.len())
            .field("limits", &self.limits)
            .finish()
    }
}

/// A query handler's subscription, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuerySubscriptionInfo {
    pub context: String,
    pub query: String,
    pub component: String,
    pub client_id: String,
    pub stream: StreamId,
}

impl QueryRouter {
    pub fn new(limits: QueryLimits) -> Arc<QueryRouter> {
        Arc::new(QueryRouter {
            state: Mutex::new(State::default()),
            limits,
        })
    }

    /// Registers a handler stream of `context`; queries go out through `outbound` while it has
    /// permits, until [`QueryRouter::disconnect`]. Must be called inside a Tokio runtime.
    pub fn connect(
        self: &Arc<Self>,
        context: &str,
        client_id: &str,
        component: &str,
        outbound: mpsc::Sender<QueryProviderInbound>,
    ) -> StreamId {
        start(
            self,
            |id, handler| {
                self.state.lock().handlers.insert(id, handler);
            },
            (context, client_id, component),
            self.limits.queue_capacity,
            outbound,
        )
    }

    /// `stream` handles `query` for `component` from now on.
    pub fn subscribe(&self, stream: &StreamId, query: &str, component: &str) {
        let mut state = self.state.lock();
        let Some(handler) = state.handlers.get_mut(stream) else {
            return;
        };
        handler.names.insert(query.to_string());
        if handler.component.is_empty() {
            handler.component = component.to_string();
        }
        let key = (handler.context.clone(), query.to_string());
        let streams = state
            .registry
            .entry(key)
            .or_default()
            .entry(component.to_string())
            .or_default();
        if !streams.contains(stream) {
            streams.push(stream.clone());
        }
        // Subscription queries already under way reach a handler that comes later too.
        let State {
            handlers,
            subscriptions,
            ..
        } = &mut *state;
        let Some(handler) = handlers.get(stream) else {
            return;
        };
        for subscribed in subscriptions.values_mut() {
            if subscribed.context == handler.context
                && subscribed.query == query
                && subscribed.handlers.insert(stream.clone())
            {
                send_subscription(
                    handler,
                    subscription_query_request::Request::Subscribe(subscribed.request.clone()),
                );
            }
        }
    }

    /// `stream` no longer handles `query`.
    pub fn unsubscribe(&self, stream: &StreamId, query: &str) {
        let mut state = self.state.lock();
        let Some(handler) = state.handlers.get_mut(stream) else {
            return;
        };
        handler.names.remove(query);
        let key = (handler.context.clone(), query.to_string());
        forget(&mut state.registry, &key, stream);
    }

    pub fn add_permits(&self, stream: &StreamId, permits: i64) {
        let mut state = self.state.lock();
        if let Some(handler) = state.handlers.get_mut(stream) {
            handler.grant(permits);
        }
    }

    /// A handler's answer to a query under way: a success goes to the dispatcher at once, an
    /// error is held (see the module doc).
    pub fn respond(&self, stream: &StreamId, response: QueryResponse) {
        let mut state = self.state.lock();
        let Some(active) = state.active.get_mut(&response.request_identifier) else {
            debug!(stream = %stream, query = %response.request_identifier, "an answer to no query under way; dropped");
            return;
        };
        if !active.pending.contains_key(stream) {
            return;
        }
        if response.error_code.is_empty() {
            if active.dispatcher.capacity() <= 1 {
                // The sender does not read: the last place carries why the query ends.
                let message = format!(
                    "more than {} answers waited for the sender to read them; the query was cancelled",
                    self.limits.max_waiting_answers
                );
                let id = response.request_identifier.clone();
                let _ = active.dispatcher.try_send(error(&id, TOO_MANY_REQUESTS, message));
                if let Some(active) = state.active.remove(&id) {
                    for (stream, sent) in active.pending {
                        self.withdraw(&mut state, &stream, &id, sent);
                    }
                }
                return;
            }
            active.answered = true;
            active.held_error = None;
            let _ = active.dispatcher.try_send(response);
        } else if !active.answered && active.held_error.is_none() {
            active.held_error = Some(response);
        }
    }

    /// The handler finished the query `request_id`.
    pub fn complete(&self, stream: &StreamId, request_id: &str) {
        let mut state = self.state.lock();
        retire(&mut state, request_id, stream, None);
    }

    /// The handler stream ended: its subscriptions go, and each query it had or had queued
    /// counts Axon code 4001 for it.
    pub fn disconnect(&self, stream: &StreamId) {
        let mut state = self.state.lock();
        let Some(handler) = state.handlers.remove(stream) else {
            return;
        };
        handler.stop();
        for name in &handler.names {
            forget(&mut state.registry, &(handler.context.clone(), name.clone()), stream);
        }
        let ids: Vec<String> = state
            .active
            .iter()
            .filter(|(_, active)| active.pending.contains_key(stream))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let lost = error(
                &id,
                CONNECTION_TO_HANDLER_LOST,
                format!("Connection to handler {stream} lost"),
            );
            retire(&mut state, &id, stream, Some(lost));
        }
        for subscribed in state.subscriptions.values_mut() {
            subscribed.handlers.remove(stream);
        }
    }

    /// A sender's subscription query: every handler stream of the query gets it, now and as
    /// they subscribe; their answers for it go to `sender` until
    /// [`QueryRouter::unsubscribe_query`].
    pub fn subscribe_query(
        &self,
        context: &str,
        request: SubscriptionQuery,
        sender: mpsc::UnboundedSender<SubscriptionQueryResponse>,
    ) -> Result<(), SubscriptionRefused> {
        let id = request.subscription_identifier.clone();
        let query = request
            .query_request
            .as_ref()
            .map(|q| q.query.clone())
            .unwrap_or_default();
        let mut state = self.state.lock();
        if state.subscriptions.contains_key(&id) {
            return Err(SubscriptionRefused::Duplicate(id));
        }
        let streams: Vec<StreamId> = state
            .registry
            .get(&(context.to_string(), query.clone()))
            .map(|components| components.values().flatten().cloned().collect())
            .unwrap_or_default();
        if streams.is_empty() {
            return Err(SubscriptionRefused::NoHandler(query));
        }
        let mut handlers = HashSet::new();
        for stream in streams {
            if let Some(handler) = state.handlers.get(&stream) {
                send_subscription(handler, subscription_query_request::Request::Subscribe(request.clone()));
                handlers.insert(stream);
            }
        }
        state.subscriptions.insert(
            id,
            Subscribed {
                context: context.to_string(),
                query,
                request,
                sender,
                handlers,
            },
        );
        Ok(())
    }

    /// The initial result of a subscription query the old way (AF 4.13's `get_initial_result`):
    /// asked of one handler stream per component; their answers come back as
    /// `initial_result`s on the subscription.
    pub fn initial_result(&self, request: SubscriptionQuery) -> Result<(), SubscriptionRefused> {
        let mut state = self.state.lock();
        let id = request.subscription_identifier.clone();
        let Some(subscribed) = state.subscriptions.get(&id) else {
            return Err(SubscriptionRefused::NotSubscribed(id));
        };
        let key = (subscribed.context.clone(), subscribed.query.clone());
        let picks: Vec<(String, Vec<StreamId>)> = state
            .registry
            .get(&key)
            .map(|components| components.iter().map(|(c, s)| (c.clone(), s.clone())).collect())
            .unwrap_or_default();
        for (component, streams) in picks {
            let turn = state
                .turns
                .entry((key.0.clone(), key.1.clone(), component))
                .or_default();
            let pick = streams.get(*turn % streams.len().max(1)).cloned();
            *turn = turn.wrapping_add(1);
            if let Some(handler) = pick.and_then(|stream| state.handlers.get(&stream)) {
                #[allow(deprecated)]
                let ask = subscription_query_request::Request::GetInitialResult(request.clone());
                send_subscription(handler, ask);
            }
        }
        Ok(())
    }

    /// A handler's answer on a subscription query: to its sender; for a subscription that is no
    /// more, the handler is told to unsubscribe.
    pub fn subscription_response(&self, stream: &StreamId, response: SubscriptionQueryResponse) {
        let state = self.state.lock();
        match state.subscriptions.get(&response.subscription_identifier) {
            Some(subscribed) => {
                let _ = subscribed.sender.send(response);
            }
            None => {
                if let Some(handler) = state.handlers.get(stream) {
                    let unsubscribe = SubscriptionQuery {
                        subscription_identifier: response.subscription_identifier,
                        ..SubscriptionQuery::default()
                    };
                    send_subscription(handler, subscription_query_request::Request::Unsubscribe(unsubscribe));
                }
            }
        }
    }

    /// The sender is done with subscription `id` (it unsubscribed or went away): every handler
    /// that had it is told.
    pub fn unsubscribe_query(&self, id: &str) {
        let mut state = self.state.lock();
        let Some(subscribed) = state.subscriptions.remove(id) else {
            return;
        };
        let unsubscribe = SubscriptionQuery {
            subscription_identifier: id.to_string(),
            query_request: subscribed.request.query_request.clone(),
            ..SubscriptionQuery::default()
        };
        for stream in &subscribed.handlers {
            if let Some(handler) = state.handlers.get(stream) {
                send_subscription(
                    handler,
                    subscription_query_request::Request::Unsubscribe(unsubscribe.clone()),
                );
            }
        }
    }

    /// Subscription queries under way.
    pub fn subscription_queries(&self) -> usize {
        self.state.lock().subscriptions.len()
    }

    /// Routes `query` of `context`: the receiver yields the answers and ends when the query is
    /// over. Dropping it (the dispatcher cancelled) cancels the query: call
    /// [`QueryRouter::cancel`] then.
    pub fn query(self: &Arc<Self>, context: &str, mut query: QueryRequest) -> mpsc::Receiver<QueryResponse> {
        if query.message_identifier.is_empty() {
            query.message_identifier = uuid();
        }
        let id = query.message_identifier.clone();
        let (dispatcher, answers) = mpsc::channel(self.limits.max_waiting_answers.max(2));
        let mut state = self.state.lock();
        if state.active.contains_key(&id) {
            let message = "Query with supplied ID already present".to_string();
            let _ = dispatcher.try_send(error(&id, QUERY_DUPLICATED, message));
            return answers;
        }
        if state.active.len() >= self.limits.max_active {
            let message = format!("Query buffer is full ({} queries under way)", state.active.len());
            let _ = dispatcher.try_send(error(&id, TOO_MANY_REQUESTS, message));
            return answers;
        }
        let key = (context.to_string(), query.query.clone());
        let targets: Vec<StreamId> = match state.registry.get(&key) {
            Some(components) => {
                let picks: Vec<(String, Vec<StreamId>)> = components
                    .iter()
                    .map(|(c, streams)| (c.clone(), streams.clone()))
                    .collect();
                picks
                    .into_iter()
                    .filter_map(|(component, streams)| {
                        let turn = state
                            .turns
                            .entry((context.to_string(), query.query.clone(), component))
                            .or_default();
                        let pick = streams.get(*turn % streams.len().max(1)).cloned();
                        *turn = turn.wrapping_add(1);
                        pick
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        if targets.is_empty() {
            let message = format!("No handler for query: {}", query.query);
            let _ = dispatcher.try_send(error(&id, NO_HANDLER_FOR_QUERY, message));
            return answers;
        }
        let timeout = timeout_of(&query).unwrap_or(self.limits.timeout);
        // Handlers answer at once: the server does not stream yet.
        query.processing_instructions.push(ProcessingInstruction {
            key: ProcessingKey::ServerSupportsStreaming as i32,
            value: Some(MetaDataValue {
                data: Some(meta_data_value::Data::BooleanValue(false)),
            }),
        });
        let mut active = Active {
            dispatcher,
            pending: HashMap::new(),
            held_error: None,
            answered: false,
        };
        let mut refused = Vec::new();
        for target in targets {
            let Some(handler) = state.handlers.get_mut(&target) else {
                continue;
            };
            match handler.enqueue(0, query.clone()) {
                Ok(()) => {
                    active.pending.insert(target, false);
                }
                Err(_) => refused.push(error(
                    &id,
                    TOO_MANY_REQUESTS,
                    format!("Failed to add request to queue {target}"),
                )),
            }
        }
        if active.pending.is_empty() {
            if let Some(first) = refused.into_iter().next() {
                let _ = active.dispatcher.try_send(first);
            }
            return answers;
        }
        active.held_error = refused.into_iter().next();
        state.active.insert(id.clone(), active);
        drop(state);
        let router = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(router) = router.upgrade() {
                router.expire(&id);
            }
        });
        answers
    }

    /// The dispatcher gave up on `request_id`: handlers that have it are told, queues give it up.
    pub fn cancel(&self, request_id: &str) {
        let mut state = self.state.lock();
        let Some(active) = state.active.remove(request_id) else {
            return;
        };
        for (stream, sent) in active.pending {
            self.withdraw(&mut state, &stream, request_id, sent);
        }
    }

    /// Every subscription of `context` (all contexts when `None`), sorted.
    pub fn subscriptions(&self, context: Option<&str>) -> Vec<QuerySubscriptionInfo> {
        let state = self.state.lock();
        let mut out = Vec::new();
        for ((c, query), components) in &state.registry {
            if context.is_some_and(|wanted| wanted != c) {
                continue;
            }
            for (component, streams) in components {
                for stream in streams {
                    if let Some(handler) = state.handlers.get(stream) {
                        out.push(QuerySubscriptionInfo {
                            context: c.clone(),
                            query: query.clone(),
                            component: component.clone(),
                            client_id: handler.client_id.clone(),
                            stream: stream.clone(),
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| (&a.context, &a.query, &a.stream).cmp(&(&b.context, &b.query, &b.stream)));
        out
    }

    /// Queries under way.
    pub fn active(&self) -> usize {
        self.state.lock().active.len()
    }

    /// `request_id` ran out of time: every handler still on it counts Axon code 5006 and is told.
    fn expire(&self, request_id: &str) {
        let mut state = self.state.lock();
        let Some(active) = state.active.get(request_id) else {
            return;
        };
        let pending: Vec<(StreamId, bool)> = active.pending.iter().map(|(s, sent)| (s.clone(), *sent)).collect();
        for (stream, sent) in pending {
            self.withdraw(&mut state, &stream, request_id, sent);
            let late = error(request_id, QUERY_TIMEOUT, "Query cancelled due to timeout".to_string());
            retire(&mut state, request_id, &stream, Some(late));
        }
    }

    /// Takes `request_id` back from `stream`: a `query_cancel` if it was sent, else out of
    /// the queue.
    fn withdraw(&self, state: &mut State, stream: &StreamId, request_id: &str, sent: bool) {
        let Some(handler) = state.handlers.get_mut(stream) else {
            return;
        };
        if sent {
            let cancel = QueryProviderInbound {
                request: Some(query_provider_inbound::Request::QueryCancel(QueryReference {
                    request_id: request_id.to_string(),
                })),
                instruction_id: String::new(),
            };
            // A full or closed stream: the handler is slow or gone; its answers are dropped.
            let _ = handler.outbound.try_send(cancel);
        } else {
            handler
                .queue
                .remove_where(|query| query.message_identifier == request_id);
        }
    }
}

/// Sends a subscription-query instruction to `handler` (outside its permits: it is small and
/// rare); a handler whose stream is full or closed misses it, with a note in the log.
fn send_subscription(handler: &Handler, request: subscription_query_request::Request) {
    let message = QueryProviderInbound {
        request: Some(query_provider_inbound::Request::SubscriptionQueryRequest(
            SubscriptionQueryRequest { request: Some(request) },
        )),
        instruction_id: String::new(),
    };
    if handler.outbound.try_send(message).is_err() {
        debug!(client = %handler.client_id, "a subscription-query instruction did not fit the handler's stream");
    }
}

/// `stream` is done with `request_id` (with `failure` held if no success comes); the query
/// ends when no handler is left on it.
fn retire(state: &mut State, request_id: &str, stream: &StreamId, failure: Option<QueryResponse>) {
    let Some(active) = state.active.get_mut(request_id) else {
        return;
    };
    if active.pending.remove(stream).is_none() {
        return;
    }
    if let Some(failure) = failure
        && !active.answered
        && active.held_error.is_none()
    {
        active.held_error = Some(failure);
    }
    if active.pending.is_empty()
        && let Some(finished) = state.active.remove(request_id)
        && !finished.answered
        && let Some(error) = finished.held_error
    {
        let _ = finished.dispatcher.try_send(error);
    }
}

fn forget(
    registry: &mut HashMap<(String, String), BTreeMap<String, Vec<StreamId>>>,
    key: &(String, String),
    stream: &StreamId,
) {
    if let Some(components) = registry.get_mut(key) {
        for streams in components.values_mut() {
            streams.retain(|s| s != stream);
        }
        components.retain(|_, streams| !streams.is_empty());
        if components.is_empty() {
            registry.remove(key);
        }
    }
}

impl Source for QueryRouter {
    type Out = QueryProviderInbound;

    /// The next queued query for `stream`, marked as sent (a cancel then reaches the handler).
    fn next_for(&self, stream: &StreamId) -> Result<Option<QueryProviderInbound>, ()> {
        let mut state = self.state.lock();
        let handler = state.handlers.get_mut(stream).ok_or(())?;
        let Some(query) = handler.take() else {
            return Ok(None);
        };
        if let Some(active) = state.active.get_mut(&query.message_identifier)
            && let Some(sent) = active.pending.get_mut(stream)
        {
            *sent = true;
        }
        Ok(Some(QueryProviderInbound {
            request: Some(query_provider_inbound::Request::Query(query)),
            instruction_id: String::new(),
        }))
    }
}

/// The server's own error answer to the query `request_id`.
pub fn error(request_id: &str, code: ErrorCode, message: String) -> QueryResponse {
    QueryResponse {
        message_identifier: uuid(),
        request_identifier: request_id.to_string(),
        error_code: code.id().to_string(),
        error_message: Some(ErrorMessage {
            message,
            location: LOCATION.to_string(),
            details: Vec::new(),
            error_code: code.id().to_string(),
        }),
        ..QueryResponse::default()
    }
}

/// The query's `TIMEOUT` instruction, in milliseconds.
fn timeout_of(query: &QueryRequest) -> Option<Duration> {
    let value = query
        .processing_instructions
        .iter()
        .find(|instruction| instruction.key == ProcessingKey::Timeout as i32)?
        .value
        .as_ref()?
        .data
        .as_ref()?;
    let millis = match value {
        meta_data_value::Data::NumberValue(n) => u64::try_from(*n).ok()?,
        meta_data_value::Data::TextValue(text) => text.trim().parse().ok()?,
        _ => return None,
    };
    Some(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestHandler {
        stream: StreamId,
        inbound: mpsc::Receiver<QueryProviderInbound>,
    }

    impl TestHandler {
        fn connect(router: &Arc<QueryRouter>, client: &str, component: &str, queries: &[&str]) -> TestHandler {
            let (outbound, inbound) = mpsc::channel(64);
            let stream = router.connect("default", client, component, outbound);
            for query in queries {
                router.subscribe(&stream, query, component);
            }
            router.add_permits(&stream, 100);
            TestHandler { stream, inbound }
        }

        async fn next(&mut self) -> query_provider_inbound::Request {
            tokio::time::timeout(Duration::from_secs(5), self.inbound.recv())
                .await
                .expect("a message within 5 s")
                .expect("stream open")
                .request
                .expect("a request")
        }

        async fn query(&mut self) -> QueryRequest {
            match self.next().await {
                query_provider_inbound::Request::Query(query) => query,
                other => panic!("expected a query, got {other:?}"),
            }
        }

        async fn nothing(&mut self) {
            let got = tokio::time::timeout(Duration::from_millis(100), self.inbound.recv()).await;
            assert!(got.is_err(), "expected nothing, got {got:?}");
        }

        fn answer(&self, router: &QueryRouter, id: &str, payload: &str) {
            router.respond(
                &self.stream,
                QueryResponse {
                    message_identifier: payload.into(),
                    request_identifier: id.into(),
                    ..QueryResponse::default()
                },
            );
        }

        fn fail(&self, router: &QueryRouter, id: &str, code: ErrorCode) {
            router.respond(&self.stream, error(id, code, format!("{code} from a handler")));
        }
    }

    fn query(id: &str, name: &str) -> QueryRequest {
        QueryRequest {
            message_identifier: id.into(),
            query: name.into(),
            ..QueryRequest::default()
        }
    }

    /// Every answer until the query ends.
    async fn all(mut answers: mpsc::Receiver<QueryResponse>) -> Vec<QueryResponse> {
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), answers.recv()).await {
                Ok(Some(answer)) => out.push(answer),
                Ok(None) => return out,
                Err(_) => panic!("the query did not end within 5 s; got {} answers", out.len()),
            }
        }
    }

    fn codes(answers: &[QueryResponse]) -> Vec<&str> {
        answers.iter().map(|a| a.error_code.as_str()).collect()
    }

    #[tokio::test]
    async fn without_a_handler_the_one_answer_is_5000_and_the_query_ends() {
        let router = QueryRouter::new(QueryLimits::default());
        let answers = all(router.query("default", query("q1", "FindAll"))).await;
        assert_eq!(codes(&answers), ["AXONIQ-5000"]);
        let message = answers[0].error_message.as_ref().map(|m| m.message.as_str());
        assert_eq!(message, Some("No handler for query: FindAll"));
        assert_eq!(answers[0].request_identifier, "q1");
    }

    #[tokio::test]
    async fn every_component_gets_the_query_once_and_the_query_ends_when_all_complete() {
        let router = QueryRouter::new(QueryLimits::default());
        let mut a = TestHandler::connect(&router, "a", "projection-a", &["FindAll"]);
        let mut b = TestHandler::connect(&router, "b", "projection-b", &["FindAll"]);
        let answers = router.query("default", query("q1", "FindAll"));
        let to_a = a.query().await;
        let to_b = b.query().await;
        let streaming = to_a
            .processing_instructions
            .iter()
            .find(|i| i.key == ProcessingKey::ServerSupportsStreaming as i32)
            .and_then(|i| i.value.clone()?.data);
        assert_eq!(streaming, Some(meta_data_value::Data::BooleanValue(false)));
        assert_eq!(to_b.message_identifier, "q1");
        a.answer(&router, "q1", "from-a");
        b.answer(&router, "q1", "from-b");
        router.complete(&a.stream, "q1");
        assert_eq!(router.active(), 1, "b has not completed yet");
        router.complete(&b.stream, "q1");
        let got: Vec<_> = all(answers).await.into_iter().map(|a| a.message_identifier).collect();
        assert_eq!(got, ["from-a", "from-b"]);
        assert_eq!(router.active(), 0);
    }

    #[tokio::test]
    async fn handlers_of_one_component_take_turns() {
        let router = QueryRouter::new(QueryLimits::default());
        let mut first = TestHandler::connect(&router, "first", "projection", &["FindAll"]);
        let mut second = TestHandler::connect(&router, "second", "projection", &["FindAll"]);
        let mut pending = Vec::new();
        for id in ["q1", "q2", "q3", "q4"] {
            pending.push(router.query("default", query(id, "FindAll")));
        }
        let on_first = [
            first.query().await.message_identifier,
            first.query().await.message_identifier,
        ];
        let on_second = [
            second.query().await.message_identifier,
            second.query().await.message_identifier,
        ];
        first.nothing().await;
        assert_eq!(on_first, ["q1", "q3"]);
        assert_eq!(on_second, ["q2", "q4"]);
    }

    #[tokio::test]
    async fn an_error_is_held_while_a_success_may_come_and_sent_when_none_did() {
        let router = QueryRouter::new(QueryLimits::default());
        let a = TestHandler::connect(&router, "a", "one", &["Q"]);
        let b = TestHandler::connect(&router, "b", "two", &["Q"]);
        let answers = router.query("default", query("q1", "Q"));
        a.fail(&router, "q1", ErrorCode::QueryDispatchError);
        b.answer(&router, "q1", "good");
        router.complete(&a.stream, "q1");
        router.complete(&b.stream, "q1");
        let got = all(answers).await;
        assert_eq!(codes(&got), [""], "only the success");

        let answers = router.query("default", query("q2", "Q"));
        a.fail(&router, "q2", ErrorCode::QueryDispatchError);
        b.fail(&router, "q2", ErrorCode::QueryDispatchError);
        router.complete(&a.stream, "q2");
        router.complete(&b.stream, "q2");
        assert_eq!(codes(&all(answers).await), ["AXONIQ-5002"], "one error at the end");
    }

    #[tokio::test]
    async fn a_handler_lost_mid_query_counts_4001_and_a_duplicate_id_5007() {
        let router = QueryRouter::new(QueryLimits::default());
        let mut a = TestHandler::connect(&router, "a", "one", &["Q"]);
        let answers = router.query("default", query("q1", "Q"));
        a.query().await;
        let duplicate = all(router.query("default", query("q1", "Q"))).await;
        assert_eq!(codes(&duplicate), ["AXONIQ-5007"]);
        assert_eq!(
            duplicate[0].error_message.as_ref().map(|m| m.message.as_str()),
            Some("Query with supplied ID already present")
        );
        router.disconnect(&a.stream);
        let got = all(answers).await;
        assert_eq!(codes(&got), ["AXONIQ-4001"]);
        let message = got[0]
            .error_message
            .as_ref()
            .map(|m| m.message.clone())
            .unwrap_or_default();
        assert_eq!(message, format!("Connection to handler {} lost", a.stream));
    }

    #[tokio::test]
    async fn a_cancelled_query_is_cancelled_where_it_was_sent_and_withdrawn_where_it_waited() {
        let router = QueryRouter::new(QueryLimits::default());
        let mut sent = TestHandler::connect(&router, "sent", "one", &["Q"]);
        let (outbound, mut waiting_inbound) = mpsc::channel(64);
        let waiting = router.connect("default", "waiting", "two", outbound);
        router.subscribe(&waiting, "Q", "two");
        let _answers = router.query("default", query("q1", "Q"));
        sent.query().await;
        router.cancel("q1");
        match sent.next().await {
            query_provider_inbound::Request::QueryCancel(reference) => assert_eq!(reference.request_id, "q1"),
            other => panic!("expected a cancel, got {other:?}"),
        }
        router.add_permits(&waiting, 10);
        let nothing = tokio::time::timeout(Duration::from_millis(100), waiting_inbound.recv()).await;
        assert!(nothing.is_err(), "the queued query was withdrawn: {nothing:?}");
        assert_eq!(router.active(), 0);
    }

    #[tokio::test]
    async fn a_query_past_its_timeout_ends_with_5006_and_its_handler_is_told() {
        let router = QueryRouter::new(QueryLimits::default());
        let mut slow = TestHandler::connect(&router, "slow", "one", &["Q"]);
        let mut q = query("q1", "Q");
        q.processing_instructions.push(ProcessingInstruction {
            key: ProcessingKey::Timeout as i32,
            value: Some(MetaDataValue {
                data: Some(meta_data_value::Data::NumberValue(150)),
            }),
        });
        let answers = router.query("default", q);
        slow.query().await;
        let got = all(answers).await;
        assert_eq!(codes(&got), ["AXONIQ-5006"]);
        assert!(matches!(
            slow.next().await,
            query_provider_inbound::Request::QueryCancel(_)
        ));
    }

    #[tokio::test]
    async fn subscriptions_list_components_and_go_with_their_stream() {
        let router = QueryRouter::new(QueryLimits::default());
        let a = TestHandler::connect(&router, "a", "projection", &["One", "Two"]);
        let listed: Vec<_> = router
            .subscriptions(Some("default"))
            .into_iter()
            .map(|s| (s.query, s.component, s.client_id))
            .collect();
        assert_eq!(
            listed,
            [
                ("One".to_string(), "projection".to_string(), "a".to_string()),
                ("Two".to_string(), "projection".to_string(), "a".to_string())
            ]
        );
        router.unsubscribe(&a.stream, "One");
        assert_eq!(router.subscriptions(None).len(), 1);
        router.disconnect(&a.stream);
        assert!(router.subscriptions(None).is_empty());
    }

    fn subscription_query(id: &str, name: &str) -> SubscriptionQuery {
        SubscriptionQuery {
            subscription_identifier: id.into(),
            query_request: Some(query(id, name)),
            ..SubscriptionQuery::default()
        }
    }

    async fn subscription_request(handler: &mut TestHandler) -> subscription_query_request::Request {
        match handler.next().await {
            query_provider_inbound::Request::SubscriptionQueryRequest(request) => request.request.expect("a request"),
            other => panic!("expected a subscription query request, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_subscription_reaches_every_handler_also_later_ones_and_its_end_reaches_them_all() {
        let router = QueryRouter::new(QueryLimits::default());
        let (sender, _answers) = mpsc::unbounded_channel();
        assert_eq!(
            router.subscribe_query("default", subscription_query("sub-1", "Q"), sender.clone()),
            Err(SubscriptionRefused::NoHandler("Q".into()))
        );
        let mut a = TestHandler::connect(&router, "a", "one", &["Q"]);
        let mut b = TestHandler::connect(&router, "b", "one", &["Q"]);
        router
            .subscribe_query("default", subscription_query("sub-1", "Q"), sender.clone())
            .expect("handled");
        for handler in [&mut a, &mut b] {
            assert!(matches!(
                subscription_request(handler).await,
                subscription_query_request::Request::Subscribe(_)
            ));
        }
        let mut late = TestHandler::connect(&router, "late", "two", &["Q"]);
        assert!(matches!(
            subscription_request(&mut late).await,
            subscription_query_request::Request::Subscribe(s) if s.subscription_identifier == "sub-1"
        ));
        assert_eq!(
            router.subscribe_query("default", subscription_query("sub-1", "Q"), sender),
            Err(SubscriptionRefused::Duplicate("sub-1".into()))
        );
        router.unsubscribe_query("sub-1");
        for handler in [&mut a, &mut b, &mut late] {
            assert!(matches!(
                subscription_request(handler).await,
                subscription_query_request::Request::Unsubscribe(_)
            ));
        }
        assert_eq!(router.subscription_queries(), 0);
    }

    #[tokio::test]
    async fn answers_go_to_their_subscription_and_an_initial_result_needs_one() {
        let router = QueryRouter::new(QueryLimits::default());
        let mut a = TestHandler::connect(&router, "a", "one", &["Q"]);
        assert_eq!(
            router.initial_result(subscription_query("sub-1", "Q")),
            Err(SubscriptionRefused::NotSubscribed("sub-1".into()))
        );
        let (sender, mut answers) = mpsc::unbounded_channel();
        router
            .subscribe_query("default", subscription_query("sub-1", "Q"), sender)
            .expect("handled");
        subscription_request(&mut a).await;
        router
            .initial_result(subscription_query("sub-1", "Q"))
            .expect("subscribed");
        #[allow(deprecated)]
        let asked = matches!(
            subscription_request(&mut a).await,
            subscription_query_request::Request::GetInitialResult(_)
        );
        assert!(asked);
        let answer = SubscriptionQueryResponse {
            message_identifier: "u1".into(),
            subscription_identifier: "sub-1".into(),
            response: None,
        };
        router.subscription_response(&a.stream, answer.clone());
        assert_eq!(answers.recv().await, Some(answer));
        router.disconnect(&a.stream);
        assert_eq!(
            router.subscription_queries(),
            1,
            "the sender's subscription stays until it ends it"
        );
    }

    #[tokio::test]
    async fn a_sender_that_does_not_read_gets_1900_and_the_query_is_cancelled_on_its_handler() {
        let limits = QueryLimits {
            max_waiting_answers: 4,
            ..QueryLimits::default()
        };
        let router = QueryRouter::new(limits);
        let mut chatty = TestHandler::connect(&router, "chatty", "one", &["Q"]);
        let answers = router.query("default", query("q1", "Q"));
        chatty.query().await;
        for n in 0..10 {
            chatty.answer(&router, "q1", &format!("answer-{n}"));
        }
        match chatty.next().await {
            query_provider_inbound::Request::QueryCancel(reference) => assert_eq!(reference.request_id, "q1"),
            other => panic!("expected a cancel, got {other:?}"),
        }
        let got = all(answers).await;
        assert_eq!(
            codes(&got),
            ["", "", "", "AXONIQ-1900"],
            "three answers, then why it ended"
        );
        assert_eq!(router.active(), 0);
    }
}
