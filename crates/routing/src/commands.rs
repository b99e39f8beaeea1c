//! The command router (MESSAGING.md §2; Axon Server SE's `CommandDispatcher`): which handler
//! streams of a context subscribed which command names, where a dispatched command goes, what
//! waits in each handler's queue for permits, and which commands are out with a handler.
//!
//! One lock guards it all; nothing under it blocks or awaits. Each handler stream has a pump
//! task that sends its queued commands while it has permits, and a sweeper cancels commands no
//! handler answered within the timeout. Every outcome a dispatcher can get is a
//! `CommandResponse`: the handler's own, passed through unchanged, or one of Axon's errors:
//!
//! | situation | code | message |
//! |---|---|---|
//! | no handler for the name in the context | 4000 | `No Handler for command: <name>` |
//! | the handler's stream ended while it had the command | 4001 | `Connection lost while executing command on: <client id>` |
//! | no answer within the timeout | 4002 | `Cancelled by AxonServer due to timeout` |
//! | a command with the same id is in flight | 4005 | `command id <id> duplicated` |
//! | the handler's queue is full | 1900 | `Failed to add request to queue <client stream id>` |
//! | too many commands in flight | 1900 | `Command buffer is full (<n>/<limit>) Command handlers might be slow.` |
//!
//! Commands still *queued* for a handler whose stream ends go to another handler of the name
//! (or get 4000), as in SE.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use myelin_node::ErrorCode;
use myelin_proto::grpc::command::{Command, CommandProviderInbound, CommandResponse, command_provider_inbound};
use myelin_proto::grpc::{ErrorMessage, ProcessingKey, meta_data_value};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::handlers::{Source, start};
use crate::ids::uuid;
use crate::ring::Ring;

const NO_HANDLER_FOR_COMMAND: ErrorCode = ErrorCode::NoHandlerForCommand;
const CONNECTION_TO_HANDLER_LOST: ErrorCode = ErrorCode::ConnectionToHandlerLost;
const COMMAND_TIMEOUT: ErrorCode = ErrorCode::CommandTimeout;
const COMMAND_DUPLICATED: ErrorCode = ErrorCode::CommandDuplicated;
pub(crate) const TOO_MANY_REQUESTS: ErrorCode = ErrorCode::TooManyRequests;
/// Where the server's own errors say they come from, as SE's do.
pub const LOCATION: &str = "AxonServer";

/// A handler's `OpenStream`, named as SE names it: `<client id>.<uuid>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(Arc<str>);

impl StreamId {
    pub(crate) fn new(id: String) -> StreamId {
        StreamId(id.into())
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The router's bounds, with Axon's property names and defaults where it has them.
#[derive(Debug, Clone, Copy)]
pub struct RouterLimits {
    /// Commands a handler's queue takes (`axoniq.axonserver.command-queue-capacity-per-client`,
    /// 10 000; a tenth more for priorities above 0).
    pub queue_capacity: usize,
    /// How long a command may wait for its answer (`axoniq.axonserver.default-command-timeout`,
    /// 300 000 ms).
    pub timeout: Duration,
    /// How often expired commands are looked for (SE: every 5 s).
    pub sweep_interval: Duration,
    /// Commands dispatched and not yet answered, over all handlers.
    pub max_in_flight: usize,
}

impl Default for RouterLimits {
    fn default() -> Self {
        RouterLimits {
            queue_capacity: 10_000,
            timeout: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(5),
            max_in_flight: 100_000,
        }
    }
}

type Handler = crate::handlers::Handler<Command, CommandProviderInbound>;

#[derive(Default)]
struct Subscribers {
    members: BTreeMap<StreamId, u32>,
    /// Built on the first dispatch after a change.
    ring: Option<Arc<Ring<StreamId>>>,
}

struct InFlight {
    reply: oneshot::Sender<CommandResponse>,
    handler: StreamId,
    since: Instant,
}

#[derive(Default)]
struct State {
    handlers: HashMap<StreamId, Handler>,
    /// (context, command name) → its handler streams.
    subscribers: HashMap<(String, String), Subscribers>,
    /// Command message id → who waits for its answer and which handler has it.
    in_flight: HashMap<String, InFlight>,
}

/// A handler stream as the router describes it (for listings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub context: String,
    pub command: String,
    pub client_id: String,
    pub component: String,
    pub stream: StreamId,
    pub load_factor: u32,
}

pub struct CommandRouter {
    state: Mutex<State>,
    limits: RouterLimits,
}

impl fmt::Debug for CommandRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("CommandRouter")
            .field("handlers", &state.handlers.len())
            .field("in_flight", &state.in_flight.len())
            .field("limits", &self.limits)
            .finish()
    }
}

impl CommandRouter {
    /// A router, and its sweeper of timed-out commands (which ends with the router). Must be
    /// called inside a Tokio runtime.
    pub fn new(limits: RouterLimits) -> Arc<CommandRouter> {
        let router = Arc::new(CommandRouter {
            state: Mutex::new(State::default()),
            limits,
        });
        tokio::spawn(sweep(Arc::downgrade(&router), limits.sweep_interval));
        router
    }

    /// Registers a handler stream of `context`; the commands routed to it go out through
    /// `outbound` while it has permits, until [`CommandRouter::disconnect`].
    pub fn connect(
        self: &Arc<Self>,
        context: &str,
        client_id: &str,
        component: &str,
        outbound: mpsc::Sender<CommandProviderInbound>,
    ) -> StreamId {
        let id = start(
            self,
            |id, handler| {
                self.state.lock().handlers.insert(id, handler);
            },
            (context, client_id, component),
            self.limits.queue_capacity,
            outbound,
        );
        debug!(stream = %id, context, "command handler connected");
        id
    }

    /// `stream` handles `name` from now on; a load factor of 0 means 100.
    pub fn subscribe(&self, stream: &StreamId, name: &str, load_factor: i32) {
        let mut state = self.state.lock();
        let Some(handler) = state.handlers.get_mut(stream) else {
            return;
        };
        handler.names.insert(name.to_string());
        let key = (handler.context.clone(), name.to_string());
        let subscribers = state.subscribers.entry(key).or_default();
        subscribers
            .members
            .insert(stream.clone(), u32::try_from(load_factor).unwrap_or(0));
        subscribers.ring = None;
    }

    /// `stream` no longer handles `name`.
    pub fn unsubscribe(&self, stream: &StreamId, name: &str) {
        let mut state = self.state.lock();
        let Some(handler) = state.handlers.get_mut(stream) else {
            return;
        };
        handler.names.remove(name);
        let key = (handler.context.clone(), name.to_string());
        forget(&mut state.subscribers, key, stream);
    }

    /// The handler grants `permits` more commands (permits add up, as in SE).
    pub fn add_permits(&self, stream: &StreamId, permits: i64) {
        let mut state = self.state.lock();
        if let Some(handler) = state.handlers.get_mut(stream) {
            handler.grant(permits);
        }
    }

    /// The handler's answer, passed to its dispatcher unchanged. An answer to a command this
    /// handler does not have (answered already, timed out) is dropped.
    pub fn respond(&self, stream: &StreamId, response: CommandResponse) {
        let waiting = {
            let mut state = self.state.lock();
            match state.in_flight.get(&response.request_identifier) {
                Some(entry) if entry.handler == *stream => state.in_flight.remove(&response.request_identifier),
                _ => None,
            }
        };
        match waiting {
            Some(entry) => {
                let _ = entry.reply.send(response);
            }
            None => debug!(
                stream = %stream,
                command = %response.request_identifier,
                "an answer to no command in flight on this stream; dropped"
            ),
        }
    }

    /// The handler stream ended: its subscriptions go, its queued commands go to other
    /// handlers, and the commands it had get Axon code 4001.
    pub fn disconnect(&self, stream: &StreamId) {
        let mut answers = Vec::new();
        {
            let mut state = self.state.lock();
            let Some(mut handler) = state.handlers.remove(stream) else {
                return;
            };
            handler.stop();
            for name in &handler.names {
                forget(&mut state.subscribers, (handler.context.clone(), name.clone()), stream);
            }
            for (_, command) in handler.queue.drain() {
                if let Some(entry) = state.in_flight.remove(&command.message_identifier) {
                    self.route(&mut state, &handler.context, command, entry.reply, &mut answers);
                }
            }
            let lost: Vec<String> = state
                .in_flight
                .iter()
                .filter(|(_, entry)| entry.handler == *stream)
                .map(|(id, _)| id.clone())
                .collect();
            for id in lost {
                if let Some(entry) = state.in_flight.remove(&id) {
                    let message = format!("Connection lost while executing command on: {}", handler.client_id);
                    answers.push((entry.reply, error(&id, CONNECTION_TO_HANDLER_LOST, message)));
                }
            }
            debug!(stream = %stream, component = %handler.component, "command handler disconnected");
        }
        for (reply, response) in answers {
            let _ = reply.send(response);
        }
    }

    /// Routes `command` of `context`; the receiver gets its one response.
    pub fn dispatch(&self, context: &str, mut command: Command) -> oneshot::Receiver<CommandResponse> {
        if command.message_identifier.is_empty() {
            command.message_identifier = uuid();
        }
        let (reply, answered) = oneshot::channel();
        let mut answers = Vec::new();
        {
            let mut state = self.state.lock();
            let id = command.message_identifier.clone();
            let in_flight = state.in_flight.len();
            if state.in_flight.contains_key(&id) {
                let message = format!("command id {id} duplicated");
                answers.push((reply, error(&id, COMMAND_DUPLICATED, message)));
            } else if in_flight >= self.limits.max_in_flight {
                let message = format!(
                    "Command buffer is full ({in_flight}/{}) Command handlers might be slow.",
                    self.limits.max_in_flight
                );
                answers.push((reply, error(&id, TOO_MANY_REQUESTS, message)));
            } else {
                self.route(&mut state, context, command, reply, &mut answers);
            }
        }
        for (reply, response) in answers {
            let _ = reply.send(response);
        }
        answered
    }

    /// Every subscription of `context` (all contexts when `None`), sorted.
    pub fn subscriptions(&self, context: Option<&str>) -> Vec<Subscription> {
        let state = self.state.lock();
        let mut out: Vec<Subscription> = state
            .subscribers
            .iter()
            .filter(|((c, _), _)| context.is_none_or(|wanted| wanted == c))
            .flat_map(|((c, name), subscribers)| {
                subscribers.members.iter().filter_map(|(stream, load_factor)| {
                    let handler = state.handlers.get(stream)?;
                    Some(Subscription {
                        context: c.clone(),
                        command: name.clone(),
                        client_id: handler.client_id.clone(),
                        component: handler.component.clone(),
                        stream: stream.clone(),
                        load_factor: *load_factor,
                    })
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.context, &a.command, &a.stream).cmp(&(&b.context, &b.command, &b.stream)));
        out
    }

    /// Commands dispatched and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.state.lock().in_flight.len()
    }

    /// Picks the handler and queues `command` there, or puts the error for `reply` in
    /// `answers` (sent once the lock is released).
    fn route(
        &self,
        state: &mut State,
        context: &str,
        command: Command,
        reply: oneshot::Sender<CommandResponse>,
        answers: &mut Vec<(oneshot::Sender<CommandResponse>, CommandResponse)>,
    ) {
        let id = command.message_identifier.clone();
        let target = state
            .subscribers
            .get_mut(&(context.to_string(), command.name.clone()))
            .and_then(|subscribers| {
                if subscribers.members.len() == 1 {
                    return subscribers.members.keys().next().cloned();
                }
                let ring = subscribers
                    .ring
                    .get_or_insert_with(|| {
                        Arc::new(Ring::new(
                            subscribers.members.iter().map(|(s, load)| (s.clone(), *load)),
                        ))
                    })
                    .clone();
                ring.select(&routing_key(&command)).cloned()
            });
        let chosen = target.and_then(|target| {
            let handler = state.handlers.get_mut(&target)?;
            Some((target, handler))
        });
        let Some((target, handler)) = chosen else {
            let message = format!("No Handler for command: {}", command.name);
            answers.push((reply, error(&id, NO_HANDLER_FOR_COMMAND, message)));
            return;
        };
        match handler.enqueue(priority(&command), command) {
            Ok(()) => {
                let entry = InFlight {
                    reply,
                    handler: target,
                    since: Instant::now(),
                };
                state.in_flight.insert(id, entry);
            }
            Err(_) => {
                let message = format!("Failed to add request to queue {target}");
                answers.push((reply, error(&id, TOO_MANY_REQUESTS, message)));
            }
        }
    }

    /// Answers Axon code 4002 to every command older than the timeout, and takes those still
    /// queued out of their queues.
    fn expire(&self, now: Instant) {
        let mut answers = Vec::new();
        {
            let mut state = self.state.lock();
            let timeout = self.limits.timeout;
            let expired: Vec<String> = state
                .in_flight
                .iter()
                .filter(|(_, entry)| now.saturating_duration_since(entry.since) >= timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                let Some(entry) = state.in_flight.remove(&id) else {
                    continue;
                };
                if let Some(handler) = state.handlers.get_mut(&entry.handler) {
                    handler.queue.remove_where(|command| command.message_identifier == id);
                }
                let message = "Cancelled by AxonServer due to timeout".to_string();
                answers.push((entry.reply, error(&id, COMMAND_TIMEOUT, message)));
            }
        }
        if !answers.is_empty() {
            warn!(
                commands = answers.len(),
                "commands cancelled: no answer within the timeout"
            );
        }
        for (reply, response) in answers {
            let _ = reply.send(response);
        }
    }
}

/// Takes `stream` out of the subscribers of `key`, and the entry when it was the last.
fn forget(subscribers: &mut HashMap<(String, String), Subscribers>, key: (String, String), stream: &StreamId) {
    if let Some(entry) = subscribers.get_mut(&key) {
        entry.members.remove(stream);
        entry.ring = None;
        if entry.members.is_empty() {
            subscribers.remove(&key);
        }
    }
}

impl Source for CommandRouter {
    type Out = CommandProviderInbound;

    fn next_for(&self, stream: &StreamId) -> Result<Option<CommandProviderInbound>, ()> {
        let mut state = self.state.lock();
        let handler = state.handlers.get_mut(stream).ok_or(())?;
        Ok(handler.take().map(|command| CommandProviderInbound {
            request: Some(command_provider_inbound::Request::Command(command)),
            instruction_id: String::new(),
        }))
    }
}

async fn sweep(router: Weak<CommandRouter>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(router) = router.upgrade() else {
            return;
        };
        router.expire(Instant::now());
    }
}

/// The server's own error answer to the command `request_id`.
pub fn error(request_id: &str, code: ErrorCode, message: String) -> CommandResponse {
    CommandResponse {
        message_identifier: uuid(),
        request_identifier: request_id.to_string(),
        error_code: code.id().to_string(),
        error_message: Some(ErrorMessage {
            message,
            location: LOCATION.to_string(),
            details: Vec::new(),
            error_code: code.id().to_string(),
        }),
        ..CommandResponse::default()
    }
}

/// The command's `ROUTING_KEY` instruction, or its message id (as the connector does).
fn routing_key(command: &Command) -> String {
    instruction(command, ProcessingKey::RoutingKey)
        .and_then(|value| match value {
            meta_data_value::Data::TextValue(text) => Some(text.clone()),
            meta_data_value::Data::NumberValue(n) => Some(n.to_string()),
            meta_data_value::Data::DoubleValue(d) => Some(d.to_string()),
            meta_data_value::Data::BooleanValue(b) => Some(b.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| command.message_identifier.clone())
}

/// The command's `PRIORITY` instruction, 0 without one.
fn priority(command: &Command) -> i64 {
    instruction(command, ProcessingKey::Priority)
        .and_then(|value| match value {
            meta_data_value::Data::NumberValue(n) => Some(*n),
            meta_data_value::Data::TextValue(text) => text.trim().parse().ok(),
            _ => None,
        })
        .unwrap_or(0)
}

fn instruction(command: &Command, key: ProcessingKey) -> Option<&meta_data_value::Data> {
    command
        .processing_instructions
        .iter()
        .find(|instruction| instruction.key == key as i32)
        .and_then(|instruction| instruction.value.as_ref()?.data.as_ref())
}

#[cfg(test)]
mod tests {
    use myelin_proto::grpc::{MetaDataValue, ProcessingInstruction};

    use super::*;

    fn command(id: &str, name: &str) -> Command {
        Command {
            message_identifier: id.to_string(),
            name: name.to_string(),
            ..Command::default()
        }
    }

    fn with(mut command: Command, key: ProcessingKey, data: meta_data_value::Data) -> Command {
        command.processing_instructions.push(ProcessingInstruction {
            key: key as i32,
            value: Some(MetaDataValue { data: Some(data) }),
        });
        command
    }

    struct TestHandler {
        stream: StreamId,
        inbound: mpsc::Receiver<CommandProviderInbound>,
    }

    impl TestHandler {
        fn connect(router: &Arc<CommandRouter>, client: &str, names: &[&str]) -> TestHandler {
            let (outbound, inbound) = mpsc::channel(64);
            let stream = router.connect("default", client, "component", outbound);
            for name in names {
                router.subscribe(&stream, name, 0);
            }
            TestHandler { stream, inbound }
        }

        async fn next(&mut self) -> Command {
            let message = tokio::time::timeout(Duration::from_secs(5), self.inbound.recv())
                .await
                .expect("a command within 5 s")
                .expect("stream open");
            match message.request {
                Some(command_provider_inbound::Request::Command(command)) => command,
                other => panic!("expected a command, got {other:?}"),
            }
        }

        async fn nothing(&mut self) {
            let got = tokio::time::timeout(Duration::from_millis(100), self.inbound.recv()).await;
            assert!(got.is_err(), "expected nothing, got {got:?}");
        }
    }

    async fn answer(receiver: oneshot::Receiver<CommandResponse>) -> CommandResponse {
        tokio::time::timeout(Duration::from_secs(5), receiver)
            .await
            .expect("an answer within 5 s")
            .expect("answered")
    }

    fn code_and_message(response: &CommandResponse) -> (&str, &str) {
        let message = response.error_message.as_ref().map_or("", |m| m.message.as_str());
        (response.error_code.as_str(), message)
    }

    #[tokio::test]
    async fn a_command_reaches_its_handler_once_permitted_and_the_answer_comes_back_unchanged() {
        let router = CommandRouter::new(RouterLimits::default());
        let mut handler = TestHandler::connect(&router, "handler", &["DoIt"]);
        let answered = router.dispatch("default", command("c1", "DoIt"));
        handler.nothing().await;
        router.add_permits(&handler.stream, 1);
        let received = handler.next().await;
        assert_eq!(received.message_identifier, "c1");
        let response = CommandResponse {
            message_identifier: "r1".into(),
            request_identifier: "c1".into(),
            error_code: "AXONIQ-4002".into(),
            ..CommandResponse::default()
        };
        router.respond(&handler.stream, response.clone());
        assert_eq!(answer(answered).await, response);
        assert_eq!(router.in_flight(), 0);
    }

    #[tokio::test]
    async fn no_handler_unknown_context_and_unsubscribed_names_get_4000() {
        let router = CommandRouter::new(RouterLimits::default());
        let handler = TestHandler::connect(&router, "handler", &["DoIt"]);
        let other_context = answer(router.dispatch("elsewhere", command("c1", "DoIt"))).await;
        assert_eq!(
            code_and_message(&other_context),
            ("AXONIQ-4000", "No Handler for command: DoIt")
        );
        assert_eq!(other_context.request_identifier, "c1");
        assert_eq!(
            other_context.error_message.as_ref().map(|m| m.location.as_str()),
            Some("AxonServer")
        );
        router.unsubscribe(&handler.stream, "DoIt");
        let gone = answer(router.dispatch("default", command("c2", "DoIt"))).await;
        assert_eq!(code_and_message(&gone), ("AXONIQ-4000", "No Handler for command: DoIt"));
    }

    #[tokio::test]
    async fn a_duplicate_id_in_flight_gets_4005() {
        let router = CommandRouter::new(RouterLimits::default());
        let _handler = TestHandler::connect(&router, "handler", &["DoIt"]);
        let _first = router.dispatch("default", command("same", "DoIt"));
        let second = answer(router.dispatch("default", command("same", "DoIt"))).await;
        assert_eq!(code_and_message(&second), ("AXONIQ-4005", "command id same duplicated"));
    }

    #[tokio::test]
    async fn a_handler_that_goes_away_fails_what_it_had_with_4001_and_its_queue_moves_on() {
        let router = CommandRouter::new(RouterLimits::default());
        let mut first = TestHandler::connect(&router, "first", &["DoIt"]);
        router.add_permits(&first.stream, 1);
        // Routing keys that the ring gives to `first` while both are there.
        let mut second = TestHandler::connect(&router, "second", &["DoIt"]);
        let keys: Vec<String> = (0..200)
            .map(|k| format!("key-{k}"))
            .filter(|k| {
                let subscribers = router.subscriptions(Some("default"));
                let ring = Ring::new(subscribers.iter().map(|s| (s.stream.clone(), 100)));
                ring.select(k) == Some(&first.stream)
            })
            .take(2)
            .collect();
        assert_eq!(keys.len(), 2);
        let keyed = |id: &str, key: &str| {
            with(
                command(id, "DoIt"),
                ProcessingKey::RoutingKey,
                meta_data_value::Data::TextValue(key.to_string()),
            )
        };
        let sent = router.dispatch("default", keyed("sent", &keys[0]));
        assert_eq!(first.next().await.message_identifier, "sent");
        let queued = router.dispatch("default", keyed("queued", &keys[1]));
        first.nothing().await;
        router.disconnect(&first.stream);
        let lost = answer(sent).await;
        assert_eq!(
            code_and_message(&lost),
            ("AXONIQ-4001", "Connection lost while executing command on: first")
        );
        router.add_permits(&second.stream, 10);
        assert_eq!(second.next().await.message_identifier, "queued");
        router.respond(
            &second.stream,
            CommandResponse {
                request_identifier: "queued".into(),
                ..CommandResponse::default()
            },
        );
        assert_eq!(answer(queued).await.error_code, "");
    }

    #[tokio::test]
    async fn higher_priority_goes_out_first() {
        let router = CommandRouter::new(RouterLimits::default());
        let mut handler = TestHandler::connect(&router, "handler", &["DoIt"]);
        let mut pending = Vec::new();
        for (id, priority) in [("low", 0), ("high", 5), ("middle", 1), ("low-2", 0)] {
            let c = with(
                command(id, "DoIt"),
                ProcessingKey::Priority,
                meta_data_value::Data::NumberValue(priority),
            );
            pending.push(router.dispatch("default", c));
        }
        router.add_permits(&handler.stream, 4);
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(handler.next().await.message_identifier);
        }
        assert_eq!(order, ["high", "middle", "low", "low-2"]);
    }

    #[tokio::test]
    async fn a_routing_key_sticks_to_one_handler_and_keys_spread_over_both() {
        let router = CommandRouter::new(RouterLimits::default());
        let mut a = TestHandler::connect(&router, "a", &["DoIt"]);
        let mut b = TestHandler::connect(&router, "b", &["DoIt"]);
        router.add_permits(&a.stream, 1000);
        router.add_permits(&b.stream, 1000);
        let mut owner_of: HashMap<String, String> = HashMap::new();
        let mut pending = Vec::new();
        for round in 0..3 {
            for key in 0..20 {
                let id = format!("{round}-{key}");
                let c = with(
                    command(&id, "DoIt"),
                    ProcessingKey::RoutingKey,
                    meta_data_value::Data::TextValue(format!("aggregate-{key}")),
                );
                pending.push(router.dispatch("default", c));
                let owner = tokio::select! {
                    c = a.next() => { assert_eq!(c.message_identifier, id); "a" }
                    c = b.next() => { assert_eq!(c.message_identifier, id); "b" }
                };
                let first = owner_of
                    .entry(format!("aggregate-{key}"))
                    .or_insert_with(|| owner.to_string());
                assert_eq!(first, owner, "aggregate-{key} moved in round {round}");
            }
        }
        let on_a = owner_of.values().filter(|o| *o == "a").count();
        assert!((1..20).contains(&on_a), "both handlers take keys: {on_a} of 20 on a");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_with_1900_naming_the_stream() {
        let limits = RouterLimits {
            queue_capacity: 2,
            ..RouterLimits::default()
        };
        let router = CommandRouter::new(limits);
        let handler = TestHandler::connect(&router, "slow", &["DoIt"]);
        let _a = router.dispatch("default", command("a", "DoIt"));
        let _b = router.dispatch("default", command("b", "DoIt"));
        let refused = answer(router.dispatch("default", command("c", "DoIt"))).await;
        assert_eq!(refused.error_code, "AXONIQ-1900");
        assert_eq!(
            code_and_message(&refused).1,
            format!("Failed to add request to queue {}", handler.stream)
        );
        assert!(handler.stream.as_ref().starts_with("slow."));
    }

    #[tokio::test]
    async fn too_many_in_flight_refuses_with_1900() {
        let limits = RouterLimits {
            max_in_flight: 1,
            ..RouterLimits::default()
        };
        let router = CommandRouter::new(limits);
        let _handler = TestHandler::connect(&router, "handler", &["DoIt"]);
        let _a = router.dispatch("default", command("a", "DoIt"));
        let refused = answer(router.dispatch("default", command("b", "DoIt"))).await;
        assert_eq!(refused.error_code, "AXONIQ-1900");
        assert!(code_and_message(&refused).1.starts_with("Command buffer is full (1/1)"));
    }

    #[tokio::test]
    async fn an_unanswered_command_is_cancelled_with_4002_and_leaves_the_queue() {
        let limits = RouterLimits {
            timeout: Duration::from_millis(200),
            sweep_interval: Duration::from_millis(50),
            ..RouterLimits::default()
        };
        let router = CommandRouter::new(limits);
        let mut handler = TestHandler::connect(&router, "handler", &["DoIt"]);
        let answered = router.dispatch("default", command("late", "DoIt"));
        let cancelled = answer(answered).await;
        assert_eq!(
            code_and_message(&cancelled),
            ("AXONIQ-4002", "Cancelled by AxonServer due to timeout")
        );
        router.add_permits(&handler.stream, 1);
        handler.nothing().await;
        assert_eq!(router.in_flight(), 0);
    }

    #[tokio::test]
    async fn an_answer_from_another_stream_or_for_no_command_is_dropped() {
        let router = CommandRouter::new(RouterLimits::default());
        let mut handler = TestHandler::connect(&router, "handler", &["DoIt"]);
        let other = TestHandler::connect(&router, "other", &[]);
        router.add_permits(&handler.stream, 1);
        let answered = router.dispatch("default", command("c1", "DoIt"));
        handler.next().await;
        let response = |id: &str| CommandResponse {
            request_identifier: id.into(),
            ..CommandResponse::default()
        };
        router.respond(&other.stream, response("c1"));
        router.respond(&handler.stream, response("nothing"));
        assert_eq!(router.in_flight(), 1);
        router.respond(&handler.stream, response("c1"));
        assert_eq!(answer(answered).await.request_identifier, "c1");
    }

    #[tokio::test]
    async fn subscriptions_list_who_handles_what() {
        let router = CommandRouter::new(RouterLimits::default());
        let a = TestHandler::connect(&router, "a", &["One", "Two"]);
        router.subscribe(&a.stream, "Three", 250);
        let listed = router.subscriptions(Some("default"));
        let names: Vec<_> = listed.iter().map(|s| (s.command.as_str(), s.load_factor)).collect();
        assert_eq!(names, [("One", 0), ("Three", 250), ("Two", 0)]);
        assert!(router.subscriptions(Some("other")).is_empty());
        router.disconnect(&a.stream);
        assert!(router.subscriptions(None).is_empty());
    }
}
