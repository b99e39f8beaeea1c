//! How the REST API reports errors: an HTTP status, a JSON body saying what was wrong (and, for
//! a bad parameter, which one and what it accepts), and Axon's `AxonIQ-ErrorCode` header where
//! Axon Server sends one. Axon's codes, and the statuses of every error the node reports, come
//! from the node's one table ([`myelin_node::NodeError::answer`]); this file adds only the
//! refusals that belong to HTTP itself (a bad parameter, a range, a media type).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use myelin_control::ControlError;
use myelin_node::{ErrorCode, NodeError};
use serde::Serialize;
use utoipa::ToSchema;

/// Header naming the Axon error code of a failed request.
pub const ERROR_CODE_HEADER: &str = "AxonIQ-ErrorCode";

/// The JSON body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// Axon's error code, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// The request parameter that was wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<&'static str>,
    /// What that parameter accepts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Vec<&'static str>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// A query parameter is missing or malformed.
    #[error("{message}")]
    BadParameter {
        parameter: &'static str,
        message: String,
        accepted: Vec<&'static str>,
    },
    /// The request body or path is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No credentials.
    #[error("{0}")]
    MissingCredentials(String),
    /// Credentials that match nothing.
    #[error("{0}")]
    InvalidCredentials(String),
    /// Valid credentials without the right.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// An error of the node (an unknown context, a refused lifecycle change, a store failure):
    /// its code and status are the node's.
    #[error("{0}")]
    Node(#[from] NodeError),
    #[error("{0}")]
    Conflict(String),
    /// The request body is over the size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request body is not of a media type the route reads (JSON, say).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A `Range` no byte of the file satisfies; `len` is the file's length.
    #[error("The requested range is outside the file ({len} bytes)")]
    RangeNotSatisfiable { len: u64 },
    #[error("{0}")]
    Internal(String),
}

impl RestError {
    pub fn bad_parameter(parameter: &'static str, message: impl Into<String>, accepted: &[&'static str]) -> Self {
        RestError::BadParameter {
            parameter,
            message: message.into(),
            accepted: accepted.to_vec(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            RestError::BadParameter { .. } | RestError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RestError::MissingCredentials(_) | RestError::InvalidCredentials(_) => StatusCode::UNAUTHORIZED,
            RestError::Forbidden(_) => StatusCode::FORBIDDEN,
            RestError::NotFound(_) => StatusCode::NOT_FOUND,
            RestError::Node(error) => {
                StatusCode::from_u16(error.answer().http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            RestError::Conflict(_) => StatusCode::CONFLICT,
            RestError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RestError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            RestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Axon's code for the error, from the node's catalogue.
    pub fn axon_code(&self) -> Option<ErrorCode> {
        match self {
            // Axon also answers a valid token without the right with an invalid token's code.
            RestError::MissingCredentials(_) => Some(ErrorCode::AuthenticationTokenMissing),
            RestError::InvalidCredentials(_) | RestError::Forbidden(_) => Some(ErrorCode::AuthenticationInvalidToken),
            RestError::Node(error) => error.answer().code,
            RestError::Internal(_) => Some(ErrorCode::Other),
            _ => None,
        }
    }

    /// Whether the fault is the server's (worth an error in the log) rather than the client's.
    fn is_server_fault(&self) -> bool {
        match self {
            RestError::Node(error) => error.is_server_fault(),
            other => other.status().is_server_error(),
        }
    }
}

impl From<ControlError> for RestError {
    fn from(error: ControlError) -> Self {
        match error {
            ControlError::AlreadyExists { .. } => RestError::Conflict(error.to_string()),
            ControlError::NotFound { .. } => RestError::NotFound(error.to_string()),
            ControlError::Invalid(message) => RestError::BadRequest(message),
            other => RestError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.axon_code().map(ErrorCode::id);
        if self.is_server_fault() {
            tracing::error!(%status, "REST request failed: {self}");
        } else {
            tracing::debug!(%status, "REST request refused: {self}");
        }
        let content_range = match &self {
            RestError::RangeNotSatisfiable { len } => HeaderValue::from_str(&format!("bytes */{len}")).ok(),
            _ => None,
        };
        let (parameter, accepted) = match &self {
            RestError::BadParameter {
                parameter, accepted, ..
            } => (Some(*parameter), Some(accepted.clone())),
            _ => (None, None),
        };
        let body = ErrorBody {
            error: self.to_string(),
            code,
            parameter,
            accepted,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(code) = code {
            response
                .headers_mut()
                .insert(ERROR_CODE_HEADER, HeaderValue::from_static(code));
        }
        if let Some(content_range) = content_range {
            response.headers_mut().insert(header::CONTENT_RANGE, content_range);
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Myelin\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

/// Runs blocking work (the control database, argon2, file system) off the async threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RestError> + Send + 'static,
) -> Result<T, RestError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RestError::Internal(format!("a background task failed: {e}")))?
}
