//! Access control for the gRPC API, as a tower layer in front of every service.
//!
//! Off by default, as in Axon Server. When on, every call needs an `AxonIQ-Access-Token`
//! (the configured token, the admin token or an application's token) with a right on the
//! call's context: appends need WRITE, reads need READ, the platform connection either; the
//! admin services (`io.axoniq.axonserver.grpc.admin`) need ADMIN on every context, as the REST
//! admin routes do.
//! A missing token answers UNAUTHENTICATED with AUTHENTICATION_TOKEN_MISSING, an unknown one
//! UNAUTHENTICATED with AUTHENTICATION_INVALID_TOKEN, and a valid token without the right
//! PERMISSION_DENIED with AUTHENTICATION_INVALID_TOKEN
//! (upstream reports all three as PERMISSION_DENIED; clients act on the AXONIQ code, which is
//! upstream's, and the status code now says which of the three it was).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use myelin_control::{AccessControl, Right};
use tonic::codegen::http;
use tower::{Layer, Service};

use crate::contexts::context_name;
use crate::error::ToStatus;
use myelin_node::NodeError;

/// Metadata key of the access token (`AxonIQ-Access-Token`; HTTP/2 lower-cases it).
pub const ACCESS_TOKEN_METADATA_KEY: &str = "axoniq-access-token";

/// Puts access control in front of a gRPC service.
#[derive(Clone)]
pub struct AccessLayer {
    access: Arc<AccessControl>,
}

impl AccessLayer {
    /// The layer, or `None` when there is nothing to check (no access control, or disabled):
    /// then requests reach the services without any wrapper at all (`tower::util::option_layer`).
    pub fn new(access: Option<Arc<AccessControl>>) -> Option<Self> {
        access.filter(|a| a.enabled()).map(|access| AccessLayer { access })
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = AccessService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessService {
            inner,
            access: self.access.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AccessService<S> {
    inner: S,
    access: Arc<AccessControl>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for AccessService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Err(error) = check(&self.access, request.uri().path(), request.headers()) {
            return Box::pin(std::future::ready(Ok(error.to_status().into_http())));
        }
        Box::pin(self.inner.call(request))
    }
}

/// The right a call needs on its context (for [`Right::Admin`]: on every context).
pub fn required_right(path: &str) -> Option<Right> {
    const EVENT_STORE: &str = "/io.axoniq.axonserver.grpc.event.EventStore/";
    const ADMIN: &str = "/io.axoniq.axonserver.grpc.admin.";
    if path.starts_with(ADMIN) {
        return Some(Right::Admin);
    }
    match path.strip_prefix(EVENT_STORE) {
        Some("AppendEvent" | "AppendSnapshot") => Some(Right::Write),
        Some(_) => Some(Right::Read),
        // The platform connection: any right on the context will do.
        None => None,
    }
}

fn check(access: &AccessControl, path: &str, headers: &http::HeaderMap) -> Result<(), NodeError> {
    let token = headers
        .get(ACCESS_TOKEN_METADATA_KEY)
        .ok_or(NodeError::TokenMissing)?
        .to_str()
        .map_err(|_| NodeError::InvalidToken)?;
    let principal = access
        .authenticate_token(token)
        .map_err(|e| NodeError::Internal(format!("cannot check the access token: {e}")))?
        .ok_or(NodeError::InvalidToken)?;
    let context = context_name(headers);
    let allowed = match required_right(path) {
        // Administration is about the cluster, not the context the call names.
        Some(Right::Admin) => principal.allows(None, Right::Admin),
        Some(right) => principal.allows(Some(context), right),
        None => principal.allows(Some(context), Right::Read) || principal.allows(Some(context), Right::Write),
    };
    if allowed {
        Ok(())
    } else {
        Err(NodeError::PermissionDenied(format!(
            "{} has no right to {path} on context {context}",
            principal.name
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use myelin_control::ControlDb;

    use super::*;

    #[test]
    fn the_admin_services_need_admin_on_every_context() {
        let dir = tempfile::tempdir().expect("temp dir");
        let control = Arc::new(ControlDb::open(dir.path()).expect("control db"));
        let access = AccessControl::new(true, Some("token".into()), Some("admin-token".into()), control);
        let headers = |token: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(ACCESS_TOKEN_METADATA_KEY, token.parse().expect("ascii"));
            headers
        };
        let admin = "/io.axoniq.axonserver.grpc.admin.ReplicationGroupAdminService/GetNodes";
        assert_eq!(required_right(admin), Some(Right::Admin));
        assert!(matches!(
            check(&access, admin, &headers("token")),
            Err(NodeError::PermissionDenied(_))
        ));
        assert!(check(&access, admin, &headers("admin-token")).is_ok());
        let append = "/io.axoniq.axonserver.grpc.event.EventStore/AppendEvent";
        assert!(check(&access, append, &headers("token")).is_ok());
    }
}
