//! The node layer's one error type, and the one table from an error to what a client sees: the
//! Axon code ([`crate::codes`]), the gRPC status and the HTTP status. The gRPC and REST crates
//! render from [`NodeError::answer`]; neither decides a code of its own.
//!
//! Where Axon Server answers an error with `CANCELLED` we use the gRPC code that says what
//! happened, because `CANCELLED` reads to a client as "you cancelled": clients act on the Axon
//! code, which stays Axon's. Each such departure is commented beside its row.

use std::fmt;

use myelin_control::ControlError;
use myelin_store::StoreError;

use crate::codes::{ErrorCode, GrpcCode};

/// Whether a store error happened while reading or while writing: the same I/O failure is
/// `DATAFILE_READ_ERROR` on one side and `DATAFILE_WRITE_ERROR` on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
}

/// How an error is reported on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Axon's code; `None` where Axon has none for this refusal (a context in use, say): REST
    /// then sends no code, and gRPC, which always sends one, sends [`ErrorCode::Other`].
    pub code: Option<ErrorCode>,
    pub grpc: GrpcCode,
    pub http_status: u16,
}

impl Answer {
    /// The code a gRPC trailer carries (gRPC answers always carry one).
    pub fn grpc_code(&self) -> ErrorCode {
        self.code.unwrap_or(ErrorCode::Other)
    }
}

/// Every error the node reports to a client, whichever API the client used.
#[derive(Debug)]
pub enum NodeError {
    /// No store is open for the context the request named.
    ContextNotFound(String),
    /// The server is holding as much as it may of something (unfinished transactions, say);
    /// the client should retry later.
    TooManyRequests(String),
    /// The context exists but its store could not be opened (damaged files, say).
    ContextUnavailable {
        context: String,
        reason: String,
    },
    /// The request itself is malformed: names the field and what is accepted.
    InvalidArgument(String),
    /// An rpc or instruction Myelin does not implement.
    Unsupported(String),
    /// The server is stopping; the client should reconnect (to this node once it is back).
    ShuttingDown,
    /// A bug or a failed task inside Myelin.
    Internal(String),
    /// A request message over the size limit.
    MessageTooLarge(String),
    /// Access control is on and the call carries no access token.
    TokenMissing,
    /// The access token matches no token or application.
    InvalidToken,
    /// A valid token without the right the call needs.
    PermissionDenied(String),
    Store {
        operation: Operation,
        source: StoreError,
    },
    /// Creating a context that is open already.
    ContextExists(String),
    /// Administering a context the node does not have.
    UnknownContext(String),
    /// A context name the node cannot use: names the name and why.
    InvalidContextName(String),
    /// Something other than the context's directory holds its place on disk.
    ContextPlaceTaken(String),
    /// Deleting a context that clients use, without `force`.
    ContextInUse {
        context: String,
        tracking_streams: usize,
        clients: usize,
    },
    /// Deleting a context's files while a backup lease is live.
    BackupLeaseLive(String),
    /// The control database refused or failed.
    Control(ControlError),
    /// The replication group has no leader now (an election is running, or no quorum).
    NoLeader(String),
    /// A replicated write or a cluster operation failed for a reason of the cluster's own
    /// (the leader was lost before the write committed, a node is unreachable): the outcome
    /// may be unknown to the client, which may retry.
    Replication(String),
    /// A cluster operation refused for the cluster's state or the request, with Axon's code.
    Cluster {
        code: crate::codes::ErrorCode,
        message: String,
    },
    /// A command or query that could not be routed (a stream-level failure; per-message
    /// failures travel inside the responses), with Axon's code.
    Routing {
        code: crate::codes::ErrorCode,
        message: String,
    },
}

impl NodeError {
    pub fn read(source: StoreError) -> Self {
        NodeError::Store {
            operation: Operation::Read,
            source,
        }
    }

    pub fn write(source: StoreError) -> Self {
        NodeError::Store {
            operation: Operation::Write,
            source,
        }
    }

    /// The table.
    pub fn answer(&self) -> Answer {
        use ErrorCode as E;
        use GrpcCode::*;
        let (code, grpc, http_status) = match self {
            // NO_EVENTSTORE; its HTTP status is Axon's 503.
            NodeError::ContextNotFound(_) => (Some(E::NoEventStore), NotFound, 503),
            // DATAFILE_READ_ERROR: the context's files failed their checks at startup. Only
            // that context is affected; UNAVAILABLE because it returns once repaired.
            NodeError::ContextUnavailable { .. } => (Some(E::DatafileReadError), Unavailable, 503),
            NodeError::TooManyRequests(_) => (Some(E::TooManyRequests), ResourceExhausted, 429),
            // Axon answers undecodable input with OTHER; our status says why.
            NodeError::InvalidArgument(_) => (Some(E::Other), InvalidArgument, 400),
            // For an rpc, UNIMPLEMENTED is what gRPC clients expect.
            NodeError::Unsupported(_) => (Some(E::UnsupportedInstruction), Unimplemented, 501),
            // The operation was cut short by the shutdown.
            NodeError::ShuttingDown => (Some(E::Interrupted), Unavailable, 503),
            // RESOURCE_EXHAUSTED, as grpc-java (so Axon Server) answers an inbound message over
            // the limit; it carries no code there, we add PAYLOAD_TOO_LARGE.
            NodeError::MessageTooLarge(_) => (Some(E::PayloadTooLarge), ResourceExhausted, 413),
            // Axon answers all three with PERMISSION_DENIED; the codes stay Axon's, the
            // statuses say which.
            NodeError::TokenMissing => (Some(E::AuthenticationTokenMissing), Unauthenticated, 401),
            NodeError::InvalidToken => (Some(E::AuthenticationInvalidToken), Unauthenticated, 401),
            NodeError::PermissionDenied(_) => (Some(E::AuthenticationInvalidToken), PermissionDenied, 403),
            NodeError::Internal(_) => (Some(E::Other), Internal, 500),
            NodeError::Store { operation, source } => store_answer(*operation, source),
            // CONTEXT_EXISTS is Axon's 400; a conflict is what it is.
            NodeError::ContextExists(_) => (Some(E::ContextExists), AlreadyExists, 409),
            NodeError::UnknownContext(_) => (Some(E::ContextNotFound), NotFound, 404),
            NodeError::InvalidContextName(_) => (Some(E::InvalidContextName), InvalidArgument, 400),
            NodeError::ContextPlaceTaken(_) => (None, AlreadyExists, 409),
            NodeError::ContextInUse { .. } | NodeError::BackupLeaseLive(_) => (None, FailedPrecondition, 409),
            NodeError::NoLeader(_) => (Some(E::NoLeaderAvailable), Unavailable, 503),
            // The outcome is unknown to the client: it may retry (Axon's replication timeout).
            NodeError::Replication(_) => (Some(E::ReplicationTimeout), Unavailable, 503),
            NodeError::Cluster { code, .. } | NodeError::Routing { code, .. } => {
                let info = code.info();
                (
                    Some(*code),
                    info.grpc.unwrap_or(Internal),
                    info.http_status.unwrap_or(500),
                )
            }
            NodeError::Control(error) => match error {
                ControlError::AlreadyExists { .. } => (None, AlreadyExists, 409),
                ControlError::NotFound { .. } => (None, NotFound, 404),
                ControlError::Invalid(_) => (None, InvalidArgument, 400),
                _ => (Some(E::Other), Internal, 500),
            },
        };
        Answer {
            code,
            grpc,
            http_status,
        }
    }

    /// Whether the fault is the server's (worth an error in the log) rather than the client's.
    pub fn is_server_fault(&self) -> bool {
        match self {
            NodeError::Internal(_) => true,
            NodeError::Store { source, .. } => matches!(
                source,
                StoreError::Io { .. }
                    | StoreError::Corrupt { .. }
                    | StoreError::Inconsistent { .. }
                    | StoreError::Poisoned(_)
            ),
            NodeError::Control(error) => !matches!(
                error,
                ControlError::AlreadyExists { .. } | ControlError::NotFound { .. } | ControlError::Invalid(_)
            ),
            _ => false,
        }
    }
}

fn store_answer(operation: Operation, source: &StoreError) -> (Option<ErrorCode>, GrpcCode, u16) {
    use ErrorCode as E;
    use GrpcCode::*;
    let (code, grpc, http_status) = match source {
        StoreError::InvalidSequence { .. } | StoreError::InvalidSnapshotSequence { .. } => {
            (E::InvalidSequence, OutOfRange, 409)
        }
        StoreError::TransactionTooLarge { .. } => (E::PayloadTooLarge, InvalidArgument, 400),
        StoreError::InvalidEvent { .. } | StoreError::InvalidArgument(_) => (E::Other, InvalidArgument, 400),
        // UNAVAILABLE, not INTERNAL: nothing is wrong with the request, reads still work, and
        // the node takes appends again once restarted; UNAVAILABLE is the code client
        // retry/back-off policies act on.
        StoreError::Poisoned(_) => (E::DatafileWriteError, Unavailable, 503),
        StoreError::Closed => (E::Interrupted, Unavailable, 503),
        // RESOURCE_EXHAUSTED is gRPC's code for "the entire file system is out of space"; HTTP
        // 507 Insufficient Storage. Retryable: appends resume once space is freed.
        StoreError::NoSpace { .. } => (E::DatafileWriteError, ResourceExhausted, 507),
        // INTERNAL: an unexpected failure of this node, not something a retry is known to fix.
        StoreError::Io { .. } => match operation {
            Operation::Read => (E::DatafileReadError, Internal, 500),
            Operation::Write => (E::DatafileWriteError, Internal, 500),
        },
        // DATA_LOSS is gRPC's code for "unrecoverable data corruption", which a failed checksum
        // on stored data is.
        StoreError::Corrupt { .. } => (E::DatafileReadError, DataLoss, 500),
        StoreError::Inconsistent { .. } => (E::DatafileReadError, Internal, 500),
    };
    (Some(code), grpc, http_status)
}

/// The message without the `[<code>]` prefix. For sequence errors it is exactly Axon's text.
impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::ContextNotFound(context) => write!(f, "No event store found for context {context}"),
            NodeError::ContextUnavailable { context, reason } => {
                write!(
                    f,
                    "Context {context} is unavailable: its store could not be opened: {reason}"
                )
            }
            NodeError::InvalidArgument(message)
            | NodeError::Unsupported(message)
            | NodeError::Internal(message)
            | NodeError::MessageTooLarge(message)
            | NodeError::TooManyRequests(message)
            | NodeError::PermissionDenied(message)
            | NodeError::InvalidContextName(message)
            | NodeError::ContextPlaceTaken(message)
            | NodeError::NoLeader(message)
            | NodeError::Replication(message) => f.write_str(message),
            NodeError::Cluster { message, .. } | NodeError::Routing { message, .. } => f.write_str(message),
            NodeError::TokenMissing => f.write_str("Missing AxonIQ-Access-Token"),
            NodeError::InvalidToken => f.write_str("Invalid AxonIQ-Access-Token"),
            NodeError::ShuttingDown => f.write_str("Myelin is shutting down"),
            NodeError::Store { source, .. } => write!(f, "{source}"),
            NodeError::ContextExists(context) => write!(f, "Context {context} already exists"),
            NodeError::UnknownContext(context) => write!(f, "Context {context} not found"),
            NodeError::ContextInUse {
                context,
                tracking_streams,
                clients,
            } => write!(
                f,
                "Context {context} is in use ({tracking_streams} tracking streams, {clients} connected clients); \
                 pass force=true to delete it anyway"
            ),
            NodeError::BackupLeaseLive(context) => write!(
                f,
                "A backup lease is live: the files of context {context} cannot be deleted until it is \
                 released or expires (or pass preserveEventStore=true)"
            ),
            // The caller's mistake reads as the control database's own words, without its
            // "invalid request" prefix.
            NodeError::Control(ControlError::Invalid(message)) => f.write_str(message),
            NodeError::Control(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for NodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NodeError::Store { source, .. } => Some(source),
            NodeError::Control(source) => Some(source),
            _ => None,
        }
    }
}

impl From<ControlError> for NodeError {
    fn from(error: ControlError) -> Self {
        NodeError::Control(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_name_the_direction() {
        let io = || StoreError::Io {
            file: "x".into(),
            source: std::io::Error::other("disk"),
        };
        assert_eq!(NodeError::read(io()).answer().code, Some(ErrorCode::DatafileReadError));
        assert_eq!(
            NodeError::write(io()).answer().code,
            Some(ErrorCode::DatafileWriteError)
        );
        assert_eq!(
            NodeError::write(StoreError::Poisoned("x".into())).answer().grpc,
            GrpcCode::Unavailable
        );
        let full = NodeError::write(StoreError::NoSpace {
            file: "f".into(),
            source: std::io::Error::from_raw_os_error(28),
        })
        .answer();
        assert_eq!(
            (full.code, full.grpc, full.http_status),
            (Some(ErrorCode::DatafileWriteError), GrpcCode::ResourceExhausted, 507)
        );
    }

    #[test]
    fn an_unknown_context_is_no_eventstore_with_axons_text() {
        let error = NodeError::ContextNotFound("nope".into());
        assert_eq!(error.answer().code, Some(ErrorCode::NoEventStore));
        assert_eq!(error.answer().http_status, 503);
        assert_eq!(error.to_string(), "No event store found for context nope");
    }

    #[test]
    fn refusals_without_an_axon_code_are_other_on_grpc() {
        let answer = NodeError::BackupLeaseLive("orders".into()).answer();
        assert_eq!(answer.code, None);
        assert_eq!(answer.grpc_code(), ErrorCode::Other);
        assert_eq!(answer.http_status, 409);
    }

    #[test]
    fn a_control_database_refusal_keeps_its_status() {
        let invalid = NodeError::from(ControlError::Invalid("bad name".into()));
        assert_eq!(invalid.answer().http_status, 400);
        assert_eq!(invalid.to_string(), "bad name");
        let failed = NodeError::from(ControlError::Corrupt("x".into()));
        assert_eq!(failed.answer().http_status, 500);
        assert!(failed.is_server_fault());
    }
}
