//! How an error reaches a gRPC client: the status code, the `AxonIQ-ErrorCode` trailer and the
//! description `"[<code>] message"`, all rendered from the node's one table
//! ([`myelin_node::NodeError::answer`]) and its catalogue of Axon codes. This file decides no
//! code of its own; it also re-labels the statuses tonic makes up while reading a request.

use myelin_node::{GrpcCode, NodeError};
use tonic::codegen::http;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// Trailer naming the Axon error code (`AxonIQ-ErrorCode` on the wire; HTTP/2 lower-cases it).
pub const ERROR_CODE_METADATA_KEY: &str = "axoniq-errorcode";

/// tonic's code for one of gRPC's status codes (they share the specification's numbers).
pub fn grpc_code(code: GrpcCode) -> Code {
    Code::from_i32(code as i32)
}

/// Renders a node error as a gRPC status.
pub trait ToStatus {
    /// The gRPC status: code, `"[<code>] message"` and the `AxonIQ-ErrorCode` trailer.
    fn to_status(&self) -> Status;
}

impl ToStatus for NodeError {
    fn to_status(&self) -> Status {
        let answer = self.answer();
        let code = answer.grpc_code().id();
        if self.is_server_fault() {
            tracing::error!(code, "{self}");
        } else {
            tracing::debug!(code, "{self}");
        }
        let mut metadata = MetadataMap::new();
        metadata.insert(ERROR_CODE_METADATA_KEY, MetadataValue::from_static(code));
        Status::with_metadata(grpc_code(answer.grpc), format!("[{code}] {self}"), metadata)
    }
}

/// [`ToStatus::to_status`] as a function, for `map_err`.
pub fn status(error: NodeError) -> Status {
    error.to_status()
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
///   take for a sequence error (INVALID_SEQUENCE is OUT_OF_RANGE); grpc-java, and so Axon Server,
///   says RESOURCE_EXHAUSTED. (The integration test `oversized_message_is_resource_exhausted`
///   catches a change of tonic's wording.)
/// * A request that is not a message of the rpc's type, ends inside a message, or (unary)
///   carries none is the client's mistake, not Myelin's: INVALID_ARGUMENT with OTHER,
///   as the EventStore answers malformed messages, instead of tonic's INTERNAL, which reads
///   as a server bug. (tests/hostile.rs pins every case.)
///
/// Framing errors the gRPC spec itself assigns INTERNAL (a compressed flag without a
/// `grpc-encoding`) keep their status.
fn relabel(status: &Status) -> Option<Status> {
    let message = status.message();
    let error = match status.code() {
        Code::OutOfRange if message.starts_with(TONIC_TOO_LARGE) => NodeError::MessageTooLarge(message.to_string()),
        Code::Internal if message.starts_with(TONIC_TRUNCATED) => {
            NodeError::InvalidArgument("malformed request: the stream ended inside a message".to_string())
        }
        Code::Internal if message.starts_with(TONIC_MISSING_MESSAGE) => {
            NodeError::InvalidArgument("malformed request: the call carries no request message".to_string())
        }
        Code::Internal if message.starts_with(PROST_DECODE_ERROR) => {
            NodeError::InvalidArgument(format!("malformed request message: {message}"))
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
    use myelin_node::ErrorCode;
    use myelin_store::StoreError;

    use super::*;

    #[test]
    fn sequence_errors_carry_axon_text_and_trailer() {
        let error = NodeError::write(StoreError::InvalidSequence {
            aggregate: "agg-1".into(),
            actual: 5,
            expected: 3,
        });
        let status = error.to_status();
        let code = ErrorCode::InvalidSequence.id();
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(
            status.message(),
            format!("[{code}] Invalid sequence number 5 for aggregate agg-1, expected 3")
        );
        assert_eq!(
            status.metadata().get(ERROR_CODE_METADATA_KEY).map(|v| v.as_bytes()),
            Some(code.as_bytes())
        );
    }

    #[test]
    fn unknown_context_is_not_found_with_no_eventstore() {
        let status = NodeError::ContextNotFound("nope".into()).to_status();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status.message(),
            format!(
                "[{}] No event store found for context nope",
                ErrorCode::NoEventStore.id()
            )
        );
    }

    #[test]
    fn every_grpc_code_maps_to_tonics_code_of_the_same_number() {
        for (ours, tonics) in [
            (GrpcCode::Cancelled, Code::Cancelled),
            (GrpcCode::InvalidArgument, Code::InvalidArgument),
            (GrpcCode::NotFound, Code::NotFound),
            (GrpcCode::ResourceExhausted, Code::ResourceExhausted),
            (GrpcCode::OutOfRange, Code::OutOfRange),
            (GrpcCode::Unimplemented, Code::Unimplemented),
            (GrpcCode::Unavailable, Code::Unavailable),
            (GrpcCode::DataLoss, Code::DataLoss),
            (GrpcCode::Unauthenticated, Code::Unauthenticated),
        ] {
            assert_eq!(grpc_code(ours), tonics);
        }
    }
}
