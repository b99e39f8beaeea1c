//! Backup leases: while one is live, nothing deletes or rewrites a file the backup listing
//! answers (docs/BACKUP.md, "The lease").
//!
//! A lease is a hold in the [`DeletionHolds`](myelin_store::DeletionHolds) registry the stores
//! check (`ContextStore::deletions_held`), under a random id. It expires by itself after its
//! time to live, so a backup that dies without releasing it blocks cleaning for at most that
//! long; a backup renews it while it runs. Leases live in memory: a restart releases them.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use myelin_store::HOLDS_MAX;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::SharedState;
use crate::error::{ErrorBody, RestError};
use crate::extract::{BodyBytes, Path};
use myelin_control::now_ms;

/// Time to live of a lease when the request names none.
pub const TTL_SECONDS_DEFAULT: u64 = 300;
/// The longest time to live a lease may ask for.
pub const TTL_SECONDS_MAX: u64 = 3600;

/// Body of `POST /v1/backup/lease` and of a renewal; may be absent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRequest {
    /// Seconds until the lease expires unless renewed: 1 to 3600, default 300.
    #[schema(minimum = 1, maximum = 3600)]
    pub ttl_seconds: Option<u64>,
}

/// A live lease.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// Names the lease in renewals and the release.
    pub id: String,
    /// When it expires unless renewed (epoch milliseconds).
    pub expires_at: i64,
    pub ttl_seconds: u64,
}

/// The time to live a request body asks for. An empty body (or only whitespace), `null`, or
/// an object without `ttlSeconds` means the default; anything else must be an integer from 1
/// to [`TTL_SECONDS_MAX`] (`300.0` is one: JSON does not tell integers from other numbers).
fn ttl_seconds(body: &[u8]) -> Result<u64, RestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(TTL_SECONDS_DEFAULT);
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| RestError::BadRequest(format!("The body is not JSON ({e}); expected {{\"ttlSeconds\": n}}")))?;
    // `null` is the documented "no body" too (the body schema is optional, so nullable).
    if value.is_null() {
        return Ok(TTL_SECONDS_DEFAULT);
    }
    let Value::Object(fields) = value else {
        return Err(RestError::BadRequest(
            "The body must be a JSON object: {\"ttlSeconds\": n}".to_string(),
        ));
    };
    match fields.get("ttlSeconds") {
        None | Some(Value::Null) => Ok(TTL_SECONDS_DEFAULT),
        Some(ttl) => ttl
            .as_u64()
            .or_else(|| whole_number(ttl))
            .filter(|ttl| (1..=TTL_SECONDS_MAX).contains(ttl))
            .ok_or_else(|| {
                RestError::bad_parameter(
                    "ttlSeconds",
                    format!("Invalid value {ttl} for 'ttlSeconds': expected an integer from 1 to {TTL_SECONDS_MAX}"),
                    &["an integer from 1 to 3600"],
                )
            }),
    }
}

/// A JSON number with no fractional part written as a float (`300.0`), within `u64`.
fn whole_number(value: &Value) -> Option<u64> {
    let number = value.as_f64()?;
    // Bounded well inside u64 (the caller wants 1..=3600), so the cast is exact.
    (number.fract() == 0.0 && (0.0..=1e15).contains(&number)).then_some(number as u64)
}

/// A fresh lease id: 128 random bits in hex, so ids cannot be guessed or collide.
fn new_id() -> Result<String, RestError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| RestError::Internal(format!("no random lease id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn lease(id: String, ttl_seconds: u64) -> Lease {
    let ttl_ms = i64::try_from(ttl_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    Lease {
        id,
        expires_at: now_ms().saturating_add(ttl_ms),
        ttl_seconds,
    }
}

fn unknown(id: &str) -> RestError {
    RestError::NotFound(format!("No live backup lease {id} (never taken, released or expired)"))
}

/// Takes a lease: until it expires or is released, nothing deletes or rewrites a listed file.
#[utoipa::path(
    post,
    path = "/v1/backup/lease",
    tag = "backup",
    request_body(content = Option<LeaseRequest>, description = "Optional; `ttlSeconds` defaults to 300"),
    responses(
        (status = OK, description = "The lease", body = Lease),
        (status = BAD_REQUEST, description = "Bad body or ttlSeconds out of 1..=3600", body = ErrorBody),
        (status = CONFLICT, description = "Too many live leases (256)", body = ErrorBody),
    )
)]
pub async fn create_lease(
    State(state): State<SharedState>,
    BodyBytes(body): BodyBytes,
) -> Result<Json<Lease>, RestError> {
    let ttl = ttl_seconds(&body)?;
    let id = new_id()?;
    if !state
        .deletion_holds
        .hold(&id, Instant::now() + Duration::from_secs(ttl))
    {
        return Err(RestError::Conflict(format!(
            "{HOLDS_MAX} backup leases are live: release one or let it expire"
        )));
    }
    tracing::info!(lease = %id, ttl_seconds = ttl, "backup lease taken");
    Ok(Json(lease(id, ttl)))
}

/// Renews a live lease: it now expires `ttlSeconds` from now.
#[utoipa::path(
    post,
    path = "/v1/backup/lease/{id}",
    tag = "backup",
    params(("id" = String, Path, description = "The lease")),
    request_body(content = Option<LeaseRequest>, description = "Optional; `ttlSeconds` defaults to 300"),
    responses(
        (status = OK, description = "The renewed lease", body = Lease),
        (status = BAD_REQUEST, description = "Bad body or ttlSeconds out of 1..=3600", body = ErrorBody),
        (status = NOT_FOUND, description = "No such live lease (an expired one cannot be renewed)", body = ErrorBody),
    )
)]
pub async fn renew_lease(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    BodyBytes(body): BodyBytes,
) -> Result<Json<Lease>, RestError> {
    let ttl = ttl_seconds(&body)?;
    let now = Instant::now();
    if !state.deletion_holds.renew(&id, now + Duration::from_secs(ttl), now) {
        return Err(unknown(&id));
    }
    tracing::debug!(lease = %id, ttl_seconds = ttl, "backup lease renewed");
    Ok(Json(lease(id, ttl)))
}

/// Releases a lease.
#[utoipa::path(
    delete,
    path = "/v1/backup/lease/{id}",
    tag = "backup",
    params(("id" = String, Path, description = "The lease")),
    responses(
        (status = OK, description = "Released"),
        (status = NOT_FOUND, description = "No such live lease", body = ErrorBody),
    )
)]
pub async fn release_lease(State(state): State<SharedState>, Path(id): Path<String>) -> Result<StatusCode, RestError> {
    if !state.deletion_holds.release(&id) {
        return Err(unknown(&id));
    }
    tracing::info!(lease = %id, "backup lease released");
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_defaults_and_bounds() {
        assert_eq!(ttl_seconds(b"").ok(), Some(300));
        assert_eq!(ttl_seconds(b" \n").ok(), Some(300));
        assert_eq!(ttl_seconds(b"{}").ok(), Some(300));
        assert_eq!(ttl_seconds(br#"{"ttlSeconds": null}"#).ok(), Some(300));
        assert_eq!(ttl_seconds(br#"{"ttlSeconds": 1}"#).ok(), Some(1));
        assert_eq!(ttl_seconds(br#"{"ttlSeconds": 3600}"#).ok(), Some(3600));
        for bad in [
            &br#"{"ttlSeconds": 0}"#[..],
            br#"{"ttlSeconds": 3601}"#,
            br#"{"ttlSeconds": -5}"#,
            br#"{"ttlSeconds": 1.5}"#,
            br#"{"ttlSeconds": "60"}"#,
        ] {
            let error = ttl_seconds(bad).expect_err("refused");
            assert!(
                matches!(
                    error,
                    RestError::BadParameter {
                        parameter: "ttlSeconds",
                        ..
                    }
                ),
                "{error:?}"
            );
        }
        assert!(matches!(ttl_seconds(b"not json"), Err(RestError::BadRequest(_))));
        assert!(matches!(ttl_seconds(b"[1]"), Err(RestError::BadRequest(_))));
    }

    #[test]
    fn ids_are_random_hex() {
        let (a, b) = (new_id().expect("id"), new_id().expect("id"));
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }
}
