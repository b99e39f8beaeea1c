//! The catalogue of Axon Server's error codes: for each, its number, its name, the gRPC status
//! and HTTP status Axon Server reports it with, and what it means. This file is the only source
//! file that spells an `AXONIQ-` code (a test in this crate checks the rest of the workspace);
//! gRPC trailers, status messages, REST headers and bodies all take their text from here.
//!
//! Names and numbers are facts of Axon's wire protocol (clients switch on them) and must match
//! Axon Server's exactly. The statuses are Axon's defaults; where Myelin answers one error with
//! a more precise status, [`crate::error`] says so beside the mapping, and the code stays Axon's.

use std::fmt;

/// gRPC's status codes, by their numbers in the gRPC specification, so that this layer can say
/// which one an error carries without depending on a gRPC library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// One entry of the catalogue.
#[derive(Debug, PartialEq, Eq)]
pub struct CodeInfo {
    /// The number in `AXONIQ-<number>`.
    pub number: u32,
    /// `AXONIQ-xxxx`, as clients see it in the `AxonIQ-ErrorCode` trailer and header.
    pub id: &'static str,
    /// Axon's name for it (`NO_EVENTSTORE`).
    pub name: &'static str,
    /// The gRPC status Axon Server reports it with; `None` for codes that never leave a client.
    pub grpc: Option<GrpcCode>,
    /// The HTTP status Axon Server reports it with; `None` as for `grpc`.
    pub http_status: Option<u16>,
    /// What it means, for a person reading a log or an error body.
    pub message: &'static str,
}

macro_rules! catalogue {
    ($($variant:ident = ($number:literal, $id:literal, $name:literal, $grpc:expr, $http:expr, $message:literal),)*) => {
        /// An Axon Server error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, in catalogue order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The catalogue entry.
            pub fn info(self) -> &'static CodeInfo {
                match self {
                    $(ErrorCode::$variant => &CodeInfo {
                        number: $number,
                        id: $id,
                        name: $name,
                        grpc: $grpc,
                        http_status: $http,
                        message: $message,
                    },)*
                }
            }
        }
    };
}

use GrpcCode::*;

catalogue! {
    // Errors in a client's request, and authentication.
    AuthenticationTokenMissing = (1000, "AXONIQ-1000", "AUTHENTICATION_TOKEN_MISSING", Some(PermissionDenied), Some(403), "the call carries no access token"),
    AuthenticationInvalidToken = (1001, "AXONIQ-1001", "AUTHENTICATION_INVALID_TOKEN", Some(PermissionDenied), Some(403), "the access token is unknown or lacks the right"),
    UnsupportedInstruction = (1002, "AXONIQ-1002", "UNSUPPORTED_INSTRUCTION", Some(Unknown), Some(400), "an instruction or call this server does not handle"),
    InstructionExecutionError = (1003, "AXONIQ-1003", "INSTRUCTION_EXECUTION_ERROR", Some(Internal), Some(500), "an instruction failed while being executed"),
    InstructionResultTimeout = (1004, "AXONIQ-1004", "INSTRUCTION_RESULT_TIMEOUT", Some(Internal), Some(500), "no result for an instruction in time"),
    NodeIsReplica = (1100, "AXONIQ-1100", "NODE_IS_REPLICA", Some(Unavailable), Some(503), "this node only replicates the context"),
    NoSuchApplication = (1300, "AXONIQ-1300", "NO_SUCH_APPLICATION", Some(NotFound), Some(404), "no such application"),
    NoSuchNode = (1301, "AXONIQ-1301", "NO_SUCH_NODE", Some(NotFound), Some(404), "no such node"),
    ContextNotFound = (1302, "AXONIQ-1302", "CONTEXT_NOT_FOUND", Some(NotFound), Some(404), "no such context"),
    ContextExists = (1304, "AXONIQ-1304", "CONTEXT_EXISTS", Some(AlreadyExists), Some(400), "the context exists already"),
    NoAxonServerForContext = (1400, "AXONIQ-1400", "NO_AXONSERVER_FOR_CONTEXT", Some(Unavailable), Some(503), "no node serves the context"),
    AxonServerNodeNotConnected = (1500, "AXONIQ-1500", "AXONSERVER_NODE_NOT_CONNECTED", Some(Unavailable), Some(503), "the node is not connected"),
    TooManyRequests = (1900, "AXONIQ-1900", "TOO_MANY_REQUESTS", Some(ResourceExhausted), Some(429), "the server holds as much as it may; retry later"),
    // Input errors.
    InvalidSequence = (2000, "AXONIQ-2000", "INVALID_SEQUENCE", Some(OutOfRange), Some(409), "an event's sequence number does not follow its aggregate's"),
    PayloadTooLarge = (2001, "AXONIQ-2001", "PAYLOAD_TOO_LARGE", Some(InvalidArgument), Some(400), "a message or transaction over the size limit"),
    TooManyEvents = (2002, "AXONIQ-2002", "TOO_MANY_EVENTS", Some(InvalidArgument), Some(400), "too many events in one request"),
    NoLeaderAvailable = (2100, "AXONIQ-2100", "NO_LEADER_AVAILABLE", Some(NotFound), Some(404), "the replication group has no leader"),
    NotRunningInCluster = (2101, "AXONIQ-2101", "NOT_RUNNING_IN_CLUSTER", Some(NotFound), Some(400), "this node is not part of a cluster"),
    ContextUpdateInProgress = (2102, "AXONIQ-2102", "CONTEXT_UPDATE_IN_PROGRESS", Some(NotFound), Some(400), "a change to the context is still in progress"),
    InvalidTransactionToken = (2200, "AXONIQ-2200", "INVALID_TRANSACTION_TOKEN", Some(OutOfRange), Some(409), "the transaction does not start at the store's next token"),
    ClusterNotAllowed = (2301, "AXONIQ-2301", "CLUSTER_NOT_ALLOWED", Some(PermissionDenied), Some(403), "clustering is not allowed"),
    ContextCreationNotAllowed = (2302, "AXONIQ-2302", "CONTEXT_CREATION_NOT_ALLOWED", Some(PermissionDenied), Some(403), "creating contexts is not allowed"),
    NotSupportedInDevelopment = (2303, "AXONIQ-2303", "NOT_SUPPORTED_IN_DEVELOPMENT", Some(PermissionDenied), Some(403), "not supported in development mode"),
    CannotDeleteInternalContext = (2304, "AXONIQ-2304", "CANNOT_DELETE_INTERNAL_CONTEXT", Some(PermissionDenied), Some(403), "an internal context cannot be deleted"),
    MaxClusterSizeReached = (2305, "AXONIQ-2305", "MAX_CLUSTER_SIZE_REACHED", Some(PermissionDenied), Some(403), "the cluster has as many nodes as it may"),
    AlreadyMemberOfCluster = (2306, "AXONIQ-2306", "ALREADY_MEMBER_OF_CLUSTER", Some(AlreadyExists), Some(406), "the node is a member of a cluster already"),
    NotAMember = (2307, "AXONIQ-2307", "NOT_A_MEMBER", Some(PermissionDenied), Some(403), "the node is not a member"),
    InvalidContextName = (2308, "AXONIQ-2308", "INVALID_CONTEXT_NAME", Some(InvalidArgument), Some(400), "the context name is not allowed"),
    SelectNodesForContext = (2309, "AXONIQ-2309", "SELECT_NODES_FOR_CONTEXT", Some(InvalidArgument), Some(400), "nodes must be selected for the context"),
    CannotRemoveLastNode = (2310, "AXONIQ-2310", "CANNOT_REMOVE_LAST_NODE", Some(FailedPrecondition), Some(406), "the last node of a replication group cannot be removed"),
    InvalidPropertyValue = (2311, "AXONIQ-2311", "INVALID_PROPERTY_VALUE", Some(InvalidArgument), Some(400), "a property has a value outside its range"),
    SameNodeName = (2500, "AXONIQ-2500", "SAME_NODE_NAME", Some(InvalidArgument), Some(400), "another node has this name"),
    UnknownHost = (2501, "AXONIQ-2501", "UNKNOWN_HOST", Some(InvalidArgument), Some(400), "the host name does not resolve"),
    CannotJoin = (2502, "AXONIQ-2502", "CANNOT_JOIN", Some(InvalidArgument), Some(400), "the node cannot join the cluster"),
    UnknownRole = (2510, "AXONIQ-2510", "UNKNOWN_ROLE", Some(InvalidArgument), Some(400), "no such role"),
    InvalidQuery = (2511, "AXONIQ-2511", "INVALID_QUERY", Some(InvalidArgument), Some(400), "the query does not parse"),
    ScheduledEventNotFound = (2610, "AXONIQ-2610", "SCHEDULED_EVENT_NOT_FOUND", Some(InvalidArgument), Some(400), "no such scheduled event"),
    // Rate limits and interceptors.
    EventRateExceeded = (3000, "AXONIQ-3000", "EVENT_RATE_EXCEEDED", Some(ResourceExhausted), Some(429), "events arrive faster than allowed"),
    EventRejectedByInterceptor = (3004, "AXONIQ-3004", "EVENT_REJECTED_BY_INTERCEPTOR", Some(InvalidArgument), Some(400), "an interceptor rejected the event"),
    SnapshotRejectedByInterceptor = (3005, "AXONIQ-3005", "SNAPSHOT_REJECTED_BY_INTERCEPTOR", Some(InvalidArgument), Some(400), "an interceptor rejected the snapshot"),
    // Commands.
    NoHandlerForCommand = (4000, "AXONIQ-4000", "NO_HANDLER_FOR_COMMAND", Some(NotFound), Some(500), "no handler for the command"),
    ConnectionToHandlerLost = (4001, "AXONIQ-4001", "CONNECTION_TO_HANDLER_LOST", Some(Cancelled), Some(500), "the handler disconnected before it answered"),
    CommandTimeout = (4002, "AXONIQ-4002", "COMMAND_TIMEOUT", Some(Cancelled), Some(500), "no answer to the command in time"),
    CommandDispatchError = (4003, "AXONIQ-4003", "COMMAND_DISPATCH_ERROR", Some(Cancelled), Some(500), "the command could not be dispatched"),
    CommandRejectedByInterceptor = (4004, "AXONIQ-4004", "COMMAND_REJECTED_BY_INTERCEPTOR", Some(InvalidArgument), Some(400), "an interceptor rejected the command"),
    CommandDuplicated = (4005, "AXONIQ-4005", "COMMAND_DUPLICATED", Some(InvalidArgument), Some(400), "a command with the same id is in flight"),
    // Queries.
    NoHandlerForQuery = (5000, "AXONIQ-5000", "NO_HANDLER_FOR_QUERY", Some(NotFound), Some(400), "no handler for the query"),
    QueryDispatchError = (5002, "AXONIQ-5002", "QUERY_DISPATCH_ERROR", Some(NotFound), Some(400), "the query could not be dispatched"),
    QueryRejectedByInterceptor = (5004, "AXONIQ-5004", "QUERY_REJECTED_BY_INTERCEPTOR", Some(InvalidArgument), Some(400), "an interceptor rejected the query"),
    SubscriptionQueryRejectedByInterceptor = (5005, "AXONIQ-5005", "SUBSCRIPTION_QUERY_REJECTED_BY_INTERCEPTOR", Some(InvalidArgument), Some(400), "an interceptor rejected the subscription query"),
    QueryTimeout = (5006, "AXONIQ-5006", "QUERY_TIMEOUT", Some(Cancelled), Some(500), "the query did not complete in time"),
    QueryDuplicated = (5007, "AXONIQ-5007", "QUERY_DUPLICATED", Some(InvalidArgument), Some(400), "a query with the same id is under way"),
    // Event stores and clients.
    NoEventStore = (6000, "AXONIQ-6000", "NO_EVENTSTORE", Some(NotFound), Some(503), "no event store for the context"),
    ClientDisconnected = (6001, "AXONIQ-6001", "CLIENT_DISCONNECTED", Some(NotFound), Some(500), "the client disconnected"),
    ExceptionInInterceptor = (6100, "AXONIQ-6100", "EXCEPTION_IN_INTERCEPTOR", Some(Unknown), Some(500), "an interceptor failed"),
    // Backups.
    NodeNotReadyForBackup = (7000, "AXONIQ-7000", "NODE_NOT_READY_FOR_BACKUP", Some(Unavailable), Some(503), "the node cannot take a backup now"),
    // Client-side encryption: never raised by a server, listed so numbers stay unique.
    CryptoUnexpectedError = (8000, "AXONIQ-8000", "CRYPTO_UNEXPECTED_ERROR", None, None, "client-side encryption failed unexpectedly"),
    CryptoKeyError = (8001, "AXONIQ-8001", "CRYPTO_KEY_ERROR", None, None, "client-side encryption key is unusable"),
    CryptoDecryptionError = (8002, "AXONIQ-8002", "CRYPTO_DECRYPTION_ERROR", None, None, "client-side decryption failed"),
    // Failures inside the server.
    DatafileReadError = (9000, "AXONIQ-9000", "DATAFILE_READ_ERROR", Some(Cancelled), Some(500), "a data file could not be read"),
    IndexReadError = (9001, "AXONIQ-9001", "INDEX_READ_ERROR", Some(Cancelled), Some(500), "an index file could not be read"),
    DatafileWriteError = (9100, "AXONIQ-9100", "DATAFILE_WRITE_ERROR", Some(Cancelled), Some(500), "a data file could not be written"),
    IndexWriteError = (9101, "AXONIQ-9101", "INDEX_WRITE_ERROR", Some(Cancelled), Some(500), "an index file could not be written"),
    DirectoryCreationFailed = (9102, "AXONIQ-9102", "DIRECTORY_CREATION_FAILED", Some(Cancelled), Some(500), "a directory could not be created"),
    ValidationFailed = (9200, "AXONIQ-9200", "VALIDATION_FAILED", Some(Cancelled), Some(500), "stored data failed validation"),
    ExtensionsDisabled = (9301, "AXONIQ-9301", "EXTENSIONS_DISABLED", Some(Cancelled), Some(500), "extensions are disabled"),
    Interrupted = (9500, "AXONIQ-9500", "INTERRUPTED", Some(Cancelled), Some(500), "the operation was interrupted"),
    TransactionRolledBack = (9900, "AXONIQ-9900", "TRANSACTION_ROLLED_BACK", Some(Cancelled), Some(500), "the transaction was rolled back"),
    // Clustering.
    ServerTooSlow = (10001, "AXONIQ-10001", "SERVER_TOO_SLOW", Some(Cancelled), Some(500), "a replica is too slow to follow"),
    UncommittedConfiguration = (10002, "AXONIQ-10002", "UNCOMMITTED_CONFIGURATION", Some(Cancelled), Some(500), "a configuration change is not committed yet"),
    ReplicationTimeout = (10003, "AXONIQ-10003", "REPLICATION_TIMEOUT", Some(Cancelled), Some(500), "replication did not complete in time"),
    UncommittedTerm = (10007, "AXONIQ-10007", "UNCOMMITTED_TERM", Some(Cancelled), Some(500), "the leader has not committed an entry of its term yet"),
    // Anything else.
    Other = (1, "AXONIQ-0001", "OTHER", Some(Cancelled), Some(500), "an error of no other kind"),
}

impl ErrorCode {
    /// `AXONIQ-xxxx`.
    pub fn id(self) -> &'static str {
        self.info().id
    }

    /// Axon's name for the code.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The code a client sent or a trailer carried; `None` for one not in the catalogue.
    pub fn from_id(id: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|code| code.id() == id)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_id_is_its_number_with_four_digits_at_least() {
        for code in ErrorCode::ALL {
            let info = code.info();
            assert_eq!(info.id, format!("AXONIQ-{:04}", info.number), "{code:?}");
        }
    }

    #[test]
    fn numbers_and_names_are_unique() {
        let numbers: HashSet<u32> = ErrorCode::ALL.iter().map(|c| c.info().number).collect();
        let names: HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(numbers.len(), ErrorCode::ALL.len());
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn names_are_upper_snake_case_and_messages_are_present() {
        for code in ErrorCode::ALL {
            assert!(
                code.name().chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{code:?}"
            );
            assert!(!code.info().message.is_empty(), "{code:?}");
        }
    }

    #[test]
    fn codes_round_trip_through_their_id() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_id(code.id()), Some(*code));
        }
        assert_eq!(ErrorCode::from_id("AXONIQ-4242"), None);
    }

    #[test]
    fn only_client_side_codes_lack_statuses() {
        for code in ErrorCode::ALL {
            let info = code.info();
            let client_side = (8000..9000).contains(&info.number);
            assert_eq!(info.grpc.is_none(), client_side, "{code:?}");
            assert_eq!(info.http_status.is_none(), client_side, "{code:?}");
        }
    }
}
