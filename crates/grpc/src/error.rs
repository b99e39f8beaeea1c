//! The one table from errors to what a client sees: gRPC status code, `AxonIQ-ErrorCode`
//! trailer, description `"[AXONIQ-xxxx] message"`, and the HTTP status the REST API will use.
//!
//! Codes and their meanings are Axon Server's (`ErrorCode.java` in AxonIQ/axon-server-se). Where
//! upstream answers an internal error with `CANCELLED` we use the gRPC code that says what
//! happened, because `CANCELLED` reads to a client as "you cancelled": clients only act on the
//! AXONIQ code, which stays upstream's.

use std::fmt;

use myelin_store::StoreError;
use tonic::codegen::http;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// Trailer naming the Axon error code (`AxonIQ-ErrorCode` on the wire; HTTP/2 lower-cases it).
pub const ERROR_CODE_METADATA_KEY: &str = "axoniq-errorcode";

/// An Axon error code with the gRPC and HTTP statuses it is reported with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    /// `AXONIQ-xxxx`.
    pub code: &'static str,
    pub grpc: Code,
    pub http_status: u16,
}

/// Whether a store error happened while reading or while writing: the same I/O failure is
/// `DATAFILE_READ_ERROR` on one side and `DATAFILE_WRITE_ERROR` on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
}

/// Every error the API layer reports.
#[derive(Debug)]
pub enum ApiError {
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
}

impl ApiError {
    pub fn read(source: StoreError) -> Self {
        ApiError::Store {
            operation: Operation::Read,
            source,
        }
    }

    pub fn write(source: StoreError) -> Self {
        ApiError::Store {
            operation: Operation::Write,
            source,
        }
    }

    /// The table. Sources for each code: `ErrorCode.java` upstream.
    pub fn code(&self) -> ErrorCode {
        use Code::*;
        let (code, grpc, http_status) = match self {
            // NO_EVENTSTORE: NOT_FOUND; upstream's HTTP status for it is 503.
            ApiError::ContextNotFound(_) => ("AXONIQ-6000", NotFound, 503),
            // DATAFILE_READ_ERROR: the context's files failed their checks at startup. Only
            // that context is affected; UNAVAILABLE because it returns once repaired.
            ApiError::ContextUnavailable { .. } => ("AXONIQ-9000", Unavailable, 503),
            // TOO_MANY_REQUESTS, exactly upstream's status.
            ApiError::TooManyRequests(_) => ("AXONIQ-1900", ResourceExhausted, 429),
            // Upstream answers undecodable input with OTHER (AXONIQ-0001); our status says why.
            ApiError::InvalidArgument(_) => ("AXONIQ-0001", InvalidArgument, 400),
            // UNSUPPORTED_INSTRUCTION; for an rpc, UNIMPLEMENTED is what gRPC clients expect.
            ApiError::Unsupported(_) => ("AXONIQ-1002", Unimplemented, 501),
            // INTERRUPTED: the operation was cut short by the shutdown.
            ApiError::ShuttingDown => ("AXONIQ-9500", Unavailable, 503),
            // RESOURCE_EXHAUSTED, as grpc-java (so Axon Server) answers an inbound message over
            // the limit; it carries no AXONIQ code there, we add PAYLOAD_TOO_LARGE's.
            ApiError::MessageTooLarge(_) => ("AXONIQ-2001", ResourceExhausted, 413),
            // AUTHENTICATION_TOKEN_MISSING / AUTHENTICATION_INVALID_TOKEN. Upstream answers all
            // three with PERMISSION_DENIED; the code stays upstream's, the status says which.
            ApiError::TokenMissing => ("AXONIQ-1000", Unauthenticated, 401),
            ApiError::InvalidToken => ("AXONIQ-1001", Unauthenticated, 401),
            ApiError::PermissionDenied(_) => ("AXONIQ-1001", PermissionDenied, 403),
            // OTHER, upstream's code for anything unexpected.
            ApiError::Internal(_) => ("AXONIQ-0001", Internal, 500),
            ApiError::Store { operation, source } => match source {
                // INVALID_SEQUENCE, exactly upstream's status.
                StoreError::InvalidSequence { .. } | StoreError::InvalidSnapshotSequence { .. } => {
                    ("AXONIQ-2000", OutOfRange, 409)
                }
                // PAYLOAD_TOO_LARGE, exactly upstream's status.
                StoreError::TransactionTooLarge { .. } => ("AXONIQ-2001", InvalidArgument, 400),
                StoreError::InvalidEvent { .. } | StoreError::InvalidArgument(_) => {
                    ("AXONIQ-0001", InvalidArgument, 400)
                }
                // DATAFILE_WRITE_ERROR. UNAVAILABLE, not INTERNAL: nothing is wrong with the
                // request, reads still work, and the node takes appends again once restarted;
                // UNAVAILABLE is the code client retry/back-off policies act on.
                StoreError::Poisoned(_) => ("AXONIQ-9100", Unavailable, 503),
                StoreError::Closed => ("AXONIQ-9500", Unavailable, 503),
                // DATAFILE_WRITE_ERROR. RESOURCE_EXHAUSTED is gRPC's code for "the entire file
                // system is out of space"; HTTP 507 Insufficient Storage. Retryable: appends
                // resume once space is freed.
                StoreError::NoSpace { .. } => ("AXONIQ-9100", ResourceExhausted, 507),
                // DATAFILE_READ_ERROR / DATAFILE_WRITE_ERROR. INTERNAL: an unexpected failure
                // of this node, not something a retry is known to fix.
                StoreError::Io { .. } => match operation {
                    Operation::Read => ("AXONIQ-9000", Internal, 500),
                    Operation::Write => ("AXONIQ-9100", Internal, 500),
                },
                // DATAFILE_READ_ERROR. DATA_LOSS is gRPC's code for "unrecoverable data
                // corruption", which a failed checksum on stored data is.
                StoreError::Corrupt { .. } => ("AXONIQ-9000", DataLoss, 500),
                StoreError::Inconsistent { .. } => ("AXONIQ-9000", Internal, 500),
            },
        };
        ErrorCode {
            code,
            grpc,
            http_status,
        }
    }

    /// Whether the fault is the server's (logged as an error) rather than the client's.
    fn is_server_fault(&self) -> bool {
        matches!(self, ApiError::Internal(_))
            || matches!(
                self,
                ApiError::Store {
                    source: StoreError::Io { .. }
                        | StoreError::Corrupt { .. }
                        | StoreError::Inconsistent { .. }
                        | StoreError::Poisoned(_),
                    ..
                }
            )
    }

    /// The gRPC status: code, `"[AXONIQ-xxxx] message"` and the `AxonIQ-ErrorCode` trailer.
    pub fn to_status(&self) -> Status {
        let code = self.code();
        if self.is_server_fault() {
            tracing::error!(code = code.code, "{self}");
        } else {
            tracing::debug!(code = code.code, "{self}");
        }
        let mut metadata = MetadataMap::new();
        metadata.insert(ERROR_CODE_METADATA_KEY, MetadataValue::from_static(code.code));
        Status::with_metadata(code.grpc, format!("[{}] {self}", code.code), metadata)
    }
}

/// The message without the `[AXONIQ-xxxx]` prefix. For sequence errors it is exactly Axon's text.
impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::ContextNotFound(context) => write!(f, "No event store found for context {context}"),
            ApiError::ContextUnavailable { context, reason } => {
                write!(
                    f,
                    "Context {context} is unavailable: its store could not be opened: {reason}"
                )
            }
            ApiError::InvalidArgument(message)
            | ApiError::Unsupported(message)
            | ApiError::Internal(message)
            | ApiError::MessageTooLarge(message)
            | ApiError::TooManyRequests(message)
            | ApiError::PermissionDenied(message) => f.write_str(message),
            ApiError::TokenMissing => f.write_str("Missing AxonIQ-Access-Token"),
            ApiError::InvalidToken => f.write_str("Invalid AxonIQ-Access-Token"),
            ApiError::ShuttingDown => f.write_str("Myelin is shutting down"),
            ApiError::Store { source, .. } => write!(f, "{source}"),
        }
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApiError::Store { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        error.to_status()
    }
}

/// tonic's wording for a request message over `max_decoding_message_size`.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";
/// tonic's wording for a request body that ends inside a message (a cut-off frame).
const TONIC_TRUNCATED: &str = "Unexpected EOF decoding stream";
/// tonic's wording for a unary request whose body carries no message at all.
const TONIC_MISSING_MESSAGE: &str = "Missing request message";
/// prost's `DecodeError` text, which the generated services' codec (PlatformService) reports
/// as INTERNAL; the EventStore's own codec already says INVALID_ARGUMENT ([`crate::codec`]).
const PROST_DECODE_ERROR: &str = "failed to decode Protobuf message";

/// Re-labels a status tonic produced while reading a request; `None`: keep it as it is.
///
/// * tonic reports a message over the size limit as OUT_OF_RANGE, which an Axon client would
///   take for a sequence error (AXONIQ-2000 is OUT_OF_RANGE); grpc-java, and so Axon Server,
///   says RESOURCE_EXHAUSTED. (The integration test `oversized_message_is_resource_exhausted`
///   catches a change of tonic's wording.)
/// * A request that is not a message of the rpc's type, ends inside a message, or (unary)
///   carries none is the client's mistake, not Myelin's: INVALID_ARGUMENT with AXONIQ-0001,
///   as the EventStore answers malformed messages, instead of tonic's INTERNAL, which reads
///   as a server bug. (tests/hostile.rs pins every case.)
///
/// Framing errors the gRPC spec itself assigns INTERNAL (a compressed flag without a
/// `grpc-encoding`) keep their status.
fn relabel(status: &Status) -> Option<Status> {
    let message = status.message();
    let error = match status.code() {
        Code::OutOfRange if message.starts_with(TONIC_TOO_LARGE) => ApiError::MessageTooLarge(message.to_string()),
        Code::Internal if message.starts_with(TONIC_TRUNCATED) => {
            ApiError::InvalidArgument("malformed request: the stream ended inside a message".to_string())
        }
        Code::Internal if message.starts_with(TONIC_MISSING_MESSAGE) => {
            ApiError::InvalidArgument("malformed request: the call carries no request message".to_string())
        }
        Code::Internal if message.starts_with(PROST_DECODE_ERROR) => {
            ApiError::InvalidArgument(format!("malformed request message: {message}"))
        }
        _ => return None,
    };
    Some(error.to_status())
}

/// Re-labels a status tonic produced while reading a request (which ones, and why: `relabel`);
/// everything else passes unchanged.
pub fn request_error(status: Status) -> Status {
    relabel(&status).unwrap_or(status)
}

/// [`request_error`] for calls whose request tonic decodes before our handler runs (unary and
/// server-streaming): their errors come back as a trailers-only response.
pub fn unary_request_error(response: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    match Status::from_header_map(response.headers()).and_then(|status| relabel(&status)) {
        Some(status) => status.into_http(),
        None => response,
    }
}

/// Applies [`unary_request_error`] to every answer of a generated tonic service (whose
/// requests tonic decodes with its own codec, before our handler runs).
#[derive(Debug, Clone)]
pub struct RequestErrors<S>(pub S);

impl<S: tonic::server::NamedService> tonic::server::NamedService for RequestErrors<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for RequestErrors<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, std::convert::Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let answer = self.0.call(request);
        Box::pin(async move { answer.await.map(unary_request_error) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_errors_carry_axon_text_and_trailer() {
        let error = ApiError::write(StoreError::InvalidSequence {
            aggregate: "agg-1".into(),
            actual: 5,
            expected: 3,
        });
        let status = error.to_status();
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(
            status.message(),
            "[AXONIQ-2000] Invalid sequence number 5 for aggregate agg-1, expected 3"
        );
        assert_eq!(
            status.metadata().get(ERROR_CODE_METADATA_KEY).map(|v| v.as_bytes()),
            Some(&b"AXONIQ-2000"[..])
        );
    }

    #[test]
    fn io_errors_name_the_direction() {
        let io = || StoreError::Io {
            file: "x".into(),
            source: std::io::Error::other("disk"),
        };
        assert_eq!(ApiError::read(io()).code().code, "AXONIQ-9000");
        assert_eq!(ApiError::write(io()).code().code, "AXONIQ-9100");
        assert_eq!(
            ApiError::write(StoreError::Poisoned("x".into())).code().grpc,
            Code::Unavailable
        );
        let full = ApiError::write(StoreError::NoSpace {
            file: "f".into(),
            source: std::io::Error::from_raw_os_error(28),
        })
        .code();
        assert_eq!(
            (full.code, full.grpc, full.http_status),
            ("AXONIQ-9100", Code::ResourceExhausted, 507)
        );
    }

    #[test]
    fn unknown_context_is_not_found_6000() {
        let status = ApiError::ContextNotFound("nope".into()).to_status();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "[AXONIQ-6000] No event store found for context nope");
    }
}
