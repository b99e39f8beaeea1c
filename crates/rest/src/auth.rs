//! Access control for the REST API.
//!
//! Off by default, as in Axon Server. When on, every route except the liveness probe needs
//! credentials: an `AxonIQ-Access-Token` header (the configured token, the admin token, or an
//! application's token) or HTTP basic for a user. Missing or unknown credentials answer 401;
//! valid ones without the route's right answer 403. The control-database backup endpoints are
//! admin routes like every other backup endpoint (upstream SE leaves `/createControlDbBackup`
//! open; we do not).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use myelin_control::{Grant, Principal, PrincipalKind, Right, Role};
use utoipa::Modify;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::SharedState;
use crate::error::{RestError, blocking};

/// Header carrying an access token (Axon's name).
pub const ACCESS_TOKEN_HEADER: &str = "AxonIQ-Access-Token";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (only the liveness probe).
    Open,
    /// Any valid credential.
    Authenticated,
    /// A credential with the global ADMIN role.
    Admin,
}

/// Route middleware enforcing an access class; install it with
/// `middleware::from_fn_with_state((state, access), auth::enforce)` as a route layer.
/// While access control is off every request passes as an anonymous administrator.
pub async fn enforce(
    State((state, access)): State<(SharedState, Access)>,
    mut request: Request,
    next: Next,
) -> Response {
    if access == Access::Open {
        return next.run(request).await;
    }
    let principal = match authenticate(&state, request.headers()).await {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    if access == Access::Admin && !principal.allows(None, Right::Admin) {
        return RestError::Forbidden(format!("{} is not allowed to use admin endpoints", principal.name))
            .into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The caller, from the request's credentials. With access control off, everyone is an
/// anonymous administrator, as in Axon Server.
pub async fn authenticate(state: &SharedState, headers: &HeaderMap) -> Result<Principal, RestError> {
    if !state.access.enabled() {
        return Ok(anonymous());
    }
    let credentials = credentials(headers)?;
    let access = state.access.clone();
    let principal = blocking(move || {
        let found = match &credentials {
            Credentials::Token(token) => access.authenticate_token(token),
            Credentials::Basic { user, password } => access.authenticate_basic(user, password),
        };
        found.map_err(|e| RestError::Internal(format!("cannot check credentials: {e}")))
    })
    .await?;
    principal.ok_or_else(|| RestError::InvalidCredentials("Invalid access token or user credentials".to_string()))
}

/// The principal of requests while access control is off.
pub fn anonymous() -> Principal {
    Principal {
        name: "anonymous".to_string(),
        kind: PrincipalKind::AdminToken,
        grants: vec![Grant {
            context: "*".to_string(),
            role: Role::Admin,
        }],
    }
}

enum Credentials {
    Token(String),
    Basic { user: String, password: String },
}

fn credentials(headers: &HeaderMap) -> Result<Credentials, RestError> {
    if let Some(token) = headers.get(ACCESS_TOKEN_HEADER) {
        let token = token
            .to_str()
            .map_err(|_| RestError::InvalidCredentials("The access token is not valid text".to_string()))?;
        return Ok(Credentials::Token(token.to_string()));
    }
    let missing =
        || RestError::MissingCredentials(format!("Missing {ACCESS_TOKEN_HEADER} header or basic credentials"));
    let authorization = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let authorization = authorization.to_str().map_err(|_| missing())?;
    let (scheme, encoded) = authorization.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(missing());
    }
    let invalid = || RestError::InvalidCredentials("Malformed basic credentials".to_string());
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid())?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (user, password) = decoded.split_once(':').ok_or_else(invalid)?;
    Ok(Credentials::Basic {
        user: user.to_string(),
        password: password.to_string(),
    })
}

/// Declares the two ways to authenticate in the OpenAPI document.
pub struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            ACCESS_TOKEN_HEADER,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(ACCESS_TOKEN_HEADER))),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}
