//! Request extractors whose rejections are [`RestError`]s: a malformed body, query or path
//! gets the same JSON error body (and a 4xx status saying what was wrong) as every other
//! refusal, instead of axum's plain-text rejection. A client, and the OpenAPI document, then
//! see one error shape for the whole API.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::RestError;

/// A JSON request body (`Content-Type: application/json`), like `axum::Json`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// Query parameters, like `axum::extract::Query`.
#[derive(Debug)]
pub struct Query<T>(pub T);

/// Path parameters, like `axum::extract::Path`.
#[derive(Debug)]
pub struct Path<T>(pub T);

/// The request body as bytes, whatever its media type, like `bytes::Bytes` (within the same
/// size limit).
#[derive(Debug)]
pub struct BodyBytes(pub bytes::Bytes);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = RestError;

    async fn from_request(request: Request, state: &S) -> Result<Self, RestError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(rejected("request body", rejection.status(), rejection.body_text())),
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for BodyBytes {
    type Rejection = RestError;

    async fn from_request(request: Request, state: &S) -> Result<Self, RestError> {
        match bytes::Bytes::from_request(request, state).await {
            Ok(body) => Ok(BodyBytes(body)),
            Err(rejection) => Err(rejected("request body", rejection.status(), rejection.body_text())),
        }
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, RestError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(rejected("query string", rejection.status(), rejection.body_text())),
        }
    }
}

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, RestError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(rejected("path", rejection.status(), rejection.body_text())),
        }
    }
}

/// axum's rejection as a [`RestError`], keeping what its status says: a body over the limit
/// (413), a body that is not declared JSON (415), a fault of ours (5xx: a route whose
/// parameters do not match its handler); anything else is a malformed request (400 — also
/// for JSON that parses but does not fit the documented schema, which axum answers 422).
fn rejected(part: &str, status: StatusCode, text: String) -> RestError {
    let message = format!("Malformed {part}: {text}");
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => RestError::PayloadTooLarge(message),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => RestError::UnsupportedMediaType(message),
        status if status.is_server_error() => RestError::Internal(message),
        _ => RestError::BadRequest(message),
    }
}
